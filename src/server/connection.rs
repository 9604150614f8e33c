//! server::connection: one client connection. A reader task reads frames (i32 length, checked
//! against `frame_bytes_max` before anything is allocated, and counted against the node-wide
//! `inflight_bytes_max` budget) into a bounded channel. The connection task dispatches them one
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

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::api::{self, Answer, Reply};
use crate::broker::Broker;
use crate::protocol::frame;

/// Why the reader stopped; only the unexpected ones are logged loudly.
enum Stop {
    Closed,
    Shutdown,
    Idle,
    Refused(String),
}

/// A frame read off the socket, holding its bytes in the node-wide budget until answered.
type Frame = (Bytes, OwnedSemaphorePermit);
/// An answer in the making, in request order, with the budget its request holds and, for a
/// Fetch, the budget its answer holds; both are released once the answer is written.
type Waiting = (
    Pin<Box<dyn Future<Output = Answer> + Send>>,
    OwnedSemaphorePermit,
    Option<OwnedSemaphorePermit>,
);

pub async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
    inflight: Arc<Semaphore>,
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
        inflight,
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
            Event::Frame(Some((body, permit))) => {
                let reply = match dispatch_writing(&broker, body, &mut write, &mut waiting).await {
                    Ok(reply) => reply,
                    Err(reason) => {
                        tracing::warn!(%peer, %reason, "closing connection");
                        break;
                    }
                };
                match reply {
                    Ok(Reply::Ready(answer)) => {
                        waiting.push_back((Box::pin(std::future::ready(Ok(answer))), permit, None))
                    }
                    Ok(Reply::Held(answer, held)) => waiting.push_back((
                        Box::pin(std::future::ready(Ok(Some(answer)))),
                        permit,
                        Some(held),
                    )),
                    Ok(Reply::Pending(answer)) => waiting.push_back((answer, permit, None)),
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

/// Reads frames until the peer closes, goes idle, sends garbage, or the node shuts down.
async fn read_frames(
    broker: Arc<Broker>,
    mut read: OwnedReadHalf,
    mut stop: watch::Receiver<bool>,
    inflight: Arc<Semaphore>,
    frames: mpsc::Sender<Frame>,
    peer: SocketAddr,
) {
    let why = loop {
        match read_frame(&broker, &mut read, &mut stop, &inflight).await {
            Ok(frame) => {
                if frames.send(frame).await.is_err() {
                    break Stop::Closed;
                }
            }
            Err(why) => break why,
        }
    };
    match why {
        Stop::Refused(reason) => tracing::warn!(%peer, %reason, "closing connection"),
        Stop::Idle => tracing::debug!(%peer, "closing idle connection"),
        Stop::Closed | Stop::Shutdown => {}
    }
}

/// Reads one whole request frame. The permit holds the frame's bytes in the node-wide budget
/// until the request has been answered.
async fn read_frame(
    broker: &Broker,
    stream: &mut OwnedReadHalf,
    stop: &mut watch::Receiver<bool>,
    inflight: &Arc<Semaphore>,
) -> Result<Frame, Stop> {
    let config = &broker.config;
    let mut prefix = [0u8; 4];
    let idle = Duration::from_millis(config.connection_idle_ms_max);
    // Only an idle connection (between requests) is cut by shutdown.
    let read = tokio::select! {
        r = tokio::time::timeout(idle, stream.read_exact(&mut prefix)) => r,
        _ = stop.changed() => return Err(Stop::Shutdown),
    };
    match read {
        Err(_) => return Err(Stop::Idle),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(Stop::Closed),
        Ok(Err(e)) => return Err(Stop::Refused(format!("read failed: {e}"))),
        Ok(Ok(_)) => {}
    }
    let len = frame::body_len(prefix, config.frame_bytes_max)
        .map_err(|e| Stop::Refused(format!("refusing frame: {e}")))?;
    // `body_len` caps len at frame_bytes_max, which validation keeps within the budget and u32.
    let permit = inflight
        .clone()
        .acquire_many_owned(len as u32)
        .await
        .map_err(|_| Stop::Shutdown)?;
    let mut body = BytesMut::zeroed(len);
    let deadline = Duration::from_millis(config.request_read_ms_max);
    match tokio::time::timeout(deadline, stream.read_exact(&mut body)).await {
        Ok(Ok(_)) => Ok((body.freeze(), permit)),
        Ok(Err(e)) => Err(Stop::Refused(format!(
            "truncated frame of {len} bytes: {e}"
        ))),
        Err(_) => Err(Stop::Refused(format!(
            "frame of {len} bytes not received within {} ms",
            config.request_read_ms_max
        ))),
    }
}
