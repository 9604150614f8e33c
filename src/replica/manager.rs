//! replica::manager: the node's replication as a whole — every hosted partition's state, one
//! fetcher per leader this node follows, and the periodic work (ISR shrink checks, high
//! watermark checkpoints). `broker` drives it: it applies each committed image's assignments
//! ([`Manager::apply`]) and carries the ISR changes it proposes to the controller
//! ([`Manager::take_isr_changes`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::fetcher::{FetchSettings, Fetcher};
use super::{Assignment, IsrChange, PartitionState, Transition};
use crate::config::Config;

/// The replication settings the manager runs by.
#[derive(Debug, Clone)]
pub struct Settings {
    pub fetch: FetchSettings,
    pub lag_ms_max: u64,
    pub hw_checkpoint_ms: u64,
}

impl Settings {
    pub fn from_config(c: &Config, me: i32) -> Settings {
        Settings {
            fetch: FetchSettings {
                me,
                wait_ms_max: c.replica_fetch_wait_ms_max,
                partition_bytes_max: c.replica_fetch_bytes_max,
                response_bytes_max: c.replica_fetch_response_bytes_max,
                backoff_ms: c.replica_fetch_backoff_ms,
                batch_bytes_max: c.frame_bytes_max,
                source_ip: c.peer_source_ip,
            },
            lag_ms_max: c.replica_lag_ms_max,
            hw_checkpoint_ms: c.hw_checkpoint_ms,
        }
    }
}

type Key = (Uuid, i32);

pub struct Manager {
    settings: Settings,
    states: Mutex<BTreeMap<Key, Arc<PartitionState>>>,
    /// By leader id.
    fetchers: Mutex<BTreeMap<i32, Fetcher>>,
    isr_tx: mpsc::UnboundedSender<IsrChange>,
    isr_rx: Mutex<Option<mpsc::UnboundedReceiver<IsrChange>>>,
}

impl Manager {
    pub fn new(settings: Settings) -> Manager {
        // Unbounded, yet bounded by the partitions: each has at most one change in flight.
        let (isr_tx, isr_rx) = mpsc::unbounded_channel();
        Manager {
            settings,
            states: Mutex::new(BTreeMap::new()),
            fetchers: Mutex::new(BTreeMap::new()),
            isr_tx,
            isr_rx: Mutex::new(Some(isr_rx)),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn states(&self) -> MutexGuard<'_, BTreeMap<Key, Arc<PartitionState>>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fetchers(&self) -> MutexGuard<'_, BTreeMap<i32, Fetcher>> {
        self.fetchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ISR changes leaders propose, for the one task that carries them to the controller.
    pub fn take_isr_changes(&self) -> Option<mpsc::UnboundedReceiver<IsrChange>> {
        self.isr_rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Queues an ISR change for the controller.
    pub fn propose(&self, change: IsrChange) {
        // The receiver lives as long as the node serves; after that nothing needs proposing.
        let _ = self.isr_tx.send(change);
    }

    /// Tracks a hosted partition.
    pub fn register(&self, state: &Arc<PartitionState>) {
        self.states()
            .insert((state.topic_id, state.index), state.clone());
    }

    /// Forgets a partition (deleted): stops fetching it.
    pub fn unregister(&self, topic_id: Uuid, index: i32) {
        self.states().remove(&(topic_id, index));
        self.unfollow(topic_id, index);
    }

    /// Applies the image's assignment of one hosted partition; `leader_addr` is the leader's
    /// Kafka listener (host:port) when another node leads.
    pub async fn apply(
        &self,
        state: &Arc<PartitionState>,
        assignment: Assignment,
        leader_addr: Option<String>,
    ) {
        // Most images change nothing for most partitions: no lock then, so one partition busy
        // with a truncation or a full disk queue never delays another's failover.
        if state.assignment().as_ref() != Some(&assignment) {
            let _held = state.hold().await;
            let transition = state.apply(assignment, Instant::now());
            self.act(state, transition, leader_addr.clone()).await;
        }
        if let (super::Role::Follower { leader, epoch }, Some(addr)) = (state.role(), leader_addr)
            && !self.following(state, leader, &addr)
        {
            // A leader that came back on another address, or a fetcher that was replaced:
            // follow it there.
            self.follow(state, leader, epoch, addr);
        }
    }

    /// Acts on a role change (under the partition's role lock).
    async fn act(&self, state: &Arc<PartitionState>, transition: Transition, addr: Option<String>) {
        if matches!(
            transition,
            Transition::BecameLeader { .. } | Transition::Follow { .. }
        ) && let Err(e) = state.log.checkpoint_high_watermark().await
        {
            // From a capped role on, a restart must find the HW on disk, not take the log end.
            tracing::warn!(topic = %state.topic, partition = state.index, error = %e, "cannot checkpoint the high watermark");
        }
        match transition {
            Transition::Unchanged => {}
            Transition::BecameLeader { epoch } => {
                self.unfollow(state.topic_id, state.index);
                let start = state.log.log_end_offset();
                if let Err(e) = state.log.assign_epoch(epoch, start).await {
                    // In memory it holds (followers asking OffsetForLeaderEpoch get the right
                    // answer now); the file catches up with the next epoch change or start.
                    tracing::error!(topic = %state.topic, partition = state.index, epoch, error = %e, "cannot persist the new leader epoch");
                }
                tracing::info!(topic = %state.topic, partition = state.index, epoch, log_end = start, "leading partition");
            }
            Transition::Follow { leader, epoch } => match addr {
                Some(addr) => {
                    tracing::info!(topic = %state.topic, partition = state.index, leader, epoch, "following partition");
                    self.follow(state, leader, epoch, addr);
                }
                None => {
                    tracing::warn!(topic = %state.topic, partition = state.index, leader, "leader has no known address; not fetching until it registers");
                    self.unfollow(state.topic_id, state.index);
                }
            },
            Transition::Stop => {
                tracing::info!(topic = %state.topic, partition = state.index, "partition has no leader; waiting");
                self.unfollow(state.topic_id, state.index);
            }
        }
    }

    /// Whether `state` is in `leader`'s fetcher at `addr`.
    fn following(&self, state: &PartitionState, leader: i32, addr: &str) -> bool {
        self.fetchers()
            .get(&leader)
            .is_some_and(|f| f.addr() == addr && f.contains(state.topic_id, state.index))
    }

    fn follow(&self, state: &Arc<PartitionState>, leader: i32, epoch: i32, addr: String) {
        self.unfollow(state.topic_id, state.index);
        let mut fetchers = self.fetchers();
        let moved = match fetchers.get(&leader) {
            Some(f) if f.addr() != addr => {
                // The leader moved: its other partitions move with it (each starts again with
                // its truncation step).
                let entries = f.drain();
                fetchers.remove(&leader);
                entries
            }
            _ => Vec::new(),
        };
        let fetcher = fetchers
            .entry(leader)
            .or_insert_with(|| Fetcher::start(leader, addr, self.settings.fetch.clone()));
        for (other, other_epoch) in moved {
            fetcher.add(other, other_epoch);
        }
        fetcher.add(state.clone(), epoch);
    }

    fn unfollow(&self, topic_id: Uuid, index: i32) {
        let mut fetchers = self.fetchers();
        let idle: Vec<i32> = fetchers
            .iter()
            .filter(|(_, f)| f.contains(topic_id, index))
            .filter_map(|(leader, f)| f.remove(topic_id, index).then_some(*leader))
            .collect();
        for leader in idle {
            // Dropping the fetcher stops its task.
            fetchers.remove(&leader);
        }
    }

    /// Every led partition's ISR shrink, if due.
    pub fn lagging(&self, now: Instant) -> Vec<IsrChange> {
        let states: Vec<_> = self.states().values().cloned().collect();
        states
            .iter()
            .filter_map(|s| s.lagging(now, self.settings.lag_ms_max))
            .collect()
    }

    /// Writes every partition's high watermark checkpoint (cheap when unchanged).
    pub async fn checkpoint(&self) {
        let states: Vec<_> = self.states().values().cloned().collect();
        for s in states {
            if let Err(e) = s.log.checkpoint_high_watermark().await {
                tracing::warn!(topic = %s.topic, partition = s.index, error = %e, "cannot checkpoint the high watermark");
            }
        }
    }

    /// The state of a hosted partition.
    pub fn state(&self, topic_id: Uuid, index: i32) -> Option<Arc<PartitionState>> {
        self.states().get(&(topic_id, index)).cloned()
    }

    /// Stops every fetcher (shutdown).
    pub fn stop(&self) {
        self.fetchers().clear();
    }
}
