//! meta::store: the metadata quorum's durable state, openraft 0.9's storage-v2 pair over files in
//! `<data_dir>/meta/raft` (apart from `meta/topics`), written through the project's I/O seam
//! (`io::Storage`, docs/CONVENTIONS.md rule 7) so the crash-simulating backend can cut power
//! under it. [`LogStore`] holds the Raft log, the vote and the committed mark;
//! [`StateMachineStore`] applies entries to the [`MetadataImage`], publishes it, and keeps
//! snapshots. Every file operation runs on tokio's blocking pool, never on the runtime and never
//! through the partitions' `DiskWriter` (a burst of produce traffic must not delay Raft).
//!
//! Files in the directory:
//!
//! ```text
//! log-<20-digit first index>.bin   log segments: LogRecords, append-only, rolled past segment_bytes
//! vote.bin                         the vote: one record (Vote)
//! purged.bin                       the last purged log id: one record (LogId)
//! committed.bin                    the committed log id: one record (Option<LogId>), synced
//! snapshot-<20-digit seq>.bin      the newest snapshot: a SnapshotMeta record, then an image record
//! *.tmp                            a replacement being written (removed on open)
//! ```
//!
//! Every file is a sequence of records (big-endian):
//!
//! ```text
//! offset size  field
//!      0    4  length     bytes that follow the CRC: 1 + payload length (1 ..= RECORD_BYTES_MAX)
//!      4    4  crc        CRC-32C of the bytes from offset 8 to the end of the record
//!      8    1  version    FORMAT_VERSION (a CRC-valid record of another version is refused)
//!      9    n  payload    postcard: log LogRecord, vote Vote, purged LogId, committed
//!                         Option<LogId>, snapshot SnapshotMeta then MetadataImage
//! ```
//!
//! The format version stays 1 across issue 11: log payloads only gained enum variants at the
//! end (postcard encodes a variant by its index), and the image gained one trailing field
//! (`shutting_down`), which `image::decode_image` reads as empty from images written before it.
//! An older build refuses the newer bytes (an unknown variant, or trailing bytes), never
//! misreads them.
//!
//! A log record is one `append` call's entries (`LogRecord::Entries`) or a truncation
//! (`LogRecord::Truncate { from }`: entries from `from` on, written earlier in this segment, are
//! void). One record per append means at most one record is ever unsynced: each append is
//! written with one `pwrite` and fdatasynced before openraft hears it is durable, so a power cut
//! can damage only the last record of the last segment. Truncation appends a marker instead of
//! rewriting a record in place (a rewrite could lose the entries before the cut point, which may
//! be committed). Why this suits SD cards: the log only appends, one fdatasync per append, and
//! small files are replaced by rename, never rewritten in place (except `committed.bin`, one
//! record overwritten within a sector and synced, so a restarted node replays at least as far
//! as its local view had acted on).
//!
//! Recovery on open: segments are scanned record by record. At the first bad record (short,
//! length out of range, CRC mismatch) the rest of the file is searched byte by byte for any valid
//! record: none, and the file is the last segment, means a torn tail, cut with a warning giving
//! the bytes cut; otherwise (a valid record follows, or the segment is not the last) the store
//! refuses to open, naming the file and offset: committed metadata is never dropped silently. A
//! bad vote, purged or snapshot file also refuses (a vote reset would break Raft's safety). A bad
//! committed mark is ignored with a warning. Known limit: an entry whose payload embeds a
//! byte-exact valid record, torn by a power cut, reads as damage (refuses to open; never a loss).

mod files;
mod log_store;
mod record;
mod state_machine;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_power_cut;
#[cfg(test)]
mod tests_recovery;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{AnyError, StorageIOError};

use super::image::MetadataImage;
use super::types::StorageError;
use crate::io::Storage;

pub use log_store::{LogReader, LogStore};
pub use record::{FORMAT_VERSION, RECORD_BYTES_MAX};
pub use state_machine::{SnapshotBuilder, StateMachineStore};

/// Default size past which the next append starts a new log segment.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 20;

/// Settings of the metadata store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// An append starts a new segment once the active one holds at least this many bytes.
    pub segment_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
        }
    }
}

/// Why the metadata store could not open, read or write. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata store file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata store file {path} is damaged at byte {offset}: {why}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    #[error("metadata store file {path}: cannot encode: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: postcard::Error,
    },
    /// A call that breaks the store's rules (openraft's contract), e.g. a non-contiguous append.
    #[error("metadata store {path}: {why}")]
    Refused { path: PathBuf, why: String },
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, offset: u64, why: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            offset,
            why: why.into(),
        }
    }
}

/// openraft's error for a failed log write.
fn write_logs_error(e: &StoreError) -> StorageError {
    StorageIOError::write_logs(AnyError::new(e)).into()
}

fn read_logs_error(e: &StoreError) -> StorageError {
    StorageIOError::read_logs(AnyError::new(e)).into()
}

/// Runs `f` on tokio's blocking pool (file I/O never runs on the async runtime).
async fn blocking<T, F>(dir: &Path, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::io(dir, std::io::Error::other(e))),
    }
}

/// Opens (creating if needed) the store in `dir` (`<data_dir>/meta/raft`) with default settings.
/// The state machine starts from the newest snapshot, whose image is published on `image`.
pub fn open(
    dir: &Path,
    storage: Arc<dyn Storage>,
    image: tokio::sync::watch::Sender<Arc<MetadataImage>>,
) -> Result<(LogStore, StateMachineStore), StoreError> {
    open_with(dir, storage, image, StoreConfig::default())
}

/// [`open`] with explicit settings. Runs recovery (blocking file I/O): call it from a
/// blocking-safe context (startup, or `spawn_blocking`).
pub fn open_with(
    dir: &Path,
    storage: Arc<dyn Storage>,
    image: tokio::sync::watch::Sender<Arc<MetadataImage>>,
    config: StoreConfig,
) -> Result<(LogStore, StateMachineStore), StoreError> {
    create_dir_durably(&*storage, dir)?;
    record::remove_tmp_files(&*storage, dir)?;
    let log = LogStore::open(dir, storage.clone(), config)?;
    let sm = StateMachineStore::open(dir, storage, image)?;
    Ok((log, sm))
}

/// Creates `dir` and its missing ancestors durably ([`crate::io::create_dir_durable`]).
fn create_dir_durably(storage: &dyn Storage, dir: &Path) -> Result<(), StoreError> {
    crate::io::create_dir_durable(storage, dir).map_err(|e| StoreError::io(dir, e))
}
