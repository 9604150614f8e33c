//! log::recovery: what `Partition::open` does before any append. Sealed segments are trusted
//! (their indexes are checked and rebuilt from the `.log` only when they do not check out); the
//! active segment is scanned batch by batch checking length, base offset and CRC-32C, a torn or
//! corrupt tail is cut (with a warning giving the bytes cut), and its indexes are rebuilt.
//!
//! The newest sealed segment also gets its tail (the batches after its last index entry, about
//! one index interval) CRC-checked: a roll seals before it creates the next segment, but a log
//! written by an older build, or a disk that reorders, can leave it with unsynced bytes. A bad
//! tail there sends the segment to a rebuild with a full CRC scan, which cuts it like an active
//! segment's. Older sealed segments were synced before a newer one existed and are not re-read.
//!
//! Recovery also checks what should be there: every segment must start where the one before it
//! ends (`check_chain`), and the active segment's old index must not name offsets its log no
//! longer holds (`index_beyond`). It does not invent data for a gap: it reports it (`damage`).
//!
//! Recovery runs before the partition submits any job to the disk writer, so its direct writes
//! through the storage backend (truncations, index rebuilds) cannot race the writer thread.

use std::collections::BTreeMap;
use std::path::Path;

use crate::io::{Storage, StorageFile};
use crate::protocol::batch::{self, ATTRIBUTES_AT, BatchHeader, Crc32c};

use super::index::{self, IndexBuilder, IndexEntry, TimeEntry};
use super::segment::{self, MemIndex, Segment, SegmentFiles, io_error, read_header};
use super::{Damage, LogConfig, LogError};

/// Buffer for streaming a batch through the CRC (bounds memory whatever a length field says).
const CRC_CHUNK_BYTES: usize = 64 * 1024;
/// What a new partition writes to prove the disk takes data (one filesystem block).
const SPACE_PROBE_BYTES: usize = 4096;
/// Segment files one partition directory may hold (a bound on the directory walk).
const SEGMENTS_MAX: usize = 1 << 20;

/// What recovery leaves for `Partition::open`.
pub struct Recovered {
    pub segments: BTreeMap<i64, Segment>,
    /// The lowest offset at which recovery cut a segment's tail (its new next offset), if it cut
    /// one: what was written from there on is gone, so producer snapshots above it are stale.
    pub cut_at: Option<i64>,
    /// Offsets the segment chain says should be on disk and are not (`check_chain`).
    pub chain_gaps: Vec<Damage>,
    /// Offsets the active segment's old index says were written and are gone (`index_beyond`).
    pub lost_tail: Option<Damage>,
}

/// Opens every segment of `dir` (creating segment 0 in an empty one), recovering the last.
/// `compacted`: the topic is compacted, so the active segment may hold what a leader's cleaner
/// left (offset gaps, batches with fewer records than offsets) when a follower replicated it,
/// and its scan allows them as a sealed segment's does.
pub fn open_segments(
    storage: &dyn Storage,
    dir: &Path,
    config: &LogConfig,
    compacted: bool,
) -> Result<Recovered, LogError> {
    create_dir_durable(storage, dir)?;
    super::compaction::recover_swaps(storage, dir)?;
    let bases = list_bases(dir)?;
    let mut segments = BTreeMap::new();
    let Some((&active, sealed)) = bases.split_last() else {
        let files = SegmentFiles::open(storage, dir, 0, true)?;
        probe_space(&*files.log)?;
        storage.sync_dir(dir).map_err(|e| io_error(dir, e))?;
        segments.insert(0, Segment::new(dir, 0, files, config.index_interval_bytes));
        return Ok(Recovered {
            segments,
            cut_at: None,
            chain_gaps: Vec::new(),
            lost_tail: None,
        });
    };
    let newest_sealed = sealed.last().copied();
    let mut cut_at: Option<i64> = None;
    let mut note_cut = |seg: &Segment, cut: bool| {
        if cut {
            cut_at = Some(cut_at.map_or(seg.next_offset, |c| c.min(seg.next_offset)));
        }
    };
    for &base in sealed {
        let check_crc = newest_sealed == Some(base);
        let (seg, cut) = load_sealed(storage, dir, base, config, check_crc)?;
        note_cut(&seg, cut);
        segments.insert(base, seg);
    }
    let (seg, cut, lost) = recover_active(storage, dir, active, config, compacted)?;
    note_cut(&seg, cut);
    segments.insert(active, seg);
    let chain_gaps = check_chain(&segments);
    Ok(Recovered {
        segments,
        cut_at,
        chain_gaps,
        lost_tail: lost,
    })
}

/// Writes a block into a new, empty `.log`, then empties it again: creating files needs no data
/// blocks, so on a full disk a new partition would open fine and fail its first append; this
/// makes creating it (CreateTopics) fail with the disk's ENOSPC instead. Not synced: ext4, xfs,
/// f2fs and tmpfs reserve the blocks at write time, and a sync per new partition would wear an SD
/// card for nothing (a crash before the `set_len` leaves zeros recovery cuts).
fn probe_space(log: &dyn StorageFile) -> Result<(), LogError> {
    let err = |e| io_error(log.path(), e);
    log.write_at(&[0u8; SPACE_PROBE_BYTES], 0).map_err(err)?;
    log.set_len(0).map_err(err)
}

/// Gaps in the segment chain: each segment must start where the one before it ends (its last
/// batch's offset + 1). A sealed segment deleted or cut short leaves one. Compaction can leave
/// one legitimately (it drops whole batches, the last of a segment too), so `Partition::open`
/// ignores these for compacted topics.
fn check_chain(segments: &BTreeMap<i64, Segment>) -> Vec<Damage> {
    let mut gaps = Vec::new();
    let mut prev: Option<&Segment> = None;
    for seg in segments.values() {
        if let Some(p) = prev
            && p.next_offset < seg.base_offset
        {
            gaps.push(Damage::Gap {
                missing: p.next_offset..seg.base_offset,
                why: format!(
                    "segment chain: {} ends at offset {} but the next segment, {}, starts at {}",
                    segment::file_name(p.base_offset, "log"),
                    p.next_offset,
                    segment::file_name(seg.base_offset, "log"),
                    seg.base_offset
                ),
            });
        }
        prev = Some(seg);
    }
    gaps
}

/// What the active segment's `.index` (as found, before recovery rewrites it) says was written
/// past the data that is left: its last entry names a batch at a byte the log no longer holds.
/// Entries exist only every `index_interval_bytes`, so a loss inside the last interval is not
/// seen; after a power cut it can also name appends that were never acknowledged (their index
/// entries reached the disk before their data), which is still worth an operator's look.
fn index_beyond(files: &SegmentFiles, base: i64, scan: &Scan) -> Result<Option<Damage>, LogError> {
    let index = &*files.index;
    let len = index.len().map_err(|e| io_error(index.path(), e))?;
    let entries = len / index::INDEX_ENTRY_BYTES as u64;
    if entries == 0 {
        return Ok(None);
    }
    let mut raw = [0u8; index::INDEX_ENTRY_BYTES];
    index
        .read_at(&mut raw, (entries - 1) * index::INDEX_ENTRY_BYTES as u64)
        .map_err(|e| io_error(index.path(), e))?;
    let last = IndexEntry::decode(&raw);
    let offset = base.saturating_add(i64::from(last.relative_offset));
    // Position 0 never gets an entry (a zero-filled index is not a claim).
    if last.position == 0
        || u64::from(last.position) < scan.valid_bytes
        || offset < scan.next_offset
    {
        return Ok(None);
    }
    Ok(Some(Damage::Gap {
        missing: scan.next_offset..offset.saturating_add(1),
        why: format!(
            "{} holds {} bytes but its index records offset {offset} at byte {}",
            segment::file_name(base, "log"),
            scan.valid_bytes,
            last.position
        ),
    }))
}

/// Creates `dir` and its missing parents durably ([`crate::io::create_dir_durable`]).
fn create_dir_durable(storage: &dyn Storage, dir: &Path) -> Result<(), LogError> {
    crate::io::create_dir_durable(storage, dir).map_err(|e| io_error(dir, e))
}

/// Base offsets of the `.log` files in `dir`, ascending.
fn list_bases(dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        if let Some(base) = entry.file_name().to_str().and_then(segment::parse_log_name) {
            bases.push(base);
        }
        if bases.len() > SEGMENTS_MAX {
            return Err(segment::corrupt(
                dir,
                format!("more than {SEGMENTS_MAX} segments"),
            ));
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// What a scan of a `.log` found: where valid data ends and the indexes it implies.
struct Scan {
    valid_bytes: u64,
    next_offset: i64,
    builder: IndexBuilder,
    index: Vec<IndexEntry>,
    time: Vec<TimeEntry>,
    first_max_timestamp: Option<i64>,
    /// Why the scan stopped before the end of the file, if it did.
    stop: Option<String>,
}

/// Walks the batches of a `.log` from the start. `check_crc` streams every batch through the
/// CRC-32C (active segment); without it only headers are read (sealed segments, trusted).
/// `sealed` allows the offset gaps compaction leaves (`checked_header`).
fn scan_log(
    log: &dyn StorageFile,
    base: i64,
    interval_bytes: u32,
    check_crc: bool,
    sealed: bool,
) -> Result<Scan, LogError> {
    let log_bytes = log.len().map_err(|e| io_error(log.path(), e))?;
    let mut scan = Scan {
        valid_bytes: 0,
        next_offset: base,
        builder: IndexBuilder::new(interval_bytes),
        index: Vec::new(),
        time: Vec::new(),
        first_max_timestamp: None,
        stop: None,
    };
    let mut chunk = Vec::new();
    while scan.valid_bytes < log_bytes {
        let pos = scan.valid_bytes;
        let header = match checked_header(log, pos, log_bytes, scan.next_offset, sealed) {
            Ok(h) => h,
            Err(why) => {
                scan.stop = Some(why);
                break;
            }
        };
        if check_crc && let Err(why) = check_crc32c(log, pos, &header, &mut chunk)? {
            scan.stop = Some(why);
            break;
        }
        let bytes = header.total_bytes() as u64;
        let (ie, te) =
            scan.builder
                .add_batch(base, header.base_offset, pos, bytes, header.max_timestamp);
        scan.index.extend(ie);
        scan.time.extend(te);
        scan.first_max_timestamp.get_or_insert(header.max_timestamp);
        scan.next_offset = header.last_offset().saturating_add(1);
        scan.valid_bytes += bytes;
    }
    Ok(scan)
}

/// The header at `pos`, if it is whole, sane, inside the file and continues the offsets densely.
/// In a `sealed` segment the cleaner may have removed records (`compaction`): offsets may then
/// skip forward between batches and a batch may hold fewer records than its offset range.
fn checked_header(
    log: &dyn StorageFile,
    pos: u64,
    log_bytes: u64,
    expected: i64,
    sealed: bool,
) -> Result<BatchHeader, String> {
    let header = read_header(log, pos, log_bytes).map_err(|e| e.to_string())?;
    let checked = if sealed {
        batch::check_stored_header(&header)
    } else {
        batch::check_header(&header)
    };
    checked.map_err(|e| format!("batch at byte {pos}: {e}"))?;
    let in_order = if sealed {
        header.base_offset >= expected
    } else {
        header.base_offset == expected
    };
    if !in_order {
        return Err(format!(
            "batch at byte {pos} has base offset {}, expected {expected}",
            header.base_offset
        ));
    }
    Ok(header)
}

/// Streams the CRC range of the batch at `pos` through CRC-32C in bounded chunks.
pub(super) fn check_crc32c(
    log: &dyn StorageFile,
    pos: u64,
    header: &BatchHeader,
    chunk: &mut Vec<u8>,
) -> Result<Result<(), String>, LogError> {
    let mut crc = Crc32c::new();
    let end = pos + header.total_bytes() as u64;
    let mut at = pos + ATTRIBUTES_AT as u64;
    while at < end {
        let n = (end - at).min(CRC_CHUNK_BYTES as u64) as usize;
        chunk.resize(n, 0);
        log.read_at(chunk, at)
            .map_err(|e| io_error(log.path(), e))?;
        crc.update(chunk);
        at += n as u64;
    }
    let computed = crc.finish();
    if computed != header.crc {
        return Ok(Err(format!("batch at byte {pos} fails its crc-32c")));
    }
    Ok(Ok(()))
}

/// Cuts `.log` after the valid prefix, warning with the bytes cut; returns whether it cut.
fn truncate_tail(log: &dyn StorageFile, scan: &Scan, what: &str) -> Result<bool, LogError> {
    let log_bytes = log.len().map_err(|e| io_error(log.path(), e))?;
    if scan.valid_bytes >= log_bytes {
        return Ok(false);
    }
    let cut_bytes = log_bytes - scan.valid_bytes;
    tracing::warn!(
        path = %log.path().display(),
        cut_bytes,
        kept_bytes = scan.valid_bytes,
        reason = scan.stop.as_deref().unwrap_or("unknown"),
        "truncating {what} at its last valid batch: {cut_bytes} bytes cut"
    );
    log.set_len(scan.valid_bytes)
        .map_err(|e| io_error(log.path(), e))?;
    log.sync_data().map_err(|e| io_error(log.path(), e))?;
    Ok(true)
}

/// Replaces `file`'s content with `bytes` unless it already holds exactly that (a clean restart
/// then writes nothing: SD cards wear with every write).
fn rewrite_if_different(file: &dyn StorageFile, bytes: &[u8]) -> Result<(), LogError> {
    let err = |e| io_error(file.path(), e);
    let len = file.len().map_err(err)?;
    if len == bytes.len() as u64 {
        let mut current = vec![0u8; bytes.len()];
        file.read_at(&mut current, 0).map_err(err)?;
        if current == bytes {
            return Ok(());
        }
    }
    file.set_len(0).map_err(err)?;
    file.write_at(bytes, 0).map_err(err)?;
    file.sync_data().map_err(err)
}

fn write_indexes(files: &SegmentFiles, scan: &Scan) -> Result<(), LogError> {
    let mut index_bytes = Vec::with_capacity(scan.index.len() * index::INDEX_ENTRY_BYTES);
    scan.index.iter().for_each(|e| e.encode(&mut index_bytes));
    let mut time_bytes = Vec::with_capacity(scan.time.len() * index::TIME_ENTRY_BYTES);
    scan.time.iter().for_each(|e| e.encode(&mut time_bytes));
    rewrite_if_different(&*files.index, &index_bytes)?;
    rewrite_if_different(&*files.timeindex, &time_bytes)
}

/// The active segment: full CRC scan, torn tail cut, indexes rebuilt and kept in memory. Also
/// returns whether a tail was cut and what its old index says is missing (`index_beyond`).
fn recover_active(
    storage: &dyn Storage,
    dir: &Path,
    base: i64,
    config: &LogConfig,
    compacted: bool,
) -> Result<(Segment, bool, Option<Damage>), LogError> {
    let files = SegmentFiles::open(storage, dir, base, false)?;
    let interval = config.index_interval_bytes;
    let scan = scan_log(&*files.log, base, interval, true, compacted)?;
    let lost = index_beyond(&files, base, &scan)?;
    let cut = truncate_tail(&*files.log, &scan, "active segment")?;
    write_indexes(&files, &scan)?;
    let mut seg = Segment::new(dir, base, files, config.index_interval_bytes);
    seg.size_bytes = scan.valid_bytes;
    seg.next_offset = scan.next_offset;
    seg.index_entries = scan.index.len() as u64;
    seg.time_entries = scan.time.len() as u64;
    seg.visible_max = (
        scan.builder.max_timestamp,
        scan.builder.max_timestamp_offset,
    );
    seg.builder = scan.builder;
    // segment.ms counts from the first batch's timestamp, as Kafka does; without one, from now.
    seg.roll_base_ms = scan
        .first_max_timestamp
        .map(|ts| if ts >= 0 { ts } else { super::now_ms() });
    seg.mem = Some(MemIndex {
        index: scan.index,
        time: scan.time,
    });
    Ok((seg, cut, lost))
}

/// A sealed segment: indexes validated and trusted; the segment's max timestamp comes from the
/// last time entry plus a header scan of the tail after the last index entry. `check_crc` (the
/// newest sealed segment) also CRC-checks that tail and, when it fails, the whole rebuild. Also
/// returns whether the rebuild cut a tail.
fn load_sealed(
    storage: &dyn Storage,
    dir: &Path,
    base: i64,
    config: &LogConfig,
    check_crc: bool,
) -> Result<(Segment, bool), LogError> {
    let files = SegmentFiles::open(storage, dir, base, false)?;
    let log_bytes = files.log.len().map_err(|e| io_error(files.log.path(), e))?;
    let checked = index::validate(&*files.index, &*files.timeindex, log_bytes)
        .map_err(|e| io_error(dir, e))?;
    let mut seg = Segment::new(dir, base, files, config.index_interval_bytes);
    seg.mem = None;
    seg.size_bytes = log_bytes;
    let trusted = match checked {
        Ok(summary) => trust_sealed(&mut seg, &summary, log_bytes, check_crc)?,
        Err(why) => Err(why),
    };
    let mut cut = false;
    if let Err(why) = trusted {
        tracing::warn!(segment = base, dir = %dir.display(), reason = %why, "rebuilding sealed segment index");
        cut = rebuild_sealed(&mut seg, config, check_crc)?;
    }
    Ok((seg, cut))
}

/// Fills a sealed segment's counts, next offset and max timestamp from valid index files and a
/// header scan of the tail after the last index entry (at most about one index interval), with
/// each tail batch's CRC-32C checked when `check_crc`. `Ok(Err(reason))` sends the segment to a
/// rebuild.
fn trust_sealed(
    seg: &mut Segment,
    summary: &index::IndexSummary,
    log_bytes: u64,
    check_crc: bool,
) -> Result<Result<(), String>, LogError> {
    let mut pos = summary.last_index.map_or(0, |e| u64::from(e.position));
    let mut expected = seg.base_offset
        + summary
            .last_index
            .map_or(0, |e| i64::from(e.relative_offset));
    let mut max = summary.last_time.map_or((-1, -1), |t| {
        (t.timestamp, seg.base_offset + i64::from(t.relative_offset))
    });
    let mut chunk = Vec::new();
    while pos < log_bytes {
        let header = match checked_header(&*seg.log, pos, log_bytes, expected, true) {
            Ok(h) => h,
            Err(why) => return Ok(Err(why)),
        };
        if check_crc && let Err(why) = check_crc32c(&*seg.log, pos, &header, &mut chunk)? {
            return Ok(Err(why));
        }
        if header.max_timestamp > max.0 {
            max = (header.max_timestamp, header.base_offset);
        }
        expected = header.last_offset().saturating_add(1);
        pos += header.total_bytes() as u64;
    }
    seg.next_offset = expected;
    seg.index_entries = summary.index_entries;
    seg.time_entries = summary.time_entries;
    seg.visible_max = max;
    seg.builder.max_timestamp = max.0;
    seg.builder.max_timestamp_offset = max.1;
    Ok(Ok(()))
}

/// Rebuilds a sealed segment's indexes from its `.log`, cutting it after the last batch that
/// checks out (headers only, plus CRC-32C when `check_crc`); returns whether it cut.
fn rebuild_sealed(
    seg: &mut Segment,
    config: &LogConfig,
    check_crc: bool,
) -> Result<bool, LogError> {
    let scan = scan_log(
        &*seg.log,
        seg.base_offset,
        config.index_interval_bytes,
        check_crc,
        true,
    )?;
    let cut = truncate_tail(&*seg.log, &scan, "sealed segment")?;
    let files = SegmentFiles {
        log: seg.log.clone(),
        index: seg.index.clone(),
        timeindex: seg.timeindex.clone(),
    };
    write_indexes(&files, &scan)?;
    seg.size_bytes = scan.valid_bytes;
    seg.next_offset = scan.next_offset;
    seg.index_entries = scan.index.len() as u64;
    seg.time_entries = scan.time.len() as u64;
    seg.visible_max = (
        scan.builder.max_timestamp,
        scan.builder.max_timestamp_offset,
    );
    seg.builder = scan.builder;
    Ok(cut)
}
