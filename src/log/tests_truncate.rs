//! log::tests_truncate: `truncate_to` and `truncate_fully_and_start_at` on real files and
//! through power cuts (`io::crash`): the cut lands on a batch boundary, later segments go, the
//! producer state and the HW follow, a reopen finds the truncated log, and a power cut at any
//! storage call leaves a valid log that is the old one, the new one or a prefix between them.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::tests::{config, open, read_all};
use super::tests_power_cut::start_writer;
use super::tests_producers::idem;
use super::tests_replica::{b, fill};
use super::*;
use crate::io::crash::{CrashStorage, CutMode};

/// Three records a batch, two batches a segment: segments at 0, 6, 12, 18.
fn small() -> LogConfig {
    LogConfig {
        segment_bytes_max: 2 * b(3).len() as u64,
        ..config()
    }
}

fn log_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("ls")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
        })
        .count()
}

#[tokio::test]
async fn truncate_cuts_whole_batches_drops_later_segments_and_survives_a_reopen() {
    // Proves truncate_to: a cut inside a batch takes the whole batch (LEO = its base), later
    // segments are removed, the HW goes down with the LEO and subscribers see it, the next
    // append continues at the new end, and a reopen finds the same log.
    let dir = tempfile::tempdir().expect("tmp");
    {
        let p = open(dir.path(), small());
        fill(&p, 8, 3, 1).await;
        assert_eq!((p.log_end_offset(), log_count(dir.path())), (24, 4));
        let mut rx = p.subscribe();
        rx.borrow_and_update();
        p.truncate_to(10).await.expect("truncate");
        assert_eq!(p.log_end_offset(), 9, "the batch 9..=11 goes whole");
        assert_eq!((p.durable_end(), p.high_watermark()), (9, 9));
        assert!(rx.has_changed().expect("rx"));
        assert_eq!(log_count(dir.path()), 2);
        assert_eq!(read_all(&p).await, [(0, 2), (3, 5), (6, 8)]);
        p.truncate_to(100).await.expect("past the end: nothing");
        assert_eq!(p.log_end_offset(), 9);
        let next = p.append(b(3), 2).await.expect("append");
        assert_eq!(next.base_offset, 9);
    }
    let p = open(dir.path(), small());
    assert_eq!(p.log_end_offset(), 12);
    assert_eq!(read_all(&p).await, [(0, 2), (3, 5), (6, 8), (9, 11)]);
    assert_eq!(p.epoch_entries(), vec![(1, 0), (2, 9)]);
}

#[tokio::test]
async fn truncation_rebuilds_producer_state_to_the_cut() {
    // Proves a producer's batch above the cut is forgotten: sending it again appends it at the
    // new end instead of answering a duplicate for offsets that are gone.
    let dir = tempfile::tempdir().expect("tmp");
    let p = open(dir.path(), small());
    p.append(idem(3, 9, 0, 0), 1).await.expect("append");
    p.append(idem(3, 9, 0, 3), 1).await.expect("append");
    fill(&p, 3, 3, 1).await;
    p.truncate_to(3).await.expect("truncate");
    let again = p
        .append(idem(3, 9, 0, 3), 2)
        .await
        .expect("not a duplicate");
    assert_eq!(again.base_offset, 3);
    assert!(matches!(
        p.append(idem(3, 9, 0, 0), 2).await,
        Err(LogError::DuplicateSequence { .. })
    ));
}

#[tokio::test]
async fn a_capped_hw_below_the_cut_stays_and_its_checkpoint_follows_a_lower_cut() {
    // Proves HW = min(HW, cut): a HW below the cut is untouched, one above it comes down, and
    // the checkpoint is rewritten so a reopen after new appends does not expose them.
    let dir = tempfile::tempdir().expect("tmp");
    {
        let p = open(dir.path(), small());
        p.set_high_watermark_cap(0);
        fill(&p, 6, 3, 1).await;
        p.set_high_watermark_cap(15);
        p.checkpoint_high_watermark().await.expect("checkpoint");
        p.truncate_to(17).await.expect("truncate");
        assert_eq!((p.log_end_offset(), p.high_watermark()), (15, 15));
        p.truncate_to(9).await.expect("truncate");
        assert_eq!((p.log_end_offset(), p.high_watermark()), (9, 9));
        // The replication layer sets the new leader's HW as the cap; the cap truncation left
        // (15) would let the HW pass the records the new leader has not committed.
        p.set_high_watermark_cap(9);
        fill(&p, 2, 3, 2).await;
        assert_eq!(p.high_watermark(), 9, "held by the cap");
    }
    let p = open(dir.path(), small());
    assert_eq!((p.log_end_offset(), p.high_watermark()), (15, 9));
}

#[tokio::test]
async fn checkpoints_are_read_back_through_the_storage_after_a_power_cut() {
    // Proves the HW checkpoint is read through the storage that wrote it: on the crash backend
    // a reopen after a cut finds the checkpointed HW, not a "damaged" file held at the log start
    // (std::fs saw the backend's empty mirror files; the cluster simulation found every
    // restarted node so).
    let root = tempfile::tempdir().expect("tmp");
    let storage = CrashStorage::new(root.path());
    let dir = root.path().join("t-0");
    let writer = start_writer(&dir, &storage);
    let p = Partition::open(&dir, small(), writer.clone()).expect("open");
    p.set_high_watermark_cap(0);
    fill(&p, 6, 3, 1).await;
    p.set_high_watermark_cap(15);
    p.checkpoint_high_watermark().await.expect("checkpoint");
    p.flush().await.expect("flush");
    drop(p);
    writer.shutdown().await;
    storage.pull_plug(CutMode::DropUnsynced, 1).expect("cut");
    storage.power_on();
    let writer = start_writer(&dir, &storage);
    let p = Partition::open(&dir, small(), writer.clone()).expect("reopen");
    assert_eq!((p.log_end_offset(), p.high_watermark()), (18, 15));
    writer.shutdown().await;
}

#[tokio::test]
async fn truncate_fully_starts_an_empty_log_at_the_offset() {
    // Proves truncate_fully_and_start_at: every segment goes, the log starts and ends at the
    // offset (HW too), the epoch cache is cleared, appends land there, and a reopen agrees.
    let dir = tempfile::tempdir().expect("tmp");
    {
        let p = open(dir.path(), small());
        fill(&p, 5, 3, 1).await;
        p.truncate_fully_and_start_at(100).await.expect("start at");
        assert_eq!(
            (p.log_start_offset(), p.log_end_offset(), p.high_watermark()),
            (100, 100, 100)
        );
        assert!(p.epoch_entries().is_empty());
        assert_eq!(log_count(dir.path()), 1);
        let replica = Bytes::from({
            let mut one = b(2).to_vec();
            crate::protocol::batch::patch_base_offset(&mut one, 100);
            crate::protocol::batch::patch_leader_epoch(&mut one, 4);
            one
        });
        p.append_replica(replica)
            .await
            .expect("replica")
            .durable()
            .await
            .expect("durable");
        p.truncate_fully_and_start_at(50)
            .await
            .expect("lower start");
        assert_eq!((p.log_start_offset(), p.log_end_offset()), (50, 50));
        p.append(b(2), 5).await.expect("append");
    }
    let p = open(dir.path(), small());
    assert_eq!((p.log_start_offset(), p.log_end_offset()), (50, 52));
    assert_eq!(read_all(&p).await, [(50, 51)]);
    assert_eq!(p.epoch_entries(), vec![(5, 50)]);
}

/// Seeds per power-cut test: each cuts at a different storage call of the truncation.
const CUT_SEEDS: u64 = 48;

/// Builds 8 batches (segments at 0, 6, 12, 18), then runs `op` with the power cut after
/// `cut_at` mutating calls, reopens and returns (log start, log end, batches read) after
/// checking the log reads back whole and dense from its start to its end.
async fn cut_during(
    root: &Path,
    cut_at: u64,
    mode: CutMode,
    op: impl AsyncFnOnce(&Partition) -> Result<(), LogError>,
) -> (i64, i64, Vec<(i64, i64)>, Option<&'static str>) {
    let storage = CrashStorage::new(root);
    let dir = root.join("t-0");
    let writer = start_writer(&dir, &storage);
    let p = Arc::new(Partition::open(&dir, small(), writer.clone()).expect("open"));
    fill(&p, 8, 3, 1).await;
    p.flush().await.expect("flush");
    storage.pull_plug_after(cut_at, mode, cut_at ^ 0x5eed);
    let result = op(&p).await;
    assert!(
        result.is_ok() || storage.is_off(),
        "failed with the power on: {result:?}"
    );
    let call = storage.cut_call();
    drop(p);
    writer.shutdown().await;
    storage.disarm();
    storage.pull_plug(mode, cut_at).expect("cut");
    storage.power_on();
    let writer = start_writer(&dir, &storage);
    let p = Partition::open(&dir, small(), writer.clone()).expect("recovery never rejects");
    let (start, end) = (p.log_start_offset(), p.log_end_offset());
    assert_eq!(
        p.high_watermark(),
        end,
        "an uncapped log opens with HW = LEO"
    );
    let read = read_all(&p).await;
    let next = p.append(b(1), 9).await.expect("append after recovery");
    assert_eq!(next.base_offset, end);
    writer.shutdown().await;
    (start, end, read, call)
}

#[tokio::test]
async fn a_power_cut_during_truncation_leaves_the_old_the_new_or_a_prefix_between() {
    // Proves the crash contract of truncate_to at every storage call it makes, in every cut
    // mode: the reopened log is a valid prefix of the old one, at least the truncated one
    // (batch boundaries, dense offsets).
    let tmp = tempfile::tempdir().expect("tmp");
    let mut fired = 0;
    for seed in 0..CUT_SEEDS {
        let mode = CutMode::ALL[(seed % 4) as usize];
        let root = tmp.path().join(format!("cut-{seed}"));
        std::fs::create_dir(&root).expect("mkdir");
        let (start, end, read, call) =
            cut_during(&root, seed / 4, mode, async |p| p.truncate_to(10).await).await;
        fired += usize::from(call.is_some());
        let whole: Vec<(i64, i64)> = (0..8).map(|i| (3 * i, 3 * i + 2)).collect();
        assert_eq!(start, 0, "seed {seed}");
        assert!((9..=24).contains(&end), "seed {seed} ({call:?}): end {end}");
        assert_eq!(read, whole[..(end / 3) as usize], "seed {seed} ({call:?})");
    }
    assert!(fired > CUT_SEEDS as usize / 2, "cuts land mid-truncation");
}

#[tokio::test]
async fn a_power_cut_while_starting_at_a_new_offset_leaves_the_old_or_the_new_log() {
    // Proves the crash contract of truncate_fully_and_start_at: after a cut at any of its
    // storage calls the log is the old one (from 0) or empty at the new start (nothing below it
    // readable), never a mix.
    let tmp = tempfile::tempdir().expect("tmp");
    for seed in 0..CUT_SEEDS {
        let mode = CutMode::ALL[(seed % 4) as usize];
        let root = tmp.path().join(format!("start-{seed}"));
        std::fs::create_dir(&root).expect("mkdir");
        let (start, end, read, call) = cut_during(&root, seed / 4, mode, async |p| {
            p.truncate_fully_and_start_at(100).await
        })
        .await;
        let old = start == 0 && end == 24 && read.len() == 8;
        let new = start == 100 && end == 100 && read.is_empty();
        assert!(
            old || new,
            "seed {seed} ({call:?}): {start}..{end} {read:?}"
        );
    }
}
