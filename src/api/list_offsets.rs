//! api::list_offsets (key 2): earliest, latest, by timestamp and max-timestamp offsets per partition.

use std::collections::HashSet;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, RequestHeader};

use crate::broker::{Broker, Replica};
use crate::log::{InspectBudget, LogError};

/// Special timestamps of the ListOffsets request.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

/// ListOffsets v4 added the leader epoch to each answer.
const LEADER_EPOCH_VERSION_MIN: i16 = 4;
/// Kafka's DEBUGGING_REPLICA_ID: any replica answers, latest is its log end offset (what
/// `bramble cluster leaders` reads each replica's progress with).
const DEBUGGING_REPLICA_ID: i32 = -2;

pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let with_epoch = header.request_api_version >= LEADER_EPOCH_VERSION_MIN;
    // Consumers read to the high watermark; brokers and the debugging id see the log end.
    let replica_id = request.replica_id.0;
    let log_end = replica_id >= 0 || replica_id == DEBUGGING_REPLICA_ID;
    let mut topics = Vec::with_capacity(request.topics.len());
    // Kafka refuses a partition named twice; answering each once also bounds the work one request
    // can ask for (a by-timestamp lookup may decompress a batch).
    let mut seen = HashSet::new();
    for t in request.topics {
        let topic = broker.topic(&t.name);
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let response =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            if !seen.insert((t.name.to_string(), p.partition_index)) {
                partitions.push(response.with_error_code(ResponseError::InvalidRequest.code()));
                continue;
            }
            let replica = match &topic {
                Some(t) if replica_id == DEBUGGING_REPLICA_ID => t
                    .partition(p.partition_index)
                    .ok_or(ResponseError::NotLeaderOrFollower),
                Some(t) => crate::api::lead(broker, t, p.partition_index)
                    .and_then(|r| check_epoch(p.current_leader_epoch, r)),
                None => Err(ResponseError::UnknownTopicOrPartition),
            };
            let replica = replica.and_then(|r| {
                // A new leader whose HW has not reached its epoch's start cannot say where the
                // committed log ends yet (Kafka's OFFSET_NOT_AVAILABLE; clients retry).
                let behind = r
                    .state
                    .epoch_start()
                    .is_some_and(|start| r.log.high_watermark() < start);
                if behind && !log_end {
                    return Err(ResponseError::OffsetNotAvailable);
                }
                Ok(r)
            });
            let response = match replica {
                Err(e) => response.with_error_code(e.code()),
                Ok(r) => match lookup(&r, p.timestamp, log_end, &broker.inspect_budget).await {
                    Ok((offset, timestamp)) => {
                        let response = response.with_offset(offset).with_timestamp(timestamp);
                        if with_epoch {
                            response.with_leader_epoch(r.leader_epoch())
                        } else {
                            response
                        }
                    }
                    Err(e) => {
                        tracing::warn!(topic = t.name.as_str(), partition = p.partition_index, error = %e, "list offsets failed");
                        response.with_error_code(ResponseError::KafkaStorageError.code())
                    }
                },
            };
            partitions.push(response);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// (offset, timestamp) for one partition; (-1, -1) when no record matches.
/// A by-timestamp or max-timestamp lookup may read and decompress batches: within `inspect`.
async fn lookup(
    replica: &Replica,
    timestamp: i64,
    log_end: bool,
    inspect: &InspectBudget,
) -> Result<(i64, i64), LogError> {
    let log = &replica.log;
    // Consumers are never told of a record at or above the high watermark (Kafka filters
    // timestamp answers the same way); brokers and the debugging id see the whole log.
    let visible = |found: Option<(i64, i64)>| {
        found
            .filter(|(offset, _)| log_end || *offset < log.high_watermark())
            .unwrap_or((-1, -1))
    };
    Ok(match timestamp {
        LATEST if log_end => (log.log_end_offset(), -1),
        LATEST => (log.high_watermark(), -1),
        EARLIEST | EARLIEST_LOCAL => (log.log_start_offset(), -1),
        MAX_TIMESTAMP => visible(log.max_timestamp(inspect).await?),
        LATEST_TIERED => (-1, -1),
        ts if ts >= 0 => visible(log.offset_for_timestamp(ts, inspect).await?),
        _ => (-1, -1),
    })
}

/// A client that knows a newer leader epoch than ours is ahead of us (UNKNOWN_LEADER_EPOCH); an
/// older one is stale (FENCED_LEADER_EPOCH). -1: the client does not say.
fn check_epoch(
    client_epoch: i32,
    replica: std::sync::Arc<Replica>,
) -> Result<std::sync::Arc<Replica>, ResponseError> {
    let current = replica.leader_epoch();
    if client_epoch < 0 || client_epoch == current {
        Ok(replica)
    } else if client_epoch > current {
        Err(ResponseError::UnknownLeaderEpoch)
    } else {
        Err(ResponseError::FencedLeaderEpoch)
    }
}
