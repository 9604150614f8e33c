//! log::read: the fetch and ListOffsets side of a partition. A read takes a short snapshot under
//! the state lock (which segments, their files, where the high watermark sits in bytes, and any
//! in-memory index answer), then does its positional reads on a blocking thread without locks.
//! Every scan is bounded by the readable end of a segment (the high watermark's byte position in
//! the segment holding it; the durable end's for a follower's `read_replica`), so readers never
//! see bytes the writer has not finished, and consumers none above the high watermark. ListOffsets
//! by timestamp and MAX_TIMESTAMP search from the log start offset, as Kafka does: records below
//! it (DeleteRecords) are never an answer, even within a batch that straddles it.

use bytes::Bytes;

use crate::io::FileRef;
use crate::protocol::batch::{BatchHeader, HEADER_BYTES};
use crate::protocol::timestamps;

use super::index;
use super::inspect::InspectBudget;
use super::segment::{self, Segment, read_batch, read_header, seek};
use super::watermark::Position;
use super::{Inner, LogError, Partition, ReadInfo};

/// Where to start scanning a segment: already known (in-memory index of the active segment) or
/// to be looked up in the sealed segment's index files.
enum Start {
    At(u64),
    Disk {
        index: FileRef,
        entries: u64,
        timeindex: FileRef,
        time_entries: u64,
    },
}

/// A snapshot of one segment, enough to read it without the lock.
struct View {
    base_offset: i64,
    log: FileRef,
    readable_end: u64,
    start: Start,
    /// A sealed segment's batches are CRC-checked before they are served: they were validated
    /// when appended but may sit on the medium for months (SD cards rot); the active segment's
    /// were checked by recovery or just written by this process.
    verify_crc: bool,
    /// The log start offset when the view was taken: no answer lies below it.
    min_offset: i64,
}

/// What to look up in memory while the lock is held.
enum Target {
    Offset(i64),
    Timestamp(i64),
}

impl View {
    /// A view of `seg` for a consumer (bounded by the high watermark).
    fn new(inner: &Inner, seg: &Segment, target: Target) -> View {
        View::bounded(inner, seg, target, inner.wm.hw)
    }

    /// A view of `seg` readable up to `limit`.
    fn bounded(inner: &Inner, seg: &Segment, target: Target, limit: Position) -> View {
        let start = match &seg.mem {
            Some(mem) => {
                let relative = match target {
                    Target::Offset(offset) => seg.relative(offset),
                    Target::Timestamp(ts) => index::lookup_time_mem(&mem.time, ts)
                        .max(seg.relative(inner.log_start_offset())),
                };
                Start::At(index::lookup_mem(&mem.index, relative))
            }
            None => Start::Disk {
                index: seg.index.clone(),
                entries: seg.index_entries,
                timeindex: seg.timeindex.clone(),
                time_entries: seg.time_entries,
            },
        };
        View {
            base_offset: seg.base_offset,
            log: seg.log.clone(),
            readable_end: Inner::readable_end(seg, limit),
            verify_crc: seg.mem.is_none(),
            start,
            min_offset: inner.log_start_offset(),
        }
    }

    fn relative(&self, offset: i64) -> u32 {
        u32::try_from((offset - self.base_offset).max(0)).unwrap_or(u32::MAX)
    }

    fn index_error(&self, e: std::io::Error) -> LogError {
        segment::io_error(self.log.path(), e)
    }

    /// Position of the indexed batch at or before `offset` (0 without one).
    fn start_for_offset(&self, offset: i64) -> Result<u64, LogError> {
        match &self.start {
            Start::At(p) => Ok(*p),
            Start::Disk { index, entries, .. } => {
                index::lookup_disk(&**index, *entries, self.relative(offset))
                    .map_err(|e| self.index_error(e))
            }
        }
    }

    /// Position from which every earlier batch is known to be older than `timestamp_ms` or
    /// below the log start offset (Kafka looks up max(time index answer, log start)).
    fn start_for_timestamp(&self, timestamp_ms: i64) -> Result<u64, LogError> {
        match &self.start {
            Start::At(p) => Ok(*p),
            Start::Disk {
                index,
                entries,
                timeindex,
                time_entries,
            } => {
                let relative = index::lookup_time_disk(&**timeindex, *time_entries, timestamp_ms)
                    .map_err(|e| self.index_error(e))?
                    .max(self.relative(self.min_offset));
                index::lookup_disk(&**index, *entries, relative).map_err(|e| self.index_error(e))
            }
        }
    }
}

/// Runs `f` (file work) on a blocking thread; a panic there is an i/o error on `dir`.
pub(super) async fn blocking<T: Send + 'static>(
    dir: &std::path::Path,
    f: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| segment::io_error(dir, std::io::Error::other(e)))?
}

impl Partition {
    /// Whole batches from the batch containing `offset`, up to `max_bytes` total, but always at least
    /// one whole batch if any is available (KIP-74); never past the high watermark.
    /// `offset == high_watermark` gives empty records. Runs positional reads (call from async code; it
    /// may use spawn_blocking internally). Reads continue into later segments while budget remains.
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadInfo, LogError> {
        self.read_bounded(offset, max_bytes, false).await
    }

    /// A follower's fetch: as [`Partition::read`] but up to the durable end instead of the high
    /// watermark (`ReadInfo::high_watermark` is still the HW). `offset == durable end` gives
    /// empty records.
    pub async fn read_replica(&self, offset: i64, max_bytes: usize) -> Result<ReadInfo, LogError> {
        self.read_bounded(offset, max_bytes, true).await
    }

    async fn read_bounded(
        &self,
        offset: i64,
        max_bytes: usize,
        replica: bool,
    ) -> Result<ReadInfo, LogError> {
        let (views, high_watermark, log_start_offset) = {
            let inner = self.shared.lock();
            let (start, end) = (inner.log_start_offset(), inner.log_end_offset);
            if offset < start || offset > end {
                return Err(LogError::OffsetOutOfRange { offset, start, end });
            }
            let limit = if replica {
                inner.wm.durable
            } else {
                inner.wm.hw
            };
            let views = if offset >= limit.offset {
                Vec::new()
            } else {
                read_views(&inner, offset, max_bytes, limit)
            };
            (views, inner.wm.hw.offset, start)
        };
        if views.is_empty() {
            return Ok(ReadInfo {
                records: Bytes::new(),
                high_watermark,
                log_start_offset,
            });
        }
        let records = blocking(&self.shared.dir, move || {
            read_views_blocking(&views, offset, max_bytes)
        })
        .await
        .inspect_err(|e| self.note_corrupt(e))?;
        Ok(ReadInfo {
            records,
            high_watermark,
            log_start_offset,
        })
    }

    /// ListOffsets by timestamp: the first offset whose record timestamp >= `timestamp_ms`, with that
    /// record's timestamp; None if no such record (below HW). Exact for uncompressed batches; for
    /// compressed ones see `protocol::timestamps::offset_for_timestamp` (batch granularity, never late).
    /// Looking inside a batch takes `inspect`; without it the batch answers from its header.
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
        inspect: &InspectBudget,
    ) -> Result<Option<(i64, i64)>, LogError> {
        let views: Vec<View> = {
            let inner = self.shared.lock();
            // Segments wholly below the log start offset (DeleteRecords) hold no answer.
            let start = inner.log_start_offset();
            let candidates = inner
                .segments
                .values()
                .filter(|s| s.visible_max.0 >= timestamp_ms && s.next_offset > start);
            candidates
                .map(|s| View::new(&inner, s, Target::Timestamp(timestamp_ms)))
                .collect()
        };
        let inspect = inspect.clone();
        blocking(&self.shared.dir, move || {
            for view in &views {
                let from = view.start_for_timestamp(timestamp_ms)?;
                if let Some(hit) = scan_for_timestamp(view, from, timestamp_ms, &inspect)? {
                    return Ok(Some(hit));
                }
            }
            Ok(None)
        })
        .await
    }

    /// ListOffsets MAX_TIMESTAMP (-3): the offset and timestamp of the record with the largest timestamp
    /// at or after the log start offset. Exact for uncompressed batches; for a compressed batch, its
    /// base offset. Reading the batch takes `inspect`, as in [`Partition::offset_for_timestamp`].
    pub async fn max_timestamp(
        &self,
        inspect: &InspectBudget,
    ) -> Result<Option<(i64, i64)>, LogError> {
        let (best, straddling) = {
            let inner = self.shared.lock();
            max_candidates(&inner)
        };
        let inspect = inspect.clone();
        blocking(&self.shared.dir, move || {
            let mut pick =
                best.map(|(view, ts, batch_offset)| (view, ts, MaxAt::Batch(batch_offset)));
            // The segment holding the log start offset: its recorded largest timestamp may lie
            // below the start, so its batches from the start are walked (only when it can win).
            if let Some(view) = straddling
                && let Some((ts, at)) = max_from(&view, &inspect)?
                && pick.as_ref().is_none_or(|&(_, best_ts, _)| ts >= best_ts)
            {
                pick = Some((view, ts, at));
            }
            match pick {
                None => Ok(None),
                Some((_, _, MaxAt::Record(offset, ts))) => Ok(Some((offset, ts))),
                Some((view, _, MaxAt::Batch(batch_offset))) => {
                    max_in_batch(&view, batch_offset, &inspect)
                }
            }
        })
        .await
    }
}

/// A max-timestamp view with its largest timestamp and that batch's base offset.
type MaxCandidate = (View, i64, i64);

/// Where the largest timestamp of a walk was found.
enum MaxAt {
    /// The answer itself: `(offset, timestamp)` (the batch straddling the log start offset).
    Record(i64, i64),
    /// The base offset of a batch wholly at or after the log start offset, still to be read.
    Batch(i64),
}

/// The segment with the largest timestamp among those wholly at or after the log start offset
/// (or whose largest timestamp's batch is), and the segment holding the log start offset when
/// its largest timestamp's batch begins below it and could still win.
fn max_candidates(inner: &Inner) -> (Option<MaxCandidate>, Option<View>) {
    let start = inner.log_start_offset();
    let mut best: Option<&Segment> = None;
    let mut straddling: Option<&Segment> = None;
    let live = inner.segments.values();
    for seg in live.filter(|s| s.visible_max.0 >= 0 && s.next_offset > start) {
        if seg.base_offset < start && seg.visible_max.1 < start {
            straddling = Some(seg);
        } else if best.is_none_or(|b| seg.visible_max.0 > b.visible_max.0) {
            best = Some(seg);
        }
    }
    let straddling = straddling
        .filter(|s| best.is_none_or(|b| s.visible_max.0 >= b.visible_max.0))
        .map(|s| View::new(inner, s, Target::Offset(start)));
    let best = best.map(|s| {
        let view = View::new(inner, s, Target::Offset(s.visible_max.1));
        (view, s.visible_max.0, s.visible_max.1)
    });
    (best, straddling)
}

/// Largest timestamp (the first record or batch carrying it) among the records of `view` at or
/// after its log start offset. The batch straddling the start is answered from its records
/// there (taking `inspect`; its header's max may belong to a deleted record); the later ones by
/// their headers. Bounded by the segment's readable bytes.
fn max_from(view: &View, inspect: &InspectBudget) -> Result<Option<(i64, MaxAt)>, LogError> {
    let min = view.min_offset;
    let from = view.start_for_offset(min)?;
    let Some((mut position, _)) = seek(&*view.log, from, view.readable_end, min)? else {
        return Ok(None);
    };
    let mut best: Option<(i64, MaxAt)> = None;
    while position < view.readable_end {
        let header = read_header(&*view.log, position, view.readable_end)?;
        let found = if header.base_offset < min {
            let (offset, ts) = straddling_max(view, position, &header, inspect)?;
            (ts, MaxAt::Record(offset, ts))
        } else {
            (header.max_timestamp, MaxAt::Batch(header.base_offset))
        };
        if best.as_ref().is_none_or(|(ts, _)| found.0 > *ts) {
            best = Some(found);
        }
        position += header.total_bytes() as u64;
    }
    Ok(best)
}

/// The largest timestamp among the records at or after the log start offset of the batch at
/// `position`, which straddles it; from its header alone when `inspect` has no room.
fn straddling_max(
    view: &View,
    position: u64,
    header: &BatchHeader,
    inspect: &InspectBudget,
) -> Result<(i64, i64), LogError> {
    let from_header = (view.min_offset, header.max_timestamp);
    let Some(taken) = inspect.try_take(header) else {
        return Ok(from_header);
    };
    let bytes = read_batch(&*view.log, position, header)?;
    Ok(
        timestamps::max_timestamp_record_from(&bytes, view.min_offset, taken.records_bytes_max)
            .unwrap_or(from_header),
    )
}

/// The record with the largest timestamp in the batch holding `batch_offset` (at or after the
/// view's log start offset); from the header alone when `inspect` has no room.
fn max_in_batch(
    view: &View,
    batch_offset: i64,
    inspect: &InspectBudget,
) -> Result<Option<(i64, i64)>, LogError> {
    let min = view.min_offset;
    let target = batch_offset.max(min);
    let from = view.start_for_offset(target)?;
    let Some((position, header)) = seek(&*view.log, from, view.readable_end, target)? else {
        return Ok(None);
    };
    let from_header = (header.base_offset.max(min), header.max_timestamp);
    let Some(taken) = inspect.try_take(&header) else {
        return Ok(Some(from_header));
    };
    let bytes = read_batch(&*view.log, position, &header)?;
    Ok(Some(
        timestamps::max_timestamp_record_from(&bytes, min, taken.records_bytes_max)
            .unwrap_or(from_header),
    ))
}

/// The segment holding `offset` and the following ones while their readable bytes could still
/// be wanted (bounded by `max_bytes`, so a read never snapshots every segment).
fn read_views(inner: &Inner, offset: i64, max_bytes: usize, limit: Position) -> Vec<View> {
    let mut views = Vec::new();
    let mut later_bytes = 0u64;
    let first = inner
        .segments
        .range(..=offset)
        .next_back()
        .map_or(i64::MIN, |(&b, _)| b);
    for seg in inner.segments.range(first..).map(|(_, s)| s) {
        let readable = Inner::readable_end(seg, limit);
        if readable == 0 {
            // Past the limit's segment nothing is readable; an empty sealed segment (left by a
            // recovery cut) is skipped.
            if seg.base_offset >= limit.segment_base {
                break;
            }
            continue;
        }
        if views.is_empty() {
            views.push(View::bounded(inner, seg, Target::Offset(offset), limit));
        } else {
            views.push(View::bounded(
                inner,
                seg,
                Target::Offset(seg.base_offset),
                limit,
            ));
            later_bytes += readable;
            if later_bytes >= max_bytes as u64 {
                break;
            }
        }
    }
    views
}

fn read_views_blocking(views: &[View], offset: i64, max_bytes: usize) -> Result<Bytes, LogError> {
    let mut out = Vec::new();
    for (i, view) in views.iter().enumerate() {
        let from = if i == 0 {
            view.start_for_offset(offset)?
        } else {
            0
        };
        let Some((position, _)) = seek(&*view.log, from, view.readable_end, offset)? else {
            continue;
        };
        if collect(view, position, &mut out, max_bytes)? {
            break;
        }
    }
    Ok(Bytes::from(out))
}

/// Appends to `out` the whole batches from `start` that fit the budget (the first batch of the
/// whole read always fits: KIP-74). One positional read for the lot, one more for an oversized
/// first batch. Returns true when the budget (or a damaged batch after some good ones) stopped it
/// before the readable end. A damaged first batch is an error: its bytes are never served.
fn collect(view: &View, start: u64, out: &mut Vec<u8>, max_bytes: usize) -> Result<bool, LogError> {
    let available = view.readable_end.saturating_sub(start);
    let budget = max_bytes.saturating_sub(out.len()) as u64;
    let want = available.min(budget.max(HEADER_BYTES as u64));
    let mut buf = vec![0u8; want as usize];
    view.log
        .read_at(&mut buf, start)
        .map_err(|e| segment::io_error(view.log.path(), e))?;
    let mut keep = 0usize;
    while keep + HEADER_BYTES <= buf.len() {
        let first = keep == 0 && out.is_empty();
        let checked = check_at(view, &buf, keep, start);
        let total = match checked {
            Ok(Some(total)) => total,
            // Whole batches end here; the rest of `buf` is a batch past the budget.
            Ok(None) => {
                if first {
                    // KIP-74: the first batch goes whole even past max_bytes, so a consumer
                    // progresses.
                    let header = read_header(&*view.log, start, view.readable_end)?;
                    buf = read_batch(&*view.log, start, &header)?;
                    if view.verify_crc {
                        segment::check_batch_crc(&*view.log, start, &header, &buf)?;
                    }
                    keep = buf.len();
                }
                break;
            }
            Err(e) if first => return Err(e),
            // Serve the good batches before it; the next fetch starts at it and gets the error.
            Err(_) => break,
        };
        keep += total;
    }
    buf.truncate(keep);
    let stopped = (keep as u64) < available;
    if out.is_empty() {
        *out = buf;
    } else {
        out.extend_from_slice(&buf);
    }
    Ok(stopped)
}

/// The size of the batch at `buf[at..]` (file byte `start + at`) if it lies whole in `buf` and
/// passes its checks, None if it runs past `buf` (and not past the readable end).
fn check_at(view: &View, buf: &[u8], at: usize, start: u64) -> Result<Option<usize>, LogError> {
    let position = start + at as u64;
    let header = BatchHeader::parse(&buf[at..]).map_err(|e| {
        let why = format!("bad batch header at byte {position}: {e}");
        segment::bad_batch(&*view.log, position, 0..0, why)
    })?;
    let total = header.total_bytes();
    if at + total > buf.len() {
        if position + total as u64 > view.readable_end {
            let why = format!(
                "batch at byte {position} runs past byte {}",
                view.readable_end
            );
            let offsets = header.base_offset..header.last_offset().saturating_add(1);
            return Err(segment::bad_batch(&*view.log, position, offsets, why));
        }
        return Ok(None);
    }
    if view.verify_crc {
        segment::check_batch_crc(&*view.log, position, &header, &buf[at..at + total])?;
    }
    Ok(Some(total))
}

/// Scans batches from `position` for the first record at or after `timestamp_ms`.
fn scan_for_timestamp(
    view: &View,
    mut position: u64,
    timestamp_ms: i64,
    inspect: &InspectBudget,
) -> Result<Option<(i64, i64)>, LogError> {
    let min = view.min_offset;
    while position < view.readable_end {
        let header = read_header(&*view.log, position, view.readable_end)?;
        if header.max_timestamp >= timestamp_ms && header.last_offset() >= min {
            let hit = match inspect.try_take(&header) {
                None => timestamps::header_answer_from(&header, timestamp_ms, min),
                Some(taken) => {
                    let bytes = read_batch(&*view.log, position, &header)?;
                    // A batch whose records do not parse (the CRC only proves the client sent
                    // them so) still answers at batch granularity.
                    let cap = taken.records_bytes_max;
                    timestamps::offset_for_timestamp_from(&bytes, timestamp_ms, min, cap)
                        .unwrap_or(Some((header.base_offset.max(min), header.max_timestamp)))
                }
            };
            if hit.is_some() {
                return Ok(hit);
            }
        }
        position += header.total_bytes() as u64;
    }
    Ok(None)
}
