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
pub mod network;
pub mod quorum;
pub mod settings;
pub mod store;
pub mod types;

use std::sync::Arc;

/// Where a data directory keeps the quorum's store.
pub fn raft_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("meta").join("raft")
}

/// Whether `data_dir` holds a metadata quorum's store with anything in it.
pub fn holds_quorum(data_dir: &std::path::Path) -> bool {
    std::fs::read_dir(raft_dir(data_dir)).is_ok_and(|mut entries| entries.next().is_some())
}

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

/// Why a proposal did not commit. Every variant is retriable from a client's point of view
/// (Kafka's NOT_CONTROLLER / REQUEST_TIMED_OUT): the quorum may come back.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum QuorumError {
    /// No controller is known or reachable (no quorum, an election under way).
    #[error("no controller available: {0}")]
    NoController(String),
    /// The controller did not commit within the time allowed (the request's own timeout).
    #[error("the controller did not commit the change within the request's timeout")]
    Timeout(u64),
    /// The node is stopping.
    #[error("the metadata quorum is shutting down")]
    ShuttingDown,
}

/// What the rest of the node asks of the metadata quorum: the committed image, and proposals
/// that reach the controller wherever it runs. `quorum::Quorum` is the real one.
pub trait MetadataClient: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> i32;
    /// The latest applied image.
    fn image(&self) -> Arc<image::MetadataImage>;
    /// A receiver that sees every image swap.
    fn subscribe(&self) -> ImageCell;
    /// Commits `cmd` through the controller and answers with its response, or fails within
    /// `timeout`.
    fn propose(
        &self,
        cmd: command::MetadataCommand,
        timeout: std::time::Duration,
    ) -> futures_util::future::BoxFuture<'_, Result<command::MetadataResponse, QuorumError>>;
    /// The controller (Raft leader) as this node knows it.
    fn controller_id(&self) -> Option<i32>;
    fn status(&self) -> QuorumStatus;
    /// Whether this node's lease holds (`quorum::lease`): the controller cannot have fenced it,
    /// and its image has seen every fencing before its last acknowledged heartbeat. A group
    /// coordinator answers only while it does.
    fn lease_holds(&self) -> bool {
        true
    }
}
