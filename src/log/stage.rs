//! log::stage: the ordered half of an append, shared by a leader's `append_staged` and a
//! follower's `append_replica`: lays the batches into the active segment's in-memory state and
//! builds the one writer job (log bytes, index entries, the fsync when `fsync_on_ack`) whose
//! completion moves the durable end and the high watermark over the batches' marks
//! (`watermark`).

use std::ops::Range;

use bytes::Bytes;

use crate::io::Job;
use crate::protocol::batch::{self, BatchHeader};

use super::watermark::{Mark, Position};
use super::{AppendInfo, LogError, Partition, index, segment};

/// How `stage` lays batches down: a leader assigns offsets and patches its epoch into each
/// batch; a follower keeps the leader's bytes as they are (`replica`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Mode {
    Leader { epoch: i32 },
    Replica,
}

impl Partition {
    /// Builds the writer job for `records` (already validated) and updates the active segment's
    /// in-memory state. A leader (`Mode::Leader`) assigns offsets from the log end offset and
    /// patches them and its epoch into the bytes; a follower (`Mode::Replica`) keeps each batch's
    /// own offsets and bytes (checked by `append_replica`). Runs under the append lock, after the
    /// queue slot is held.
    pub(super) fn stage(
        &self,
        records: &Bytes,
        batches: &[(BatchHeader, Range<usize>)],
        mode: Mode,
        now: i64,
    ) -> Result<(Job, AppendInfo), LogError> {
        let mut inner = self.shared.lock();
        let fsync = inner.config.fsync_on_ack;
        let log_start_offset = inner.log_start_offset();
        let leo = inner.log_end_offset;
        let base_offset = match mode {
            Mode::Leader { .. } => leo,
            Mode::Replica => batches.first().map_or(leo, |(h, _)| h.base_offset),
        };
        let Some(seg) = inner.segments.values_mut().next_back() else {
            return Err(segment::corrupt(
                &self.shared.dir,
                "no active segment".to_string(),
            ));
        };
        let parts = match mode {
            Mode::Leader { epoch } => patched_parts(records, batches, base_offset, epoch),
            Mode::Replica => vec![records.clone()],
        };
        let (mut index_bytes, mut time_bytes) = (Vec::new(), Vec::new());
        let (start, mut position, mut next) = (seg.size_bytes, seg.size_bytes, base_offset);
        let (mut index_count, mut time_count) = (0u64, 0u64);
        let mut marks = Vec::with_capacity(batches.len());
        for (h, range) in batches {
            let batch_base = match mode {
                Mode::Leader { .. } => next,
                Mode::Replica => h.base_offset,
            };
            let bytes = range.len() as u64;
            let (ie, te) = seg.builder.add_batch(
                seg.base_offset,
                batch_base,
                position,
                bytes,
                h.max_timestamp,
            );
            if let Some(mem) = seg.mem.as_mut() {
                mem.index.extend(ie);
                mem.time.extend(te);
            }
            ie.iter().for_each(|e| e.encode(&mut index_bytes));
            te.iter().for_each(|e| e.encode(&mut time_bytes));
            index_count += u64::from(ie.is_some());
            time_count += u64::from(te.is_some());
            position += bytes;
            next = batch_base + i64::from(h.last_offset_delta) + 1;
            marks.push(Mark {
                at: Position {
                    offset: next,
                    segment_base: seg.base_offset,
                    position,
                },
                max: (h.max_timestamp, batch_base),
            });
        }
        let mut job = Job::new();
        let mut at = start;
        for part in parts {
            at += part.len() as u64;
            job.write(&seg.log, at - part.len() as u64, part);
        }
        job.write(
            &seg.index,
            seg.index_entries * index::INDEX_ENTRY_BYTES as u64,
            Bytes::from(index_bytes),
        );
        job.write(
            &seg.timeindex,
            seg.time_entries * index::TIME_ENTRY_BYTES as u64,
            Bytes::from(time_bytes),
        );
        if fsync {
            job.sync(&seg.log);
        }
        seg.index_entries += index_count;
        seg.time_entries += time_count;
        seg.size_bytes = position;
        seg.next_offset = next;
        seg.roll_base_ms.get_or_insert(now);
        inner.log_end_offset = next;
        let shared = self.shared.clone();
        job.on_done(move |result| shared.complete(result, &marks));
        Ok((
            job,
            AppendInfo {
                base_offset,
                last_offset: next - 1,
                log_start_offset,
            },
        ))
    }
}

/// The bytes of `batches` as they are written: each batch's first bytes up to its magic (base
/// offset, length, partition leader epoch: outside the CRC) patched in one small buffer for the
/// whole request, the rest sliced from the request's own bytes instead of copied (the writer
/// hands the pieces to one `pwritev`/`writev`).
fn patched_parts(
    records: &Bytes,
    batches: &[(BatchHeader, Range<usize>)],
    base_offset: i64,
    leader_epoch: i32,
) -> Vec<Bytes> {
    const HEAD: usize = batch::MAGIC_AT;
    let mut heads = Vec::with_capacity(batches.len() * HEAD);
    let mut next = base_offset;
    for (h, range) in batches {
        let at = heads.len();
        heads.extend_from_slice(&records[range.start..range.start + HEAD]);
        batch::patch_base_offset(&mut heads[at..], next);
        batch::patch_leader_epoch(&mut heads[at..], leader_epoch);
        next += i64::from(h.last_offset_delta) + 1;
    }
    let heads = Bytes::from(heads);
    let mut parts = Vec::with_capacity(batches.len() * 2);
    for (i, (_, range)) in batches.iter().enumerate() {
        parts.push(heads.slice(i * HEAD..(i + 1) * HEAD));
        parts.push(records.slice(range.start + HEAD..range.end));
    }
    parts
}
