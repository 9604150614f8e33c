//! api::describe_topic_partitions (key 75, KIP-966): topics' partitions, paged. Kafka 3.8+ admin
//! clients describe topics with it. Topics are answered in name order (all topics when the list
//! is empty), at most `response_partition_limit` partitions per answer (capped at Kafka's
//! default `max.request.partition.size.limit`); when more remain, `next_cursor` names the topic
//! and partition the next request starts from, and the client passes it back as `cursor`.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, RequestHeader,
    TopicName,
};

use super::{str_bytes, topic_operations};
use crate::broker::{Broker, Topic};

/// Kafka's `max.request.partition.size.limit` default: the most partitions one answer holds,
/// whatever the client asks for (bounds the answer's size).
pub const RESPONSE_PARTITIONS_MAX: i32 = 2000;

pub async fn handle(
    broker: &Broker,
    _header: &RequestHeader,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let all = request.topics.is_empty();
    let mut names: Vec<String> = if all {
        broker.topics().iter().map(|t| t.name.clone()).collect()
    } else {
        request.topics.iter().map(|t| t.name.to_string()).collect()
    };
    names.sort_unstable();
    names.dedup();
    let (start_topic, start_partition) = match &request.cursor {
        Some(c) => (Some(c.topic_name.to_string()), c.partition_index),
        None => (None, 0),
    };
    // Kafka: the cursor's topic must be one of the listed topics, and its partition not negative.
    let bad_cursor = start_partition < 0
        || start_topic
            .as_ref()
            .is_some_and(|t| !all && !names.contains(t));
    if bad_cursor {
        let topics = names
            .into_iter()
            .map(|n| unknown(n, ResponseError::InvalidRequest))
            .collect();
        return DescribeTopicPartitionsResponse::default()
            .with_topics(topics)
            .with_next_cursor(None);
    }
    if let Some(start) = &start_topic {
        names.retain(|n| n >= start);
    }
    let limit = request
        .response_partition_limit
        .clamp(1, RESPONSE_PARTITIONS_MAX);
    page(broker, names, start_topic, start_partition, limit, all)
}

/// One answer: topics from the first of `names`, partitions from `start_partition` of the cursor's
/// topic, until `limit` partitions are in.
fn page(
    broker: &Broker,
    names: Vec<String>,
    start_topic: Option<String>,
    start_partition: i32,
    limit: i32,
    all: bool,
) -> DescribeTopicPartitionsResponse {
    let mut remaining = limit;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names {
        if remaining == 0 {
            next_cursor = Some(cursor(&name, 0));
            break;
        }
        let Some(t) = broker.topic(&name) else {
            // Listing all topics, one deleted meanwhile is simply gone.
            if !all {
                topics.push(unknown(name, ResponseError::UnknownTopicOrPartition));
            }
            continue;
        };
        let first = if start_topic.as_deref() == Some(name.as_str()) {
            start_partition
        } else {
            0
        };
        let (described, next) = describe(broker, &t, first, remaining);
        remaining -= described.partitions.len() as i32;
        topics.push(described);
        if let Some(next) = next {
            next_cursor = Some(cursor(&name, next));
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}

/// The topic with partitions `first..` (at most `limit`), and the next partition when some are
/// left over.
fn describe(
    broker: &Broker,
    t: &Topic,
    first: i32,
    limit: i32,
) -> (DescribeTopicPartitionsResponseTopic, Option<i32>) {
    let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
    let all = broker.partition_views(t);
    let from = usize::try_from(first).unwrap_or(0).min(all.len());
    let take = usize::try_from(limit).unwrap_or(0);
    let partitions: Vec<_> = all[from..]
        .iter()
        .take(take)
        .map(|p| {
            let error = if p.leader < 0 {
                ResponseError::LeaderNotAvailable.code()
            } else {
                0
            };
            DescribeTopicPartitionsResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(p.index)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(p.replicas.clone()))
                .with_isr_nodes(ids(p.isr.clone()))
                .with_offline_replicas(ids(p.offline.clone()))
                .with_eligible_leader_replicas(Some(Vec::new()))
                .with_last_known_elr(Some(Vec::new()))
        })
        .collect();
    let next = (from + partitions.len() < all.len()).then(|| (from + partitions.len()) as i32);
    let topic = DescribeTopicPartitionsResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(t.name.clone()))))
        .with_topic_id(t.id)
        .with_is_internal(t.is_internal())
        .with_partitions(partitions)
        // No authorizer: every topic operation is allowed (Kafka always fills this field here).
        .with_topic_authorized_operations(topic_operations(true));
    (topic, next)
}

fn unknown(name: String, error: ResponseError) -> DescribeTopicPartitionsResponseTopic {
    DescribeTopicPartitionsResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(name))))
        .with_error_code(error.code())
}

fn cursor(topic: &str, partition: i32) -> Cursor {
    Cursor::default()
        .with_topic_name(TopicName(str_bytes(topic.to_string())))
        .with_partition_index(partition)
}
