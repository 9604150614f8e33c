//! broker::topic: one topic's local state (id, partitions, configs) and its metadata file.
//!
//! Until the metadata quorum exists, each topic's metadata is one small TOML file,
//! `<data_dir>/meta/topics/<name>.toml`, written to a temporary name, synced and renamed, so a
//! power cut leaves either the old or the new file. Partition logs live in `<data_dir>/<name>-<p>/`
//! (`broker::dirs`), each tied to its topic id by its `partition.metadata`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::MessageTimestampType;
use crate::log::{self, LogConfig};

/// Kafka's topic name rules: 1..=249 characters of [a-zA-Z0-9._-], not "." or "..".
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Smallest segment (Kafka 4.0's minimum too): each segment holds three open files, so tiny
/// segments exhaust file descriptors on a small board long before disk space.
pub const SEGMENT_BYTES_MIN: u64 = 1024 * 1024;

/// Topics Kafka flags as internal: group offsets and transaction state.
pub const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state"];

/// Topic configs this broker understands, with how each maps onto the log.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    // bramble's own: answer acks=1/all only after fsync (true, the node default) or once the
    // write reached the page cache (false; the node's flush_ms_max bounds what a power cut
    // takes). The group commit window itself is per disk (flush_ms): one fsync serves every topic.
    "bramble.fsync.on.ack",
    "cleanup.policy",
    "delete.retention.ms",
    "index.interval.bytes",
    "max.message.bytes",
    "min.compaction.lag.ms",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

/// Standard Kafka topic configs that tools and frameworks (Kafka Connect, Streams, test suites)
/// set routinely. They are accepted, stored and reported so those clients work, but this broker
/// does not act on them yet (replication settings arrive with the cluster; the cleaner cleans
/// every pass whatever min.cleanable.dirty.ratio says, and has no max.compaction.lag.ms deadline).
/// `message.timestamp.type` is the exception: the log does not read it, but produce applies it
/// (`Topic::timestamp_type`).
pub const STORED_TOPIC_CONFIG_KEYS: &[&str] = &[
    "compression.type",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "max.compaction.lag.ms",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.insync.replicas",
    "preallocate",
    "segment.index.bytes",
    "segment.jitter.ms",
    "unclean.leader.election.enable",
];

/// What is persisted about a topic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

/// One partition as this node hosts it. The leader epoch and replica set come from metadata; on a
/// single node the node leads every partition at epoch 0.
pub struct Replica {
    pub index: i32,
    /// The partition's leader epoch from the metadata image (0 on a node without a quorum).
    pub(super) leader_epoch: std::sync::atomic::AtomicI32,
    pub log: Arc<log::Partition>,
    /// Its replication role and, when it leads, its followers' progress.
    pub state: Arc<crate::replica::PartitionState>,
}

impl Replica {
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// A topic as this node knows it: every topic of the cluster has one, and it holds the replicas
/// this node hosts (in a cluster, some of the topic's partitions live on other nodes).
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub replication_factor: i16,
    /// The topic's partition count in the cluster (not just the ones hosted here).
    pub(super) count: std::sync::atomic::AtomicI32,
    pub(super) partitions: RwLock<BTreeMap<i32, Arc<Replica>>>,
    pub(super) configs: RwLock<BTreeMap<String, String>>,
    /// Known to the metadata quorum (not only from a single-node release's topic file).
    pub(super) from_image: std::sync::atomic::AtomicBool,
}

impl Topic {
    pub(super) fn mark_from_image(&self) {
        self.from_image
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub(super) fn is_from_image(&self) -> bool {
        self.from_image.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(super) fn new(meta: &TopicMeta) -> Topic {
        Topic {
            name: meta.name.clone(),
            id: meta.id,
            replication_factor: meta.replication_factor,
            count: std::sync::atomic::AtomicI32::new(0),
            partitions: RwLock::new(BTreeMap::new()),
            configs: RwLock::new(meta.configs.clone()),
            from_image: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The replica of partition `index` if this node hosts it.
    pub fn partition(&self, index: i32) -> Option<Arc<Replica>> {
        let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        parts.get(&index).cloned()
    }

    /// The replicas this node hosts, by partition index.
    pub fn partitions(&self) -> Vec<Arc<Replica>> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Partitions of the topic in the cluster.
    pub fn partition_count(&self) -> i32 {
        self.count.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(super) fn set_partition_count(&self, count: i32) {
        self.count
            .store(count, std::sync::atomic::Ordering::Release);
    }

    /// Partitions hosted here.
    pub fn hosted_count(&self) -> usize {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Configs set explicitly on this topic (not the node defaults).
    pub fn configs(&self) -> BTreeMap<String, String> {
        self.configs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// This topic's `message.timestamp.type`, or `default` (the node's) when not set. Reads the
    /// configs in place: called on every produce.
    pub fn timestamp_type(&self, default: MessageTimestampType) -> MessageTimestampType {
        let configs = self.configs.read().unwrap_or_else(|e| e.into_inner());
        configs
            .get("message.timestamp.type")
            .and_then(|v| MessageTimestampType::parse(v))
            .unwrap_or(default)
    }

    /// Kafka's internal topics (flagged in Metadata so clients can exclude them).
    pub fn is_internal(&self) -> bool {
        INTERNAL_TOPICS.contains(&self.name.as_str())
    }

    pub(super) fn meta(&self) -> TopicMeta {
        TopicMeta {
            name: self.name.clone(),
            id: self.id,
            partitions: self.partition_count(),
            replication_factor: self.replication_factor,
            configs: self.configs(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigValueError {
    #[error("unknown topic config {0}")]
    UnknownKey(String),
    #[error("invalid value {value:?} for {key}: {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: &'static str,
    },
}

/// Applies explicit topic configs over the node's defaults.
pub fn log_config(
    defaults: &LogConfig,
    configs: &BTreeMap<String, String>,
) -> Result<LogConfig, ConfigValueError> {
    cleanup_config(configs)?;
    let mut c = defaults.clone();
    for (key, value) in configs {
        let bad = |reason| ConfigValueError::BadValue {
            key: key.clone(),
            value: value.clone(),
            reason,
        };
        let int = || {
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| bad("not an integer"))
        };
        match key.as_str() {
            // Checked by `cleanup_config` above.
            "cleanup.policy" | "delete.retention.ms" | "min.compaction.lag.ms" => {}
            "max.message.bytes" => {
                c.message_bytes_max = u32::try_from(int()?)
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or_else(|| bad("must be 1..=4294967295"))?
            }
            "retention.bytes" => {
                c.retention_bytes_max =
                    non_negative_or_unlimited(int()?).map_err(|_| bad("must be -1 or >= 0"))?
            }
            "retention.ms" => {
                c.retention_ms_max =
                    non_negative_or_unlimited(int()?).map_err(|_| bad("must be -1 or >= 0"))?
            }
            "segment.bytes" => {
                c.segment_bytes_max = u64::try_from(int()?)
                    .ok()
                    .filter(|v| (SEGMENT_BYTES_MIN..=u32::MAX as u64).contains(v))
                    .ok_or_else(|| bad("must be 1048576..=4294967295"))?
            }
            "segment.ms" => {
                c.segment_ms_max = u64::try_from(int()?)
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or_else(|| bad("must be >= 1"))?
            }
            "bramble.fsync.on.ack" => {
                c.fsync_on_ack = value
                    .trim()
                    .parse()
                    .map_err(|_| bad("must be true or false"))?
            }
            "index.interval.bytes" => {
                c.index_interval_bytes = u32::try_from(int()?)
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or_else(|| bad("must be 1..=4294967295"))?
            }
            // Applied on produce (`Topic::timestamp_type`), not by the log.
            "message.timestamp.type" => {
                MessageTimestampType::parse(value)
                    .ok_or_else(|| bad("must be CreateTime or LogAppendTime"))?;
            }
            // Read by the controller (meta::quorum), as Kafka spells a boolean.
            "unclean.leader.election.enable" => {
                crate::meta::quorum::parse_bool(value)
                    .ok_or_else(|| bad("must be true or false"))?;
            }
            stored if STORED_TOPIC_CONFIG_KEYS.contains(&stored) => {}
            other => return Err(ConfigValueError::UnknownKey(other.to_string())),
        }
    }
    Ok(c)
}

/// The cleanup policy and compaction settings of a topic's explicit configs (defaults: delete
/// only, delete.retention.ms one day, min.compaction.lag.ms 0).
pub fn cleanup_config(
    configs: &BTreeMap<String, String>,
) -> Result<log::Cleanup, ConfigValueError> {
    let mut c = log::Cleanup::default();
    for (key, value) in configs {
        let bad = |reason| ConfigValueError::BadValue {
            key: key.clone(),
            value: value.clone(),
            reason,
        };
        let ms = || {
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| bad("must be an integer >= 0"))
        };
        match key.as_str() {
            "cleanup.policy" => {
                let mut parts: Vec<&str> = value.split(',').map(str::trim).collect();
                parts.sort_unstable();
                parts.dedup();
                let (compact, delete) = match parts.as_slice() {
                    ["delete"] => (false, true),
                    ["compact"] => (true, false),
                    ["compact", "delete"] => (true, true),
                    _ => return Err(bad("must be delete, compact or compact,delete")),
                };
                (c.compact, c.delete) = (compact, delete);
            }
            "delete.retention.ms" => c.delete_retention_ms = ms()?,
            "min.compaction.lag.ms" => c.compaction_lag_ms_min = ms()?,
            _ => {}
        }
    }
    Ok(c)
}

fn cleanup_policy(c: &log::Cleanup) -> &'static str {
    match (c.compact, c.delete) {
        (true, true) => "compact,delete",
        (true, false) => "compact",
        _ => "delete",
    }
}

fn non_negative_or_unlimited(v: i64) -> Result<Option<u64>, ()> {
    match v {
        -1 => Ok(None),
        v if v >= 0 => Ok(Some(v as u64)),
        _ => Err(()),
    }
}

/// The effective value of each known config, and whether it is the default.
pub fn effective_configs(
    defaults: &LogConfig,
    explicit: &BTreeMap<String, String>,
) -> Vec<(String, String, bool)> {
    let c = log_config(defaults, explicit).unwrap_or_else(|_| defaults.clone());
    let cleanup = cleanup_config(explicit).unwrap_or_default();
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-1".to_string());
    let enforced = TOPIC_CONFIG_KEYS.iter().map(|&key| {
        let value = match key {
            "bramble.fsync.on.ack" => c.fsync_on_ack.to_string(),
            "cleanup.policy" => cleanup_policy(&cleanup).to_string(),
            "delete.retention.ms" => cleanup.delete_retention_ms.to_string(),
            "min.compaction.lag.ms" => cleanup.compaction_lag_ms_min.to_string(),
            "index.interval.bytes" => c.index_interval_bytes.to_string(),
            "max.message.bytes" => c.message_bytes_max.to_string(),
            "retention.bytes" => opt(c.retention_bytes_max),
            "retention.ms" => opt(c.retention_ms_max),
            "segment.bytes" => c.segment_bytes_max.to_string(),
            _ => c.segment_ms_max.to_string(),
        };
        (key.to_string(), value, !explicit.contains_key(key))
    });
    let stored = explicit
        .iter()
        .filter(|(k, _)| !TOPIC_CONFIG_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone(), false));
    enforced.chain(stored).collect()
}

/// Applies one alter operation to a topic's explicit configs (`defaults` give a list config's
/// current value when it is not set explicitly, as Kafka's APPEND and SUBTRACT use it).
pub fn apply_config_op(
    defaults: &LogConfig,
    configs: &mut BTreeMap<String, String>,
    op: super::ConfigOp,
) {
    use super::ConfigOp;
    let (key, items, append) = match op {
        ConfigOp::Set(key, value) => {
            configs.insert(key, value);
            return;
        }
        ConfigOp::Delete(key) => {
            configs.remove(&key);
            return;
        }
        ConfigOp::Clear => {
            configs.clear();
            return;
        }
        ConfigOp::Append(key, items) => (key, items, true),
        ConfigOp::Subtract(key, items) => (key, items, false),
    };
    let current = effective_configs(defaults, configs)
        .into_iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, v, _)| v)
        .unwrap_or_default();
    let mut list: Vec<&str> = current
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect();
    for item in items.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if append && !list.contains(&item) {
            list.push(item);
        } else if !append {
            list.retain(|i| *i != item);
        }
    }
    let value = list.join(",");
    configs.insert(key, value);
}

pub fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > TOPIC_NAME_BYTES_MAX {
        return Err("topic name must be 1 to 249 characters");
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be '.' or '..'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err("topic name may only contain ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

pub fn meta_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("meta").join("topics")
}

/// Writes a topic's metadata file atomically (temp file, fsync, rename, fsync the directory).
pub fn write_meta(data_dir: &Path, meta: &TopicMeta) -> std::io::Result<()> {
    use std::io::Write;
    let dir = meta_dir(data_dir);
    super::dirs::create_dir_durable(&dir)?;
    let text = toml::to_string(meta).map_err(std::io::Error::other)?;
    // Capped: `<249-character name>.toml.tmp` passes the file-name limit. Writers of metadata
    // files hold the admin lock (or are start-up), so two long names sharing a temp name never
    // write at once.
    let tmp = dir.join(super::dirs::capped_name(
        &format!("{}.toml", meta.name),
        ".tmp",
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(format!("{}.toml", meta.name)))?;
    std::fs::File::open(&dir)?.sync_all()
}

/// Moves an unreadable metadata file aside to `<name>.toml.corrupt` (never over an earlier one),
/// so the operator can still inspect it and start-up does not read it again; returns where.
pub fn set_aside_meta(path: &Path) -> std::io::Result<PathBuf> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Capped like a deletion directory: a long topic name plus the suffix passes the limit.
    let named = |suffix: &str| path.with_file_name(super::dirs::capped_name(&file_name, suffix));
    let mut aside = named(".corrupt");
    let mut n = 1;
    while aside.exists() {
        aside = named(&format!(".corrupt.{n}"));
        n += 1;
    }
    std::fs::rename(path, &aside)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(aside)
}

/// The configs recovery gives a topic whose metadata file is lost and whose partition
/// directories keep no readable copy of its configs: nothing deleted by time or size
/// (retention.ms and retention.bytes -1), since the node cannot know what retention the topic
/// had; an internal topic is compacted, as it is created (Kafka's are).
pub fn recovery_configs(name: &str) -> BTreeMap<String, String> {
    let mut configs = BTreeMap::from([
        ("retention.ms".to_string(), "-1".to_string()),
        ("retention.bytes".to_string(), "-1".to_string()),
    ]);
    if INTERNAL_TOPICS.contains(&name) {
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
    }
    configs
}

/// Removes a topic's metadata file; none there (a topic the metadata quorum holds) is no error.
pub fn remove_meta(data_dir: &Path, name: &str) -> std::io::Result<()> {
    let dir = meta_dir(data_dir);
    match std::fs::remove_file(dir.join(format!("{name}.toml"))) {
        Ok(()) => std::fs::File::open(&dir)?.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads every topic metadata file; a file that does not parse is reported, not fatal.
pub fn read_all_meta(
    data_dir: &Path,
) -> std::io::Result<Vec<Result<TopicMeta, (PathBuf, String)>>> {
    let dir = meta_dir(data_dir);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| toml::from_str::<TopicMeta>(&t).map_err(|e| e.to_string()));
        out.push(parsed.map_err(|e| (path, e)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves Kafka's topic-name rules are enforced.
    #[test]
    fn topic_names() {
        assert!(validate_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(250)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    // Proves explicit configs override defaults and bad ones are refused by name.
    #[test]
    fn config_overrides() {
        let d = LogConfig::default();
        let mut m = BTreeMap::new();
        m.insert("retention.ms".to_string(), "-1".to_string());
        m.insert("segment.bytes".to_string(), "1048576".to_string());
        let c = log_config(&d, &m).unwrap();
        assert_eq!(c.retention_ms_max, None);
        assert_eq!(c.segment_bytes_max, 1 << 20);
        m.insert("nope".to_string(), "1".to_string());
        assert!(matches!(log_config(&d, &m), Err(ConfigValueError::UnknownKey(k)) if k == "nope"));
        let mut m = BTreeMap::new();
        m.insert("retention.bytes".to_string(), "-7".to_string());
        assert!(log_config(&d, &m).is_err());
    }

    // Proves standard Kafka configs are accepted and reported as set, cleanup.policy takes
    // delete/compact/compact,delete (any order) and nothing else, and index.interval.bytes reaches the log.
    #[test]
    fn stored_and_refused_configs() {
        let d = LogConfig::default();
        let mut m = BTreeMap::new();
        m.insert("min.insync.replicas".to_string(), "2".to_string());
        m.insert("index.interval.bytes".to_string(), "1024".to_string());
        assert_eq!(log_config(&d, &m).unwrap().index_interval_bytes, 1024);
        let shown = effective_configs(&d, &m);
        assert!(shown.contains(&("min.insync.replicas".to_string(), "2".to_string(), false)));
        assert!(shown.contains(&("retention.ms".to_string(), "604800000".to_string(), true)));
        m.insert("cleanup.policy".to_string(), "delete, compact".to_string());
        m.insert("delete.retention.ms".to_string(), "1000".to_string());
        assert!(log_config(&d, &m).is_ok());
        let cleanup = cleanup_config(&m).unwrap();
        assert!(cleanup.compact && cleanup.delete && cleanup.delete_retention_ms == 1000);
        let shown = effective_configs(&d, &m);
        assert!(shown.contains(&(
            "cleanup.policy".to_string(),
            "compact,delete".to_string(),
            false
        )));
        m.insert("cleanup.policy".to_string(), "shred".to_string());
        let err = log_config(&d, &m).unwrap_err().to_string();
        assert!(err.contains("cleanup.policy"), "{err}");
    }

    // Proves fsync-before-ack can be turned off per topic, and only with a boolean.
    #[test]
    fn fsync_on_ack_per_topic() {
        let d = LogConfig::default();
        let mut m = BTreeMap::new();
        m.insert("bramble.fsync.on.ack".to_string(), "false".to_string());
        assert!(!log_config(&d, &m).unwrap().fsync_on_ack);
        assert!(effective_configs(&d, &m).contains(&(
            "bramble.fsync.on.ack".to_string(),
            "false".to_string(),
            false
        )));
        m.insert("bramble.fsync.on.ack".to_string(), "sometimes".to_string());
        assert!(log_config(&d, &m).is_err());
    }

    // Proves metadata files round-trip and are found again.
    #[test]
    fn meta_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let meta = TopicMeta {
            name: "t".into(),
            id: Uuid::new_v4(),
            partitions: 3,
            replication_factor: 1,
            configs: BTreeMap::new(),
        };
        write_meta(dir.path(), &meta).unwrap();
        let all = read_all_meta(dir.path()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].as_ref().unwrap(), &meta);
        remove_meta(dir.path(), "t").unwrap();
        assert!(read_all_meta(dir.path()).unwrap().is_empty());
    }
}
