//! replica::leader: what a leader knows of its followers, and the rules it decides by — the
//! high watermark's cap, when a follower joins the ISR, when it leaves. Pure functions over
//! the partition's state (no I/O), so the rules are tested directly.
//!
//! Kafka's rules (KIP-497 for the "maximal ISR"): the HW counts the committed ISR plus a
//! member whose addition is in flight, and keeps counting a member whose removal is in flight,
//! so the HW never passes records a replica the controller may still count on lacks. A
//! follower is caught up at a fetch whose offset reaches the leader's log end at that moment,
//! or the log end at its previous fetch (it fetched everything there was then).

use tokio::time::Instant;

use super::{Inner, IsrReason, REPLICAS_MAX, ReplicaIds, Role};

/// One follower's progress as its leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub id: i32,
    /// Its durable log end offset (its last fetch offset); -1 until it fetches.
    pub end: i64,
    /// When it last had everything the leader had.
    pub caught_up_at: Instant,
    /// The leader's log end at its previous fetch (-1 before one).
    last_fetch_leader_end: i64,
    last_fetch_at: Option<Instant>,
}

impl Progress {
    fn new(id: i32, now: Instant) -> Progress {
        Progress {
            id,
            end: -1,
            caught_up_at: now,
            last_fetch_leader_end: -1,
            last_fetch_at: None,
        }
    }

    /// A fetch at `offset` while the leader's log ends at `leader_end`.
    pub(super) fn fetched(&mut self, offset: i64, leader_end: i64, now: Instant) {
        if offset > leader_end {
            // Ahead of the leader: a diverged log the follower must truncate first. Nothing it
            // holds past our end counts.
            return;
        }
        self.end = offset;
        if offset >= leader_end {
            self.caught_up_at = now;
        } else if let Some(at) = self.last_fetch_at
            && offset >= self.last_fetch_leader_end
        {
            self.caught_up_at = self.caught_up_at.max(at);
        }
        self.last_fetch_leader_end = leader_end;
        self.last_fetch_at = Some(now);
    }

    /// How long since it last caught up.
    pub fn lag_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.caught_up_at).as_millis())
            .unwrap_or(u64::MAX)
    }
}

/// An ISR change in flight: the set proposed and the partition epoch it was decided at.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub isr: ReplicaIds,
    pub partition_epoch: i32,
}

/// Progress entries for a new leader: every other replica, unknown, caught up as of now (so
/// none is dropped from the ISR before it had the chance to fetch).
pub(super) fn fresh_followers(
    replicas: &ReplicaIds,
    me: i32,
    now: Instant,
) -> heapless::Vec<Progress, REPLICAS_MAX> {
    replicas
        .iter()
        .filter(|id| **id != me)
        .map(|id| Progress::new(*id, now))
        .collect()
}

/// Keeps the progress of replicas still assigned, adds new ones.
pub(super) fn keep_followers(
    followers: &mut heapless::Vec<Progress, REPLICAS_MAX>,
    replicas: &ReplicaIds,
    me: i32,
    now: Instant,
) {
    followers.retain(|p| replicas.contains(&p.id));
    for id in replicas.iter().filter(|id| **id != me) {
        if !followers.iter().any(|p| p.id == *id) {
            // Capacity: replicas has at most REPLICAS_MAX ids, one of them this node.
            let _ = followers.push(Progress::new(*id, now));
        }
    }
}

/// The ISR the high watermark counts: committed, plus an addition in flight.
fn maximal_isr(inner: &Inner) -> ReplicaIds {
    let mut isr = inner
        .assignment
        .as_ref()
        .map(|a| a.isr.clone())
        .unwrap_or_default();
    if let Some(p) = &inner.pending {
        for id in &p.isr {
            if !isr.contains(id) {
                let _ = isr.push(*id);
            }
        }
    }
    isr
}

/// The HW's cap on a leader: the least durable end over the other members of the maximal ISR
/// (-1 while one has not fetched yet), i64::MAX when the leader is alone in it.
pub(super) fn cap(inner: &Inner, me: i32) -> i64 {
    maximal_isr(inner)
        .iter()
        .filter(|id| **id != me)
        .map(|id| {
            inner
                .followers
                .iter()
                .find(|p| p.id == *id)
                .map_or(-1, |p| p.end)
        })
        .min()
        .unwrap_or(i64::MAX)
}

/// Whether a leader may propose an ISR change now: none in flight, none refused just now.
fn may_propose(inner: &Inner, now: Instant) -> bool {
    matches!(inner.role, Role::Leader { .. })
        && inner.pending.is_none()
        && inner.retry_at.is_none_or(|at| now >= at)
}

/// What a proposal carries: partition epoch, replicas, new ISR, reason.
pub(super) type Proposal = (i32, ReplicaIds, ReplicaIds, IsrReason);

/// After `follower` fetched at `offset`: an ISR addition when it is out of the ISR and has
/// caught up with the HW and with this leader's epoch start (Kafka's rule), and no change is in
/// flight.
pub(super) fn expansion(
    inner: &mut Inner,
    me: i32,
    follower: i32,
    offset: i64,
    hw: i64,
    now: Instant,
) -> Option<Proposal> {
    if !may_propose(inner, now) {
        return None;
    }
    let a = inner.assignment.as_ref()?;
    if follower == me || a.isr.contains(&follower) || !a.replicas.contains(&follower) {
        return None;
    }
    if offset < hw || offset < inner.epoch_start {
        return None;
    }
    let mut isr = a.isr.clone();
    isr.push(follower).ok()?;
    // The preferred order (replica order) reads best in Metadata and logs.
    let order = |id: &i32| {
        a.replicas
            .iter()
            .position(|r| r == id)
            .unwrap_or(REPLICAS_MAX)
    };
    isr.sort_unstable_by_key(order);
    let proposal = (
        a.partition_epoch,
        a.replicas.clone(),
        isr.clone(),
        IsrReason::Expand {
            replica: follower,
            offset,
        },
    );
    inner.pending = Some(Pending {
        isr,
        partition_epoch: a.partition_epoch,
    });
    Some(proposal)
}

/// An ISR shrink dropping the members that have not caught up for more than `lag_ms_max`
/// (never the leader), when no change is in flight.
pub(super) fn shrink(
    inner: &mut Inner,
    me: i32,
    now: Instant,
    lag_ms_max: u64,
) -> Option<Proposal> {
    if !may_propose(inner, now) {
        return None;
    }
    let a = inner.assignment.as_ref()?;
    let mut out = ReplicaIds::new();
    let mut worst = 0u64;
    for p in &inner.followers {
        let lag = p.lag_ms(now);
        if a.isr.contains(&p.id) && lag > lag_ms_max {
            let _ = out.push(p.id);
            worst = worst.max(lag);
        }
    }
    if out.is_empty() {
        return None;
    }
    let isr: ReplicaIds = a
        .isr
        .iter()
        .copied()
        .filter(|id| *id == me || !out.contains(id))
        .collect();
    let proposal = (
        a.partition_epoch,
        a.replicas.clone(),
        isr.clone(),
        IsrReason::Shrink {
            replicas: out,
            lag_ms: worst,
        },
    );
    inner.pending = Some(Pending {
        isr,
        partition_epoch: a.partition_epoch,
    });
    Some(proposal)
}

/// A leader handing over to `to` (an ISR member) and leaving the ISR: (partition epoch,
/// replicas, new ISR), when no change is in flight.
pub(super) fn hand_over(
    inner: &mut Inner,
    me: i32,
    to: i32,
    now: Instant,
) -> Option<(i32, ReplicaIds, ReplicaIds)> {
    if !may_propose(inner, now) {
        return None;
    }
    let a = inner.assignment.as_ref()?;
    if to == me || !a.isr.contains(&to) {
        return None;
    }
    let isr: ReplicaIds = a.isr.iter().copied().filter(|id| *id != me).collect();
    let out = (a.partition_epoch, a.replicas.clone(), isr);
    inner.pending = Some(Pending {
        isr: a.isr.clone(),
        partition_epoch: a.partition_epoch,
    });
    Some(out)
}
