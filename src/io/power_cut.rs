//! io::power_cut: the test-only storage of a real node in power-cut mode
//! ([`POWER_CUT_ENV`](super::POWER_CUT_ENV) `=1` in the environment of `bramble serve`). It wraps
//! [`StdStorage`] (plain files, no io_uring: its files have no descriptor for a [`GroupIo`], so
//! every write goes through [`StorageFile::write_at`]) and remembers what a power cut would lose,
//! modelled as `io::crash::CutMode::DropUnsynced` but on real files:
//!
//! - per file (an inode): the length at its last `sync_data` and the original bytes below it
//!   that writes or `set_len` changed since (each byte saved once, at its first change);
//! - per directory entry: creations, removals and renames not yet made durable by `sync_dir` of
//!   their parent (a rename by a sync of either directory), in call order. A removed file, a
//!   removed directory and a file a rename replaced stay reachable under a hidden name in the
//!   same directory ([`KEEP_PREFIX`]`<n>`, which no listing of the log, the broker or the
//!   metadata store takes for one of its files) until the sync makes the change durable.
//!
//! [`PowerCutStorage::cut`] takes the one mutex every mutating call holds while it runs, and keeps
//! it (nothing writes after it), cuts every file back to its synced length and bytes, undoes the
//! pending directory changes newest first, fsyncs what it restored, and returns a summary. The
//! node then exits at once (`main.rs`, on SIGUSR2) and a restart on the same data directory is
//! the power coming back. A cut that could not restore something (each failure logged) exits
//! with [`POWER_CUT_FAILED_EXIT_CODE`](super::POWER_CUT_FAILED_EXIT_CODE) instead, so a trial does
//! not count a cut that may have kept more than a power cut would.
//!
//! What a file holds when first opened counts as durable. That is sound after any earlier end of
//! the process, a kill -9 too: `Broker::open` syncs the whole filesystem (`syncfs`) before any
//! file is opened, so what a killed process left in the page cache is on disk by then. Leftover
//! keep links of a killed run are removed at start, before that sync and outside the tracked
//! storage: a cut does not bring them back (a real power loss might, harmlessly: the node reads
//! no such name, and the next start removes them again).
//!
//! Audit of what a node writes (issue 12). Through `io::Storage`, so tracked: log segments,
//! `.index`/`.timeindex`, `high-watermark`, `leader-epoch-checkpoint`, `log-start-offset`,
//! producer snapshots, compaction's `.cleaned`/`.swap` files, group state (records of
//! `__consumer_offsets`), and the metadata store under `meta/raft` (log, vote, snapshots).
//! With `std::fs`, each fsynced with its directory before the call returns (and a directory it
//! creates with its parent: `broker::dirs::create_dir_durable`), so not tracked:
//! `meta/topics/*.toml`, `node.toml`, `partition.metadata`, the dynamic configs, the
//! producer-id block, the moves of `meta/topics` and `meta/raft` aside. With `std::fs` and no
//! directory sync, not tracked: the renames and removals of partition directories when a topic is
//! deleted (start-up finishes or retries them) and the removal of the `.write-probe` file.
//!
//! Limits (docs/ARCHITECTURE.md, "Power-cut mode"): this is not a real power cut. The kernel's
//! own ordering of metadata is not modelled (a cut drops every unsynced change, never a prefix);
//! what a file held when first opened counts as durable; files written with `std::fs` that are
//! fsynced, with their directory, before the call returns (topic `.toml`, `node.toml`,
//! `partition.metadata`, dynamic configs, the producer-id block) are not tracked, nor are the
//! broker's `std::fs` renames and removals of whole partition directories (topic deletion, which
//! start-up finishes however far it got). Threads of the process stop at the mutex, so a cut is
//! one instant per node; three nodes cut by three signals are three instants a few ms apart.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{FileRef, StdStorage, Storage, StorageFile};

/// Names of the hidden links that keep removed or replaced entries until their removal is
/// durable: `<dir>/.power-cut-keep.<n>`. A leading dot and no `-<digits>` ending, so neither a
/// partition directory nor a segment, snapshot or metadata-store file.
pub const KEEP_PREFIX: &str = ".power-cut-keep.";

/// Whether `name` is one of this mode's hidden keep links.
pub fn is_keep_name(name: &str) -> bool {
    name.starts_with(KEEP_PREFIX)
}

/// Identifies an inode: (device, inode number).
type InodeKey = (u64, u64);

/// What a cut must restore in one file (its `Debug` counts the saved bytes, never prints them:
/// the disk writer's `Debug` reaches this far).
struct Inode {
    /// Our own descriptor, so the cut can restore the bytes whatever the file is named by then.
    file: File,
    path: PathBuf,
    synced_len: u64,
    /// Original bytes below `synced_len` changed since the last sync: start → bytes, disjoint.
    saved: BTreeMap<u64, Vec<u8>>,
    /// Open handles through this storage.
    handles: usize,
}

impl fmt::Debug for Inode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inode")
            .field("path", &self.path)
            .field("synced_len", &self.synced_len)
            .field("saved_ranges", &self.saved.len())
            .field(
                "saved_bytes",
                &self.saved.values().map(Vec::len).sum::<usize>(),
            )
            .field("handles", &self.handles)
            .finish()
    }
}

impl Inode {
    /// Saves the original bytes of `[from, to)` ∩ `[0, synced_len)` not saved yet. Unsaved bytes
    /// below `synced_len` are still in the file: every change to them saves them first.
    fn save(&mut self, from: u64, to: u64) -> std::io::Result<()> {
        let to = to.min(self.synced_len);
        let mut at = from;
        while at < to {
            // The saved range that covers `at`, or the start of the next one.
            let covering = self
                .saved
                .range(..=at)
                .next_back()
                .map(|(s, b)| s + b.len() as u64);
            if let Some(end) = covering.filter(|end| *end > at) {
                at = end;
                continue;
            }
            let next = self
                .saved
                .range(at..)
                .next()
                .map_or(to, |(s, _)| (*s).min(to));
            let mut bytes = vec![0u8; (next - at) as usize];
            self.file.read_exact_at(&mut bytes, at)?;
            self.saved.insert(at, bytes);
            at = next;
        }
        Ok(())
    }

    /// Whether a cut would change nothing in this file.
    fn is_clean(&self) -> bool {
        self.saved.is_empty()
            && self
                .file
                .metadata()
                .is_ok_and(|m| m.len() == self.synced_len)
    }
}

/// A directory entry change not yet made durable.
#[derive(Debug)]
enum DirChange {
    Created(PathBuf),
    /// `path` was removed; `keep` names its inode (file or directory tree) until it is durable.
    Removed {
        path: PathBuf,
        keep: PathBuf,
    },
    /// `from` was renamed to `to`; `replaced` keeps what `to` named before, if anything.
    Renamed {
        from: PathBuf,
        to: PathBuf,
        replaced: Option<PathBuf>,
    },
}

impl DirChange {
    /// Whether a sync of `dir` makes this change durable.
    fn synced_by(&self, dir: &Path) -> bool {
        match self {
            DirChange::Created(p) | DirChange::Removed { path: p, .. } => p.parent() == Some(dir),
            DirChange::Renamed { from, to, .. } => {
                from.parent() == Some(dir) || to.parent() == Some(dir)
            }
        }
    }

    /// The change is durable: the kept entry goes for good.
    fn commit(&self) -> std::io::Result<()> {
        match self {
            DirChange::Removed { keep, .. }
            | DirChange::Renamed {
                replaced: Some(keep),
                ..
            } => remove_any(keep),
            _ => Ok(()),
        }
    }

    /// Puts the entries back as they were before the change. Returns the directories touched.
    fn undo(&self) -> std::io::Result<Vec<PathBuf>> {
        let parent = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
        match self {
            DirChange::Created(p) => {
                remove_any(p)?;
                Ok(vec![parent(p)])
            }
            DirChange::Removed { path, keep } => {
                std::fs::rename(keep, path)?;
                Ok(vec![parent(path)])
            }
            DirChange::Renamed { from, to, replaced } => {
                std::fs::rename(to, from)?;
                if let Some(keep) = replaced {
                    std::fs::rename(keep, to)?;
                }
                Ok(vec![parent(from), parent(to)])
            }
        }
    }
}

/// Removes a file or a whole directory tree.
fn remove_any(path: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path)?.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

#[derive(Debug, Default)]
struct State {
    inodes: HashMap<InodeKey, Inode>,
    journal: Vec<DirChange>,
    /// Numbers the keep links.
    keeps: u64,
}

impl State {
    /// A fresh keep name in the directory of `path`.
    fn keep_for(&mut self, path: &Path) -> PathBuf {
        self.keeps += 1;
        let dir = path.parent().unwrap_or(Path::new("."));
        loop {
            let keep = dir.join(format!("{KEEP_PREFIX}{}", self.keeps));
            if std::fs::symlink_metadata(&keep).is_err() {
                return keep;
            }
            self.keeps += 1;
        }
    }

    fn inode(&mut self, key: InodeKey) -> std::io::Result<&mut Inode> {
        self.inodes
            .get_mut(&key)
            .ok_or_else(|| std::io::Error::other("power-cut storage: untracked file"))
    }
}

/// What [`PowerCutStorage::cut`] undid.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CutSummary {
    /// Files whose bytes or length changed back.
    pub files: usize,
    /// Bytes past the synced lengths that were cut away.
    pub bytes_dropped: u64,
    /// Bytes below the synced lengths written back to what they were at the last sync.
    pub bytes_restored: u64,
    /// Unsynced creations, removals and renames undone.
    pub dir_changes: usize,
    /// Directory changes not undone because their entry was gone: a `std::fs` rename or removal
    /// outside this storage (topic deletion) moved it since.
    pub skipped: usize,
    /// Restorations that failed otherwise (each logged).
    pub errors: usize,
}

impl fmt::Display for CutSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} files cut back to their last sync ({} unsynced bytes dropped, {} overwritten \
             bytes restored), {} unsynced directory changes undone ({} skipped), {} errors",
            self.files,
            self.bytes_dropped,
            self.bytes_restored,
            self.dir_changes,
            self.skipped,
            self.errors
        )
    }
}

/// The state and its one mutex, shared by the storage and its files.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Set by the cut, whose thread keeps the mutex: closing a file then skips the bookkeeping
    /// (which would wait for the mutex for ever).
    off: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The power-cut storage. Clones share one state and one mutex: a node makes one and hands it to
/// the disk writer and the metadata store alike.
#[derive(Debug, Clone, Default)]
pub struct PowerCutStorage {
    shared: Arc<Shared>,
}

impl PowerCutStorage {
    pub fn new() -> PowerCutStorage {
        PowerCutStorage::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Removes keep links a node killed another way (not by [`PowerCutStorage::cut`]) left
    /// anywhere under `root`. Call at start, before anything lists the data directory.
    pub fn remove_leftovers(root: &Path) -> std::io::Result<usize> {
        let mut removed = 0;
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let path = entry.path();
                if entry.file_name().to_str().is_some_and(is_keep_name) {
                    remove_any(&path)?;
                    removed += 1;
                } else if entry.file_type()?.is_dir() {
                    dirs.push(path);
                }
            }
        }
        Ok(removed)
    }

    /// Cuts the power: every file back to its last synced state, every unsynced directory change
    /// undone (newest first), all of it fsynced. Holds the mutex for good: every later mutating
    /// call of this storage blocks, so call this only on the way out of the process.
    pub fn cut(&self) -> CutSummary {
        let mut state = self.lock();
        self.shared.off.store(true, Ordering::SeqCst);
        let summary = cut_locked(&mut state);
        std::mem::forget(state);
        summary
    }
}

/// The cut itself (see [`PowerCutStorage::cut`]); leaves an empty state.
fn cut_locked(state: &mut State) -> CutSummary {
    let mut summary = CutSummary::default();
    for inode in state.inodes.values() {
        match restore(inode) {
            Ok((0, 0)) => {}
            Ok((dropped, restored)) => {
                summary.files += 1;
                summary.bytes_dropped += dropped;
                summary.bytes_restored += restored;
            }
            Err(e) => {
                summary.errors += 1;
                tracing::warn!(file = %inode.path.display(), error = %e, "power cut: could not restore file");
            }
        }
    }
    let mut touched = std::collections::BTreeSet::new();
    for change in state.journal.iter().rev() {
        match change.undo() {
            Ok(dirs) => {
                tracing::debug!(change = ?change, "power cut: directory change undone");
                summary.dir_changes += 1;
                touched.extend(dirs);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                summary.skipped += 1;
                tracing::info!(change = ?change, "power cut: entry gone (moved outside the storage); not undone");
            }
            Err(e) => {
                summary.errors += 1;
                tracing::warn!(change = ?change, error = %e, "power cut: could not undo directory change");
            }
        }
    }
    for dir in touched.iter().filter(|d| d.exists()) {
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            summary.errors += 1;
            tracing::warn!(dir = %dir.display(), error = %e, "power cut: could not sync directory");
        }
    }
    state.inodes.clear();
    state.journal.clear();
    summary
}

/// Cuts one file back to its synced length and bytes and syncs it. Returns (bytes dropped past
/// the synced length, bytes restored below it).
fn restore(inode: &Inode) -> std::io::Result<(u64, u64)> {
    let len = inode.file.metadata()?.len();
    if len == inode.synced_len && inode.saved.is_empty() {
        return Ok((0, 0));
    }
    inode.file.set_len(inode.synced_len)?;
    let mut restored = 0;
    for (at, bytes) in &inode.saved {
        inode.file.write_all_at(bytes, *at)?;
        restored += bytes.len() as u64;
    }
    inode.file.sync_all()?;
    Ok((len.saturating_sub(inode.synced_len), restored))
}

/// A file of [`PowerCutStorage`]: the plain file, plus the shared record of what is durable.
#[derive(Debug)]
struct PowerCutFile {
    inner: FileRef,
    key: InodeKey,
    shared: Arc<Shared>,
}

impl PowerCutFile {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }
}

impl StorageFile for PowerCutFile {
    fn path(&self) -> &Path {
        self.inner.path()
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let mut state = self.lock();
        state
            .inode(self.key)?
            .save(offset, offset.saturating_add(buf.len() as u64))?;
        self.inner.write_at(buf, offset)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, offset)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        let mut state = self.lock();
        self.inner.sync_data()?;
        let len = self.inner.len()?;
        let inode = state.inode(self.key)?;
        inode.synced_len = len;
        inode.saved.clear();
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut state = self.lock();
        state.inode(self.key)?.save(len, u64::MAX)?;
        self.inner.set_len(len)
    }

    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }

    /// None: the writer must go through `write_at`, which records what it overwrites.
    fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

impl Drop for PowerCutFile {
    /// Forgets a file no handle uses once a cut would change nothing in it (its descriptor
    /// closes); a file with unsynced changes stays tracked until the cut.
    fn drop(&mut self) {
        if self.shared.off.load(Ordering::SeqCst) {
            return;
        }
        let mut state = self.lock();
        if let Some(inode) = state.inodes.get_mut(&self.key) {
            inode.handles = inode.handles.saturating_sub(1);
            if inode.handles == 0 && inode.is_clean() {
                state.inodes.remove(&self.key);
            }
        }
    }
}

impl Storage for PowerCutStorage {
    fn open(&self, path: &Path, create: bool) -> std::io::Result<FileRef> {
        let mut state = self.lock();
        let existed = std::fs::symlink_metadata(path).is_ok();
        let inner = StdStorage.open(path, create)?;
        let fd = inner
            .as_fd()
            .ok_or_else(|| std::io::Error::other("power-cut storage: std file without fd"))?;
        let own = File::from(fd.try_clone_to_owned()?);
        let meta = own.metadata()?;
        let key = (meta.dev(), meta.ino());
        if !existed {
            state.journal.push(DirChange::Created(path.to_path_buf()));
        }
        let inode = state.inodes.entry(key).or_insert_with(|| Inode {
            file: own,
            path: path.to_path_buf(),
            // A file found on disk counts as durable; a new one has nothing synced yet.
            synced_len: if existed { meta.len() } else { 0 },
            saved: BTreeMap::new(),
            handles: 0,
        });
        inode.handles += 1;
        Ok(Arc::new(PowerCutFile {
            inner,
            key,
            shared: self.shared.clone(),
        }))
    }

    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        let mut state = self.lock();
        let keep = state.keep_for(path);
        std::fs::hard_link(path, &keep)?;
        if let Err(e) = std::fs::remove_file(path) {
            let _ = std::fs::remove_file(&keep);
            return Err(e);
        }
        state.journal.push(DirChange::Removed {
            path: path.to_path_buf(),
            keep,
        });
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        let mut state = self.lock();
        let mut missing: Vec<&Path> = path.ancestors().take_while(|a| !a.exists()).collect();
        missing.reverse();
        for dir in missing {
            match std::fs::create_dir(dir) {
                Ok(()) => state.journal.push(DirChange::Created(dir.to_path_buf())),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> std::io::Result<()> {
        let mut state = self.lock();
        if !std::fs::symlink_metadata(path)?.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is not a directory", path.display()),
            ));
        }
        // Moved aside whole, so the cut can move it back; removed once the removal is durable.
        let keep = state.keep_for(path);
        std::fs::rename(path, &keep)?;
        state.journal.push(DirChange::Removed {
            path: path.to_path_buf(),
            keep,
        });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        let mut state = self.lock();
        StdStorage.sync_dir(dir)?;
        let (synced, rest): (Vec<DirChange>, Vec<DirChange>) = std::mem::take(&mut state.journal)
            .into_iter()
            .partition(|c| c.synced_by(dir));
        state.journal = rest;
        for change in &synced {
            if let Err(e) = change.commit() {
                tracing::warn!(change = ?change, error = %e, "power-cut storage: could not remove a kept entry");
            }
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        let mut state = self.lock();
        if from == to {
            return Ok(());
        }
        std::fs::symlink_metadata(from)?;
        let replaced = match std::fs::symlink_metadata(to) {
            Ok(m) if !m.is_dir() => {
                let keep = state.keep_for(to);
                std::fs::hard_link(to, &keep)?;
                Some(keep)
            }
            _ => None,
        };
        if let Err(e) = std::fs::rename(from, to) {
            if let Some(keep) = &replaced {
                let _ = std::fs::remove_file(keep);
            }
            return Err(e);
        }
        state.journal.push(DirChange::Renamed {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            replaced,
        });
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "std"
    }
}

#[cfg(test)]
mod tests;
