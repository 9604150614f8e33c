//! log::segment: one segment of a partition: its three files (`<base>.log`, `.index`,
//! `.timeindex`, named by the 20-digit base offset) and what the partition knows about it in
//! memory. Also the bounded header reads every scan of a `.log` goes through.
//!
//! The `.log` holds Kafka v2 record batches back to back, byte-for-byte as produced except the
//! base offset and partition leader epoch (both outside the CRC), which the broker patches.

use std::path::{Path, PathBuf};

use crate::io::{FileRef, Storage, StorageFile};
use crate::protocol::batch::{self, ATTRIBUTES_AT, BatchHeader, HEADER_BYTES};

use super::LogError;
use super::index::{IndexBuilder, IndexEntry, TimeEntry};

pub fn file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

/// Base offset of a `.log` file name, None for anything else in the directory.
pub fn parse_log_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse::<i64>().ok()
}

pub fn io_error(path: &Path, source: std::io::Error) -> LogError {
    LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An on-disk inconsistency found while reading, reported as an I/O error (KAFKA_STORAGE_ERROR):
/// the client's data was fine, the disk's is not.
pub fn corrupt(path: &Path, what: String) -> LogError {
    io_error(
        path,
        std::io::Error::new(std::io::ErrorKind::InvalidData, what),
    )
}

/// In-memory indexes of the active segment (None once sealed: lookups then read the files).
#[derive(Debug, Default)]
pub struct MemIndex {
    pub index: Vec<IndexEntry>,
    pub time: Vec<TimeEntry>,
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: i64,
    pub dir: PathBuf,
    pub log: FileRef,
    pub index: FileRef,
    pub timeindex: FileRef,
    /// Bytes of `.log` handed to the writer (all on disk once the writer caught up).
    pub size_bytes: u64,
    /// Offset after the last batch appended.
    pub next_offset: i64,
    /// Entries handed to the writer in `.index` / `.timeindex`.
    pub index_entries: u64,
    pub time_entries: u64,
    pub builder: IndexBuilder,
    pub mem: Option<MemIndex>,
    /// Largest max_timestamp among batches below the high watermark, and its batch's base offset.
    pub visible_max: (i64, i64),
    /// When the segment counts as started for segment.ms (ms since the epoch); None while empty.
    pub roll_base_ms: Option<i64>,
}

pub struct SegmentFiles {
    pub log: FileRef,
    pub index: FileRef,
    pub timeindex: FileRef,
}

impl SegmentFiles {
    /// Opens (creating when `create`) the three files of segment `base` in `dir`.
    pub fn open(
        storage: &dyn Storage,
        dir: &Path,
        base: i64,
        create: bool,
    ) -> Result<SegmentFiles, LogError> {
        let open = |ext: &str, create: bool| {
            let path = dir.join(file_name(base, ext));
            storage.open(&path, create).map_err(|e| io_error(&path, e))
        };
        Ok(SegmentFiles {
            log: open("log", create)?,
            index: open("index", true)?,
            timeindex: open("timeindex", true)?,
        })
    }
}

impl Segment {
    pub fn new(dir: &Path, base_offset: i64, files: SegmentFiles, interval_bytes: u32) -> Segment {
        Segment {
            base_offset,
            dir: dir.to_path_buf(),
            log: files.log,
            index: files.index,
            timeindex: files.timeindex,
            size_bytes: 0,
            next_offset: base_offset,
            index_entries: 0,
            time_entries: 0,
            builder: IndexBuilder::new(interval_bytes),
            mem: Some(MemIndex::default()),
            visible_max: (-1, -1),
            roll_base_ms: None,
        }
    }

    pub fn paths(&self) -> [PathBuf; 3] {
        ["log", "index", "timeindex"].map(|ext| self.dir.join(file_name(self.base_offset, ext)))
    }

    /// Relative offset of `offset` in this segment, clamped into u32.
    pub fn relative(&self, offset: i64) -> u32 {
        u32::try_from(offset.saturating_sub(self.base_offset).max(0)).unwrap_or(u32::MAX)
    }
}

/// A stored batch at `position` of `log` that fails a check on a read (`damage`).
pub fn bad_batch(
    log: &dyn StorageFile,
    position: u64,
    offsets: std::ops::Range<i64>,
    why: String,
) -> LogError {
    LogError::CorruptStored {
        path: log.path().to_path_buf(),
        position,
        offsets,
        why,
    }
}

/// Reads and parses the batch header at `position`, refusing one that does not end by `end`.
pub fn read_header(
    log: &dyn StorageFile,
    position: u64,
    end: u64,
) -> Result<BatchHeader, LogError> {
    if position + HEADER_BYTES as u64 > end {
        let why = format!("partial batch header at byte {position}");
        return Err(bad_batch(log, position, 0..0, why));
    }
    let mut buf = [0u8; HEADER_BYTES];
    log.read_at(&mut buf, position)
        .map_err(|e| io_error(log.path(), e))?;
    let header = BatchHeader::parse(&buf).map_err(|e| {
        let why = format!("bad batch header at byte {position}: {e}");
        bad_batch(log, position, 0..0, why)
    })?;
    if position + header.total_bytes() as u64 > end {
        let why = format!("batch at byte {position} runs past byte {end}");
        let offsets = header.base_offset..header.last_offset().saturating_add(1);
        return Err(bad_batch(log, position, offsets, why));
    }
    Ok(header)
}

/// Whether `bytes` (one whole batch, header `header`) matches its CRC-32C: the check that
/// catches bytes changed on disk after the append validated them.
pub fn crc_matches(header: &BatchHeader, bytes: &[u8]) -> bool {
    bytes
        .get(ATTRIBUTES_AT..)
        .is_some_and(|covered| batch::crc32c(covered) == header.crc)
}

/// `crc_matches`, or the `CorruptStored` error naming the batch.
pub fn check_batch_crc(
    log: &dyn StorageFile,
    position: u64,
    header: &BatchHeader,
    bytes: &[u8],
) -> Result<(), LogError> {
    if crc_matches(header, bytes) {
        return Ok(());
    }
    let offsets = header.base_offset..header.last_offset().saturating_add(1);
    let why = format!("batch at byte {position} fails its crc-32c");
    Err(bad_batch(log, position, offsets, why))
}

/// Reads the whole batch whose header is `header` at `position`.
pub fn read_batch(
    log: &dyn StorageFile,
    position: u64,
    header: &BatchHeader,
) -> Result<Vec<u8>, LogError> {
    let mut buf = vec![0u8; header.total_bytes()];
    log.read_at(&mut buf, position)
        .map_err(|e| io_error(log.path(), e))?;
    Ok(buf)
}

/// Walks headers from `position` until a batch whose last offset is >= `offset` (returning its
/// position and header) or `end`. Bounded: every step advances by at least one header.
pub fn seek(
    log: &dyn StorageFile,
    mut position: u64,
    end: u64,
    offset: i64,
) -> Result<Option<(u64, BatchHeader)>, LogError> {
    while position < end {
        let h = read_header(log, position, end)?;
        if h.last_offset() >= offset {
            return Ok(Some((position, h)));
        }
        position += h.total_bytes() as u64;
    }
    Ok(None)
}

/// Reads at most `max` bytes of the small file `path` (a checkpoint [`replace_file`] wrote)
/// through `storage`, the door its writes went through, so a test backend's contents are what
/// is read. None when there is no such file. Blocking.
pub(super) fn read_small_file(
    storage: &dyn crate::io::Storage,
    path: &Path,
    max: u64,
) -> std::io::Result<Option<Vec<u8>>> {
    let file = match storage.open(path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.len()?.min(max);
    let mut bytes = vec![0u8; len as usize];
    file.read_at(&mut bytes, 0)?;
    Ok(Some(bytes))
}

/// Replaces `target` with `bytes` durably: written to `temp`, synced, renamed over `target`, the
/// directory synced. A power cut leaves the old file or the new one, never a mix. Blocking.
pub(super) fn replace_file(
    storage: &dyn crate::io::Storage,
    dir: &Path,
    temp: &Path,
    target: &Path,
    bytes: &[u8],
) -> Result<(), LogError> {
    let file = storage.open(temp, true).map_err(|e| io_error(temp, e))?;
    file.set_len(0).map_err(|e| io_error(temp, e))?;
    file.write_at(bytes, 0).map_err(|e| io_error(temp, e))?;
    file.sync_data().map_err(|e| io_error(temp, e))?;
    drop(file);
    storage
        .rename(temp, target)
        .map_err(|e| io_error(target, e))?;
    storage.sync_dir(dir).map_err(|e| io_error(dir, e))
}
