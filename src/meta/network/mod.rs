//! meta::network: the metadata quorum's inter-node transport. TCP on the node's `--raft-listen`
//! address carries openraft's RPCs (AppendEntries, Vote, InstallSnapshot) and controller requests
//! (a broker forwarding an admin request, a registration or a heartbeat to the Raft leader).
//!
//! - [`frame`]: `[length][CRC-32C][postcard payload]` frames, the only byte-level code.
//! - [`wire`]: the handshake and the request/response enums.
//! - [`server`]: [`serve`] accepts peers, checks their hello, dispatches to a [`RaftService`]
//!   (the local `openraft::Raft`) and a [`ControllerService`].
//! - [`client`]: one connection to one peer ([`client::Connection`]) and [`PeerClient`], the
//!   controller-request API that reuses connections per address.
//! - [`raft_net`]: [`NetworkFactory`], openraft's view of the transport.
//!
//! Every connection opens with a handshake, first frame each way: the client's [`wire::Hello`]
//! (magic, protocol version, cluster id, node id, directory id), the server's
//! [`wire::HelloReply`]. A peer of another cluster, of an unknown protocol version, or one the
//! runtime's [`PeerCheck`] refuses (a reflashed voter) is refused with a log line on both sides.
//! Bad bytes from a peer (CRC, length, decode) close that one connection with a warning naming
//! the peer; nothing a peer sends can panic the node or make it allocate past `frame_bytes_max`.
//! Nothing queues without bound: one request in flight per connection, a cap on connections.

pub mod client;
pub mod frame;
pub mod raft_net;
pub mod server;
pub mod wire;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_raft;
#[cfg(test)]
mod tests_rpc;

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::ImageCell;
use super::types::NodeId;

pub use client::PeerClient;
pub use raft_net::{Network, NetworkFactory};
pub use server::{ControllerService, PeerService, RaftService, serve};

/// The transport's settings, filled by the runtime from the config file and board profile.
/// Defaults suit Raspberry Pis on a LAN writing to SD cards: a commit waits on an fsync that can
/// take hundreds of milliseconds, so RPC timeouts are generous, while connects on a LAN either
/// succeed quickly or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Longest wait for a TCP connect and the handshake that follows.
    pub connect_timeout_ms: u64,
    /// Longest wait for the answer to an AppendEntries or Vote (also capped by openraft's own
    /// per-RPC deadline). InstallSnapshot uses openraft's `install_snapshot_timeout`.
    pub rpc_timeout_ms: u64,
    /// Longest wait for a controller request ([`PeerClient::call`]): the controller commits
    /// before it answers, so this covers a quorum round trip and its fsyncs.
    pub controller_timeout_ms: u64,
    /// Largest frame payload either side sends or accepts, bytes. Bounds the memory one
    /// connection can make a node allocate; openraft's `snapshot_max_chunk_size` must stay under
    /// [`TransportConfig::snapshot_chunk_bytes_max`].
    pub frame_bytes_max: u32,
    /// First delay before reconnecting to a peer that could not be reached; doubles on each
    /// further failure.
    pub backoff_min_ms: u64,
    /// Longest delay between reconnect attempts.
    pub backoff_max_ms: u64,
    /// Most peer connections a node serves at once; one more is closed on accept. Each peer
    /// holds up to three: Raft's, and two for controller requests (heartbeats apart), so 64
    /// leaves room for about twenty peers.
    pub peer_connections_max: usize,
    /// A served connection silent this long is closed (a Raft peer sends heartbeats far more
    /// often). Clients reconnect rather than reuse a connection idle for half of it.
    pub idle_timeout_ms: u64,
    /// Local IP outgoing connections bind to (`peer_source_ip`); `None`: the kernel's choice.
    pub source_ip: Option<std::net::IpAddr>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            connect_timeout_ms: 2_000,
            rpc_timeout_ms: 5_000,
            controller_timeout_ms: 10_000,
            frame_bytes_max: 4 * 1024 * 1024,
            backoff_min_ms: 100,
            backoff_max_ms: 2_000,
            peer_connections_max: 64,
            idle_timeout_ms: 120_000,
            source_ip: None,
        }
    }
}

/// Room kept in a frame for an InstallSnapshot request's fields around its data chunk.
const SNAPSHOT_CHUNK_OVERHEAD_BYTES: usize = 64 * 1024;

impl TransportConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.rpc_timeout_ms)
    }
    pub fn controller_timeout(&self) -> Duration {
        Duration::from_millis(self.controller_timeout_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    pub fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max as usize
    }

    /// The largest snapshot chunk that fits a frame: what the runtime sets openraft's
    /// `snapshot_max_chunk_size` to (at most).
    pub fn snapshot_chunk_bytes_max(&self) -> usize {
        self.frame_bytes_max()
            .saturating_sub(SNAPSHOT_CHUNK_OVERHEAD_BYTES)
            .max(1)
    }

    /// The delay before reconnect attempt number `failures` (1 after the first failure):
    /// `backoff_min_ms` doubled per failure, capped at `backoff_max_ms`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(20);
        let ms = self
            .backoff_min_ms
            .saturating_mul(1u64 << shift)
            .min(self.backoff_max_ms);
        Duration::from_millis(ms)
    }

    /// Settings that cannot work together, as a message for the operator.
    pub fn check(&self) -> Result<(), String> {
        if self.frame_bytes_max as usize <= SNAPSHOT_CHUNK_OVERHEAD_BYTES {
            return Err(format!(
                "frame_bytes_max ({}) must be above {SNAPSHOT_CHUNK_OVERHEAD_BYTES}",
                self.frame_bytes_max
            ));
        }
        if self.backoff_min_ms == 0 || self.backoff_min_ms > self.backoff_max_ms {
            return Err(format!(
                "backoff_min_ms ({}) must be above 0 and at most backoff_max_ms ({})",
                self.backoff_min_ms, self.backoff_max_ms
            ));
        }
        if self.peer_connections_max == 0 {
            return Err("peer_connections_max must be at least 1".into());
        }
        Ok(())
    }
}

/// The runtime's say on whether a peer may talk to this node: `(node_id, directory_id)` from the
/// peer's hello, `Err(reason)` to refuse (e.g. a voter whose directory id is not the one the
/// quorum knows: its card was reflashed and its vote lost).
pub trait PeerCheck: Send + Sync + 'static {
    fn check(&self, node_id: NodeId, directory_id: Uuid) -> Result<(), String>;
}

impl<F> PeerCheck for F
where
    F: Fn(NodeId, Uuid) -> Result<(), String> + Send + Sync + 'static,
{
    fn check(&self, node_id: NodeId, directory_id: Uuid) -> Result<(), String> {
        self(node_id, directory_id)
    }
}

/// Accepts every peer (tests, and a runtime that checks nothing yet).
pub fn accept_any_peer() -> Arc<dyn PeerCheck> {
    Arc::new(|_: NodeId, _: Uuid| Ok(()))
}

/// Who this node is, as it introduces itself to peers, and whom it accepts.
#[derive(Clone)]
pub struct LocalNode {
    pub node_id: NodeId,
    pub directory_id: Uuid,
    /// The applied metadata image; its `cluster_id` goes into every hello.
    pub image: ImageCell,
    /// Run on every peer's identity, on connections this node accepts and on those it opens.
    pub peer_check: Arc<dyn PeerCheck>,
}

impl std::fmt::Debug for LocalNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNode")
            .field("node_id", &self.node_id)
            .field("directory_id", &self.directory_id)
            .finish_non_exhaustive()
    }
}

impl LocalNode {
    /// The cluster id as of now (`None` before the quorum's first command is applied).
    pub fn cluster_id(&self) -> Option<String> {
        self.image.borrow().cluster_id.clone()
    }
}

/// Why a call to a peer failed. [`NetError::is_unreachable`] and [`NetError::is_timeout`] tell
/// openraft how to react (back off, or retry).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot connect to peer {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connect to peer {addr} timed out after {after:?}")]
    ConnectTimeout { addr: String, after: Duration },
    #[error("peer {addr} was unreachable; next attempt in {retry_in:?}")]
    BackingOff { addr: String, retry_in: Duration },
    #[error("handshake with peer {addr} failed")]
    Handshake {
        addr: String,
        #[source]
        source: frame::FrameError,
    },
    #[error("handshake with peer {addr} refused: {reason}")]
    Refused { addr: String, reason: String },
    #[error("peer {addr} did not answer within {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("connection to peer {addr} failed")]
    Frame {
        addr: String,
        #[source]
        source: frame::FrameError,
    },
    #[error("request of {len} bytes to peer {addr} is over frame_bytes_max ({max})")]
    TooLarge {
        addr: String,
        len: usize,
        max: usize,
    },
    #[error("peer {addr} answered a {request} request with another kind of response")]
    Mismatched { addr: String, request: &'static str },
}

impl NetError {
    /// The peer could not be reached at all (openraft backs off before trying again).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            NetError::Connect { .. }
                | NetError::ConnectTimeout { .. }
                | NetError::BackingOff { .. }
                | NetError::Handshake { .. }
                | NetError::Refused { .. }
        )
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, NetError::Timeout { .. })
    }
}

/// An error and its causes on one line ("a: b: c"), for log lines.
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
