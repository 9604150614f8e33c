//! log::start_offset: a log start offset raised by DeleteRecords above the first segment's base,
//! kept in `<partition dir>/log-start-offset` (Kafka keeps the same figure in its
//! `log-start-offset-checkpoint`) so it survives a restart. Reads below it are out of range;
//! retention deletes whole segments that lie below it. A floor found past the recovered log end
//! (a lost tail) restarts the log at the floor on open (`restart_past_lost_tail`).
//!
//! The file is one decimal number and a newline, written to a temporary name, synced and renamed,
//! then the directory synced: a power cut leaves the old or the new figure, never a torn one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::segment::{Segment, SegmentFiles, io_error};
use super::{LogError, Partition, snapshot};
use crate::io::Storage;

const FILE_NAME: &str = "log-start-offset";
const TEMP_NAME: &str = "log-start-offset.tmp";
/// Longest valid file: an i64 in decimal and a newline (bounds what a load reads).
const FILE_BYTES_MAX: u64 = 32;

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// The stored log start offset, or 0 when there is none. An unreadable file is logged and
/// ignored: the segments' own base offsets still bound the log, only the DeleteRecords floor
/// within the first segment is lost (records below it become readable again).
pub(super) fn load(storage: &dyn Storage, dir: &Path) -> i64 {
    let path = path(dir);
    let text = match super::segment::read_small_file(storage, &path, FILE_BYTES_MAX) {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(None) => return 0,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring unreadable log start offset");
            return 0;
        }
    };
    match text.trim().parse::<i64>() {
        Ok(offset) if offset >= 0 => offset,
        _ => {
            tracing::warn!(path = %path.display(), content = %text.trim(), "ignoring corrupt log start offset");
            0
        }
    }
}

/// On open, a stored floor past the recovered log end (a tail lost to a crash with
/// `fsync_on_ack=false`, or segment files removed by hand) restarts the log at the floor, as
/// Kafka's log loader does: every segment is deleted (all of it lies below the log start, so none
/// of it was readable) and an empty active segment opens at base = floor, so the next append gets
/// offset = floor. Without this, appends would land below the floor: acknowledged, never readable.
/// Producer snapshots go too (Kafka truncates the producer state fully). Crash-safe in any order:
/// whatever survives still ends below the floor and is restarted again on the next open.
pub(super) fn restart_past_lost_tail(
    storage: &dyn Storage,
    dir: &Path,
    segments: &mut BTreeMap<i64, Segment>,
    floor: i64,
    interval_bytes: u32,
) -> Result<bool, LogError> {
    let log_end = segments.last_key_value().map_or(0, |(_, s)| s.next_offset);
    if floor <= log_end {
        return Ok(false);
    }
    tracing::warn!(dir = %dir.display(), log_end_offset = log_end, log_start_offset = floor,
        "log start offset is past the log end (records lost since it was stored); deleting every segment and restarting the log at the log start offset");
    restart_at(storage, dir, segments, floor, interval_bytes)?;
    Ok(true)
}

/// Deletes every segment (and producer snapshot) and opens an empty active segment at `base`.
/// Crash-safe when the log start offset stored is `base`: whatever survives ends at or below it
/// and is restarted again on the next open (`restart_past_lost_tail`).
pub(super) fn restart_at(
    storage: &dyn Storage,
    dir: &Path,
    segments: &mut BTreeMap<i64, Segment>,
    base: i64,
    interval_bytes: u32,
) -> Result<(), LogError> {
    let floor = base;
    for seg in std::mem::take(segments).into_values() {
        for path in seg.paths() {
            match storage.remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path, e)),
            }
        }
    }
    snapshot::prune(storage, dir, i64::MAX);
    let files = SegmentFiles::open(storage, dir, floor, true)?;
    for file in [&files.log, &files.index, &files.timeindex] {
        file.set_len(0).map_err(|e| io_error(file.path(), e))?;
    }
    storage.sync_dir(dir).map_err(|e| io_error(dir, e))?;
    segments.insert(floor, Segment::new(dir, floor, files, interval_bytes));
    Ok(())
}

/// Persists `offset` as the log start offset (temporary file, sync, rename, directory sync).
pub(super) fn store(storage: &dyn Storage, dir: &Path, offset: i64) -> Result<(), LogError> {
    let bytes = format!("{offset}\n");
    super::segment::replace_file(
        storage,
        dir,
        &dir.join(TEMP_NAME),
        &path(dir),
        bytes.as_bytes(),
    )
}

impl Partition {
    /// DeleteRecords: raises the log start offset to `offset` (at most the high watermark) and
    /// persists it before answering; returns the log start offset afterwards (unchanged when it
    /// is already at or past `offset`).
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        // Serialised with appends, rolls and retention, which also move the log start.
        let _guard = self.append_lock.lock().await;
        self.check_usable().await?;
        let (start, high_watermark) = {
            let inner = self.shared.lock();
            (inner.log_start_offset(), inner.wm.hw.offset)
        };
        if offset < 0 || offset > high_watermark {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start,
                end: high_watermark,
            });
        }
        if offset <= start {
            return Ok(start);
        }
        // The file first: an answer never claims a start the disk does not have.
        store(&**self.writer.storage(), &self.shared.dir, offset)?;
        self.shared.lock().start_floor = offset;
        self.update_epochs(|c| c.truncate_from_start(offset))
            .await?;
        tracing::info!(dir = %self.shared.dir.display(), log_start_offset = offset, "deleted records below the new log start offset");
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::tests::{config, open};
    use super::*;
    use crate::log::LogConfig;
    use crate::protocol::batch::test_batches::batch;

    #[tokio::test]
    async fn delete_records_moves_the_start_persistently_and_retention_drops_segments_below() {
        let dir = tempfile::tempdir().expect("tempdir");
        let two = || Bytes::from(batch(2, 1, 20));
        // Two batches of two records per segment: bases 0, 4, 8.
        let cfg = LogConfig {
            segment_bytes_max: 2 * two().len() as u64,
            ..config()
        };
        {
            let p = open(dir.path(), cfg.clone());
            for _ in 0..5 {
                p.append(two(), 0).await.expect("append");
            }
            assert_eq!(p.delete_records_before(5).await.expect("delete"), 5);
            // Lower than the start: unchanged; past the high watermark: out of range.
            assert_eq!(p.delete_records_before(3).await.expect("delete"), 5);
            assert!(matches!(
                p.delete_records_before(11).await,
                Err(LogError::OffsetOutOfRange { .. })
            ));
            assert!(matches!(
                p.read(4, 1000).await,
                Err(LogError::OffsetOutOfRange { start: 5, .. })
            ));
            assert!(p.read(5, 1000).await.is_ok());
        }
        let p = open(dir.path(), cfg);
        assert_eq!(p.log_start_offset(), 5, "survives reopening");
        // Segment 0 lies wholly below 5; segment 4 holds offset 5 and stays.
        assert_eq!(p.enforce_retention(now()).await.expect("retention"), 1);
        assert_eq!(p.log_start_offset(), 5);
        assert!(!dir.path().join("00000000000000000000.log").exists());
        assert!(dir.path().join("00000000000000000004.log").exists());
    }

    #[tokio::test]
    async fn a_floor_past_a_lost_tail_restarts_the_log_at_the_floor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let two = || Bytes::from(batch(2, 1, 20));
        {
            let p = open(dir.path(), config());
            for _ in 0..5 {
                p.append(two(), 0).await.expect("append");
            }
            assert_eq!(p.delete_records_before(8).await.expect("delete"), 8);
        }
        // A crash with fsync_on_ack=false loses the last two batches (offsets 6..10), yet the
        // floor (synced on its own) survives.
        let log = dir.path().join("00000000000000000000.log");
        let len = std::fs::metadata(&log).expect("stat").len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .expect("open");
        file.set_len(len - 2 * two().len() as u64)
            .expect("truncate");
        drop(file);
        {
            let p = open(dir.path(), config());
            assert_eq!(p.log_start_offset(), 8);
            assert_eq!(p.log_end_offset(), 8, "the log restarts at the floor");
            let info = p.append(two(), 0).await.expect("append");
            assert_eq!(
                info.base_offset, 8,
                "a new append lands at the floor, readable"
            );
            let read = p.read(8, 1000).await.expect("read at the floor");
            assert!(!read.records.is_empty());
            assert!(!log.exists(), "the segment below the floor is gone");
        }
        let p = open(dir.path(), config());
        assert_eq!((p.log_start_offset(), p.log_end_offset()), (8, 10));
    }

    /// Two records a batch, log start offset 7. With `sealed`, two batches a segment (segments
    /// at 0, 4, 8), reopened so the lookups read the sealed segments' index files; otherwise one
    /// active segment (its in-memory index). The largest timestamps sit at offsets 1 and 6, both
    /// below the start; the batch at 6 straddles it.
    async fn deleted_below_seven(dir: &std::path::Path, sealed: bool) -> Partition {
        use crate::protocol::batch::test_batches::batch_with;
        let batches: [[i64; 2]; 5] = [
            [9000, 9050],
            [100, 150],
            [200, 250],
            [9500, 320],
            [400, 450],
        ];
        let size = batch_with(&batches[0], 20, 0).len() as u64;
        let cfg = LogConfig {
            segment_bytes_max: if sealed { 2 * size } else { 100 * size },
            ..config()
        };
        let p = open(dir, cfg.clone());
        for ts in &batches {
            p.append(Bytes::from(batch_with(ts, 20, 0)), 0)
                .await
                .expect("append");
        }
        assert_eq!(p.delete_records_before(7).await.expect("delete"), 7);
        if !sealed {
            return p;
        }
        drop(p);
        open(dir, cfg)
    }

    fn inspect() -> crate::log::InspectBudget {
        crate::log::InspectBudget::new(crate::config::Config::default().decompress_bytes_max)
    }

    #[tokio::test]
    async fn offset_for_timestamp_never_answers_below_the_log_start() {
        for sealed in [true, false] {
            let dir = tempfile::tempdir().expect("tempdir");
            let p = deleted_below_seven(dir.path(), sealed).await;
            let inspect = inspect();
            let at = |ts| p.offset_for_timestamp(ts, &inspect);
            let first = at(0).await.expect("ts");
            assert_eq!(
                first,
                Some((7, 320)),
                "first record from the start ({sealed})"
            );
            assert_eq!(at(321).await.expect("ts"), Some((8, 400)), "{sealed}");
            assert_eq!(
                at(9001).await.expect("ts"),
                None,
                "only deleted ones ({sealed})"
            );
        }
    }

    #[tokio::test]
    async fn max_timestamp_never_answers_below_the_log_start() {
        for sealed in [true, false] {
            let dir = tempfile::tempdir().expect("tempdir");
            let p = deleted_below_seven(dir.path(), sealed).await;
            assert_eq!(
                p.max_timestamp(&inspect()).await.expect("max"),
                Some((9, 450)),
                "the largest timestamp among the records still there ({sealed})"
            );
        }
    }

    fn now() -> i64 {
        crate::log::now_ms()
    }

    #[test]
    fn corrupt_or_missing_file_is_no_floor() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(&crate::io::StdStorage, dir.path()), 0);
        std::fs::write(path(dir.path()), "not a number").expect("write");
        assert_eq!(load(&crate::io::StdStorage, dir.path()), 0);
        std::fs::write(path(dir.path()), "42\n").expect("write");
        assert_eq!(load(&crate::io::StdStorage, dir.path()), 42);
    }
}
