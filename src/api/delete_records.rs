//! api::delete_records (key 21): raise partitions' log start offsets (AdminClient.delete_records,
//! `kafka-delete-records.sh`). Reads below the new start answer OFFSET_OUT_OF_RANGE and
//! ListOffsets earliest returns it; retention later removes whole segments below it. The new start
//! is on disk before the answer (`log::start_offset`), so it survives a restart.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_request::DeleteRecordsPartition;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse, RequestHeader};

use crate::broker::{Broker, Topic};
use crate::log::LogError;

/// The request's offset that means "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

pub async fn handle(
    broker: &Broker,
    _header: &RequestHeader,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let topic = broker.topic(&t.name);
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            partitions.push(delete(broker, topic.as_deref(), &p).await);
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

async fn delete(
    broker: &Broker,
    topic: Option<&Topic>,
    p: &DeleteRecordsPartition,
) -> DeleteRecordsPartitionResult {
    let result = DeleteRecordsPartitionResult::default()
        .with_partition_index(p.partition_index)
        .with_low_watermark(-1);
    let refuse = |e: ResponseError| result.clone().with_error_code(e.code());
    let Some(topic) = topic else {
        return refuse(ResponseError::UnknownTopicOrPartition);
    };
    let replica = match crate::api::lead(broker, topic, p.partition_index) {
        Ok(replica) => replica,
        Err(e) => return refuse(e),
    };
    // Kafka never deletes records of its internal topics (group offsets would vanish) nor of a
    // topic whose cleanup.policy lacks `delete`.
    if topic.is_internal() {
        return refuse(ResponseError::InvalidTopicException);
    }
    if !replica.log.cleanup().delete {
        return refuse(ResponseError::PolicyViolation);
    }
    let offset = match p.offset {
        HIGH_WATERMARK => replica.log.high_watermark(),
        o => o,
    };
    match replica.log.delete_records_before(offset).await {
        Ok(start) => result.with_low_watermark(start),
        Err(LogError::OffsetOutOfRange { .. }) => refuse(ResponseError::OffsetOutOfRange),
        Err(e) => {
            tracing::warn!(topic = %topic.name, partition = p.partition_index, error = %e, "delete records failed");
            refuse(ResponseError::KafkaStorageError)
        }
    }
}
