//! server::read: reads one connection's request frames (i32 length, checked against
//! `frame_bytes_max` before anything is allocated) and counts their bytes in three budgets: the
//! connection's (`inflight_bytes_per_connection_max`), its peer address's
//! (`inflight_bytes_per_ip_max`) and the node's (`inflight_bytes_max`). Bytes are reserved as
//! they arrive, a chunk at a time, never on the strength of a length prefix alone: a client that
//! announces a large frame and sends nothing holds nothing that other clients need. The whole
//! frame, from its first byte through every wait for budget to its last byte, must arrive within
//! `request_read_ms_max`.
//!
//! Why a frame never waits for its address's or the node's budget while it holds part of its
//! body: frames that each held part and waited for the rest could together hold the whole budget,
//! and none would ever finish (five 16 MiB frames against a 64 MiB budget). So those chunks are
//! taken only when free at once. When they are not, the frame takes the rest of its body from the
//! node's *reserve*, one whole frame's worth (`frame_bytes_max`) set apart from
//! `inflight_bytes_max` for this: a frame holding the reserve needs nothing more from anyone, so
//! it finishes (or times out) and its answer gives the reserve back to the next frame waiting,
//! in arrival order. Waiting for the connection's own budget is safe: only that connection's
//! earlier frames hold it, and they are answered without reading anything more.

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
    /// The node's budget less its reserve: `inflight_bytes_max - frame_bytes_max`.
    pub node: Arc<Semaphore>,
    /// One frame's worth of the node's budget, for frames that find `node` or `ip` short.
    pub reserve: Arc<Semaphore>,
    pub ip: Arc<Semaphore>,
    pub connection: Arc<Semaphore>,
}

impl Budgets {
    /// The node-wide halves of the request budget: (general, reserve), together
    /// `inflight_bytes_max` (validation keeps it at least one frame).
    pub fn node_shares(config: &crate::config::Config) -> (Arc<Semaphore>, Arc<Semaphore>) {
        let reserve = config.frame_bytes_max.min(config.inflight_bytes_max);
        let general = config.inflight_bytes_max - reserve;
        (
            Arc::new(Semaphore::new(general)),
            Arc::new(Semaphore::new(reserve)),
        )
    }
}

/// Request bytes held in the budgets (connection, address, node, and the reserve), released on
/// drop: a frame's bytes stay counted until its answer is written.
#[derive(Default)]
pub struct Held {
    permits: Option<[OwnedSemaphorePermit; 3]>,
    /// The rest of a frame's body, taken from the node's reserve.
    reserved: Option<OwnedSemaphorePermit>,
}

impl Budgets {
    /// Reserves `n` bytes: waits for the connection's own budget, then takes the address's and
    /// the node's only if free now (`None`: they are short; the caller must not wait for them
    /// while it holds part of a frame). Always in the same order, so two reservations never wait
    /// on each other crosswise.
    async fn reserve(&self, n: u32) -> Result<Option<Held>, AcquireError> {
        let connection = self.connection.clone().acquire_many_owned(n).await?;
        let Ok(ip) = self.ip.clone().try_acquire_many_owned(n) else {
            return Ok(None);
        };
        let Ok(node) = self.node.clone().try_acquire_many_owned(n) else {
            return Ok(None);
        };
        Ok(Some(Held {
            permits: Some([connection, ip, node]),
            reserved: None,
        }))
    }
}

impl Held {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permits.as_ref().map_or(0, |p| p[0].num_permits())
            + self.reserved.as_ref().map_or(0, |r| r.num_permits())
    }

    /// Gives back all but `n` bytes (a read that brought less than was reserved).
    fn keep(&mut self, n: usize) {
        for permit in self.permits.iter_mut().flatten() {
            let extra = permit.num_permits().saturating_sub(n);
            drop(permit.split(extra));
        }
    }

    fn merge(&mut self, other: Held) {
        debug_assert!(
            other.reserved.is_none(),
            "reserve permits are taken once per frame"
        );
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
/// to read, and keeping only as much as arrived. When the address's or the node's budget is short,
/// the rest of the body comes from the node's reserve (module comment: why never waiting for them
/// while holding part of a frame).
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
        let want = if held.reserved.is_some() {
            len - body.len()
        } else {
            (len - body.len()).min(READ_CHUNK_BYTES)
        };
        let mut chunk = None;
        if held.reserved.is_none() {
            // `body_len` caps len at frame_bytes_max, which validation keeps within u32.
            chunk = budgets
                .reserve(want as u32)
                .await
                .map_err(|_| Stop::Shutdown)?;
            if chunk.is_none() {
                let rest = (len - body.len()) as u32;
                let permit = budgets
                    .reserve
                    .clone()
                    .acquire_many_owned(rest)
                    .await
                    .map_err(|_| Stop::Shutdown)?;
                held.reserved = Some(permit);
                continue;
            }
        }
        match stream.try_read_buf(&mut (&mut body).limit(want)) {
            Ok(0) => {
                return Err(Stop::Refused(format!(
                    "truncated frame of {len} bytes: the peer closed after {}",
                    body.len()
                )));
            }
            Ok(n) => {
                if let Some(mut chunk) = chunk {
                    chunk.keep(n);
                    held.merge(chunk);
                }
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
            reserve: Arc::new(Semaphore::new(10)),
            ip: Arc::new(Semaphore::new(50)),
            connection: Arc::new(Semaphore::new(40)),
        };
        let mut a = budgets.reserve(30).await.unwrap().unwrap();
        a.keep(10);
        assert_eq!(a.bytes(), 10);
        let b = budgets.reserve(30).await.unwrap().unwrap();
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
