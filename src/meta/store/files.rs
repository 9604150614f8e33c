//! meta::store::files: the Raft log's files, synchronously: recovery on open, and the appends,
//! truncations, purges and vote/committed writes [`super::LogStore`] runs on the blocking pool.
//! The in-memory [`LogIndex`] says where each live entry lies; readers share it.
//!
//! Order of durable steps (what a power cut may interrupt, and what it leaves):
//! - append: one record, one `pwrite`, fdatasync (and a directory sync when it opened a new
//!   segment) before the caller reports the entries durable. Older segments were synced by their
//!   own appends, so only the last record of the last segment can be torn.
//! - truncate: later segments removed newest first and the directory synced, then a truncation
//!   record appended and synced: every cut leaves a prefix of the old log.
//! - purge: `purged.bin` replaced durably first, then whole segments at or below it removed
//!   oldest first; open removes any a cut left (their range, from the next segment's name, lies
//!   at or below the purged id).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::RaftLogId;
use serde::{Deserialize, Serialize};

use super::record::{self, Parsed};
use super::{StoreConfig, StoreError};
use crate::io::{FileRef, Storage};
use crate::meta::types::{Entry, LogId, Vote};

pub(super) const SEGMENT_PREFIX: &str = "log-";
pub(super) const VOTE_FILE: &str = "vote.bin";
pub(super) const PURGED_FILE: &str = "purged.bin";
pub(super) const COMMITTED_FILE: &str = "committed.bin";

/// One record of a log segment.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum LogRecord {
    /// One append's entries, contiguous, continuing the segment.
    Entries(Vec<Entry>),
    /// Entries from index `from` on, written before in this segment, are void.
    Truncate { from: u64 },
}

/// [`LogRecord`] by reference, for writing without a copy: same variants, same encoding.
#[derive(Serialize)]
pub(super) enum LogRecordRef<'a> {
    Entries(&'a [Entry]),
    Truncate { from: u64 },
}

pub(super) fn segment_name(first: u64) -> String {
    format!("{SEGMENT_PREFIX}{first:020}.bin")
}

/// Where one live entry lies: record `offset..offset + len` of `file`, entry `pos` of it.
#[derive(Debug, Clone)]
pub(super) struct Loc {
    log_id: LogId,
    file: FileRef,
    offset: u64,
    len: u32,
    pos: u32,
}

/// The live entries (above the purged id) and the purged id, shared with readers. Appends insert
/// after their fdatasync; truncations and purges hold the write lock while they change files.
#[derive(Debug, Default)]
pub(super) struct LogIndex {
    entries: BTreeMap<u64, Loc>,
    last_purged: Option<LogId>,
}

impl LogIndex {
    pub(super) fn last_purged(&self) -> Option<LogId> {
        self.last_purged
    }

    /// The last entry's id, or the purged id when no entry is left.
    pub(super) fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .last_key_value()
            .map(|(_, l)| l.log_id)
            .or(self.last_purged)
    }

    fn log_id_at(&self, index: u64) -> Option<LogId> {
        self.entries.get(&index).map(|l| l.log_id)
    }
}

pub(super) fn read_lock(index: &RwLock<LogIndex>) -> RwLockReadGuard<'_, LogIndex> {
    index.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock(index: &RwLock<LogIndex>) -> RwLockWriteGuard<'_, LogIndex> {
    index.write().unwrap_or_else(|e| e.into_inner())
}

/// Reads the live entries in `range` (each record read and CRC-checked once).
pub(super) fn read_entries(
    index: &RwLock<LogIndex>,
    range: (Bound<u64>, Bound<u64>),
) -> Result<Vec<Entry>, StoreError> {
    let index = read_lock(index);
    let mut out = Vec::new();
    let mut cached: Option<(&Loc, Vec<Entry>)> = None;
    for loc in index.entries.range(range).map(|(_, l)| l) {
        let hit = cached
            .as_ref()
            .is_some_and(|(c, _)| Arc::ptr_eq(&c.file, &loc.file) && c.offset == loc.offset);
        if !hit {
            cached = Some((loc, read_record(loc)?));
        }
        let entry = cached
            .as_ref()
            .and_then(|(_, batch)| batch.get(loc.pos as usize))
            .filter(|e| *e.get_log_id() == loc.log_id)
            .ok_or_else(|| {
                StoreError::corrupt(
                    loc.file.path(),
                    loc.offset,
                    format!("entry {} is not where the index says", loc.log_id),
                )
            })?;
        out.push(entry.clone());
    }
    Ok(out)
}

fn read_record(loc: &Loc) -> Result<Vec<Entry>, StoreError> {
    let path = loc.file.path();
    let mut buf = vec![0u8; loc.len as usize];
    loc.file
        .read_at(&mut buf, loc.offset)
        .map_err(|e| StoreError::io(path, e))?;
    let why = match record::parse(&buf, 0) {
        Parsed::Record { payload, .. } => match record::decode::<LogRecord>(payload) {
            Ok(LogRecord::Entries(batch)) => return Ok(batch),
            Ok(LogRecord::Truncate { .. }) => "a truncation record, not entries".to_string(),
            Err(why) => why,
        },
        Parsed::Unsupported { version } => format!("format version {version}"),
        Parsed::Bad(why) => why,
    };
    Err(StoreError::corrupt(path, loc.offset, why))
}

/// One log segment, by its first index in [`LogFiles::segments`].
#[derive(Debug)]
struct Segment {
    file: FileRef,
    len: u64,
    /// Index of its last live-or-purged entry (None only while empty).
    last: Option<u64>,
}

/// The log's files and cached small state. Owned by `LogStore` behind a mutex; every method
/// does blocking I/O.
#[derive(Debug)]
pub(super) struct LogFiles {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    config: StoreConfig,
    segments: BTreeMap<u64, Segment>,
    index: Arc<RwLock<LogIndex>>,
    committed_file: Option<FileRef>,
}

/// What open found besides the files: the vote and the committed mark.
pub(super) struct Opened {
    pub(super) files: LogFiles,
    pub(super) vote: Option<Vote>,
    pub(super) committed: Option<LogId>,
}

impl LogFiles {
    pub(super) fn index(&self) -> Arc<RwLock<LogIndex>> {
        self.index.clone()
    }

    /// Recovers the log in `dir` (see the module doc of `meta/store/mod.rs` for the rules).
    pub(super) fn open(
        dir: &Path,
        storage: Arc<dyn Storage>,
        config: StoreConfig,
    ) -> Result<Opened, StoreError> {
        let read = |name: &str| record::read_file(&*storage, dir, name);
        let vote = match read(VOTE_FILE)? {
            Some(b) => Some(record::single::<Vote>(&dir.join(VOTE_FILE), &b, false)?),
            None => None,
        };
        let purged = match read(PURGED_FILE)? {
            Some(b) => Some(record::single::<LogId>(&dir.join(PURGED_FILE), &b, false)?),
            None => None,
        };
        let committed = match read(COMMITTED_FILE)? {
            Some(b) => record::single::<Option<LogId>>(&dir.join(COMMITTED_FILE), &b, true)
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "metadata store: ignoring the committed mark");
                    None
                }),
            None => None,
        };
        let mut files = LogFiles {
            dir: dir.to_path_buf(),
            storage,
            config,
            segments: BTreeMap::new(),
            index: Arc::new(RwLock::new(LogIndex {
                entries: BTreeMap::new(),
                last_purged: purged,
            })),
            committed_file: None,
        };
        files.recover_segments(purged)?;
        let committed = files.check_committed(committed);
        Ok(Opened {
            files,
            vote,
            committed,
        })
    }

    fn path(&self, first: u64) -> PathBuf {
        self.dir.join(segment_name(first))
    }

    fn remove(&self, first: u64) -> Result<(), StoreError> {
        let path = self.path(first);
        self.storage
            .remove_file(&path)
            .map_err(|e| StoreError::io(&path, e))
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| StoreError::io(&self.dir, e))
    }

    fn recover_segments(&mut self, purged: Option<LogId>) -> Result<(), StoreError> {
        let firsts: Vec<u64> = record::list(&self.dir)?
            .iter()
            .filter_map(|n| record::numbered(n, SEGMENT_PREFIX))
            .collect();
        let purged_index = purged.map(|p| p.index);
        let mut removed = false;
        let mut live = Vec::new();
        for (i, &first) in firsts.iter().enumerate() {
            // A segment whose whole range (up to the next one's first index) is purged: a purge
            // a power cut interrupted.
            match (firsts.get(i + 1), purged_index) {
                (Some(next), Some(p)) if next - 1 <= p => {
                    self.remove(first)?;
                    removed = true;
                }
                _ => live.push(first),
            }
        }
        let mut entries = BTreeMap::new();
        let mut prev_last: Option<u64> = None;
        for (i, &first) in live.iter().enumerate() {
            let path = self.path(first);
            let expected = match (i, purged_index) {
                (0, Some(p)) => (first > p + 1).then(|| p + 1),
                (0, None) => None,
                _ => match prev_last {
                    Some(l) => (first != l + 1).then(|| l + 1),
                    None => {
                        return Err(StoreError::corrupt(
                            &path,
                            0,
                            "the segment before it is empty",
                        ));
                    }
                },
            };
            if let Some(expected) = expected {
                return Err(StoreError::corrupt(
                    &path,
                    0,
                    format!("segment starts at index {first}, the log continues at {expected}"),
                ));
            }
            let is_last = i + 1 == live.len();
            let seg = self.recover_segment(&path, first, is_last, &mut entries)?;
            prev_last = seg.last;
            self.segments.insert(first, seg);
        }
        // An empty or wholly purged last segment goes: the next append starts a new one at its
        // own index.
        while let Some((&first, seg)) = self.segments.last_key_value() {
            if seg.last.is_some_and(|l| purged_index.is_none_or(|p| l > p)) {
                break;
            }
            self.remove(first)?;
            self.segments.remove(&first);
            removed = true;
        }
        if removed {
            self.sync_dir()?;
        }
        let mut index = write_lock(&self.index);
        index.entries = match purged_index {
            Some(p) => entries.split_off(&(p + 1)),
            None => entries,
        };
        Ok(())
    }

    /// Scans one segment, adding its entries to `entries`; cuts a torn tail of the last one.
    fn recover_segment(
        &self,
        path: &Path,
        first: u64,
        is_last: bool,
        entries: &mut BTreeMap<u64, Loc>,
    ) -> Result<Segment, StoreError> {
        let file = self
            .storage
            .open(path, false)
            .map_err(|e| StoreError::io(path, e))?;
        let buf = record::read_all(&*file)?;
        let mut seg = Segment {
            file,
            len: 0,
            last: None,
        };
        let mut at = 0usize;
        while at < buf.len() {
            let why = match record::parse(&buf, at) {
                Parsed::Record { payload, end } => {
                    let rec = record::decode::<LogRecord>(payload)
                        .map_err(|why| StoreError::corrupt(path, at as u64, why))?;
                    replay(&mut seg, first, rec, at, end, entries)
                        .map_err(|why| StoreError::corrupt(path, at as u64, why))?;
                    at = end;
                    continue;
                }
                Parsed::Unsupported { version } => {
                    return Err(StoreError::corrupt(
                        path,
                        at as u64,
                        format!(
                            "format version {version}, this build reads {}",
                            record::FORMAT_VERSION
                        ),
                    ));
                }
                Parsed::Bad(why) => why,
            };
            if let Some(next) = record::valid_record_after(&buf, at) {
                return Err(StoreError::corrupt(
                    path,
                    at as u64,
                    format!("{why}, yet a valid record follows at byte {next}"),
                ));
            }
            if !is_last {
                return Err(StoreError::corrupt(
                    path,
                    at as u64,
                    format!("{why}, in a segment that is not the last"),
                ));
            }
            tracing::warn!(
                file = %path.display(),
                offset = at,
                bytes_cut = buf.len() - at,
                reason = %why,
                "metadata log: torn tail cut to the last valid record"
            );
            let io = |e| StoreError::io(path, e);
            seg.file.set_len(at as u64).map_err(io)?;
            seg.file.sync_data().map_err(io)?;
            break;
        }
        seg.len = at as u64;
        Ok(seg)
    }

    /// The committed mark, if the log still holds that very entry (or it is purged): a mark
    /// written ahead of a log append a power cut lost is dropped, so openraft never re-applies
    /// entries that are gone.
    fn check_committed(&self, committed: Option<LogId>) -> Option<LogId> {
        let c = committed?;
        let index = read_lock(&self.index);
        let purged = index.last_purged.is_some_and(|p| c.index <= p.index);
        if purged || index.log_id_at(c.index) == Some(c) {
            return Some(c);
        }
        tracing::warn!(committed = %c, "metadata store: committed mark beyond the log, ignored");
        None
    }

    /// Appends `entries` (contiguous, continuing the log) as one record and makes it durable.
    pub(super) fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let (first, last) = (first.get_log_id().index, last.get_log_id().index);
        let contiguous = entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.get_log_id().index == first + i as u64);
        if !contiguous {
            return Err(StoreError::Refused {
                path: self.dir.clone(),
                why: format!("append of {first}..={last} is not contiguous"),
            });
        }
        if !self.continues(first) {
            self.rebase(first)?;
        }
        let roll = self
            .segments
            .last_key_value()
            .is_none_or(|(_, s)| s.len >= self.config.segment_bytes);
        if roll {
            self.create_segment(first)?;
        }
        let bytes = record::frame(&self.path(first), &LogRecordRef::Entries(entries))?;
        let (offset, file) = self.write_record(&bytes, roll)?;
        let mut index = write_lock(&self.index);
        for (pos, e) in entries.iter().enumerate() {
            let loc = Loc {
                log_id: *e.get_log_id(),
                file: file.clone(),
                offset,
                len: bytes.len() as u32,
                pos: pos as u32,
            };
            index.entries.insert(loc.log_id.index, loc);
        }
        if let Some(mut seg) = self.segments.last_entry() {
            seg.get_mut().last = Some(last);
        }
        Ok(())
    }

    /// Whether an append starting at `first` continues the log: right after the last entry, or
    /// right after the purged id when no entry is left (or anywhere in an empty, unpurged log).
    fn continues(&self, first: u64) -> bool {
        let index = read_lock(&self.index);
        let purged = index.last_purged.map(|p| p.index);
        match (index.entries.last_key_value(), purged) {
            (Some((&l, _)), p) => first == l + 1 && p.is_none_or(|p| first > p),
            (None, Some(p)) => first == p + 1,
            (None, None) => true,
        }
    }

    /// Makes room for an append at `first` that does not continue the log. openraft truncates
    /// before it overwrites and never leaves a gap, so this serves other callers (its conformance
    /// suite appends over entries and below the purged id, as its in-memory stores allow): an
    /// append over live entries truncates them; anything else starts the log afresh at `first`.
    fn rebase(&mut self, first: u64) -> Result<(), StoreError> {
        let (first_live, purged) = {
            let index = read_lock(&self.index);
            let first_live = index.entries.first_key_value().map(|(k, _)| *k);
            (first_live, index.last_purged.map(|p| p.index))
        };
        if first_live.is_some_and(|f| first > f) && purged.is_none_or(|p| first > p) {
            self.truncate(first)?;
            if self.continues(first) {
                return Ok(());
            }
        }
        tracing::warn!(
            dir = %self.dir.display(),
            first,
            "metadata log: an append that does not continue the log; starting it afresh"
        );
        let index = self.index.clone();
        let mut index = write_lock(&index);
        let all: Vec<u64> = self.segments.keys().rev().copied().collect();
        for &f in &all {
            self.remove(f)?;
            self.segments.remove(&f);
        }
        if !all.is_empty() {
            self.sync_dir()?;
        }
        index.entries.clear();
        Ok(())
    }

    fn create_segment(&mut self, first: u64) -> Result<(), StoreError> {
        let path = self.path(first);
        let io = |e| StoreError::io(&path, e);
        let file = self.storage.open(&path, true).map_err(io)?;
        // A leftover of the same name (a removal a cut undid) would hold stale records.
        if !file.is_empty().map_err(io)? {
            file.set_len(0).map_err(io)?;
        }
        self.segments.insert(
            first,
            Segment {
                file,
                len: 0,
                last: None,
            },
        );
        Ok(())
    }

    /// Writes `bytes` at the end of the last segment and syncs it (and the directory when the
    /// segment is `new`). Returns where the record lies.
    fn write_record(&mut self, bytes: &[u8], new: bool) -> Result<(u64, FileRef), StoreError> {
        let Some((&first, seg)) = self.segments.last_key_value() else {
            return Err(StoreError::Refused {
                path: self.dir.clone(),
                why: "no segment to write to".into(),
            });
        };
        let (file, offset) = (seg.file.clone(), seg.len);
        let path = file.path().to_path_buf();
        let written = file
            .write_at(bytes, offset)
            .and_then(|()| file.sync_data())
            .map_err(|e| StoreError::io(&path, e))
            .and_then(|()| if new { self.sync_dir() } else { Ok(()) });
        if let Err(e) = written {
            // Best effort: no half record stays ahead of the next append.
            let _ = file.set_len(offset);
            if new {
                self.segments.remove(&first);
            }
            return Err(e);
        }
        if let Some(seg) = self.segments.get_mut(&first) {
            seg.len = offset + bytes.len() as u64;
        }
        Ok((offset, file))
    }

    /// Removes the entries from index `from` on, durably.
    pub(super) fn truncate(&mut self, from: u64) -> Result<(), StoreError> {
        let index = self.index.clone();
        let mut index = write_lock(&index);
        if index.entries.range(from..).next().is_none() {
            return Ok(());
        }
        let doomed: Vec<u64> = self.segments.range(from..).map(|(k, _)| *k).rev().collect();
        for &first in &doomed {
            self.remove(first)?;
            self.segments.remove(&first);
        }
        if !doomed.is_empty() {
            self.sync_dir()?;
        }
        let needs_marker = self
            .segments
            .last_key_value()
            .is_some_and(|(_, s)| s.last.is_some_and(|l| l >= from));
        if needs_marker {
            let path = self.dir.clone();
            let bytes = record::frame(&path, &LogRecordRef::Truncate { from })?;
            self.write_record(&bytes, false)?;
            if let Some(mut seg) = self.segments.last_entry() {
                seg.get_mut().last = from.checked_sub(1);
            }
        }
        index.entries.split_off(&from);
        Ok(())
    }

    /// Forgets the entries up to `log_id` (inclusive): remembers it durably, then removes the
    /// segments wholly at or below it.
    pub(super) fn purge(&mut self, log_id: LogId) -> Result<(), StoreError> {
        let done = read_lock(&self.index)
            .last_purged
            .is_some_and(|p| p.index >= log_id.index);
        if done {
            return Ok(());
        }
        let bytes = record::frame(&self.dir.join(PURGED_FILE), &log_id)?;
        record::replace_durably(&*self.storage, &self.dir, PURGED_FILE, &bytes)?;
        {
            let mut index = write_lock(&self.index);
            index.last_purged = Some(log_id);
            index.entries = index.entries.split_off(&(log_id.index + 1));
        }
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        let mut removed = false;
        for (i, &first) in firsts.iter().enumerate() {
            let last = match firsts.get(i + 1) {
                Some(next) => Some(next - 1),
                None => self.segments.get(&first).and_then(|s| s.last),
            };
            if last.is_some_and(|l| l > log_id.index) {
                break;
            }
            self.remove(first)?;
            self.segments.remove(&first);
            removed = true;
        }
        if removed {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Replaces the vote durably.
    pub(super) fn save_vote(&mut self, vote: &Vote) -> Result<(), StoreError> {
        let bytes = record::frame(&self.dir.join(VOTE_FILE), vote)?;
        record::replace_durably(&*self.storage, &self.dir, VOTE_FILE, &bytes)
    }

    /// Overwrites the committed mark in place, synced. For Raft a lost mark is safe (openraft
    /// learns the commit index from the leader again); the sync is for the node, whose local
    /// view must not restart older than what it acted on. Open checks it against the log.
    pub(super) fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StoreError> {
        let path = self.dir.join(COMMITTED_FILE);
        let bytes = record::frame(&path, &committed)?;
        let file = match &self.committed_file {
            Some(f) => f.clone(),
            None => {
                let f = self
                    .storage
                    .open(&path, true)
                    .map_err(|e| StoreError::io(&path, e))?;
                self.committed_file = Some(f.clone());
                f
            }
        };
        // Synced: after a power cut the node must not replay less than it had acted on (a
        // partition directory recreated under a new topic id would look unknown to an older
        // image). One small overwrite within a sector, so never torn.
        file.write_at(&bytes, 0)
            .and_then(|()| file.sync_data())
            .map_err(|e| StoreError::io(&path, e))
    }
}

/// Applies one recovered record to the segment and the entry map; Err says why it cannot be.
fn replay(
    seg: &mut Segment,
    first: u64,
    rec: LogRecord,
    offset: usize,
    end: usize,
    entries: &mut BTreeMap<u64, Loc>,
) -> Result<(), String> {
    match rec {
        LogRecord::Entries(batch) => {
            let expected = seg.last.map_or(first, |l| l + 1);
            for (pos, e) in batch.iter().enumerate() {
                let at = e.get_log_id().index;
                if at != expected + pos as u64 {
                    return Err(format!(
                        "entry index {at} where {} was expected",
                        expected + pos as u64
                    ));
                }
                let loc = Loc {
                    log_id: *e.get_log_id(),
                    file: seg.file.clone(),
                    offset: offset as u64,
                    len: (end - offset) as u32,
                    pos: pos as u32,
                };
                entries.insert(at, loc);
            }
            match batch.last() {
                Some(e) => seg.last = Some(e.get_log_id().index),
                None => return Err("an empty append record".into()),
            }
        }
        LogRecord::Truncate { from } => {
            if from <= first || seg.last.is_none_or(|l| from > l) {
                return Err(format!(
                    "truncation from {from} outside the segment's entries"
                ));
            }
            entries.split_off(&from);
            seg.last = Some(from - 1);
        }
    }
    Ok(())
}
