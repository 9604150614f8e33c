//! server::read: reads one connection's request frames (i32 length, checked against
//! `frame_bytes_max` before anything is allocated) and counts their bytes in three budgets: the
//! connection's (`inflight_bytes_per_connection_max`), its peer address's
//! (`inflight_bytes_per_ip_max`) and the node's (`inflight_bytes_max`). Bytes are reserved as
//! they arrive, a chunk at a time, never on the strength of a length prefix alone: a client that
//! announces a large frame and sends nothing holds nothing that other clients need. The whole
//! frame, from its first byte through every wait for budget to its last byte, must arrive within
//! `request_read_ms_max`.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;

use crate::broker::Broker;
use crate::protocol::frame;

/// Bytes reserved before one read of a frame's body: small enough that a connection waiting for
/// more of its body holds little beyond what it has received, large enough that a frame takes few
/// reads.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why the reader stopped; only the unexpected ones are logged loudly.
pub(super) enum Stop {
    Closed,
    Shutdown,
    Idle,
    Silent,
    Refused(String),
}

/// The budgets one connection's request bytes count in.
pub struct Budgets {
    pub node: Arc<Semaphore>,
    pub ip: Arc<Semaphore>,
    pub connection: Arc<Semaphore>,
}

/// Request bytes held in all three budgets (connection, address, node), released on drop: a
/// frame's bytes stay counted until its answer is written.
#[derive(Default)]
pub struct Held {
    permits: Option<[OwnedSemaphorePermit; 3]>,
}

impl Budgets {
    /// Reserves `n` bytes in each budget, always in the same order (connection, address, node)
    /// so two reservations never wait on each other crosswise.
    async fn reserve(&self, n: u32) -> Result<Held, AcquireError> {
        let connection = self.connection.clone().acquire_many_owned(n).await?;
        let ip = self.ip.clone().acquire_many_owned(n).await?;
        let node = self.node.clone().acquire_many_owned(n).await?;
        Ok(Held {
            permits: Some([connection, ip, node]),
        })
    }
}

impl Held {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permits.as_ref().map_or(0, |p| p[0].num_permits())
    }

    /// Gives back all but `n` bytes (a read that brought less than was reserved).
    fn keep(&mut self, n: usize) {
        for permit in self.permits.iter_mut().flatten() {
            let extra = permit.num_permits().saturating_sub(n);
            drop(permit.split(extra));
        }
    }

    fn merge(&mut self, other: Held) {
        let Some(theirs) = other.permits else {
            return;
        };
        match &mut self.permits {
            Some(mine) => {
                for (m, t) in mine.iter_mut().zip(theirs) {
                    m.merge(t);
                }
            }
            None => self.permits = Some(theirs),
        }
    }
}

/// A frame read off the socket, holding its bytes in the budgets until answered.
pub type Frame = (Bytes, Held);

/// Reads frames until the peer closes, goes idle, sends garbage, or the node shuts down.
pub(super) async fn read_frames(
    broker: Arc<Broker>,
    mut read: OwnedReadHalf,
    mut stop: watch::Receiver<bool>,
    budgets: Budgets,
    frames: mpsc::Sender<Frame>,
    peer: std::net::SocketAddr,
) {
    let mut first = true;
    let why = loop {
        match read_frame(&broker, &mut read, &mut stop, &budgets, first).await {
            Ok(frame) => {
                first = false;
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
        Stop::Silent => tracing::debug!(
            %peer,
            ms = broker.config.connection_first_request_ms_max,
            "closing connection that sent no request"
        ),
        Stop::Closed | Stop::Shutdown => {}
    }
}

/// Reads one whole request frame. A new connection's first request must begin within
/// `connection_first_request_ms_max`, later ones within `connection_idle_ms_max`.
async fn read_frame(
    broker: &Broker,
    stream: &mut OwnedReadHalf,
    stop: &mut watch::Receiver<bool>,
    budgets: &Budgets,
    first: bool,
) -> Result<Frame, Stop> {
    let config = &broker.config;
    let mut prefix = [0u8; 4];
    let (wait_ms, quiet) = if first {
        // Never longer than an idle connection would be given.
        let ms = config
            .connection_first_request_ms_max
            .min(config.connection_idle_ms_max);
        (ms, Stop::Silent)
    } else {
        (config.connection_idle_ms_max, Stop::Idle)
    };
    // Only an idle connection (between requests) is cut by shutdown.
    let read = tokio::select! {
        r = tokio::time::timeout(Duration::from_millis(wait_ms), stream.read_exact(&mut prefix[..1])) => r,
        _ = stop.changed() => return Err(Stop::Shutdown),
    };
    match read {
        Err(_) => return Err(quiet),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(Stop::Closed),
        Ok(Err(e)) => return Err(Stop::Refused(format!("read failed: {e}"))),
        Ok(Ok(_)) => {}
    }
    let read_ms = config.request_read_ms_max;
    let deadline = Instant::now() + Duration::from_millis(read_ms);
    let late = || Stop::Refused(format!("frame not received within {read_ms} ms"));
    match tokio::time::timeout_at(deadline, stream.read_exact(&mut prefix[1..])).await {
        Err(_) => return Err(late()),
        Ok(Err(e)) => return Err(Stop::Refused(format!("truncated frame length: {e}"))),
        Ok(Ok(_)) => {}
    }
    let len = frame::body_len(prefix, config.frame_bytes_max)
        .map_err(|e| Stop::Refused(format!("refusing frame: {e}")))?;
    let (body, held) = tokio::time::timeout_at(deadline, read_body(stream, len, budgets))
        .await
        .map_err(|_| late())??;
    Ok((body.freeze(), held))
}

/// Reads a body of `len` bytes, reserving budget for each chunk only once the socket has bytes
/// to read, and keeping only as much as arrived.
async fn read_body(
    stream: &OwnedReadHalf,
    len: usize,
    budgets: &Budgets,
) -> Result<(BytesMut, Held), Stop> {
    // Address space only: the pages are touched as bytes arrive.
    let mut body = BytesMut::with_capacity(len);
    let mut held = Held::default();
    while body.len() < len {
        stream
            .readable()
            .await
            .map_err(|e| Stop::Refused(format!("read failed: {e}")))?;
        let want = (len - body.len()).min(READ_CHUNK_BYTES);
        // `body_len` caps len at frame_bytes_max, which validation keeps within u32.
        let mut chunk = budgets
            .reserve(want as u32)
            .await
            .map_err(|_| Stop::Shutdown)?;
        match stream.try_read_buf(&mut (&mut body).limit(want)) {
            Ok(0) => {
                return Err(Stop::Refused(format!(
                    "truncated frame of {len} bytes: the peer closed after {}",
                    body.len()
                )));
            }
            Ok(n) => {
                chunk.keep(n);
                held.merge(chunk);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(Stop::Refused(format!("read failed: {e}"))),
        }
    }
    Ok((body, held))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a reservation is taken from all three budgets and that keeping part of it gives the
    // rest back to each.
    #[tokio::test]
    async fn reserve_keep_merge_release() {
        let budgets = Budgets {
            node: Arc::new(Semaphore::new(100)),
            ip: Arc::new(Semaphore::new(50)),
            connection: Arc::new(Semaphore::new(40)),
        };
        let mut a = budgets.reserve(30).await.unwrap();
        a.keep(10);
        assert_eq!(a.bytes(), 10);
        let b = budgets.reserve(30).await.unwrap();
        a.merge(b);
        assert_eq!(a.bytes(), 40);
        assert_eq!(budgets.connection.available_permits(), 0);
        assert_eq!(budgets.ip.available_permits(), 10);
        assert_eq!(budgets.node.available_permits(), 60);
        drop(a);
        assert_eq!(budgets.node.available_permits(), 100);
        assert_eq!(budgets.ip.available_permits(), 50);
    }
}
