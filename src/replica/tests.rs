//! replica::tests: a leader's rules on a real partition log — the high watermark waits for
//! every ISR member's durable end, followers join the ISR once caught up and leave it when they
//! lag, an in-flight change keeps counting the member it concerns, and acks=all waits for the
//! HW and gives up when leadership moves or the deadline passes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use uuid::Uuid;

use super::*;
use crate::io::{DiskWriter, WriterConfig};
use crate::log::{LogConfig, Partition};
use crate::protocol::batch::test_batches::batch;

const ME: i32 = 1;
const LAG_MS_MAX: u64 = 1_000;

fn open(dir: &std::path::Path) -> Arc<Partition> {
    let writer = DiskWriter::start(WriterConfig::new(dir)).expect("start writer");
    Arc::new(Partition::open(dir, LogConfig::default(), writer).expect("open partition"))
}

pub(super) fn state(dir: &std::path::Path) -> Arc<PartitionState> {
    Arc::new(PartitionState::new("t", Uuid::new_v4(), 0, open(dir), ME))
}

fn assignment(leader: i32, epoch: i32, partition_epoch: i32, isr: &[i32]) -> Assignment {
    Assignment {
        leader,
        leader_epoch: epoch,
        partition_epoch,
        replicas: replica_ids(&[1, 2, 3]),
        isr: replica_ids(isr),
    }
}

async fn append(s: &PartitionState, records: usize) -> i64 {
    let epoch = s.leading().expect("leads");
    let info = s
        .log
        .append(Bytes::from(batch(records, 1_000, 10)), epoch)
        .await
        .expect("append");
    info.last_offset + 1
}

// Proves the HW is the least durable end over the ISR: it does not move past what the slowest
// member fetched, and a member that has not fetched yet holds it where it is.
#[tokio::test]
async fn high_watermark_waits_for_every_isr_member() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    let now = Instant::now();
    assert_eq!(
        s.apply(assignment(ME, 1, 0, &[1, 2, 3]), now),
        Transition::BecameLeader { epoch: 1 }
    );
    // Two batches: the HW moves batch by batch (it never lands inside one).
    assert_eq!(append(&s, 4).await, 4);
    let end = append(&s, 6).await;
    assert_eq!(end, 10);
    assert_eq!(s.log.high_watermark(), 0, "no follower has fetched yet");
    s.on_follower_fetch(2, 10, now).unwrap();
    assert_eq!(s.log.high_watermark(), 0, "replica 3 has not fetched");
    s.on_follower_fetch(3, 4, now).unwrap();
    assert_eq!(s.log.high_watermark(), 4);
    s.on_follower_fetch(3, 10, now).unwrap();
    assert_eq!(s.log.high_watermark(), 10);
    // A fetch past the leader's end (a diverged follower) counts for nothing.
    s.on_follower_fetch(2, 99, now).unwrap();
    assert_eq!(s.progress().iter().find(|p| p.id == 2).unwrap().end, 10);
    assert!(matches!(
        s.on_follower_fetch(7, 10, now),
        Err(FollowerFetchError::NotAReplica)
    ));
}

// Proves a follower outside the ISR is proposed for it once it reaches the HW (not before),
// only once while the change is in flight, and that the in-flight member already counts for
// the HW; the image that commits it ends the pending state.
#[tokio::test]
async fn caught_up_follower_joins_the_isr() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    let now = Instant::now();
    s.apply(assignment(ME, 1, 0, &[1, 2]), now);
    append(&s, 10).await;
    s.on_follower_fetch(2, 10, now).unwrap();
    assert_eq!(s.log.high_watermark(), 10);
    assert!(
        s.on_follower_fetch(3, 5, now).unwrap().is_none(),
        "below the HW"
    );
    let change = s
        .on_follower_fetch(3, 10, now)
        .unwrap()
        .expect("caught up: joins");
    assert_eq!(change.isr.as_slice(), &[1, 2, 3]);
    assert_eq!(change.partition_epoch, 0);
    assert!(matches!(
        change.reason,
        IsrReason::Expand { replica: 3, .. }
    ));
    assert!(
        s.on_follower_fetch(3, 10, now).unwrap().is_none(),
        "one change in flight at a time"
    );
    // The maximal ISR counts replica 3 already: the HW waits for it.
    append(&s, 5).await;
    s.on_follower_fetch(2, 15, now).unwrap();
    assert_eq!(s.log.high_watermark(), 10);
    s.on_follower_fetch(3, 15, now).unwrap();
    assert_eq!(s.log.high_watermark(), 15);
    assert_eq!(
        s.apply(assignment(ME, 1, 1, &[1, 2, 3]), now),
        Transition::Unchanged
    );
    assert_eq!(s.isr_len(), 3);
}

// Proves a follower that stops fetching leaves the ISR after the lag time, that the HW keeps
// waiting for it until the shrink is committed, and moves on once it is.
#[tokio::test(start_paused = true)]
async fn lagging_follower_leaves_the_isr() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    let t0 = Instant::now();
    s.apply(assignment(ME, 1, 0, &[1, 2, 3]), t0);
    append(&s, 10).await;
    s.on_follower_fetch(2, 10, t0).unwrap();
    s.on_follower_fetch(3, 10, t0).unwrap();
    assert!(s.lagging(t0, LAG_MS_MAX).is_none());
    append(&s, 10).await;
    let later = t0 + Duration::from_millis(LAG_MS_MAX + 1);
    s.on_follower_fetch(2, 20, later).unwrap();
    let change = s.lagging(later, LAG_MS_MAX).expect("replica 3 lags");
    assert_eq!(change.isr.as_slice(), &[1, 2]);
    assert!(
        matches!(&change.reason, IsrReason::Shrink { replicas, .. } if replicas.as_slice() == [3])
    );
    assert!(s.lagging(later, LAG_MS_MAX).is_none(), "in flight");
    assert_eq!(s.log.high_watermark(), 10, "3 still counts until committed");
    s.apply(assignment(ME, 1, 1, &[1, 2]), later);
    assert_eq!(s.log.high_watermark(), 20);
}

// Proves a follower that keeps fetching but never reaches the log end is still caught up as
// long as each fetch reaches the end the leader had at its previous fetch (Kafka's rule), and
// lags once it falls behind that.
#[tokio::test]
async fn caught_up_time_follows_kafkas_rule() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    let t0 = Instant::now();
    s.apply(assignment(ME, 1, 0, &[1, 2, 3]), t0);
    append(&s, 10).await;
    let step = Duration::from_millis(LAG_MS_MAX / 2);
    // Fetch at 0 while the end is 10; then reach 10 while the end is 20: caught up as of the
    // first fetch.
    s.on_follower_fetch(2, 0, t0).unwrap();
    append(&s, 10).await;
    s.on_follower_fetch(2, 10, t0 + step).unwrap();
    let p = s.progress().into_iter().find(|p| p.id == 2).unwrap();
    assert_eq!(p.caught_up_at, t0);
    s.on_follower_fetch(2, 20, t0 + 2 * step).unwrap();
    let p = s.progress().into_iter().find(|p| p.id == 2).unwrap();
    assert_eq!(p.caught_up_at, t0 + 2 * step);
}

// Proves acks=all waits for the HW, answers NotLeader when leadership moves meanwhile (the
// records may be truncated), and TimedOut at the deadline.
#[tokio::test]
async fn wait_replicated_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    let now = Instant::now();
    s.apply(assignment(ME, 1, 0, &[1, 2]), now);
    let end = append(&s, 3).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move { s.wait_replicated(end, 1, deadline).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished());
    s.on_follower_fetch(2, end, Instant::now()).unwrap();
    assert_eq!(waiter.await.unwrap(), Ok(()));

    let end = append(&s, 3).await;
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move { s.wait_replicated(end, 1, deadline).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.apply(assignment(2, 2, 1, &[2]), Instant::now());
    assert_eq!(waiter.await.unwrap(), Err(WaitError::NotLeader));

    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    s.apply(assignment(ME, 1, 0, &[1, 2]), Instant::now());
    let end = append(&s, 3).await;
    let soon = Instant::now() + Duration::from_millis(50);
    assert_eq!(
        s.wait_replicated(end, 1, soon).await,
        Err(WaitError::TimedOut)
    );
}

// Proves a leader alone in its ISR moves the HW with its own durable end (a single node, or
// RF=1), and a follower's HW is its leader's, never past its own log.
#[tokio::test]
async fn alone_and_follower_high_watermarks() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    s.lead_alone();
    assert_eq!(append(&s, 4).await, 4);
    assert_eq!(s.log.high_watermark(), 4);

    let dir = tempfile::tempdir().unwrap();
    let f = state(dir.path());
    assert_eq!(
        f.apply(assignment(2, 3, 0, &[2, 1]), Instant::now()),
        Transition::Follow {
            leader: 2,
            epoch: 3
        }
    );
    // The leader's batches of 3 and 2 records, at offsets 0 and 3.
    let mut first = batch(3, 1_000, 10);
    crate::protocol::batch::patch_base_offset(&mut first, 0);
    let mut second = batch(2, 1_000, 10);
    crate::protocol::batch::patch_base_offset(&mut second, 3);
    for b in [first, second] {
        f.log
            .append_replica(Bytes::from(b))
            .await
            .unwrap()
            .durable()
            .await
            .unwrap();
    }
    assert_eq!(f.log.high_watermark(), 0);
    f.follower_high_watermark(3, 3);
    assert_eq!(f.log.high_watermark(), 3);
    f.follower_high_watermark(2, 5);
    assert_eq!(
        f.log.high_watermark(),
        3,
        "an answer from an older epoch is ignored"
    );
    f.follower_high_watermark(3, 100);
    assert_eq!(f.log.high_watermark(), 5, "never past its own log");
}

// Proves a failed leader's hand-over names an ISR member as the new leader and leaves the ISR,
// is proposed once while in flight, and never names a replica outside the ISR.
#[tokio::test]
async fn hand_over_goes_to_an_isr_member() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    let now = Instant::now();
    s.apply(assignment(ME, 1, 4, &[1, 2]), now);
    assert!(s.hand_over(3, now).is_none(), "3 is not in the ISR");
    let change = s.hand_over(2, now).expect("2 is in the ISR");
    assert_eq!(change.leader, 2);
    assert_eq!(change.isr.as_slice(), &[2]);
    assert_eq!(change.partition_epoch, 4);
    assert!(matches!(change.reason, IsrReason::StorageFailed { to: 2 }));
    assert!(s.hand_over(2, now).is_none(), "in flight");
    s.abandon_pending(4);
    assert!(
        s.hand_over(2, now).is_none(),
        "refused just now: waits before retrying"
    );
    let later = Instant::now() + Duration::from_millis(ISR_CHANGE_RETRY_MS + 1);
    assert!(s.hand_over(2, later).is_some());
}
