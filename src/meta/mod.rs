//! meta: the metadata quorum (KRaft's idea on openraft). Every voter holds the Raft log of
//! [`command::MetadataCommand`]s; applying it yields the [`image::MetadataImage`] every node
//! serves Metadata from. The Raft leader is the controller.
//!
//! - [`command`]: the log's commands, their responses, and controller requests.
//! - [`image`]: the state machine's state, how commands apply, placement.
//! - [`store`]: the Raft log and state machine storage, on files through `io::Storage`.
//! - [`types`]: openraft's type configuration.

pub mod command;
pub mod image;
pub mod store;
pub mod types;

use std::sync::Arc;

/// The latest applied image, swapped atomically by the state machine; readers take an `Arc`.
pub type ImageCell = tokio::sync::watch::Receiver<Arc<image::MetadataImage>>;

/// The quorum as DescribeQuorum and `bramble cluster status` report it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumStatus {
    /// The controller (Raft leader) as this node knows it.
    pub leader_id: Option<i32>,
    /// The Raft term (Kafka's leader epoch of the metadata log).
    pub term: u64,
    /// Index of the last committed entry (Kafka's high watermark of the metadata log), if any.
    pub commit_index: Option<u64>,
    pub voters: Vec<ReplicaStatus>,
    /// Learners (`--join` nodes).
    pub observers: Vec<ReplicaStatus>,
}

/// One member of the quorum. Progress figures are known only on the leader; elsewhere -1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub node_id: i32,
    /// Next index the member lacks (its matched index + 1), -1 when unknown.
    pub log_end_offset: i64,
    /// Unix ms of the leader's last successful exchange with the member, -1 when unknown.
    pub last_fetch_ms: i64,
    /// Unix ms when the member last had every committed entry, -1 when unknown.
    pub last_caught_up_ms: i64,
}
