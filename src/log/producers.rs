//! log::producers: per-partition state of idempotent producers, checked by `Partition::append`
//! under the append lock before anything is queued. For each producer id the partition keeps its
//! epoch and the sequences and offsets of its last `BATCHES_KEPT` batches, which is what lets a
//! retried batch be answered with its original offsets instead of being written twice.
//!
//! Rules (Kafka 3.x/4.x `ProducerStateManager` semantics, for batches with producer_id >= 0):
//! - epoch older than the known one: INVALID_PRODUCER_EPOCH (a fenced zombie);
//! - epoch newer than the known one: accepted only from sequence 0, and the state restarts;
//! - same epoch, same first and last sequence as one of the kept batches: a duplicate, not written;
//! - same epoch, base sequence not last sequence + 1 (i32 wraps to 0): OUT_OF_ORDER_SEQUENCE_NUMBER;
//! - unknown producer id: accepted at any sequence. This is Kafka's behaviour since 2.5 (KIP-360):
//!   the broker may have lost the state (retention deleted the producer's batches, or the rebuild
//!   below did not reach back far enough), and refusing with UNKNOWN_PRODUCER_ID would make the
//!   client reset its sequences and reorder what it had in flight.
//!
//! The state lives in memory and is rebuilt on open from the 61-byte headers of the newest
//! `REBUILD_SEGMENTS_MAX` segments (`rebuild`). Periodic snapshot files, so a restart does not
//! rescan, are issue 3's later work.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;

use crate::io::StorageFile;
use crate::protocol::batch::BatchHeader;

use super::LogError;
use super::segment::{Segment, read_header};

/// Batches remembered per producer: Kafka's limit, matching the client's
/// `max.in.flight.requests.per.connection` ceiling of 5 for idempotence.
pub const BATCHES_KEPT: usize = 5;
/// Producer ids remembered per partition. Past this the producer that wrote least recently is
/// forgotten (its next batch is then taken at any sequence, as for an unknown producer). Bounds
/// memory at roughly 200 bytes per producer.
pub const PRODUCERS_MAX: usize = 1024;
/// Segments (newest first) whose batch headers are read on open to rebuild the state. Bounds the
/// work of a restart to two segments' headers, as Kafka does when it has no snapshot.
pub const REBUILD_SEGMENTS_MAX: usize = 2;

/// Where one batch of a producer landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

/// What the partition knows about one producer id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    pub epoch: i16,
    /// Oldest first; at most BATCHES_KEPT.
    pub batches: VecDeque<BatchMeta>,
}

impl Entry {
    fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    fn last_offset(&self) -> i64 {
        self.batches.back().map_or(-1, |b| b.last_offset)
    }

    /// Records a batch already accepted; a newer epoch restarts the kept batches.
    fn push(&mut self, h: &BatchHeader, base_offset: i64) {
        if h.producer_epoch != self.epoch {
            self.epoch = h.producer_epoch;
            self.batches.clear();
        }
        if self.batches.len() == BATCHES_KEPT {
            self.batches.pop_front();
        }
        self.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_sequence(h),
            base_offset,
            last_offset: base_offset.saturating_add(i64::from(h.last_offset_delta)),
        });
    }
}

/// Sequence of the batch's last record: base + last_offset_delta, wrapping past i32::MAX to 0
/// as producers do (Kafka's `DefaultRecordBatch.incrementSequence`).
pub fn last_sequence(h: &BatchHeader) -> i32 {
    let delta = h.last_offset_delta.max(0);
    if h.base_sequence > i32::MAX - delta {
        delta - (i32::MAX - h.base_sequence) - 1
    } else {
        h.base_sequence + delta
    }
}

/// `next` follows `last` (i32::MAX is followed by 0).
fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

/// The verdict on an append's batches.
#[derive(Debug)]
pub enum Checked {
    /// Write them; `updates` replaces the touched producers' entries once the job is staged.
    Append { updates: HashMap<i64, Entry> },
    /// The first duplicate found: nothing is written, the append is answered with these offsets.
    Duplicate { producer_id: i64, batch: BatchMeta },
}

/// The producer states of one partition.
#[derive(Debug, Default)]
pub struct Producers {
    entries: HashMap<i64, Entry>,
}

impl Producers {
    #[cfg(test)]
    pub fn entry(&self, producer_id: i64) -> Option<&Entry> {
        self.entries.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Checks `batches` in order as if each earlier one had been appended, the first landing at
    /// `base_offset`. Pure: the state changes only through `commit`, so a refused request leaves
    /// no trace. Like Kafka, a duplicate anywhere answers the whole request with its offsets.
    pub fn check(
        &self,
        batches: &[(BatchHeader, Range<usize>)],
        base_offset: i64,
    ) -> Result<Checked, LogError> {
        let mut updates: HashMap<i64, Entry> = HashMap::new();
        let mut next = base_offset;
        for (h, _) in batches {
            if h.producer_id >= 0 {
                let known = updates
                    .get(&h.producer_id)
                    .or_else(|| self.entries.get(&h.producer_id));
                if let Some(batch) = check_one(known, h)? {
                    let producer_id = h.producer_id;
                    return Ok(Checked::Duplicate { producer_id, batch });
                }
                let mut entry = known.cloned().unwrap_or_else(|| Entry {
                    epoch: h.producer_epoch,
                    batches: VecDeque::new(),
                });
                entry.push(h, next);
                updates.insert(h.producer_id, entry);
            }
            next = next.saturating_add(i64::from(h.last_offset_delta) + 1);
        }
        Ok(Checked::Append { updates })
    }

    /// Applies what `check` computed, then forgets the least recently written producers while
    /// there are more than PRODUCERS_MAX.
    pub fn commit(&mut self, updates: HashMap<i64, Entry>) {
        self.entries.extend(updates);
        while self.entries.len() > PRODUCERS_MAX {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_offset())
                .map(|(&id, _)| id);
            let Some(id) = oldest else { break };
            tracing::debug!(
                producer_id = id,
                "forgetting producer state: too many producers"
            );
            self.entries.remove(&id);
        }
    }

    /// Records a batch found in the log (rebuild): no checks, the log is the truth.
    fn replay(&mut self, h: &BatchHeader) {
        if h.producer_id < 0 {
            return;
        }
        let entry = self.entries.entry(h.producer_id).or_insert_with(|| Entry {
            epoch: h.producer_epoch,
            batches: VecDeque::new(),
        });
        // A batch of an older epoch cannot follow a newer one in a log this broker wrote.
        if h.producer_epoch >= entry.epoch {
            entry.push(h, h.base_offset);
        }
    }
}

/// One batch against its producer's entry: Ok(Some) for a duplicate, Ok(None) to append.
fn check_one(known: Option<&Entry>, h: &BatchHeader) -> Result<Option<BatchMeta>, LogError> {
    let (producer_id, epoch, sequence) = (h.producer_id, h.producer_epoch, h.base_sequence);
    let Some(known) = known else {
        return Ok(None);
    };
    if epoch < known.epoch {
        return Err(LogError::InvalidProducerEpoch {
            producer_id,
            epoch,
            current: known.epoch,
        });
    }
    if epoch > known.epoch {
        if sequence != 0 {
            return Err(LogError::OutOfOrderSequence {
                producer_id,
                epoch,
                sequence,
                expected: 0,
            });
        }
        return Ok(None);
    }
    let last = last_sequence(h);
    if let Some(dup) = known
        .batches
        .iter()
        .find(|b| b.first_seq == sequence && b.last_seq == last)
    {
        return Ok(Some(*dup));
    }
    match known.last_seq() {
        Some(prev) if !in_sequence(prev, sequence) => Err(LogError::OutOfOrderSequence {
            producer_id,
            epoch,
            sequence,
            expected: prev.wrapping_add(1).max(0),
        }),
        _ => Ok(None),
    }
}

/// Rebuilds the state from the batch headers of the newest REBUILD_SEGMENTS_MAX segments,
/// oldest first, reading only the 61-byte header of each batch (positional reads). Runs after
/// recovery, so every segment's `size_bytes` covers whole, checked batches.
pub fn rebuild<'a>(
    segments: impl DoubleEndedIterator<Item = &'a Segment>,
) -> Result<Producers, LogError> {
    let mut newest: Vec<&Segment> = segments.rev().take(REBUILD_SEGMENTS_MAX).collect();
    newest.reverse();
    let mut producers = Producers::default();
    let mut headers = 0u64;
    for seg in newest {
        headers += replay_segment(&mut producers, &*seg.log, seg.size_bytes)?;
    }
    if producers.len() > 0 {
        tracing::info!(
            producers = producers.len(),
            headers,
            "rebuilt idempotent producer state from the log"
        );
    }
    producers.commit(HashMap::new());
    Ok(producers)
}

/// Replays the headers of one `.log` up to `end_bytes`; returns how many it read. A header that
/// does not read back (a sealed segment is trusted, not rescanned, by recovery) ends the replay
/// of that segment with a warning rather than failing the open: the producers it would have
/// shown are then unknown, which costs only duplicate detection for their next batch.
fn replay_segment(
    producers: &mut Producers,
    log: &dyn StorageFile,
    end_bytes: u64,
) -> Result<u64, LogError> {
    let (mut pos, mut count) = (0u64, 0u64);
    while pos < end_bytes {
        let h = match read_header(log, pos, end_bytes) {
            Ok(h) => h,
            Err(LogError::Io { path, source })
                if source.kind() == std::io::ErrorKind::InvalidData =>
            {
                tracing::warn!(path = %path.display(), error = %source, "producer state rebuild stopped early");
                break;
            }
            Err(e) => return Err(e),
        };
        producers.replay(&h);
        pos += h.total_bytes() as u64;
        count += 1;
    }
    Ok(count)
}
