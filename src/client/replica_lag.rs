//! client::replica_lag: how far each replica of each partition is behind its leader, for
//! `bramble cluster leaders`. Every broker is asked for the log end offset of the replicas it
//! holds with ListOffsets as Kafka's debugging replica id (-2: any replica answers, latest is
//! its log end, not the high watermark); a replica's lag is its leader's log end minus its own.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::Client;
use super::cluster::PartitionLeader;

/// ListOffsets version asked (replica id and per-partition leader epochs).
const LIST_OFFSETS_VERSION: i16 = 7;
/// Kafka's DEBUGGING_REPLICA_ID.
const DEBUGGING_REPLICA_ID: i32 = -2;
/// ListOffsets' "latest".
const LATEST: i64 = -1;
/// A broker that does not answer within this long shows its replicas' lag as unknown.
const BROKER_ANSWER_MS_MAX: u64 = 3_000;

/// (topic, partition, broker) → that replica's log end offset, for every broker that answered.
pub type LogEnds = BTreeMap<(String, i32, i32), i64>;

/// Asks every broker of `metadata` for its replicas' log end offsets.
pub async fn log_ends(metadata: &MetadataResponse, rows: &[PartitionLeader]) -> LogEnds {
    let mut ends = LogEnds::new();
    for b in &metadata.brokers {
        let node = b.node_id.0;
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.replicas.contains(&node)) {
            topics
                .entry(r.topic.as_str())
                .or_default()
                .push(r.partition);
        }
        if topics.is_empty() {
            continue;
        }
        let addr = format!("{}:{}", b.host.as_str(), b.port);
        let ask = ask(&addr, &topics);
        // A broker that does not answer shows its replicas' lag as unknown; the rest of the
        // table still helps.
        if let Ok(Ok(found)) =
            tokio::time::timeout(Duration::from_millis(BROKER_ANSWER_MS_MAX), ask).await
        {
            for ((topic, partition), end) in found {
                ends.insert((topic, partition, node), end);
            }
        }
    }
    ends
}

async fn ask(
    addr: &str,
    topics: &BTreeMap<&str, Vec<i32>>,
) -> Result<Vec<((String, i32), i64)>, super::ClientError> {
    let mut client = Client::connect(addr).await?;
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(DEBUGGING_REPLICA_ID))
        .with_topics(
            topics
                .iter()
                .map(|(name, partitions)| {
                    ListOffsetsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name.to_string())))
                        .with_partitions(
                            partitions
                                .iter()
                                .map(|p| {
                                    ListOffsetsPartition::default()
                                        .with_partition_index(*p)
                                        .with_timestamp(LATEST)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let response = client.call(&request, LIST_OFFSETS_VERSION).await?;
    Ok(response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.error_code == 0)
                .map(|p| ((t.name.to_string(), p.partition_index), p.offset))
        })
        .collect())
}

/// Fills each row's `lag` from `ends`: every replica whose log end and whose leader's log end
/// are known.
pub fn fill_lag(rows: &mut [PartitionLeader], ends: &LogEnds) {
    for r in rows {
        let Some(leader_end) = ends.get(&(r.topic.clone(), r.partition, r.leader)) else {
            continue;
        };
        for id in &r.replicas {
            if let Some(end) = ends.get(&(r.topic.clone(), r.partition, *id)) {
                r.lag.insert(*id, (leader_end - end).max(0));
            }
        }
    }
}
