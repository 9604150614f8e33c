//! api::offset_commit (key 8): a consumer stores the offsets it has processed. Members commit
//! with their generation and member id; simple consumers (generation -1, no member id) commit to
//! an empty group. Each partition gets its own error code (`group::offsets`).

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, RequestHeader};

use crate::broker::Broker;
use crate::group::offsets::{Commit, Committer};

/// Before v6 there is no committed leader epoch.
const LEADER_EPOCH_VERSION_MIN: i16 = 6;

pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let with_epoch = header.request_api_version >= LEADER_EPOCH_VERSION_MIN;
    let commits: Vec<Commit> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| Commit {
                topic: t.name.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if with_epoch {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
            })
        })
        .collect();
    let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
    let who = Committer {
        member_id: &request.member_id,
        instance_id: instance.as_deref(),
        generation: request.generation_id_or_member_epoch,
    };
    let mut results = broker
        .groups
        .commit(broker, &request.group_id, who, commits)
        .await
        .into_iter();
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = results.next().and_then(|r| r.err()).map_or(0, |e| e.code());
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
