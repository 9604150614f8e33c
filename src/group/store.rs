//! group::store: where the coordinator's state lives on disk — Kafka's way, as records in the
//! internal compacted topic `__consumer_offsets` (layout in `group::records`). Appends go through
//! the normal partition log (`log::Partition::append`, durable per the node's flush policy before
//! the commit is acknowledged); on start the coordinator replays every partition to rebuild its
//! groups. Because the topic is compacted, replay reads at most one record per live key plus
//! whatever the cleaner has not reached yet.
//!
//! A group's records all go to one partition: Java's `String.hashCode` of the group id, absolute
//! value, modulo the topic's partition count (Kafka's `partitionFor`). The coordinator of a group
//! is the leader of that partition — this node while there is one node; the mapping stays explicit
//! so the cluster can route groups by it later.
//!
//! Appends are ordered per partition by [`StoreLocks`] (one lock per partition, held across the
//! append and its fsync): a group's records land in decision order, while groups on different
//! partitions append concurrently and share the disk writer's group commit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, Record,
    RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::records::{self, Key};
use crate::broker::{Broker, Topic, TopicError};
use crate::log::LogError;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Bytes read from a partition per step of the replay.
const REPLAY_READ_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create {OFFSETS_TOPIC}: {0}")]
    Topic(#[source] TopicError),
    #[error("{OFFSETS_TOPIC} has no partition {0}")]
    NoPartition(i32),
    #[error("{OFFSETS_TOPIC} log: {0}")]
    Log(#[from] LogError),
    #[error("cannot encode records: {0}")]
    Encode(String),
    /// This node stopped leading the group's partition (another coordinator takes over).
    #[error("no longer the leader of the group's {OFFSETS_TOPIC} partition")]
    NotLeader,
    /// The in-sync replicas did not all have the records within `OFFSET_COMMIT_TIMEOUT_MS`.
    #[error("the group's records were not replicated within {OFFSET_COMMIT_TIMEOUT_MS} ms")]
    NotReplicated,
}

/// How long a group's write waits for its partition's in-sync replicas (Kafka's
/// offsets.commit.timeout.ms): a commit is answered only once a coordinator failover keeps it.
pub const OFFSET_COMMIT_TIMEOUT_MS: u64 = 5_000;

/// Replicas of `__consumer_offsets` (Kafka's offsets.topic.replication.factor), or fewer when
/// fewer brokers have ever registered when the topic is made.
pub const OFFSETS_TOPIC_REPLICATION_FACTOR: i16 = 3;

/// Kafka's partition of a group: abs(Java hashCode(group id)) mod partition count.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    // Kafka's Utils.abs maps i32::MIN to 0 rather than overflowing.
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions.max(1)
}

/// The offsets topic, created (compacted, `offsets_topic_num_partitions` partitions) on first use.
pub async fn offsets_topic(broker: &Broker) -> Result<Arc<Topic>, StoreError> {
    if let Some(t) = broker.topic(OFFSETS_TOPIC) {
        return Ok(t);
    }
    let configs = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
    let partitions = broker.config.offsets_topic_num_partitions;
    // Every registered broker and every voter counts, live or not: a node restarting (or not
    // yet registered) at the first group request must not leave the offsets topic with fewer
    // replicas for good. Until enough are
    // live, creation fails and coordinators answer COORDINATOR_NOT_AVAILABLE (as Kafka).
    let voters = broker.quorum_status().map_or(0, |q| q.voters.len());
    let registered = broker.image().map_or(1, |i| i.brokers.len());
    let rf = registered
        .max(voters)
        .clamp(1, OFFSETS_TOPIC_REPLICATION_FACTOR as usize);
    match broker
        .create_topic(OFFSETS_TOPIC, partitions, rf as i16, configs, false)
        .await
    {
        Ok(t) => Ok(t),
        Err(TopicError::AlreadyExists(_)) => broker
            .topic(OFFSETS_TOPIC)
            .ok_or(StoreError::Topic(TopicError::Unknown(OFFSETS_TOPIC.into()))),
        Err(e) => Err(StoreError::Topic(e)),
    }
}

/// The partition of `__consumer_offsets` that holds `group`: by the topic's partition count, or
/// the count it will be created with.
pub fn group_partition(broker: &Broker, group: &str) -> i32 {
    let partitions = broker
        .topic(OFFSETS_TOPIC)
        .map_or(broker.config.offsets_topic_num_partitions, |t| {
            t.partition_count()
        });
    partition_for(group, partitions)
}

/// One append lock per partition of `__consumer_offsets`, made on first use (at most the
/// topic's partition count of them).
#[derive(Default)]
pub struct StoreLocks {
    locks: Mutex<BTreeMap<i32, Arc<tokio::sync::Mutex<()>>>>,
}

impl StoreLocks {
    /// Waits for the lock of `group`'s partition. Take it before reading what will be written,
    /// so a later decision is never appended before an earlier one.
    pub async fn lock(&self, broker: &Broker, group: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.lock_partition(group_partition(broker, group)).await
    }

    pub async fn lock_partition(&self, partition: i32) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(partition).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// Appends (key, value-or-tombstone) records of one group as one batch, durably.
pub async fn append(
    broker: &Broker,
    group: &str,
    entries: Vec<(Key, Option<Bytes>)>,
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let topic = offsets_topic(broker).await?;
    let index = partition_for(group, topic.partition_count());
    let replica = topic
        .partition(index)
        .ok_or(StoreError::NoPartition(index))?;
    // A partition this write creates (the topic was just made) holds nothing to replay: what
    // the coordinator has in memory is already all of it.
    if replica.log.log_end_offset() == replica.log.log_start_offset() {
        broker
            .groups
            .mark_replayed(topic.id, index, replica.leader_epoch())
            .await;
    }
    let now = crate::api::now_ms();
    let batch: Vec<Record> = entries
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // offset - sequence constant keeps one batch (see client::producer::encode_batch).
            sequence: NO_SEQUENCE + i as i32,
            timestamp: now,
            key: Some(records::encode_key(&key)),
            value,
            headers: IndexMap::new(),
        })
        .collect();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, batch.iter(), &options)
        .map_err(|e| StoreError::Encode(e.to_string()))?;
    let epoch = replica.leader_epoch();
    let staged = {
        let _held = replica.state.hold().await;
        if replica.state.leading() != Some(epoch) {
            return Err(StoreError::NotLeader);
        }
        replica.log.append_staged(buf.freeze(), epoch).await?
    };
    let info = staged.durable().await?;
    let deadline =
        tokio::time::Instant::now() + std::time::Duration::from_millis(OFFSET_COMMIT_TIMEOUT_MS);
    let end = info.last_offset.saturating_add(1);
    match replica.state.wait_replicated(end, epoch, deadline).await {
        Ok(()) => Ok(()),
        Err(crate::replica::WaitError::NotLeader) => Err(StoreError::NotLeader),
        Err(crate::replica::WaitError::TimedOut) => Err(StoreError::NotReplicated),
    }
}

/// Every record of one partition of the offsets topic, in log order, as (key, value-or-tombstone). Records that do
/// not decode are logged and skipped: one damaged record must not stop the node from starting.
pub async fn replay_partition(
    replica: &crate::broker::Replica,
) -> Result<Vec<(Key, Option<Bytes>)>, StoreError> {
    let mut out = Vec::new();
    {
        let log = &replica.log;
        let mut offset = log.log_start_offset();
        // A new leader's whole log counts: what it holds past the HW is what the ISR will
        // agree on (followers copy it), as Kafka loads a coordinator's partition to its end.
        while offset < log.durable_end() {
            let read = log.read_replica(offset, REPLAY_READ_BYTES).await?;
            if read.records.is_empty() {
                break;
            }
            let mut buf = read.records.clone();
            let sets = match RecordBatchDecoder::decode_all(&mut buf) {
                Ok(sets) => sets,
                Err(e) => {
                    tracing::error!(partition = replica.index, offset, error = %e, "unreadable batch in {OFFSETS_TOPIC}; rest of partition skipped");
                    break;
                }
            };
            let next = sets
                .iter()
                .flat_map(|s| s.records.iter())
                .map(|r| r.offset + 1)
                .max()
                .unwrap_or(offset);
            for r in sets.into_iter().flat_map(|s| s.records) {
                if r.offset < offset || r.control {
                    continue;
                }
                let Some(raw) = r.key else { continue };
                match records::decode_key(raw) {
                    Ok(key) => out.push((key, r.value)),
                    Err(e) => {
                        tracing::warn!(partition = replica.index, offset = r.offset, error = %e, "skipping record with unreadable key")
                    }
                }
            }
            if next <= offset {
                break;
            }
            offset = next;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the partition mapping is Kafka's (Java hashCode, Utils.abs), so a group lands on the
    // same __consumer_offsets partition as it would on a Kafka cluster with the same count.
    #[test]
    fn partition_for_matches_java_hash_code() {
        // "my-group".hashCode() == -1906497762 in Java.
        assert_eq!(partition_for("my-group", 50), 1906497762 % 50);
        // "".hashCode() == 0.
        assert_eq!(partition_for("", 10), 0);
        // "polygenelubricants".hashCode() == i32::MIN: Utils.abs gives 0.
        assert_eq!(partition_for("polygenelubricants", 7), 0);
        for g in ["a", "group-1", "ünïcode"] {
            assert!((0..10).contains(&partition_for(g, 10)));
        }
    }
}
