//! log::scrub: the background scrubber's per-partition pass. It walks the sealed segments of a
//! partition batch by batch and verifies each batch's length and CRC-32C, so bytes that rot on
//! the medium (SD cards do) are found before a consumer meets them. Findings go to the
//! partition's damage log (`damage`: an error line, `bramble status`); nothing is repaired here
//! (with replication, a damaged segment can be fetched again from a replica).
//!
//! Bounded: reads go through one `SCRUB_CHUNK_BYTES` buffer whatever a length field says (the
//! CRC is streamed, as recovery does), and a `Pace` shared by the whole pass keeps the read rate
//! at `scrub_bytes_per_sec_max` so the scrubber never competes with produce and fetch for an SD
//! card's little bandwidth. The loop that runs passes every `scrub_interval_ms` is the server's.
//!
//! Sealed segments only: the active one was CRC-checked by recovery and is being written. A
//! segment that retention or the cleaner replaces mid-pass is read to the end through the
//! handle taken at the start (the old bytes stay readable until the handle closes).

use std::time::{Duration, Instant};

use crate::io::{FileRef, StorageFile};

use super::damage::Damage;
use super::recovery::check_crc32c;
use super::segment::read_header;
use super::{LogError, Partition};

/// The scrubber's read buffer (counted in the memory model, `board`) and about how many bytes
/// one blocking step reads before the pace is applied.
pub const SCRUB_CHUNK_BYTES: usize = 64 * 1024;

/// Keeps a pass's reads at or under a byte rate: after each step, sleeps until the bytes read so
/// far would have taken that long at the rate.
pub struct Pace {
    bytes_per_sec: u64,
    started: Instant,
    bytes: u64,
}

impl Pace {
    pub fn new(bytes_per_sec: u64) -> Pace {
        Pace {
            bytes_per_sec: bytes_per_sec.max(1),
            started: Instant::now(),
            bytes: 0,
        }
    }

    async fn take(&mut self, bytes: u64) {
        self.bytes = self.bytes.saturating_add(bytes);
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// What one pass over a partition did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScrubStats {
    pub segments: u64,
    pub batches: u64,
    pub bytes: u64,
    /// Damaged batches found (each also recorded in the partition's damage log).
    pub damaged: u64,
}

/// What one blocking step found.
struct Step {
    next: u64,
    batches: u64,
    bytes: u64,
    damage: Vec<Damage>,
}

impl Partition {
    /// One scrub pass over this partition's sealed segments, paced by `pace`.
    pub async fn scrub(&self, pace: &mut Pace) -> Result<ScrubStats, LogError> {
        let sealed: Vec<(FileRef, u64)> = {
            let inner = self.shared.lock();
            inner
                .segments
                .values()
                .filter(|s| s.mem.is_none())
                .map(|s| {
                    (
                        s.log.clone(),
                        super::Inner::readable_end(s, inner.wm.durable),
                    )
                })
                .collect()
        };
        let mut stats = ScrubStats::default();
        for (log, end) in sealed {
            stats.segments += 1;
            let mut pos = 0;
            while pos < end {
                let file = log.clone();
                let step = tokio::task::spawn_blocking(move || scrub_step(&*file, pos, end))
                    .await
                    .map_err(|e| {
                        super::segment::io_error(log.path(), std::io::Error::other(e))
                    })??;
                stats.batches += step.batches;
                stats.bytes += step.bytes;
                stats.damaged += step.damage.len() as u64;
                step.damage.into_iter().for_each(|d| self.record_damage(d));
                pace.take(step.bytes).await;
                pos = step.next;
            }
        }
        Ok(stats)
    }
}

/// Verifies the batches from `pos` until about `SCRUB_CHUNK_BYTES` were read (at least one
/// batch). A batch that fails its CRC is reported and stepped over (its length still holds); a
/// header that cannot be trusted ends the segment's walk (`next` = `end`), as nothing after it
/// can be found.
fn scrub_step(log: &dyn StorageFile, mut pos: u64, end: u64) -> Result<Step, LogError> {
    let mut step = Step {
        next: end,
        batches: 0,
        bytes: 0,
        damage: Vec::new(),
    };
    let mut chunk = Vec::with_capacity(SCRUB_CHUNK_BYTES);
    while pos < end && step.bytes < SCRUB_CHUNK_BYTES as u64 {
        let header = match read_header(log, pos, end) {
            Ok(h) => h,
            Err(LogError::CorruptStored {
                path,
                position,
                offsets,
                why,
            }) => {
                step.damage.push(Damage::Corrupt {
                    file: path,
                    position,
                    offsets,
                    why,
                });
                return Ok(step);
            }
            Err(e) => return Err(e),
        };
        let total = header.total_bytes() as u64;
        if let Err(why) = check_crc32c(log, pos, &header, &mut chunk)? {
            step.damage.push(Damage::Corrupt {
                file: log.path().to_path_buf(),
                position: pos,
                offsets: header.base_offset..header.last_offset().saturating_add(1),
                why,
            });
        }
        step.batches += 1;
        step.bytes += total;
        pos += total;
    }
    step.next = pos;
    Ok(step)
}
