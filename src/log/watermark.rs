//! log::watermark: the three positions of a partition and how the high watermark moves.
//!
//! - log end offset (LEO): offsets assigned (`Inner::log_end_offset`);
//! - durable end: what the writer finished (written, and synced when `fsync_on_ack`); replica
//!   (follower) fetches read up to it (`Partition::read_replica`);
//! - high watermark (HW): what consumers may read. HW = max(HW, min(durable end, cap)); the cap is
//!   set by the replication layer (`Partition::set_high_watermark_cap`; i64::MAX when nobody caps
//!   it: a single node, where the HW is the durable end as before replication). The HW only goes
//!   down through truncation (`truncate`).
//!
//! Reads are bounded by byte positions, not offsets, so the HW keeps its byte position and a
//! queue of marks: one per batch of each completed append above the HW, (end offset, segment,
//! byte after the batch, the batch's largest timestamp). The HW moves to the largest mark at or
//! below min(durable end, cap): it always sits on a batch boundary, and followers copy whole
//! batches, so a cap that is a follower's durable end is always a mark. The queue holds at most
//! `MARKS_MAX` marks; a full queue merges neighbouring pairs (each pair keeps its later mark and
//! the larger timestamp), which only makes the HW coarser, never wrong. Each segment's
//! `visible_max` (what ListOffsets by time searches) grows only as the HW passes marks.
//!
//! The HW is checkpointed in `<partition dir>/high-watermark` so a restart never exposes records
//! above the HW the node had acknowledged (byte table below). Written by
//! `Partition::checkpoint_high_watermark` and by `flush` (clean shutdown) once the partition
//! tracks a HW: the file exists, or a cap below i64::MAX was ever set. An append made while a
//! cap is set and no file exists writes the file first, so records above a capped HW never reach
//! the disk without a checkpoint that hides them. New partition directories get no file: a
//! partition that nobody caps behaves as before (HW = LEO on open), and one that is capped gets
//! its file before its first capped append.
//!
//! ```text
//! offset size field
//!      0    2 version        0 (u16, big-endian)
//!      2    8 high_watermark i64, big-endian
//!     10    4 crc            CRC-32C of bytes 0..10
//! ```
//!
//! Written to `high-watermark.tmp`, synced, renamed over `high-watermark`, directory synced: a
//! power cut leaves the old or the new figure. 14 bytes: one filesystem block on an SD card.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use crate::io::Storage;
use crate::protocol::batch;

use super::segment::{Segment, io_error, read_header};
use super::{LogError, Partition, writer_error};

/// Marks kept between the HW and the durable end (about 48 bytes each: ~200 KiB at most).
pub const MARKS_MAX: usize = 4096;
const FILE_NAME: &str = "high-watermark";
const TEMP_NAME: &str = "high-watermark.tmp";
const VERSION: u16 = 0;
const FILE_BYTES: usize = 14;

/// An offset and the byte where it sits: the first byte of the batch at that offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Position {
    pub offset: i64,
    pub segment_base: i64,
    pub position: u64,
}

/// The end of one batch of a completed append.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mark {
    pub at: Position,
    /// Largest max_timestamp of the batches this mark covers, and that batch's base offset.
    pub max: (i64, i64),
}

/// The durable end, the HW, its cap and the marks between them.
#[derive(Debug)]
pub(super) struct Watermarks {
    pub durable: Position,
    pub hw: Position,
    pub cap: i64,
    marks: VecDeque<Mark>,
}

impl Watermarks {
    /// All three positions at `end`, uncapped (a partition as it opens without a checkpoint).
    pub fn at_end(end: Position) -> Watermarks {
        Watermarks {
            durable: end,
            hw: end,
            cap: i64::MAX,
            marks: VecDeque::new(),
        }
    }

    /// Records a completed append's batch ends (offset order) and moves the durable end.
    pub fn complete(&mut self, marks: &[Mark], segments: &mut BTreeMap<i64, Segment>) {
        for m in marks {
            if m.at.offset <= self.durable.offset {
                continue;
            }
            self.durable = m.at;
            self.push(*m);
        }
        self.advance(segments);
    }

    /// Adds a mark above the HW, merging neighbours pairwise when the queue is full.
    pub fn push(&mut self, m: Mark) {
        if self.marks.len() >= MARKS_MAX {
            let old = std::mem::take(&mut self.marks);
            let mut pending: Option<Mark> = None;
            for mut next in old {
                match pending.take() {
                    None => pending = Some(next),
                    Some(first) => {
                        if first.max.0 > next.max.0 {
                            next.max = first.max;
                        }
                        self.marks.push_back(next);
                    }
                }
            }
            self.marks.extend(pending);
        }
        self.marks.push_back(m);
    }

    /// Moves the HW to the largest mark at or below min(durable end, cap), folding the passed
    /// marks' timestamps into their segments. Returns whether the HW moved.
    pub fn advance(&mut self, segments: &mut BTreeMap<i64, Segment>) -> bool {
        let target = self.durable.offset.min(self.cap);
        let before = self.hw.offset;
        while let Some(m) = self.marks.front().copied() {
            if m.at.offset > target {
                break;
            }
            self.marks.pop_front();
            if let Some(seg) = segments.get_mut(&m.at.segment_base)
                && m.max.0 > seg.visible_max.0
            {
                seg.visible_max = m.max;
            }
            if m.at.offset > self.hw.offset {
                self.hw = m.at;
            }
        }
        if self.marks.is_empty() && target >= self.durable.offset && self.hw != self.durable {
            self.hw = self.durable;
        }
        debug_assert!(
            self.hw.offset >= before,
            "the high watermark only grows here"
        );
        debug_assert!(self.hw.offset <= self.durable.offset);
        self.hw.offset > before
    }

    /// After compaction swapped segment `base` for a shorter file: positions at its end move.
    pub fn segment_rewritten(&mut self, base: i64, size_bytes: u64) {
        for p in [&mut self.hw, &mut self.durable] {
            if p.segment_base == base {
                p.position = size_bytes;
            }
        }
    }
}

/// Places the HW at `hw` in freshly loaded `segments` whose durable end is the log end (open,
/// truncation, a re-check after a failed write): at the first batch at or after `hw` (a batch
/// straddling `hw` lowers it to that batch's base), with a mark for every batch above it and
/// `visible_max` counting only batches below it. Reads batch headers from the HW's segment on.
pub(super) fn place(
    segments: &mut BTreeMap<i64, Segment>,
    durable: Position,
    hw: i64,
    cap: i64,
) -> Result<Watermarks, LogError> {
    let mut wm = Watermarks::at_end(durable);
    wm.cap = cap;
    if hw >= durable.offset {
        return Ok(wm);
    }
    let hw_base = segments
        .range(..=hw)
        .next_back()
        .or_else(|| segments.first_key_value())
        .map_or(durable.segment_base, |(&b, _)| b);
    let mut placed: Option<Position> = None;
    for (&base, seg) in segments.range_mut(hw_base..) {
        let mut position = 0u64;
        let mut max = (-1i64, -1i64);
        // Bounded by the segment's size: each step advances by a whole batch.
        while position < seg.size_bytes {
            let h = read_header(&*seg.log, position, seg.size_bytes)?;
            let end = position + h.total_bytes() as u64;
            if placed.is_none() && h.last_offset() >= hw {
                placed = Some(Position {
                    offset: hw.min(h.base_offset),
                    segment_base: base,
                    position,
                });
            }
            if placed.is_none() {
                if h.max_timestamp > max.0 {
                    max = (h.max_timestamp, h.base_offset);
                }
            } else {
                let at = Position {
                    offset: h.last_offset().saturating_add(1),
                    segment_base: base,
                    position: end,
                };
                wm.push(Mark {
                    at,
                    max: (h.max_timestamp, h.base_offset),
                });
            }
            position = end;
        }
        if placed.is_none() && base == hw_base {
            // Every batch of the HW's segment lies below it (a compaction gap follows).
            placed = Some(Position {
                offset: hw,
                segment_base: base,
                position: seg.size_bytes,
            });
        }
        seg.visible_max = max;
    }
    wm.hw = placed.unwrap_or(durable);
    Ok(wm)
}

/// What the checkpoint file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Checkpoint {
    Absent,
    Valid(i64),
    Damaged(String),
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

fn encode(hw: i64) -> [u8; FILE_BYTES] {
    let mut b = [0u8; FILE_BYTES];
    b[0..2].copy_from_slice(&VERSION.to_be_bytes());
    b[2..10].copy_from_slice(&hw.to_be_bytes());
    let crc = batch::crc32c(&b[0..10]);
    b[10..14].copy_from_slice(&crc.to_be_bytes());
    b
}

fn decode(bytes: &[u8]) -> Result<i64, String> {
    if bytes.len() != FILE_BYTES {
        return Err(format!("{} bytes, expected {FILE_BYTES}", bytes.len()));
    }
    let crc = u32::from_be_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]);
    if batch::crc32c(&bytes[0..10]) != crc {
        return Err("crc-32c mismatch".into());
    }
    let version = u16::from_be_bytes([bytes[0], bytes[1]]);
    if version != VERSION {
        return Err(format!("unknown version {version}"));
    }
    let mut hw = [0u8; 8];
    hw.copy_from_slice(&bytes[2..10]);
    let hw = i64::from_be_bytes(hw);
    if hw < 0 {
        return Err(format!("negative high watermark {hw}"));
    }
    Ok(hw)
}

/// Reads the checkpoint of `dir` (at most `FILE_BYTES + 1` bytes) through `storage`.
pub(super) fn load(storage: &dyn Storage, dir: &Path) -> Checkpoint {
    let bytes = match super::segment::read_small_file(storage, &path(dir), FILE_BYTES as u64 + 1) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Checkpoint::Absent,
        Err(e) => return Checkpoint::Damaged(e.to_string()),
    };
    match decode(&bytes) {
        Ok(hw) => Checkpoint::Valid(hw),
        Err(why) => Checkpoint::Damaged(why),
    }
}

/// Writes `hw` durably (temporary file, sync, rename, directory sync). Blocking.
pub(super) fn store(storage: &dyn Storage, dir: &Path, hw: i64) -> Result<(), LogError> {
    super::segment::replace_file(storage, dir, &dir.join(TEMP_NAME), &path(dir), &encode(hw))
}

impl Partition {
    /// The durable end: offsets below it are written (and synced when `fsync_on_ack`). Replica
    /// fetches read up to it; a leader reports it as its own replica's end.
    pub fn durable_end(&self) -> i64 {
        *self.shared.durable_tx.borrow()
    }

    /// A receiver that changes whenever the durable end moves (acks=all waits and the
    /// replication layer's view of the leader's own end).
    pub fn subscribe_durable(&self) -> tokio::sync::watch::Receiver<i64> {
        self.shared.durable_tx.subscribe()
    }

    /// The cap on the HW (i64::MAX: uncapped).
    pub fn high_watermark_cap(&self) -> i64 {
        self.shared.lock().wm.cap
    }

    /// Sets the cap on the high watermark and moves the HW now: HW = max(HW, min(durable end,
    /// cap)). A lower cap never lowers the HW (only truncation does). Every later completion
    /// moves the HW under the same cap. Set it before the first `append_replica` of a follower.
    pub fn set_high_watermark_cap(&self, cap: i64) {
        let hw = {
            let mut inner = self.shared.lock();
            let inner = &mut *inner;
            inner.wm.cap = cap;
            if cap < i64::MAX {
                inner.hw_tracked = true;
            }
            inner.wm.advance(&mut inner.segments);
            inner.wm.hw.offset
        };
        self.shared.publish_hw(hw);
    }

    /// Persists the HW (`high-watermark`, see the module doc) unless it is unchanged since the
    /// last checkpoint. Blocking I/O runs on a blocking thread.
    pub async fn checkpoint_high_watermark(&self) -> Result<(), LogError> {
        let _serial = self.checkpoint_lock.lock().await;
        let hw = {
            let mut inner = self.shared.lock();
            inner.hw_tracked = true;
            if inner.checkpointed == Some(inner.wm.hw.offset) {
                return Ok(());
            }
            inner.wm.hw.offset
        };
        let storage = self.writer.storage().clone();
        let dir = self.shared.dir.clone();
        tokio::task::spawn_blocking(move || store(&*storage, &dir, hw))
            .await
            .map_err(|e| io_error(&self.shared.dir, std::io::Error::other(e)))??;
        // Serialised by the checkpoint lock: this is the figure on disk now.
        self.shared.lock().checkpointed = Some(hw);
        Ok(())
    }

    /// Called with the append lock held before an append: while the HW is capped and no
    /// checkpoint exists yet, writes one, so the records about to land above the HW stay hidden
    /// after a restart.
    pub(super) async fn checkpoint_before_capped_append(&self) -> Result<(), LogError> {
        let needed = {
            let inner = self.shared.lock();
            inner.wm.cap < i64::MAX && inner.checkpointed.is_none()
        };
        if needed {
            self.checkpoint_high_watermark().await?;
        }
        Ok(())
    }

    /// The checkpoint write `flush` does when the partition tracks a HW.
    pub(super) async fn checkpoint_if_tracked(&self) -> Result<(), LogError> {
        if self.shared.lock().hw_tracked {
            self.checkpoint_high_watermark().await?;
        }
        Ok(())
    }

    /// Waits until every queued write of this partition has completed (FIFO: an empty job).
    pub(super) async fn drain_writer(&self) -> Result<(), LogError> {
        let done = self
            .writer
            .submit(crate::io::Job::new())
            .await
            .map_err(writer_error)?;
        done.wait().await.map_err(writer_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_bytes_round_trip_and_damage_is_detected() {
        let b = encode(1234);
        assert_eq!(decode(&b), Ok(1234));
        let mut flipped = b;
        flipped[5] ^= 1;
        assert!(decode(&flipped).is_err());
        assert!(decode(&b[..13]).is_err());
    }

    #[test]
    fn full_queue_merges_pairs_keeping_the_later_mark_and_larger_timestamp() {
        let pos = |o: i64| Position {
            offset: o,
            segment_base: 0,
            position: o as u64 * 10,
        };
        let mut wm = Watermarks::at_end(pos(0));
        wm.cap = 0;
        for o in 1..=MARKS_MAX as i64 {
            wm.push(Mark {
                at: pos(o),
                max: (if o == 1 { 999 } else { o }, o - 1),
            });
        }
        assert_eq!(wm.marks.len(), MARKS_MAX);
        wm.push(Mark {
            at: pos(MARKS_MAX as i64 + 1),
            max: (1, 1),
        });
        assert_eq!(wm.marks.len(), MARKS_MAX / 2 + 1);
        let first = wm.marks[0];
        assert_eq!(first.at.offset, 2, "the later mark of the first pair stays");
        assert_eq!(first.max.0, 999, "with the larger timestamp of the pair");
        assert!(
            wm.marks
                .iter()
                .zip(wm.marks.iter().skip(1))
                .all(|(a, b)| a.at.offset < b.at.offset)
        );
    }
}
