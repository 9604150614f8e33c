//! log::tests_snapshot: producer-state snapshot files (`snapshot`) on real files: a producer
//! last seen many segments ago is still known after a reopen that reads only the active
//! segment's headers, bad or stale snapshots are passed over (never trusted, never a panic), and
//! old ones are pruned by rolls and retention.

use std::path::Path;

use bytes::Bytes;

use super::tests::{config, open};
use super::tests_producers::{dup, idem, ok};
use super::*;

/// Three one-record batches per segment, so a few dozen appends make many segments.
fn small() -> LogConfig {
    LogConfig {
        segment_bytes_max: 300,
        ..config()
    }
}

/// Offsets of the snapshot files in `dir`, ascending.
fn snapshots(dir: &Path) -> Vec<i64> {
    let mut v: Vec<i64> = std::fs::read_dir(dir)
        .expect("list dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".snapshot")?.parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
}

fn segment_bases(p: &Partition) -> Vec<i64> {
    p.shared.lock().segments.keys().copied().collect()
}

/// Producer 7 (epoch 3) writes offsets 0..=1 in the first segment only; producer 9 then fills
/// `batches` one-record batches over many more segments. Returns the log end offset.
async fn fill(dir: &Path, batches: i32) -> i64 {
    let p = open(dir, small());
    assert_eq!(ok(&p, idem(2, 7, 3, 0)).await, (0, 1));
    for seq in 0..batches {
        ok(&p, idem(1, 9, 0, seq)).await;
    }
    assert!(segment_bases(&p).len() >= 6, "segments must have rolled");
    p.log_end_offset()
}

/// Producer 7's state as `fill` left it: a replay is a duplicate at its original offsets, a
/// stale epoch is fenced, the next sequence is accepted.
async fn producer_7_is_known(p: &Partition) {
    assert_eq!(dup(p, idem(2, 7, 3, 0)).await, (0, 1));
    assert!(matches!(
        p.append(idem(1, 7, 2, 0), 0).await,
        Err(LogError::InvalidProducerEpoch { current: 3, .. })
    ));
    let end = p.log_end_offset();
    assert_eq!(ok(p, idem(1, 7, 3, 2)).await, (end, end));
}

#[tokio::test]
async fn producer_of_the_first_segment_is_known_after_reopen_from_the_snapshot() {
    // Proves the state survives a restart however old a producer's last batch is: producer 7
    // wrote only in segment 0 of many; after reopening, its retry is a duplicate with the original
    // offsets. And the reopen read only the active segment's batch headers, after the snapshot
    // the last roll wrote at the active segment's base (counted by `producers_rebuilt`).
    let dir = tempfile::tempdir().expect("tempdir");
    let end = fill(dir.path(), 30).await;
    let p = open(dir.path(), small());
    let active = *segment_bases(&p).last().expect("segments");
    let rebuilt = p.producers_rebuilt();
    assert_eq!(rebuilt.snapshot_offset, Some(active));
    assert_eq!(
        rebuilt.headers_read,
        (end - active) as u64,
        "one header per batch"
    );
    assert!(rebuilt.headers_read <= 3, "{rebuilt:?}");
    producer_7_is_known(&p).await;
    assert_eq!(dup(&p, idem(1, 9, 0, 29)).await, (end - 1, end - 1));
}

#[tokio::test]
async fn corrupt_or_truncated_snapshots_are_passed_over() {
    // Proves a snapshot that does not read back is never trusted: a flipped byte in the newest
    // makes the reopen use the next older one (scanning from there, state still right); with
    // every snapshot truncated the reopen falls back to the newest two segments' headers (and
    // then cannot know producer 7, whose batch is older: its replay is appended as new).
    let dir = tempfile::tempdir().expect("tempdir");
    fill(dir.path(), 30).await;
    let kept = snapshots(dir.path());
    assert_eq!(kept.len(), snapshot::SNAPSHOTS_KEPT);
    let newest = snapshot::path(dir.path(), kept[2]);
    let mut bytes = std::fs::read(&newest).expect("read snapshot");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&newest, &bytes).expect("corrupt snapshot");
    {
        let p = open(dir.path(), small());
        let rebuilt = p.producers_rebuilt();
        assert_eq!(rebuilt.snapshot_offset, Some(kept[1]));
        assert!(rebuilt.headers_read >= 1, "{rebuilt:?}");
        // Probes only: nothing of producer 7 may land in the newest segments before the fallback.
        assert_eq!(dup(&p, idem(2, 7, 3, 0)).await, (0, 1));
    }
    for offset in snapshots(dir.path()) {
        let path = snapshot::path(dir.path(), offset);
        let len = std::fs::metadata(&path).expect("stat").len();
        let file = std::fs::OpenOptions::new().write(true).open(&path);
        file.expect("open").set_len(len / 2).expect("truncate");
    }
    let p = open(dir.path(), small());
    let rebuilt = p.producers_rebuilt();
    assert_eq!(rebuilt.snapshot_offset, None);
    let end = p.log_end_offset();
    assert_eq!(ok(&p, idem(2, 7, 3, 0)).await, (end, end + 1));
}

#[tokio::test]
async fn snapshots_beyond_the_recovered_log_end_are_deleted() {
    // Proves a snapshot above the log end recovery leaves is deleted on open, never used: one
    // planted past the log end (claiming producer 5), and the one at the active segment's base
    // once recovery cuts the torn last batch of the segment before it. That batch was producer
    // 5's only one; had the stale snapshot been used, its resend would be called a duplicate at
    // offsets that no longer hold it. It is appended instead.
    let dir = tempfile::tempdir().expect("tempdir");
    let (sealed_base, active_base, end) = {
        let p = open(dir.path(), small());
        for seq in 0..10 {
            ok(&p, idem(1, 9, 0, seq)).await;
        }
        let five = ok(&p, idem(1, 5, 0, 0)).await;
        p.roll().await.expect("roll");
        ok(&p, idem(1, 9, 0, 10)).await;
        let bases = segment_bases(&p);
        let sealed_base = bases[bases.len() - 2];
        assert_eq!(
            five.1 + 1,
            bases[bases.len() - 1],
            "producer 5 ends its segment"
        );
        (sealed_base, bases[bases.len() - 1], p.log_end_offset())
    };
    let planted = end + 100;
    let bogus = snapshot::encode(planted, &producers::Producers::default());
    std::fs::write(snapshot::path(dir.path(), planted), bogus).expect("plant");
    let sealed = dir.path().join(segment::file_name(sealed_base, "log"));
    let len = std::fs::metadata(&sealed).expect("stat").len();
    let file = std::fs::OpenOptions::new().write(true).open(&sealed);
    file.expect("open").set_len(len - 7).expect("tear");
    let p = open(dir.path(), small());
    let left = snapshots(dir.path());
    assert!(
        !left.contains(&planted) && !left.contains(&active_base),
        "{left:?}"
    );
    assert_eq!(p.producers_rebuilt().snapshot_offset, Some(sealed_base));
    let at = p.log_end_offset();
    assert_eq!(ok(&p, idem(1, 5, 0, 0)).await, (at, at));
    assert_eq!(dup(&p, idem(1, 9, 0, 10)).await, (end - 1, end - 1));
}

#[tokio::test]
async fn rolls_and_retention_prune_old_snapshots() {
    // Proves each roll leaves exactly the newest SNAPSHOTS_KEPT snapshots, the newest at the
    // active segment's base; retention deletes those below the new log start; a temp file left
    // by a cut-short write is removed on open.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = open(dir.path(), small());
    for seq in 0..30 {
        ok(&p, idem(1, 9, 0, seq)).await;
        let (kept, bases) = (snapshots(dir.path()), segment_bases(&p));
        let expected = bases.len().saturating_sub(1).min(snapshot::SNAPSHOTS_KEPT);
        assert_eq!(kept.len(), expected, "after seq {seq}: {kept:?}");
        assert!(kept.iter().all(|o| bases.contains(o)), "{kept:?} {bases:?}");
        if let Some(newest) = kept.last() {
            assert_eq!(Some(newest), bases.last());
        }
    }
    p.set_config(LogConfig {
        retention_bytes_max: Some(1),
        ..small()
    });
    p.enforce_retention(now_ms()).await.expect("retention");
    let start = p.log_start_offset();
    assert_eq!(segment_bases(&p), [start]);
    assert_eq!(snapshots(dir.path()), [start]);
    drop(p);
    let temp = dir.path().join(format!("{:020}.snapshot.tmp", 3));
    std::fs::write(&temp, b"half written").expect("plant temp");
    let p = open(dir.path(), small());
    assert!(!temp.exists());
    assert_eq!(p.producers_rebuilt().snapshot_offset, Some(start));
    assert_eq!(dup(&p, idem(1, 9, 0, 29)).await, (29, 29));
}

#[test]
fn encoding_round_trips_and_every_damage_is_refused() {
    // Proves the byte layout round-trips the complete state, and that every truncation and every
    // single flipped bit of a valid file is refused (CRC-32C, lengths), as is a wrong offset.
    let mut producers = producers::Producers::default();
    let mut offset = 0i64;
    for (pid, batches) in [(3i64, 7i32), (1, 1), (2, 5)] {
        for seq in 0..batches {
            let raw = idem(2, pid, 4, 2 * seq);
            let parts = batch::split(&raw).expect("split");
            match producers.check(&parts, offset).expect("check") {
                producers::Checked::Append { updates } => producers.commit(updates),
                other => panic!("unexpected {other:?}"),
            }
            offset += 2;
        }
    }
    let bytes = snapshot::encode(offset, &producers);
    let back = snapshot::decode(&bytes, offset).expect("decode");
    for pid in 1..=3 {
        assert_eq!(back.entry(pid), producers.entry(pid), "producer {pid}");
    }
    assert_eq!(back.len(), 3);
    assert!(
        snapshot::decode(&bytes, offset + 1).is_err(),
        "offset must match the name"
    );
    for len in 0..bytes.len() {
        assert!(
            snapshot::decode(&bytes[..len], offset).is_err(),
            "cut at {len}"
        );
    }
    for i in 0..bytes.len() * 8 {
        let mut bad = bytes.clone();
        bad[i / 8] ^= 1 << (i % 8);
        assert!(snapshot::decode(&bad, offset).is_err(), "bit {i}");
    }
    let huge = Bytes::from(vec![0u8; snapshot::SNAPSHOT_BYTES_MAX + 1]);
    assert!(snapshot::decode(&huge, offset).is_err());
}
