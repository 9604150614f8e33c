//! meta::types: the openraft type configuration of the metadata quorum.
//!
//! Raft node ids are Kafka broker ids (`i32` ≥ 0) widened to `u64`, openraft's id type. A node's
//! `openraft::BasicNode` address is its `--raft-listen` address.

use super::command::{MetadataCommand, MetadataResponse};

openraft::declare_raft_types!(
    /// The metadata quorum's types: entries carry [`MetadataCommand`]s, snapshots are one
    /// framed, postcard-encoded image in memory.
    pub TypeConfig:
        D = MetadataCommand,
        R = MetadataResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type NodeId = u64;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;

/// The Raft id of a Kafka broker id (never negative once configured).
pub fn raft_id(node_id: i32) -> NodeId {
    node_id.max(0) as NodeId
}

/// The Kafka broker id of a Raft node id (-1 when it does not fit, which configuration refuses).
pub fn broker_id(id: NodeId) -> i32 {
    i32::try_from(id).unwrap_or(-1)
}
