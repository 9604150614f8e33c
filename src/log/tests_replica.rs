//! log::tests_replica: the follower's side of a partition and the high watermark on real files:
//! `append_replica` keeps the leader's bytes, refuses what does not continue the log or fails
//! its checks, feeds the producer state; the HW stays under its cap and only grows; consumer
//! reads stop at the HW while replica reads reach the durable end; the HW checkpoint survives a
//! reopen; retention and compaction stop at the HW.

use std::path::Path;

use bytes::Bytes;

use super::tests::{config, open};
use super::tests_producers::idem;
use super::*;
use crate::protocol::batch::test_batches::batch;

/// One batch of `n` records, 20-byte values, timestamps from now.
pub(super) fn b(n: usize) -> Bytes {
    Bytes::from(batch(n, now_ms(), 20))
}

/// Appends `batches` batches of `n` records each as leader at `epoch`.
pub(super) async fn fill(p: &Partition, batches: usize, n: usize, epoch: i32) {
    for _ in 0..batches {
        p.append(b(n), epoch).await.expect("append");
    }
}

/// Everything a replica fetch returns from `offset` to the durable end, concatenated.
pub(super) async fn replica_bytes(p: &Partition, offset: i64) -> Bytes {
    let mut out = Vec::new();
    let mut next = offset;
    for _ in 0..10_000 {
        if next >= p.durable_end() {
            break;
        }
        let r = p.read_replica(next, 1 << 20).await.expect("read replica");
        let parts = batch::split(&r.records).expect("whole batches");
        let Some((h, _)) = parts.last() else {
            panic!("no progress at {next}")
        };
        next = h.last_offset() + 1;
        out.extend_from_slice(&r.records);
    }
    Bytes::from(out)
}

/// Copies the leader's log from `offset` into the follower, waiting until durable.
pub(super) async fn replicate(leader: &Partition, follower: &Partition, offset: i64) {
    let bytes = replica_bytes(leader, offset).await;
    if bytes.is_empty() {
        return;
    }
    follower
        .append_replica(bytes)
        .await
        .expect("append replica")
        .durable()
        .await
        .expect("durable");
}

/// The whole log's bytes up to the durable end.
pub(super) async fn log_bytes(p: &Partition) -> Bytes {
    replica_bytes(p, p.log_start_offset()).await
}

#[tokio::test]
async fn replica_appends_keep_the_leaders_bytes_offsets_and_epochs() {
    // Proves a follower's log is byte for byte the leader's (offsets and partition leader
    // epochs kept), its LEO and durable end follow, and its epoch cache comes from the batches.
    let (ld, fd) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let leader = open(ld.path(), config());
    let follower = open(fd.path(), config());
    fill(&leader, 3, 2, 4).await;
    fill(&leader, 2, 1, 6).await;
    replicate(&leader, &follower, 0).await;
    assert_eq!(follower.log_end_offset(), 8);
    assert_eq!(follower.durable_end(), 8);
    assert_eq!(log_bytes(&follower).await, log_bytes(&leader).await);
    assert_eq!(follower.epoch_entries(), vec![(4, 0), (6, 6)]);
    assert_eq!(leader.epoch_entries(), vec![(4, 0), (6, 6)]);
}

#[tokio::test]
async fn append_replica_refuses_batches_below_the_log_end_and_corrupt_ones() {
    // Proves the checks: a batch below the LEO is UnexpectedOffset with the LEO expected, a
    // flipped bit is Corrupt, batches that go backwards are refused, and nothing is written
    // by a refused append; a gap forward is accepted.
    let (ld, fd) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let leader = open(ld.path(), config());
    let follower = open(fd.path(), config());
    fill(&leader, 3, 2, 1).await;
    replicate(&leader, &follower, 0).await;
    let again = replica_bytes(&leader, 2).await;
    match follower.append_replica(again).await {
        Err(LogError::UnexpectedOffset {
            expected: 6,
            got: 2,
        }) => {}
        other => panic!("expected UnexpectedOffset, got {:?}", other.map(|_| ())),
    }
    fill(&leader, 2, 1, 1).await;
    let next = replica_bytes(&leader, 6).await;
    let mut flipped = next.to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x10;
    assert!(matches!(
        follower.append_replica(Bytes::from(flipped)).await,
        Err(LogError::Corrupt(_))
    ));
    let parts = batch::split(&next).expect("split");
    let backwards = [&next[parts[1].1.clone()], &next[parts[0].1.clone()]].concat();
    assert!(matches!(
        follower.append_replica(Bytes::from(backwards)).await,
        Err(LogError::UnexpectedOffset { .. })
    ));
    assert_eq!(
        (follower.log_end_offset(), follower.size_bytes()),
        (6, leader.size_bytes() - next.len() as u64),
        "nothing written"
    );
    // A gap forward (a compacted leader's log skips offsets): accepted at its own offsets.
    let mut gap = next[parts[1].1.clone()].to_vec();
    batch::patch_base_offset(&mut gap, 9);
    let info = follower
        .append_replica(Bytes::from(gap))
        .await
        .expect("gap")
        .durable()
        .await
        .expect("durable");
    assert_eq!((info.base_offset, follower.log_end_offset()), (9, 10));
}

#[tokio::test]
async fn a_client_retry_after_failover_is_a_duplicate_with_the_original_offsets() {
    // Proves producer state comes from replicated batches: once the follower leads, the
    // producer's retry of a batch it replicated is answered with the original offsets and not
    // written again.
    let (ld, fd) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let leader = open(ld.path(), config());
    let follower = open(fd.path(), config());
    fill(&leader, 1, 2, 1).await;
    leader.append(idem(3, 42, 0, 0), 1).await.expect("append");
    replicate(&leader, &follower, 0).await;
    follower.assign_epoch(2, 5).await.expect("assign");
    let size = follower.size_bytes();
    match follower.append(idem(3, 42, 0, 0), 2).await {
        Err(LogError::DuplicateSequence { original, .. }) => {
            assert_eq!((original.base_offset, original.last_offset), (2, 4));
        }
        other => panic!("expected a duplicate, got {other:?}"),
    }
    assert_eq!(follower.size_bytes(), size);
    let next = follower.append(idem(1, 42, 0, 3), 2).await.expect("next");
    assert_eq!(next.base_offset, 5, "the next sequence continues");
}

#[tokio::test]
async fn consumer_reads_stop_at_the_capped_hw_and_replica_reads_reach_the_durable_end() {
    // Proves the three positions: with a cap the HW stops at the cap (on a batch boundary),
    // never goes back when the cap drops, consumers (read, ListOffsets) see nothing above it,
    // replica reads do, and subscribers see each move.
    let dir = tempfile::tempdir().expect("tmp");
    let p = open(dir.path(), config());
    fill(&p, 2, 2, 0).await;
    assert_eq!(p.high_watermark(), 4, "uncapped: HW = durable end");
    p.set_high_watermark_cap(6);
    let mut hw_rx = p.subscribe();
    hw_rx.borrow_and_update();
    fill(&p, 3, 2, 0).await;
    assert_eq!((p.durable_end(), p.log_end_offset()), (10, 10));
    assert_eq!(p.high_watermark(), 6, "HW = min(durable end, cap)");
    assert!(hw_rx.has_changed().expect("rx"));
    let r = p.read(4, 1 << 20).await.expect("read");
    let got: Vec<i64> = batch::split(&r.records)
        .expect("split")
        .iter()
        .map(|(h, _)| h.base_offset)
        .collect();
    assert_eq!(got, vec![4], "consumers stop at the HW");
    assert_eq!(r.high_watermark, 6);
    assert!(p.read(6, 1 << 20).await.expect("read").records.is_empty());
    let r = p.read_replica(6, 1 << 20).await.expect("replica read");
    assert_eq!(batch::split(&r.records).expect("split").len(), 2);
    assert_eq!(r.high_watermark, 6, "replica reads still report the HW");
    let inspect = InspectBudget::new(1 << 20);
    let max = p.max_timestamp(&inspect).await.expect("max").expect("some");
    assert!(max.0 < 6, "ListOffsets never answers above the HW: {max:?}");
    // A cap between two batches' ends: the HW stays on the boundary below it.
    p.set_high_watermark_cap(7);
    assert_eq!(p.high_watermark(), 6);
    p.set_high_watermark_cap(3);
    assert_eq!(p.high_watermark(), 6, "a lower cap never lowers the HW");
    p.set_high_watermark_cap(8);
    assert_eq!(p.high_watermark(), 8);
    p.set_high_watermark_cap(i64::MAX);
    assert_eq!(p.high_watermark(), 10);
}

#[tokio::test]
async fn the_hw_never_exceeds_the_cap_and_never_goes_back_under_concurrent_appends() {
    // Proves the HW invariants while appends complete and the cap moves: every HW a subscriber
    // sees is at most the largest cap set so far, at most the durable end, and never lower than
    // the one before.
    let dir = tempfile::tempdir().expect("tmp");
    let p = std::sync::Arc::new(open(dir.path(), config()));
    p.set_high_watermark_cap(0);
    let mut rx = p.subscribe();
    let writer = {
        let p = p.clone();
        tokio::spawn(async move { fill(&p, 40, 1, 0).await })
    };
    let mut last = 0;
    let mut cap = 0;
    for step in 0..40 {
        cap += (step % 3) as i64;
        p.set_high_watermark_cap(cap);
        let hw = *rx.borrow_and_update();
        assert!(hw <= cap.max(last), "HW {hw} above the cap {cap}");
        assert!(hw >= last, "HW went back from {last} to {hw}");
        assert!(hw <= p.durable_end());
        last = hw;
        tokio::task::yield_now().await;
    }
    writer.await.expect("writer");
    p.set_high_watermark_cap(i64::MAX);
    assert_eq!(p.high_watermark(), 40);
}

async fn reopen(dir: &Path) -> Partition {
    open(dir, config())
}

#[tokio::test]
async fn the_hw_checkpoint_round_trips_and_hides_records_above_it_after_a_reopen() {
    // Proves the checkpoint: written by checkpoint_high_watermark and by flush, a reopen puts
    // the HW at min(checkpoint, LEO) with the cap held there (records above it unreadable by
    // consumers, readable by replica fetches), a damaged file holds the HW at the log start, and
    // a partition never capped writes no file and opens with HW = LEO as before.
    let dir = tempfile::tempdir().expect("tmp");
    {
        let p = reopen(dir.path()).await;
        fill(&p, 2, 2, 0).await;
        p.flush().await.expect("flush");
        assert!(
            !dir.path().join("high-watermark").exists(),
            "never capped: no file"
        );
        p.set_high_watermark_cap(2);
        fill(&p, 2, 2, 0).await;
        assert!(
            dir.path().join("high-watermark").exists(),
            "written before a capped append"
        );
        assert_eq!(p.high_watermark(), 4);
        p.set_high_watermark_cap(6);
        p.checkpoint_high_watermark().await.expect("checkpoint");
    }
    {
        let p = reopen(dir.path()).await;
        assert_eq!((p.log_end_offset(), p.high_watermark()), (8, 6));
        assert_eq!(p.high_watermark_cap(), 6, "held until the owner sets a cap");
        fill(&p, 1, 2, 0).await;
        assert_eq!(p.high_watermark(), 6);
        let r = p.read(4, 1 << 20).await.expect("read");
        assert_eq!(batch::split(&r.records).expect("split").len(), 1);
        let replica = p.read_replica(6, 1 << 20).await.expect("read");
        assert!(
            !replica.records.is_empty(),
            "replica reads see above the HW"
        );
        p.set_high_watermark_cap(8);
        p.flush().await.expect("flush writes the checkpoint");
    }
    {
        let p = reopen(dir.path()).await;
        assert_eq!((p.log_end_offset(), p.high_watermark()), (10, 8));
    }
    std::fs::write(dir.path().join("high-watermark"), b"garbage").expect("damage");
    let p = reopen(dir.path()).await;
    assert_eq!(
        p.high_watermark(),
        p.log_start_offset(),
        "damaged: held at the log start"
    );
    p.set_high_watermark_cap(i64::MAX);
    assert_eq!(p.high_watermark(), 10);
}

#[tokio::test]
async fn retention_and_compaction_stop_at_the_hw_and_delete_records_past_it_is_refused() {
    // Proves the HW bounds: the cleaner cleans only segments wholly below the HW (its offset map
    // sees nothing above it), retention keeps every segment holding offsets at or above the HW
    // however old, and DeleteRecords past the HW is OffsetOutOfRange.
    use crate::protocol::batch::test_batches::keyed;
    let dir = tempfile::tempdir().expect("tmp");
    let k = || {
        Bytes::from(keyed(
            &[(Some(b"k".as_slice()), Some(b"v".as_slice()))],
            now_ms(),
        ))
    };
    let cfg = LogConfig {
        segment_bytes_max: 2 * k().len() as u64,
        retention_ms_max: Some(0),
        ..config()
    };
    let p = open(dir.path(), cfg);
    p.set_high_watermark_cap(2);
    for _ in 0..8 {
        p.append(k(), 0).await.expect("append");
    }
    assert_eq!(p.high_watermark(), 2);
    p.set_cleanup(Cleanup {
        compact: true,
        delete: true,
        delete_retention_ms: 0,
        compaction_lag_ms_min: 0,
    });
    let later = now_ms() + 1_000_000;
    let stats = p.compact(later).await.expect("compact");
    assert_eq!(
        (stats.segments_rewritten, stats.records_dropped),
        (1, 1),
        "only segment 0 (offsets 0-1) is below the HW: offset 0 goes, for offset 1"
    );
    assert!(matches!(
        p.delete_records_before(3).await,
        Err(LogError::OffsetOutOfRange { .. })
    ));
    p.enforce_retention(later).await.expect("retention");
    assert_eq!(
        p.log_start_offset(),
        2,
        "the segment below the HW went, no more"
    );
    p.set_high_watermark_cap(i64::MAX);
    p.enforce_retention(later).await.expect("retention");
    assert_eq!(
        p.log_start_offset(),
        8,
        "with the HW at the end, retention proceeds (the aged active segment rolls and goes)"
    );
}

#[tokio::test]
async fn a_capped_hw_crosses_segment_rolls_on_batch_boundaries() {
    // Proves the marks survive rolls: with the HW held below several newer segments, raising
    // the cap step by step moves it batch by batch across them, and consumers read exactly the
    // batches below it each time.
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = LogConfig {
        segment_bytes_max: 2 * b(2).len() as u64,
        ..config()
    };
    let p = open(dir.path(), cfg);
    p.set_high_watermark_cap(0);
    fill(&p, 7, 2, 0).await;
    assert_eq!((p.high_watermark(), p.durable_end()), (0, 14));
    for cap in 1..=15 {
        p.set_high_watermark_cap(cap);
        let hw = p.high_watermark();
        assert_eq!(hw, (cap.min(14) / 2) * 2, "cap {cap}");
        let batches = super::tests::read_all(&p).await;
        assert_eq!(batches.len() as i64, hw / 2, "cap {cap}");
    }
}
