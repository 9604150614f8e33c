//! api::alter_replica_log_dirs (key 34): move replicas between a node's log directories. This
//! node has one (`data_dir`), so the only move that can succeed is to where the replica already
//! is: that answers NONE, as Kafka does; any other path answers LOG_DIR_NOT_FOUND.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::{
    AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse, RequestHeader,
};

use super::describe_log_dirs::log_dir;
use crate::broker::Broker;

pub async fn handle(
    broker: &Broker,
    _header: &RequestHeader,
    request: AlterReplicaLogDirsRequest,
) -> AlterReplicaLogDirsResponse {
    let ours = log_dir(&broker.config.data_dir);
    let mut results = Vec::new();
    for dir in request.dirs {
        // Kafka compares absolute paths; a path that does not resolve is not one of ours.
        let same = std::fs::canonicalize(dir.path.as_str()).is_ok_and(|p| p == ours);
        let code = if same {
            0
        } else {
            ResponseError::LogDirNotFound.code()
        };
        for t in dir.topics {
            let partitions = t
                .partitions
                .iter()
                .map(|&p| {
                    AlterReplicaLogDirPartitionResult::default()
                        .with_partition_index(p)
                        .with_error_code(code)
                })
                .collect();
            results.push(
                AlterReplicaLogDirTopicResult::default()
                    .with_topic_name(t.name)
                    .with_partitions(partitions),
            );
        }
    }
    AlterReplicaLogDirsResponse::default().with_results(results)
}
