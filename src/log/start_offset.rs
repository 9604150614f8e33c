//! log::start_offset: a log start offset raised by DeleteRecords above the first segment's base,
//! kept in `<partition dir>/log-start-offset` (Kafka keeps the same figure in its
//! `log-start-offset-checkpoint`) so it survives a restart. Reads below it are out of range;
//! retention deletes whole segments that lie below it.
//!
//! The file is one decimal number and a newline, written to a temporary name, synced and renamed,
//! then the directory synced: a power cut leaves the old or the new figure, never a torn one.

use std::path::{Path, PathBuf};

use super::segment::io_error;
use super::{LogError, Partition};
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
pub(super) fn load(dir: &Path) -> i64 {
    let path = path(dir);
    let text = match std::fs::File::open(&path) {
        Ok(file) => {
            let mut text = String::new();
            use std::io::Read;
            match file.take(FILE_BYTES_MAX).read_to_string(&mut text) {
                Ok(_) => text,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "ignoring unreadable log start offset");
                    return 0;
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
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

fn store(storage: &dyn Storage, dir: &Path, offset: i64) -> Result<(), LogError> {
    let temp = dir.join(TEMP_NAME);
    let bytes = format!("{offset}\n");
    let file = storage.open(&temp, true).map_err(|e| io_error(&temp, e))?;
    file.set_len(0).map_err(|e| io_error(&temp, e))?;
    file.write_at(bytes.as_bytes(), 0)
        .map_err(|e| io_error(&temp, e))?;
    file.sync_data().map_err(|e| io_error(&temp, e))?;
    drop(file);
    let target = path(dir);
    storage
        .rename(&temp, &target)
        .map_err(|e| io_error(&target, e))?;
    storage.sync_dir(dir).map_err(|e| io_error(dir, e))
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
            (inner.log_start_offset(), inner.visible.offset)
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

    fn now() -> i64 {
        crate::log::now_ms()
    }

    #[test]
    fn corrupt_or_missing_file_is_no_floor() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()), 0);
        std::fs::write(path(dir.path()), "not a number").expect("write");
        assert_eq!(load(dir.path()), 0);
        std::fs::write(path(dir.path()), "42\n").expect("write");
        assert_eq!(load(dir.path()), 42);
    }
}
