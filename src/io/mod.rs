//! io: the one door between the log and the disk (STYLE.md rule 7). A small storage trait
//! ([`Storage`] opens files, [`StorageFile`] does positional I/O) with a plain-file backend
//! ([`StdStorage`]: `pwrite` + `fdatasync`), and the [`DiskWriter`]: one thread per data directory
//! that performs every log write and fsync, group-committing whatever is queued.
//!
//! An io_uring backend and a crash-simulating backend (one that loses unsynced writes) are meant
//! to slot in behind the same two traits, so they stay small on purpose.
//!
//! Media assumptions: SD cards are slow at small random writes and wear with every fsync, so the
//! writer issues one fdatasync per file per group however many appends the group holds, and the
//! log only ever appends.

mod writer;
// The crash-simulating backend, for the log's power-cut tests.
#[cfg(test)]
pub(crate) mod crash;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use writer::{Completion, DiskWriter, Job, Permit, WriterConfig, WriterError};

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
}

impl Storage for StdStorage {
    fn open(&self, path: &Path, create: bool) -> std::io::Result<FileRef> {
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
