//! replica: Kafka's leader/follower replication of partitions between brokers.
//!
//! Every partition a node hosts has a [`PartitionState`]: its role (leader, follower, or waiting
//! for a leader) as the committed metadata image assigns it, and on a leader each follower's
//! progress. The flow, for one acks=all record on an RF=3 partition:
//!
//! ```text
//! produce ─► leader log (append, fsync) ─► durable end moves
//!   followers' fetchers (`fetcher`) ─► Fetch(replica_id) ─► leader answers from its durable end
//!   follower appends the batches byte for byte, fsyncs, fetches again from its new log end
//!   leader: that fetch offset is the follower's durable end ─► HW = min over the ISR ─► ack
//! ```
//!
//! The high watermark counts a replica only for records it has made durable under its flush
//! policy, so acks=all survives a power cut of every node at once. ISR changes are proposed to
//! the controller ([`IsrChange`], committed as `AlterPartition` with the partition epoch, so a
//! stale leader's decision is refused). Followers truncate to the leader's epoch boundary
//! (OffsetForLeaderEpoch) before fetching, so logs never diverge.
//!
//! Layering: `broker` owns the states and calls down into this module; this module calls
//! `log` and `client`, never `broker` or `meta` (proposals leave through a channel).

pub mod fetcher;
mod leader;
pub mod manager;
pub mod settings;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::log;
pub use leader::Progress;
pub use manager::Manager;

/// Most replicas one partition may have: the bound the metadata image enforces on placement.
pub const REPLICAS_MAX: usize = crate::meta::image::REPLICAS_MAX;

/// A partition's replica or ISR set: broker ids, fixed capacity, kept inline.
pub type ReplicaIds = heapless::Vec<i32, REPLICAS_MAX>;

/// `ids` as a [`ReplicaIds`]; ids past [`REPLICAS_MAX`] are dropped (the controller refuses
/// larger replication factors, so only a corrupt image could have them).
pub fn replica_ids(ids: &[i32]) -> ReplicaIds {
    ids.iter().take(REPLICAS_MAX).copied().collect()
}

/// One partition's placement and leadership as the committed image has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// -1: no leader right now.
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: ReplicaIds,
    pub isr: ReplicaIds,
}

/// What this node is for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opened, but no image applied yet: serves nothing, holds its high watermark.
    Unassigned,
    Leader {
        epoch: i32,
    },
    Follower {
        leader: i32,
        epoch: i32,
    },
    /// The partition has no leader (every ISR member is down): wait.
    Leaderless {
        epoch: i32,
    },
}

/// What [`PartitionState::apply`] changed, for the caller to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    /// Record the new epoch's start in the log (`assign_epoch`) before serving.
    BecameLeader {
        epoch: i32,
    },
    /// Fetch from `leader` at `epoch` (after truncating to its epoch boundary).
    Follow {
        leader: i32,
        epoch: i32,
    },
    /// Stop fetching: no leader to follow.
    Stop,
}

/// Why an ISR change is proposed (logged with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsrReason {
    /// The follower caught up with the high watermark.
    Expand { replica: i32, offset: i64 },
    /// The followers have not caught up for longer than `replica_lag_ms_max`.
    Shrink { replicas: ReplicaIds, lag_ms: u64 },
    /// This leader's log failed: leadership moves to `to`.
    StorageFailed { to: i32 },
}

/// An ISR change a leader asks the controller to commit (Kafka's AlterPartition).
#[derive(Clone)]
pub struct IsrChange {
    pub state: Arc<PartitionState>,
    /// The partition epoch the change was decided at: refused if the partition moved on.
    pub partition_epoch: i32,
    pub leader: i32,
    pub replicas: ReplicaIds,
    pub isr: ReplicaIds,
    pub reason: IsrReason,
}

/// Why a follower's fetch is refused by the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowerFetchError {
    /// This node does not lead the partition (NOT_LEADER_OR_FOLLOWER).
    NotLeader,
    /// The fetching broker holds no replica of the partition (NOT_LEADER_OR_FOLLOWER, as Kafka).
    NotAReplica,
}

/// Why an acks=all produce could not be answered with success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    /// The request's timeout passed before the ISR had the records (REQUEST_TIMED_OUT).
    TimedOut,
    /// Leadership moved while waiting (NOT_LEADER_OR_FOLLOWER): the records may be truncated.
    NotLeader,
}

struct Inner {
    role: Role,
    /// None until an image is applied (and on a node without a quorum).
    assignment: Option<Assignment>,
    /// On a leader: one entry per other replica.
    followers: heapless::Vec<Progress, REPLICAS_MAX>,
    /// An ISR change proposed and not yet seen in an image.
    pending: Option<leader::Pending>,
    /// The log end offset when this node became leader (Kafka's leader epoch start offset): a
    /// follower joins the ISR only once past it.
    epoch_start: i64,
    /// After the controller refused a change (or could not be reached): no new proposal before.
    retry_at: Option<Instant>,
}

/// Pause after a refused or failed ISR change before the leader proposes another: the refusal
/// (a follower not eligible, a stale epoch) holds until the image changes.
pub const ISR_CHANGE_RETRY_MS: u64 = 1_000;

/// One hosted partition's replication state. Shared by the data path (produce, fetch), the
/// follower fetcher and the image follower; cheap to consult (one short mutex).
pub struct PartitionState {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    pub log: Arc<log::Partition>,
    /// This node's broker id.
    me: i32,
    /// The partition's min.insync.replicas in force (topic config, else the node default).
    min_isr: AtomicI32,
    inner: Mutex<Inner>,
    /// Bumped on every role or epoch change: waiters for the HW wake and re-check.
    generation: watch::Sender<u64>,
    /// Held while a role changes, and by whoever stages a write that is only valid in the
    /// current role (a leader's produce, a follower's append or truncation): a write never
    /// lands after its role has gone.
    transition: tokio::sync::Mutex<()>,
}

impl PartitionState {
    pub fn new(
        topic: &str,
        topic_id: Uuid,
        index: i32,
        log: Arc<log::Partition>,
        me: i32,
    ) -> PartitionState {
        let (generation, _) = watch::channel(0);
        PartitionState {
            topic: topic.to_string(),
            topic_id,
            index,
            log,
            me,
            min_isr: AtomicI32::new(1),
            inner: Mutex::new(Inner {
                role: Role::Unassigned,
                assignment: None,
                followers: heapless::Vec::new(),
                pending: None,
                epoch_start: 0,
                retry_at: None,
            }),
            generation,
            transition: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A node without a metadata quorum leads every partition alone, at epoch 0: the HW is the
    /// durable end, as on a single node.
    pub fn lead_alone(&self) {
        let mut inner = self.lock();
        inner.role = Role::Leader { epoch: 0 };
        inner.assignment = None;
        inner.followers.clear();
        inner.pending = None;
        self.log.set_high_watermark_cap(i64::MAX);
        drop(inner);
        self.bump();
    }

    pub fn role(&self) -> Role {
        self.lock().role
    }

    /// The leader epoch if this node leads the partition.
    pub fn leading(&self) -> Option<i32> {
        match self.lock().role {
            Role::Leader { epoch } => Some(epoch),
            _ => None,
        }
    }

    pub fn assignment(&self) -> Option<Assignment> {
        self.lock().assignment.clone()
    }

    /// On a leader: where its epoch's records start (its log end when it took over). Until its
    /// high watermark reaches this, it cannot tell consumers where the log ends (Kafka's
    /// OFFSET_NOT_AVAILABLE).
    pub fn epoch_start(&self) -> Option<i64> {
        let inner = self.lock();
        matches!(inner.role, Role::Leader { .. }).then_some(inner.epoch_start)
    }

    /// On a leader: how far `follower`'s durable log reaches (-1 unknown or not a follower).
    pub fn follower_end(&self, follower: i32) -> i64 {
        self.lock()
            .followers
            .iter()
            .find(|p| p.id == follower)
            .map_or(-1, |p| p.end)
    }

    pub fn set_min_isr(&self, min: i32) {
        self.min_isr.store(min.max(1), Ordering::Release);
    }

    pub fn min_isr(&self) -> i32 {
        self.min_isr.load(Ordering::Acquire)
    }

    /// The committed ISR's size (1 without a quorum).
    pub fn isr_len(&self) -> usize {
        self.lock().assignment.as_ref().map_or(1, |a| a.isr.len())
    }

    /// The lock a role-dependent write holds while it checks the role and stages.
    pub async fn hold(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.transition.lock().await
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Applies the committed image's view of the partition. Call with [`PartitionState::hold`]
    /// held, then act on the transition (a new leader records its epoch's start in the log
    /// before serving).
    pub fn apply(&self, a: Assignment, now: Instant) -> Transition {
        let role = if a.leader == self.me {
            Role::Leader {
                epoch: a.leader_epoch,
            }
        } else if a.leader < 0 {
            Role::Leaderless {
                epoch: a.leader_epoch,
            }
        } else {
            Role::Follower {
                leader: a.leader,
                epoch: a.leader_epoch,
            }
        };
        let mut inner = self.lock();
        if inner
            .pending
            .as_ref()
            .is_some_and(|p| p.partition_epoch != a.partition_epoch)
        {
            // The image moved past the epoch the change was decided at: committed or refused,
            // either way the image is now the truth.
            inner.pending = None;
        }
        let changed = inner.role != role;
        let transition = match role {
            Role::Leader { epoch } => {
                if changed {
                    inner.epoch_start = self.log.log_end_offset();
                    inner.followers = leader::fresh_followers(&a.replicas, self.me, now);
                    inner.pending = None;
                } else {
                    leader::keep_followers(&mut inner.followers, &a.replicas, self.me, now);
                }
                if changed {
                    Transition::BecameLeader { epoch }
                } else {
                    Transition::Unchanged
                }
            }
            Role::Follower { leader, epoch } => {
                inner.followers.clear();
                inner.pending = None;
                if changed {
                    Transition::Follow { leader, epoch }
                } else {
                    Transition::Unchanged
                }
            }
            Role::Leaderless { .. } | Role::Unassigned => {
                inner.followers.clear();
                inner.pending = None;
                if changed {
                    Transition::Stop
                } else {
                    Transition::Unchanged
                }
            }
        };
        inner.role = role;
        inner.assignment = Some(a);
        let cap = match role {
            Role::Leader { .. } => leader::cap(&inner, self.me),
            // A follower's HW comes from its leader's fetch answers; until then it stays.
            _ => self.log.high_watermark(),
        };
        // Set under the state lock: a cap computed for an older role or progress never lands
        // after a newer one (the log never calls back into this layer, so the order is safe).
        if changed || matches!(role, Role::Leader { .. }) {
            self.log.set_high_watermark_cap(cap);
        }
        drop(inner);
        if changed {
            self.bump();
        }
        transition
    }

    /// A follower's fetch reached this leader: records its progress (its fetch offset is its
    /// durable log end: followers fetch again only once their last append is durable), moves
    /// the HW, and proposes adding it to the ISR once it has caught up.
    pub fn on_follower_fetch(
        self: &Arc<Self>,
        follower: i32,
        fetch_offset: i64,
        now: Instant,
    ) -> Result<Option<IsrChange>, FollowerFetchError> {
        let mut inner = self.lock();
        // A follower can only ever read to this leader's durable end: caught up means that.
        let leader_end = self.log.durable_end();
        let hw = self.log.high_watermark();
        let Role::Leader { .. } = inner.role else {
            return Err(FollowerFetchError::NotLeader);
        };
        let Some(progress) = inner.followers.iter_mut().find(|p| p.id == follower) else {
            return Err(FollowerFetchError::NotAReplica);
        };
        progress.fetched(fetch_offset, leader_end, now);
        // The expansion first: a member being added counts for the cap at once (KIP-497), and
        // the cap is set before the lock goes, so no older cap overwrites it.
        let change = leader::expansion(&mut inner, self.me, follower, fetch_offset, hw, now);
        let cap = leader::cap(&inner, self.me);
        self.log.set_high_watermark_cap(cap);
        drop(inner);
        Ok(change.map(|proposal| self.change(proposal)))
    }

    /// An ISR change of this leader's, to propose.
    fn change(self: &Arc<Self>, proposal: leader::Proposal) -> IsrChange {
        let (partition_epoch, replicas, isr, reason) = proposal;
        IsrChange {
            state: self.clone(),
            partition_epoch,
            leader: self.me,
            replicas,
            isr,
            reason,
        }
    }

    /// On a leader: the ISR members that have not caught up for longer than `lag_ms_max`, as
    /// an ISR shrink to propose (None if all keep up or a change is already in flight).
    pub fn lagging(self: &Arc<Self>, now: Instant, lag_ms_max: u64) -> Option<IsrChange> {
        let proposal = leader::shrink(&mut self.lock(), self.me, now, lag_ms_max)?;
        Some(self.change(proposal))
    }

    /// On a leader whose log failed (a full or broken disk): a change handing leadership to
    /// `to`, an ISR member, and leaving the ISR, so the partition is served elsewhere instead of
    /// failing every write. None when `to` is not in the ISR or a change is in flight.
    pub fn hand_over(self: &Arc<Self>, to: i32, now: Instant) -> Option<IsrChange> {
        let mut inner = self.lock();
        let (partition_epoch, replicas, isr) = leader::hand_over(&mut inner, self.me, to, now)?;
        drop(inner);
        Some(IsrChange {
            state: self.clone(),
            partition_epoch,
            leader: to,
            replicas,
            isr,
            reason: IsrReason::StorageFailed { to },
        })
    }

    /// The controller refused (or never committed) the change decided at `partition_epoch`:
    /// forget it so the next check may propose again.
    pub fn abandon_pending(&self, partition_epoch: i32) {
        let mut inner = self.lock();
        if inner
            .pending
            .as_ref()
            .is_some_and(|p| p.partition_epoch == partition_epoch)
        {
            inner.pending = None;
            inner.retry_at =
                Some(Instant::now() + std::time::Duration::from_millis(ISR_CHANGE_RETRY_MS));
            if let Role::Leader { .. } = inner.role {
                self.log
                    .set_high_watermark_cap(leader::cap(&inner, self.me));
            }
        }
    }

    /// On a follower at `epoch`: the leader's high watermark from a fetch answer. Ignored if
    /// the role moved on meanwhile.
    pub fn follower_high_watermark(&self, epoch: i32, leader_hw: i64) {
        let inner = self.lock();
        if matches!(inner.role, Role::Follower { epoch: e, .. } if e == epoch) {
            self.log.set_high_watermark_cap(leader_hw);
        }
    }

    /// Each follower's progress as this leader sees it (empty on a follower).
    pub fn progress(&self) -> Vec<Progress> {
        self.lock().followers.to_vec()
    }

    /// Waits until the high watermark reaches `end` while this node still leads at `epoch`
    /// (acks=all), or until `deadline`.
    pub async fn wait_replicated(
        &self,
        end: i64,
        epoch: i32,
        deadline: Instant,
    ) -> Result<(), WaitError> {
        let mut hw = self.log.subscribe();
        let mut generation = self.generation.subscribe();
        loop {
            if self.leading() != Some(epoch) {
                return Err(WaitError::NotLeader);
            }
            if *hw.borrow_and_update() >= end {
                return Ok(());
            }
            tokio::select! {
                changed = hw.changed() => if changed.is_err() { return Err(WaitError::NotLeader) },
                _ = generation.changed() => {}
                () = tokio::time::sleep_until(deadline) => {
                    return if self.log.high_watermark() >= end && self.leading() == Some(epoch) {
                        Ok(())
                    } else {
                        Err(WaitError::TimedOut)
                    };
                }
            }
        }
    }
}
