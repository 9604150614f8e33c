//! api: one file per Kafka API, each with the same shape — `handle(broker, header, request) ->
//! response`. This file is the dispatch table: it decides whether a request is one we serve at
//! that version, decodes it, calls the handler and encodes the answer.
//!
//! The advertised ranges are Apache Kafka 4.0's for every API implemented, so clients that infer
//! the broker's release from ApiVersions land on one real release (docs/COMPAT.md).

pub mod alter_configs;
pub mod alter_replica_log_dirs;
pub mod api_versions;
pub mod broker_configs;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_quorum;
pub mod describe_topic_partitions;
pub mod elect_leaders;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod request_log;
pub mod sync_group;

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::StrBytes;
use tokio::sync::OwnedSemaphorePermit;

use crate::broker::Broker;
use crate::protocol::codec::{self, CodecError};

/// (api, min version, max version) served by this broker.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::AlterReplicaLogDirs, 1, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::ElectLeaders, 0, 2),
];

pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, min, max)| (min, max))
}

/// Why a request could not be answered; the connection logs it and closes.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("api {key:?} version {version} is not supported (serving {min}..={max})")]
    UnsupportedVersion {
        key: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("api key {0} is not served by this broker")]
    UnsupportedApi(i16),
}

/// A request's encoded answer: `None` is no answer at all (Produce with acks=0).
pub type Answer = Result<Option<BytesMut>, CodecError>;

/// What [`dispatch`] hands back to the connection.
pub enum Reply {
    /// The answer is known.
    Ready(Option<BytesMut>),
    /// The answer is known and holds its size in the node's fetch budget until it is written.
    Held(BytesMut, OwnedSemaphorePermit),
    /// The request's ordered work is done (a Produce's writes are queued); the answer comes once
    /// the disk has them. The connection may dispatch its next request meanwhile and writes
    /// answers in request order.
    Pending(Pin<Box<dyn Future<Output = Answer> + Send>>),
}

/// Handles one request frame (without its length prefix), in request order.
pub async fn dispatch(broker: &Broker, mut frame: Bytes) -> Result<Reply, DispatchError> {
    use kafka_protocol::messages::*;
    let request_bytes = frame.len();
    let prefix = codec::peek_prefix(&frame)?;
    let key =
        ApiKey::try_from(prefix.api_key).map_err(|_| CodecError::UnknownApiKey(prefix.api_key))?;
    let (min, max) = supported_range(key).ok_or(DispatchError::UnsupportedApi(prefix.api_key))?;
    if !(min..=max).contains(&prefix.api_version) {
        if key == ApiKey::ApiVersions {
            // Clients open with their newest ApiVersions; the v0-format answer tells them ours.
            let answer = api_versions::unsupported_version_response(prefix.correlation_id)?;
            return Ok(Reply::Ready(Some(answer)));
        }
        return Err(DispatchError::UnsupportedVersion {
            key,
            version: prefix.api_version,
            min,
            max,
        });
    }
    let header = codec::decode_header(&mut frame, key, prefix.api_version)?;
    let (version, correlation_id) = (header.request_api_version, header.correlation_id);
    // None unless debug logging is on for requests (the produce path pays one level check).
    let log = request_log::RequestLog::start(key, &header, request_bytes);
    // Each arm: decode the body, run the handler, encode its answer. Defined here so it can use
    // this function's locals.
    macro_rules! serve {
        ($module:ident, $request:ty) => {{
            let request: $request = codec::decode_body(&mut frame, version, stringify!($module))?;
            let response = $module::handle(broker, &header, request).await;
            let encoded =
                codec::encode_response(correlation_id, version, &response, stringify!($module))?;
            if let Some(log) = log {
                log.finish(Some(&response));
            }
            Ok(Reply::Ready(Some(encoded)))
        }};
    }
    match key {
        ApiKey::Produce => {
            let request: ProduceRequest = codec::decode_body(&mut frame, version, "produce")?;
            let staged = produce::stage(broker, &header, request).await;
            Ok(Reply::Pending(Box::pin(async move {
                let response = staged.finish().await;
                if let Some(log) = log {
                    log.finish(response.as_ref());
                }
                match response {
                    Some(response) => {
                        codec::encode_response(correlation_id, version, &response, "produce")
                            .map(Some)
                    }
                    // acks=0: no response at all.
                    None => Ok(None),
                }
            })))
        }
        ApiKey::Fetch => {
            let request: FetchRequest = codec::decode_body(&mut frame, version, "fetch")?;
            let (response, budget) = fetch::handle(broker, &header, request).await;
            let encoded = codec::encode_response(correlation_id, version, &response, "fetch")?;
            if let Some(log) = log {
                log.finish(Some(&response));
            }
            drop(response);
            // From here until it is written, the answer holds only its own size.
            match budget.and_then(|mut b| b.split(encoded.len().min(b.num_permits()))) {
                Some(held) => Ok(Reply::Held(encoded, held)),
                None => Ok(Reply::Ready(Some(encoded))),
            }
        }
        ApiKey::ListOffsets => serve!(list_offsets, ListOffsetsRequest),
        ApiKey::Metadata => serve!(metadata, MetadataRequest),
        ApiKey::FindCoordinator => serve!(find_coordinator, FindCoordinatorRequest),
        ApiKey::ApiVersions => serve!(api_versions, ApiVersionsRequest),
        ApiKey::CreateTopics => serve!(create_topics, CreateTopicsRequest),
        ApiKey::DeleteTopics => serve!(delete_topics, DeleteTopicsRequest),
        ApiKey::DescribeConfigs => serve!(describe_configs, DescribeConfigsRequest),
        ApiKey::CreatePartitions => serve!(create_partitions, CreatePartitionsRequest),
        ApiKey::IncrementalAlterConfigs => {
            serve!(incremental_alter_configs, IncrementalAlterConfigsRequest)
        }
        ApiKey::DescribeCluster => serve!(describe_cluster, DescribeClusterRequest),
        ApiKey::InitProducerId => serve!(init_producer_id, InitProducerIdRequest),
        ApiKey::OffsetCommit => serve!(offset_commit, OffsetCommitRequest),
        ApiKey::OffsetFetch => serve!(offset_fetch, OffsetFetchRequest),
        ApiKey::JoinGroup => serve!(join_group, JoinGroupRequest),
        ApiKey::Heartbeat => serve!(heartbeat, HeartbeatRequest),
        ApiKey::LeaveGroup => serve!(leave_group, LeaveGroupRequest),
        ApiKey::SyncGroup => serve!(sync_group, SyncGroupRequest),
        ApiKey::DescribeGroups => serve!(describe_groups, DescribeGroupsRequest),
        ApiKey::ListGroups => serve!(list_groups, ListGroupsRequest),
        ApiKey::DeleteGroups => serve!(delete_groups, DeleteGroupsRequest),
        ApiKey::OffsetDelete => serve!(offset_delete, OffsetDeleteRequest),
        ApiKey::DeleteRecords => serve!(delete_records, DeleteRecordsRequest),
        ApiKey::AlterConfigs => serve!(alter_configs, AlterConfigsRequest),
        ApiKey::AlterReplicaLogDirs => serve!(alter_replica_log_dirs, AlterReplicaLogDirsRequest),
        ApiKey::DescribeLogDirs => serve!(describe_log_dirs, DescribeLogDirsRequest),
        ApiKey::DescribeTopicPartitions => {
            serve!(describe_topic_partitions, DescribeTopicPartitionsRequest)
        }
        ApiKey::DescribeQuorum => serve!(describe_quorum, DescribeQuorumRequest),
        ApiKey::OffsetForLeaderEpoch => {
            serve!(offset_for_leader_epoch, OffsetForLeaderEpochRequest)
        }
        ApiKey::ElectLeaders => serve!(elect_leaders, ElectLeadersRequest),
        _ => Err(DispatchError::UnsupportedApi(prefix.api_key)),
    }
}

/// Kafka error code for "no error".
pub const NONE: i16 = 0;

pub fn code(e: ResponseError) -> i16 {
    e.code()
}

pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The replica of `partition` if this node leads it; else the error Kafka answers a client that
/// asked the wrong node (it refreshes its metadata and moves).
pub fn lead(
    broker: &Broker,
    topic: &crate::broker::Topic,
    partition: i32,
) -> Result<std::sync::Arc<crate::broker::Replica>, ResponseError> {
    broker
        .leader_replica(topic, partition)
        .map(|(replica, _)| replica)
        .map_err(not_leading)
}

/// The Kafka error for a partition this node may not serve.
pub fn not_leading(e: crate::broker::NotLeading) -> ResponseError {
    match e {
        crate::broker::NotLeading::UnknownPartition => ResponseError::UnknownTopicOrPartition,
        crate::broker::NotLeading::NotLeader => ResponseError::NotLeaderOrFollower,
    }
}

/// When an admin request (CreateTopics, DeleteTopics, CreatePartitions) must be answered: its
/// own `timeout_ms` from now, when positive (Kafka's meaning; 0 or less asks not to wait, which
/// here means the node's `controller_request_ms_max` alone bounds it).
pub fn admin_deadline(timeout_ms: i32) -> Option<tokio::time::Instant> {
    u64::try_from(timeout_ms)
        .ok()
        .filter(|ms| *ms > 0)
        .map(|ms| tokio::time::Instant::now() + std::time::Duration::from_millis(ms))
}

/// Runs one admin change until `deadline`; past it the change fails with REQUEST_TIMED_OUT
/// (retriable). The change may still commit, as on Kafka when a request times out.
pub async fn within<T>(
    deadline: Option<tokio::time::Instant>,
    change: impl Future<Output = Result<T, crate::broker::TopicError>>,
) -> Result<T, crate::broker::TopicError> {
    let Some(deadline) = deadline else {
        return change.await;
    };
    match tokio::time::timeout_at(deadline, change).await {
        Ok(result) => result,
        Err(_) => Err(crate::broker::TopicError::Unavailable(
            crate::meta::QuorumError::Timeout(0),
        )),
    }
}

/// Maps a topic administration failure onto Kafka's error table, keeping the message.
pub fn topic_error(e: &crate::broker::TopicError) -> (i16, Option<StrBytes>) {
    use crate::broker::TopicError as E;
    let err = match e {
        E::AlreadyExists(_) => ResponseError::TopicAlreadyExists,
        E::Unknown(_) => ResponseError::UnknownTopicOrPartition,
        E::InvalidName(_) => ResponseError::InvalidTopicException,
        E::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        E::InvalidReplicationFactor { .. } => ResponseError::InvalidReplicationFactor,
        E::InvalidConfig(_) => ResponseError::InvalidConfig,
        E::Storage(_) => ResponseError::KafkaStorageError,
        E::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        E::InvalidRequest(_) => ResponseError::InvalidRequest,
        E::Refused { code, .. } => {
            return (*code, Some(str_bytes(e.to_string())));
        }
        E::Unavailable(crate::meta::QuorumError::Timeout(_)) => ResponseError::RequestTimedOut,
        E::Unavailable(_) => ResponseError::NotController,
    };
    (err.code(), Some(str_bytes(e.to_string())))
}

/// Kafka's AclOperation codes that a topic and the cluster support (`AclEntry.supportedOperations`).
/// With no authorizer configured Kafka reports every supported operation as allowed, as a bit set
/// (bit n = operation code n); so does this node, which has none.
const TOPIC_OPERATIONS: &[u8] = &[3, 4, 5, 6, 7, 8, 10, 11];
const CLUSTER_OPERATIONS: &[u8] = &[5, 7, 8, 9, 10, 11, 12];
/// What Kafka puts in an authorized-operations field the client did not ask for.
pub const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

fn bit_set(ops: &[u8]) -> i32 {
    ops.iter().fold(0, |bits, op| bits | (1 << op))
}

/// A topic's authorized operations when `asked`, else Kafka's "not requested" value.
pub fn topic_operations(asked: bool) -> i32 {
    if asked {
        bit_set(TOPIC_OPERATIONS)
    } else {
        OPERATIONS_NOT_REQUESTED
    }
}

/// The cluster's authorized operations when `asked`, else Kafka's "not requested" value.
pub fn cluster_operations(asked: bool) -> i32 {
    if asked {
        bit_set(CLUSTER_OPERATIONS)
    } else {
        OPERATIONS_NOT_REQUESTED
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
