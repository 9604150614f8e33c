//! api::produce (key 0): the write path, in two halves. [`stage`] runs in request order: it
//! resolves each partition, and `log::Partition::append_staged` validates the batches, assigns
//! offsets and queues the write. [`Staged::finish`] then waits until the writes are durable (per
//! the flush policy) and builds the answer. The connection stages its next pipelined request
//! while this one waits, so one group commit covers several requests of a single producer.
//! acks=0 gets no response at all, as Kafka specifies.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, RequestHeader, TopicName};
use uuid::Uuid;

use super::str_bytes;
use crate::broker::{Broker, topic};
use crate::log::{self, AppendInfo, LogError};

/// Kafka's valid `acks` values: all in-sync replicas, none, leader only.
const ACKS_VALID: [i16; 3] = [-1, 0, 1];

/// A partition's answer so far, and the write it still waits for (None: already answered).
type PartitionSlot = (PartitionProduceResponse, Option<log::Staged>);

/// A produce request whose writes are queued in order; owns everything, so it outlives the call.
pub struct Staged {
    acks: i16,
    topics: Vec<(TopicName, Uuid, Vec<PartitionSlot>)>,
}

pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: ProduceRequest,
) -> Option<ProduceResponse> {
    stage(broker, header, request).await.finish().await
}

/// The ordered half: every partition's batches validated, offsets assigned, writes queued.
pub async fn stage(broker: &Broker, _header: &RequestHeader, request: ProduceRequest) -> Staged {
    let acks = request.acks;
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic_data in request.topic_data {
        let topic = broker.topic_or_auto_create(&topic_data.name).await;
        let mut slots = Vec::with_capacity(topic_data.partition_data.len());
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
            slots.push(stage_partition(target, pd.index, pd.records, acks).await);
        }
        topics.push((topic_data.name, topic_data.topic_id, slots));
    }
    Staged { acks, topics }
}

impl Staged {
    /// The waiting half: all partitions' writes become durable together (one group commit).
    pub async fn finish(self) -> Option<ProduceResponse> {
        let mut responses = Vec::with_capacity(self.topics.len());
        for (name, topic_id, slots) in self.topics {
            let partition_responses =
                join_all(slots.into_iter().map(|(response, pending)| async move {
                    match pending {
                        Some(write) => answer(response, write.durable().await),
                        None => response,
                    }
                }))
                .await;
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_topic_id(topic_id)
                    .with_partition_responses(partition_responses),
            );
        }
        if self.acks == 0 {
            return None;
        }
        Some(ProduceResponse::default().with_responses(responses))
    }
}

async fn stage_partition(
    target: Result<(Arc<log::Partition>, i32), ResponseError>,
    index: i32,
    records: Option<Bytes>,
    acks: i16,
) -> PartitionSlot {
    let response = PartitionProduceResponse::default().with_index(index);
    let fail = |err: ResponseError, message: &str| {
        let r = response
            .clone()
            .with_error_code(err.code())
            .with_error_message(Some(str_bytes(message)));
        (r, None)
    };
    if !ACKS_VALID.contains(&acks) {
        return fail(
            ResponseError::InvalidRequiredAcks,
            &format!("acks must be -1, 0 or 1, not {acks}"),
        );
    }
    let (log, leader_epoch) = match target {
        Ok(target) => target,
        Err(e) => return fail(e, "this broker does not host that topic-partition"),
    };
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return fail(
            ResponseError::InvalidRecord,
            "produce request carried no record batch",
        );
    };
    match log.append_staged(records, leader_epoch).await {
        Ok(write) => (response, Some(write)),
        Err(e) => (answer(response.clone(), Err(e)), None),
    }
}

/// A partition's answer from the outcome of its append.
fn answer(
    response: PartitionProduceResponse,
    appended: Result<AppendInfo, LogError>,
) -> PartitionProduceResponse {
    let appended = match appended {
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
                | LogError::CorruptStored { .. }
                | LogError::DuplicateSequence { .. } => ResponseError::KafkaStorageError,
            };
            tracing::debug!(partition = response.index, error = %e, "produce refused");
            response
                .with_error_code(err.code())
                .with_error_message(Some(str_bytes(e.to_string())))
        }
    }
}
