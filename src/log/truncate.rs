//! log::truncate: a follower cuts a divergent tail (`Partition::truncate_to`, KIP-101: to the
//! leader's end offset for its epoch) or empties its log to start at the leader's log start
//! (`Partition::truncate_fully_and_start_at`); a follower also raises its log start offset to
//! the leader's (`Partition::raise_log_start_offset`).
//!
//! `truncate_to(offset)` drops every batch at or after `offset`; a batch straddling `offset`
//! goes whole, so the log end offset becomes that batch's base (or the end of the last batch
//! kept, where a compacted log skips offsets). Under the cleaner lock then the append lock, after
//! the writer drained (an empty job):
//! 1. remove the segments after the one holding the cut, newest first (`.log` first), dir sync;
//! 2. empty the cut segment's `.index` and `.timeindex`, sync (recovery rebuilds them: the cut
//!    segment is now the newest, whose log recovery scans whole);
//! 3. cut its `.log` at the batch, sync;
//! 4. recover the directory as an open would (`load`: producer snapshots above the cut go,
//!    producer state is replayed to the cut), HW = min(HW, cut), the epoch cache truncated.
//!
//! A power cut at any point leaves a prefix of the old log that is at least the truncated one,
//! each segment whole (later segments go before the cut one, which is only cut once it is the
//! newest), so a reopen recovers a valid log either before, after or between the two, never one
//! recovery rejects; the follower then truncates again.
//!
//! `truncate_fully_and_start_at(offset)` first cuts above `offset` as above, then stores
//! `offset` as the log start offset (`start_offset`, atomic), then deletes every segment and
//! opens an empty one at `offset`. Any power cut after the store finds a log that ends at or
//! below its start, which the open restarts at the start (`restart_past_lost_tail`): after.

use std::sync::atomic::Ordering;

use crate::io::{FileRef, Storage};

use super::read::blocking;
use super::segment::{self, io_error};
use super::{Inner, LogError, Partition, load, start_offset, watermark};

/// Where a truncation cuts: the segment holding it and the byte of the first batch dropped, with
/// the files of the newer segments to remove.
struct Plan {
    log: FileRef,
    index: FileRef,
    timeindex: FileRef,
    position: u64,
    later: Vec<[std::path::PathBuf; 3]>,
}

impl Partition {
    /// Drops every batch at or after `offset` (see the module doc); nothing when `offset` is at
    /// or past the log end offset. An `offset` below the log start empties the log and starts
    /// it at `offset` ([`Partition::truncate_fully_and_start_at`]).
    pub async fn truncate_to(&self, offset: i64) -> Result<(), LogError> {
        let _cleaner = self.cleaner_lock.lock().await;
        let _guard = self.append_lock.lock().await;
        self.check_usable_cleaning(true).await?;
        if offset < self.log_start_offset() {
            return self.start_at_locked(offset).await;
        }
        self.truncate_locked(offset).await
    }

    /// Empties the log and starts it at `offset`: a follower whose leader's log start moved
    /// past its log end. The HW becomes `offset` (nothing lies below it), the producer state
    /// and the epoch cache are cleared.
    pub async fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), LogError> {
        let _cleaner = self.cleaner_lock.lock().await;
        let _guard = self.append_lock.lock().await;
        self.check_usable_cleaning(true).await?;
        self.start_at_locked(offset).await
    }

    /// A follower learns its leader's log start offset from fetch responses: raises this log's
    /// start to `offset`, never past the high watermark (a follower's HW trails the leader's, and
    /// the leader's start never passes its HW); persisted as DeleteRecords does. Returns the log
    /// start offset afterwards.
    pub async fn raise_log_start_offset(&self, offset: i64) -> Result<i64, LogError> {
        let target = offset.min(self.high_watermark());
        self.delete_records_before(target.max(0)).await
    }

    async fn start_at_locked(&self, offset: i64) -> Result<(), LogError> {
        let offset = offset.max(0);
        if offset < self.log_end_offset() {
            self.truncate_locked(offset).await?;
        }
        self.drain_writer().await?;
        let storage = self.writer.storage().clone();
        let dir = self.shared.dir.clone();
        let (config, cleanup, before) = {
            let inner = self.shared.lock();
            let size = inner.segments.values().map(|s| s.size_bytes).sum::<u64>();
            (
                inner.config.clone(),
                inner.cleanup.clone(),
                (inner.log_end_offset, size),
            )
        };
        let interval = config.index_interval_bytes;
        let fresh = blocking(&self.shared.dir, move || {
            start_offset::store(&*storage, &dir, offset)?;
            let (mut inner, _, _) = load(&*storage, &dir, config.clone(), cleanup.clone())?;
            start_offset::restart_at(&*storage, &dir, &mut inner.segments, offset, interval)?;
            let (inner, _, _) = load(&*storage, &dir, config, cleanup)?;
            Ok(inner)
        })
        .await
        .inspect_err(|_| self.fail_after_partial_cut())?;
        self.install_reloaded(fresh, true)?;
        self.update_epochs(|c| c.clear()).await?;
        tracing::info!(dir = %self.shared.dir.display(), from_offset = before.0, to_offset = offset, bytes_dropped = before.1,
            "truncated the log fully; it starts at the new offset");
        self.checkpoint_if_tracked().await
    }

    /// A cut that failed part-way leaves memory describing files that changed: the partition
    /// is marked failed, so nothing appends or counts on it until it re-checks itself from disk
    /// (`resume`).
    fn fail_after_partial_cut(&self) {
        self.shared
            .failed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::error!(dir = %self.shared.dir.display(), "truncation failed part-way; the partition re-checks itself from disk before its next use");
    }

    /// `truncate_to` with both locks held.
    async fn truncate_locked(&self, offset: i64) -> Result<(), LogError> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        self.drain_writer().await?;
        let (from, size_before) = {
            let inner = self.shared.lock();
            let size = inner.segments.values().map(|s| s.size_bytes).sum::<u64>();
            (inner.log_end_offset, size)
        };
        let plan = self.plan(offset).await?;
        let storage = self.writer.storage().clone();
        let dir = self.shared.dir.clone();
        let (config, cleanup) = {
            let inner = self.shared.lock();
            (inner.config.clone(), inner.cleanup.clone())
        };
        let fresh = blocking(&self.shared.dir, move || {
            cut(&*storage, &dir, &plan)?;
            let (inner, _, _) = load(&*storage, &dir, config, cleanup)?;
            Ok(inner)
        })
        .await
        .inspect_err(|_| self.fail_after_partial_cut())?;
        let to = fresh.log_end_offset;
        let size_after = fresh.segments.values().map(|s| s.size_bytes).sum::<u64>();
        self.install_reloaded(fresh, false)?;
        self.update_epochs(|c| c.truncate_from_end(to)).await?;
        tracing::info!(dir = %self.shared.dir.display(), from_offset = from, to_offset = to,
            bytes_dropped = size_before.saturating_sub(size_after), "truncated the log");
        // The checkpoint may name a HW above the one truncation left: rewrite it before any
        // append can put records above the new HW.
        let stale = {
            let inner = self.shared.lock();
            inner.checkpointed.is_some_and(|c| c > inner.wm.hw.offset)
        };
        if stale {
            self.checkpoint_high_watermark().await?;
        }
        Ok(())
    }

    /// Finds the segment holding `offset` and the byte of the first batch whose last offset is
    /// at or after it (index lookup, then a header walk on a blocking thread).
    async fn plan(&self, offset: i64) -> Result<Plan, LogError> {
        let (log, index, timeindex, from, size, later) = {
            let inner = self.shared.lock();
            let Some((&base, seg)) = inner
                .segments
                .range(..=offset)
                .next_back()
                .or_else(|| inner.segments.first_key_value())
            else {
                return Err(segment::corrupt(&self.shared.dir, "no segment".into()));
            };
            let relative = seg.relative(offset);
            let from = match &seg.mem {
                Some(mem) => Ok(super::index::lookup_mem(&mem.index, relative)),
                None => super::index::lookup_disk(&*seg.index, seg.index_entries, relative),
            }
            .map_err(|e| io_error(seg.index.path(), e))?;
            let later: Vec<_> = inner
                .segments
                .range(base + 1..)
                .rev()
                .map(|(_, s)| s.paths())
                .collect();
            (
                seg.log.clone(),
                seg.index.clone(),
                seg.timeindex.clone(),
                from,
                seg.size_bytes,
                later,
            )
        };
        let walk = log.clone();
        let position = blocking(&self.shared.dir, move || {
            Ok(segment::seek(&*walk, from, size, offset)?.map_or(size, |(p, _)| p))
        })
        .await?;
        Ok(Plan {
            log,
            index,
            timeindex,
            position,
            later,
        })
    }

    /// Swaps in state recovered from disk (`load`) after a truncation or a re-check, keeping the
    /// HW (at most the new log end; at least the log start when `restarted`), its cap and the
    /// checkpoint bookkeeping, and tells subscribers where the positions now stand.
    pub(super) fn install_reloaded(
        &self,
        mut fresh: Inner,
        restarted: bool,
    ) -> Result<(), LogError> {
        let (hw, cap, tracked, checkpointed) = {
            let inner = self.shared.lock();
            let w = &inner.wm;
            (w.hw.offset, w.cap, inner.hw_tracked, inner.checkpointed)
        };
        let mut hw = hw.min(fresh.log_end_offset);
        if restarted {
            hw = hw.max(fresh.log_start_offset());
        }
        let durable = fresh.wm.durable;
        fresh.wm = watermark::place(&mut fresh.segments, durable, hw, cap)?;
        fresh.hw_tracked = tracked;
        fresh.checkpointed = checkpointed;
        let mut inner = self.shared.lock();
        fresh.wm.cap = inner.wm.cap;
        fresh.deleted = inner.deleted;
        *inner = fresh;
        let inner_ref = &mut *inner;
        inner_ref.wm.advance(&mut inner_ref.segments);
        let (durable, hw) = (inner.wm.durable.offset, inner.wm.hw.offset);
        drop(inner);
        self.shared.failed.store(false, Ordering::SeqCst);
        self.shared.publish_reset(durable, hw);
        Ok(())
    }
}

/// Steps 1-3 of the module doc. Blocking.
fn cut(storage: &dyn Storage, dir: &std::path::Path, plan: &Plan) -> Result<(), LogError> {
    for paths in &plan.later {
        // The `.log` first: without it the segment is gone; stray index files of a base are
        // cleared when a segment of that base is created again.
        let mut order = paths.clone();
        order.sort_by_key(|p| p.extension().is_none_or(|e| e != "log"));
        for path in &order {
            match storage.remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_error(path, e));
                }
                _ => {}
            }
        }
    }
    if !plan.later.is_empty() {
        storage.sync_dir(dir).map_err(|e| io_error(dir, e))?;
    }
    for file in [&plan.index, &plan.timeindex] {
        file.set_len(0).map_err(|e| io_error(file.path(), e))?;
        file.sync_data().map_err(|e| io_error(file.path(), e))?;
    }
    let log = &plan.log;
    if log.len().map_err(|e| io_error(log.path(), e))? > plan.position {
        log.set_len(plan.position)
            .map_err(|e| io_error(log.path(), e))?;
        log.sync_data().map_err(|e| io_error(log.path(), e))?;
    }
    Ok(())
}
