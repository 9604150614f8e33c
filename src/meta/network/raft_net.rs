//! meta::network::raft_net: openraft's view of the transport. [`NetworkFactory`] hands openraft
//! one [`Network`] per replication target; each keeps one connection to its target, opened
//! lazily and reopened after a failure, and maps transport failures onto openraft's errors:
//! a peer that cannot be reached (connect failed or timed out, handshake refused, backing off)
//! is `Unreachable`, so openraft backs off with [`RaftNetwork::backoff`]; a request that got no
//! answer in time is `Timeout`; anything else is `NetworkError`, which openraft retries at once.

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use std::time::Duration;

use super::client::Slot;
use super::wire::{PeerRequest, PeerResponse};
use super::{LocalNode, NetError, TransportConfig};
use crate::meta::types::{NodeId, TypeConfig};

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

/// Builds one [`Network`] per target; given to `openraft::Raft::new`.
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    local: LocalNode,
    config: TransportConfig,
}

impl NetworkFactory {
    pub fn new(local: LocalNode, config: TransportConfig) -> NetworkFactory {
        NetworkFactory { local, config }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Network {
        Network {
            local: self.local.clone(),
            config: self.config.clone(),
            target,
            node: node.clone(),
            slot: Slot::default(),
        }
    }
}

/// The connection to one replication target (its `BasicNode::addr` is its `--raft-listen`).
#[derive(Debug)]
pub struct Network {
    local: LocalNode,
    config: TransportConfig,
    target: NodeId,
    node: BasicNode,
    slot: Slot,
}

impl Network {
    async fn call(&mut self, req: PeerRequest, after: Duration) -> Result<PeerResponse, NetError> {
        self.slot
            .call(
                &self.node.addr,
                &self.local,
                &self.config,
                Some(self.target),
                &req,
                after,
            )
            .await
    }

    /// The transport failure `e` as openraft's error for an RPC of kind `action`.
    fn rpc_error<E: std::error::Error>(
        &self,
        e: NetError,
        action: RPCTypes,
        after: Duration,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        if e.is_unreachable() {
            RPCError::Unreachable(Unreachable::new(&e))
        } else if e.is_timeout() {
            RPCError::Timeout(Timeout {
                action,
                id: self.local.node_id,
                target: self.target,
                timeout: after,
            })
        } else {
            RPCError::Network(NetworkError::new(&e))
        }
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            self.node.clone(),
            e,
        ))
    }

    fn mismatched(&self, request: &'static str) -> NetError {
        NetError::Mismatched {
            addr: self.node.addr.clone(),
            request,
        }
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let entries = rpc.entries.len() as u64;
        let after = self.config.rpc_timeout().min(option.hard_ttl());
        match self.call(PeerRequest::AppendEntries(rpc), after).await {
            Ok(PeerResponse::AppendEntries(r)) => r.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.rpc_error(
                self.mismatched("append_entries"),
                RPCTypes::AppendEntries,
                after,
            )),
            // openraft answers this by sending fewer entries per request (a single entry over
            // the limit cannot shrink: that one is a plain error, and the proposer's to avoid).
            Err(NetError::TooLarge { .. }) if entries > 1 => Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries / 2),
            )),
            Err(e) => Err(self.rpc_error(e, RPCTypes::AppendEntries, after)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        // openraft sizes this deadline (`install_snapshot_timeout`): a chunk is larger and its
        // last one installs the snapshot on the target.
        let after = option.hard_ttl();
        match self.call(PeerRequest::InstallSnapshot(rpc), after).await {
            Ok(PeerResponse::InstallSnapshot(r)) => r.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.rpc_error(
                self.mismatched("install_snapshot"),
                RPCTypes::InstallSnapshot,
                after,
            )),
            Err(e) => Err(self.rpc_error(e, RPCTypes::InstallSnapshot, after)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let after = self.config.rpc_timeout().min(option.hard_ttl());
        match self.call(PeerRequest::Vote(rpc), after).await {
            Ok(PeerResponse::Vote(r)) => r.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.rpc_error(self.mismatched("vote"), RPCTypes::Vote, after)),
            Err(e) => Err(self.rpc_error(e, RPCTypes::Vote, after)),
        }
    }

    /// Exponential: `backoff_min_ms` doubling up to `backoff_max_ms`, for as long as the target
    /// stays unreachable.
    fn backoff(&self) -> Backoff {
        let config = self.config.clone();
        Backoff::new(std::iter::repeat(()).scan(0u32, move |failures, ()| {
            *failures = failures.saturating_add(1);
            Some(config.backoff(*failures))
        }))
    }
}
