//! log::resume: a partition whose write or sync failed (a full disk, most often) recovers by
//! itself once the disk takes writes again, instead of refusing every append until a restart.
//!
//! A failed write leaves the partition's files past the high watermark in an unknown state (a
//! partial batch, a hole before a later batch, unsynced bytes), so `Shared::complete` marks the
//! partition failed and no later append is acknowledged. The next append, at most once per
//! `RESUME_RETRY_MS`, re-checks the partition:
//! 1. wait until the disk writer has finished every job queued for it (FIFO: an empty job);
//! 2. cut every segment back to the durable end (`watermark`): the segment holding it is
//!    truncated to its byte, later segments (only ever created by a roll there) to zero, and
//!    synced. Everything below the durable end was written and synced (per the flush policy),
//!    so this is the last durable batch; nothing cut was acknowledged. The high watermark (at
//!    most the durable end) and its cap are kept;
//! 3. recover the directory as a restart would (`recovery`, `producers::restore`: the producer
//!    state of the failed appends goes too) on a blocking thread, and swap the new state in.
//!
//! A re-check that fails (the disk is still full: an index rewrite can need space) leaves the
//! partition failed, and the append that triggered it answers KAFKA_STORAGE_ERROR. The cleaner
//! may be rewriting a segment: then the re-check waits for a later append (it never blocks on the
//! cleaner while holding the append lock, which retention takes after the cleaner lock).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::io::Job;

use super::segment::io_error;
use super::{LogError, Partition, load, writer_error};

/// Least time between two re-checks of a failed partition: each one reads the active segment
/// whole (a CRC scan), too much to repeat for every produce while a disk stays full.
pub const RESUME_RETRY_MS: u64 = 1_000;

impl Partition {
    /// Called with the append lock held when the partition is marked failed: re-checks it (see
    /// the module doc) and clears the mark, or returns why appends are still refused.
    /// `cleaner_held`: the caller holds the cleaner lock already (truncation, a re-check).
    pub(super) async fn resume_after_failure(&self, cleaner_held: bool) -> Result<(), LogError> {
        let refused = || {
            io_error(
                &self.shared.dir,
                std::io::Error::other("an earlier write failed; appends resume once it re-checks"),
            )
        };
        {
            let mut last = self
                .resume_attempt
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let retry = Duration::from_millis(RESUME_RETRY_MS);
            if last.is_some_and(|at| at.elapsed() < retry) {
                return Err(refused());
            }
            *last = Some(Instant::now());
        }
        let _cleaner = match cleaner_held {
            true => None,
            false => match self.cleaner_lock.try_lock() {
                Ok(guard) => Some(guard),
                Err(_) => return Err(refused()),
            },
        };
        // FIFO: once this empty job completes, no write of ours is queued or running.
        let drained = self.writer.submit(Job::new()).await.map_err(writer_error)?;
        let _ = drained.wait().await;
        let result = self.cut_and_reload().await;
        match &result {
            Ok(end) => {
                self.shared.failed.store(false, Ordering::SeqCst);
                tracing::warn!(dir = %self.shared.dir.display(), log_end_offset = end, "partition re-checked after a failed write; appends resume");
            }
            Err(error) => {
                tracing::warn!(dir = %self.shared.dir.display(), %error, "partition re-check after a failed write failed; appends stay refused");
            }
        }
        result.map(|_| ())
    }

    /// Steps 2 and 3 of the module doc; returns the new log end offset.
    async fn cut_and_reload(&self) -> Result<i64, LogError> {
        let storage = self.writer.storage().clone();
        let dir = self.shared.dir.clone();
        let (cuts, config, cleanup, hw) = {
            let inner = self.shared.lock();
            // The durable end: everything below it was written (and synced per the policy).
            let v = inner.wm.durable;
            let cuts: Vec<_> = inner
                .segments
                .range(v.segment_base..)
                .map(|(&base, seg)| {
                    let keep = if base == v.segment_base {
                        v.position
                    } else {
                        0
                    };
                    (seg.log.clone(), keep)
                })
                .collect();
            (cuts, inner.config.clone(), inner.cleanup.clone(), v.offset)
        };
        // Gaps `load` reports are left out: chain gaps were reported at open, and the active
        // segment's index naming offsets past the cut is this cut's own doing.
        let (inner, _rebuilt, _gaps) = tokio::task::spawn_blocking(move || {
            for (log, keep) in &cuts {
                let len = log.len().map_err(|e| io_error(log.path(), e))?;
                if len > *keep {
                    log.set_len(*keep).map_err(|e| io_error(log.path(), e))?;
                    log.sync_data().map_err(|e| io_error(log.path(), e))?;
                }
            }
            load(&*storage, &dir, config, cleanup)
        })
        .await
        .map_err(|e| io_error(&self.shared.dir, std::io::Error::other(e)))??;
        let end = inner.log_end_offset;
        if end < hw {
            // Acknowledged batches did not survive the cut: say so loudly (`damage`).
            self.record_damage(super::Damage::Gap {
                missing: end..hw,
                why: "re-check after a failed write found less than the durable end".into(),
            });
        }
        self.install_reloaded(inner, false)?;
        Ok(end)
    }
}
