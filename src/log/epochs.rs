//! log::epochs: the leader-epoch cache of a partition (KIP-101/KIP-279): for each leader epoch
//! that wrote to this log, the first offset it wrote. OffsetForLeaderEpoch (API 23) answers from
//! it, and a follower truncates to the leader's answer before fetching (`truncate`).
//!
//! Entries come from leader appends (the epoch passed to `append`, when greater than the latest
//! entry), follower appends (each batch's partition leader epoch, when greater), and
//! `Partition::assign_epoch` (a new leader records (epoch, LEO) as it takes over). On open the
//! cache is extended from the batch headers of the newest segments (a crash may have lost the
//! file's last write) and entries starting above the log end are dropped.
//!
//! File `<partition dir>/leader-epoch-checkpoint`, Kafka's text format:
//!
//! ```text
//! 0                  version
//! 2                  entry count
//! 1 0                epoch start_offset
//! 3 120
//! ```
//!
//! Written to a temporary name, synced, renamed, directory synced, whenever an entry is added or
//! the cache truncated: a few times per leader change, never per append. The write runs on a
//! blocking thread with the append lock held and the state lock released. One exception keeps
//! the fsync off the acknowledgement path: an entry a leader's `append` adds (no
//! `assign_epoch` before it: a single node) is written at the next roll, flush or cache change.
//! Until then its batches lie in the active segment, whose headers rebuild it on open.

use std::path::{Path, PathBuf};

use crate::io::Storage;

use super::segment::{Segment, read_header};
use super::{LogError, Partition};

/// Entries kept (a few per leader change). Past this the oldest is dropped with a warning: an old
/// epoch's exact boundary only matters to a follower far behind, which then truncates further.
pub const EPOCH_ENTRIES_MAX: usize = 1024;
/// Segments (newest first) whose headers extend the cache on open.
const REBUILD_SEGMENTS_MAX: usize = 2;
const FILE_NAME: &str = "leader-epoch-checkpoint";
const TEMP_NAME: &str = "leader-epoch-checkpoint.tmp";
/// Largest file read on open: a line is at most ~32 bytes.
const FILE_BYTES_MAX: u64 = 64 * (EPOCH_ENTRIES_MAX as u64 + 2);
/// Kafka's UNDEFINED_EPOCH and UNDEFINED_EPOCH_OFFSET.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_OFFSET: i64 = -1;

/// (epoch, start offset) entries, both strictly ascending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct EpochCache {
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    pub fn latest(&self) -> Option<(i32, i64)> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start`; only an epoch above the latest is recorded.
    /// Entries starting at or after `start` go first (Kafka's monotonicity rule: an epoch that
    /// never wrote a record is replaced). Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start: i64) -> bool {
        if epoch < 0 || self.latest().is_some_and(|(e, _)| e >= epoch) {
            return false;
        }
        self.entries.retain(|&(_, s)| s < start);
        self.entries.push((epoch, start));
        if self.entries.len() > EPOCH_ENTRIES_MAX {
            let (old, at) = self.entries.remove(0);
            tracing::warn!(
                epoch = old,
                start_offset = at,
                "leader-epoch cache full: dropping its oldest entry"
            );
        }
        true
    }

    /// Drops the entries starting at or after `offset` (truncation). Returns whether any went.
    pub fn truncate_from_end(&mut self, offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, s)| s < offset);
        self.entries.len() != before
    }

    /// Drops the entries starting above `offset` (open: nothing starts past the log end).
    pub fn drop_above(&mut self, offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, s)| s <= offset);
        self.entries.len() != before
    }

    /// The log start moved to `offset`: entries wholly below it go, the one holding it starts
    /// there (Kafka's `truncateFromStart`). Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, offset: i64) -> bool {
        let below = self.entries.partition_point(|&(_, s)| s < offset);
        if below == 0 {
            return false;
        }
        let (epoch, _) = self.entries[below - 1];
        self.entries.drain(..below);
        if self.entries.first().is_none_or(|&(_, s)| s > offset) {
            self.entries.insert(0, (epoch, offset));
        }
        true
    }

    pub fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }

    /// Kafka's `LeaderEpochFileCache.endOffsetFor`: (the largest epoch <= `epoch`, the start
    /// offset of the first epoch after it, or `log_end` when it is the latest). An epoch below
    /// every entry answers (epoch, first entry's start) as Kafka does (the log before it is
    /// gone); one above every entry, an empty cache or UNDEFINED_EPOCH: (-1, -1).
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> (i32, i64) {
        let undefined = (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        if epoch == UNDEFINED_EPOCH {
            return undefined;
        }
        if self.latest().is_some_and(|(e, _)| e == epoch) {
            return (epoch, log_end);
        }
        let higher = self.entries.partition_point(|&(e, _)| e <= epoch);
        let Some(&(_, next_start)) = self.entries.get(higher) else {
            return undefined;
        };
        match higher.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(&(floor, _)) => (floor, next_start),
            None => (epoch, next_start),
        }
    }

    fn encode(&self) -> String {
        let mut out = format!("0\n{}\n", self.entries.len());
        for (e, s) in &self.entries {
            out.push_str(&format!("{e} {s}\n"));
        }
        out
    }

    fn parse(text: &str) -> Result<EpochCache, String> {
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some("0") {
            return Err("unknown version".into());
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("bad entry count")?;
        if count > EPOCH_ENTRIES_MAX {
            return Err(format!("{count} entries, at most {EPOCH_ENTRIES_MAX}"));
        }
        let mut cache = EpochCache::default();
        for _ in 0..count {
            let line = lines.next().ok_or("fewer entries than counted")?;
            let mut parts = line.split_whitespace();
            let epoch: i32 = parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or("bad epoch")?;
            let start: i64 = parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or("bad offset")?;
            let ascending = cache.latest().is_none_or(|(e, s)| epoch > e && start > s);
            if epoch < 0 || start < 0 || !ascending {
                return Err(format!("entry {epoch} {start} out of order"));
            }
            cache.entries.push((epoch, start));
        }
        Ok(cache)
    }
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// The cache as stored in `dir` (read through `storage`); empty (with a warning) when the file
/// is unreadable.
pub(super) fn load(storage: &dyn Storage, dir: &Path) -> EpochCache {
    let bytes = match super::segment::read_small_file(storage, &path(dir), FILE_BYTES_MAX) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return EpochCache::default(),
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "ignoring unreadable leader-epoch checkpoint");
            return EpochCache::default();
        }
    };
    let parsed = String::from_utf8(bytes)
        .map_err(|e| e.to_string())
        .and_then(|text| EpochCache::parse(&text));
    parsed.unwrap_or_else(|why| {
        tracing::warn!(dir = %dir.display(), %why, "ignoring corrupt leader-epoch checkpoint; rebuilding from batch headers");
        EpochCache::default()
    })
}

/// Writes `cache` durably (temporary file, sync, rename, directory sync). Blocking.
pub(super) fn store(storage: &dyn Storage, dir: &Path, cache: &EpochCache) -> Result<(), LogError> {
    let bytes = cache.encode();
    super::segment::replace_file(
        storage,
        dir,
        &dir.join(TEMP_NAME),
        &path(dir),
        bytes.as_bytes(),
    )
}

/// Extends `cache` from the batch headers of the newest segments (batches past the latest entry
/// with a greater epoch; batches without an epoch, -1, are skipped). Returns whether it changed.
/// A header that does not read back ends the walk (recovery already cut torn tails).
pub(super) fn extend_from_headers(
    cache: &mut EpochCache,
    segments: &std::collections::BTreeMap<i64, Segment>,
) -> bool {
    let from = cache.latest().map_or(i64::MIN, |(_, s)| s);
    let mut changed = false;
    let newest = segments.values().rev().take(REBUILD_SEGMENTS_MAX);
    let mut segs: Vec<&Segment> = newest.filter(|s| s.next_offset > from).collect();
    segs.reverse();
    for seg in segs {
        // From the indexed batch at or before the latest entry's start, not the segment's first.
        let relative = seg.relative(from);
        let mut position = match &seg.mem {
            Some(mem) => super::index::lookup_mem(&mem.index, relative),
            None => {
                super::index::lookup_disk(&*seg.index, seg.index_entries, relative).unwrap_or(0)
            }
        };
        while position < seg.size_bytes {
            let Ok(h) = read_header(&*seg.log, position, seg.size_bytes) else {
                break;
            };
            if h.base_offset >= from {
                changed |= cache.assign(h.partition_leader_epoch, h.base_offset);
            }
            position += h.total_bytes() as u64;
        }
    }
    changed
}

impl Partition {
    /// OffsetForLeaderEpoch: see [`EpochCache::end_offset_for`] (Kafka's semantics).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let inner = self.shared.lock();
        inner.epochs.end_offset_for(epoch, inner.log_end_offset)
    }

    /// The latest leader epoch recorded, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.shared.lock().epochs.latest().map(|(e, _)| e)
    }

    /// Every (epoch, start offset) entry, oldest first (tests, CLI).
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.shared.lock().epochs.entries().to_vec()
    }

    /// A new leader records (`epoch`, `start_offset`) as it takes over (Kafka's makeLeader
    /// passes the LEO). Ignored unless `epoch` is above the latest entry. Persisted before it
    /// returns.
    pub async fn assign_epoch(&self, epoch: i32, start_offset: i64) -> Result<(), LogError> {
        let _guard = self.append_lock.lock().await;
        self.update_epochs(|c| c.assign(epoch, start_offset)).await
    }

    /// Applies `change` to the cache and, when it changed or a leader append left an entry
    /// unwritten, writes the file on a blocking thread. Call with the append lock held (it
    /// serialises the writes of the file).
    pub(super) async fn update_epochs(
        &self,
        change: impl FnOnce(&mut EpochCache) -> bool,
    ) -> Result<(), LogError> {
        let snapshot = {
            let mut inner = self.shared.lock();
            let changed = change(&mut inner.epochs);
            if !changed && !inner.epochs_dirty {
                return Ok(());
            }
            inner.epochs_dirty = false;
            inner.epochs.clone()
        };
        let storage = self.writer.storage().clone();
        let dir = self.shared.dir.clone();
        let stored =
            super::read::blocking(&self.shared.dir, move || store(&*storage, &dir, &snapshot))
                .await;
        if stored.is_err() {
            // Written again at the next change, roll or flush: an entry only in memory would be
            // lost at a crash and the epoch's start found too late in the log.
            self.shared.lock().epochs_dirty = true;
        }
        stored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        EpochCache {
            entries: entries.to_vec(),
        }
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        // Proves the KIP-279 answers: the floor epoch with the next epoch's start, the log end
        // for the latest, and UNDEFINED past every epoch or on an empty cache.
        let c = cache(&[(1, 0), (3, 10), (5, 20)]);
        assert_eq!(c.end_offset_for(1, 30), (1, 10));
        assert_eq!(
            c.end_offset_for(2, 30),
            (1, 10),
            "2 never wrote: its floor is 1"
        );
        assert_eq!(c.end_offset_for(3, 30), (3, 20));
        assert_eq!(c.end_offset_for(5, 30), (5, 30));
        assert_eq!(c.end_offset_for(6, 30), (-1, -1));
        assert_eq!(c.end_offset_for(-1, 30), (-1, -1));
        assert_eq!(cache(&[(2, 5)]).end_offset_for(1, 30), (1, 5));
        assert_eq!(EpochCache::default().end_offset_for(1, 30), (-1, -1));
    }

    #[test]
    fn assign_keeps_entries_ascending_and_bounded() {
        let mut c = cache(&[(1, 0), (2, 10)]);
        assert!(!c.assign(2, 15), "not above the latest");
        assert!(c.assign(4, 10), "replaces an epoch that wrote nothing");
        assert_eq!(c.entries(), &[(1, 0), (4, 10)]);
        let mut big = EpochCache::default();
        for e in 0..(EPOCH_ENTRIES_MAX as i32 + 5) {
            big.assign(e, i64::from(e) * 10);
        }
        assert_eq!(big.entries().len(), EPOCH_ENTRIES_MAX);
        assert_eq!(big.entries()[0], (5, 50), "the oldest went");
    }

    #[test]
    fn truncate_from_start_moves_the_entry_holding_the_new_start() {
        let mut c = cache(&[(1, 0), (3, 10), (5, 20)]);
        assert!(!c.truncate_from_start(0));
        assert!(c.truncate_from_start(15));
        assert_eq!(c.entries(), &[(3, 15), (5, 20)]);
        assert!(c.truncate_from_start(20));
        assert_eq!(c.entries(), &[(5, 20)]);
    }

    #[test]
    fn file_text_round_trips_and_rejects_disorder() {
        let c = cache(&[(0, 0), (2, 7)]);
        assert_eq!(c.encode(), "0\n2\n0 0\n2 7\n");
        assert_eq!(EpochCache::parse(&c.encode()), Ok(c));
        assert!(EpochCache::parse("0\n2\n3 0\n2 7\n").is_err());
        assert!(EpochCache::parse("1\n0\n").is_err());
        assert!(EpochCache::parse("0\n3\n0 0\n").is_err());
    }
}
