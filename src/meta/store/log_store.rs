//! meta::store::log_store: openraft's `RaftLogStorage` over [`LogFiles`]: each call runs its file
//! I/O on tokio's blocking pool and returns (or fires the append callback) only once durable.
//! [`LogReader`] is the cheap clone replication tasks read through; it shares the in-memory index.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError};

use super::files::{self, LogFiles, LogIndex};
use super::{StoreConfig, StoreError, blocking, read_logs_error, write_logs_error};
use crate::io::Storage;
use crate::meta::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// The Raft log, vote and committed mark of the metadata quorum.
pub struct LogStore {
    dir: PathBuf,
    files: Arc<Mutex<LogFiles>>,
    index: Arc<RwLock<LogIndex>>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// The highest index handed to `append`, set before its write starts: what a leader has
    /// logged even while its disk write is stalled (Raft's metrics are published only after).
    /// A truncation lowers it to the entry before the cut: entries a deposed leader logged and
    /// its successor dropped would otherwise name an index no image reaches until as many new
    /// entries are written, and every lease grant would wait for it (a leader never truncates
    /// its own log, so no entry it still has is forgotten).
    submitted: Arc<AtomicU64>,
}

/// Reads log entries concurrently with the store's writes (a clone per replication task).
#[derive(Clone)]
pub struct LogReader {
    dir: PathBuf,
    index: Arc<RwLock<LogIndex>>,
}

impl LogStore {
    pub(super) fn open(
        dir: &Path,
        storage: Arc<dyn Storage>,
        config: StoreConfig,
    ) -> Result<LogStore, StoreError> {
        let opened = LogFiles::open(dir, storage, config)?;
        Ok(LogStore {
            dir: dir.to_path_buf(),
            index: opened.files.index(),
            files: Arc::new(Mutex::new(opened.files)),
            vote: opened.vote,
            committed: opened.committed,
            submitted: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The highest log index handed to this store to append (see the field), shared.
    pub fn submitted(&self) -> Arc<AtomicU64> {
        self.submitted.clone()
    }

    /// Runs `f` on the files, on the blocking pool.
    async fn with_files<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut LogFiles) -> Result<T, StoreError> + Send + 'static,
    {
        let files = self.files.clone();
        blocking(&self.dir, move || {
            let mut files = files.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut files)
        })
        .await
    }

    fn reader(&self) -> LogReader {
        LogReader {
            dir: self.dir.clone(),
            index: self.index.clone(),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        let index = self.index.clone();
        blocking(&self.dir, move || files::read_entries(&index, bounds))
            .await
            .map_err(|e| read_logs_error(&e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.reader().try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let index = files::read_lock(&self.index);
        Ok(LogState {
            last_purged_log_id: index.last_purged(),
            last_log_id: index.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let v = *vote;
        self.with_files(move |f| f.save_vote(&v))
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        self.vote = Some(v);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.with_files(move |f| f.save_committed(committed))
            .await
            .map_err(|e| write_logs_error(&e))?;
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.committed)
    }

    /// Writes and fdatasyncs the entries, then fires `callback` (openraft's durability promise).
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let Some(last) = entries.last() {
            self.submitted
                .fetch_max(last.log_id.index, std::sync::atomic::Ordering::AcqRel);
        }
        match self.with_files(move |f| f.append(&entries)).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_logs_error(&e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.with_files(move |f| f.truncate(log_id.index))
            .await
            .map_err(|e| write_logs_error(&e))?;
        self.submitted.fetch_min(
            log_id.index.saturating_sub(1),
            std::sync::atomic::Ordering::AcqRel,
        );
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.with_files(move |f| f.purge(log_id))
            .await
            .map_err(|e| write_logs_error(&e))
    }
}
