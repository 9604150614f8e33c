//! server::connection: one client connection. A reader task (`server::read`) reads frames, their
//! bytes counted in the connection's, its address's and the node's request budgets, into a
//! bounded channel. The connection task dispatches them one
//! at a time, in order, and writes the answers in the same order. A Produce answer may still be
//! waiting for the disk when the next request is dispatched (`api::Reply::Pending`), up to
//! `connection_requests_in_flight_max`, so one producer's pipelined requests share a group
//! commit; everything that must be ordered (offsets, producer sequences) happens at dispatch. A
//! malformed frame closes this connection with a log line; other clients are not affected.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};

use super::read::{Budgets, Frame, Held, read_frames};
use crate::api::{self, Answer, Reply};
use crate::broker::Broker;

/// An answer in the making, in request order, with the budget its request holds and, for a
/// Fetch, the budget its answer holds; both are released once the answer is written.
type Waiting = (
    Pin<Box<dyn Future<Output = Answer> + Send>>,
    Held,
    Option<OwnedSemaphorePermit>,
);

pub async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
    budgets: Budgets,
) {
    let _ = stream.set_nodelay(true);
    tracing::debug!(%peer, "connection opened");
    let (read, mut write) = stream.into_split();
    let in_flight_max = broker.config.connection_requests_in_flight_max;
    let (frames_tx, mut frames) = mpsc::channel(in_flight_max);
    let reader = tokio::spawn(read_frames(
        broker.clone(),
        read,
        stop,
        budgets,
        frames_tx,
        peer,
    ));
    let mut waiting: VecDeque<Waiting> = VecDeque::with_capacity(in_flight_max);
    let mut reading = true;
    while reading || !waiting.is_empty() {
        let can_take = reading && waiting.len() < in_flight_max;
        let event = tokio::select! {
            biased;
            answer = front(&mut waiting), if !waiting.is_empty() => Event::Answered(answer),
            frame = frames.recv(), if can_take => Event::Frame(frame),
        };
        match event {
            Event::Answered(answer) => {
                if let Err(reason) = send_front(&mut write, &mut waiting, answer, &broker).await {
                    tracing::warn!(%peer, %reason, "closing connection");
                    break;
                }
            }
            Event::Frame(None) => reading = false,
            Event::Frame(Some((body, held))) => {
                let reply = match dispatch_writing(&broker, body, &mut write, &mut waiting).await {
                    Ok(reply) => reply,
                    Err(reason) => {
                        tracing::warn!(%peer, %reason, "closing connection");
                        break;
                    }
                };
                match reply {
                    Ok(Reply::Ready(answer)) => {
                        waiting.push_back((Box::pin(std::future::ready(Ok(answer))), held, None))
                    }
                    Ok(Reply::Held(answer, fetch)) => waiting.push_back((
                        Box::pin(std::future::ready(Ok(Some(answer)))),
                        held,
                        Some(fetch),
                    )),
                    Ok(Reply::Pending(answer)) => waiting.push_back((answer, held, None)),
                    Err(e) => {
                        // Earlier requests still get their answers; this one closes the connection.
                        tracing::warn!(%peer, reason = %format!("bad request: {e}"), "closing connection");
                        reading = false;
                        frames.close();
                    }
                }
            }
        }
    }
    reader.abort();
    tracing::debug!(%peer, "connection closed");
}

enum Event {
    Answered(Answer),
    Frame(Option<Frame>),
}

/// Resolves with the oldest request's answer (answers go out in request order).
async fn front(waiting: &mut VecDeque<Waiting>) -> Answer {
    std::future::poll_fn(|cx| match waiting.front_mut() {
        Some((answer, _, _)) => answer.as_mut().poll(cx),
        None => Poll::Pending,
    })
    .await
}

/// Dispatches one request while still writing the answers queued before it. A Fetch may wait
/// for the node's fetch budget and a Produce for room in the disk writer's queue, and the
/// answers ahead of it may hold exactly what it waits for (a Fetch answer queued behind a
/// Produce still waiting for its fsync holds fetch budget): writing them meanwhile keeps one
/// connection from wedging itself and, through the shared budget, every other consumer. The
/// dispatch keeps being polled while an answer is written, so a slow reader never parks a
/// request that holds a partition's append lock or a read round's budget. A write once begun
/// always finishes (or fails) before this returns: a half-written frame would corrupt the
/// stream. `Err` is a failed write: the queued answers are dropped, releasing what they hold,
/// and the request finishes its ordered work (a Produce may be part-way through an append; it
/// is never cancelled half-way) before the connection closes.
async fn dispatch_writing(
    broker: &Broker,
    body: Bytes,
    write: &mut OwnedWriteHalf,
    waiting: &mut VecDeque<Waiting>,
) -> Result<Result<Reply, api::DispatchError>, String> {
    let stall_ms_max = broker.config.response_stall_ms_max;
    let dispatch = api::dispatch(broker, body);
    tokio::pin!(dispatch);
    let mut reply = None;
    loop {
        if let Some(reply) = reply.take() {
            return Ok(reply);
        }
        let answer = tokio::select! {
            biased;
            r = &mut dispatch => return Ok(r),
            answer = front(waiting), if !waiting.is_empty() => answer,
        };
        let sending = send(write, answer, stall_ms_max);
        tokio::pin!(sending);
        let sent = loop {
            tokio::select! {
                biased;
                sent = &mut sending => break sent,
                r = &mut dispatch, if reply.is_none() => reply = Some(r),
            }
        };
        drop(waiting.pop_front());
        if let Err(reason) = sent {
            waiting.clear();
            if reply.is_none() {
                let _ = dispatch.await;
            }
            return Err(reason);
        }
    }
}

/// Writes the oldest answer, then releases what it held (its request's bytes in the node's
/// in-flight budget, a Fetch answer's share of the fetch budget).
async fn send_front(
    write: &mut OwnedWriteHalf,
    waiting: &mut VecDeque<Waiting>,
    answer: Answer,
    broker: &Broker,
) -> Result<(), String> {
    let sent = send(write, answer, broker.config.response_stall_ms_max).await;
    drop(waiting.pop_front());
    sent
}

/// A client that stops reading would otherwise hold its answer's memory for as long as it keeps
/// the connection open: `response_stall_ms_max` bounds how long the client may take no bytes at
/// all. A slow but moving reader (a Pi on busy Wi-Fi) is never cut off.
async fn send(write: &mut OwnedWriteHalf, answer: Answer, stall_ms_max: u64) -> Result<(), String> {
    let frame = match answer {
        Ok(Some(frame)) => frame,
        Ok(None) => return Ok(()),
        Err(e) => return Err(format!("cannot answer: {e}")),
    };
    let stall = Duration::from_millis(stall_ms_max);
    let mut rest: &[u8] = &frame;
    while !rest.is_empty() {
        match tokio::time::timeout(stall, write.write(rest)).await {
            Ok(Ok(0)) => return Err("write failed: the socket took no bytes".to_string()),
            Ok(Ok(n)) => rest = &rest[n..],
            Ok(Err(e)) => return Err(format!("write failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "client read nothing for {stall_ms_max} ms; {} of a {} byte answer unsent",
                    rest.len(),
                    frame.len()
                ));
            }
        }
    }
    Ok(())
}
