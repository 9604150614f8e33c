//! meta::quorum::lease: how long this node may trust its own metadata image to say that it still
//! holds something the controller could have given to another node while it was not looking:
//! a group coordinator answering from its cache (`group::Coordinator::owns`).
//!
//! Why it is needed: a node paused (SIGSTOP, a stalled SD card) or cut off from the controller
//! for longer than `broker_session_timeout_ms` is fenced and its leaderships move; until it has
//! heard of that it would answer OffsetFetch from its stale cache, and a consumer would see the
//! group's committed offsets move backwards (found by tests/compat/test_nemesis.py; reproduced by
//! tests/compat/test_deposed_coordinator.py).
//!
//! The rule: the controller fences a broker only once it has not heard from it for a whole
//! session (`Quorum::controller_loop`; a new controller first gives every broker one whole
//! session), so from the moment this node *sent* a heartbeat that the controller acknowledged,
//! it cannot be fenced for `session_timeout`. An acknowledgement counts only:
//! - when the controller answering it was surely still the controller: a heartbeat round to a
//!   quorum confirmed its leadership after the heartbeat arrived (openraft's read index);
//! - once this node's image has applied up to that read index, or the controller's last logged
//!   entry if higher (`applied`: everything committed before the answer, and a fencing whose
//!   commit was still under way), so a fencing and the moves it caused are seen first;
//! - and not while the controller is committing this node's fencing (it found the node stale
//!   before this heartbeat arrived: the answer is then "unavailable", and the next one's index
//!   covers the fencing).
//!
//! Leaderships can also move away from a live, unfenced node (a preferred-leader election); the
//! lease does not cover that window, as Kafka's coordinator does not.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::Quorum;

/// Acknowledgements kept while this node's image catches up with them; a newer one pushes out
/// the oldest (each later one carries a later `sent` anyway).
const PENDING_MAX: usize = 8;

/// One acknowledged heartbeat: when it was sent, and the log index this node's image must have
/// applied before it counts (`confirmed_grant_index`; `None`: nothing to wait for, an older
/// controller's plain acknowledgement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub sent: Instant,
    pub applied: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    /// Send time of the newest grant whose index this node has applied.
    granted: Option<Instant>,
    /// Grants whose index this node has not applied yet, oldest first.
    pending: VecDeque<Grant>,
}

/// This node's lease (see the module comment).
#[derive(Debug, Default)]
pub struct Lease {
    state: Mutex<State>,
}

impl Lease {
    /// Records an acknowledged heartbeat.
    pub fn renew(&self, grant: Grant) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.pending.len() == PENDING_MAX {
            s.pending.pop_front();
        }
        s.pending.push_back(grant);
    }

    /// Whether the lease holds at `now`, lasting `duration` from the send time of the newest
    /// grant this node has caught up with (`applied`: its image's last applied log index).
    pub fn holds(&self, now: Instant, duration: Duration, applied: Option<u64>) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let caught_up = |g: &Grant| match g.applied {
            None => true,
            Some(need) => applied.is_some_and(|have| have >= need),
        };
        // The newest grant caught up counts (grants are kept in send order), and the older ones
        // go with it. Indexes usually grow with the send time, but not always: a grant naming
        // an entry a deposed controller had logged and its successor dropped never catches up,
        // and must not keep a later grant from counting.
        if let Some(newest) = s.pending.iter().rposition(caught_up) {
            let sent = s.pending[newest].sent;
            s.pending.drain(..=newest);
            s.granted = Some(s.granted.map_or(sent, |t| t.max(sent)));
        }
        s.granted.is_some_and(|sent| now < sent + duration)
    }
}

impl Quorum {
    /// Leader side: confirms with a fresh heartbeat round that a quorum still follows this
    /// leader and that the first entry of its term is applied here (openraft's
    /// `ensure_linearizable`, a lone voter being its own quorum), then returns the index a
    /// broker must apply before the grant counts: the read index (every entry committed before
    /// the call is at or below it) or, if higher, the last entry this leader has logged, even
    /// one whose disk write is still stalled (`LogStore::submitted`; Raft's metrics are only
    /// published after). Waiting for the term's first entry makes grants safe to compare by
    /// index: no later leader can commit an older entry this one did not have. `None`: not
    /// confirmed within the election timeout (maybe no longer the controller).
    pub(super) async fn confirmed_grant_index(&self) -> Option<u64> {
        let confirm = self.raft.ensure_linearizable();
        let read_index = match tokio::time::timeout(self.timing.election_timeout_min, confirm).await
        {
            Ok(Ok(read_log_id)) => read_log_id.map_or(0, |l| l.index),
            _ => return None,
        };
        // A fencing of the broker whose write timed out (its `fencing` mark cleared) may still
        // commit after the grant: the broker waits for it too.
        let logged = self.logged.load(std::sync::atomic::Ordering::Acquire);
        Some(read_index.max(logged))
    }

    /// Whether the controller is committing `node_id`'s fencing right now.
    pub(super) fn being_fenced(&self, node_id: i32) -> bool {
        self.fencing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&node_id)
    }

    /// The last log index applied to this node's image.
    pub(super) fn applied_index(&self) -> Option<u64> {
        self.raft.metrics().borrow().last_applied.map(|l| l.index)
    }

    /// Whether this node's lease holds now (`MetadataClient::lease_holds`).
    pub(super) fn lease_holds_now(&self) -> bool {
        self.lease.holds(
            Instant::now(),
            self.timing.session_timeout,
            self.applied_index(),
        )
    }
}

#[cfg(test)]
mod tests {
    //! The lease on made-up grants and clocks (tokio's Instant, no runtime needed).
    use super::*;

    const SESSION: Duration = Duration::from_millis(2_000);

    /// A grant sent at `sent` that counts once this node applied `applied`.
    fn grant(sent: Instant, applied: u64) -> Grant {
        Grant {
            sent,
            applied: Some(applied),
        }
    }

    #[test]
    fn no_grant_no_lease() {
        let lease = Lease::default();
        assert!(!lease.holds(Instant::now(), SESSION, Some(10)));
    }

    #[test]
    fn a_grant_lasts_a_session_from_its_send_time() {
        let lease = Lease::default();
        let t0 = Instant::now();
        lease.renew(grant(t0, 5));
        assert!(lease.holds(t0 + Duration::from_millis(1_999), SESSION, Some(5)));
        assert!(!lease.holds(t0 + SESSION, SESSION, Some(5)));
    }

    #[test]
    fn a_grant_counts_only_once_the_image_caught_up_with_it() {
        // A node back from a long pause: its old grant has lapsed, the new one names an index its
        // image has not applied (the fencing and the moves of its leaderships).
        let lease = Lease::default();
        let t0 = Instant::now();
        lease.renew(grant(t0, 5));
        assert!(lease.holds(t0, SESSION, Some(5)));
        let back = t0 + Duration::from_secs(5);
        lease.renew(grant(back, 9));
        assert!(!lease.holds(back, SESSION, Some(5)), "stale image trusted");
        assert!(!lease.holds(back, SESSION, Some(8)));
        assert!(lease.holds(back, SESSION, Some(9)));
    }

    #[test]
    fn an_older_grant_holds_while_a_newer_one_waits() {
        // Metadata churn: the controller is always a little ahead; the lease must not flap.
        let lease = Lease::default();
        let t0 = Instant::now();
        lease.renew(grant(t0, 5));
        assert!(lease.holds(t0, SESSION, Some(5)));
        let t1 = t0 + Duration::from_millis(250);
        lease.renew(grant(t1, 7));
        assert!(lease.holds(t1 + Duration::from_millis(100), SESSION, Some(6)));
        assert!(
            !lease.holds(t0 + SESSION, SESSION, Some(6)),
            "the old grant ran out"
        );
        assert!(
            lease.holds(t0 + SESSION, SESSION, Some(7)),
            "the new one, caught up, holds"
        );
    }

    #[test]
    fn a_grant_without_an_index_counts_at_once() {
        let lease = Lease::default();
        let t0 = Instant::now();
        lease.renew(Grant {
            sent: t0,
            applied: None,
        });
        assert!(lease.holds(t0, SESSION, None));
    }

    #[test]
    fn a_grant_that_never_catches_up_does_not_block_a_later_one() {
        // A deposed controller's grant named an entry its successor dropped (index 12); the new
        // controller's later grant names 10, which this node has applied.
        let lease = Lease::default();
        let t0 = Instant::now();
        lease.renew(grant(t0, 12));
        let t1 = t0 + Duration::from_millis(500);
        lease.renew(grant(t1, 10));
        assert!(lease.holds(t1, SESSION, Some(10)));
        assert!(lease.holds(t1 + Duration::from_millis(1_999), SESSION, Some(10)));
        assert!(!lease.holds(t1 + SESSION, SESSION, Some(11)));
    }

    #[test]
    fn pending_grants_are_bounded() {
        let lease = Lease::default();
        let t0 = Instant::now();
        for i in 0..(PENDING_MAX as u64 * 2) {
            lease.renew(grant(t0 + Duration::from_millis(i), 100 + i));
        }
        assert!(!lease.holds(t0, SESSION, Some(99)));
        assert!(lease.holds(t0, SESSION, Some(1_000)));
    }
}
