//! log::index: the sparse offset index (`.index`) and time index (`.timeindex`) of a segment:
//! their byte formats, how entries are chosen while appending (shared by the append path and by
//! rebuilds, so both produce identical files), lookups in memory and on disk, and validation.
//!
//! `.index`: one 8-byte entry per `index_interval_bytes` of log (big-endian, like Kafka):
//!
//! ```text
//! offset size field
//!      0    4 relative_offset   batch base offset - segment base offset (u32)
//!      4    4 position          byte position of that batch in the .log (u32)
//! ```
//!
//! `.timeindex`: one 12-byte entry written alongside an offset-index entry when the segment's
//! maximum timestamp grew since the last time entry:
//!
//! ```text
//! offset size field
//!      0    8 timestamp         largest batch max_timestamp in the segment up to this point (i64)
//!      8    4 relative_offset   base offset of the batch holding it - segment base offset (u32)
//! ```
//!
//! Both files are only appended to (small writes that sit in the page cache until the segment
//! is sealed, when they are synced once), never rewritten in place, so an SD card sees no
//! read-modify-write. They are rebuilt from the `.log` at recovery when they do not check out.
//! Invariant: entries strictly increase in both fields of each file.

use crate::io::StorageFile;

pub const INDEX_ENTRY_BYTES: usize = 8;
pub const TIME_ENTRY_BYTES: usize = 12;
/// Chunk size for validating index files at open (bounds the buffer whatever the file size).
const VALIDATE_CHUNK_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl IndexEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }

    pub fn decode(b: &[u8; INDEX_ENTRY_BYTES]) -> IndexEntry {
        IndexEntry {
            relative_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

impl TimeEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }

    pub fn decode(b: &[u8; TIME_ENTRY_BYTES]) -> TimeEntry {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        TimeEntry {
            timestamp: i64::from_be_bytes(ts),
            relative_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

/// Decides index entries as batches are appended to one segment. The same code runs on append
/// and on rebuild, so a rebuilt index is byte-identical to the one appends would have written.
#[derive(Debug, Clone)]
pub struct IndexBuilder {
    pub interval_bytes: u32,
    /// Log bytes appended since the last offset-index entry.
    pub bytes_since_entry: u64,
    /// Largest batch max_timestamp in the segment (-1: none yet) and the base offset of its batch.
    pub max_timestamp: i64,
    pub max_timestamp_offset: i64,
    /// Timestamp of the last time-index entry (-1: none).
    pub last_time_entry: i64,
}

impl IndexBuilder {
    pub fn new(interval_bytes: u32) -> IndexBuilder {
        IndexBuilder {
            interval_bytes,
            bytes_since_entry: 0,
            max_timestamp: -1,
            max_timestamp_offset: -1,
            last_time_entry: -1,
        }
    }

    /// Accounts one batch at `position` of the segment starting at `segment_base`; returns the
    /// entries to append for it, if any.
    pub fn add_batch(
        &mut self,
        segment_base: i64,
        base_offset: i64,
        position: u64,
        bytes: u64,
        max_timestamp: i64,
    ) -> (Option<IndexEntry>, Option<TimeEntry>) {
        let relative = u32::try_from(base_offset - segment_base).ok();
        let position32 = u32::try_from(position).ok();
        // The first batch needs no entry: a lookup below every entry starts at position 0.
        let due = position > 0 && self.bytes_since_entry >= u64::from(self.interval_bytes);
        let index = match (due, relative, position32) {
            (true, Some(relative_offset), Some(position)) => Some(IndexEntry {
                relative_offset,
                position,
            }),
            _ => None,
        };
        if index.is_some() {
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += bytes;
        if max_timestamp > self.max_timestamp {
            self.max_timestamp = max_timestamp;
            self.max_timestamp_offset = base_offset;
        }
        let mut time = None;
        if index.is_some()
            && self.max_timestamp > self.last_time_entry
            && let Ok(relative_offset) = u32::try_from(self.max_timestamp_offset - segment_base)
        {
            time = Some(TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset,
            });
            self.last_time_entry = self.max_timestamp;
        }
        (index, time)
    }
}

/// Position to start scanning for `relative`: the last entry at or below it, else 0.
pub fn lookup_mem(entries: &[IndexEntry], relative: u32) -> u64 {
    let at = entries.partition_point(|e| e.relative_offset <= relative);
    if at == 0 {
        0
    } else {
        u64::from(entries[at - 1].position)
    }
}

/// The relative offset to start a timestamp search at: the offset of the last time entry whose
/// timestamp is below `timestamp_ms` (every batch up to that entry is older), else 0.
pub fn lookup_time_mem(entries: &[TimeEntry], timestamp_ms: i64) -> u32 {
    let at = entries.partition_point(|e| e.timestamp < timestamp_ms);
    if at == 0 {
        0
    } else {
        entries[at - 1].relative_offset
    }
}

fn read_index_entry(file: &dyn StorageFile, i: u64) -> std::io::Result<IndexEntry> {
    let mut b = [0u8; INDEX_ENTRY_BYTES];
    file.read_at(&mut b, i * INDEX_ENTRY_BYTES as u64)?;
    Ok(IndexEntry::decode(&b))
}

fn read_time_entry(file: &dyn StorageFile, i: u64) -> std::io::Result<TimeEntry> {
    let mut b = [0u8; TIME_ENTRY_BYTES];
    file.read_at(&mut b, i * TIME_ENTRY_BYTES as u64)?;
    Ok(TimeEntry::decode(&b))
}

/// [`lookup_mem`] by binary search over the first `entries` entries of a sealed `.index`
/// (about log2(entries) positional reads of 8 bytes, from the page cache).
pub fn lookup_disk(file: &dyn StorageFile, entries: u64, relative: u32) -> std::io::Result<u64> {
    let (mut lo, mut hi) = (0u64, entries);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if read_index_entry(file, mid)?.relative_offset <= relative {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo == 0 {
        Ok(0)
    } else {
        Ok(u64::from(read_index_entry(file, lo - 1)?.position))
    }
}

/// [`lookup_time_mem`] over a sealed `.timeindex`.
pub fn lookup_time_disk(
    file: &dyn StorageFile,
    entries: u64,
    timestamp_ms: i64,
) -> std::io::Result<u32> {
    let (mut lo, mut hi) = (0u64, entries);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if read_time_entry(file, mid)?.timestamp < timestamp_ms {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo == 0 {
        Ok(0)
    } else {
        Ok(read_time_entry(file, lo - 1)?.relative_offset)
    }
}

/// What a valid pair of index files of a sealed segment says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSummary {
    pub index_entries: u64,
    pub time_entries: u64,
    pub last_index: Option<IndexEntry>,
    pub last_time: Option<TimeEntry>,
}

/// Why an index file was refused (then rebuilt from the log).
pub type Invalid = String;

/// Checks a sealed segment's index files against its `.log` of `log_bytes` bytes: whole entries,
/// strictly increasing fields, positions inside the log. Reads in bounded chunks.
pub fn validate(
    index: &dyn StorageFile,
    timeindex: &dyn StorageFile,
    log_bytes: u64,
) -> std::io::Result<Result<IndexSummary, Invalid>> {
    let mut last_index: Option<IndexEntry> = None;
    let index_bytes = index.len()?;
    let index_ok = scan_entries::<INDEX_ENTRY_BYTES>(index, index_bytes, |b| {
        let e = IndexEntry::decode(b);
        let increasing = last_index
            .is_none_or(|p| e.relative_offset > p.relative_offset && e.position > p.position);
        last_index = Some(e);
        increasing && u64::from(e.position) < log_bytes
    })?;
    if let Err(why) = index_ok {
        return Ok(Err(format!(".index: {why}")));
    }
    let mut last_time: Option<TimeEntry> = None;
    let time_bytes = timeindex.len()?;
    let time_ok = scan_entries::<TIME_ENTRY_BYTES>(timeindex, time_bytes, |b| {
        let e = TimeEntry::decode(b);
        let increasing = last_time
            .is_none_or(|p| e.timestamp > p.timestamp && e.relative_offset > p.relative_offset);
        last_time = Some(e);
        increasing
    })?;
    if let Err(why) = time_ok {
        return Ok(Err(format!(".timeindex: {why}")));
    }
    // A time entry is written with an offset-index entry and names a batch at or before it.
    if let Some(t) = last_time
        && last_index.is_none_or(|i| t.relative_offset > i.relative_offset)
    {
        return Ok(Err(
            ".timeindex: entry past the last offset-index entry".to_string()
        ));
    }
    Ok(Ok(IndexSummary {
        index_entries: index_bytes / INDEX_ENTRY_BYTES as u64,
        time_entries: time_bytes / TIME_ENTRY_BYTES as u64,
        last_index,
        last_time,
    }))
}

/// Feeds each `N`-byte entry of `file` to `check` in order; the first false refuses the file.
fn scan_entries<const N: usize>(
    file: &dyn StorageFile,
    file_bytes: u64,
    mut check: impl FnMut(&[u8; N]) -> bool,
) -> std::io::Result<Result<(), Invalid>> {
    if !file_bytes.is_multiple_of(N as u64) {
        return Ok(Err(format!(
            "length {file_bytes} is not a whole number of entries"
        )));
    }
    let chunk_entries = (VALIDATE_CHUNK_BYTES / N) as u64;
    let mut buf = vec![0u8; chunk_entries as usize * N];
    let entries = file_bytes / N as u64;
    let mut done = 0u64;
    while done < entries {
        let n = chunk_entries.min(entries - done);
        let part = &mut buf[..n as usize * N];
        file.read_at(part, done * N as u64)?;
        for (i, raw) in part.chunks_exact(N).enumerate() {
            let mut entry = [0u8; N];
            entry.copy_from_slice(raw);
            if !check(&entry) {
                return Ok(Err(format!(
                    "entry {} out of order or out of range",
                    done + i as u64
                )));
            }
        }
        done += n;
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{StdStorage, Storage};

    #[test]
    fn builder_spaces_entries_and_lookups_find_the_floor() {
        // Proves entries come once per interval, never for the first batch, and that memory and
        // disk lookups agree on the floor entry for every offset.
        let mut b = IndexBuilder::new(100);
        let (mut index, mut time) = (Vec::new(), Vec::new());
        let mut pos = 0u64;
        for i in 0..50i64 {
            let (ie, te) = b.add_batch(1000, 1000 + i * 2, pos, 60, 5000 + i);
            index.extend(ie);
            time.extend(te);
            pos += 60;
        }
        assert_eq!(
            index.first(),
            Some(&IndexEntry {
                relative_offset: 4,
                position: 120
            })
        );
        assert!(
            index
                .windows(2)
                .all(|w| w[1].position - w[0].position == 120)
        );
        assert_eq!(
            time.len(),
            index.len(),
            "timestamps grow with every batch here"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let f = StdStorage.open(&dir.path().join("i"), true).expect("open");
        let t = StdStorage.open(&dir.path().join("t"), true).expect("open");
        let (mut ib, mut tb) = (Vec::new(), Vec::new());
        index.iter().for_each(|e| e.encode(&mut ib));
        time.iter().for_each(|e| e.encode(&mut tb));
        f.write_at(&ib, 0).expect("write");
        t.write_at(&tb, 0).expect("write");
        for rel in 0..100u32 {
            let mem = lookup_mem(&index, rel);
            assert_eq!(
                lookup_disk(&*f, index.len() as u64, rel).expect("disk lookup"),
                mem
            );
            assert_eq!(
                mem,
                u64::from(rel / 2) * 60 / 120 * 120,
                "floor entry for relative offset {rel}"
            );
        }
        for ts in 4990..5060 {
            let mem = lookup_time_mem(&time, ts);
            assert_eq!(
                lookup_time_disk(&*t, time.len() as u64, ts).expect("disk lookup"),
                mem
            );
            let before: Vec<_> = time.iter().filter(|e| e.timestamp < ts).collect();
            assert_eq!(mem, before.last().map_or(0, |e| e.relative_offset));
        }
        let summary = validate(&*f, &*t, pos).expect("io").expect("valid");
        assert_eq!(summary.index_entries, index.len() as u64);
        assert_eq!(summary.last_index, index.last().copied());
    }

    #[test]
    fn validate_refuses_broken_files() {
        // Proves partial entries, out-of-order entries and positions past the log are refused.
        let dir = tempfile::tempdir().expect("tempdir");
        let f = StdStorage.open(&dir.path().join("i"), true).expect("open");
        let t = StdStorage.open(&dir.path().join("t"), true).expect("open");
        let mut ib = Vec::new();
        IndexEntry {
            relative_offset: 5,
            position: 100,
        }
        .encode(&mut ib);
        IndexEntry {
            relative_offset: 9,
            position: 200,
        }
        .encode(&mut ib);
        f.write_at(&ib, 0).expect("write");
        assert!(validate(&*f, &*t, 1000).expect("io").is_ok());
        assert!(
            validate(&*f, &*t, 200).expect("io").is_err(),
            "position at log end"
        );
        f.write_at(&[1, 2, 3], ib.len() as u64).expect("write");
        assert!(
            validate(&*f, &*t, 1000).expect("io").is_err(),
            "partial entry"
        );
        f.set_len(0).expect("truncate");
        let mut rev = Vec::new();
        IndexEntry {
            relative_offset: 9,
            position: 200,
        }
        .encode(&mut rev);
        IndexEntry {
            relative_offset: 5,
            position: 300,
        }
        .encode(&mut rev);
        f.write_at(&rev, 0).expect("write");
        assert!(
            validate(&*f, &*t, 1000).expect("io").is_err(),
            "decreasing offsets"
        );
    }
}
