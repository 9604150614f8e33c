//! api::offset_for_leader_epoch (key 23): where a leader epoch's records end in the leader's
//! log (KIP-101/KIP-279). Followers ask it before fetching, to cut records a deposed leader
//! wrote that the new leader never had; consumers ask it after a leader change to detect a
//! truncated log (KIP-320). Answered only by the leader, from its leader-epoch cache: the
//! largest epoch at or below the one asked, and the start offset of the next epoch (the log
//! end offset for the latest); (-1, -1) when the leader has no such history.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, RequestHeader,
};

use crate::broker::Broker;

/// Kafka's UNDEFINED_EPOCH and UNDEFINED_EPOCH_OFFSET.
const UNDEFINED: (i32, i64) = (-1, -1);

pub async fn handle(
    broker: &Broker,
    _header: &RequestHeader,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let topic = broker.topic(&t.topic);
        let partitions = t
            .partitions
            .iter()
            .map(|p| {
                let answer = EpochEndOffset::default()
                    .with_partition(p.partition)
                    .with_leader_epoch(UNDEFINED.0)
                    .with_end_offset(UNDEFINED.1);
                let refuse = |e: ResponseError| answer.clone().with_error_code(e.code());
                let Some(topic) = &topic else {
                    return refuse(ResponseError::UnknownTopicOrPartition);
                };
                let replica = match crate::api::lead(broker, topic, p.partition) {
                    Ok(r) => r,
                    Err(e) => return refuse(e),
                };
                let current = replica.leader_epoch();
                if p.current_leader_epoch >= 0 && p.current_leader_epoch < current {
                    return refuse(ResponseError::FencedLeaderEpoch);
                }
                if p.current_leader_epoch > current {
                    return refuse(ResponseError::UnknownLeaderEpoch);
                }
                let (epoch, end) = replica.log.end_offset_for_epoch(p.leader_epoch);
                answer.with_leader_epoch(epoch).with_end_offset(end)
            })
            .collect();
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
