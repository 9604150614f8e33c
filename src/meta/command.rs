//! meta::command: what the metadata quorum's log holds ([`MetadataCommand`]), what applying one
//! answers ([`MetadataResponse`]), and the controller requests brokers send to the Raft leader
//! over the peer transport ([`ControllerRequest`]).
//!
//! Every type here is postcard-encoded on disk (inside a framed, CRC-checked, versioned record)
//! and on the wire. postcard is not self-describing: never reorder fields or variants; add new
//! variants at the end, and bump the record format version for any other change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A broker announcing itself to the controller (on start, and again whenever it finds the
/// controller does not know its current incarnation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub node_id: i32,
    /// New on every start of the process: tells a restart from a late heartbeat.
    pub incarnation: Uuid,
    /// The data directory's id (node.toml): a reflashed card comes back with a new one.
    pub directory_id: Uuid,
    /// Advertised Kafka listener.
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// The node's `--raft-listen` address, as peers reach it.
    pub raft_addr: String,
}

/// One topic as the single-node release kept it, imported once when the quorum first forms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImport {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
}

/// One entry of the metadata log. Applied in log order by every node (`image::MetadataImage::apply`),
/// so each must be deterministic given the image it is applied to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// The first command a new quorum commits: fixes the cluster id for good, and brings in the
    /// topics (and producer id mark) of a data directory written by a single-node release, all
    /// hosted by `node_id`. Ignored once the cluster id is set.
    InitCluster {
        cluster_id: String,
        node_id: i32,
        topics: Vec<TopicImport>,
        next_producer_id: i64,
    },
    RegisterBroker(BrokerRegistration),
    UnregisterBroker {
        node_id: i32,
    },
    /// The controller stopped hearing from the broker within its session timeout.
    FenceBroker {
        node_id: i32,
        incarnation: Uuid,
    },
    /// A fenced broker is heard from again.
    UnfenceBroker {
        node_id: i32,
        incarnation: Uuid,
    },
    /// Placement happens when this is applied, from the image it is applied to. `partitions` and
    /// `replication_factor` are resolved (never -1). `assignment`, when given, names each
    /// partition's replicas.
    CreateTopic {
        name: String,
        id: Uuid,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        assignment: Option<Vec<Vec<i32>>>,
    },
    /// Deletes the topic `name`; with `id`, only the topic of that id, and a retry of a deletion
    /// already applied answers Done again (proposals are retried across elections).
    DeleteTopic {
        name: String,
        id: Option<Uuid>,
    },
    CreatePartitions {
        name: String,
        count: i32,
        assignment: Option<Vec<Vec<i32>>>,
    },
    /// Leadership or ISR change of one partition (Kafka's AlterPartition), refused unless
    /// `partition_epoch` is the partition's current one, so a stale decision never wins.
    AlterPartition {
        topic_id: Uuid,
        partition: i32,
        partition_epoch: i32,
        leader: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
    },
    /// Replaces the topic's explicit configs.
    SetTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// Replaces the dynamic broker configs of one node (`Some(id)`) or the cluster default.
    SetBrokerConfigs {
        node_id: Option<i32>,
        configs: BTreeMap<String, String>,
    },
    /// Hands `count` producer ids to `node_id` (Kafka's AllocateProducerIds): blocks never overlap.
    AllocateProducerIds {
        node_id: i32,
        count: i64,
    },
    /// The broker is stopping (SIGTERM; KRaft's controlled shutdown): it is marked as shutting
    /// down (never elected, its heartbeats unfence nothing), each partition it leads moves to
    /// another live ISR member that is not shutting down (leader epoch bumped), and it leaves
    /// every ISR that has other members. Partitions it alone can lead stay with it. Idempotent:
    /// sent again, it moves what became movable since. Its next registration clears the mark.
    ControlledShutdown {
        node_id: i32,
        incarnation: Uuid,
    },
    /// Kafka's ElectLeaders: an election of each named partition (`None`: every partition, and
    /// the answer leaves out those that needed none). Answered by [`MetadataResponse::Elected`].
    ElectLeaders {
        election: Election,
        partitions: Option<Vec<(Uuid, i32)>>,
    },
}

/// Which leader an [`MetadataCommand::ElectLeaders`] asks for (Kafka's ElectionType).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Election {
    /// The first replica, if it is live, in the ISR and not shutting down.
    Preferred,
    /// Only for a partition with no live ISR member: any live replica (records acknowledged only
    /// by the lost ISR may be gone).
    Unclean,
}

/// One partition's outcome of an [`MetadataCommand::ElectLeaders`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionResult {
    pub topic_id: Uuid,
    pub partition: i32,
    /// A Kafka error code: `NONE`, `ELECTION_NOT_NEEDED`, `PREFERRED_LEADER_NOT_AVAILABLE`,
    /// `ELIGIBLE_LEADERS_NOT_AVAILABLE` or `UNKNOWN_TOPIC_OR_PARTITION` (see [`codes`]).
    pub code: i16,
}

/// Why the state machine refused a command: a Kafka error code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: i16,
    pub message: String,
}

/// What applying a command answers (returned to whoever proposed it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum MetadataResponse {
    /// Applied (also: membership and blank entries).
    #[default]
    Done,
    /// A topic was created with this id.
    TopicCreated { id: Uuid },
    /// `AllocateProducerIds`: ids `first .. first + count` belong to the asking node.
    ProducerIds { first: i64, count: i64 },
    /// Not applied; the image is unchanged.
    Refused(Refusal),
    /// `ElectLeaders`: each partition's outcome, in the order asked (by topic id and partition
    /// for all partitions).
    Elected(Vec<ElectionResult>),
}

/// A broker's request to the controller (the Raft leader), carried by the peer transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerRequest {
    /// Commit this command (an admin request that reached a non-controller node, a
    /// registration, a producer id block). Answered once applied on the controller.
    Propose(MetadataCommand),
    /// "I am alive" (Kafka's BrokerHeartbeat), every `broker_heartbeat_ms`.
    Heartbeat { node_id: i32, incarnation: Uuid },
    /// A node started with `--join`: add it to the quorum as a learner.
    Join { node_id: i32, raft_addr: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerResponse {
    Applied(MetadataResponse),
    /// The heartbeat was recorded; `registered` is false when the controller does not know this
    /// incarnation (the broker registers again).
    HeartbeatAck {
        registered: bool,
    },
    Joined,
    /// This node is not the controller; try `leader` (a Raft node id) if known.
    NotController {
        leader: Option<u64>,
    },
    /// The controller could not commit in time or has no quorum (retriable).
    Unavailable(String),
    /// The heartbeat was recorded (`registered` as in `HeartbeatAck`) by a controller that had a
    /// quorum's acknowledgement within the election timeout; `applied` is its last applied log
    /// index. The broker's lease (`meta::quorum::lease`) counts it once its image has applied
    /// that far. Added after the other variants: postcard numbers them.
    HeartbeatLease {
        registered: bool,
        applied: Option<u64>,
    },
}

/// Kafka error codes the state machine answers with.
pub mod codes {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const INVALID_REQUEST: i16 = 42;
    pub const STALE_BROKER_EPOCH: i16 = 77;
    pub const INCONSISTENT_CLUSTER_ID: i16 = 104;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const INVALID_UPDATE_VERSION: i16 = 108;
    pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
    pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
    pub const ELECTION_NOT_NEEDED: i16 = 84;
    /// An ISR change that adds a fenced or shutting-down broker (KIP-841).
    pub const INELIGIBLE_REPLICA: i16 = 107;
}
