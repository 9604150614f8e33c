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
//! The state lives in memory. Every roll writes it to a snapshot file (`snapshot`: the complete
//! state as of the new segment's base offset); on open `restore` loads the newest snapshot that
//! reads back and replays the 61-byte batch headers after it. With no usable snapshot it falls
//! back to the headers of the newest `REBUILD_SEGMENTS_MAX` segments.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;
use std::path::Path;

use crate::io::{Storage, StorageFile};
use crate::protocol::batch::BatchHeader;

use super::LogError;
use super::segment::{Segment, read_header};
use super::snapshot;

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

    pub fn last_offset(&self) -> i64 {
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

    /// Every producer's entry, in no particular order (`snapshot::encode` sorts them).
    pub fn iter(&self) -> impl Iterator<Item = (i64, &Entry)> {
        self.entries.iter().map(|(&id, e)| (id, e))
    }

    /// Adds an entry read back from a snapshot; false if `producer_id` is already there.
    pub fn insert_loaded(&mut self, producer_id: i64, entry: Entry) -> bool {
        match self.entries.entry(producer_id) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(entry);
                true
            }
        }
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
    pub fn replay(&mut self, h: &BatchHeader) {
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

/// How `restore` rebuilt the state on open: from which snapshot, and how many batch headers it
/// read after it (logged; tests use it to prove a reopen does not rescan the whole log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rebuilt {
    pub snapshot_offset: Option<i64>,
    pub headers_read: u64,
}

/// Rebuilds the state on open, after recovery. `valid_end` is the offset below which the log is
/// as it was when the snapshots were written (the log end offset, or lower where recovery cut a
/// segment): snapshots above it are deleted. Producers whose last batch is below the log start
/// offset are dropped (retention deleted their batches; Kafka drops them too).
pub fn restore(
    storage: &dyn Storage,
    dir: &Path,
    segments: &BTreeMap<i64, Segment>,
    valid_end: i64,
) -> Result<(Producers, Rebuilt), LogError> {
    let log_start = segments.keys().next().copied().unwrap_or(valid_end);
    let loaded = snapshot::load_newest(storage, dir, valid_end)?;
    let (mut producers, from, snapshot_offset) = match loaded {
        Some((offset, producers)) => {
            // Every segment holding an offset at or after the snapshot's.
            let from: Vec<&Segment> = segments
                .values()
                .filter(|s| s.next_offset > offset)
                .collect();
            (producers, from, Some(offset))
        }
        None => {
            let mut newest: Vec<&Segment> =
                segments.values().rev().take(REBUILD_SEGMENTS_MAX).collect();
            newest.reverse();
            (Producers::default(), newest, None)
        }
    };
    let after = snapshot_offset.unwrap_or(i64::MIN);
    let mut headers_read = 0u64;
    for seg in from {
        headers_read += replay_segment(&mut producers, &*seg.log, seg.size_bytes, after)?;
    }
    producers
        .entries
        .retain(|_, e| e.last_offset() >= log_start);
    producers.commit(HashMap::new());
    let rebuilt = Rebuilt {
        snapshot_offset,
        headers_read,
    };
    if producers.len() > 0 || snapshot_offset.is_some() {
        tracing::info!(
            producers = producers.len(),
            snapshot_offset,
            headers_read,
            "rebuilt idempotent producer state"
        );
    }
    Ok((producers, rebuilt))
}

/// Replays the headers of one `.log` up to `end_bytes`, skipping batches that start below
/// `from_offset` (a snapshot holds them already); returns how many headers it read. A header that
/// does not read back (a sealed segment is trusted, not rescanned, by recovery) ends the replay
/// of that segment with a warning rather than failing the open: the producers it would have
/// shown are then unknown, which costs only duplicate detection for their next batch.
fn replay_segment(
    producers: &mut Producers,
    log: &dyn StorageFile,
    end_bytes: u64,
    from_offset: i64,
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
        if h.base_offset >= from_offset {
            producers.replay(&h);
        }
        pos += h.total_bytes() as u64;
        count += 1;
    }
    Ok(count)
}
