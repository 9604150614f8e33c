//! meta::network::server: the serving side of the transport. [`serve`] accepts peers on the
//! `--raft-listen` socket, up to `peer_connections_max` at once; each connection is
//! handshaken, then answers one request at a time: Raft RPCs go to a [`RaftService`] (the local
//! `openraft::Raft`), controller requests to a [`ControllerService`].
//!
//! A frame that is oversized, fails its CRC, or does not decode closes that connection with a
//! warning naming the peer; the listener and every other connection carry on.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::frame::{self, FrameError};
use super::wire::{
    HELLO_BYTES_MAX, Hello, HelloReply, PeerRequest, PeerResponse, check_hello_shape,
    cluster_mismatch,
};
use super::{LocalNode, PeerCheck, TransportConfig, describe};
use crate::meta::command::{ControllerRequest, ControllerResponse};
use crate::meta::types::{NodeId, TypeConfig};

/// How long a new connection may take to send its hello. Short: a peer that connects and says
/// nothing holds one of the `peer_connections_max` places.
pub const HELLO_TIMEOUT_MS: u64 = 5_000;

/// The local Raft node as the server sees it: implemented by `openraft::Raft<TypeConfig>`,
/// and by fakes in tests.
pub trait RaftService: Send + Sync + 'static {
    fn append_entries(
        &self,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> BoxFuture<'static, Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>>;

    fn vote(
        &self,
        req: VoteRequest<NodeId>,
    ) -> BoxFuture<'static, Result<VoteResponse<NodeId>, RaftError<NodeId>>>;

    #[allow(clippy::type_complexity)]
    fn install_snapshot(
        &self,
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> BoxFuture<
        'static,
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    >;
}

impl RaftService for openraft::Raft<TypeConfig> {
    fn append_entries(
        &self,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> BoxFuture<'static, Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>> {
        let raft = self.clone();
        Box::pin(async move { raft.append_entries(req).await })
    }

    fn vote(
        &self,
        req: VoteRequest<NodeId>,
    ) -> BoxFuture<'static, Result<VoteResponse<NodeId>, RaftError<NodeId>>> {
        let raft = self.clone();
        Box::pin(async move { raft.vote(req).await })
    }

    fn install_snapshot(
        &self,
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> BoxFuture<
        'static,
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let raft = self.clone();
        Box::pin(async move { raft.install_snapshot(req).await })
    }
}

/// Handles controller requests from peers (the controller's side of forwarding). `from` is the
/// node id the peer gave in its handshake. The answer should come within the caller's
/// `controller_timeout_ms`; the server gives up at that bound and answers
/// [`ControllerResponse::Unavailable`].
pub trait ControllerService: Send + Sync + 'static {
    fn handle(
        &self,
        from: NodeId,
        req: ControllerRequest,
    ) -> BoxFuture<'static, ControllerResponse>;
}

/// Everything a served connection needs.
pub struct PeerService {
    pub local: LocalNode,
    pub config: TransportConfig,
    pub raft: Arc<dyn RaftService>,
    pub controller: Arc<dyn ControllerService>,
    /// Refuses peers the runtime does not accept (a reflashed voter).
    pub peer_check: Arc<dyn PeerCheck>,
}

/// Accepts peer connections on `listener` until `shutdown` completes, then closes every open
/// connection and returns. At most `peer_connections_max` connections are served at once; one
/// more is closed as soon as it is accepted, with a warning.
pub async fn serve(
    listener: TcpListener,
    service: Arc<PeerService>,
    shutdown: impl Future<Output = ()>,
) {
    let places = Arc::new(Semaphore::new(service.config.peer_connections_max));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            // Reap finished connection tasks so the set stays as small as the open connections.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: pause rather than spin.
                tracing::warn!("accepting a peer connection failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            tracing::warn!(
                peer = %addr,
                "closing connection from {addr}: peer_connections_max ({}) connections open",
                service.config.peer_connections_max
            );
            continue;
        };
        let service = service.clone();
        connections.spawn(async move {
            serve_connection(stream, addr, &service).await;
            drop(place);
        });
    }
    tracing::debug!(
        "peer listener stopped; closing {} connections",
        connections.len()
    );
    connections.shutdown().await;
}

/// One peer connection: handshake, then requests until the peer leaves or misbehaves.
async fn serve_connection(mut stream: TcpStream, addr: SocketAddr, service: &PeerService) {
    let _ = stream.set_nodelay(true);
    let Some(node) = handshake(&mut stream, addr, service).await else {
        return;
    };
    let max = service.config.frame_bytes_max();
    loop {
        let payload = match timeout(
            service.config.idle_timeout(),
            frame::read_payload(&mut stream, max),
        )
        .await
        {
            Ok(Ok(payload)) => payload,
            Ok(Err(FrameError::Closed)) => return,
            Ok(Err(e)) => {
                tracing::warn!(peer = %addr, "closing connection from peer {addr} (node {node}): {}", describe(&e));
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %addr, "closing idle connection from peer {addr} (node {node})");
                return;
            }
        };
        let req: PeerRequest = match frame::decode(&payload) {
            Ok(req) => req,
            Err(e) => {
                tracing::warn!(peer = %addr, "closing connection from peer {addr} (node {node}): {}", describe(&e));
                return;
            }
        };
        drop(payload);
        let resp = dispatch(service, node, req).await;
        if let Err(e) = frame::write(&mut stream, &resp, max).await {
            tracing::warn!(peer = %addr, "closing connection from peer {addr} (node {node}): cannot answer: {}", describe(&e));
            return;
        }
    }
}

/// Reads the peer's hello and answers it; the peer's node id when accepted.
async fn handshake(
    stream: &mut TcpStream,
    addr: SocketAddr,
    service: &PeerService,
) -> Option<NodeId> {
    let after = std::time::Duration::from_millis(HELLO_TIMEOUT_MS);
    let hello: Hello = match timeout(after, frame::read(stream, HELLO_BYTES_MAX)).await {
        Ok(Ok(hello)) => hello,
        Ok(Err(FrameError::Closed)) => return None,
        Ok(Err(e)) => {
            tracing::warn!(peer = %addr, "closing connection from {addr}: bad handshake: {}", describe(&e));
            return None;
        }
        Err(_) => {
            tracing::warn!(peer = %addr, "closing connection from {addr}: no handshake within {after:?}");
            return None;
        }
    };
    let ours = service.local.cluster_id();
    let local = &service.local;
    let verdict = check_hello_shape(&hello)
        .and_then(
            |()| match cluster_mismatch(hello.cluster_id.as_deref(), ours.as_deref()) {
                Some(reason) => Err(reason),
                None => Ok(()),
            },
        )
        .and_then(|()| {
            // Two nodes configured with one id would split every vote they cast.
            if hello.node_id == local.node_id && hello.directory_id != local.directory_id {
                Err(format!(
                    "it claims node id {} too, with data directory {} (this node's is {})",
                    hello.node_id, hello.directory_id, local.directory_id
                ))
            } else {
                Ok(())
            }
        })
        .and_then(|()| service.peer_check.check(hello.node_id, hello.directory_id));
    let reply = match &verdict {
        Ok(()) => HelloReply::Accepted {
            node_id: service.local.node_id,
            cluster_id: ours,
            directory_id: service.local.directory_id,
        },
        Err(reason) => {
            tracing::warn!(
                peer = %addr,
                "refusing peer {addr} (node {}): {reason}",
                hello.node_id
            );
            HelloReply::Refused {
                reason: reason.clone(),
            }
        }
    };
    if let Err(e) = frame::write(stream, &reply, HELLO_BYTES_MAX).await {
        tracing::debug!(peer = %addr, "handshake reply to {addr} failed: {}", describe(&e));
        return None;
    }
    verdict.ok().map(|()| hello.node_id)
}

/// Largest snapshot a peer may send (its chunks' end offset): the metadata image of a very large
/// cluster is a few MiB; the store refuses records past `store::RECORD_BYTES_MAX` anyway.
pub const SNAPSHOT_BYTES_MAX: u64 = crate::meta::store::RECORD_BYTES_MAX as u64 + 64 * 1024;

async fn dispatch(service: &PeerService, from: NodeId, req: PeerRequest) -> PeerResponse {
    match req {
        PeerRequest::AppendEntries(rpc) => {
            PeerResponse::AppendEntries(service.raft.append_entries(rpc).await)
        }
        PeerRequest::Vote(rpc) => PeerResponse::Vote(service.raft.vote(rpc).await),
        PeerRequest::InstallSnapshot(rpc) => {
            let end = rpc.offset.saturating_add(rpc.data.len() as u64);
            if end > SNAPSHOT_BYTES_MAX {
                // openraft writes a chunk at its offset into a buffer in memory: an offset far
                // past any real snapshot would make this node allocate it. Answered as a
                // mismatch, which makes the leader start the snapshot over from offset 0.
                tracing::warn!(
                    from,
                    offset = rpc.offset,
                    "refusing a snapshot chunk past {SNAPSHOT_BYTES_MAX} bytes"
                );
                let id = rpc.meta.snapshot_id.clone();
                let mismatch = openraft::error::SnapshotMismatch {
                    expect: openraft::SnapshotSegmentId {
                        id: id.clone(),
                        offset: 0,
                    },
                    got: openraft::SnapshotSegmentId {
                        id,
                        offset: rpc.offset,
                    },
                };
                return PeerResponse::InstallSnapshot(Err(RaftError::APIError(
                    InstallSnapshotError::SnapshotMismatch(mismatch),
                )));
            }
            PeerResponse::InstallSnapshot(service.raft.install_snapshot(rpc).await)
        }
        PeerRequest::Controller(req) => {
            let after = service.config.controller_timeout();
            let handled = timeout(after, service.controller.handle(from, req)).await;
            PeerResponse::Controller(handled.unwrap_or_else(|_| {
                ControllerResponse::Unavailable(format!(
                    "the controller did not answer within {after:?}"
                ))
            }))
        }
    }
}
