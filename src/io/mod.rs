//! io: the one door between the log and the disk (docs/CONVENTIONS.md rule 7). A small storage
//! trait ([`Storage`] opens files, [`StorageFile`] does positional I/O) with a plain-file backend
//! ([`StdStorage`]: `pwrite` + `fdatasync`), and the [`DiskWriter`]: one thread per data directory
//! that performs every log write and fsync, group-committing whatever is queued.
//!
//! A third trait, [`GroupIo`], is how the writer thread performs one group's writes and syncs: the
//! std backend issues them one syscall at a time; the io_uring backend ([`UringStorage`], 64-bit
//! Linux only) writes the same way but submits the fdatasyncs of a group that syncs several files
//! at once, so they run in parallel. Which backend runs is chosen at start ([`Backend`]: auto
//! probes io_uring and falls back to std).
//! A crash-simulating backend (one that loses unsynced writes) slots in behind the same traits,
//! so they stay small on purpose. Every backend must pass the suite in `conformance.rs`.
//! [`PowerCutStorage`] is the test-only storage of a real node in power-cut mode
//! ([`POWER_CUT_ENV`]): plain files whose unsynced changes SIGUSR2 cuts away (`power_cut.rs`,
//! docs/ARCHITECTURE.md "Power-cut mode").
//!
//! Media assumptions: SD cards are slow at small random writes and wear with every fsync, so the
//! writer issues one fdatasync per file per group however many appends the group holds, and the
//! log only ever appends.

mod backend;
#[cfg(test)]
pub(crate) mod conformance;
mod power_cut;
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod uring;
mod writer;
// The crash-simulating backend, for the log's power-cut tests.
#[cfg(test)]
pub(crate) mod crash;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

pub use backend::{Backend, BackendError, PROBE_FAIL_ENV, URING_BUILT, uring_failure_reason};
pub use power_cut::{CutSummary, KEEP_PREFIX, PowerCutStorage, is_keep_name};
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
pub use uring::UringStorage;
pub use writer::{Completion, DiskWriter, Job, Permit, WriterConfig, WriterError, fsyncs};

/// Set to `1` in the environment of `bramble serve` to run the node in power-cut mode (tests
/// only): its storage is a [`PowerCutStorage`] and SIGUSR2 cuts the power (see `power_cut.rs`).
pub const POWER_CUT_ENV: &str = "BRAMBLE_TEST_POWER_CUT";

/// The exit status of a node that cut its own power on SIGUSR2.
pub const POWER_CUT_EXIT_CODE: i32 = 86;

/// The exit status of a power cut that could not restore everything (each failure logged): the
/// files may hold more than a real power cut would have left, so a trial must not count it.
pub const POWER_CUT_FAILED_EXIT_CODE: i32 = 87;

/// Whether [`POWER_CUT_ENV`] asks for power-cut mode (it is exactly `1`).
pub fn power_cut_requested() -> bool {
    std::env::var(POWER_CUT_ENV).is_ok_and(|v| v.trim() == "1")
}

/// A file opened through a [`Storage`]; shared between the writer thread (writes, syncs) and
/// readers (positional reads), so every method takes `&self`.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Path the file was opened at (for error messages).
    fn path(&self) -> &Path;
    /// Writes all of `buf` at byte `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()>;
    /// Fills all of `buf` from byte `offset`; `UnexpectedEof` past the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// Makes written data durable (fdatasync).
    fn sync_data(&self) -> std::io::Result<()>;
    fn set_len(&self, len: u64) -> std::io::Result<()>;
    fn len(&self) -> std::io::Result<u64>;
    fn is_empty(&self) -> std::io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// The open descriptor when this is a real kernel file, so a [`GroupIo`] can submit writes
    /// and syncs for it directly (io_uring). Files that simulate the disk keep the default `None`
    /// and are always written through the methods above.
    fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// Shared handle to an open file.
pub type FileRef = Arc<dyn StorageFile>;

/// Opens and removes files. Directory listing and metadata reads go straight to `std::fs`: they
/// change nothing on disk, so a crash-simulating backend has nothing to model there.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Opens `path` for reading and writing, creating it (and nothing else) when `create` is set.
    fn open(&self, path: &Path, create: bool) -> std::io::Result<FileRef>;
    fn remove_file(&self, path: &Path) -> std::io::Result<()>;
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> std::io::Result<()>;
    /// Makes the directory entries of `dir` durable (new or removed files survive a power cut).
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()>;
    /// Atomically replaces `to` with `from` (POSIX rename; durable once the directory is synced).
    /// Open handles of the old `to` keep reading its old bytes. A crash-simulating backend must
    /// override this to model the rename as a directory change.
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)
    }
    /// Name shown in the startup log, DescribeConfigs and [`DiskWriter::backend`].
    fn backend(&self) -> &'static str {
        "std"
    }
    /// Builds what performs the writer's groups. Called once, on the writer thread (an io_uring
    /// ring belongs to the thread that made it), with the data directory a probe may write in;
    /// an error stops the writer from starting.
    fn group_io(&self, _data_dir: &Path) -> std::io::Result<Box<dyn GroupIo>> {
        Ok(Box::new(StdGroupIo::default()))
    }
}

/// One write of a group: `parts` land back to back from byte `offset` of `file`.
#[derive(Debug)]
pub struct GroupWrite<'a> {
    pub file: &'a FileRef,
    pub offset: u64,
    pub parts: Vec<Bytes>,
}

impl GroupWrite<'_> {
    pub fn bytes(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }
}

/// How the disk writer thread performs a group's I/O. Each call gets at most one write per file,
/// so a backend may run them concurrently; it returns one result per item, in the same order.
/// Lives on the writer thread only, hence no `Send`.
pub trait GroupIo {
    fn write(&mut self, writes: &[GroupWrite<'_>]) -> Vec<std::io::Result<()>>;
    /// fdatasync of each (distinct) file.
    fn sync(&mut self, files: &[FileRef]) -> Vec<std::io::Result<()>>;
}

/// One syscall per write and one `fdatasync` per file. A run of several parts (a produce
/// request's batches, or several requests' appends to one segment) goes to a kernel file as one
/// `pwritev` of the parts where they lie, with no gathering copy; files without a descriptor (the
/// crash-simulating backend) get the parts gathered in a reused buffer and one `write_at`.
#[derive(Debug, Default)]
pub struct StdGroupIo {
    scratch: Vec<u8>,
}

/// The gather buffer is kept between groups up to this size; a bigger one is freed after use.
const SCRATCH_BYTES_KEPT_MAX: usize = 4 << 20;

/// Most iovecs one `pwritev`/`writev` takes (Linux's IOV_MAX); a run with more parts is gathered.
pub(crate) const IOVECS_MAX: usize = 1024;

impl GroupIo for StdGroupIo {
    fn write(&mut self, writes: &[GroupWrite<'_>]) -> Vec<std::io::Result<()>> {
        let results = writes
            .iter()
            .map(|w| match (w.parts.as_slice(), w.file.as_fd()) {
                ([one], _) => w.file.write_at(one, w.offset),
                (parts, Some(fd)) if parts.len() <= IOVECS_MAX => write_parts(w, fd),
                (parts, _) => {
                    self.scratch.clear();
                    parts.iter().for_each(|p| self.scratch.extend_from_slice(p));
                    w.file.write_at(&self.scratch, w.offset)
                }
            })
            .collect();
        if self.scratch.capacity() > SCRATCH_BYTES_KEPT_MAX {
            self.scratch = Vec::new();
        }
        results
    }

    fn sync(&mut self, files: &[FileRef]) -> Vec<std::io::Result<()>> {
        files.iter().map(|f| f.sync_data()).collect()
    }
}

pub(crate) fn iovec(buf: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    }
}

/// One `pwritev` of a run's parts (at most [`IOVECS_MAX`]) to `fd`, the file of `w`.
fn write_parts(w: &GroupWrite<'_>, fd: BorrowedFd<'_>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let iovecs: Vec<libc::iovec> = w.parts.iter().map(|p| iovec(p)).collect();
    let offset = libc::off64_t::try_from(w.offset)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let written = loop {
        // SAFETY: each iovec points into a `Bytes` of `w.parts`, alive and unchanged for the
        // whole call; `iovecs.len()` is at most IOVECS_MAX, so it fits a c_int.
        let n = unsafe {
            libc::pwritev64(
                fd.as_raw_fd(),
                iovecs.as_ptr(),
                iovecs.len() as libc::c_int,
                offset,
            )
        };
        if let Ok(n) = usize::try_from(n) {
            break n;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    if written < w.bytes() {
        return finish_short_write(w, written);
    }
    Ok(())
}

/// Writes what a short `pwritev`/`writev` left (a signal, or the disk filling mid-write) with
/// plain positional writes, so a run is either all written or an error.
pub(crate) fn finish_short_write(w: &GroupWrite<'_>, written: usize) -> std::io::Result<()> {
    let mut skip = written;
    let mut offset = w.offset + written as u64;
    for part in &w.parts {
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        let rest = &part[skip..];
        w.file.write_at(rest, offset)?;
        offset += rest.len() as u64;
        skip = 0;
    }
    Ok(())
}

/// Plain files: `pread`/`pwrite` through `FileExt`, `fdatasync` through `File::sync_data`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdStorage;

#[derive(Debug)]
struct StdFile {
    path: PathBuf,
    file: File,
}

impl StorageFile for StdFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }

    fn len(&self) -> std::io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.file.as_fd())
    }
}

/// Opens a plain file (shared by the std and io_uring backends: both read and set lengths the
/// same way; they differ only in how the writer thread writes and syncs).
fn open_std(path: &Path, create: bool) -> std::io::Result<FileRef> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .open(path)?;
    Ok(Arc::new(StdFile {
        path: path.to_path_buf(),
        file,
    }))
}

/// Most directory levels [`create_dir_durable`] creates and syncs (a bound on a runaway path).
const DIR_LEVELS_MAX: usize = 64;

/// Creates `dir` and its missing ancestors through `storage`, then syncs the parent of each one
/// it created, outermost first (each synced entry's own parent entry is durable by then): on a
/// filesystem that does not order metadata, a new directory's entry is not durable until its
/// parent is synced, and the files later made durable inside would vanish with it. An existing
/// `dir` syncs nothing (SD cards wear with every sync).
pub fn create_dir_durable(storage: &dyn Storage, dir: &Path) -> std::io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take(DIR_LEVELS_MAX)
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    storage.create_dir_all(dir)?;
    for new in missing.iter().rev() {
        let parent = match new.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        storage.sync_dir(parent).map_err(|e| {
            std::io::Error::new(e.kind(), format!("syncing {}: {e}", parent.display()))
        })?;
    }
    Ok(())
}

impl Storage for StdStorage {
    fn open(&self, path: &Path, create: bool) -> std::io::Result<FileRef> {
        open_std(path, create)
    }

    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)
    }

    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn remove_dir_all(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_dir_all(path)
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_backend_round_trip() {
        // Proves positional writes land where asked, reads past the end fail, and set_len/len agree.
        let dir = tempfile::tempdir().expect("tempdir");
        let s = StdStorage;
        let f = s.open(&dir.path().join("a"), true).expect("create");
        f.write_at(b"world", 6).expect("write");
        f.write_at(b"hello ", 0).expect("write");
        f.sync_data().expect("sync");
        let mut buf = [0u8; 11];
        f.read_at(&mut buf, 0).expect("read");
        assert_eq!(&buf, b"hello world");
        assert_eq!(f.len().expect("len"), 11);
        assert!(
            f.read_at(&mut [0u8; 2], 10).is_err(),
            "read past end must fail"
        );
        f.set_len(5).expect("truncate");
        assert_eq!(f.len().expect("len"), 5);
        assert!(s.open(&dir.path().join("missing"), false).is_err());
        s.sync_dir(dir.path()).expect("dir sync");
        s.remove_file(&dir.path().join("a")).expect("remove");
    }
}
