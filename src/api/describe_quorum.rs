//! api::describe_quorum (key 55): the metadata quorum's leader, epoch, high watermark, voters and
//! observers, as Kafka's `kafka-metadata-quorum` tool and `Admin.describeMetadataQuorum` ask for
//! it. The answer comes from `Broker::quorum_status` ([`crate::meta::QuorumStatus`]); building it
//! is the pure [`respond`], so its unit tests need no broker.
//!
//! Kafka's answers, mirrored here (KafkaRaftClient.handleDescribeQuorumRequest, RaftUtil):
//! - a request that does not name exactly one topic `__cluster_metadata` with exactly partition 0
//!   gets UNKNOWN_TOPIC_OR_PARTITION on every topic and partition it named;
//! - a node that cannot describe the quorum gets NOT_LEADER_OR_FOLLOWER on `__cluster_metadata`
//!   partition 0 (see [`respond`]);
//! - otherwise the leader's view: on the leader, its own fetch and caught-up times are "now";
//!   from v2 each replica's directory id and a `nodes` list of the voters with their listeners.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, RequestHeader, TopicName,
};
use uuid::Uuid;

use super::str_bytes;
use crate::broker::Broker;
use crate::meta::command::BrokerRegistration;
use crate::meta::{QuorumStatus, ReplicaStatus};

#[cfg(test)]
mod tests;

/// The metadata log's topic name, as Kafka names it.
pub const METADATA_TOPIC: &str = "__cluster_metadata";
/// The metadata log's only partition.
pub const METADATA_PARTITION: i32 = 0;
/// The name v2 gives a node's Kafka listener (bramble has one plaintext listener per node).
pub const LISTENER_NAME: &str = "PLAINTEXT";
/// First version with directory ids, error messages and the `nodes` list.
const VERSION_NODES: i16 = 2;

/// Kafka's `Errors.UNKNOWN_TOPIC_OR_PARTITION.message()`, which its answer carries from v2.
const UNKNOWN_TOPIC_OR_PARTITION_MESSAGE: &str = "This server does not host this topic-partition.";
/// Kafka's `Errors.NOT_LEADER_OR_FOLLOWER.message()`.
const NOT_LEADER_OR_FOLLOWER_MESSAGE: &str = "For requests intended only for the leader, this \
    error indicates that the broker is not the current leader. For requests intended for any \
    replica, this error indicates that the broker is not a replica of the topic partition.";

/// One listener of a quorum member, as v2 lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// What the answer says about a quorum member beyond [`QuorumStatus`]: its data directory's id
/// (v2's `replica_directory_id`) and its listeners (v2's `nodes`). Members without an entry are
/// answered with the nil directory id and no listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumNode {
    pub node_id: i32,
    pub directory_id: Uuid,
    pub listeners: Vec<Endpoint>,
}

impl QuorumNode {
    /// A registered broker's entry: its directory id and advertised Kafka listener.
    pub fn from_registration(r: &BrokerRegistration) -> QuorumNode {
        QuorumNode::new(r.node_id, r.directory_id, &r.host, r.port)
    }

    /// A member listening on `host:port` (dropped if the port is not a TCP port).
    pub fn new(node_id: i32, directory_id: Uuid, host: &str, port: i32) -> QuorumNode {
        let listeners = u16::try_from(port)
            .ok()
            .map(|port| Endpoint {
                name: LISTENER_NAME.to_string(),
                host: host.to_string(),
                port,
            })
            .into_iter()
            .collect();
        QuorumNode {
            node_id,
            directory_id,
            listeners,
        }
    }
}

/// Everything [`respond`] reads, gathered by the handler.
#[derive(Debug, Clone)]
pub struct QuorumView<'a> {
    /// The node answering.
    pub local_id: i32,
    /// `None` while this node has no quorum to describe.
    pub status: Option<&'a QuorumStatus>,
    /// Directory ids and listeners of the members this node knows.
    pub nodes: &'a [QuorumNode],
    /// Unix ms: the leader's own fetch and caught-up times.
    pub now_ms: i64,
}

pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    let status = broker.quorum_status();
    // The registered brokers' listeners and directory ids; before this node's own registration
    // is applied, at least its own address.
    let mut nodes: Vec<QuorumNode> = broker
        .image()
        .map(|image| {
            image
                .brokers
                .values()
                .map(|b| QuorumNode::from_registration(&b.registration))
                .collect()
        })
        .unwrap_or_default();
    if !nodes.iter().any(|n| n.node_id == broker.identity.node_id) {
        nodes.push(QuorumNode::new(
            broker.identity.node_id,
            broker.identity.directory_id.unwrap_or(Uuid::nil()),
            &broker.advertised.host,
            broker.advertised.port,
        ));
    }
    let view = QuorumView {
        local_id: broker.identity.node_id,
        status: status.as_ref(),
        nodes: &nodes,
        now_ms: super::now_ms(),
    };
    respond(&request, &view, header.request_api_version)
}

/// The answer to `request` at `version` from what `view` holds.
///
/// With no quorum status, or one that knows no leader, this node cannot describe the quorum.
/// Kafka's Raft client answers a node that is not the quorum's leader (including one whose quorum
/// has no leader yet) with NOT_LEADER_OR_FOLLOWER on `__cluster_metadata` partition 0, and so
/// does this node: it is retriable, so Kafka's admin client retries until a leader is elected
/// instead of failing. (A Kafka broker forwards DescribeQuorum to the controller, whose Raft
/// client answers it; with no controller reachable that forwarding times out, which an admin
/// client also retries.) A node that knows the leader answers with its own view: the progress
/// figures only the leader has are -1 elsewhere ([`ReplicaStatus`]).
pub fn respond(
    request: &DescribeQuorumRequest,
    view: &QuorumView<'_>,
    version: i16,
) -> DescribeQuorumResponse {
    if !names_metadata_partition(request) {
        return unknown_partitions(request);
    }
    let Some((status, leader_id)) = view.status.and_then(|s| Some((s, s.leader_id?))) else {
        return not_leader();
    };
    let replicas = |members: &[ReplicaStatus]| -> Vec<ReplicaState> {
        members
            .iter()
            .map(|m| replica_state(m, leader_id, view, version))
            .collect()
    };
    let partition = PartitionData::default()
        .with_partition_index(METADATA_PARTITION)
        .with_error_code(super::NONE)
        .with_leader_id(BrokerId(leader_id))
        .with_leader_epoch(i32::try_from(status.term).unwrap_or(i32::MAX))
        .with_high_watermark(high_watermark(status.commit_index))
        .with_current_voters(replicas(&status.voters))
        .with_observers(replicas(&status.observers));
    let mut response = DescribeQuorumResponse::default().with_topics(vec![
        TopicData::default()
            .with_topic_name(metadata_topic())
            .with_partitions(vec![partition]),
    ]);
    if version >= VERSION_NODES {
        // Kafka lists the voters only, each with its listeners.
        let nodes = status
            .voters
            .iter()
            .map(|v| {
                let listeners = node(view.nodes, v.node_id)
                    .map(|n| n.listeners.iter().map(listener).collect())
                    .unwrap_or_default();
                Node::default()
                    .with_node_id(BrokerId(v.node_id))
                    .with_listeners(listeners)
            })
            .collect();
        response = response.with_nodes(nodes);
    }
    response
}

/// Kafka's high watermark is the offset after the last committed record, as a log end offset is
/// the one after the last record held ([`ReplicaStatus::log_end_offset`] is the matched index +
/// 1): the commit index + 1, so a caught-up voter's log end offset equals it. -1 when nothing is
/// committed.
pub fn high_watermark(commit_index: Option<u64>) -> i64 {
    commit_index
        .and_then(|i| i64::try_from(i).ok())
        .map_or(-1, |i| i.saturating_add(1))
}

fn replica_state(
    member: &ReplicaStatus,
    leader_id: i32,
    view: &QuorumView<'_>,
    version: i16,
) -> ReplicaState {
    // Kafka's leader reports itself as fetching and caught up now.
    let (fetch, caught_up) = if member.node_id == leader_id && leader_id == view.local_id {
        (view.now_ms, view.now_ms)
    } else {
        (member.last_fetch_ms, member.last_caught_up_ms)
    };
    let directory_id = match version >= VERSION_NODES {
        true => node(view.nodes, member.node_id).map_or(Uuid::nil(), |n| n.directory_id),
        // Not in the v0/v1 layout; the encoder refuses anything but nil.
        false => Uuid::nil(),
    };
    ReplicaState::default()
        .with_replica_id(BrokerId(member.node_id))
        .with_replica_directory_id(directory_id)
        .with_log_end_offset(member.log_end_offset)
        .with_last_fetch_timestamp(fetch)
        .with_last_caught_up_timestamp(caught_up)
}

fn node(nodes: &[QuorumNode], node_id: i32) -> Option<&QuorumNode> {
    nodes.iter().find(|n| n.node_id == node_id)
}

fn listener(e: &Endpoint) -> Listener {
    Listener::default()
        .with_name(str_bytes(e.name.clone()))
        .with_host(str_bytes(e.host.clone()))
        .with_port(e.port)
}

fn metadata_topic() -> TopicName {
    TopicName(str_bytes(METADATA_TOPIC))
}

/// Kafka's `hasValidTopicPartition`: exactly one topic, the metadata topic, with exactly one
/// partition, partition 0.
fn names_metadata_partition(request: &DescribeQuorumRequest) -> bool {
    match request.topics.as_slice() {
        [topic] => {
            topic.topic_name.as_str() == METADATA_TOPIC
                && matches!(topic.partitions.as_slice(),
                    [p] if p.partition_index == METADATA_PARTITION)
        }
        _ => false,
    }
}

/// Kafka's `getPartitionLevelErrorResponse`: every topic and partition the request named, each
/// with UNKNOWN_TOPIC_OR_PARTITION.
fn unknown_partitions(request: &DescribeQuorumRequest) -> DescribeQuorumResponse {
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    partition_error(
                        p.partition_index,
                        ResponseError::UnknownTopicOrPartition,
                        UNKNOWN_TOPIC_OR_PARTITION_MESSAGE,
                    )
                })
                .collect();
            TopicData::default()
                .with_topic_name(t.topic_name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeQuorumResponse::default().with_topics(topics)
}

/// Kafka's `singletonErrorResponse(__cluster_metadata-0, NOT_LEADER_OR_FOLLOWER)`.
fn not_leader() -> DescribeQuorumResponse {
    DescribeQuorumResponse::default().with_topics(vec![
        TopicData::default()
            .with_topic_name(metadata_topic())
            .with_partitions(vec![partition_error(
                METADATA_PARTITION,
                ResponseError::NotLeaderOrFollower,
                NOT_LEADER_OR_FOLLOWER_MESSAGE,
            )]),
    ])
}

/// A partition carrying only an error, the other fields at Kafka's defaults (as Kafka sends).
fn partition_error(index: i32, error: ResponseError, message: &str) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(error.code())
        .with_error_message(Some(str_bytes(message)))
}
