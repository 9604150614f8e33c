//! api::produce (key 0): the write path. Each partition's batches are validated and appended by
//! `log::Partition::append` (which assigns offsets and waits for durability per the flush
//! policy); partitions of one request are appended concurrently so one group commit covers them.
//! acks=0 gets no response at all, as Kafka specifies.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, RequestHeader};

use super::str_bytes;
use crate::broker::{Broker, topic};
use crate::log::{self, LogError};

/// Kafka's valid `acks` values: all in-sync replicas, none, leader only.
const ACKS_VALID: [i16; 3] = [-1, 0, 1];

pub async fn handle(
    broker: &Broker,
    _header: &RequestHeader,
    request: ProduceRequest,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic_data in request.topic_data {
        let topic = broker.topic_or_auto_create(&topic_data.name).await;
        let mut appends = Vec::with_capacity(topic_data.partition_data.len());
        for pd in topic_data.partition_data {
            let target = match &topic {
                Some(t) => t
                    .partition(pd.index)
                    .map(|r| (r.log.clone(), r.leader_epoch))
                    .ok_or(ResponseError::UnknownTopicOrPartition),
                None if topic::validate_name(&topic_data.name).is_err() => {
                    Err(ResponseError::InvalidTopicException)
                }
                None => Err(ResponseError::UnknownTopicOrPartition),
            };
            appends.push(produce_partition(target, pd.index, pd.records, acks));
        }
        let partition_responses = join_all(appends).await;
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_data.name)
                .with_topic_id(topic_data.topic_id)
                .with_partition_responses(partition_responses),
        );
    }
    if acks == 0 {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}

async fn produce_partition(
    target: Result<(Arc<log::Partition>, i32), ResponseError>,
    index: i32,
    records: Option<Bytes>,
    acks: i16,
) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default().with_index(index);
    let fail = |err: ResponseError, message: String| {
        response
            .clone()
            .with_error_code(err.code())
            .with_error_message(Some(str_bytes(message)))
    };
    if !ACKS_VALID.contains(&acks) {
        return fail(
            ResponseError::InvalidRequiredAcks,
            format!("acks must be -1, 0 or 1, not {acks}"),
        );
    }
    let (log, leader_epoch) = match target {
        Ok(target) => target,
        Err(e) => return fail(e, "this broker does not host that topic-partition".into()),
    };
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return fail(
            ResponseError::InvalidRecord,
            "produce request carried no record batch".into(),
        );
    };
    let appended = match log.append(records, leader_epoch).await {
        // A producer's retry of a batch already in the log: Kafka answers success with the
        // original offsets (not DUPLICATE_SEQUENCE_NUMBER), so the client completes the send.
        Err(LogError::DuplicateSequence { original, .. }) => Ok(original),
        other => other,
    };
    match appended {
        Ok(info) => response
            .with_base_offset(info.base_offset)
            .with_log_append_time_ms(-1)
            .with_log_start_offset(info.log_start_offset),
        Err(e) => {
            let err = match &e {
                LogError::Corrupt(_) => ResponseError::CorruptMessage,
                LogError::TooLarge { .. } => ResponseError::MessageTooLarge,
                LogError::WriterStopped => ResponseError::NotLeaderOrFollower,
                LogError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
                LogError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
                LogError::OffsetOutOfRange { .. }
                | LogError::Io { .. }
                | LogError::DuplicateSequence { .. } => ResponseError::KafkaStorageError,
            };
            tracing::debug!(partition = index, error = %e, "produce refused");
            fail(err, e.to_string())
        }
    }
}
