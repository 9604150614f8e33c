//! log::compaction: the cleaner of topics whose `cleanup.policy` contains `compact`. Called
//! periodically by the broker (`Partition::compact`), beside retention; it never takes the append
//! lock, so appends and fetches go on while it reads and rewrites.
//!
//! One pass over a partition:
//! 1. Snapshot the sealed segments that are cleanable (oldest first, while they lie wholly below
//!    the high watermark and their newest record is older than `min.compaction.lag.ms`) and, when all of them are, the readable part of the
//!    active segment. The active segment is never rewritten.
//! 2. Build the offset map: a 128-bit hash of each key to the latest offset holding it, over that
//!    snapshot, at most `OFFSET_MAP_KEYS_MAX` keys (a full map ends the pass at the segment
//!    where it filled, as Kafka's cleaner does).
//! 3. For each fully mapped sealed segment, oldest first (so an older value is always gone from
//!    disk before the tombstone that hides it): keep a record unless the map holds a later offset
//!    for its key; drop a latest-for-its-key tombstone once the segment has not been written for
//!    `delete.retention.ms` (its `.log` mtime: when it was sealed or last cleaned, so a consumer
//!    that reads a segment within that time of it being written sees its tombstones; Kafka counts
//!    from the first cleaning instead). A segment that loses nothing is not rewritten (SD wear).
//! 4. A segment that changes is written to `.cleaned` files, synced, and swapped in (below).
//!
//! What is kept as is: control and transactional batches, batches whose records cannot be read
//! (unknown codec, corrupt or oversized compressed data, larger than `BATCH_BYTES_MAX`), and
//! records without a key (Kafka refuses them on produce to a compacted topic; this broker does
//! not yet, so a cleaner that dropped them would lose data silently). Batches that lose records
//! are re-encoded by `records::rewrite`: uncompressed, same base offset, offset range, producer
//! id/epoch/base sequence. Offsets never change; a segment's batches may then have gaps between
//! and inside them, which reads skip (`read` returns the batch holding or following an offset).
//! A segment may end up empty; it keeps its (empty) files until retention takes it.
//!
//! Swap protocol for segment `B` (each rename is atomic; a crash leaves one of these states):
//!
//! ```text
//! step  action                                         on disk after it          recovery on open
//!  1    write + fsync B.{log,index,timeindex}.cleaned  old B + B.*.cleaned       delete B.*.cleaned
//!  2    rename B.index.cleaned -> B.index.swap,        old B + B.index.swap,     delete B.*.cleaned
//!       B.timeindex.cleaned -> B.timeindex.swap        B.timeindex.swap, ...     and B.*.swap
//!  3    rename B.log.cleaned -> B.log.swap; sync dir   old B + B.*.swap          COMMITTED: finish
//!       (the commit point: B.log.swap exists)                                    step 4
//!  4    rename B.index.swap -> B.index,                B.index new, B.log old,   rename what .swap
//!       B.timeindex.swap -> B.timeindex,               B.log.swap                is left, B.log.swap
//!       B.log.swap -> B.log (last); sync dir                                     last; sync dir
//!  5    install the new files in the segment map       new B                     nothing to do
//! ```
//!
//! So `B.log.swap` is the one flag: with it, the new segment wins and recovery finishes the
//! renames; without it, every `.cleaned`/`.swap` file of `B` is an unfinished attempt and goes.
//! Renaming over `B.log` replaces the directory entry only: readers that snapshotted the old file
//! handle keep reading the old bytes until they finish, and step 5 swaps the handles under the
//! partition's state lock. The cleaner lock keeps retention from deleting a segment mid-swap.
//!
//! The `.cleaned` files are written through the storage backend directly (not the disk writer):
//! they are new files nobody appends to, and going around the writer keeps the cleaner's bulk
//! writes from delaying the group commit of appends.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::io::{FileRef, Storage};
use crate::protocol::batch::BatchHeader;

use super::index::IndexBuilder;
use super::records::{self, Record};
use super::segment::{self, SegmentFiles, file_name, io_error, read_header};
use super::{LogError, Partition};

/// Keys one pass of the offset map may hold (about 40 bytes each with the hash map's overhead,
/// so ~10 MiB): a small board's budget. A topic with more live keys is cleaned over several passes.
pub const OFFSET_MAP_KEYS_MAX: usize = 1 << 18;
/// Largest batch the cleaner loads to look at its records; a larger one is copied whole.
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Bounded chunk for copying a batch that is not loaded, and the output buffer before a write.
const COPY_CHUNK_BYTES: usize = 64 * 1024;
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;
/// Directory entries looked at when recovering half-done swaps (bounds the walk).
const DIR_ENTRIES_MAX: usize = 4 << 20;
const CLEANED: &str = "cleaned";
const SWAP: &str = "swap";
/// The files of a segment, the `.log` last: its `.swap` is the commit flag.
const EXTENSIONS: [&str; 3] = ["index", "timeindex", "log"];

/// What `cleanup.policy` and the compaction settings ask of a partition. Kept apart from
/// `LogConfig` because only the cleaner, retention and produce's null-key check (`api::produce`) read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cleanup {
    /// `compact` in cleanup.policy: the cleaner runs.
    pub compact: bool,
    /// `delete` in cleanup.policy: time and size retention delete segments.
    pub delete: bool,
    /// [delete.retention.ms] how long a tombstone outlives the last write of its segment.
    pub delete_retention_ms: u64,
    /// [min.compaction.lag.ms] segments whose newest record is younger are not cleaned.
    pub compaction_lag_ms_min: u64,
}

impl Default for Cleanup {
    fn default() -> Self {
        Cleanup {
            compact: false,
            delete: true,
            delete_retention_ms: 24 * 3600 * 1000,
            compaction_lag_ms_min: 0,
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionStats {
    pub segments_rewritten: usize,
    pub records_dropped: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// One segment as the cleaner sees it (a snapshot taken under the state lock).
#[derive(Debug, Clone)]
struct View {
    base: i64,
    log: FileRef,
    end: u64,
}

/// Key hash to the latest offset holding that key.
type OffsetMap = HashMap<u128, i64>;

/// 128 bits of SipHash (two fixed-key hashers): a collision, which would drop a live record, is
/// as unlikely as with Kafka's MD5-based map. Only ever compared within one process.
fn key_hash(key: &[u8]) -> u128 {
    let mut hi = DefaultHasher::new();
    hi.write_u8(0x5a);
    hi.write(key);
    let mut lo = DefaultHasher::new();
    lo.write_u8(0xa5);
    lo.write(key);
    (u128::from(hi.finish()) << 64) | u128::from(lo.finish())
}

async fn blocking<T: Send + 'static>(
    dir: &Path,
    f: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io_error(dir, std::io::Error::other(e)))?
}

impl Partition {
    /// The compaction settings (default: `delete` only).
    pub fn cleanup(&self) -> Cleanup {
        self.shared.lock().cleanup.clone()
    }

    /// New settings apply from the next retention or compaction pass.
    pub fn set_cleanup(&self, cleanup: Cleanup) {
        self.shared.lock().cleanup = cleanup;
    }

    /// One cleaner pass (see the module doc); does nothing unless cleanup.policy has `compact`.
    pub async fn compact(&self, now_ms: i64) -> Result<CompactionStats, LogError> {
        let _cleaner = self.cleaner_lock.lock().await;
        let mut stats = CompactionStats::default();
        let Some((cleanup, sealed, mapped)) = self.compaction_snapshot(now_ms) else {
            return Ok(stats);
        };
        let dir = self.shared.dir.clone();
        let full = blocking(&dir, move || build_map(&mapped)).await?;
        let (map, mapped_segments) = (Arc::new(full.0), full.1);
        let storage = self.writer.storage().clone();
        let interval = self.shared.lock().config.index_interval_bytes;
        // Bounded by the sealed segment count; oldest first (see the module doc).
        for view in sealed.into_iter().take(mapped_segments) {
            let mtime = mtime_ms(&dir.join(file_name(view.base, "log")));
            let drop_tombstones = mtime.is_some_and(|t| {
                let keep = i64::try_from(cleanup.delete_retention_ms).unwrap_or(i64::MAX);
                now_ms.saturating_sub(t) >= keep
            });
            let job = Job {
                storage: storage.clone(),
                dir: dir.clone(),
                view,
                map: map.clone(),
                drop_tombstones,
                interval,
            };
            let Some(cleaned) = blocking(&dir, move || job.run()).await? else {
                continue;
            };
            stats.segments_rewritten += 1;
            stats.records_dropped += cleaned.dropped;
            stats.bytes_before += cleaned.before;
            stats.bytes_after += cleaned.size_bytes;
            self.install(cleaned)?;
        }
        Ok(stats)
    }

    /// The cleanup settings, the cleanable sealed segments and the views the map covers; None
    /// when the cleaner has nothing to do here.
    fn compaction_snapshot(&self, now_ms: i64) -> Option<(Cleanup, Vec<View>, Vec<View>)> {
        let inner = self.shared.lock();
        if !inner.cleanup.compact || inner.deleted || self.is_failed() {
            return None;
        }
        let lag = i64::try_from(inner.cleanup.compaction_lag_ms_min).unwrap_or(i64::MAX);
        let sealed_count = inner.segments.len().saturating_sub(1);
        let mut sealed = Vec::new();
        let hw = inner.wm.hw.offset;
        for seg in inner.segments.values().take(sealed_count) {
            // Never at or above the high watermark (Kafka's rule): a follower may yet truncate
            // those records, and consumers have not seen them.
            if seg.next_offset > hw {
                break;
            }
            let newest = seg.visible_max.0;
            if seg.size_bytes > 0 && lag > 0 && (newest < 0 || now_ms.saturating_sub(newest) < lag)
            {
                break;
            }
            sealed.push(View {
                base: seg.base_offset,
                log: seg.log.clone(),
                end: seg.size_bytes,
            });
        }
        if sealed.is_empty() {
            return None;
        }
        let mut mapped = sealed.clone();
        if sealed.len() == sealed_count
            && let Some(active) = inner.active()
        {
            mapped.push(View {
                base: active.base_offset,
                log: active.log.clone(),
                end: super::Inner::readable_end(active, inner.wm.hw),
            });
        }
        Some((inner.cleanup.clone(), sealed, mapped))
    }

    /// Whether a write or sync failed and the partition has not re-checked itself since
    /// (`resume`): until then it acknowledges nothing, so a leader hands its leadership over.
    pub fn is_failed(&self) -> bool {
        self.shared.failed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Step 5: points the segment map at the swapped-in files. Readers that took the old handles
    /// finish on them.
    fn install(&self, cleaned: Cleaned) -> Result<(), LogError> {
        let storage = self.writer.storage().clone();
        let files = SegmentFiles::open(&*storage, &self.shared.dir, cleaned.base, false)?;
        let mut inner = self.shared.lock();
        if inner.deleted {
            return Ok(());
        }
        // A segment sealed with no append since holds the high watermark's (and the durable
        // end's) byte position, which pointed into the old file: only segments wholly below the
        // HW are cleaned, so all of the new file is readable. No mark lies in such a segment.
        inner.wm.segment_rewritten(cleaned.base, cleaned.size_bytes);
        let Some(seg) = inner.segments.get_mut(&cleaned.base) else {
            return Ok(());
        };
        seg.log = files.log;
        seg.index = files.index;
        seg.timeindex = files.timeindex;
        seg.size_bytes = cleaned.size_bytes;
        seg.index_entries = cleaned.index_entries;
        seg.time_entries = cleaned.time_entries;
        seg.visible_max = (
            cleaned.builder.max_timestamp,
            cleaned.builder.max_timestamp_offset,
        );
        seg.builder = cleaned.builder;
        tracing::info!(dir = %self.shared.dir.display(), base_offset = cleaned.base, records_dropped = cleaned.dropped, bytes_before = cleaned.before, bytes_after = cleaned.size_bytes, "compacted segment");
        Ok(())
    }
}

/// Walks the batches of `log` up to `end`, handing each header and (when at most
/// `BATCH_BYTES_MAX`) its bytes to `f`. Bounded: each step advances by a whole batch.
fn for_each_batch(
    log: &FileRef,
    end: u64,
    mut f: impl FnMut(u64, &BatchHeader, Option<&[u8]>) -> Result<bool, LogError>,
) -> Result<(), LogError> {
    let mut position = 0u64;
    while position < end {
        let header = read_header(&**log, position, end)?;
        let bytes = if header.total_bytes() <= BATCH_BYTES_MAX {
            Some(segment::read_batch(&**log, position, &header)?)
        } else {
            None
        };
        if !f(position, &header, bytes.as_deref())? {
            break;
        }
        position += header.total_bytes() as u64;
    }
    Ok(())
}

/// The records of a batch the cleaner may touch; None for batches kept whole as they are.
fn cleanable_records<'a>(header: &BatchHeader, section: &'a [u8]) -> Option<Vec<Record<'a>>> {
    if header.is_control() || header.is_transactional() {
        return None;
    }
    records::parse_all(section, header)
}

/// Step 2: the offset map over `views`, and how many of them it covers completely.
fn build_map(views: &[View]) -> Result<(OffsetMap, usize), LogError> {
    let mut map = OffsetMap::new();
    for (i, view) in views.iter().enumerate() {
        let mut full = false;
        for_each_batch(&view.log, view.end, |_, header, bytes| {
            let Some(section) = bytes.and_then(|b| records::section(b, header)) else {
                return Ok(true);
            };
            for record in cleanable_records(header, &section).unwrap_or_default() {
                let Some(key) = record.key else { continue };
                let hash = key_hash(key);
                if map.len() >= OFFSET_MAP_KEYS_MAX && !map.contains_key(&hash) {
                    full = true;
                    return Ok(false);
                }
                map.insert(hash, record.offset);
            }
            Ok(true)
        })?;
        if full {
            tracing::info!(
                keys = map.len(),
                segment = view.base,
                "offset map full; cleaning stops before this segment"
            );
            return Ok((map, i));
        }
    }
    Ok((map, views.len()))
}

/// What the cleaner does with one batch.
enum Decision {
    Keep,
    Drop(u64),
    Rewrite(Vec<u8>, u64),
}

fn decide(
    header: &BatchHeader,
    bytes: Option<&[u8]>,
    map: &OffsetMap,
    drop_tombstones: bool,
) -> Decision {
    let Some(bytes) = bytes else {
        return Decision::Keep;
    };
    let Some(section) = records::section(bytes, header) else {
        return Decision::Keep;
    };
    let Some(all) = cleanable_records(header, &section) else {
        return Decision::Keep;
    };
    let keep = |r: &Record<'_>| {
        let Some(key) = r.key else { return true };
        match map.get(&key_hash(key)) {
            Some(&latest) if latest > r.offset => false,
            Some(&latest) if latest == r.offset => !(r.tombstone && drop_tombstones),
            _ => true,
        }
    };
    let kept: Vec<Record<'_>> = all.iter().copied().filter(keep).collect();
    let dropped = (all.len() - kept.len()) as u64;
    if dropped == 0 {
        return Decision::Keep;
    }
    if kept.is_empty() {
        return Decision::Drop(dropped);
    }
    match records::rewrite(bytes, header, &kept) {
        Some(out) => Decision::Rewrite(out, dropped),
        None => Decision::Keep,
    }
}

/// A segment rewritten and swapped in on disk (steps 1-4), for `install`.
struct Cleaned {
    base: i64,
    before: u64,
    size_bytes: u64,
    index_entries: u64,
    time_entries: u64,
    builder: IndexBuilder,
    dropped: u64,
}

/// Cleaning one sealed segment, run on a blocking thread.
struct Job {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    view: View,
    map: Arc<OffsetMap>,
    drop_tombstones: bool,
    interval: u32,
}

impl Job {
    /// Steps 1-4 for one segment; None when nothing in it would change.
    fn run(self) -> Result<Option<Cleaned>, LogError> {
        let mut changes = false;
        for_each_batch(&self.view.log, self.view.end, |_, h, bytes| {
            changes = !matches!(
                decide(h, bytes, &self.map, self.drop_tombstones),
                Decision::Keep
            );
            Ok(!changes)
        })?;
        if !changes {
            return Ok(None);
        }
        let cleaned = self.write_cleaned()?;
        swap_in(&*self.storage, &self.dir, self.view.base)?;
        Ok(Some(cleaned))
    }

    /// Step 1: the kept batches and their indexes into `B.*.cleaned`, synced.
    fn write_cleaned(&self) -> Result<Cleaned, LogError> {
        let base = self.view.base;
        let out = open_set(&*self.storage, &self.dir, base, CLEANED)?;
        let mut builder = IndexBuilder::new(self.interval);
        let (mut index_bytes, mut time_bytes) = (Vec::new(), Vec::new());
        let (mut index_entries, mut time_entries) = (0u64, 0u64);
        let mut buf: Vec<u8> = Vec::new();
        let (mut written, mut position, mut dropped) = (0u64, 0u64, 0u64);
        let log_out = &out[2];
        for_each_batch(&self.view.log, self.view.end, |at, h, bytes| {
            let mut max_timestamp = h.max_timestamp;
            let kept: Option<&[u8]> = match decide(h, bytes, &self.map, self.drop_tombstones) {
                Decision::Drop(n) => {
                    dropped += n;
                    return Ok(true);
                }
                Decision::Rewrite(b, n) => {
                    dropped += n;
                    max_timestamp =
                        BatchHeader::parse(&b).map_or(max_timestamp, |r| r.max_timestamp);
                    buf.extend_from_slice(&b);
                    None
                }
                Decision::Keep => bytes,
            };
            match (kept, bytes) {
                (Some(b), _) => buf.extend_from_slice(b),
                (None, None) => {
                    flush(log_out, &mut buf, &mut written)?;
                    copy_range(&self.view.log, log_out, at, h.total_bytes() as u64, written)?;
                    written += h.total_bytes() as u64;
                }
                (None, Some(_)) => {}
            }
            let size = (written + buf.len() as u64) - position;
            let (ie, te) = builder.add_batch(base, h.base_offset, position, size, max_timestamp);
            ie.iter().for_each(|e| e.encode(&mut index_bytes));
            te.iter().for_each(|e| e.encode(&mut time_bytes));
            index_entries += u64::from(ie.is_some());
            time_entries += u64::from(te.is_some());
            position += size;
            if buf.len() >= WRITE_BUFFER_BYTES {
                flush(log_out, &mut buf, &mut written)?;
            }
            Ok(true)
        })?;
        flush(log_out, &mut buf, &mut written)?;
        write_file(&out[0], &index_bytes)?;
        write_file(&out[1], &time_bytes)?;
        for file in &out {
            file.sync_data().map_err(|e| io_error(file.path(), e))?;
        }
        Ok(Cleaned {
            base,
            before: self.view.end,
            size_bytes: written,
            index_entries,
            time_entries,
            builder,
            dropped,
        })
    }
}

fn write_file(file: &FileRef, bytes: &[u8]) -> Result<(), LogError> {
    file.write_at(bytes, 0)
        .map_err(|e| io_error(file.path(), e))
}

fn flush(file: &FileRef, buf: &mut Vec<u8>, written: &mut u64) -> Result<(), LogError> {
    if buf.is_empty() {
        return Ok(());
    }
    file.write_at(buf, *written)
        .map_err(|e| io_error(file.path(), e))?;
    *written += buf.len() as u64;
    buf.clear();
    Ok(())
}

/// Copies `len` bytes at `from` of `src` to `to` of `dst` in bounded chunks.
fn copy_range(src: &FileRef, dst: &FileRef, from: u64, len: u64, to: u64) -> Result<(), LogError> {
    let mut chunk = vec![0u8; COPY_CHUNK_BYTES];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(COPY_CHUNK_BYTES as u64) as usize;
        src.read_at(&mut chunk[..n], from + done)
            .map_err(|e| io_error(src.path(), e))?;
        dst.write_at(&chunk[..n], to + done)
            .map_err(|e| io_error(dst.path(), e))?;
        done += n as u64;
    }
    Ok(())
}

/// `B.<ext>.<suffix>` for the three extensions (index, timeindex, log), created empty.
fn open_set(
    storage: &dyn Storage,
    dir: &Path,
    base: i64,
    suffix: &str,
) -> Result<[FileRef; 3], LogError> {
    let open = |ext: &str| {
        let path = temp_path(dir, base, ext, suffix);
        let file = storage.open(&path, true).map_err(|e| io_error(&path, e))?;
        file.set_len(0).map_err(|e| io_error(&path, e))?;
        Ok::<FileRef, LogError>(file)
    };
    Ok([
        open(EXTENSIONS[0])?,
        open(EXTENSIONS[1])?,
        open(EXTENSIONS[2])?,
    ])
}

fn temp_path(dir: &Path, base: i64, ext: &str, suffix: &str) -> PathBuf {
    dir.join(format!("{}.{suffix}", file_name(base, ext)))
}

fn rename(storage: &dyn Storage, from: &Path, to: &Path) -> Result<(), LogError> {
    storage.rename(from, to).map_err(|e| io_error(from, e))
}

fn sync_dir(storage: &dyn Storage, dir: &Path) -> Result<(), LogError> {
    storage.sync_dir(dir).map_err(|e| io_error(dir, e))
}

/// Steps 2-4 of the swap protocol for segment `base` (the `.cleaned` files are synced).
fn swap_in(storage: &dyn Storage, dir: &Path, base: i64) -> Result<(), LogError> {
    for ext in EXTENSIONS {
        let cleaned = temp_path(dir, base, ext, CLEANED);
        rename(storage, &cleaned, &temp_path(dir, base, ext, SWAP))?;
    }
    sync_dir(storage, dir)?;
    finish_swap(storage, dir, base)
}

/// Step 4: every `.swap` of `base` over its segment file, the `.log` last; then a dir sync.
fn finish_swap(storage: &dyn Storage, dir: &Path, base: i64) -> Result<(), LogError> {
    for ext in EXTENSIONS {
        let swap = temp_path(dir, base, ext, SWAP);
        if swap.exists() {
            rename(storage, &swap, &dir.join(file_name(base, ext)))?;
        }
    }
    sync_dir(storage, dir)
}

/// The base offset and suffix of a cleaner temp file name (`<20 digits>.<ext>.<cleaned|swap>`).
fn parse_temp_name(name: &str) -> Option<(i64, &str)> {
    let (rest, suffix) = name.rsplit_once('.')?;
    if suffix != CLEANED && suffix != SWAP {
        return None;
    }
    let (stem, ext) = rest.split_once('.')?;
    if !EXTENSIONS.contains(&ext) || stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, suffix))
}

/// Run by recovery before the segments are listed: completes every committed swap (a
/// `B.log.swap` exists) and rolls back every other (its `.cleaned`/`.swap` files are removed).
/// Returns how many swaps it finished and rolled back.
pub fn recover_swaps(storage: &dyn Storage, dir: &Path) -> Result<(usize, usize), LogError> {
    let mut bases = std::collections::BTreeSet::new();
    let entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, e))?;
    for entry in entries.take(DIR_ENTRIES_MAX) {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        if let Some((base, _)) = entry.file_name().to_str().and_then(parse_temp_name) {
            bases.insert(base);
        }
    }
    let (mut finished, mut rolled_back) = (0, 0);
    for base in bases {
        if temp_path(dir, base, "log", SWAP).exists() {
            finish_swap(storage, dir, base)?;
            finished += 1;
            tracing::warn!(dir = %dir.display(), base_offset = base, "finished a compaction swap cut short");
        } else {
            rolled_back += 1;
            tracing::warn!(dir = %dir.display(), base_offset = base, "rolled back an unfinished compaction");
        }
        for ext in EXTENSIONS {
            for suffix in [CLEANED, SWAP] {
                let path = temp_path(dir, base, ext, suffix);
                match storage.remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io_error(&path, e));
                    }
                    _ => {}
                }
            }
        }
    }
    if finished + rolled_back > 0 {
        sync_dir(storage, dir)?;
    }
    Ok((finished, rolled_back))
}

fn mtime_ms(path: &Path) -> Option<i64> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_millis()).ok()
}
