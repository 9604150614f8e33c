//! broker: the node's view of the cluster — its identity, its topics and the partitions it hosts.
//! Handlers in `api/` ask it for topics and partitions and ask it to create, delete and alter
//! them. This is the control plane's local state; record data flows through `log` only.

pub mod producer_ids;
pub mod topic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Config;
use crate::io::DiskWriter;
use crate::log::{self, LogConfig};
pub use producer_ids::{ProducerIdError, ProducerIds};
pub use topic::{Replica, Topic, TopicMeta};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("node.toml: {0}")]
    NodeFile(String),
    #[error("opening partition {topic}-{partition}: {source}")]
    Partition {
        topic: String,
        partition: i32,
        #[source]
        source: log::LogError,
    },
    #[error(transparent)]
    ProducerIds(#[from] ProducerIdError),
}

/// Why a topic operation was refused; each maps to one Kafka error code at the handler edge.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0} already exists")]
    AlreadyExists(String),
    #[error("unknown topic {0}")]
    Unknown(String),
    #[error("{0}")]
    InvalidName(&'static str),
    #[error("invalid partition count {0}")]
    InvalidPartitions(String),
    #[error("replication factor {asked} is larger than the {brokers} available broker(s)")]
    InvalidReplicationFactor { asked: i16, brokers: i16 },
    #[error("{0}")]
    InvalidConfig(#[from] topic::ConfigValueError),
    #[error("storage: {0}")]
    Storage(String),
}

/// One change of IncrementalAlterConfigs to a topic's explicit configs.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigOp {
    Set(String, String),
    /// Back to the default.
    Delete(String),
}

/// Who this node is and where clients reach it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeIdentity {
    pub node_id: i32,
    pub cluster_id: String,
}

/// The host:port advertised in Metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Advertised {
    pub host: String,
    pub port: i32,
}

pub struct Broker {
    pub config: Config,
    pub identity: NodeIdentity,
    pub advertised: Advertised,
    data_dir: PathBuf,
    writer: DiskWriter,
    /// Idempotent producer ids (InitProducerId); never reused across restarts.
    pub producer_ids: ProducerIds,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises topic creation, deletion and partition growth (rare, and they touch files).
    admin: tokio::sync::Mutex<()>,
    /// The consumer group coordinator (its state lives in `__consumer_offsets`).
    pub groups: crate::group::Coordinator,
    /// Bytes of Fetch answers being read, encoded or written (`fetch_inflight_bytes_max`).
    pub fetch_budget: Arc<tokio::sync::Semaphore>,
}

impl Broker {
    /// Opens the data directory: checks node.toml, loads every topic and recovers its partitions.
    pub fn open(
        config: Config,
        advertised: Advertised,
        writer: DiskWriter,
    ) -> Result<Broker, BrokerError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| BrokerError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let identity = load_identity(&data_dir, config.node_id)?;
        let producer_ids = ProducerIds::open(&data_dir)?;
        let groups = crate::group::Coordinator::new(&config);
        let fetch_budget = Arc::new(tokio::sync::Semaphore::new(config.fetch_inflight_bytes_max));
        let broker = Broker {
            fetch_budget,
            config,
            identity,
            advertised,
            data_dir,
            writer,
            producer_ids,
            topics: RwLock::new(BTreeMap::new()),
            admin: tokio::sync::Mutex::new(()),
            groups,
        };
        broker.load_topics()?;
        Ok(broker)
    }

    fn load_topics(&self) -> Result<(), BrokerError> {
        let metas =
            topic::read_all_meta(&self.data_dir).map_err(|source| BrokerError::DataDir {
                path: self.data_dir.clone(),
                source,
            })?;
        for meta in metas {
            let meta = match meta {
                Ok(m) => m,
                Err((path, why)) => {
                    tracing::error!(path = %path.display(), %why, "skipping unreadable topic metadata");
                    continue;
                }
            };
            let t = self.open_topic(&meta)?;
            tracing::info!(topic = %meta.name, partitions = meta.partitions, "loaded topic");
            self.write_topics().insert(meta.name.clone(), t);
        }
        Ok(())
    }

    fn open_topic(&self, meta: &TopicMeta) -> Result<Arc<Topic>, BrokerError> {
        let log_config = self.topic_log_config(&meta.configs);
        let t = Arc::new(Topic {
            name: meta.name.clone(),
            id: meta.id,
            replication_factor: meta.replication_factor,
            partitions: RwLock::new(Vec::new()),
            configs: RwLock::new(meta.configs.clone()),
        });
        self.add_partitions(&t, 0..meta.partitions, &log_config)?;
        Ok(t)
    }

    /// Refuses growth past `partitions_max`: every partition holds open files and index memory, and
    /// on a small board those run out long before disk space does. Call under the admin lock.
    fn check_partition_budget(&self, adding: i32) -> Result<(), TopicError> {
        let hosted: usize = self
            .topics()
            .iter()
            .map(|t| t.partition_count() as usize)
            .sum();
        let max = self.config.partitions_max;
        if hosted.saturating_add(adding.max(0) as usize) > max {
            return Err(TopicError::InvalidPartitions(format!(
                "this node hosts {hosted} partitions; {adding} more would pass partitions_max {max}"
            )));
        }
        Ok(())
    }

    /// Opens (creating or recovering) partitions `range` of `t` and appends them in order.
    fn add_partitions(
        &self,
        t: &Topic,
        range: std::ops::Range<i32>,
        log_config: &LogConfig,
    ) -> Result<(), BrokerError> {
        let cleanup = topic::cleanup_config(&t.configs()).unwrap_or_default();
        for p in range {
            let replica = self.open_replica(&t.name, p, log_config.clone(), cleanup.clone())?;
            t.partitions
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push(replica);
        }
        Ok(())
    }

    fn open_replica(
        &self,
        topic: &str,
        partition: i32,
        log_config: LogConfig,
        cleanup: log::Cleanup,
    ) -> Result<Arc<Replica>, BrokerError> {
        let dir = topic::partition_dir(&self.data_dir, topic, partition);
        let writer = self.writer.clone();
        let log =
            log::Partition::open_with(&dir, log_config, cleanup, writer).map_err(|source| {
                BrokerError::Partition {
                    topic: topic.to_string(),
                    partition,
                    source,
                }
            })?;
        Ok(Arc::new(Replica {
            index: partition,
            leader_epoch: 0,
            log: Arc::new(log),
        }))
    }

    fn topic_log_config(&self, configs: &BTreeMap<String, String>) -> LogConfig {
        let defaults = self.config.log_defaults();
        topic::log_config(&defaults, configs).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring invalid stored topic config");
            defaults
        })
    }

    fn write_topics(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.topics.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Brokers currently in the cluster: just this node until the metadata quorum exists.
    pub fn broker_count(&self) -> i16 {
        1
    }

    /// The topic, created with the default partition count if auto-creation is on.
    pub async fn topic_or_auto_create(&self, name: &str) -> Option<Arc<Topic>> {
        if let Some(t) = self.topic(name) {
            return Some(t);
        }
        if !self.config.auto_create_topics || topic::validate_name(name).is_err() {
            return None;
        }
        match self
            .create_topic(name, -1, -1, BTreeMap::new(), false)
            .await
        {
            Ok(t) => {
                tracing::info!(topic = name, "auto-created topic");
                Some(t)
            }
            Err(TopicError::AlreadyExists(_)) => self.topic(name),
            Err(e) => {
                tracing::warn!(topic = name, error = %e, "auto-create failed");
                None
            }
        }
    }

    /// Creates a topic. `partitions`/`replication_factor` of -1 mean the node defaults.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        topic::validate_name(name).map_err(TopicError::InvalidName)?;
        let partitions = if partitions == -1 {
            self.config.num_partitions
        } else {
            partitions
        };
        if partitions < 1 {
            return Err(TopicError::InvalidPartitions(format!(
                "{partitions}: must be at least 1"
            )));
        }
        let rf = if replication_factor == -1 {
            self.config.default_replication_factor
        } else {
            replication_factor
        };
        if rf < 1 || rf > self.broker_count() {
            return Err(TopicError::InvalidReplicationFactor {
                asked: rf,
                brokers: self.broker_count(),
            });
        }
        let log_config = topic::log_config(&self.config.log_defaults(), &configs)?;
        let _admin = self.admin.lock().await;
        if self.topic(name).is_some() {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        self.check_partition_budget(partitions)?;
        let meta = TopicMeta {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            replication_factor: rf,
            configs,
        };
        let t = Arc::new(Topic {
            name: meta.name.clone(),
            id: meta.id,
            replication_factor: rf,
            partitions: RwLock::new(Vec::new()),
            configs: RwLock::new(meta.configs.clone()),
        });
        if validate_only {
            return Ok(t);
        }
        blocking(|| {
            // Data of an earlier topic of this name whose removal was cut short (its metadata file
            // is gone, so the deletion stands) must not reappear in the new topic.
            topic::remove_leftover_dirs(&self.data_dir, name)?;
            self.add_partitions(&t, 0..partitions, &log_config)?;
            // The metadata file is the commit point: partition directories without it are ignored.
            topic::write_meta(&self.data_dir, &meta).map_err(|source| BrokerError::DataDir {
                path: self.data_dir.clone(),
                source,
            })
        })
        .map_err(|e| TopicError::Storage(e.to_string()))?;
        self.write_topics().insert(name.to_string(), t.clone());
        tracing::info!(topic = name, partitions, "created topic");
        Ok(t)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, TopicError> {
        let _admin = self.admin.lock().await;
        let t = self
            .topic(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        // Removing the metadata file first makes the deletion stick even if removing data fails.
        blocking(|| topic::remove_meta(&self.data_dir, name))
            .map_err(|e| TopicError::Storage(e.to_string()))?;
        self.write_topics().remove(name);
        for replica in t.partitions() {
            if let Err(e) = replica.log.clone().delete().await {
                tracing::warn!(topic = name, partition = replica.index, error = %e, "could not remove partition data");
            }
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(t.id)
    }

    /// Grows a topic to `count` partitions (Kafka never shrinks them).
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let _admin = self.admin.lock().await;
        let t = self
            .topic(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let current = t.partition_count();
        if count <= current {
            return Err(TopicError::InvalidPartitions(format!(
                "topic has {current} partitions; asked for {count}"
            )));
        }
        self.check_partition_budget(count - current)?;
        if validate_only {
            return Ok(());
        }
        let log_config = self.topic_log_config(&t.configs());
        blocking(|| self.add_partitions(&t, current..count, &log_config))
            .map_err(|e| TopicError::Storage(e.to_string()))?;
        topic::write_meta(&self.data_dir, &t.meta())
            .map_err(|e| TopicError::Storage(e.to_string()))?;
        tracing::info!(topic = name, from = current, to = count, "added partitions");
        Ok(())
    }

    /// Replaces a topic's explicit configs after validating them, and applies them to its logs.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        ops: Vec<ConfigOp>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        // Read, change and write under one lock, so concurrent alters of one topic all apply.
        let _admin = self.admin.lock().await;
        let t = self
            .topic(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let mut configs = t.configs();
        for op in ops {
            match op {
                ConfigOp::Set(key, value) => configs.insert(key, value),
                ConfigOp::Delete(key) => configs.remove(&key),
            };
        }
        let log_config = topic::log_config(&self.config.log_defaults(), &configs)?;
        if validate_only {
            return Ok(());
        }
        let mut meta = t.meta();
        meta.configs = configs.clone();
        // The file first: a failed write leaves the topic as it was, in memory and on disk.
        blocking(|| topic::write_meta(&self.data_dir, &meta))
            .map_err(|e| TopicError::Storage(e.to_string()))?;
        *t.configs.write().unwrap_or_else(|e| e.into_inner()) = configs;
        let cleanup = topic::cleanup_config(&t.configs())?;
        for replica in t.partitions() {
            replica.log.set_config(log_config.clone());
            replica.log.set_cleanup(cleanup.clone());
        }
        Ok(())
    }

    /// Runs retention over every partition once.
    pub async fn enforce_retention(&self, now_ms: i64) {
        for t in self.topics() {
            for replica in t.partitions() {
                match replica.log.enforce_retention(now_ms).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(topic = %t.name, partition = replica.index, segments = n, "retention deleted segments")
                    }
                    Err(e) => {
                        tracing::warn!(topic = %t.name, partition = replica.index, error = %e, "retention failed")
                    }
                }
            }
        }
    }

    /// Runs one compaction pass over every partition whose cleanup.policy has `compact`, one
    /// partition at a time (one offset map in memory at once).
    pub async fn compact_all(&self, now_ms: i64) {
        for t in self.topics() {
            for replica in t.partitions() {
                match replica.log.compact(now_ms).await {
                    Ok(s) if s.segments_rewritten == 0 => {}
                    Ok(s) => {
                        tracing::info!(topic = %t.name, partition = replica.index, segments = s.segments_rewritten, records_dropped = s.records_dropped, bytes_before = s.bytes_before, bytes_after = s.bytes_after, "compacted")
                    }
                    Err(e) => {
                        tracing::warn!(topic = %t.name, partition = replica.index, error = %e, "compaction failed")
                    }
                }
            }
        }
    }

    /// Syncs every partition's log.
    pub async fn flush_all(&self) {
        self.flush_where(|_| true).await
    }

    /// Syncs the logs whose acks do not wait for fsync (the others are durable at every ack).
    pub async fn flush_unsynced(&self) {
        self.flush_where(|log| !log.config().fsync_on_ack).await
    }

    async fn flush_where(&self, wanted: impl Fn(&log::Partition) -> bool) {
        for t in self.topics() {
            for replica in t.partitions().into_iter().filter(|r| wanted(&r.log)) {
                if let Err(e) = replica.log.flush().await {
                    tracing::warn!(topic = %t.name, partition = replica.index, error = %e, "flush failed");
                }
            }
        }
    }

    /// Round-trips a no-op job through the disk writer thread: Ok means the thread is alive and
    /// working through its queue (the systemd watchdog pings only then).
    pub async fn ping_disk_writer(&self) -> Result<(), crate::io::WriterError> {
        self.writer.ping().await
    }

    /// Syncs every partition and stops the disk writer (clean shutdown).
    pub async fn shutdown(&self) {
        self.flush_all().await;
        self.writer.shutdown().await;
    }
}

/// Runs blocking file work (creating partitions, syncing metadata) without stalling the runtime's
/// other tasks: on the multi-thread runtime the worker hands its other tasks away first.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Reads node.toml, or writes it on first start. A node id that differs from the one on disk is an
/// error: the data belongs to another node.
fn load_identity(data_dir: &Path, node_id: i32) -> Result<NodeIdentity, BrokerError> {
    let path = data_dir.join("node.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id: NodeIdentity =
                toml::from_str(&text).map_err(|e| BrokerError::NodeFile(e.to_string()))?;
            if id.node_id != node_id {
                return Err(BrokerError::NodeFile(format!(
                    "data directory belongs to node {} but this node is configured as {node_id}",
                    id.node_id
                )));
            }
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = NodeIdentity {
                node_id,
                cluster_id: new_cluster_id(),
            };
            let text = toml::to_string(&id).map_err(|e| BrokerError::NodeFile(e.to_string()))?;
            let io = |source| BrokerError::DataDir {
                path: path.clone(),
                source,
            };
            let tmp = data_dir.join("node.toml.tmp");
            std::fs::write(&tmp, text).map_err(io)?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            Ok(id)
        }
        Err(source) => Err(BrokerError::DataDir { path, source }),
    }
}

/// Kafka cluster ids are 22-character URL-safe base64 of a UUID.
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = Uuid::new_v4().as_u128();
    (0..22)
        .map(|i| ALPHABET[((bits >> (i * 6)) & 63) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::test_batches;

    fn open(dir: &Path) -> Broker {
        open_with(Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        })
    }

    fn open_with(config: Config) -> Broker {
        let writer = DiskWriter::start(&config.data_dir).unwrap();
        let advertised = Advertised {
            host: "127.0.0.1".into(),
            port: 9092,
        };
        Broker::open(config, advertised, writer).unwrap()
    }

    // Proves a topic deleted by name stays deleted: if the crash came after its metadata file was
    // removed but before its data was, a new topic of the same name starts empty.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recreated_topic_does_not_resurrect_old_data() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path());
        let t = broker
            .create_topic("t", 2, 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let log = t.partition(0).unwrap().log.clone();
        log.append(test_batches::batch(3, 1_000, 10).into(), 0)
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), 3);
        broker.shutdown().await;
        drop((t, log, broker));
        topic::remove_meta(dir.path(), "t").unwrap();

        let broker = open(dir.path());
        assert!(broker.topic("t").is_none());
        let t = broker
            .create_topic("t", 1, 1, BTreeMap::new(), false)
            .await
            .unwrap();
        assert_eq!(t.partition(0).unwrap().log.log_end_offset(), 0);
        assert!(
            !topic::partition_dir(dir.path(), "t", 1).exists(),
            "stale partition 1 left behind"
        );
        broker.shutdown().await;
    }

    // Proves partitions_max bounds creation and growth together, and refusals change nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partitions_max_bounds_create_and_grow() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_with(Config {
            data_dir: dir.path().to_path_buf(),
            partitions_max: 3,
            ..Config::default()
        });
        broker
            .create_topic("a", 2, 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let refused = broker.create_topic("b", 2, 1, BTreeMap::new(), false).await;
        assert!(
            matches!(refused, Err(TopicError::InvalidPartitions(_))),
            "{:?}",
            refused.err()
        );
        assert!(broker.topic("b").is_none());
        broker.create_partitions("a", 3, false).await.unwrap();
        assert!(matches!(
            broker.create_partitions("a", 4, false).await,
            Err(TopicError::InvalidPartitions(_))
        ));
        assert_eq!(broker.topic("a").unwrap().partition_count(), 3);
        broker.shutdown().await;
    }
}
