//! meta::network::client: the calling side of the transport. A [`Connection`] is one handshaken
//! TCP stream to one peer; a [`Slot`] holds at most one connection to an address and its
//! reconnect backoff; [`PeerClient`] is the controller-request API (two slots per address: heartbeats apart).
//! openraft's side (`raft_net.rs`) keeps one slot per target node.
//!
//! Cancellation: a call takes its connection out of the slot and puts it back only after a
//! complete answer, so a call dropped halfway (a caller's timeout) never leaves a connection
//! whose next read would be the previous request's answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use super::frame::{self, FrameError};
use super::wire::{
    HELLO_BYTES_MAX, Hello, HelloReply, MAGIC, PROTOCOL_VERSION, PeerRequest, PeerResponse,
    cluster_mismatch,
};
use super::{LocalNode, NetError, TransportConfig};
use crate::meta::command::{ControllerRequest, ControllerResponse};
use crate::meta::types::NodeId;

/// One handshaken connection to a peer; one request in flight at a time (`&mut self`).
#[derive(Debug)]
pub struct Connection {
    addr: String,
    stream: TcpStream,
    /// The node id the peer gave in its handshake reply.
    peer: NodeId,
    last_used: Instant,
}

impl Connection {
    /// Connects to `addr` and performs the handshake, all within `connect_timeout_ms`. When
    /// `expect` names a node, a peer answering as another node is refused (an address reused by
    /// another node after a reconfiguration).
    pub async fn open(
        addr: &str,
        local: &LocalNode,
        config: &TransportConfig,
        expect: Option<NodeId>,
    ) -> Result<Connection, NetError> {
        let after = config.connect_timeout();
        let connect = Self::open_inner(addr, local, expect, config.source_ip);
        match timeout(after, connect).await {
            Ok(result) => result,
            Err(_) => Err(NetError::ConnectTimeout {
                addr: addr.to_string(),
                after,
            }),
        }
    }

    async fn open_inner(
        addr: &str,
        local: &LocalNode,
        expect: Option<NodeId>,
        source_ip: Option<std::net::IpAddr>,
    ) -> Result<Connection, NetError> {
        let mut stream = crate::client::connect_from(addr, source_ip)
            .await
            .map_err(|source| NetError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        // Raft messages are small and latency-bound; never wait for Nagle.
        let _ = stream.set_nodelay(true);
        let our_cluster = local.cluster_id();
        let hello = Hello {
            magic: MAGIC,
            protocol_version: PROTOCOL_VERSION,
            cluster_id: our_cluster.clone(),
            node_id: local.node_id,
            directory_id: local.directory_id,
        };
        let handshake = |source| NetError::Handshake {
            addr: addr.to_string(),
            source,
        };
        frame::write(&mut stream, &hello, HELLO_BYTES_MAX)
            .await
            .map_err(handshake)?;
        let reply: HelloReply = frame::read(&mut stream, HELLO_BYTES_MAX)
            .await
            .map_err(handshake)?;
        let (peer, their_cluster, their_directory) = match reply {
            HelloReply::Accepted {
                node_id,
                cluster_id,
                directory_id,
            } => (node_id, cluster_id, directory_id),
            HelloReply::Refused { reason } => {
                tracing::warn!(peer = addr, "peer {addr} refused this node: {reason}");
                return Err(NetError::Refused {
                    addr: addr.to_string(),
                    reason,
                });
            }
        };
        let mismatch = cluster_mismatch(their_cluster.as_deref(), our_cluster.as_deref())
            .or_else(|| match expect {
                Some(want) if want != peer => Some(format!("it is node {peer}, not node {want}")),
                _ => None,
            })
            .or_else(|| local.peer_check.check(peer, their_directory).err());
        if let Some(reason) = mismatch {
            tracing::warn!(peer = addr, "refusing peer {addr} (node {peer}): {reason}");
            return Err(NetError::Refused {
                addr: addr.to_string(),
                reason,
            });
        }
        Ok(Connection {
            addr: addr.to_string(),
            stream,
            peer,
            last_used: Instant::now(),
        })
    }

    /// The node id the peer announced.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// Sends `req` and waits at most `after` for its answer. A request over `max` bytes is
    /// refused before anything is sent ([`NetError::TooLarge`]); after any other error the
    /// connection's state is unknown and the caller drops it.
    pub async fn call(
        &mut self,
        req: &PeerRequest,
        max: usize,
        after: Duration,
    ) -> Result<PeerResponse, NetError> {
        let buf = match frame::encode(req, max) {
            Ok(buf) => buf,
            Err(FrameError::TooLarge { len, max }) => {
                return Err(NetError::TooLarge {
                    addr: self.addr.clone(),
                    len,
                    max,
                });
            }
            Err(source) => return Err(self.frame_error(source)),
        };
        let exchange = async {
            use tokio::io::AsyncWriteExt;
            self.stream.write_all(&buf).await.map_err(FrameError::Io)?;
            frame::read::<_, PeerResponse>(&mut self.stream, max).await
        };
        let resp = match timeout(after, exchange).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(source)) => return Err(self.frame_error(source)),
            Err(_) => {
                return Err(NetError::Timeout {
                    addr: self.addr.clone(),
                    after,
                });
            }
        };
        self.last_used = Instant::now();
        Ok(resp)
    }

    fn frame_error(&self, source: FrameError) -> NetError {
        NetError::Frame {
            addr: self.addr.clone(),
            source,
        }
    }

    /// Whether the connection was used recently enough that the server has not closed it for
    /// idleness (half the idle timeout, leaving the other half as margin).
    fn is_fresh(&self, idle: Duration) -> bool {
        self.last_used.elapsed() < idle / 2
    }
}

/// At most one connection to one address, and the backoff after failed connects.
#[derive(Debug, Default)]
pub struct Slot {
    conn: Option<Connection>,
    /// Consecutive failed connects.
    failures: u32,
    /// No connect is attempted before this instant (after a failed one).
    retry_at: Option<Instant>,
}

impl Slot {
    /// Sends `req` on the slot's connection, opening one first if there is none (or only a
    /// stale one). Connects are refused with [`NetError::BackingOff`] while the backoff after
    /// the last failed connect runs.
    pub async fn call(
        &mut self,
        addr: &str,
        local: &LocalNode,
        config: &TransportConfig,
        expect: Option<NodeId>,
        req: &PeerRequest,
        after: Duration,
    ) -> Result<PeerResponse, NetError> {
        let mut conn = match self.conn.take() {
            Some(conn) if conn.is_fresh(config.idle_timeout()) => conn,
            _ => self.open(addr, local, config, expect).await?,
        };
        match conn.call(req, config.frame_bytes_max(), after).await {
            Ok(resp) => {
                self.conn = Some(conn);
                Ok(resp)
            }
            Err(e @ NetError::TooLarge { .. }) => {
                // Nothing was sent: the connection is still in step.
                self.conn = Some(conn);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn open(
        &mut self,
        addr: &str,
        local: &LocalNode,
        config: &TransportConfig,
        expect: Option<NodeId>,
    ) -> Result<Connection, NetError> {
        let now = Instant::now();
        if let Some(at) = self.retry_at.filter(|at| *at > now) {
            return Err(NetError::BackingOff {
                addr: addr.to_string(),
                retry_in: at - now,
            });
        }
        match Connection::open(addr, local, config, expect).await {
            Ok(conn) => {
                if self.failures > 0 {
                    tracing::info!(
                        peer = addr,
                        "connected to peer {addr} after {} failed attempts",
                        self.failures
                    );
                }
                self.failures = 0;
                self.retry_at = None;
                Ok(conn)
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                let delay = config.backoff(self.failures);
                self.retry_at = Some(Instant::now() + delay);
                if self.failures == 1 {
                    tracing::info!(
                        peer = addr,
                        "peer {addr} unreachable: {e}; retrying with backoff"
                    );
                } else {
                    tracing::debug!(
                        peer = addr,
                        failures = self.failures,
                        "peer {addr} unreachable: {e}"
                    );
                }
                Err(e)
            }
        }
    }
}

/// Sends controller requests to peers by address, reusing connections. Calls to one address are
/// serialized per lane (one request in flight per connection); heartbeats have a lane, and a
/// connection, of their own, so a burst of proposals (a returning replica's ISR changes, one per
/// partition, each a Raft commit) cannot hold a broker's heartbeat past its session and get a
/// healthy broker fenced. Calls to different addresses run in parallel.
pub struct PeerClient {
    local: LocalNode,
    config: TransportConfig,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl PeerClient {
    pub fn new(local: LocalNode, config: TransportConfig) -> PeerClient {
        PeerClient {
            local,
            config,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `req` to the peer at `addr` (its `--raft-listen` address) and waits for the answer,
    /// all within `controller_timeout_ms` (waiting for the address's connection included).
    pub async fn call(
        &self,
        addr: &str,
        req: ControllerRequest,
    ) -> Result<ControllerResponse, NetError> {
        let slot = self.slot(&Lane::of(&req).key(addr));
        let after = self.config.controller_timeout();
        let req = PeerRequest::Controller(req);
        let exchange = async {
            let mut slot = slot.lock().await;
            slot.call(addr, &self.local, &self.config, None, &req, after)
                .await
        };
        match timeout(after, exchange).await {
            Ok(Ok(PeerResponse::Controller(resp))) => Ok(resp),
            Ok(Ok(_)) => Err(NetError::Mismatched {
                addr: addr.to_string(),
                request: req.kind(),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(NetError::Timeout {
                addr: addr.to_string(),
                after,
            }),
        }
    }

    /// The slot of `key` (an address and lane), created on first use. Slots no call holds are
    /// dropped once the map reaches `peer_connections_max` entries, so addresses of departed
    /// peers do not pile up.
    fn slot(&self, key: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        // A poisoned map only means another caller panicked mid-insert; the map is still whole.
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get(key) {
            return slot.clone();
        }
        if slots.len() >= self.config.peer_connections_max {
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        let slot = Arc::new(tokio::sync::Mutex::new(Slot::default()));
        slots.insert(key.to_string(), slot.clone());
        slot
    }
}

/// Which connection to a peer a controller request waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    /// A broker's heartbeat: its session (and lease) hangs on it.
    Heartbeat,
    /// Proposals and joins.
    Requests,
}

impl Lane {
    fn of(req: &ControllerRequest) -> Lane {
        match req {
            ControllerRequest::Heartbeat { .. } => Lane::Heartbeat,
            ControllerRequest::Propose(_) | ControllerRequest::Join { .. } => Lane::Requests,
        }
    }

    /// The slot key of this lane to `addr`.
    fn key(self, addr: &str) -> String {
        match self {
            Lane::Heartbeat => format!("{addr}#heartbeat"),
            Lane::Requests => addr.to_string(),
        }
    }
}
