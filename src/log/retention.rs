//! log::retention: the segment lifecycle after creation. Rolling seals the active segment (syncing
//! its three files once, so sealed segments never need a sync again) and starts a new one at the
//! log end offset; retention deletes whole sealed segments, oldest first, past `retention_ms_max`
//! or while the partition is over `retention_bytes_max`. The active segment is never deleted, but
//! an aged one is rolled first so it can age out. The log start offset is the first remaining
//! segment's base offset, or higher where DeleteRecords raised it (`start_offset`); segments
//! wholly below it are deleted here too. With `cleanup.policy=compact` alone retention deletes nothing (it still
//! rolls aged active segments, which lets the cleaner reach their records). Each roll also writes
//! a producer-state snapshot at the new segment's base (`snapshot`), and retention deletes the
//! snapshots below the new log start offset. Retention never deletes a segment holding offsets at
//! or above the high watermark (`watermark`).

use std::path::Path;

use crate::io::Job;
use crate::protocol::batch::BatchError;

use super::segment::{Segment, SegmentFiles, file_name, io_error};
use super::{LogError, Partition, snapshot, writer_error};

impl Partition {
    /// Rolls the active segment when appending `bytes` (holding `offsets` offsets) at `now` would
    /// pass segment_bytes_max, when it is older than segment_ms_max, or when the new offsets would
    /// not fit the index's u32 relative offsets. An empty active segment is never rolled. Refuses
    /// an append whose offsets would not fit even an empty segment: no roll can make room.
    pub(super) async fn maybe_roll(
        &self,
        bytes: u64,
        offsets: i64,
        now: i64,
    ) -> Result<(), LogError> {
        if offsets > i64::from(u32::MAX) {
            return Err(LogError::Corrupt(BatchError::OffsetsOverflow { offsets }));
        }
        let due = {
            let inner = self.shared.lock();
            let Some(seg) = inner.active() else {
                return Ok(());
            };
            let config = &inner.config;
            // Index positions are u32, so no segment may pass 4 GiB whatever the config says.
            let bytes_max = config.segment_bytes_max.min(u64::from(u32::MAX));
            let too_big = seg.size_bytes + bytes > bytes_max;
            let too_old = is_aged(seg, config.segment_ms_max, now);
            let offsets_full =
                inner.log_end_offset + offsets - seg.base_offset > i64::from(u32::MAX);
            seg.size_bytes > 0 && (too_big || too_old || offsets_full)
        };
        if due { self.roll().await } else { Ok(()) }
    }

    /// Seals the active segment and opens a new one at the log end offset. Caller holds the
    /// append lock. Waits for the seal's syncs before creating the new files: after it, the sealed
    /// segment's log and index files are complete on disk, which is what lets recovery trust it
    /// and lookups switch from memory to disk.
    pub(super) async fn roll(&self) -> Result<(), LogError> {
        let storage = self.writer.storage().clone();
        let dir = self.shared.dir.clone();
        let (mut seal, new_base, interval, state) = {
            let inner = self.shared.lock();
            let Some(seg) = inner.active() else {
                return Ok(());
            };
            let mut job = Job::new();
            job.sync(&seg.log).sync(&seg.index).sync(&seg.timeindex);
            let new_base = inner.log_end_offset;
            // Under the append lock the producer state describes exactly the batches below
            // the log end offset, which is the new segment's base (`snapshot`).
            let state = snapshot::encode(new_base, &inner.producers);
            let interval = inner.config.index_interval_bytes;
            (job, new_base, interval, state)
        };
        // Seal before the new segment's files exist: recovery CRC-checks only the newest
        // segment's body, so once a new file can survive a crash every byte of the old segment
        // (appends still queued ahead of the seal included) must already be durable. The writer
        // completes jobs in order and the append lock keeps new appends out meanwhile.
        let shared = self.shared.clone();
        seal.on_done(move |result| {
            if result.is_err() {
                shared
                    .failed
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            result
        });
        let sealed = self.writer.submit(seal).await.map_err(writer_error)?;
        sealed.wait().await.map_err(writer_error)?;
        // Only once the seal (and every append queued before it) is done: the snapshot's file is
        // created while the writer has nothing of this partition in hand, so a roll's storage
        // calls keep one order (the power-cut tests replay seeds). Its failure only loses it.
        let pending = self.snapshot_queue(new_base, state).await;
        // The snapshot is published (its job awaited, then renamed) before the new segment's
        // files exist, so a roll's storage calls come in one order whatever the writer's timing
        // (the power-cut tests replay a seed exactly). A snapshot at the sealed log end with no
        // newer segment is valid on recovery: it describes only durable batches.
        let published = match pending {
            Some(pending) => self.snapshot_publish(pending).await,
            None => false,
        };
        // An epoch entry a leader append left unwritten goes to disk before its batches leave
        // the active segment (`epochs`): here, once the writer has finished this partition's
        // jobs, so a roll's storage calls keep one order (the power-cut tests replay seeds).
        self.update_epochs(|_| false).await?;
        let files = SegmentFiles::open(&*storage, &dir, new_base, true)?;
        clear_leftovers(&files)?;
        // Makes the new segment's files and the snapshot's rename durable together.
        storage.sync_dir(&dir).map_err(|e| io_error(&dir, e))?;
        if published {
            snapshot::prune(&*storage, &dir, self.log_start_offset());
        }
        let mut inner = self.shared.lock();
        if let Some(sealed) = inner.segments.values_mut().next_back() {
            sealed.mem = None;
        }
        inner
            .segments
            .insert(new_base, Segment::new(&dir, new_base, files, interval));
        tracing::debug!(dir = %dir.display(), base_offset = new_base, "rolled segment");
        Ok(())
    }

    /// Delete whole sealed segments past retention (age and size) and roll an aged active segment;
    /// returns how many segments were deleted. Called periodically by the broker.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        // Cleaner lock first (the lock order): a compaction pass never waits on appends, so
        // this waits at most for one pass, and never deletes a segment mid-swap.
        let _cleaner = self.cleaner_lock.lock().await;
        let guard = self.append_lock.lock().await;
        // A failed partition is re-checked by its next append (`resume`), not here.
        if self.shared.lock().deleted
            || self.shared.failed.load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(0);
        }
        let roll_active = {
            let inner = self.shared.lock();
            let config = &inner.config;
            inner.active().is_some_and(|seg| {
                let expired = config
                    .retention_ms_max
                    .is_some_and(|ms| is_expired(seg, ms, now_ms));
                seg.size_bytes > 0 && (is_aged(seg, config.segment_ms_max, now_ms) || expired)
            })
        };
        if roll_active {
            self.roll().await?;
        }
        let victims = self.take_expired(now_ms);
        // The victims are out of the segment map (readers already in flight keep their handles),
        // so appends need not wait while their files are unlinked — slow on an SD card.
        drop(guard);
        let storage = self.writer.storage().clone();
        for seg in &victims {
            for path in seg.paths() {
                match storage.remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io_error(&path, e));
                    }
                    _ => {}
                }
            }
            tracing::info!(dir = %self.shared.dir.display(), base_offset = seg.base_offset, size_bytes = seg.size_bytes, "deleted segment past retention");
        }
        if !victims.is_empty() {
            let dir = &self.shared.dir;
            storage.sync_dir(dir).map_err(|e| io_error(dir, e))?;
            // Snapshots below the new log start describe batches that are gone (Kafka deletes
            // them too); the newest snapshot, at a later segment's base, stays.
            snapshot::prune(&*storage, dir, self.log_start_offset());
        }
        Ok(victims.len())
    }

    /// Removes from the map, oldest first, the sealed segments retention wants gone. Stops at the
    /// first one it keeps, so the log stays contiguous.
    fn take_expired(&self, now_ms: i64) -> Vec<Segment> {
        let mut inner = self.shared.lock();
        if !inner.cleanup.delete {
            // cleanup.policy=compact alone: the cleaner, not retention, bounds the log.
            return Vec::new();
        }
        let (retention_bytes, retention_ms) = (
            inner.config.retention_bytes_max,
            inner.config.retention_ms_max,
        );
        let mut total: u64 = inner.segments.values().map(|s| s.size_bytes).sum();
        let mut victims = Vec::new();
        // Bounded by the segment count; the active segment (last) always stays.
        while inner.segments.len() > 1 {
            let Some((_, oldest)) = inner.segments.first_key_value() else {
                break;
            };
            let by_size =
                retention_bytes.is_some_and(|max| total.saturating_sub(oldest.size_bytes) >= max);
            let by_age = retention_ms.is_some_and(|ms| is_expired(oldest, ms, now_ms));
            // Wholly below the log start offset DeleteRecords set: nothing in it is readable.
            let deleted = inner
                .segments
                .keys()
                .nth(1)
                .is_some_and(|&next| next <= inner.start_floor);
            // An empty sealed segment (the cleaner emptied it) holds nothing to keep, and would
            // otherwise stop age retention here for good: empty segments never expire by age.
            let empty = oldest.size_bytes == 0 && inner.cleanup.compact;
            // Never a segment holding offsets at or above the high watermark: consumers have not
            // seen them and a follower may yet need them.
            let below_hw = oldest.next_offset <= inner.wm.hw.offset;
            if !(by_size || by_age || empty || deleted) || !below_hw {
                break;
            }
            let Some((_, seg)) = inner.segments.pop_first() else {
                break;
            };
            total = total.saturating_sub(seg.size_bytes);
            victims.push(seg);
        }
        victims
    }
}

/// A non-empty segment whose first batch is older than `segment_ms_max`.
fn is_aged(seg: &Segment, segment_ms_max: u64, now_ms: i64) -> bool {
    let max = i64::try_from(segment_ms_max).unwrap_or(i64::MAX);
    seg.roll_base_ms
        .is_some_and(|t| now_ms.saturating_sub(t) >= max)
}

/// Whether the segment's newest batch (its largest max_timestamp; the `.log` mtime when no batch
/// carries a timestamp) is older than `retention_ms`. Empty segments never expire by age.
fn is_expired(seg: &Segment, retention_ms: u64, now_ms: i64) -> bool {
    if seg.size_bytes == 0 {
        return false;
    }
    let newest = if seg.visible_max.0 >= 0 {
        Some(seg.visible_max.0)
    } else {
        mtime_ms(&seg.dir.join(file_name(seg.base_offset, "log")))
    };
    let max = i64::try_from(retention_ms).unwrap_or(i64::MAX);
    newest.is_some_and(|t| now_ms.saturating_sub(t) > max)
}

fn mtime_ms(path: &Path) -> Option<i64> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_millis()).ok()
}

/// A new segment's files must start empty; a leftover of the same name (not expected: recovery
/// would have made it the active segment) would otherwise hold stale bytes.
fn clear_leftovers(files: &SegmentFiles) -> Result<(), LogError> {
    for file in [&files.log, &files.index, &files.timeindex] {
        let len = file.len().map_err(|e| io_error(file.path(), e))?;
        if len > 0 {
            tracing::warn!(path = %file.path().display(), len, "clearing leftover file for a new segment");
            file.set_len(0).map_err(|e| io_error(file.path(), e))?;
        }
    }
    Ok(())
}
