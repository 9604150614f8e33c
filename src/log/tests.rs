//! log::tests: the partition log end to end on real files in a temp dir: appends and reads,
//! segment roll, recovery from torn and corrupt tails, index rebuild, retention, timestamps.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::io::{DiskWriter, WriterConfig};
use crate::protocol::batch::test_batches::{batch, batch_with, refresh_crc};

pub(super) fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1 << 20,
        segment_ms_max: 1 << 40,
        retention_bytes_max: None,
        retention_ms_max: None,
        index_interval_bytes: 128,
        message_bytes_max: 1 << 20,
        fsync_on_ack: true,
    }
}

pub(super) fn open(dir: &Path, config: LogConfig) -> Partition {
    let writer = DiskWriter::start(WriterConfig::new(dir)).expect("start writer");
    Partition::open(dir, config, writer).expect("open partition")
}

/// One uncompressed batch of `n` records with timestamps from `ts0`.
fn b(n: usize, ts0: i64) -> Bytes {
    Bytes::from(batch(n, ts0, 20))
}

/// (base offset, last offset) of each batch in `records`, validating every CRC on the way.
fn offsets(records: &[u8]) -> Vec<(i64, i64)> {
    if records.is_empty() {
        return Vec::new();
    }
    let parts = batch::split(records).expect("reads return whole, valid batches");
    parts
        .iter()
        .map(|(h, _)| (h.base_offset, h.last_offset()))
        .collect()
}

/// Every batch from the log start to the high watermark, one read per call.
pub(super) async fn read_all(p: &Partition) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut next = p.log_start_offset();
    for _ in 0..10_000 {
        if next >= p.high_watermark() {
            break;
        }
        let r = p.read(next, 1000).await.expect("read");
        let got = offsets(&r.records);
        let Some(&(_, last)) = got.last() else {
            panic!("no progress at offset {next}")
        };
        out.extend(got);
        next = last + 1;
    }
    out
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn append_then_read_round_trip() {
    // Proves offsets are assigned densely from 0, the bytes read back are the batches appended
    // (base offset and epoch patched, CRC still valid), and HW/LEO follow.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = open(dir.path(), config());
    let a = p.append(b(3, 100), 7).await.expect("append");
    assert_eq!(
        (a.base_offset, a.last_offset, a.log_start_offset),
        (0, 2, 0)
    );
    let a = p.append(b(2, 200), 7).await.expect("append");
    assert_eq!((a.base_offset, a.last_offset), (3, 4));
    assert_eq!((p.log_end_offset(), p.high_watermark()), (5, 5));
    let r = p.read(0, 1 << 20).await.expect("read");
    assert_eq!(offsets(&r.records), [(0, 2), (3, 4)]);
    let first = batch::BatchHeader::parse(&r.records).expect("header");
    assert_eq!(first.partition_leader_epoch, 7);
    // A fetch from the middle of a batch returns that whole batch.
    assert_eq!(
        offsets(&p.read(4, 1 << 20).await.expect("read").records),
        [(3, 4)]
    );
    assert!(p.read(5, 100).await.expect("read at hw").records.is_empty());
    assert!(matches!(
        p.read(6, 100).await,
        Err(LogError::OffsetOutOfRange {
            offset: 6,
            start: 0,
            end: 5
        })
    ));
    assert_eq!(p.size_bytes(), r.records.len() as u64);
}

#[tokio::test]
async fn invalid_or_oversized_batches_write_nothing() {
    // Proves a request with one corrupt batch or one batch over message_bytes_max is refused whole.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = open(
        dir.path(),
        LogConfig {
            message_bytes_max: 400,
            ..config()
        },
    );
    let mut bad = batch(2, 1, 5);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let both = Bytes::from([batch(1, 1, 5), bad].concat());
    assert!(matches!(p.append(both, 0).await, Err(LogError::Corrupt(_))));
    let big = Bytes::from([batch(1, 1, 5), batch(1, 1, 500)].concat());
    assert!(matches!(
        p.append(big, 0).await,
        Err(LogError::TooLarge { max: 400, .. })
    ));
    assert_eq!((p.log_end_offset(), p.size_bytes()), (0, 0));
    assert!(matches!(
        p.append(Bytes::new(), 0).await,
        Err(LogError::Corrupt(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_dense_offsets() {
    // Proves 8 tasks appending at once get disjoint, dense offset ranges and the log holds
    // exactly those batches in offset order; the high watermark ends at the log end offset.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Arc::new(open(
        dir.path(),
        LogConfig {
            segment_bytes_max: 4096,
            ..config()
        },
    ));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..20 {
                let info = p.append(b(1 + (t + i) % 3, 1000), 0).await.expect("append");
                got.push((info.base_offset, info.last_offset));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort();
    assert_eq!(all.len(), 160);
    assert_eq!(all[0].0, 0);
    assert!(
        all.windows(2).all(|w| w[1].0 == w[0].1 + 1),
        "offsets must be dense"
    );
    let end = all[159].1 + 1;
    assert_eq!((p.log_end_offset(), p.high_watermark()), (end, end));
    assert_eq!(read_all(&p).await, all);
    assert!(
        log_files(dir.path()).len() > 1,
        "4 KiB segments must have rolled"
    );
}

#[tokio::test]
async fn max_bytes_follows_kip_74() {
    // Proves max_bytes caps a read at whole batches, yet one batch larger than max_bytes is
    // still returned whole so a consumer always progresses.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = open(dir.path(), config());
    let one = batch(4, 1, 200);
    for _ in 0..3 {
        p.append(Bytes::from(one.clone()), 0).await.expect("append");
    }
    let len = one.len();
    assert_eq!(
        offsets(&p.read(0, 10).await.expect("read").records),
        [(0, 3)]
    );
    assert_eq!(
        offsets(&p.read(0, 0).await.expect("read").records),
        [(0, 3)]
    );
    assert_eq!(
        offsets(&p.read(0, 2 * len - 1).await.expect("read").records),
        [(0, 3)]
    );
    assert_eq!(
        offsets(&p.read(0, 2 * len).await.expect("read").records),
        [(0, 3), (4, 7)]
    );
    assert_eq!(
        offsets(&p.read(5, 2 * len + 1).await.expect("read").records),
        [(4, 7), (8, 11)]
    );
}

#[tokio::test]
async fn rolls_by_bytes_and_reads_across_segments() {
    // Proves the active segment rolls before it would pass segment_bytes_max, offsets continue
    // across segments, one read spans a segment boundary, and all of it survives a reopen.
    let dir = tempfile::tempdir().expect("tempdir");
    let one = b(2, 1).len() as u64;
    let cfg = LogConfig {
        segment_bytes_max: 3 * one,
        ..config()
    };
    let p = open(dir.path(), cfg.clone());
    for _ in 0..10 {
        p.append(b(2, 1), 0).await.expect("append");
    }
    let files = log_files(dir.path());
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        names[..2],
        ["00000000000000000000.log", "00000000000000000006.log"]
    );
    assert_eq!(files.len(), 4);
    for f in &files {
        assert!(std::fs::metadata(f).expect("stat").len() <= 3 * one);
    }
    let across = p.read(4, 1 << 20).await.expect("read");
    let expected: Vec<(i64, i64)> = (2..10).map(|i| (i * 2, i * 2 + 1)).collect();
    assert_eq!(offsets(&across.records), expected);
    drop(p);
    let p = open(dir.path(), cfg);
    assert_eq!(p.log_end_offset(), 20);
    assert_eq!(
        read_all(&p).await,
        (0..10).map(|i| (i * 2, i * 2 + 1)).collect::<Vec<_>>()
    );
    assert_eq!(p.append(b(1, 1), 0).await.expect("append").base_offset, 20);
}

#[tokio::test]
async fn rolls_by_age() {
    // Proves an append to a segment older than segment_ms_max starts a new segment.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = open(
        dir.path(),
        LogConfig {
            segment_ms_max: 30,
            ..config()
        },
    );
    p.append(b(1, 1), 0).await.expect("append");
    p.append(b(1, 1), 0).await.expect("append");
    assert_eq!(
        log_files(dir.path()).len(),
        1,
        "young segment must not roll"
    );
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(p.append(b(1, 1), 0).await.expect("append").base_offset, 2);
    assert_eq!(log_files(dir.path()).len(), 2);
    assert_eq!(read_all(&p).await, [(0, 0), (1, 1), (2, 2)]);
}

/// A "compressed" (lz4 bits, records left raw) batch of 2 MiB claiming i32::MAX records: the
/// most the records-per-byte bound lets a batch that size claim, rounded down.
fn huge_count_batch() -> Vec<u8> {
    let mut b = batch_with(&[1], 2 << 20, 3);
    let count = i32::MAX;
    b[batch::RECORD_COUNT_AT..batch::RECORD_COUNT_AT + 4].copy_from_slice(&count.to_be_bytes());
    b[batch::LAST_OFFSET_DELTA_AT..batch::LAST_OFFSET_DELTA_AT + 4]
        .copy_from_slice(&(count - 1).to_be_bytes());
    refresh_crc(&mut b);
    b
}

#[tokio::test]
async fn offsets_past_u32_roll_or_are_refused() {
    // Proves an append whose offsets would overflow the active segment's u32 relative offsets
    // rolls first, and one that would not fit even an empty segment is refused, writing nothing.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = open(
        dir.path(),
        LogConfig {
            segment_bytes_max: 64 << 20,
            message_bytes_max: 4 << 20,
            ..config()
        },
    );
    let huge = huge_count_batch();
    let three = Bytes::from([huge.clone(), huge.clone(), huge.clone()].concat());
    assert!(matches!(
        p.append(three, 0).await,
        Err(LogError::Corrupt(batch::BatchError::OffsetsOverflow { .. }))
    ));
    assert_eq!((p.log_end_offset(), p.size_bytes()), (0, 0));
    let count = i64::from(i32::MAX);
    let two = Bytes::from([huge.clone(), huge.clone()].concat());
    assert_eq!(
        p.append(two, 0).await.expect("fits").last_offset,
        2 * count - 1
    );
    assert_eq!(log_files(dir.path()).len(), 1);
    let third = p.append(Bytes::from(huge), 0).await.expect("rolls");
    assert_eq!(third.base_offset, 2 * count);
    assert_eq!(
        log_files(dir.path()).len(),
        2,
        "the third batch starts a segment"
    );
}

/// Writes `n` batches of one record each and returns the active log's path and batch ends.
async fn write_batches(dir: &Path, n: usize) -> (PathBuf, Vec<u64>) {
    let p = open(dir, config());
    let mut ends = Vec::new();
    for i in 0..n {
        p.append(Bytes::from(batch(1, i as i64, 12)), 0)
            .await
            .expect("append");
        ends.push(p.size_bytes());
    }
    (dir.join("00000000000000000000.log"), ends)
}

#[tokio::test]
async fn torn_tail_at_every_byte_of_the_last_batch() {
    // Proves recovery: for every length inside the last batch, reopening keeps exactly the
    // first N-1 batches, sets the log end offset, and the next append gets offset N-1.
    let src = tempfile::tempdir().expect("tempdir");
    let n = 5;
    let (log, ends) = write_batches(src.path(), n).await;
    let full = std::fs::read(&log).expect("read log");
    assert_eq!(full.len() as u64, ends[n - 1]);
    for cut in ends[n - 2]..ends[n - 1] {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("00000000000000000000.log"),
            &full[..cut as usize],
        )
        .expect("write");
        for ext in ["index", "timeindex"] {
            let name = format!("00000000000000000000.{ext}");
            std::fs::copy(src.path().join(&name), dir.path().join(&name)).expect("copy index");
        }
        let p = open(dir.path(), config());
        assert_eq!(p.log_end_offset(), (n - 1) as i64, "cut at byte {cut}");
        assert_eq!(p.high_watermark(), (n - 1) as i64);
        assert_eq!(read_all(&p).await.len(), n - 1, "cut at byte {cut}");
        let len = std::fs::metadata(dir.path().join("00000000000000000000.log"))
            .expect("stat")
            .len();
        assert_eq!(len, ends[n - 2], "torn bytes must be cut from the file");
        assert_eq!(
            p.append(b(1, 9), 0).await.expect("append").base_offset,
            (n - 1) as i64
        );
    }
}

#[tokio::test]
async fn garbage_and_corruption_after_valid_batches_are_cut() {
    // Proves trailing garbage, a zero-filled tail, a header-only tail and a bit flip in the
    // last batch are all cut back to the last valid batch on reopen.
    let src = tempfile::tempdir().expect("tempdir");
    let (log, ends) = write_batches(src.path(), 4).await;
    let full = std::fs::read(&log).expect("read log");
    let mut flipped = full.clone();
    flipped[ends[2] as usize + 30] ^= 0x40;
    let mut wrong_offset = full.clone();
    wrong_offset[ends[2] as usize + 7] = 9; // base offset of batch 4 no longer dense
    let cases: [(&str, Vec<u8>, usize); 5] = [
        (
            "garbage",
            [full.clone(), b"not a batch at all, just noise".repeat(3)].concat(),
            4,
        ),
        ("zeros", [full.clone(), vec![0u8; 4096]].concat(), 4),
        (
            "header only",
            [full.clone(), full[..61].to_vec()].concat(),
            4,
        ),
        ("bit flip", flipped, 3),
        ("offset gap", wrong_offset, 3),
    ];
    for (what, bytes, keep) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("00000000000000000000.log"), &bytes).expect("write");
        let p = open(dir.path(), config());
        assert_eq!(p.log_end_offset(), keep as i64, "{what}");
        assert_eq!(read_all(&p).await.len(), keep, "{what}");
        assert_eq!(p.size_bytes(), ends[keep - 1], "{what}");
        assert_eq!(
            p.append(b(1, 9), 0).await.expect("append").base_offset,
            keep as i64,
            "{what}"
        );
    }
}

#[tokio::test]
async fn broken_sealed_index_is_rebuilt_identically() {
    // Proves a sealed segment's damaged .index and .timeindex are detected at open, rebuilt
    // byte-for-byte as appends wrote them, and lookups at every offset still find the batch.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_bytes_max: 2000,
        index_interval_bytes: 100,
        ..config()
    };
    let p = open(dir.path(), cfg.clone());
    for i in 0..30 {
        p.append(b(2, i * 10), 0).await.expect("append");
    }
    drop(p);
    let index = dir.path().join("00000000000000000000.index");
    let timeindex = dir.path().join("00000000000000000000.timeindex");
    let (good, good_time) = (
        std::fs::read(&index).expect("index"),
        std::fs::read(&timeindex).expect("time"),
    );
    assert!(good.len() >= 16, "test needs a few index entries");
    let mut swapped = good.clone();
    swapped[..8].copy_from_slice(&good[8..16]);
    swapped[8..16].copy_from_slice(&good[..8]);
    for broken in [good[..good.len() - 3].to_vec(), swapped, vec![0xff; 16]] {
        std::fs::write(&index, &broken).expect("break index");
        std::fs::write(&timeindex, b"junk").expect("break time index");
        let p = open(dir.path(), cfg.clone());
        assert_eq!(std::fs::read(&index).expect("index"), good);
        assert_eq!(std::fs::read(&timeindex).expect("time"), good_time);
        for offset in 0..60 {
            let r = p.read(offset, 1).await.expect("read");
            let (base, last) = offsets(&r.records)[0];
            assert!(
                base <= offset && offset <= last,
                "offset {offset} read batch {base}..={last}"
            );
        }
        assert_eq!(
            p.offset_for_timestamp(155, &test_inspect())
                .await
                .expect("lookup"),
            Some((32, 160))
        );
    }
}

#[tokio::test]
async fn retention_by_size_deletes_whole_oldest_segments() {
    // Proves size retention deletes oldest sealed segments only, moves the log start offset to
    // the next segment's base, and reads below it are out of range.
    let dir = tempfile::tempdir().expect("tempdir");
    let one = b(2, 1).len() as u64;
    let cfg = LogConfig {
        segment_bytes_max: 2 * one,
        retention_bytes_max: Some(3 * one),
        ..config()
    };
    let p = open(dir.path(), cfg);
    for _ in 0..9 {
        p.append(b(2, now_ms()), 0).await.expect("append");
    }
    assert_eq!(log_files(dir.path()).len(), 5);
    let deleted = p.enforce_retention(now_ms()).await.expect("retention");
    // 9 batches = 4 full segments + 1; keep at least 3 batches' worth: drop the 3 oldest segments.
    assert_eq!(deleted, 3);
    assert_eq!(p.log_start_offset(), 12);
    assert_eq!(log_files(dir.path()).len(), 2);
    assert!(!dir.path().join("00000000000000000000.index").exists());
    assert!(p.size_bytes() >= 3 * one);
    assert!(matches!(
        p.read(11, 100).await,
        Err(LogError::OffsetOutOfRange { start: 12, .. })
    ));
    assert_eq!(read_all(&p).await.first(), Some(&(12, 13)));
    assert_eq!(
        p.append(b(1, 1), 0).await.expect("append").log_start_offset,
        12
    );
    assert_eq!(
        p.enforce_retention(now_ms()).await.expect("retention"),
        0,
        "active segment never deleted"
    );
}

#[tokio::test]
async fn retention_by_age_and_rolling_an_aged_active_segment() {
    // Proves age retention deletes sealed segments whose newest batch is too old, keeps newer
    // ones, and rolls then deletes an active segment that is entirely expired.
    let dir = tempfile::tempdir().expect("tempdir");
    let one = batch(1, 1, 40).len() as u64;
    let now = now_ms();
    let cfg = LogConfig {
        segment_bytes_max: 2 * one,
        retention_ms_max: Some(60_000),
        ..config()
    };
    let p = open(dir.path(), cfg);
    for ts in [
        now - 300_000,
        now - 200_000,
        now - 100_000,
        now - 90_000,
        now - 1_000,
        now,
    ] {
        p.append(Bytes::from(batch(1, ts, 40)), 0)
            .await
            .expect("append");
    }
    assert_eq!(p.enforce_retention(now).await.expect("retention"), 2);
    assert_eq!(p.log_start_offset(), 4);
    assert_eq!(read_all(&p).await, [(4, 4), (5, 5)]);
    // Much later everything is expired: the active segment is rolled, then deleted.
    assert_eq!(
        p.enforce_retention(now + 120_000).await.expect("retention"),
        1
    );
    assert_eq!((p.log_start_offset(), p.log_end_offset()), (6, 6));
    assert!(p.read(6, 100).await.expect("read").records.is_empty());
    assert!(matches!(
        p.read(5, 100).await,
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(p.append(b(1, now), 0).await.expect("append").base_offset, 6);
}

#[tokio::test]
async fn offset_for_timestamp_in_memory_and_on_disk() {
    // Proves timestamp lookups find the first record at or after the target across segments,
    // from in-memory indexes and (after reopen, sealed) from the index files; compressed
    // batches answer at batch granularity; max_timestamp finds the newest record.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_bytes_max: 1000,
        index_interval_bytes: 100,
        ..config()
    };
    let p = open(dir.path(), cfg.clone());
    for i in 0..20 {
        p.append(Bytes::from(batch_with(&[i * 100, i * 100 + 50], 30, 0)), 0)
            .await
            .expect("append");
    }
    p.append(Bytes::from(batch_with(&[5000, 5300, 5100], 30, 3)), 0)
        .await
        .expect("append lz4");
    p.append(Bytes::from(batch_with(&[4000], 30, 0)), 0)
        .await
        .expect("append");
    assert!(log_files(dir.path()).len() > 2);
    assert_eq!(
        p.offset_for_timestamp(-5, &test_inspect())
            .await
            .expect("ts"),
        Some((0, 0))
    );
    assert_eq!(
        p.offset_for_timestamp(0, &test_inspect())
            .await
            .expect("ts"),
        Some((0, 0))
    );
    assert_eq!(
        p.offset_for_timestamp(5200, &test_inspect())
            .await
            .expect("ts"),
        Some((40, 5300)),
        "compressed: base offset"
    );
    check_timestamps(&p).await;
    drop(p);
    check_timestamps(&open(dir.path(), cfg)).await;
}

async fn check_timestamps(p: &Partition) {
    assert_eq!(
        p.offset_for_timestamp(1, &test_inspect())
            .await
            .expect("ts"),
        Some((1, 50))
    );
    assert_eq!(
        p.offset_for_timestamp(720, &test_inspect())
            .await
            .expect("ts"),
        Some((15, 750))
    );
    assert_eq!(
        p.offset_for_timestamp(1901, &test_inspect())
            .await
            .expect("ts"),
        Some((39, 1950))
    );
    assert_eq!(
        p.offset_for_timestamp(1951, &test_inspect())
            .await
            .expect("ts"),
        Some((40, 5000)),
        "compressed, first record qualifies"
    );
    assert_eq!(
        p.offset_for_timestamp(4001, &test_inspect())
            .await
            .expect("ts"),
        Some((40, 5000))
    );
    assert_eq!(
        p.offset_for_timestamp(5301, &test_inspect())
            .await
            .expect("ts"),
        None
    );
    assert_eq!(
        p.max_timestamp(&test_inspect()).await.expect("max"),
        Some((40, 5300))
    );
}

#[tokio::test]
async fn high_watermark_wakes_subscribers_and_works_without_fsync() {
    // Proves subscribers see the high watermark move on append, with fsync_on_ack off too, and
    // flush and delete work.
    let dir = tempfile::tempdir().expect("tempdir");
    let pdir = dir.path().join("t-0");
    let p = Arc::new(open(
        &pdir,
        LogConfig {
            fsync_on_ack: false,
            ..config()
        },
    ));
    let mut rx = p.subscribe();
    assert_eq!(*rx.borrow_and_update(), 0);
    p.append(b(3, 1), 0).await.expect("append");
    tokio::time::timeout(std::time::Duration::from_secs(5), rx.changed())
        .await
        .expect("woken")
        .expect("sender alive");
    assert_eq!(*rx.borrow(), 3);
    p.flush().await.expect("flush");
    p.clone().delete().await.expect("delete");
    assert!(!pdir.exists());
    assert!(
        p.append(b(1, 1), 0).await.is_err(),
        "deleted partition refuses appends"
    );
}

/// Plain files whose fdatasync blocks until the test opens the gate.
#[derive(Debug, Clone, Default)]
struct GatedStorage {
    gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

#[derive(Debug)]
struct GatedFile {
    inner: crate::io::FileRef,
    gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl GatedStorage {
    fn open_gate(&self) {
        let (lock, cvar) = &*self.gate;
        *lock.lock().expect("gate") = true;
        cvar.notify_all();
    }
}

impl crate::io::StorageFile for GatedFile {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        let (lock, cvar) = &*self.gate;
        let mut open = lock.lock().expect("gate");
        while !*open {
            open = cvar.wait(open).expect("gate");
        }
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
}

impl crate::io::Storage for GatedStorage {
    fn open(&self, path: &Path, create: bool) -> std::io::Result<crate::io::FileRef> {
        let inner = crate::io::StdStorage.open(path, create)?;
        Ok(Arc::new(GatedFile {
            inner,
            gate: self.gate.clone(),
        }))
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        crate::io::StdStorage.remove_file(path)
    }
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        crate::io::StdStorage.create_dir_all(path)
    }
    fn remove_dir_all(&self, path: &Path) -> std::io::Result<()> {
        crate::io::StdStorage.remove_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        crate::io::StdStorage.sync_dir(dir)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_watermark_waits_for_the_fsync() {
    // Proves that with fsync_on_ack the log end offset moves at once but the high watermark,
    // the acks and what reads return wait until the fsync completes, then move in order.
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = GatedStorage::default();
    let writer = DiskWriter::start_with(WriterConfig::new(dir.path()), Arc::new(storage.clone()))
        .expect("writer");
    let p = Arc::new(Partition::open(dir.path(), config(), writer).expect("open"));
    let first = tokio::spawn({
        let p = p.clone();
        async move { p.append(b(2, 1), 0).await }
    });
    let second = tokio::spawn({
        let p = p.clone();
        async move { p.append(b(3, 1), 0).await }
    });
    for _ in 0..500 {
        if p.log_end_offset() == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert_eq!(
        p.log_end_offset(),
        5,
        "offsets are assigned before durability"
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(p.high_watermark(), 0, "nothing is visible before the fsync");
    assert!(p.read(0, 1 << 20).await.expect("read").records.is_empty());
    assert!(
        !first.is_finished() && !second.is_finished(),
        "acks wait for the fsync"
    );
    storage.open_gate();
    let a = first.await.expect("task").expect("append");
    let b2 = second.await.expect("task").expect("append");
    let mut got = [
        (a.base_offset, a.last_offset),
        (b2.base_offset, b2.last_offset),
    ];
    got.sort();
    // Either task may take the lock first; offsets are dense either way.
    assert!(
        got == [(0, 1), (2, 4)] || got == [(0, 2), (3, 4)],
        "{got:?}"
    );
    assert_eq!(p.high_watermark(), 5);
    assert_eq!(read_all(&p).await, got);
}

/// The ListOffsets lookup budget at the node's default size.
fn test_inspect() -> super::InspectBudget {
    super::InspectBudget::new(crate::config::Config::default().decompress_bytes_max)
}

#[tokio::test]
async fn batches_of_one_request_are_written_from_its_buffer() {
    // Proves an append of several batches sliced out of a bigger buffer (as a request's records
    // sit inside its frame) stores each batch as sent except its patched head (base offset,
    // leader epoch), in order, and leaves the caller's bytes untouched.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = open(dir.path(), config());
    p.append(b(2, 10), 0).await.expect("first append");
    let sent = [batch(3, 100, 7), batch(1, 200, 300), batch(4, 300, 1)];
    let frame = Bytes::from([b"frame head".to_vec(), sent.concat(), b"tail".to_vec()].concat());
    let records = frame.slice(10..frame.len() - 4);
    let before = frame.clone().to_vec();
    let a = p.append(records, 9).await.expect("append");
    assert_eq!((a.base_offset, a.last_offset), (2, 9));
    assert_eq!(frame, before, "the request's bytes are not modified");
    let r = p.read(2, 1 << 20).await.expect("read");
    let stored = batch::split(&r.records).expect("stored batches validate");
    assert_eq!(stored.len(), 3);
    for ((h, range), (sent, base)) in stored.iter().zip(sent.iter().zip([2, 5, 6])) {
        assert_eq!((h.base_offset, h.partition_leader_epoch), (base, 9));
        assert_eq!(&r.records[range.start + 16..range.end], &sent[16..]);
        assert_eq!(r.records[range.start + 8..range.start + 12], sent[8..12]);
    }
}
