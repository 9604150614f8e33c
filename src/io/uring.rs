//! io::uring: the io_uring backend (64-bit Linux only; tokio-uring does not support 32-bit).
//! Files are plain files opened as in the std backend, and everything off the writer thread
//! (fetch reads, recovery's truncations, directory syncs) stays std: `pread` from the page cache
//! is already cheap, and a ring belongs to one thread. The writer thread owns a tokio-uring
//! runtime; each wave of writes (at most one per file) is pushed to the submission queue and
//! submitted with one `io_uring_enter`, then all the group's fdatasyncs likewise, and only then
//! are the waiters completed by the writer.
//!
//! A ring write needs a descriptor the ring owns, so each written file's descriptor is
//! duplicated once and kept while the file is written to; idle or closed files' duplicates are
//! closed by a periodic prune. Moving to the `io-uring` crate later touches only this file.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Weak;

use bytes::Bytes;
use futures_util::future::join_all;
use tokio_uring::fs::File as RingFile;

use super::{FileRef, GroupIo, GroupWrite, StdStorage, Storage, StorageFile};

/// Submission queue entries; a bigger wave is submitted in several pushes (tokio-uring submits
/// when the queue fills), so this bounds memory, not group size.
const RING_ENTRIES: u32 = 256;
/// The probe writes and fsyncs this file in the data directory, then removes it.
const PROBE_FILE: &str = ".io-uring-probe";
const PROBE_BYTES: &[u8] = b"bramble io_uring probe\n";
/// Gather buffers (for runs of several appends) kept for reuse, and the largest one kept.
const POOL_BUFFERS_MAX: usize = 8;
const POOL_BUFFER_BYTES_MAX: usize = 4 << 20;
/// Every this many ring calls, duplicates of closed files or of files idle for
/// `CACHE_IDLE_CALLS_MAX` calls are closed (bounds the extra descriptors).
const CACHE_PRUNE_EVERY_CALLS: u64 = 256;
const CACHE_IDLE_CALLS_MAX: u64 = 1024;

/// Plain files written through io_uring by the disk writer.
#[derive(Debug, Default, Clone)]
pub struct UringStorage {
    /// Test hook: fail the probe with this errno instead of reading the environment.
    #[cfg(test)]
    pub(crate) probe_fail: Option<i32>,
}

impl UringStorage {
    fn forced_failure(&self) -> Option<std::io::Error> {
        #[cfg(test)]
        if let Some(errno) = self.probe_fail {
            return Some(std::io::Error::from_raw_os_error(errno));
        }
        super::backend::forced_probe_failure()
    }
}

impl Storage for UringStorage {
    fn open(&self, path: &Path, create: bool) -> std::io::Result<FileRef> {
        super::open_std(path, create)
    }

    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        StdStorage.remove_file(path)
    }

    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        StdStorage.create_dir_all(path)
    }

    fn remove_dir_all(&self, path: &Path) -> std::io::Result<()> {
        StdStorage.remove_dir_all(path)
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        StdStorage.sync_dir(dir)
    }

    fn backend(&self) -> &'static str {
        "uring"
    }

    /// The probe: sets up a ring, runs a no-op, and writes + fsyncs a file in `data_dir` (an
    /// empty path skips the file step). Any failure is returned with the kernel's errno.
    fn group_io(&self, data_dir: &Path) -> std::io::Result<Box<dyn GroupIo>> {
        if let Some(e) = self.forced_failure() {
            return Err(e);
        }
        let mut builder = tokio_uring::builder();
        builder.entries(RING_ENTRIES);
        let rt = tokio_uring::Runtime::new(&builder)?;
        rt.block_on(tokio_uring::no_op())?;
        if !data_dir.as_os_str().is_empty() {
            probe_file(&rt, data_dir)?;
        }
        Ok(Box::new(UringIo {
            rt,
            files: HashMap::new(),
            calls: 0,
            pool: Vec::new(),
        }))
    }
}

fn probe_file(rt: &tokio_uring::Runtime, data_dir: &Path) -> std::io::Result<()> {
    // The data directory may not exist yet on a first start; the broker would create it anyway.
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join(PROBE_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let file = RingFile::from_std(file);
    let outcome = rt.block_on(async move {
        let (written, _) = file.write_all_at(PROBE_BYTES, 0).await;
        written?;
        file.sync_data().await?;
        file.close().await
    });
    let removed = std::fs::remove_file(&path);
    outcome.and(removed)
}

struct Cached {
    /// Keeps the allocation (hence the map key, its address) from being reused while listed.
    owner: Weak<dyn StorageFile>,
    file: RingFile,
    used_call: u64,
}

/// The writer thread's ring and the duplicated descriptors of the files it writes.
struct UringIo {
    rt: tokio_uring::Runtime,
    files: HashMap<usize, Cached>,
    calls: u64,
    pool: Vec<Vec<u8>>,
}

/// What one ring write sends: a shared buffer as is, or a gather buffer returned to the pool.
enum Buf {
    Shared(Bytes),
    Owned(Vec<u8>),
}

fn key(file: &FileRef) -> usize {
    std::sync::Arc::as_ptr(file).cast::<()>() as usize
}

impl UringIo {
    /// Makes sure `file` has a ring descriptor; Ok(None) for files without a kernel descriptor
    /// (they are written through their own methods).
    fn prepare(&mut self, file: &FileRef) -> std::io::Result<Option<usize>> {
        let Some(fd) = file.as_fd() else {
            return Ok(None);
        };
        let k = key(file);
        let calls = self.calls;
        if let Some(cached) = self.files.get_mut(&k) {
            cached.used_call = calls;
            return Ok(Some(k));
        }
        let dup = std::fs::File::from(fd.try_clone_to_owned()?);
        self.files.insert(
            k,
            Cached {
                owner: std::sync::Arc::downgrade(file),
                file: RingFile::from_std(dup),
                used_call: calls,
            },
        );
        Ok(Some(k))
    }

    fn gather(&mut self, w: &GroupWrite<'_>) -> Buf {
        if let [one] = w.parts.as_slice() {
            return Buf::Shared(one.clone());
        }
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        w.parts.iter().for_each(|p| buf.extend_from_slice(p));
        Buf::Owned(buf)
    }

    fn recycle(&mut self, buf: Buf) {
        if let Buf::Owned(v) = buf
            && self.pool.len() < POOL_BUFFERS_MAX
            && v.capacity() <= POOL_BUFFER_BYTES_MAX
        {
            self.pool.push(v);
        }
    }

    fn tick(&mut self) {
        self.calls += 1;
        if self.calls.is_multiple_of(CACHE_PRUNE_EVERY_CALLS) {
            let calls = self.calls;
            self.files.retain(|_, c| {
                c.owner.strong_count() > 0 && calls - c.used_call <= CACHE_IDLE_CALLS_MAX
            });
        }
    }
}

impl GroupIo for UringIo {
    fn write(&mut self, writes: &[GroupWrite<'_>]) -> Vec<std::io::Result<()>> {
        self.tick();
        let keys: Vec<_> = writes.iter().map(|w| self.prepare(w.file)).collect();
        let bufs: Vec<Buf> = writes.iter().map(|w| self.gather(w)).collect();
        let files = &self.files;
        let ops = writes
            .iter()
            .zip(keys)
            .zip(bufs)
            .map(|((w, k), buf)| async move {
                let ring = match k {
                    Err(e) => return (Err(e), buf),
                    Ok(k) => k.and_then(|k| files.get(&k)),
                };
                match (ring, buf) {
                    (None, Buf::Shared(b)) => (w.file.write_at(&b, w.offset), Buf::Shared(b)),
                    (None, Buf::Owned(v)) => (w.file.write_at(&v, w.offset), Buf::Owned(v)),
                    (Some(c), Buf::Shared(b)) => {
                        let (r, b) = c.file.write_all_at(b, w.offset).await;
                        (r, Buf::Shared(b))
                    }
                    (Some(c), Buf::Owned(v)) => {
                        let (r, v) = c.file.write_all_at(v, w.offset).await;
                        (r, Buf::Owned(v))
                    }
                }
            });
        let done = self.rt.block_on(join_all(ops));
        let mut results = Vec::with_capacity(done.len());
        for (result, buf) in done {
            self.recycle(buf);
            results.push(result);
        }
        results
    }

    fn sync(&mut self, files: &[FileRef]) -> Vec<std::io::Result<()>> {
        self.tick();
        // io_uring always hands an fsync to an io-wq worker thread: for a single file that is
        // two context switches more than the plain fdatasync on this thread, and nothing runs
        // in parallel to pay for them. Several files still sync in parallel through the ring.
        if let [only] = files {
            return vec![only.sync_data()];
        }
        let keys: Vec<_> = files.iter().map(|f| self.prepare(f)).collect();
        let ring_files = &self.files;
        let ops = files.iter().zip(keys).map(|(f, k)| async move {
            match k.map(|k| k.and_then(|k| ring_files.get(&k))) {
                Err(e) => Err(e),
                Ok(None) => f.sync_data(),
                Ok(Some(c)) => c.file.sync_data().await,
            }
        });
        self.rt.block_on(join_all(ops))
    }
}
