//! log::snapshot: producer-state snapshot files, so reopening a partition restores the
//! idempotent producer state (`producers`) from one small file plus the batch headers after it
//! instead of losing every producer older than the newest two segments.
//!
//! When a roll seals a segment, `<base offset of the new segment>.snapshot` (20 digits, like the
//! segment files) is written with the complete state as of that offset: every producer the
//! partition remembers, not only recent ones. The state is taken under the append lock, where it
//! describes exactly the batches below the new base. Its write and fsync go to the disk writer as
//! a job queued right behind the seal job (one group commit covers both); once both completed,
//! the temp file is renamed into place and the roll's own directory sync (for the new segment's
//! files) makes the rename durable. The newest `SNAPSHOTS_KEPT` are kept.
//!
//! A snapshot is an optimisation, never the truth: an absent, unreadable or corrupt one (CRC,
//! length, any field out of range) only makes `producers::restore` use an older one, or fall back
//! to rescanning the newest segments. Invariants that keep a loaded one right:
//! - it is published only when every batch below its offset is durable (after the seal job) and
//!   no append of this partition failed (a failed batch would be in the state but not the log);
//! - on open, snapshots above the recovered log end (or above the point where recovery cut a torn
//!   segment) are deleted, and the deletion synced, before any append can reuse those offsets;
//! - retention deletes snapshots below the new log start offset; on load, producers whose last
//!   batch is below the log start offset are dropped.
//!
//! File layout, version 1 (integers big-endian, as in Kafka's own formats):
//!
//! ```text
//! offset      bytes  field
//! 0           4      magic "BRPS" (bramble producer snapshot)
//! 4           2      version (u16) = 1
//! 6           8      snapshot offset (i64): the state covers batches below it; equals the name
//! 14          4      entry count n (u32), at most PRODUCERS_MAX
//! 18          ...    n entries, ascending producer id, each:
//!   +0        8        producer id (i64, >= 0)
//!   +8        2        producer epoch (i16)
//!   +10       1        batch count k (u8), 1..=BATCHES_KEPT
//!   +11       24*k     k batches, oldest first, each:
//!     +0      4          first sequence (i32)
//!     +4      4          last sequence (i32)
//!     +8      8          base offset (i64)
//!     +16     8          last offset (i64), base <= last < snapshot offset
//! end-4       4      CRC-32C (Castagnoli, as record batches) of bytes [0, end-4)
//! ```
//!
//! Media: one file of at most `SNAPSHOT_BYTES_MAX` (about 131 KiB at PRODUCERS_MAX producers,
//! typically a few hundred bytes) and one fsync per roll, i.e. per segment_bytes_max of data.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::io::{Completion, FileRef, Job, Storage};
use crate::protocol::batch::Crc32c;

use super::producers::{BATCHES_KEPT, BatchMeta, Entry, PRODUCERS_MAX, Producers};
use super::segment::{file_name, io_error};
use super::{LogError, Partition, writer_error};

const MAGIC: [u8; 4] = *b"BRPS";
const VERSION: u16 = 1;
const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + MAGIC.len();
const OFFSET_AT: usize = VERSION_AT + 2;
const COUNT_AT: usize = OFFSET_AT + 8;
const ENTRIES_AT: usize = COUNT_AT + 4;
const CRC_BYTES: usize = 4;
/// Producer id, epoch and batch count.
const ENTRY_HEAD_BYTES: usize = 8 + 2 + 1;
/// First and last sequence, base and last offset.
const BATCH_BYTES: usize = 4 + 4 + 8 + 8;
/// The largest valid file: the bound on what a load reads.
pub const SNAPSHOT_BYTES_MAX: usize =
    ENTRIES_AT + PRODUCERS_MAX * (ENTRY_HEAD_BYTES + BATCHES_KEPT * BATCH_BYTES) + CRC_BYTES;
/// Snapshots kept per partition (newest first). More than one so a corrupt newest file still
/// leaves a recent one; each older one costs a longer header replay when it is the one used.
pub const SNAPSHOTS_KEPT: usize = 3;
/// Directory entries looked at when listing snapshots (bounds the walk).
const DIR_ENTRIES_MAX: usize = 1 << 20;
const EXTENSION: &str = "snapshot";
const TEMP_SUFFIX: &str = ".tmp";

/// `<dir>/<20-digit offset>.snapshot`.
pub fn path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(file_name(offset, EXTENSION))
}

fn temp_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{}{TEMP_SUFFIX}", file_name(offset, EXTENSION)))
}

/// The offset of a snapshot file name and whether it is a temp file; None for other files.
fn parse_name(name: &str) -> Option<(i64, bool)> {
    let (stem, temp) = match name.strip_suffix(TEMP_SUFFIX) {
        Some(stem) => (stem, true),
        None => (name, false),
    };
    let digits = stem.strip_suffix(EXTENSION)?.strip_suffix('.')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, temp))
}

/// The snapshot offsets in `dir` (ascending) and the offsets of leftover temp files.
fn list(dir: &Path) -> Result<(Vec<i64>, Vec<i64>), LogError> {
    let (mut done, mut temp) = (Vec::new(), Vec::new());
    let entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, e))?;
    for entry in entries.take(DIR_ENTRIES_MAX) {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        match entry.file_name().to_str().and_then(parse_name) {
            Some((offset, false)) => done.push(offset),
            Some((offset, true)) => temp.push(offset),
            None => {}
        }
    }
    done.sort_unstable();
    Ok((done, temp))
}

/// The file bytes of `producers` as of `offset` (layout in the module doc).
pub fn encode(offset: i64, producers: &Producers) -> Vec<u8> {
    let mut entries: Vec<(i64, &Entry)> = producers.iter().collect();
    entries.sort_unstable_by_key(|(id, _)| *id);
    let mut out = Vec::with_capacity(ENTRIES_AT + entries.len() * ENTRY_HEAD_BYTES + CRC_BYTES);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (id, entry) in entries {
        // Both bounded by `Producers` (BATCHES_KEPT per entry, PRODUCERS_MAX entries).
        debug_assert!(entry.batches.len() <= BATCHES_KEPT);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&entry.epoch.to_be_bytes());
        out.push(entry.batches.len() as u8);
        for b in &entry.batches {
            out.extend_from_slice(&b.first_seq.to_be_bytes());
            out.extend_from_slice(&b.last_seq.to_be_bytes());
            out.extend_from_slice(&b.base_offset.to_be_bytes());
            out.extend_from_slice(&b.last_offset.to_be_bytes());
        }
    }
    let mut crc = Crc32c::new();
    crc.update(&out);
    out.extend_from_slice(&crc.finish().to_be_bytes());
    out
}

/// Bounds-checked reads from a snapshot's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let end = self.at.checked_add(N).ok_or("length overflow")?;
        let got = self
            .bytes
            .get(self.at..end)
            .ok_or_else(|| format!("truncated at byte {}", self.at))?;
        self.at = end;
        got.try_into().map_err(|_| "short read".to_string())
    }
}

/// Parses and checks a snapshot file's bytes; `expected_offset` comes from its name.
pub fn decode(bytes: &[u8], expected_offset: i64) -> Result<Producers, String> {
    if bytes.len() < ENTRIES_AT + CRC_BYTES || bytes.len() > SNAPSHOT_BYTES_MAX {
        return Err(format!("size {} bytes out of range", bytes.len()));
    }
    let (body, stored) = bytes.split_at(bytes.len() - CRC_BYTES);
    let mut crc = Crc32c::new();
    crc.update(body);
    let stored = u32::from_be_bytes(stored.try_into().map_err(|_| "short crc")?);
    if crc.finish() != stored {
        return Err("crc-32c mismatch".to_string());
    }
    let mut c = Cursor { bytes: body, at: 0 };
    if c.take::<4>()? != MAGIC {
        return Err("bad magic".to_string());
    }
    let version = u16::from_be_bytes(c.take()?);
    if version != VERSION {
        return Err(format!("unknown version {version}"));
    }
    let offset = i64::from_be_bytes(c.take()?);
    if offset != expected_offset {
        return Err(format!("holds offset {offset}, named {expected_offset}"));
    }
    let count = u32::from_be_bytes(c.take()?) as usize;
    if count > PRODUCERS_MAX {
        return Err(format!("{count} producers, more than {PRODUCERS_MAX}"));
    }
    let mut producers = Producers::default();
    for _ in 0..count {
        let (id, entry) = decode_entry(&mut c, offset)?;
        if !producers.insert_loaded(id, entry) {
            return Err(format!("producer {id} twice"));
        }
    }
    if c.at != body.len() {
        return Err(format!("{} bytes after the entries", body.len() - c.at));
    }
    Ok(producers)
}

fn decode_entry(c: &mut Cursor<'_>, offset: i64) -> Result<(i64, Entry), String> {
    let id = i64::from_be_bytes(c.take()?);
    let epoch = i16::from_be_bytes(c.take()?);
    let [k] = c.take::<1>()?;
    if id < 0 || k == 0 || usize::from(k) > BATCHES_KEPT {
        return Err(format!("producer {id}: bad id or batch count {k}"));
    }
    let mut entry = Entry {
        epoch,
        batches: Default::default(),
    };
    let mut floor = i64::MIN;
    for _ in 0..k {
        let b = BatchMeta {
            first_seq: i32::from_be_bytes(c.take()?),
            last_seq: i32::from_be_bytes(c.take()?),
            base_offset: i64::from_be_bytes(c.take()?),
            last_offset: i64::from_be_bytes(c.take()?),
        };
        // Batches of one producer are in offset order, all below the snapshot's offset.
        if b.base_offset < floor || b.base_offset > b.last_offset || b.last_offset >= offset {
            return Err(format!(
                "producer {id}: batch offsets out of order or range"
            ));
        }
        floor = b.last_offset.saturating_add(1);
        entry.batches.push_back(b);
    }
    Ok((id, entry))
}

/// Reads and decodes the snapshot at `offset`; any failure is the reason it is not used.
fn read(storage: &dyn Storage, dir: &Path, offset: i64) -> Result<Producers, String> {
    let path = path(dir, offset);
    let file = storage.open(&path, false).map_err(|e| e.to_string())?;
    let len = file.len().map_err(|e| e.to_string())?;
    if len > SNAPSHOT_BYTES_MAX as u64 {
        return Err(format!("{len} bytes, more than {SNAPSHOT_BYTES_MAX}"));
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_at(&mut bytes, 0).map_err(|e| e.to_string())?;
    decode(&bytes, offset)
}

/// Removes `path`, a missing file counting as removed.
fn remove(storage: &dyn Storage, path: &Path) -> Result<(), LogError> {
    match storage.remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(path, e)),
        _ => Ok(()),
    }
}

/// On open, after recovery: deletes temp leftovers and every snapshot above `valid_end` (synced:
/// once appends reuse those offsets, such a file would describe batches that are not in the log),
/// then returns the newest snapshot that reads back, trying older ones after a bad one.
pub fn load_newest(
    storage: &dyn Storage,
    dir: &Path,
    valid_end: i64,
) -> Result<Option<(i64, Producers)>, LogError> {
    let (done, temp) = list(dir)?;
    let (usable, beyond): (Vec<i64>, Vec<i64>) = done.into_iter().partition(|&o| o <= valid_end);
    for &offset in &beyond {
        tracing::warn!(dir = %dir.display(), offset, valid_end, "deleting producer snapshot beyond the recovered log end");
        remove(storage, &path(dir, offset))?;
    }
    for &offset in &temp {
        remove(storage, &temp_path(dir, offset))?;
    }
    if !beyond.is_empty() {
        storage.sync_dir(dir).map_err(|e| io_error(dir, e))?;
    }
    for &offset in usable.iter().rev() {
        match read(storage, dir, offset) {
            Ok(producers) => return Ok(Some((offset, producers))),
            Err(reason) => {
                tracing::warn!(dir = %dir.display(), offset, %reason, "producer snapshot not usable; trying an older one");
            }
        }
    }
    Ok(None)
}

/// Deletes all but the newest SNAPSHOTS_KEPT snapshots, and any below `log_start`. Not synced: a
/// deletion lost to a power cut leaves a snapshot that is still true as of its offset. Failures
/// are logged only (a leftover costs a few bytes; the next prune retries).
pub fn prune(storage: &dyn Storage, dir: &Path, log_start: i64) {
    let done = match list(dir) {
        Ok((done, _)) => done,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list producer snapshots to prune");
            return;
        }
    };
    let keep_from = done.len().saturating_sub(SNAPSHOTS_KEPT);
    for (i, &offset) in done.iter().enumerate() {
        if (i < keep_from || offset < log_start)
            && let Err(e) = remove(storage, &path(dir, offset))
        {
            tracing::warn!(error = %e, "cannot delete an old producer snapshot");
        }
    }
}

/// A snapshot whose write and fsync are queued behind a seal job.
pub(super) struct Pending {
    offset: i64,
    temp: PathBuf,
    /// Kept open until the job completed (the writer holds its own reference meanwhile).
    _file: FileRef,
    done: Completion,
}

impl Partition {
    /// Queues the write and fsync of `bytes` (the state as of `offset`) to the temp file, right
    /// behind the seal job. None (logged) if that cannot be started: the roll goes on without.
    pub(super) async fn snapshot_queue(&self, offset: i64, bytes: Vec<u8>) -> Option<Pending> {
        let dir = &self.shared.dir;
        let temp = temp_path(dir, offset);
        let opened = self.writer.storage().open(&temp, true).and_then(|f| {
            f.set_len(0)?; // a leftover of the same name must not leave stale bytes at its end
            Ok(f)
        });
        let file = match opened {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(path = %temp.display(), error = %e, "cannot start a producer snapshot");
                return None;
            }
        };
        let mut job = Job::new();
        job.write(&file, 0, Bytes::from(bytes)).sync(&file);
        match self.writer.submit(job).await {
            Ok(done) => Some(Pending {
                offset,
                temp,
                _file: file,
                done,
            }),
            Err(e) => {
                tracing::warn!(error = %writer_error(e), "cannot queue a producer snapshot");
                None
            }
        }
    }

    /// Once the seal completed: renames the synced temp file into place, if its job succeeded and
    /// no append of this partition failed. The caller's directory sync makes the rename durable.
    /// Returns whether the snapshot was published.
    pub(super) async fn snapshot_publish(&self, pending: Pending) -> bool {
        let storage = self.writer.storage();
        let written = pending.done.wait().await;
        let failed = self.shared.failed.load(std::sync::atomic::Ordering::SeqCst);
        let renamed = match written {
            Err(e) => Err(writer_error(e)),
            Ok(()) if failed => Err(io_error(
                &pending.temp,
                std::io::Error::other("an append failed: the state may hold a batch not on disk"),
            )),
            Ok(()) => {
                let to = path(&self.shared.dir, pending.offset);
                storage
                    .rename(&pending.temp, &to)
                    .map_err(|e| io_error(&pending.temp, e))
            }
        };
        if let Err(e) = renamed {
            tracing::warn!(error = %e, offset = pending.offset, "producer snapshot not written");
            let _ = remove(&**storage, &pending.temp);
            return false;
        }
        true
    }
}
