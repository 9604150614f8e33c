//! broker::cluster: the node's local view kept in step with the metadata quorum.
//!
//! With a quorum attached ([`Broker::attach_quorum`]), the committed [`MetadataImage`] is the
//! truth about topics: admin requests become proposals to the controller, and
//! [`Broker::reconcile`] makes the local registry match each new image — it opens the replicas
//! this node hosts, applies config changes, and removes topics the cluster deleted. The data path
//! asks [`Broker::leader_replica`] whether this node leads a partition (it answers from the image,
//! never waiting on Raft).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::topic::{self, Replica, Topic, TopicMeta};
use super::{Broker, ConfigOp, TopicError, blocking, dirs};
use crate::meta::command::{MetadataCommand, MetadataResponse, TopicImport, codes};
use crate::meta::image::{MetadataImage, TopicImage};
use crate::meta::{MetadataClient, QuorumError};

/// Why the data path may not use a partition here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotLeading {
    /// The topic has no such partition.
    UnknownPartition,
    /// Another node leads it (or nobody does right now): the client should refresh Metadata.
    NotLeader,
}

/// One partition as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub index: i32,
    /// -1 when no replica can lead.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Replicas on brokers that are fenced or gone.
    pub offline: Vec<i32>,
}

/// One live broker as Metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerView {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub fenced: bool,
}

/// Where the single-node release's topic files go once the quorum holds them.
const IMPORTED_TOPICS_DIR: &str = "topics.imported";

impl Broker {
    /// Hands the node's topics over to the metadata quorum: from now on admin requests go to the
    /// controller and the local registry follows the committed image.
    pub fn attach_quorum(&self, quorum: Arc<dyn MetadataClient>) {
        if self.quorum.set(quorum).is_err() {
            tracing::warn!("metadata quorum attached twice; keeping the first");
        }
    }

    pub fn quorum(&self) -> Option<&Arc<dyn MetadataClient>> {
        self.quorum.get()
    }

    /// The committed metadata image, when a quorum is attached.
    pub fn image(&self) -> Option<Arc<MetadataImage>> {
        self.quorum.get().map(|q| q.image())
    }

    /// Topics of the single-node release found on start (their `.toml` files), for the quorum's
    /// first command to import, with the producer id mark.
    pub async fn legacy_import(&self) -> (Vec<TopicImport>, i64) {
        let topics = self
            .topics()
            .iter()
            .map(|t| TopicImport {
                name: t.name.clone(),
                id: t.id,
                partitions: t.partition_count(),
                configs: t.configs(),
            })
            .collect();
        (topics, self.producer_ids.mark().await)
    }

    /// Every partition of `t` with its leader, replicas and ISR, from the image (or this node
    /// alone without a quorum).
    pub fn partition_views(&self, t: &Topic) -> Vec<PartitionView> {
        let me = self.identity.node_id;
        let Some(image) = self.image() else {
            return t
                .partitions()
                .iter()
                .map(|r| PartitionView {
                    index: r.index,
                    leader: me,
                    leader_epoch: r.leader_epoch(),
                    replicas: vec![me],
                    isr: vec![me],
                    offline: Vec::new(),
                })
                .collect();
        };
        let Some(ti) = image.topics.get(&t.name).filter(|ti| ti.id == t.id) else {
            return Vec::new();
        };
        ti.partitions
            .iter()
            .enumerate()
            .map(|(i, p)| PartitionView {
                index: i as i32,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                offline: p
                    .replicas
                    .iter()
                    .copied()
                    .filter(|r| !image.is_live(*r))
                    .collect(),
            })
            .collect()
    }

    /// The brokers Metadata lists: live ones (with `fenced`, every registered one), or this
    /// node alone without a quorum.
    pub fn broker_views(&self, fenced: bool) -> Vec<BrokerView> {
        let me = BrokerView {
            node_id: self.identity.node_id,
            host: self.advertised.host.clone(),
            port: self.advertised.port,
            rack: self.config.rack.clone(),
            fenced: false,
        };
        let Some(image) = self.image() else {
            return vec![me];
        };
        let listed: Vec<BrokerView> = image
            .brokers
            .values()
            .filter(|b| fenced || !b.fenced)
            .map(|b| BrokerView {
                node_id: b.node_id(),
                host: b.registration.host.clone(),
                port: b.registration.port,
                rack: b.registration.rack.clone(),
                fenced: b.fenced,
            })
            .collect();
        if listed.is_empty() {
            // Not registered yet (no quorum so far): clients still need a broker to talk to.
            return vec![me];
        }
        listed
    }

    /// The controller's id as clients see it (-1 when none is known).
    pub fn controller_id(&self) -> i32 {
        match self.quorum.get() {
            Some(q) => q.controller_id().unwrap_or(-1),
            None => self.identity.node_id,
        }
    }

    /// The cluster id: the quorum's once it has one, else this node's own.
    pub fn cluster_id(&self) -> String {
        self.image()
            .and_then(|i| i.cluster_id.clone())
            .unwrap_or_else(|| self.identity.cluster_id.clone())
    }

    /// The replica of `partition` and its leader epoch, if this node leads it.
    pub fn leader_replica(
        &self,
        t: &Topic,
        partition: i32,
    ) -> Result<(Arc<Replica>, i32), NotLeading> {
        let Some(image) = self.image() else {
            return t
                .partition(partition)
                .map(|r| (r.clone(), r.leader_epoch()))
                .ok_or(NotLeading::UnknownPartition);
        };
        let Some(ti) = image.topics.get(&t.name) else {
            return Err(NotLeading::UnknownPartition);
        };
        if ti.id != t.id {
            // The name was deleted and made again; this registry entry is the old topic until
            // reconcile catches up. Never append to (or serve) the deleted one.
            return Err(NotLeading::NotLeader);
        }
        let p = usize::try_from(partition)
            .ok()
            .and_then(|i| ti.partitions.get(i))
            .ok_or(NotLeading::UnknownPartition)?;
        if p.leader != self.identity.node_id {
            return Err(NotLeading::NotLeader);
        }
        let replica = t.partition(partition).ok_or(NotLeading::NotLeader)?;
        if replica.state.leading() != Some(p.leader_epoch) {
            // The image says so, but this node has not taken over yet (it records the
            // epoch's start first): the client retries in a moment.
            return Err(NotLeading::NotLeader);
        }
        Ok((replica, p.leader_epoch))
    }

    /// Makes the local registry match `image`. Idempotent; runs under the admin lock.
    pub async fn reconcile(&self, image: &MetadataImage) {
        let _admin = self.admin.lock().await;
        if image.cluster_id.is_none() {
            // The quorum has not committed its first command: nothing to follow yet.
            return;
        }
        // Callers read the image before queueing for the lock: one that read an older image
        // than the last reconciled must not undo what the newer one did.
        let last = self
            .reconciled_index
            .fetch_max(image.applied_index, std::sync::atomic::Ordering::AcqRel);
        if image.applied_index < last {
            return;
        }
        for t in self.topics() {
            match image.topics.get(&t.name) {
                Some(ti) if ti.id == t.id => {}
                _ if !t.is_from_image() => {
                    // A single-node release's topic the quorum did not import (this node did not
                    // form the cluster): close it, keep its data.
                    self.write_topics().remove(&t.name);
                    tracing::warn!(topic = %t.name, "topic of the single-node release is not in the cluster's metadata (this node did not form the cluster); its data is kept on disk but not served");
                }
                _ => self.remove_local(&t).await,
            }
        }
        for ti in image.topics.values() {
            self.host(image, ti).await;
        }
        self.sweep_deleted(image);
        let dynamic = self.merged_dynamic(image);
        if dynamic != self.dynamic_configs() {
            self.set_dynamic(dynamic);
        }
        self.retire_topic_files(image);
    }

    /// Opens (or updates) the local state of one topic of the image.
    async fn host(&self, image: &MetadataImage, ti: &TopicImage) {
        let me = self.identity.node_id;
        let t = match self.topic(&ti.name) {
            Some(t) => t,
            None => {
                let meta = TopicMeta {
                    name: ti.name.clone(),
                    id: ti.id,
                    partitions: ti.partitions.len() as i32,
                    replication_factor: ti.replication_factor(),
                    configs: ti.configs.clone(),
                };
                let t = Arc::new(Topic::new(&meta));
                self.write_topics().insert(ti.name.clone(), t.clone());
                t
            }
        };
        t.mark_from_image();
        t.set_partition_count(ti.partitions.len() as i32);
        if t.configs() != ti.configs {
            self.apply_configs(&t, ti.configs.clone());
        }
        let log_config = self.topic_log_config(&ti.configs);
        for (index, p) in ti.partitions.iter().enumerate() {
            let index = index as i32;
            if let Some(replica) = t.partition(index) {
                replica
                    .leader_epoch
                    .store(p.leader_epoch, std::sync::atomic::Ordering::Release);
                self.apply_assignment(image, &replica, p).await;
                continue;
            }
            if !p.replicas.contains(&me) {
                continue;
            }
            let hosted: usize = self.topics().iter().map(|t| t.hosted_count()).sum();
            if hosted >= self.config.partitions_max {
                // Placed here by a node that could not see this one's budget: open files and
                // index memory are what partitions_max protects, so the partition stays offline.
                tracing::error!(topic = %t.name, partition = index, partitions_max = self.config.partitions_max, "not opening a partition past partitions_max; it stays offline here (raise partitions_max or move partitions away)");
                continue;
            }
            let cleanup = topic::cleanup_config(&ti.configs).unwrap_or_default();
            let opened = blocking(|| {
                self.open_replica_clearing(image, &t, index, log_config.clone(), cleanup)
            });
            match opened {
                Ok(replica) => {
                    replica
                        .leader_epoch
                        .store(p.leader_epoch, std::sync::atomic::Ordering::Release);
                    t.partitions
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(index, replica.clone());
                    tracing::info!(topic = %t.name, partition = index, "hosting partition");
                    self.apply_assignment(image, &replica, p).await;
                }
                Err(e) => {
                    tracing::error!(topic = %t.name, partition = index, error = %e, "cannot open a partition this node hosts; it stays offline here")
                }
            }
        }
    }

    /// Removes the partition directories of topics the cluster deleted while this node was down
    /// (their ids are in the image's deleted set): no other directory is touched.
    fn sweep_deleted(&self, image: &MetadataImage) {
        if image.deleted_topics.is_empty() {
            return;
        }
        let scan = match blocking(|| dirs::scan(&self.data_dir)) {
            Ok(scan) => scan,
            Err(e) => {
                tracing::warn!(error = %e, "cannot scan the data directory for deleted topics' partitions");
                return;
            }
        };
        for (name, found) in scan.partitions {
            let hosted = self.topic(&name);
            for (index, dir) in found {
                if hosted
                    .as_ref()
                    .is_some_and(|t| t.partition(index).is_some())
                {
                    continue;
                }
                let Ok(Some(id)) = dirs::read_topic_id(&dir) else {
                    continue;
                };
                if !image.deleted_topics.contains(&id) {
                    continue;
                }
                match blocking(|| std::fs::remove_dir_all(&dir)) {
                    Ok(()) => {
                        tracing::info!(dir = %dir.display(), topic_id = %id, "removed a partition directory of a topic deleted while this node was down")
                    }
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a deleted topic's partition directory")
                    }
                }
            }
        }
    }

    /// Opens a replica; a directory left by a topic the cluster no longer has (deleted while
    /// this node was down) is removed first.
    fn open_replica_clearing(
        &self,
        image: &MetadataImage,
        t: &Topic,
        index: i32,
        log_config: crate::log::LogConfig,
        cleanup: crate::log::Cleanup,
    ) -> Result<Arc<Replica>, super::BrokerError> {
        match self.open_replica(t, index, log_config.clone(), cleanup.clone()) {
            // Only a directory of a topic the cluster deleted (while this node was down) goes: one
            // of an id the image does not know yet (it is still catching up) stays, and the
            // partition stays offline here until the next image.
            Err(super::BrokerError::ForeignPartition { path, found, .. })
                if image.deleted_topics.contains(&found) =>
            {
                tracing::info!(dir = %path.display(), topic_id = %found, "removing a partition directory of a deleted topic");
                std::fs::remove_dir_all(&path).map_err(|source| super::BrokerError::DataDir {
                    path: path.clone(),
                    source,
                })?;
                self.open_replica(t, index, log_config, cleanup)
            }
            other => other,
        }
    }

    fn apply_configs(&self, t: &Topic, configs: BTreeMap<String, String>) {
        let log_config = self.topic_log_config(&configs);
        let cleanup = topic::cleanup_config(&configs).unwrap_or_default();
        *t.configs.write().unwrap_or_else(|e| e.into_inner()) = configs;
        blocking(|| self.write_config_copies(t));
        let min_isr = self.min_insync_replicas(&t.configs());
        for replica in t.partitions() {
            replica.log.set_config(log_config.clone());
            replica.log.set_cleanup(cleanup.clone());
            replica.state.set_min_isr(min_isr);
        }
    }

    /// Once the quorum holds the topics, the single-node release's topic files are moved aside
    /// (kept for the record), so a restart never loads them again.
    fn retire_topic_files(&self, image: &MetadataImage) {
        if image.cluster_id.is_none() {
            return;
        }
        let from = self.data_dir.join("meta").join("topics");
        if !from.exists() {
            return;
        }
        let to = self.data_dir.join("meta").join(IMPORTED_TOPICS_DIR);
        match std::fs::rename(&from, &to).and_then(|()| dirs::sync_dir(&self.data_dir.join("meta")))
        {
            Ok(()) => {
                tracing::info!(kept = %to.display(), "topic files of the single-node release moved aside: the metadata quorum holds the topics now")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not move the single-node topic files aside")
            }
        }
    }

    /// Removes a topic the cluster deleted: its directories are marked and removed.
    async fn remove_local(&self, t: &Arc<Topic>) {
        let marked = match blocking(|| self.mark_for_deletion(t)) {
            Ok(marked) => marked,
            Err(e) => {
                tracing::warn!(topic = %t.name, error = %e, "could not mark a deleted topic's directories; retried on the next change");
                return;
            }
        };
        self.write_topics().remove(&t.name);
        for replica in t.partitions() {
            self.replication.unregister(t.id, replica.index);
            if let Err(e) = replica.log.clone().delete().await {
                tracing::warn!(topic = %t.name, partition = replica.index, error = %e, "could not stop partition");
            }
        }
        blocking(|| {
            for dir in marked {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove partition data; removed on next start");
                }
            }
        });
        tracing::info!(topic = %t.name, "deleted topic");
    }

    /// How long an admin request may wait for the controller.
    fn admin_timeout(&self) -> Duration {
        Duration::from_millis(self.config.controller_request_ms_max)
    }

    /// Commits `cmd`, then waits until this node's image has applied it (`done` says when) and
    /// its registry follows.
    async fn commit(
        &self,
        q: &Arc<dyn MetadataClient>,
        name: &str,
        cmd: MetadataCommand,
        done: impl Fn(&MetadataImage) -> bool,
    ) -> Result<MetadataResponse, TopicError> {
        let deadline = tokio::time::Instant::now() + self.admin_timeout();
        let response = q
            .propose(cmd, self.admin_timeout())
            .await
            .map_err(unavailable)?;
        if let MetadataResponse::Refused(r) = &response {
            return Err(refused(r.code, &r.message, name));
        }
        let mut cell = q.subscribe();
        loop {
            let image = cell.borrow_and_update().clone();
            if done(&image) {
                self.reconcile(&image).await;
                return Ok(response);
            }
            if tokio::time::timeout_at(deadline, cell.changed())
                .await
                .is_err()
            {
                return Err(unavailable(QuorumError::Timeout(
                    self.config.controller_request_ms_max,
                )));
            }
        }
    }

    pub(super) async fn cluster_create_topic(
        &self,
        q: &Arc<dyn MetadataClient>,
        name: &str,
        partitions: i32,
        rf: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        let id = Uuid::new_v4();
        let cmd = MetadataCommand::CreateTopic {
            name: name.to_string(),
            id,
            partitions,
            replication_factor: rf,
            configs: configs.clone(),
            assignment: None,
        };
        // Applying to a copy answers exactly what committing would, placement included.
        let mut trial = (*q.image()).clone();
        if let MetadataResponse::Refused(r) = trial.apply(trial.applied_index, &cmd) {
            return Err(refused(r.code, &r.message, name));
        }
        let me = self.identity.node_id;
        let mine = hosted_by(&trial, name, me);
        self.check_partition_budget(mine as i32)?;
        if mine > 0 {
            // A full or failed disk here would leave the new partitions offline once committed:
            // refuse before committing, as the single node did.
            let dir = self.data_dir.clone();
            blocking(|| probe_writable(&dir)).map_err(|e| {
                TopicError::Storage(format!("data directory {}: {e}", self.data_dir.display()))
            })?;
        }
        if validate_only {
            let meta = TopicMeta {
                name: name.to_string(),
                id,
                partitions,
                replication_factor: rf,
                configs,
            };
            let t = Arc::new(Topic::new(&meta));
            t.set_partition_count(partitions);
            return Ok(t);
        }
        self.commit(q, name, cmd, |image| {
            image.topics.get(name).is_some_and(|t| t.id == id)
        })
        .await?;
        tracing::info!(
            topic = name,
            partitions,
            replication_factor = rf,
            "created topic"
        );
        self.topic(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))
    }

    pub(super) async fn cluster_delete_topic(
        &self,
        q: &Arc<dyn MetadataClient>,
        t: &Topic,
    ) -> Result<Uuid, TopicError> {
        let id = t.id;
        let name = t.name.clone();
        self.commit(
            q,
            &t.name,
            MetadataCommand::DeleteTopic {
                name: name.clone(),
                id: Some(id),
            },
            |image| image.topics.get(&name).is_none_or(|t| t.id != id),
        )
        .await?;
        Ok(id)
    }

    pub(super) async fn cluster_create_partitions(
        &self,
        q: &Arc<dyn MetadataClient>,
        name: &str,
        count: i32,
        assignments: Option<&[Vec<i32>]>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let cmd = MetadataCommand::CreatePartitions {
            name: name.to_string(),
            count,
            assignment: assignments.map(<[Vec<i32>]>::to_vec),
        };
        let mut trial = (*q.image()).clone();
        let before = hosted_by(&trial, name, self.identity.node_id);
        if let MetadataResponse::Refused(r) = trial.apply(trial.applied_index, &cmd) {
            return Err(refused(r.code, &r.message, name));
        }
        let adding = hosted_by(&trial, name, self.identity.node_id) - before;
        self.check_partition_budget(adding as i32)?;
        if validate_only {
            return Ok(());
        }
        self.commit(q, name, cmd, |image| {
            image
                .topics
                .get(name)
                .is_some_and(|t| t.partitions.len() as i32 >= count)
        })
        .await?;
        tracing::info!(topic = name, to = count, "added partitions");
        Ok(())
    }

    /// Resolves `ops` against the committed configs and commits the whole new set. Concurrent
    /// alters of one topic through different nodes may race (the later set wins), as two
    /// AlterConfigs racing on Kafka do.
    pub(super) async fn cluster_alter_topic_configs(
        &self,
        q: &Arc<dyn MetadataClient>,
        name: &str,
        ops: Vec<ConfigOp>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let image = q.image();
        let Some(ti) = image.topics.get(name) else {
            return Err(TopicError::Unknown(name.to_string()));
        };
        let mut configs = ti.configs.clone();
        for op in ops {
            topic::apply_config_op(&self.log_defaults(), &mut configs, op);
        }
        topic::log_config(&self.log_defaults(), &configs)?;
        if validate_only {
            return Ok(());
        }
        let want = configs.clone();
        self.commit(
            q,
            name,
            MetadataCommand::SetTopicConfigs {
                name: name.to_string(),
                configs,
            },
            |image| image.topics.get(name).is_some_and(|t| t.configs == want),
        )
        .await?;
        Ok(())
    }
}

impl Broker {
    /// Dynamic broker settings through the controller: the scope's settings in the image, changed
    /// by `ops`, checked, committed, and in force here once applied.
    pub(super) async fn cluster_alter_broker_configs(
        &self,
        q: &Arc<dyn MetadataClient>,
        ops: Vec<ConfigOp>,
        validate_only: bool,
        cluster_wide: bool,
    ) -> Result<(), super::dynamic::BrokerConfigError> {
        use super::dynamic::BrokerConfigError;
        let scope = if cluster_wide {
            crate::meta::image::CLUSTER_DEFAULT
        } else {
            self.identity.node_id
        };
        let current = q
            .image()
            .broker_configs
            .get(&scope)
            .cloned()
            .unwrap_or_default();
        let configs = self.checked_dynamic(current, ops)?;
        if validate_only {
            return Ok(());
        }
        let want = configs.clone();
        let cmd = MetadataCommand::SetBrokerConfigs {
            node_id: (!cluster_wide).then_some(scope),
            configs,
        };
        let unavailable = |e: TopicError| BrokerConfigError::Unavailable(e.to_string());
        self.commit(q, "", cmd, |image| {
            image
                .broker_configs
                .get(&scope)
                .cloned()
                .unwrap_or_default()
                == want
        })
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}

/// Follows the image: reconciles the local registry on every swap until `stop`.
pub async fn follow_image(broker: Arc<Broker>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(q) = broker.quorum().cloned() else {
        return;
    };
    let mut cell = q.subscribe();
    let started = tokio::time::Instant::now();
    let mut catch_up = tokio::time::interval(Duration::from_millis(CATCH_UP_POLL_MS));
    let mut changed = true;
    loop {
        if !broker.roles_allowed() && q.lease_holds() {
            // The controller acknowledged this node, and this image has applied everything the
            // controller had: roles from it are current, not what this node knew when it
            // stopped (it may have been replaced as leader since).
            broker.allow_roles();
            changed = true;
            tracing::info!(
                waited_ms = started.elapsed().as_millis() as u64,
                "metadata caught up with the controller: partitions take their roles"
            );
        }
        if std::mem::take(&mut changed) {
            let image = cell.borrow_and_update().clone();
            broker.reconcile(&image).await;
            if broker.roles_allowed() {
                broker
                    .roles_taken
                    .store(true, std::sync::atomic::Ordering::Release);
            }
        }
        tokio::select! {
            c = cell.changed() => match c {
                Ok(()) => changed = true,
                Err(_) => return,
            },
            _ = catch_up.tick(), if !broker.roles_allowed() => {}
            _ = stop.changed() => return,
        }
    }
}

/// How often a starting node checks whether its image has caught up with the controller's.
const CATCH_UP_POLL_MS: u64 = 20;

/// Partitions of `topic` in `image` that `node` holds a replica of.
fn hosted_by(image: &MetadataImage, topic: &str, node: i32) -> usize {
    image.topics.get(topic).map_or(0, |t| {
        t.partitions
            .iter()
            .filter(|p| p.replicas.contains(&node))
            .count()
    })
}

/// Bytes written (and synced) to prove the data directory takes writes.
const PROBE_BYTES: usize = 64 * 1024;

/// Writes, syncs and removes a small file in `dir`: fails on a full or read-only disk.
fn probe_writable(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(".write-probe");
    let result = std::fs::File::create(&path).and_then(|mut f| {
        f.write_all(&[0u8; PROBE_BYTES])?;
        f.sync_data()
    });
    let _ = std::fs::remove_file(&path);
    result
}

fn unavailable(e: QuorumError) -> TopicError {
    TopicError::Unavailable(e)
}

/// The state machine's refusal as the error the local path would have given. `name` is the topic.
fn refused(code: i16, message: &str, name: &str) -> TopicError {
    match code {
        codes::TOPIC_ALREADY_EXISTS => TopicError::AlreadyExists(name.to_string()),
        codes::UNKNOWN_TOPIC_OR_PARTITION => TopicError::Unknown(name.to_string()),
        _ => TopicError::Refused {
            code,
            message: message.to_string(),
        },
    }
}

#[cfg(test)]
mod tests;
