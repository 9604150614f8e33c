//! log::tests_damage: damage to a partition's files made on disk between two opens, and what the
//! partition then reports (`damage`) and serves: a deleted sealed segment and an active segment
//! cut to zero bytes are reported as gaps; a corrupt batch in a sealed segment is refused on
//! read (CORRUPT_MESSAGE upstream), never served, and found by the scrubber (`scrub`).

use std::path::Path;

use bytes::Bytes;

use super::tests::{config, open, read_all};
use super::*;
use crate::protocol::batch::test_batches::batch;

/// One uncompressed batch of two records.
fn two() -> Bytes {
    Bytes::from(batch(2, 1, 20))
}

/// A partition in `dir` with segments at offsets 0, 6, 12 (sealed, three 2-record batches
/// each) and 18 (active, one batch); returns the config and one batch's size.
async fn four_segments(dir: &Path) -> (LogConfig, u64) {
    let one = two().len() as u64;
    let cfg = LogConfig {
        segment_bytes_max: 3 * one,
        ..config()
    };
    let p = open(dir, cfg.clone());
    for _ in 0..10 {
        p.append(two(), 0).await.expect("append");
    }
    assert!(p.damage().kept.is_empty(), "a healthy log reports nothing");
    (cfg, one)
}

fn seg_path(dir: &Path, base: i64, ext: &str) -> std::path::PathBuf {
    dir.join(segment::file_name(base, ext))
}

/// Overwrites `bytes` at `at` in `path`.
fn patch(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for patch");
    f.write_all_at(bytes, at).expect("patch");
}

// Proves a sealed segment deleted from the middle of the chain is reported on open with the
// offsets it held, the partition still serves the data on either side, and a compacted topic
// (whose cleaner may leave such gaps) does not report it.
#[tokio::test]
async fn deleted_sealed_segment_is_reported_as_a_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _) = four_segments(dir.path()).await;
    for ext in ["log", "index", "timeindex"] {
        std::fs::remove_file(seg_path(dir.path(), 6, ext)).expect("delete segment 6");
    }
    let p = open(dir.path(), cfg.clone());
    let damage = p.damage();
    assert_eq!(damage.total, 1, "{damage:?}");
    assert!(
        matches!(&damage.kept[0], Damage::Gap { missing, .. } if *missing == (6..12)),
        "{damage:?}"
    );
    let served: Vec<(i64, i64)> = read_all(&p).await;
    let expected: Vec<(i64, i64)> = (0..10)
        .filter(|i| !(3..6).contains(i))
        .map(|i| (i * 2, i * 2 + 1))
        .collect();
    assert_eq!(served, expected);
    drop(p);
    let compacted = Cleanup {
        compact: true,
        ..Cleanup::default()
    };
    let writer =
        crate::io::DiskWriter::start(crate::io::WriterConfig::new(dir.path())).expect("writer");
    let p = Partition::open_with(dir.path(), cfg, compacted, writer).expect("open compacted");
    assert!(p.damage().kept.is_empty(), "compaction leaves such gaps");
}

// Proves an active segment truncated to zero bytes is reported on open with the offsets its
// index says were there, where before it opened silently as an empty log.
#[tokio::test]
async fn active_segment_cut_to_zero_is_reported_as_a_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config();
    let p = open(dir.path(), cfg.clone());
    for _ in 0..20 {
        p.append(two(), 0).await.expect("append");
    }
    drop(p);
    std::fs::File::create(seg_path(dir.path(), 0, "log")).expect("truncate active segment");
    let p = open(dir.path(), cfg);
    assert_eq!(p.log_end_offset(), 0);
    let damage = p.damage();
    assert_eq!(damage.total, 1, "{damage:?}");
    let Damage::Gap { missing, .. } = &damage.kept[0] else {
        panic!("a gap: {damage:?}");
    };
    assert_eq!(missing.start, 0);
    // Index entries come every 128 bytes, so the last one is within two batches of the end.
    assert!((36..=40).contains(&missing.end), "{missing:?}");
}

// Proves a flipped payload byte in a sealed segment is refused on read rather than served:
// the read at it fails with CorruptStored naming the batch, a read from before it returns only
// the good batches, and the finding is recorded once however often it is read.
#[tokio::test]
async fn corrupt_sealed_batch_is_refused_not_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, one) = four_segments(dir.path()).await;
    // Last byte of the second batch (offsets 2..=3) of segment 0.
    patch(&seg_path(dir.path(), 0, "log"), 2 * one - 1, &[0xA5]);
    let p = open(dir.path(), cfg);
    for _ in 0..3 {
        match p.read(2, 1 << 20).await {
            Err(LogError::CorruptStored {
                position, offsets, ..
            }) => assert_eq!((position, offsets), (one, 2..4)),
            other => panic!("expected CorruptStored, got {other:?}"),
        }
    }
    let before = p.read(0, 1 << 20).await.expect("read before the damage");
    assert_eq!(
        before.records.len() as u64,
        one,
        "only the good first batch"
    );
    let damage = p.damage();
    assert_eq!(damage.total, 1, "{damage:?}");
    assert!(matches!(&damage.kept[0], Damage::Corrupt { position, .. } if *position == one));
}

// Proves a bad length field in a sealed segment answers CorruptStored (which Fetch maps to
// CORRUPT_MESSAGE) instead of a generic storage error a client retries forever.
#[tokio::test]
async fn bad_length_in_sealed_segment_is_corrupt_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _) = four_segments(dir.path()).await;
    let length_at = batch::BATCH_LENGTH_AT as u64;
    patch(
        &seg_path(dir.path(), 6, "log"),
        length_at,
        &0x7fff_0000i32.to_be_bytes(),
    );
    let p = open(dir.path(), cfg);
    let read = p.read(6, 1 << 20).await;
    assert!(
        matches!(read, Err(LogError::CorruptStored { position: 0, .. })),
        "{read:?}"
    );
}

// Proves the scrubber finds a flipped payload byte in a sealed segment that no read asked for:
// it walks every sealed batch, reports the damaged one with its file, byte and offsets, steps
// over it to check the rest, and a second pass records nothing new.
#[tokio::test]
async fn scrubber_finds_a_flipped_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, one) = four_segments(dir.path()).await;
    // Inside the second batch (offsets 8..=9) of segment 6.
    patch(&seg_path(dir.path(), 6, "log"), 2 * one - 5, &[0x5A]);
    let p = open(dir.path(), cfg);
    assert!(p.damage().kept.is_empty(), "nothing read it yet");
    let stats = p.scrub(&mut Pace::new(u64::MAX)).await.expect("scrub");
    assert_eq!(
        (stats.segments, stats.batches, stats.damaged),
        (3, 9, 1),
        "{stats:?}"
    );
    assert_eq!(stats.bytes, 9 * one);
    let damage = p.damage();
    let Damage::Corrupt {
        file,
        position,
        offsets,
        ..
    } = &damage.kept[0]
    else {
        panic!("a corrupt batch: {damage:?}");
    };
    assert_eq!(file, &seg_path(dir.path(), 6, "log"));
    assert_eq!((*position, offsets.clone()), (one, 8..10));
    p.scrub(&mut Pace::new(u64::MAX))
        .await
        .expect("scrub again");
    assert_eq!(p.damage().total, 1, "the same damage is recorded once");
}
