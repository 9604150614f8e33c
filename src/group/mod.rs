//! group: the consumer group coordinator (Kafka's classic protocol). The handlers in `api/`
//! (join_group, sync_group, heartbeat, leave_group, offset_commit, offset_fetch, …) call the
//! [`Coordinator`] on `Broker::groups`; it keeps every group in memory (`state`), runs the
//! membership transitions (`membership`) and persists committed offsets and group metadata as
//! records in `__consumer_offsets` (`store`, layout in `records`). Control plane only: it never
//! touches the record path of other topics.
//!
//! Loading is lazy: the first group request replays `__consumer_offsets` and starts the timer task
//! (session expiry, rebalance timeouts), so opening a broker stays synchronous.
//!
//! Limits: `groups_max` groups, `members_per_group_max` members (plus pending member ids) per
//! group, group ids of at most [`GROUP_ID_BYTES_MAX`] bytes.

pub mod membership;
pub mod offsets;
pub mod records;
pub mod state;
pub mod store;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use crate::broker::Broker;
use crate::config::Config;
pub use membership::{Join, JoinOutcome, Limits, Step};
pub use state::{Group, GroupState, JoinAnswer, JoinResult, SyncResult};

/// Longest group id accepted (Kafka has no limit; the record layout and the memory bound want one).
pub const GROUP_ID_BYTES_MAX: usize = 255;
/// How often the timer looks for expired sessions and ended rebalances.
pub const TICK_MS: u64 = 100;
/// A JoinGroup or SyncGroup waits at most its rebalance timeout plus this for its answer.
const WAIT_SLACK_MS: u64 = 5_000;

type Groups = BTreeMap<String, Group>;

pub struct Coordinator {
    groups: Arc<Mutex<Groups>>,
    limits: Limits,
    groups_max: usize,
    /// Set once the timer started.
    loaded: tokio::sync::OnceCell<()>,
    /// The `__consumer_offsets` partitions (by topic id) replayed into `groups`, with the
    /// leader epoch they were replayed at: a partition led again after another node led it is
    /// replayed again (its groups moved on meanwhile).
    replayed: tokio::sync::Mutex<BTreeMap<(uuid::Uuid, i32), i32>>,
    /// Serialises appends per partition of `__consumer_offsets`, so a group's records land in
    /// decision order while other partitions' appends (and fsyncs) go on concurrently.
    store_locks: store::StoreLocks,
}

impl Coordinator {
    pub fn new(config: &Config) -> Coordinator {
        Coordinator {
            groups: Arc::new(Mutex::new(BTreeMap::new())),
            limits: Limits {
                members_per_group_max: config.members_per_group_max,
                session_timeout_min: Duration::from_millis(config.group_min_session_timeout_ms),
                session_timeout_max: Duration::from_millis(config.group_max_session_timeout_ms),
                initial_rebalance_delay: Duration::from_millis(
                    config.group_initial_rebalance_delay_ms,
                ),
            },
            groups_max: config.groups_max,
            loaded: tokio::sync::OnceCell::new(),
            replayed: tokio::sync::Mutex::new(BTreeMap::new()),
            store_locks: store::StoreLocks::default(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Groups> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this node coordinates `group`: in a cluster, the leader of the group's
    /// `__consumer_offsets` partition does (created on first need, as FindCoordinator does);
    /// other nodes answer NOT_COORDINATOR so the client looks it up again.
    pub async fn owns(&self, broker: &Broker, group: &str) -> Result<(), ResponseError> {
        if broker.image().is_none() {
            // A node without a quorum coordinates every group (and creates the offsets topic on
            // first need, as it always did).
            return Ok(());
        }
        validate_group_id(group)?;
        let lease_lapsed = || broker.quorum().is_some_and(|q| !q.lease_holds());
        if lease_lapsed() {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        match coordinator_of(broker, group).await {
            Ok(node) if node == broker.identity.node_id => {}
            Ok(_) => return Err(ResponseError::NotCoordinator),
            Err(e) => return Err(e),
        }
        // Led here by the image, but not opened yet (this node is still catching up with the
        // metadata): its groups cannot be loaded before their partition is.
        let partition = store::group_partition(broker, group);
        let Some((topic, replica)) = broker
            .topic(store::OFFSETS_TOPIC)
            .and_then(|t| t.partition(partition).map(|r| (t, r)))
        else {
            return Err(ResponseError::CoordinatorLoadInProgress);
        };
        self.ensure_loaded(broker).await;
        let epoch = replica.leader_epoch();
        if replica.state.leading() != Some(epoch)
            || self.replayed.lock().await.get(&(topic.id, partition)) != Some(&epoch)
        {
            return Err(ResponseError::CoordinatorLoadInProgress);
        }
        // Paused or cut off past its session, this node may have been fenced and its groups
        // moved without its image knowing yet: its cache may be stale (`meta::quorum::lease`).
        // Checked again last: a pause during the awaits above must not let a stale answer out.
        if lease_lapsed() {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        Ok(())
    }

    /// Replays `__consumer_offsets` (once) and starts the timer.
    pub async fn ensure_loaded(&self, broker: &Broker) {
        self.loaded
            .get_or_init(|| async {
                tokio::spawn(tick_loop(Arc::downgrade(&self.groups), self.limits));
            })
            .await;
        // Every partition of the offsets topic this node hosts is replayed once, when it is
        // first seen open: in a cluster they open as the node catches up with the metadata,
        // so a group request can come before some of them are there.
        let Some(topic) = broker.topic(store::OFFSETS_TOPIC) else {
            return;
        };
        let mut replayed = self.replayed.lock().await;
        let count = topic.partition_count();
        for replica in topic.partitions() {
            let key = (topic.id, replica.index);
            let epoch = replica.leader_epoch();
            if replayed.get(&key) == Some(&epoch) {
                continue;
            }
            let leading = replica.state.leading() == Some(epoch);
            if !leading && broker.image().is_some() {
                // Another node coordinates these groups: what this node remembers of them
                // goes stale, and is rebuilt from the log if it leads the partition again.
                if replayed.remove(&key).is_some() {
                    self.forget_partition(replica.index, count);
                }
                continue;
            }
            if replayed.remove(&key).is_some() {
                self.forget_partition(replica.index, count);
            }
            match store::replay_partition(&replica).await {
                Ok(entries) => {
                    self.restore(entries);
                    replayed.insert(key, epoch);
                }
                // Tried again on the next group request; meanwhile owns() answers
                // COORDINATOR_LOAD_IN_PROGRESS for its groups.
                Err(e) => {
                    tracing::error!(partition = replica.index, error = %e, "cannot replay {} yet", store::OFFSETS_TOPIC)
                }
            }
        }
    }

    /// Records that partition `index` of the offsets topic `topic_id` has nothing in it the
    /// coordinator lacks (it is empty and about to be written by this node).
    pub(crate) async fn mark_replayed(&self, topic_id: uuid::Uuid, index: i32, epoch: i32) {
        self.replayed.lock().await.insert((topic_id, index), epoch);
    }

    /// Drops the in-memory groups of partition `index` (of `count`) of the offsets topic.
    fn forget_partition(&self, index: i32, count: i32) {
        self.lock()
            .retain(|id, _| store::partition_for(id, count) != index);
    }

    fn restore(&self, entries: Vec<(records::Key, Option<Bytes>)>) {
        if entries.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut groups = self.lock();
        // Only the groups this partition's records name: others in memory are live state.
        let mut named = std::collections::BTreeSet::new();
        for (key, value) in entries {
            let id = key.group().to_string();
            named.insert(id.clone());
            if !groups.contains_key(&id) && groups.len() >= self.groups_max {
                tracing::warn!(group = %id, "groups_max reached while loading; group skipped");
                continue;
            }
            let g = groups.entry(id.clone()).or_insert_with(|| Group::new(&id));
            match (key, value) {
                (
                    records::Key::Offset {
                        topic, partition, ..
                    },
                    Some(v),
                ) => match records::decode_offset(v) {
                    Ok(o) => {
                        g.offsets.insert((topic, partition), o);
                    }
                    Err(e) => {
                        tracing::warn!(group = %id, error = %e, "skipping unreadable offset record")
                    }
                },
                (
                    records::Key::Offset {
                        topic, partition, ..
                    },
                    None,
                ) => {
                    g.offsets.remove(&(topic, partition));
                }
                (records::Key::Group(_), Some(v)) => match records::decode_group(v) {
                    Ok(value) => g.restore(value, now),
                    Err(e) => {
                        tracing::warn!(group = %id, error = %e, "skipping unreadable group record")
                    }
                },
                (records::Key::Group(_), None) => *g = Group::new(&id),
            }
        }
        // A group with neither members nor offsets was deleted (tombstones) or never used.
        groups
            .retain(|id, g| !named.contains(id) || !g.members.is_empty() || !g.offsets.is_empty());
        tracing::info!(groups = groups.len(), "consumer groups loaded");
    }

    /// Runs `f` on the group, creating it (Empty) if `create` and there is room.
    fn with_group<T>(
        &self,
        id: &str,
        create: bool,
        f: impl FnOnce(&mut Group) -> T,
    ) -> Result<T, ResponseError> {
        validate_group_id(id)?;
        let mut groups = self.lock();
        if !groups.contains_key(id) {
            if !create {
                return Err(ResponseError::UnknownMemberId);
            }
            if groups.len() >= self.groups_max {
                tracing::warn!(
                    group = id,
                    groups_max = self.groups_max,
                    "groups_max reached; group refused"
                );
                return Err(ResponseError::CoordinatorNotAvailable);
            }
            groups.insert(id.to_string(), Group::new(id));
        }
        let g = groups.get_mut(id).ok_or(ResponseError::UnknownMemberId)?;
        let out = f(g);
        if g.state == GroupState::Dead {
            groups.remove(id);
        }
        Ok(out)
    }

    /// JoinGroup: answers once the rebalance completes (or at once for errors and quiet rejoins).
    pub async fn join(
        &self,
        broker: &Broker,
        group_id: &str,
        j: Join,
    ) -> Result<JoinAnswer, JoinError> {
        self.owns(broker, group_id)
            .await
            .map_err(JoinError::Error)?;
        self.ensure_loaded(broker).await;
        let wait = j.rebalance_timeout + Duration::from_millis(WAIT_SLACK_MS);
        let outcome = self
            .with_group(group_id, true, |g| g.join(j, &self.limits, Instant::now()))
            .map_err(JoinError::Error)?;
        let step = match outcome {
            JoinOutcome::MemberIdRequired(id) => return Err(JoinError::MemberIdRequired(id)),
            JoinOutcome::Step(step) => step,
        };
        let result = settle(step, wait, ResponseError::RebalanceInProgress).await;
        self.persist_dirty(broker).await;
        result.map_err(JoinError::Error)
    }

    pub async fn sync(
        &self,
        broker: &Broker,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncResult {
        self.owns(broker, group_id).await?;
        self.ensure_loaded(broker).await;
        let mut wait = Duration::from_millis(WAIT_SLACK_MS);
        let step = self.with_group(group_id, false, |g| {
            wait += g.rebalance_timeout();
            g.sync(
                member_id,
                instance_id,
                generation,
                assignments,
                Instant::now(),
            )
        })?;
        let result = settle(step, wait, ResponseError::RebalanceInProgress).await;
        self.persist_dirty(broker).await;
        result
    }

    pub async fn heartbeat(
        &self,
        broker: &Broker,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        self.owns(broker, group_id).await?;
        self.ensure_loaded(broker).await;
        self.with_group(group_id, false, |g| {
            g.heartbeat(member_id, instance_id, generation, Instant::now())
        })?
    }

    /// LeaveGroup of several members; one result per member, in order.
    pub async fn leave(
        &self,
        broker: &Broker,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        self.owns(broker, group_id).await?;
        self.ensure_loaded(broker).await;
        let results = self.with_group(group_id, false, |g| {
            let now = Instant::now();
            members
                .iter()
                .map(|(id, instance)| g.leave(id, instance.as_deref(), &self.limits, now))
                .collect()
        })?;
        self.persist_dirty(broker).await;
        Ok(results)
    }

    /// Writes the metadata record of every group whose membership changed. Each group's record
    /// is encoded under its partition's store lock, so a newer state is never written first.
    pub async fn persist_dirty(&self, broker: &Broker) {
        let dirty: Vec<String> = {
            let groups = self.lock();
            groups
                .values()
                .filter(|g| g.dirty)
                .map(|g| g.id.clone())
                .collect()
        };
        // Side by side: each waits for its own partition's ISR, not for the others'.
        futures_util::future::join_all(dirty.iter().map(|id| self.persist_group(broker, id))).await;
    }

    /// Writes one group's metadata record; a write that fails (not replicated in time, or this
    /// node no longer leads the partition) leaves the group dirty for the next try.
    async fn persist_group(&self, broker: &Broker, id: &str) {
        let _store = self.store_locks.lock(broker, id).await;
        let value = {
            let mut groups = self.lock();
            match groups.get_mut(id) {
                Some(g) if g.dirty => {
                    g.dirty = false;
                    records::encode_group(&g.to_value())
                }
                _ => return,
            }
        };
        let key = records::Key::Group(id.to_string());
        if let Err(e) = store::append(broker, id, vec![(key, Some(value))]).await {
            tracing::warn!(group = %id, error = %e, "cannot persist group metadata");
            if let Some(g) = self.lock().get_mut(id) {
                g.dirty = true;
            }
        }
    }

    #[cfg(test)]
    fn state_of(&self, id: &str) -> Option<(GroupState, i32, usize)> {
        let groups = self.lock();
        groups
            .get(id)
            .map(|g| (g.state, g.generation, g.members.len()))
    }
}

/// Why a JoinGroup was not answered with a generation.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinError {
    /// v4+: join again with this member id.
    MemberIdRequired(String),
    Error(ResponseError),
}

/// Waits for a step's answer, at most `wait`; a dropped sender or the time running out answer
/// `otherwise` (a retriable error: the client joins again).
async fn settle<T>(
    step: Step<Result<T, ResponseError>>,
    wait: Duration,
    otherwise: ResponseError,
) -> Result<T, ResponseError> {
    match step {
        Step::Now(r) => r,
        Step::Wait(rx) => match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) | Err(_) => Err(otherwise),
        },
    }
}

/// The node coordinating `group`: the leader of its `__consumer_offsets` partition (this node
/// without a quorum). COORDINATOR_NOT_AVAILABLE while the topic cannot be created or the
/// partition has no leader.
pub async fn coordinator_of(broker: &Broker, group: &str) -> Result<i32, ResponseError> {
    let Some(image) = broker.image() else {
        return Ok(broker.identity.node_id);
    };
    let count = match image.topics.get(store::OFFSETS_TOPIC) {
        Some(t) => t.partitions.len() as i32,
        None => match store::offsets_topic(broker).await {
            Ok(t) => t.partition_count(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create {}", store::OFFSETS_TOPIC);
                return Err(ResponseError::CoordinatorNotAvailable);
            }
        },
    };
    let partition = store::partition_for(group, count);
    let image = broker.image().unwrap_or(image);
    match image.partition(store::OFFSETS_TOPIC, partition) {
        Some(p) if p.leader >= 0 && image.is_live(p.leader) => Ok(p.leader),
        _ => Err(ResponseError::CoordinatorNotAvailable),
    }
}

pub fn validate_group_id(id: &str) -> Result<(), ResponseError> {
    if id.is_empty() || id.len() > GROUP_ID_BYTES_MAX {
        return Err(ResponseError::InvalidGroupId);
    }
    Ok(())
}

/// The timer task: every [`TICK_MS`], expires sessions and ends timed-out rebalances. Ends when
/// the coordinator is dropped.
async fn tick_loop(groups: Weak<Mutex<Groups>>, limits: Limits) {
    let mut interval = tokio::time::interval(Duration::from_millis(TICK_MS));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(groups) = groups.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut groups = groups.lock().unwrap_or_else(|e| e.into_inner());
        for g in groups.values_mut() {
            g.tick(&limits, now);
        }
    }
}

#[cfg(test)]
mod tests;
