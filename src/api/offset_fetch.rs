//! api::offset_fetch (key 9): a consumer reads its group's committed offsets — the listed
//! partitions, or all of them (null topics, v2+); from v8 several groups at once. A partition
//! without a commit gets offset -1 and no error, and so does a group that never committed:
//! librdkafka and others treat an error here as fatal.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    GroupId, OffsetFetchRequest, OffsetFetchResponse, RequestHeader, TopicName,
};

use super::str_bytes;
use crate::broker::Broker;
use crate::group::offsets::NO_OFFSET;
use crate::group::records::OffsetValue;

/// From v8 the request and response carry a list of groups.
const MULTI_GROUP_VERSION_MIN: i16 = 8;
/// From v2 the response has a top-level error code.
const TOP_ERROR_VERSION_MIN: i16 = 2;

type Fetched = Result<Vec<((String, i32), Option<OffsetValue>)>, ResponseError>;

pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let version = header.request_api_version;
    if version >= MULTI_GROUP_VERSION_MIN {
        let mut groups = Vec::with_capacity(request.groups.len());
        for g in request.groups {
            let wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .flat_map(|t| {
                        let name = t.name.to_string();
                        t.partition_indexes
                            .into_iter()
                            .map(move |p| (name.clone(), p))
                    })
                    .collect()
            });
            let fetched = broker
                .groups
                .fetch_offsets(broker, &g.group_id, wanted)
                .await;
            groups.push(group_answer(g.group_id, fetched));
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = request.topics.map(|ts| {
        ts.into_iter()
            .flat_map(|t| {
                let name = t.name.to_string();
                t.partition_indexes
                    .into_iter()
                    .map(move |p| (name.clone(), p))
            })
            .collect()
    });
    let fetched = broker
        .groups
        .fetch_offsets(broker, &request.group_id, wanted.clone())
        .await;
    let (topics, error) = single_answer(fetched);
    let response = OffsetFetchResponse::default().with_topics(topics);
    match error {
        Some(e) if version >= TOP_ERROR_VERSION_MIN => response.with_error_code(e.code()),
        // v0 and v1 have no top-level error: as Kafka, each requested partition carries it, so
        // the client does not read "nothing committed" from an empty answer.
        Some(e) => response.with_topics(partition_errors(wanted.unwrap_or_default(), e)),
        None => response,
    }
}

/// Every requested partition with `error` and no offset (v0/v1 answers to a group error).
fn partition_errors(
    wanted: Vec<(String, i32)>,
    error: ResponseError,
) -> Vec<OffsetFetchResponseTopic> {
    let rows = wanted.into_iter().map(|k| (k, ())).collect();
    by_topic(rows)
        .into_iter()
        .map(|(topic, ps)| {
            let partitions = ps
                .into_iter()
                .map(|(p, ())| {
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(NO_OFFSET)
                        .with_committed_leader_epoch(-1)
                        .with_metadata(Some(str_bytes(String::new())))
                        .with_error_code(error.code())
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partitions(partitions)
        })
        .collect()
}

/// (committed offset, leader epoch, metadata) of one partition; none committed is -1 and "".
fn offset_fields(v: Option<OffsetValue>) -> (i64, i32, String) {
    match v {
        Some(v) => (v.offset, v.leader_epoch, v.metadata.unwrap_or_default()),
        None => (NO_OFFSET, -1, String::new()),
    }
}

/// Groups (topic → partitions) preserving first appearance order.
fn by_topic<T>(rows: Vec<((String, i32), T)>) -> Vec<(String, Vec<(i32, T)>)> {
    let mut out: Vec<(String, Vec<(i32, T)>)> = Vec::new();
    for ((topic, partition), v) in rows {
        match out.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, ps)) => ps.push((partition, v)),
            None => out.push((topic, vec![(partition, v)])),
        }
    }
    out
}

fn single_answer(fetched: Fetched) -> (Vec<OffsetFetchResponseTopic>, Option<ResponseError>) {
    let rows = match fetched {
        Ok(rows) => rows,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let topics = by_topic(rows)
        .into_iter()
        .map(|(topic, ps)| {
            let partitions = ps
                .into_iter()
                .map(|(p, v)| {
                    let (offset, epoch, metadata) = offset_fields(v);
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(Some(str_bytes(metadata)))
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partitions(partitions)
        })
        .collect();
    (topics, None)
}

fn group_answer(group_id: GroupId, fetched: Fetched) -> OffsetFetchResponseGroup {
    let answer = OffsetFetchResponseGroup::default().with_group_id(group_id);
    let rows = match fetched {
        Ok(rows) => rows,
        Err(e) => return answer.with_error_code(e.code()),
    };
    let topics = by_topic(rows)
        .into_iter()
        .map(|(topic, ps)| {
            let partitions = ps
                .into_iter()
                .map(|(p, v)| {
                    let (offset, epoch, metadata) = offset_fields(v);
                    OffsetFetchResponsePartitions::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(Some(str_bytes(metadata)))
                })
                .collect();
            OffsetFetchResponseTopics::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partitions(partitions)
        })
        .collect();
    answer.with_topics(topics)
}
