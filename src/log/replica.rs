//! log::replica: a follower's append (`Partition::append_replica`). The leader's batches are
//! stored byte for byte, keeping their offsets and partition leader epochs, through the same
//! `stage` as a leader's append (`Mode::Replica`), so the follower's log is the leader's.
//!
//! Checks: each batch whole, its header sane and its CRC-32C right (as `protocol::batch::split`
//! does; a batch the leader's cleaner shrank, fewer records than its offset range, passes the
//! stored-batch header check instead); the first batch at or after the log end offset and the
//! batches ascending. Offsets may skip forward (a compacted leader's log has gaps). No
//! max.message.bytes check: the leader accepted the batch. Idempotent producers' state is updated
//! from the batches without sequence checks (the leader checked them), so a client retry after a
//! failover to this replica is answered as a duplicate. The leader-epoch cache takes each batch's
//! epoch when greater than its latest.
//!
//! Known limit: recovery checks an active segment's offsets densely unless the topic is
//! compacted, so a gap replicated into a non-compacted topic (a topic compacted earlier) is cut
//! by the next restart's recovery and fetched again.

use std::ops::Range;

use bytes::Bytes;

use crate::protocol::batch::{self, BatchError, BatchHeader};

use super::{LogError, Mode, Partition, Staged, now_ms, writer_error};

/// Splits a follower fetch's records into whole, checked batches (see the module doc).
pub(super) fn split_stored(buf: &[u8]) -> Result<Vec<(BatchHeader, Range<usize>)>, LogError> {
    if buf.is_empty() {
        return Err(LogError::Corrupt(BatchError::Empty));
    }
    let mut out = Vec::new();
    let mut pos = 0usize;
    // Bounded: each step consumes at least one header's bytes.
    while pos < buf.len() {
        let rest = &buf[pos..];
        let h = BatchHeader::parse(rest)?;
        let total = h.total_bytes();
        let whole = rest.get(..total).ok_or(BatchError::Truncated {
            need: total,
            have: rest.len(),
        })?;
        let h = match batch::validate(whole) {
            Ok(h) => h,
            Err(e) => {
                // A cleaned batch: fewer records than offsets, still CRC-checked.
                let computed = batch::crc32c(&whole[batch::ATTRIBUTES_AT..]);
                let cleaned = i64::from(h.last_offset_delta) > i64::from(h.record_count) - 1;
                if !cleaned || batch::check_stored_header(&h).is_err() || computed != h.crc {
                    return Err(LogError::Corrupt(e));
                }
                h
            }
        };
        out.push((h, pos..pos + total));
        pos += total;
    }
    Ok(out)
}

impl Partition {
    /// Appends `records` (whole v2 batches as the leader stored them) as they are; see the
    /// module doc for the checks. `LogError::UnexpectedOffset` when the first batch lies below
    /// the log end offset or the batches do not ascend; `LogError::Corrupt` for a bad batch.
    /// Nothing is written when a check fails. Returns once the write is queued: the `Staged`
    /// completes when it is durable, which moves the durable end (and the HW, under its cap).
    pub async fn append_replica(&self, records: Bytes) -> Result<Staged, LogError> {
        let batches = split_stored(&records)?;
        let mut expected = i64::MIN;
        for (h, _) in &batches {
            if h.base_offset < expected {
                return Err(LogError::UnexpectedOffset {
                    expected,
                    got: h.base_offset,
                });
            }
            expected = h.last_offset().saturating_add(1);
        }
        let (first, end) = match (batches.first(), batches.last()) {
            (Some((f, _)), Some((l, _))) => (f.base_offset, l.last_offset().saturating_add(1)),
            _ => return Err(LogError::Corrupt(BatchError::Empty)),
        };
        let guard = self.append_lock.lock().await;
        self.check_usable().await?;
        let leo = self.log_end_offset();
        if first < leo {
            return Err(LogError::UnexpectedOffset {
                expected: leo,
                got: first,
            });
        }
        self.checkpoint_before_capped_append().await?;
        let epochs: Vec<(i32, i64)> = batches
            .iter()
            .map(|(h, _)| (h.partition_leader_epoch, h.base_offset))
            .collect();
        self.update_epochs(|cache| {
            let mut changed = false;
            for &(epoch, start) in &epochs {
                changed |= cache.assign(epoch, start);
            }
            changed
        })
        .await?;
        let now = now_ms();
        self.maybe_roll(records.len() as u64, end - leo, now)
            .await?;
        let permit = self.writer.reserve().await.map_err(writer_error)?;
        let (job, info) = self.stage(&records, &batches, Mode::Replica, now)?;
        {
            let mut inner = self.shared.lock();
            for (h, _) in &batches {
                inner.producers.replay(h);
            }
            inner.producers.commit(Default::default());
        }
        let completion = permit.submit(job);
        drop(guard);
        Ok(Staged { completion, info })
    }
}
