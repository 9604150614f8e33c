//! server::connection: one client connection. Reads a frame (i32 length, checked against
//! `frame_bytes_max` before anything is allocated, and counted against the node-wide
//! `inflight_bytes_max` budget), hands it to `api::dispatch`, writes the answer. Requests on one
//! connection are served in order, one at a time, as Kafka does. A malformed frame closes this
//! connection with a log line; other clients are not affected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::api;
use crate::broker::Broker;
use crate::protocol::frame;

/// Why the read loop stopped; only the unexpected ones are logged loudly.
enum Stop {
    Closed,
    Shutdown,
    Idle,
    Refused(String),
}

pub async fn serve(
    broker: Arc<Broker>,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    inflight: Arc<Semaphore>,
) {
    let _ = stream.set_nodelay(true);
    tracing::debug!(%peer, "connection opened");
    let why = loop {
        let (body, _permit) = match read_frame(&broker, &mut stream, &mut stop, &inflight).await {
            Ok(frame) => frame,
            Err(why) => break why,
        };
        match api::dispatch(&broker, body).await {
            Ok(Some(response)) => {
                if let Err(e) = stream.write_all(&response).await {
                    break Stop::Refused(format!("write failed: {e}"));
                }
            }
            Ok(None) => {}
            Err(e) => break Stop::Refused(format!("bad request: {e}")),
        }
    };
    match why {
        Stop::Refused(reason) => tracing::warn!(%peer, %reason, "closing connection"),
        Stop::Idle => tracing::debug!(%peer, "closing idle connection"),
        Stop::Closed | Stop::Shutdown => tracing::debug!(%peer, "connection closed"),
    }
}

/// Reads one whole request frame. The permit holds the frame's bytes in the node-wide budget
/// until the request has been answered.
async fn read_frame(
    broker: &Broker,
    stream: &mut TcpStream,
    stop: &mut watch::Receiver<bool>,
    inflight: &Arc<Semaphore>,
) -> Result<(Bytes, OwnedSemaphorePermit), Stop> {
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
