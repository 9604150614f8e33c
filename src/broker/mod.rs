//! broker: the node's view of the cluster — its identity, its topics and the partitions it hosts.
//! Handlers in `api/` ask it for topics and partitions and ask it to create, delete and alter
//! them. This is the control plane's local state; record data flows through `log` only.

pub mod cluster;
mod delete;
pub mod dirs;
pub mod dynamic;
pub mod identity;
pub mod producer_ids;
mod replication;
mod startup;
pub mod topic;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use crate::config::Config;
use crate::io::DiskWriter;
use crate::log::{self, LogConfig};
pub use cluster::{BrokerView, NotLeading, PartitionView, follow_image};
pub use identity::NodeIdentity;
pub use producer_ids::{ProducerIdError, ProducerIds};
pub use replication::{MIN_INSYNC_REPLICAS, run_replication};
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
    /// A partition directory whose `partition.metadata` names another topic: never reused.
    #[error(
        "partition directory {path} belongs to topic id {found}, not {expected}; move it away to use this topic name"
    )]
    ForeignPartition {
        path: PathBuf,
        found: Uuid,
        expected: Uuid,
    },
    /// A directory of this topic name that holds records when a new topic of the name is created.
    #[error(
        "partition directory {path} holds records of another topic (id {id}); not removed: move it away, or restart the node to recover that topic"
    )]
    StaleData { path: PathBuf, id: String },
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
    /// A manual replica assignment that does not fit (Kafka's INVALID_REPLICA_ASSIGNMENT).
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// A request Kafka refuses outright, such as deleting or growing an internal topic.
    #[error("{0}")]
    InvalidRequest(String),
    /// The controller refused the change, with Kafka's error code.
    #[error("{message}")]
    Refused { code: i16, message: String },
    /// The controller could not be reached or did not commit in time (retriable).
    #[error("{0}")]
    Unavailable(crate::meta::QuorumError),
}

/// One change of IncrementalAlterConfigs (or AlterConfigs) to a topic's explicit configs.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigOp {
    Set(String, String),
    /// Back to the default.
    Delete(String),
    /// List configs: add the comma-separated items not yet in the current (or default) value.
    Append(String, String),
    /// List configs: remove the comma-separated items from the current (or default) value.
    Subtract(String, String),
    /// Every explicit config back to its default (the legacy AlterConfigs replaces the whole set).
    Clear,
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
    /// Topic names start-up refused to serve (their directories contradict their metadata), with
    /// why; CreateTopics of such a name is refused too (`startup`).
    refused: RwLock<BTreeMap<String, String>>,
    /// Serialises topic creation, deletion and partition growth (rare, and they touch files).
    admin: tokio::sync::Mutex<()>,
    /// Dynamic broker configs in force (`dynamic`), by Kafka name.
    dynamic: RwLock<BTreeMap<String, String>>,
    /// The metadata quorum, once attached: then the committed image is the truth about topics.
    quorum: std::sync::OnceLock<Arc<dyn crate::meta::MetadataClient>>,
    /// The applied index of the newest image `cluster::reconcile` has followed.
    reconciled_index: std::sync::atomic::AtomicU64,
    /// False from a node's start until its image has caught up with the controller's
    /// (`node::Node::start`): partitions take no leader or follower role from an image that may
    /// be stale (Kafka's brokers wait for the metadata log the same way before serving).
    roles_allowed: std::sync::atomic::AtomicBool,
    /// Set once an image has been reconciled with roles allowed (`cluster::follow_image`).
    roles_taken: std::sync::atomic::AtomicBool,
    /// The consumer group coordinator (its state lives in `__consumer_offsets`).
    pub groups: crate::group::Coordinator,
    /// Bytes of Fetch answers being read, encoded or written (`fetch_inflight_bytes_max`).
    pub fetch_budget: Arc<tokio::sync::Semaphore>,
    /// Memory for looking inside stored batches to answer ListOffsets (`decompress_bytes_max`).
    pub inspect_budget: crate::log::InspectBudget,
    /// Compacted-topic key checks running at once (`api::produce`): one per worker thread, as
    /// the memory model counts their snappy buffers, although they run in `blocking`, which
    /// lets more threads than the workers run at a time.
    pub key_checks: tokio::sync::Semaphore,
    /// Bytes of followers' Fetch answers being read or written (`replica_fetch_inflight_bytes_max`),
    /// apart from consumers' budget.
    pub replica_fetch_budget: Arc<tokio::sync::Semaphore>,
    /// Replication: partition states, fetchers, ISR proposals (`replica`).
    pub replication: crate::replica::Manager,
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
        sync_filesystem(&data_dir);
        let identity = identity::load(&data_dir, config.node_id)?;
        let producer_ids = ProducerIds::open(&data_dir)?;
        let groups = crate::group::Coordinator::new(&config);
        let fetch_budget = Arc::new(tokio::sync::Semaphore::new(config.fetch_inflight_bytes_max));
        let dynamic = RwLock::new(dynamic::load(&data_dir));
        let inspect_budget = crate::log::InspectBudget::new(config.decompress_bytes_max);
        let key_checks = tokio::sync::Semaphore::new(crate::board::worker_threads(&config));
        let replica_fetch_budget = Arc::new(tokio::sync::Semaphore::new(
            config.replica_fetch_inflight_bytes_max,
        ));
        let replication = crate::replica::Manager::new(
            crate::replica::manager::Settings::from_config(&config, identity.node_id),
        );
        let broker = Broker {
            replica_fetch_budget,
            replication,
            fetch_budget,
            inspect_budget,
            key_checks,
            config,
            identity,
            advertised,
            data_dir,
            writer,
            producer_ids,
            topics: RwLock::new(BTreeMap::new()),
            refused: RwLock::new(BTreeMap::new()),
            admin: tokio::sync::Mutex::new(()),
            dynamic,
            groups,
            quorum: std::sync::OnceLock::new(),
            reconciled_index: std::sync::atomic::AtomicU64::new(0),
            roles_allowed: std::sync::atomic::AtomicBool::new(true),
            roles_taken: std::sync::atomic::AtomicBool::new(false),
        };
        broker.load_topics()?;
        Ok(broker)
    }

    fn open_topic(&self, meta: &TopicMeta) -> Result<Arc<Topic>, BrokerError> {
        let log_config = self.topic_log_config(&meta.configs);
        let t = Arc::new(Topic::new(meta));
        self.add_partitions(&t, 0..meta.partitions, &log_config)?;
        Ok(t)
    }

    /// Refuses growth past `partitions_max`: every partition holds open files and index memory, and
    /// on a small board those run out long before disk space does. Call under the admin lock.
    fn check_partition_budget(&self, adding: i32) -> Result<(), TopicError> {
        let hosted: usize = self.topics().iter().map(|t| t.hosted_count()).sum();
        let max = self.config.partitions_max;
        if hosted.saturating_add(adding.max(0) as usize) > max {
            return Err(TopicError::InvalidPartitions(format!(
                "this node hosts {hosted} partitions; {adding} more would pass partitions_max {max}"
            )));
        }
        Ok(())
    }

    /// Kafka's checks of a manual assignment for `adding` new partitions: one replica list per new
    /// partition, each as long as the topic's replication factor, naming known brokers once.
    fn check_assignments(
        &self,
        t: &Topic,
        adding: i32,
        assignments: &[Vec<i32>],
    ) -> Result<(), TopicError> {
        let bad = |m: String| Err(TopicError::InvalidReplicaAssignment(m));
        if assignments.len() != adding.max(0) as usize {
            return bad(format!(
                "attempted to add {adding} partition(s), but {} assignment(s) were specified",
                assignments.len()
            ));
        }
        for replicas in assignments {
            if replicas.is_empty() {
                return bad(
                    "the manual partition assignment includes an empty replica list".into(),
                );
            }
            if replicas.len() != t.replication_factor.max(0) as usize {
                return bad(format!(
                    "the manual partition assignment includes a partition with {} replica(s), but the topic's partitions have {}",
                    replicas.len(),
                    t.replication_factor
                ));
            }
            for (i, broker) in replicas.iter().enumerate() {
                if replicas[..i].contains(broker) {
                    return bad(format!(
                        "the manual partition assignment includes broker {broker} more than once"
                    ));
                }
                if *broker != self.identity.node_id {
                    return bad(format!(
                        "the manual partition assignment includes broker {broker}, but no such broker is registered"
                    ));
                }
            }
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
            let replica = self.open_replica(t, p, log_config.clone(), cleanup.clone())?;
            t.partitions
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(p, replica);
            if p >= t.partition_count() {
                t.set_partition_count(p + 1);
            }
        }
        Ok(())
    }

    /// Opens one partition and ties its directory to the topic id (writing `partition.metadata`
    /// into a new directory, or one from before the file existed, and bringing its copy of the
    /// topic's configs up to date); a directory of another topic id is refused, never reused.
    fn open_replica(
        &self,
        t: &Topic,
        partition: i32,
        log_config: LogConfig,
        cleanup: log::Cleanup,
    ) -> Result<Arc<Replica>, BrokerError> {
        let topic = t.name.as_str();
        let dir = topic::partition_dir(&self.data_dir, topic, partition);
        let existed = dir.exists();
        let meta_error = |source| BrokerError::DataDir {
            path: dir.join(dirs::PARTITION_METADATA),
            source,
        };
        let on_disk = match dirs::read_partition_meta(&dir) {
            Ok(Some(found)) if found.topic_id != t.id => {
                return Err(BrokerError::ForeignPartition {
                    path: dir,
                    found: found.topic_id,
                    expected: t.id,
                });
            }
            Ok(meta) => meta,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "unreadable partition.metadata; rewriting it with the topic's id");
                None
            }
        };
        let writer = self.writer.clone();
        let log =
            log::Partition::open_with(&dir, log_config, cleanup, writer).map_err(|source| {
                BrokerError::Partition {
                    topic: topic.to_string(),
                    partition,
                    source,
                }
            })?;
        let configs = t.configs();
        if on_disk.as_ref().and_then(|m| m.configs.as_ref()) != Some(&configs) {
            // Also after a config change the stop cut short: the metadata file is the truth.
            dirs::write_partition_meta(&dir, t.id, &configs).map_err(meta_error)?;
            if existed && on_disk.is_none() {
                tracing::info!(dir = %dir.display(), topic_id = %t.id, "wrote partition.metadata into a partition directory from an earlier version");
            }
        }
        let log = Arc::new(log);
        let state = Arc::new(crate::replica::PartitionState::new(
            topic,
            t.id,
            partition,
            log.clone(),
            self.identity.node_id,
        ));
        state.set_min_isr(self.min_insync_replicas(&configs));
        if self.quorum.get().is_none() {
            // No metadata quorum (yet): this node is the only replica there is.
            state.lead_alone();
        }
        self.replication.register(&state);
        Ok(Arc::new(Replica {
            index: partition,
            leader_epoch: std::sync::atomic::AtomicI32::new(0),
            log,
            state,
        }))
    }

    /// Writes the topic's configs into each partition's `partition.metadata`, the copy start-up
    /// recovers them from if the metadata file is lost. A failure is logged, not returned: the
    /// metadata file (already written) is the truth, and the next start rewrites the copy.
    fn write_config_copies(&self, t: &Topic) {
        let configs = t.configs();
        for replica in t.partitions() {
            let dir = topic::partition_dir(&self.data_dir, &t.name, replica.index);
            if let Err(e) = dirs::write_partition_meta(&dir, t.id, &configs) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not update the copy of the topic's configs in partition.metadata; rewritten on next start");
            }
        }
    }

    fn topic_log_config(&self, configs: &BTreeMap<String, String>) -> LogConfig {
        let defaults = self.log_defaults();
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

    /// The metadata quorum as this node sees it (DescribeQuorum, `bramble cluster status`);
    /// `None` while the quorum has not started.
    pub fn quorum_status(&self) -> Option<crate::meta::QuorumStatus> {
        self.quorum().map(|q| q.status())
    }

    /// Live brokers in the cluster (this node alone without a quorum).
    pub fn broker_count(&self) -> i16 {
        match self.image() {
            Some(image) => image.live_brokers().count().min(i16::MAX as usize) as i16,
            None => 1,
        }
    }

    /// The topic, created with the default partition count if auto-creation is on.
    pub async fn topic_or_auto_create(&self, name: &str) -> Option<Arc<Topic>> {
        if let Some(t) = self.topic(name) {
            return Some(t);
        }
        if !self.config.auto_create_topics
            || topic::validate_name(name).is_err()
            || self.refused(name).is_some()
        {
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

    /// The partition count and replication factor a CreateTopics asks for, -1 meaning the node
    /// defaults (the controller checks them against the cluster).
    fn default_counts(&self, partitions: i32, replication_factor: i16) -> (i32, i16) {
        let partitions = if partitions == -1 {
            self.config.num_partitions
        } else {
            partitions
        };
        let rf = if replication_factor == -1 {
            self.config.default_replication_factor
        } else {
            replication_factor
        };
        (partitions, rf)
    }

    /// [`Self::default_counts`], checked against this node alone.
    fn resolve_counts(
        &self,
        partitions: i32,
        replication_factor: i16,
    ) -> Result<(i32, i16), TopicError> {
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
        Ok((partitions, rf))
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
        if let Some(q) = self.quorum.get() {
            let (partitions, rf) = self.default_counts(partitions, replication_factor);
            topic::log_config(&self.log_defaults(), &configs)?;
            return self
                .cluster_create_topic(q, name, partitions, rf, configs, validate_only)
                .await;
        }
        let (partitions, rf) = self.resolve_counts(partitions, replication_factor)?;
        let log_config = topic::log_config(&self.log_defaults(), &configs)?;
        let _admin = self.admin.lock().await;
        if self.topic(name).is_some() {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        if let Some(why) = self.refused(name) {
            return Err(TopicError::Storage(why));
        }
        self.check_partition_budget(partitions)?;
        let meta = TopicMeta {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            replication_factor: rf,
            configs,
        };
        let t = Arc::new(Topic::new(&meta));
        t.set_partition_count(partitions);
        if validate_only {
            return Ok(t);
        }
        blocking(|| {
            self.clear_unused_dirs(name)?;
            self.add_partitions(&t, 0..partitions, &log_config)?;
            // The metadata file is the commit point: partition directories without it and without
            // records are removed on start (`startup`).
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

    /// Before a topic named `name` is created: its name's directories that hold no records (a
    /// creation cut short) are removed; one that holds records is refused, never removed.
    fn clear_unused_dirs(&self, name: &str) -> Result<(), BrokerError> {
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| BrokerError::DataDir { path, source }
        };
        let found = dirs::topic_dirs(&self.data_dir, name).map_err(io(&self.data_dir))?;
        for dir in found.values() {
            if dirs::holds_records(dir).map_err(io(dir))? {
                let id = match dirs::read_topic_id(dir) {
                    Ok(Some(id)) => id.to_string(),
                    _ => "unknown".to_string(),
                };
                return Err(BrokerError::StaleData {
                    path: dir.clone(),
                    id,
                });
            }
            std::fs::remove_dir_all(dir).map_err(io(dir))?;
            tracing::info!(dir = %dir.display(), "removed unused partition directory before creating the topic");
        }
        Ok(())
    }

    /// Grows a topic to `count` partitions (Kafka never shrinks them). `assignments`, when given,
    /// names the replicas of each new partition and is checked as Kafka checks it.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: Option<&[Vec<i32>]>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let t = self
            .topic(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        // Growing `__consumer_offsets` remaps groups to partitions and strands their committed
        // offsets; Kafka's tools refuse it ("cannot be changed").
        if t.is_internal() {
            return Err(TopicError::InvalidRequest(format!(
                "the number of partitions of internal topic {name} cannot be changed"
            )));
        }
        if let Some(q) = self.quorum.get() {
            return self
                .cluster_create_partitions(q, name, count, assignments, validate_only)
                .await;
        }
        let _admin = self.admin.lock().await;
        let current = t.partition_count();
        if count <= current {
            return Err(TopicError::InvalidPartitions(format!(
                "topic has {current} partitions; asked for {count}"
            )));
        }
        if let Some(assignments) = assignments {
            self.check_assignments(&t, count - current, assignments)?;
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
        if let Some(q) = self.quorum.get() {
            return self
                .cluster_alter_topic_configs(q, name, ops, validate_only)
                .await;
        }
        // Read, change and write under one lock, so concurrent alters of one topic all apply.
        let _admin = self.admin.lock().await;
        let t = self
            .topic(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let mut configs = t.configs();
        for op in ops {
            topic::apply_config_op(&self.log_defaults(), &mut configs, op);
        }
        let log_config = topic::log_config(&self.log_defaults(), &configs)?;
        if validate_only {
            return Ok(());
        }
        let mut meta = t.meta();
        meta.configs = configs.clone();
        // The file first: a failed write leaves the topic as it was, in memory and on disk.
        blocking(|| topic::write_meta(&self.data_dir, &meta))
            .map_err(|e| TopicError::Storage(e.to_string()))?;
        *t.configs.write().unwrap_or_else(|e| e.into_inner()) = configs;
        blocking(|| self.write_config_copies(&t));
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
        // Followers stop copying before the logs are flushed for the last time.
        self.replication.stop();
        self.flush_all().await;
        self.writer.shutdown().await;
    }
}

/// Makes everything a previous run wrote durable before any of it is counted as such: after a
/// crash (kill -9) the page cache may still hold writes that were never synced, which recovery
/// reads back and a follower would report as its durable end. One `syncfs` covers every file
/// of the data directory's file system at once (far cheaper than an fsync per partition on an
/// SD card). A failure is logged; the files are then as durable as the kernel made them.
fn sync_filesystem(dir: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let Ok(handle) = std::fs::File::open(dir) else {
        return;
    };
    // SAFETY: syncfs only reads the descriptor, which `handle` keeps open for the call.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(dir = %dir.display(), error = %e, "cannot sync the data directory's file system at start");
    }
}

/// Runs blocking file work (creating partitions, syncing metadata) without stalling the runtime's
/// other tasks: on the multi-thread runtime the worker hands its other tasks away first.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
pub(crate) mod tests;
