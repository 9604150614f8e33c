//! log: per-partition storage of Kafka v2 record batches. Sits under the produce/fetch handlers
//! (`api/produce.rs`, `api/fetch.rs`, `api/list_offsets.rs`) and above the disk writer (`crate::io`).
//!
//! A partition is a directory of segments (see `segment` for the files, `index` for the index
//! byte tables). Flow of an append: validate every batch (`protocol::batch`), take the append
//! lock, roll the active segment if due (`retention`), reserve a slot in the writer's queue,
//! assign offsets and patch them into the bytes, queue one job (log bytes + index entries + the
//! fsync when `fsync_on_ack`), release the lock, await the job. The writer completes jobs in
//! submission order and runs each job's callback on its thread, which moves the durable end and
//! the high watermark forward in offset order, only over bytes that are written (and synced when
//! asked).
//!
//! Three positions (`watermark`): the log end offset, the durable end (what the writer finished)
//! and the high watermark (min of the durable end and a cap the replication layer sets).
//! Consumer reads (`read`) never look past the high watermark's byte position; replica reads
//! (`read_replica`) stop at the durable end's, so both only see bytes the writer has finished.
//! Followers append the leader's batches as they are (`replica`), keep a leader-epoch cache
//! (`epochs`) and truncate divergent tails (`truncate`). Recovery on open is in `recovery`; what it, reads and the scrubber
//! (`scrub`) find damaged is kept in `damage`; a partition whose write failed (a full disk)
//! re-checks itself and resumes in `resume`.
//!
//! Memory: the active segment keeps its index entries in memory (segment_bytes_max /
//! index_interval_bytes entries at most); sealed segments are looked up on disk.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;

use crate::io::{DiskWriter, Job, WriterError};
use crate::protocol::batch;

pub use inspect::{InspectBudget, Inspecting};

mod compaction;
mod damage;
mod epochs;
mod index;
mod inspect;
mod producers;
mod read;
mod records;
mod recovery;
mod replica;
mod resume;
mod retention;
mod scrub;
mod segment;
mod snapshot;
mod stage;
mod start_offset;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_compaction;
#[cfg(test)]
mod tests_damage;
#[cfg(test)]
mod tests_disk_full;
#[cfg(test)]
mod tests_durability;
#[cfg(test)]
mod tests_epochs;
#[cfg(test)]
mod tests_power_cut;
#[cfg(test)]
mod tests_power_cut_compaction;
#[cfg(test)]
mod tests_power_cut_producers;
#[cfg(test)]
mod tests_producers;
#[cfg(test)]
mod tests_replica;
#[cfg(test)]
mod tests_snapshot;
#[cfg(test)]
mod tests_truncate;
mod truncate;
mod watermark;

pub use compaction::{
    BATCH_BYTES_MAX as COMPACTION_BATCH_BYTES_MAX, Cleanup, CompactionStats, OFFSET_MAP_KEYS_MAX,
};
pub use damage::{Damage, DamageLog};
pub use epochs::{EPOCH_ENTRIES_MAX, UNDEFINED_EPOCH, UNDEFINED_OFFSET};
pub use scrub::{Pace, SCRUB_CHUNK_BYTES, ScrubStats};
use segment::{Segment, io_error};
use stage::Mode;
pub use watermark::MARKS_MAX;
use watermark::{Mark, Position, Watermarks};

/// Per-topic log settings (Kafka topic config names in brackets). Units last.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// [segment.bytes] roll the active segment before it would pass this size.
    pub segment_bytes_max: u64,
    /// [segment.ms] roll the active segment when its first batch is older than this.
    pub segment_ms_max: u64,
    /// [retention.bytes] delete oldest sealed segments while the partition is larger. None = no limit (-1).
    pub retention_bytes_max: Option<u64>,
    /// [retention.ms] delete sealed segments whose newest batch is older. None = forever (-1).
    pub retention_ms_max: Option<u64>,
    /// [index.interval.bytes] one sparse index entry per this many log bytes.
    pub index_interval_bytes: u32,
    /// [max.message.bytes] largest batch accepted on produce.
    pub message_bytes_max: u32,
    /// fsync before acknowledging (acks=1/all answered only once the batch is durable).
    pub fsync_on_ack: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 1 << 30,
            segment_ms_max: 7 * 24 * 3600 * 1000,
            retention_bytes_max: None,
            retention_ms_max: Some(7 * 24 * 3600 * 1000),
            index_interval_bytes: 4096,
            message_bytes_max: 1_048_588,
            fsync_on_ack: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A batch failed validation (magic, length, CRC-32C, record count, offset delta). Maps to CORRUPT_MESSAGE.
    #[error("corrupt record batch: {0}")]
    Corrupt(#[from] crate::protocol::batch::BatchError),
    /// A batch is larger than message_bytes_max. Maps to MESSAGE_TOO_LARGE.
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge { size: usize, max: u32 },
    /// Fetch offset outside [log_start_offset, log_end_offset]. Maps to OFFSET_OUT_OF_RANGE.
    #[error("offset {offset} out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    /// The disk writer is gone (shutdown in progress). Maps to KAFKA_STORAGE_ERROR / NOT_LEADER.
    #[error("disk writer stopped")]
    WriterStopped,
    /// A stored batch failed its length or CRC-32C check on a read (the disk's bytes changed
    /// after they were written). Maps to CORRUPT_MESSAGE, which clients report to the
    /// application instead of retrying silently (see `damage`).
    #[error("corrupt stored batch in {path} at byte {position}: {why}")]
    CorruptStored {
        path: PathBuf,
        position: u64,
        offsets: Range<i64>,
        why: String,
    },
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A batch's producer epoch is older than the partition has seen for that producer id (a
    /// fenced zombie). Maps to INVALID_PRODUCER_EPOCH.
    #[error("producer {producer_id} epoch {epoch} is older than its current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// A batch's base sequence does not follow its producer's last one (a lost batch), or a new
    /// epoch does not start at 0. Maps to OUT_OF_ORDER_SEQUENCE_NUMBER.
    #[error("producer {producer_id} epoch {epoch}: sequence {sequence}, expected {expected}")]
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        sequence: i32,
        expected: i32,
    },
    /// A follower's batch does not continue the log: its base offset lies below `expected` (the
    /// log end offset, or the end of the batch before it). The replication layer then truncates
    /// or refetches; never sent to a client.
    #[error("replicated batch at offset {got}, expected at or after {expected}")]
    UnexpectedOffset { expected: i64, got: i64 },
    /// Not a failure: the batch was appended before (a producer's retry) and nothing was written
    /// this time. The produce handler answers success with `original`'s offsets, as Kafka does.
    /// Returned only once those offsets are below the high watermark, like a fresh append.
    #[error("duplicate batch of producer {producer_id}: already at offsets {}..={}", original.base_offset, original.last_offset)]
    DuplicateSequence {
        producer_id: i64,
        original: AppendInfo,
    },
}

/// What an append assigned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
}

/// An append whose offsets are assigned and whose write is queued; [`Staged::durable`] waits until
/// it is on disk per the flush policy (the durable end has then passed it; the high watermark
/// too when it is uncapped).
pub struct Staged {
    completion: crate::io::Completion,
    info: AppendInfo,
}

impl Staged {
    pub async fn durable(self) -> Result<AppendInfo, LogError> {
        self.completion.wait().await.map_err(writer_error)?;
        Ok(self.info)
    }
}

/// Whole batches read for a fetch.
#[derive(Debug, Clone)]
pub struct ReadInfo {
    /// Zero or more whole batches, concatenated, starting with the batch containing the fetch offset.
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

struct Inner {
    config: LogConfig,
    /// By base offset; never empty: the last one is the active segment.
    segments: BTreeMap<i64, Segment>,
    log_end_offset: i64,
    /// Durable end, high watermark, its cap and the marks between them (`watermark`).
    wm: Watermarks,
    /// Whether the HW is checkpointed (the file existed on open or a cap was ever set).
    hw_tracked: bool,
    /// The HW figure the checkpoint file holds, None when there is no valid file.
    checkpointed: Option<i64>,
    /// The leader-epoch cache (`epochs`).
    epochs: epochs::EpochCache,
    /// An entry a leader append added is not in the file yet (`epochs`).
    epochs_dirty: bool,
    deleted: bool,
    /// Idempotent producers' epochs and last batches (checked and updated under the append lock).
    producers: producers::Producers,
    /// cleanup.policy and the compaction settings (`compaction`); retention reads `delete`.
    cleanup: Cleanup,
    /// The log start offset DeleteRecords raised (persisted, `start_offset`); 0 when never.
    start_floor: i64,
}

impl Inner {
    fn active(&self) -> Option<&Segment> {
        self.segments.last_key_value().map(|(_, s)| s)
    }

    /// The first segment's base, or higher where DeleteRecords raised it (never past the end).
    fn log_start_offset(&self) -> i64 {
        let first = self
            .segments
            .first_key_value()
            .map_or(self.log_end_offset, |(&base, _)| base);
        first.max(self.start_floor.min(self.log_end_offset))
    }

    /// Bytes of `seg` below `limit` (the high watermark for consumers, the durable end for
    /// replicas).
    fn readable_end(seg: &Segment, limit: Position) -> u64 {
        match seg.base_offset.cmp(&limit.segment_base) {
            std::cmp::Ordering::Less => seg.size_bytes,
            std::cmp::Ordering::Equal => limit.position,
            std::cmp::Ordering::Greater => 0,
        }
    }
}

/// State shared with the writer thread's completion callbacks.
struct Shared {
    dir: PathBuf,
    inner: Mutex<Inner>,
    hw_tx: watch::Sender<i64>,
    durable_tx: watch::Sender<i64>,
    /// Set when a write or sync failed: no later append may be acknowledged (its bytes could sit
    /// behind a hole). Reopening the partition recovers from what is on disk.
    failed: AtomicBool,
    /// What recovery, reads and the scrubber found damaged (`damage`).
    damage: Mutex<DamageLog>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs on the writer thread, in submission order, for every append.
    fn complete(&self, result: Result<(), WriterError>, marks: &[Mark]) -> Result<(), WriterError> {
        if let Err(error) = result {
            self.failed.store(true, Ordering::SeqCst);
            tracing::error!(dir = %self.dir.display(), %error, "append failed; partition stops accepting appends");
            return Err(error);
        }
        if self.failed.load(Ordering::SeqCst) {
            return Err(WriterError::Poisoned {
                path: self.dir.clone(),
            });
        }
        let mut inner = self.lock();
        let inner_ref = &mut *inner;
        inner_ref.wm.complete(marks, &mut inner_ref.segments);
        let (durable, hw) = (inner.wm.durable.offset, inner.wm.hw.offset);
        drop(inner);
        self.durable_tx.send_if_modified(|v| {
            let moved = *v < durable;
            *v = (*v).max(durable);
            moved
        });
        self.publish_hw(hw);
        Ok(())
    }

    /// Tells subscribers the HW moved up to `hw`.
    fn publish_hw(&self, hw: i64) {
        self.hw_tx.send_if_modified(|v| {
            let moved = *v < hw;
            *v = (*v).max(hw);
            moved
        });
    }

    /// Tells subscribers the positions now stand at `inner`'s (they may have gone down:
    /// truncation, a re-check after a failed write).
    fn publish_reset(&self, durable: i64, hw: i64) {
        self.durable_tx.send_if_modified(|v| {
            let moved = *v != durable;
            *v = durable;
            moved
        });
        self.hw_tx.send_if_modified(|v| {
            let moved = *v != hw;
            *v = hw;
            moved
        });
    }
}

/// Recovers `dir` (`recovery`) and rebuilds the producer state: the in-memory state of a
/// partition as its files stand, plus the gaps recovery found (compacted topics' chain gaps are
/// expected and left out). Used on open and when a partition recovers from a failed write.
fn load(
    storage: &dyn crate::io::Storage,
    dir: &Path,
    config: LogConfig,
    cleanup: Cleanup,
) -> Result<(Inner, producers::Rebuilt, Vec<Damage>), LogError> {
    let recovered = recovery::open_segments(storage, dir, &config, cleanup.compact)?;
    let mut segments = recovered.segments;
    let start_floor = start_offset::load(storage, dir);
    let restarted = start_offset::restart_past_lost_tail(
        storage,
        dir,
        &mut segments,
        start_floor,
        config.index_interval_bytes,
    )?;
    let Some(active) = segments.last_key_value().map(|(_, s)| s) else {
        return Err(segment::corrupt(
            dir,
            "no segment after recovery".to_string(),
        ));
    };
    let log_end_offset = active.next_offset;
    // Snapshots above a cut describe batches that are no longer in the log; a restarted log
    // holds nothing a snapshot could describe.
    let cut_at = recovered.cut_at.filter(|_| !restarted);
    let valid_end = cut_at.map_or(log_end_offset, |c| c.min(log_end_offset));
    let (producers, rebuilt) = producers::restore(storage, dir, &segments, valid_end)?;
    let end = Position {
        offset: log_end_offset,
        segment_base: active.base_offset,
        position: active.size_bytes,
    };
    let first = segments
        .first_key_value()
        .map_or(log_end_offset, |(&b, _)| b);
    let log_start = first.max(start_floor.min(log_end_offset));
    let (hw, cap, hw_tracked, file_hw) = match watermark::load(storage, dir) {
        watermark::Checkpoint::Absent => (log_end_offset, i64::MAX, false, None),
        watermark::Checkpoint::Valid(hw) => {
            let hw = hw.min(log_end_offset).max(log_start);
            (hw, hw, true, Some(hw))
        }
        watermark::Checkpoint::Damaged(why) => {
            tracing::warn!(dir = %dir.display(), %why, log_start_offset = log_start, "damaged high-watermark checkpoint: holding the high watermark at the log start offset");
            (log_start, log_start, true, None)
        }
    };
    let mut wm = watermark::place(&mut segments, end, hw, cap)?;
    // A file whose figure is not where the HW now sits is rewritten before a capped append.
    let checkpointed = file_hw.filter(|&h| h == wm.hw.offset);
    if cap < i64::MAX {
        // Held where the HW sits until the owner sets a cap.
        wm.cap = wm.hw.offset;
    }
    let mut epochs = epochs::load(storage, dir);
    let mut changed = epochs.drop_above(log_end_offset);
    changed |= epochs::extend_from_headers(&mut epochs, &segments);
    if changed && let Err(error) = epochs::store(storage, dir, &epochs) {
        tracing::warn!(dir = %dir.display(), %error, "cannot rewrite the leader-epoch checkpoint on open");
    }
    let mut gaps = if cleanup.compact {
        Vec::new()
    } else {
        recovered.chain_gaps
    };
    gaps.extend(recovered.lost_tail);
    let inner = Inner {
        config,
        segments,
        log_end_offset,
        wm,
        hw_tracked,
        checkpointed,
        epochs,
        epochs_dirty: false,
        deleted: false,
        producers,
        cleanup,
        start_floor,
    };
    Ok((inner, rebuilt, gaps))
}

fn writer_error(e: WriterError) -> LogError {
    let (path, kind) = match &e {
        WriterError::Stopped => return LogError::WriterStopped,
        WriterError::Write { path, source } | WriterError::Sync { path, source } => {
            (path.clone(), source.kind())
        }
        WriterError::Start {
            data_dir: path,
            source,
        } => (path.clone(), source.kind()),
        WriterError::Poisoned { path } => (path.clone(), std::io::ErrorKind::Other),
    };
    LogError::Io {
        path,
        source: std::io::Error::new(kind, e),
    }
}

/// One partition's log. Cheap to share: `Arc<Partition>`; all methods take `&self`.
pub struct Partition {
    shared: Arc<Shared>,
    writer: DiskWriter,
    /// Serialises appends, rolls, retention, flush and deletion. Held while offsets are assigned
    /// and the job is queued (so queue order is offset order), not while durability is awaited.
    append_lock: tokio::sync::Mutex<()>,
    /// Held by a compaction pass throughout and by retention before its append lock, so
    /// retention never deletes a segment the cleaner is swapping (`compaction`).
    cleaner_lock: tokio::sync::Mutex<()>,
    /// Serialises writes of the high-watermark checkpoint (`watermark`).
    checkpoint_lock: tokio::sync::Mutex<()>,
    /// How `producers::restore` rebuilt the producer state on open (snapshot used, headers read).
    #[cfg_attr(not(test), allow(dead_code))]
    rebuilt: producers::Rebuilt,
    /// When a failed partition was last re-checked (`resume`).
    resume_attempt: Mutex<Option<std::time::Instant>>,
}

impl Partition {
    /// Open (or create) the partition directory `dir`, recovering the active segment: scan batch by
    /// batch checking length and CRC-32C, truncate a torn tail (logging how many bytes were cut),
    /// rebuild its index. `writer` is the data directory's disk writer.
    pub fn open(dir: &Path, config: LogConfig, writer: DiskWriter) -> Result<Partition, LogError> {
        Partition::open_with(dir, config, Cleanup::default(), writer)
    }

    /// [`Partition::open`] for a topic whose cleanup settings are known: a compacted log may
    /// legitimately skip offsets between segments, so only other topics' chain gaps are damage.
    /// Gaps found are logged at error level and kept for [`Partition::damage`]; the partition
    /// is served anyway (`damage` says why).
    pub fn open_with(
        dir: &Path,
        config: LogConfig,
        cleanup: Cleanup,
        writer: DiskWriter,
    ) -> Result<Partition, LogError> {
        let (inner, rebuilt, gaps) = load(&**writer.storage(), dir, config, cleanup)?;
        let (hw_tx, _) = watch::channel(inner.wm.hw.offset);
        let (durable_tx, _) = watch::channel(inner.wm.durable.offset);
        let shared = Shared {
            dir: dir.to_path_buf(),
            inner: Mutex::new(inner),
            hw_tx,
            durable_tx,
            failed: AtomicBool::new(false),
            damage: Mutex::new(DamageLog::default()),
        };
        let partition = Partition {
            shared: Arc::new(shared),
            writer,
            append_lock: tokio::sync::Mutex::new(()),
            cleaner_lock: tokio::sync::Mutex::new(()),
            checkpoint_lock: tokio::sync::Mutex::new(()),
            rebuilt,
            resume_attempt: Mutex::new(None),
        };
        gaps.into_iter().for_each(|g| partition.record_damage(g));
        Ok(partition)
    }

    /// How the producer state was rebuilt when this partition opened.
    #[cfg(test)]
    pub(crate) fn producers_rebuilt(&self) -> producers::Rebuilt {
        self.rebuilt
    }

    /// Validate every batch in `records` (one or more v2 batches, as a client sent them), assign
    /// offsets starting at the log end offset (patching base offset and partition leader epoch in
    /// the bytes), append them through the disk writer and return once durable per the flush policy.
    /// Nothing of `records` is written if any batch is invalid, too large or refused by its
    /// idempotent producer's state (`producers`); a retried batch is not written again and comes
    /// back as `LogError::DuplicateSequence` with its original offsets. Concurrent appends are
    /// serialised; offsets are dense. The durable end advances once the batch is durable, and the
    /// high watermark with it up to its cap (subscribers are woken). `leader_epoch` above the
    /// latest leader-epoch entry starts a new one at this append's offset (`epochs`).
    pub async fn append(&self, records: Bytes, leader_epoch: i32) -> Result<AppendInfo, LogError> {
        self.append_staged(records, leader_epoch)
            .await?
            .durable()
            .await
    }

    /// The ordered half of [`Partition::append`]: validates, assigns offsets and queues the write
    /// (everything that must happen in request order), then returns without waiting for the disk.
    /// The returned [`Staged`] owns what it needs, so a connection can stage its next request
    /// while this one's fsync is pending — one group commit then covers both.
    pub async fn append_staged(
        &self,
        records: Bytes,
        leader_epoch: i32,
    ) -> Result<Staged, LogError> {
        let max = self.shared.lock().config.message_bytes_max;
        let batches = batch::split(&records)?;
        if let Some((_, r)) = batches.iter().find(|(_, r)| r.len() > max as usize) {
            return Err(LogError::TooLarge { size: r.len(), max });
        }
        let offsets: i64 = batches
            .iter()
            .map(|(h, _)| i64::from(h.last_offset_delta) + 1)
            .sum();
        let guard = self.append_lock.lock().await;
        self.check_usable().await?;
        let checked = {
            let inner = self.shared.lock();
            inner.producers.check(&batches, inner.log_end_offset)?
        };
        let updates = match checked {
            producers::Checked::Append { updates } => updates,
            producers::Checked::Duplicate { producer_id, batch } => {
                drop(guard);
                // Rare (a client retry): answered here, in order, before any later request.
                return Err(self.duplicate(producer_id, batch).await);
            }
        };
        self.checkpoint_before_capped_append().await?;
        {
            // Written at the next roll, flush or epoch change (`epochs`): not on the ack path.
            let mut inner = self.shared.lock();
            let leo = inner.log_end_offset;
            if inner.epochs.assign(leader_epoch, leo) {
                inner.epochs_dirty = true;
            }
        }
        let now = now_ms();
        self.maybe_roll(records.len() as u64, offsets, now).await?;
        let permit = self.writer.reserve().await.map_err(writer_error)?;
        let mode = Mode::Leader {
            epoch: leader_epoch,
        };
        let (job, info) = self.stage(&records, &batches, mode, now)?;
        // The log end offset has not moved since `check` (the append lock is held), so the
        // offsets it recorded are the ones `stage` assigned.
        self.shared.lock().producers.commit(updates);
        let completion = permit.submit(job);
        drop(guard);
        Ok(Staged { completion, info })
    }

    /// The answer to a retried batch: `DuplicateSequence` with its original offsets, once they
    /// are below the durable end (as a fresh append's `Staged::durable`; acks=all waits for the
    /// high watermark on top, as for any append). If the client retried before its first
    /// attempt completed, the original is still queued; the writer completes jobs in order, so
    /// once an empty job queued now completes, the original has completed too (or failed, which
    /// is then reported).
    async fn duplicate(&self, producer_id: i64, batch: producers::BatchMeta) -> LogError {
        if self.durable_end() <= batch.last_offset {
            let waited = match self.writer.submit(Job::new()).await {
                Ok(done) => done.wait().await,
                Err(e) => Err(e),
            };
            if let Err(e) = waited {
                return writer_error(e);
            }
            if self.durable_end() <= batch.last_offset {
                return io_error(
                    &self.shared.dir,
                    std::io::Error::other("the first append of this retried batch failed"),
                );
            }
        }
        tracing::debug!(
            producer_id,
            base_offset = batch.base_offset,
            "duplicate batch answered with its original offsets"
        );
        LogError::DuplicateSequence {
            producer_id,
            original: AppendInfo {
                base_offset: batch.base_offset,
                last_offset: batch.last_offset,
                log_start_offset: self.log_start_offset(),
            },
        }
    }

    /// Refuses appends to a deleted partition; a failed one is re-checked first (`resume`).
    /// Call with the append lock held.
    async fn check_usable(&self) -> Result<(), LogError> {
        self.check_usable_cleaning(false).await
    }

    /// [`Partition::check_usable`] for a caller that also holds the cleaner lock (truncation).
    async fn check_usable_cleaning(&self, cleaner_held: bool) -> Result<(), LogError> {
        if self.shared.lock().deleted {
            let e = std::io::Error::new(std::io::ErrorKind::NotFound, "partition deleted");
            return Err(io_error(&self.shared.dir, e));
        }
        if self.shared.failed.load(Ordering::SeqCst) {
            self.resume_after_failure(cleaner_held).await?;
        }
        Ok(())
    }

    /// A failed partition re-checks itself now (at most once per `resume::RESUME_RETRY_MS`): a
    /// follower, which never appends as a client would, recovers through this.
    pub async fn recheck_if_failed(&self) -> Result<(), LogError> {
        let _cleaner = self.cleaner_lock.lock().await;
        let _guard = self.append_lock.lock().await;
        self.check_usable_cleaning(true).await
    }

    /// Records a finding about this partition's files, logging it at error level the first time.
    pub(crate) fn record_damage(&self, d: Damage) {
        let new = self
            .shared
            .damage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(d.clone());
        if new {
            tracing::error!(dir = %self.shared.dir.display(), damage = %d, "partition storage damaged");
        }
    }

    /// A read that met a corrupt stored batch: recorded, so `bramble status` shows it.
    fn note_corrupt(&self, e: &LogError) {
        if let LogError::CorruptStored {
            path,
            position,
            offsets,
            why,
        } = e
        {
            self.record_damage(Damage::Corrupt {
                file: path.clone(),
                position: *position,
                offsets: offsets.clone(),
                why: why.clone(),
            });
        }
    }

    /// What was found damaged in this partition's files since it opened.
    pub fn damage(&self) -> DamageLog {
        self.shared
            .damage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.shared.lock().log_start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.shared.lock().log_end_offset
    }

    /// The high watermark: consumers read below it (see `watermark`).
    pub fn high_watermark(&self) -> i64 {
        *self.shared.hw_tx.borrow()
    }

    /// A receiver that changes whenever the high watermark moves (long-polling fetch waits on it;
    /// it may go down on truncation).
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.shared.hw_tx.subscribe()
    }

    /// How many receivers from [`Partition::subscribe`] are alive (parked long polls, in tests).
    pub fn watchers(&self) -> usize {
        self.shared.hw_tx.receiver_count()
    }

    pub fn config(&self) -> LogConfig {
        self.shared.lock().config.clone()
    }

    /// New limits apply from the next append (index interval: from the next segment).
    pub fn set_config(&self, config: LogConfig) {
        self.shared.lock().config = config;
    }

    /// Bytes on disk across all segments (.log files).
    pub fn size_bytes(&self) -> u64 {
        self.shared
            .lock()
            .segments
            .values()
            .map(|s| s.size_bytes)
            .sum()
    }

    /// Sync everything written so far (used at clean shutdown). Sealed segments were synced when
    /// they were rolled, so this syncs the active segment's files. Then checkpoints the high
    /// watermark when the partition tracks one (`watermark`).
    pub async fn flush(&self) -> Result<(), LogError> {
        self.flush_files().await?;
        {
            let _guard = self.append_lock.lock().await;
            self.update_epochs(|_| false).await?;
        }
        self.checkpoint_if_tracked().await
    }

    async fn flush_files(&self) -> Result<(), LogError> {
        let _guard = self.append_lock.lock().await;
        let mut job = Job::new();
        {
            let inner = self.shared.lock();
            if let Some(seg) = inner.active() {
                job.sync(&seg.log).sync(&seg.index).sync(&seg.timeindex);
            }
        }
        self.writer
            .submit(job)
            .await
            .map_err(writer_error)?
            .wait()
            .await
            .map_err(writer_error)
    }

    /// Stop using the partition and remove its directory (topic deletion).
    pub async fn delete(self: Arc<Self>) -> Result<(), LogError> {
        let _guard = self.append_lock.lock().await;
        self.shared.lock().deleted = true;
        // The writer is FIFO: once this empty job completes, no queued write to our files remains.
        if let Ok(done) = self.writer.submit(Job::new()).await {
            let _ = done.wait().await;
        }
        let dir = &self.shared.dir;
        match self.writer.storage().remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(dir, e)),
            _ => Ok(()),
        }
    }
}
