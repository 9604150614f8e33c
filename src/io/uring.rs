//! io::uring: the io_uring backend (64-bit Linux only), on the `io-uring` crate's raw ring.
//! Files are plain files opened as in the std backend, and everything off the writer thread
//! (fetch reads, recovery's truncations, directory syncs) stays std: `pread` from the page cache
//! is already cheap, and a ring belongs to one thread.
//!
//! The writer thread owns the ring and waits on it directly (no async runtime in between). One
//! group is one submission wherever that saves system calls: every file's write is one `writev`
//! entry pointing at the request bytes as received (no copy into a staging buffer), and when a
//! group syncs several files, each file's `fdatasync` entry is linked behind its write
//! (`IOSQE_IO_LINK`: it starts only once the write has fully succeeded), so the files sync in
//! parallel and the whole group costs one `io_uring_enter`.
//!
//! Two cases do not go through the ring, because it would only add work there:
//! - a group syncing a single file syncs it with a plain `fdatasync` on this thread. io_uring
//!   hands every fsync to an io-wq worker thread (no filesystem can start one without blocking),
//!   which costs two context switches and buys no parallelism with one file;
//! - a group with at most one write and no ring sync is one `pwrite`: one system call either way.
//!
//! Buffers are not registered with the ring: a registered buffer would need the request bytes
//! copied into it, which costs more than the page pinning it saves on writes this small.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use bytes::Bytes;
use io_uring::{IoUring, opcode, squeue, types};

use super::{
    FileRef, GroupIo, GroupWrite, IOVECS_MAX, StdStorage, Storage, finish_short_write, iovec,
};

/// Submission queue entries. A group with more entries is submitted in several rounds; this
/// bounds the ring's memory, not the group's size.
const RING_ENTRIES: u32 = 256;
/// The probe writes and fsyncs this file in the data directory, then removes it.
const PROBE_FILE: &str = ".io-uring-probe";
const PROBE_BYTES: &[u8] = b"bramble io_uring probe\n";
/// Gather buffers kept for reuse, and the largest one kept.
const POOL_BUFFERS_MAX: usize = 8;
const POOL_BUFFER_BYTES_MAX: usize = 4 << 20;

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

    /// The probe: sets up a ring, runs a no-op, and writes + fsyncs a file in `data_dir` through
    /// the ring (an empty path skips the file step). Any failure is returned with the kernel's
    /// errno.
    fn group_io(&self, data_dir: &Path) -> std::io::Result<Box<dyn GroupIo>> {
        if let Some(e) = self.forced_failure() {
            return Err(e);
        }
        let mut io = UringIo {
            ring: IoUring::new(RING_ENTRIES)?,
            pool: Vec::new(),
            broken: false,
        };
        let nop = [Op::Nop];
        io.submit(&nop).pop().unwrap_or_else(no_completion)?;
        if !data_dir.as_os_str().is_empty() {
            probe_file(&mut io, data_dir)?;
        }
        Ok(Box::new(io))
    }
}

fn probe_file(io: &mut UringIo, data_dir: &Path) -> std::io::Result<()> {
    // The data directory may not exist yet on a first start; the broker would create it anyway.
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join(PROBE_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let iov = [iovec(PROBE_BYTES)];
    let fd = file.as_raw_fd();
    let ops = [
        Op::Write {
            fd,
            offset: 0,
            iov: &iov,
            linked: true,
        },
        Op::Sync { fd },
    ];
    let outcome = io.submit(&ops).into_iter().try_for_each(|r| match r {
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    });
    drop(file);
    let removed = std::fs::remove_file(&path);
    outcome.and(removed)
}

/// One ring entry of a submission; what a write points at must outlive the submission.
enum Op<'a> {
    Nop,
    /// `linked`: the next op (this file's sync) starts only if this write fully succeeds.
    Write {
        fd: i32,
        offset: u64,
        iov: &'a [libc::iovec],
        linked: bool,
    },
    Sync {
        fd: i32,
    },
}

impl Op<'_> {
    fn entry(&self, user_data: u64) -> squeue::Entry {
        let entry = match self {
            Op::Nop => opcode::Nop::new().build(),
            Op::Write {
                fd,
                offset,
                iov,
                linked,
            } => {
                let e = opcode::Writev::new(types::Fd(*fd), iov.as_ptr(), iov.len() as u32)
                    .offset(*offset)
                    .build();
                if *linked {
                    e.flags(squeue::Flags::IO_LINK)
                } else {
                    e
                }
            }
            Op::Sync { fd } => opcode::Fsync::new(types::Fd(*fd))
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        };
        entry.user_data(user_data)
    }

    fn is_linked(&self) -> bool {
        matches!(self, Op::Write { linked: true, .. })
    }
}

fn no_completion() -> std::io::Result<usize> {
    Err(std::io::Error::other("io_uring returned no completion"))
}

/// The writer thread's ring and its gather buffers.
struct UringIo {
    ring: IoUring,
    pool: Vec<Vec<u8>>,
    /// Set when waiting on the ring failed with entries in flight: their completions can no
    /// longer be matched to a submission, so the ring is abandoned and every later group goes
    /// through plain system calls. The writes left in flight only read the caller's buffers,
    /// and their files are poisoned by the errors returned for them.
    broken: bool,
}

impl UringIo {
    /// Submits `ops` (in rounds of at most the ring's size, a linked write never apart from its
    /// sync), waits for all of them, and returns each op's result: bytes written for a write.
    /// Every buffer an op points at is borrowed for this call, and the call returns only after
    /// the kernel has completed every entry it was given, so no pointer outlives its buffer.
    fn submit(&mut self, ops: &[Op<'_>]) -> Vec<std::io::Result<usize>> {
        let mut results: Vec<std::io::Result<usize>> = Vec::with_capacity(ops.len());
        results.resize_with(ops.len(), no_completion);
        let capacity = self.ring.params().sq_entries() as usize;
        let mut start = 0;
        while start < ops.len() && !self.broken {
            let mut end = start;
            while end < ops.len() {
                let unit = if ops[end].is_linked() { 2 } else { 1 };
                if end - start + unit > capacity {
                    break;
                }
                end = (end + unit).min(ops.len());
            }
            self.round(ops, start, end, &mut results);
            start = end;
        }
        results
    }

    /// One `io_uring_enter` for `ops[start..end]`, then their completions.
    fn round(
        &mut self,
        ops: &[Op<'_>],
        start: usize,
        end: usize,
        results: &mut [std::io::Result<usize>],
    ) {
        let mut pushed = 0;
        {
            let mut sq = self.ring.submission();
            for (i, op) in ops.iter().enumerate().take(end).skip(start) {
                // SAFETY: the entry's buffers and descriptors are borrowed for the whole of
                // `submit`, which waits below until the kernel has completed every pushed entry.
                if unsafe { sq.push(&op.entry(i as u64)) }.is_err() {
                    results[i] = Err(std::io::Error::other("io_uring submission queue full"));
                    continue;
                }
                pushed += 1;
            }
        }
        let mut completed = 0;
        while completed < pushed {
            if let Err(e) = self.ring.submit_and_wait(pushed - completed) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "io_uring wait failed: plain system calls from now on");
                self.broken = true;
                return;
            }
            for cqe in self.ring.completion() {
                let i = cqe.user_data() as usize;
                let res = cqe.result();
                if let Some(slot) = results.get_mut(i) {
                    *slot = if res < 0 {
                        Err(std::io::Error::from_raw_os_error(-res))
                    } else {
                        Ok(res as usize)
                    };
                }
                completed += 1;
            }
        }
    }

    /// The iovecs of one run: its parts as they are, or gathered into one pooled buffer when
    /// they are more than one `writev` takes.
    fn run_buffers(&mut self, parts: &[Bytes]) -> (Vec<libc::iovec>, Option<Vec<u8>>) {
        if parts.len() <= IOVECS_MAX {
            return (parts.iter().map(|p| iovec(p)).collect(), None);
        }
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        parts.iter().for_each(|p| buf.extend_from_slice(p));
        (vec![iovec(&buf)], Some(buf))
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < POOL_BUFFERS_MAX && buf.capacity() <= POOL_BUFFER_BYTES_MAX {
            self.pool.push(buf);
        }
    }
}

/// A descriptor the ring can use, if the file has one (files that simulate a disk do not).
fn fd_of(file: &FileRef) -> Option<i32> {
    file.as_fd().map(|fd: BorrowedFd<'_>| fd.as_raw_fd())
}

impl GroupIo for UringIo {
    fn write(&mut self, writes: &[GroupWrite<'_>]) -> Vec<std::io::Result<()>> {
        self.write_and_sync(writes, &[]).0
    }

    fn sync(&mut self, files: &[FileRef]) -> Vec<std::io::Result<()>> {
        self.write_and_sync(&[], files).1
    }

    fn write_and_sync(
        &mut self,
        writes: &[GroupWrite<'_>],
        files: &[FileRef],
    ) -> (Vec<std::io::Result<()>>, Vec<std::io::Result<()>>) {
        let ring_syncs = files.len() > 1;
        if self.broken || (writes.len() <= 1 && !ring_syncs) {
            return plain(writes, files);
        }
        let buffers: Vec<_> = writes.iter().map(|w| self.run_buffers(&w.parts)).collect();
        // Op list: each write (linked to its file's sync when the ring syncs), then the syncs of
        // files this group did not write. `slots` maps writes and files to their op index.
        let mut ops = Vec::with_capacity(writes.len() + files.len());
        let mut write_slot = vec![None; writes.len()];
        let mut sync_slot = vec![None; files.len()];
        for (i, (w, (iov, _))) in writes.iter().zip(&buffers).enumerate() {
            let Some(fd) = fd_of(w.file) else { continue };
            let sync = files.iter().position(|f| std::sync::Arc::ptr_eq(f, w.file));
            let linked = ring_syncs && sync.is_some();
            write_slot[i] = Some(ops.len());
            ops.push(Op::Write {
                fd,
                offset: w.offset,
                iov,
                linked,
            });
            if let (true, Some(s)) = (linked, sync) {
                sync_slot[s] = Some(ops.len());
                ops.push(Op::Sync { fd });
            }
        }
        if ring_syncs {
            for (s, f) in files.iter().enumerate() {
                if let (None, Some(fd)) = (sync_slot[s], fd_of(f)) {
                    sync_slot[s] = Some(ops.len());
                    ops.push(Op::Sync { fd });
                }
            }
        }
        let mut done: Vec<Option<std::io::Result<usize>>> =
            self.submit(&ops).into_iter().map(Some).collect();
        let mut take = |slot: Option<usize>| slot.and_then(|i| done.get_mut(i)?.take());
        let mut scratch = Vec::new();
        let written: Vec<std::io::Result<()>> = writes
            .iter()
            .zip(&write_slot)
            .map(|(w, slot)| match take(*slot) {
                None => write_plain(w, &mut scratch),
                Some(Ok(n)) if n == w.bytes() => Ok(()),
                Some(Ok(n)) => finish_short_write(w, n),
                Some(Err(e)) => Err(e),
            })
            .collect();
        let synced = files
            .iter()
            .zip(&sync_slot)
            .map(|(f, slot)| {
                if write_failed(writes, &written, f) {
                    return Err(std::io::Error::other("not synced: its write failed"));
                }
                match take(*slot) {
                    Some(Ok(_)) => Ok(()),
                    // Cancelled because a short write broke the link, then finished by hand:
                    // the sync still has to happen. Files the ring did not sync sync here.
                    Some(Err(e)) if e.raw_os_error() == Some(libc::ECANCELED) => f.sync_data(),
                    None => f.sync_data(),
                    Some(Err(e)) => Err(e),
                }
            })
            .collect();
        drop(ops);
        for (_, gathered) in buffers {
            if let Some(buf) = gathered {
                self.recycle(buf);
            }
        }
        (written, synced)
    }
}

/// Plain system calls on this thread: for a group that is one write, one sync or both, and for
/// every group once the ring is broken.
fn plain(
    writes: &[GroupWrite<'_>],
    files: &[FileRef],
) -> (Vec<std::io::Result<()>>, Vec<std::io::Result<()>>) {
    let mut scratch = Vec::new();
    let written: Vec<_> = writes
        .iter()
        .map(|w| write_plain(w, &mut scratch))
        .collect();
    let synced = files
        .iter()
        .map(|f| {
            if write_failed(writes, &written, f) {
                Err(std::io::Error::other("not synced: its write failed"))
            } else {
                f.sync_data()
            }
        })
        .collect();
    (written, synced)
}

/// One `pwrite` of a run (its parts gathered into `scratch` when there are several).
fn write_plain(w: &GroupWrite<'_>, scratch: &mut Vec<u8>) -> std::io::Result<()> {
    match w.parts.as_slice() {
        [one] => w.file.write_at(one, w.offset),
        parts => {
            scratch.clear();
            parts.iter().for_each(|p| scratch.extend_from_slice(p));
            w.file.write_at(scratch, w.offset)
        }
    }
}

/// Whether `file`'s write in this group failed (then its sync must not report success).
fn write_failed(
    writes: &[GroupWrite<'_>],
    written: &[std::io::Result<()>],
    file: &FileRef,
) -> bool {
    writes
        .iter()
        .zip(written)
        .any(|(w, r)| std::sync::Arc::ptr_eq(w.file, file) && r.is_err())
}

#[cfg(test)]
mod tests {
    //! The ring's own paths, beside the conformance suite every backend passes: one submission
    //! with linked syncs across files, a failed write whose linked sync must not report success,
    //! and the plain completion of a short write.
    use std::os::fd::AsFd;
    use std::sync::Arc;

    use super::*;
    use crate::io::StorageFile;

    fn ring(dir: &Path) -> Option<Box<dyn GroupIo>> {
        match UringStorage::default().group_io(dir) {
            Ok(io) => Some(io),
            Err(e) => {
                eprintln!("SKIPPED: the io_uring probe failed here: {e}");
                None
            }
        }
    }

    /// A file whose descriptor is read-only, so a ring write to it fails with EBADF.
    #[derive(Debug)]
    struct ReadOnly(std::fs::File, std::path::PathBuf);

    impl StorageFile for ReadOnly {
        fn path(&self) -> &Path {
            &self.1
        }
        fn write_at(&self, _: &[u8], _: u64) -> std::io::Result<()> {
            Err(std::io::Error::from_raw_os_error(libc::EBADF))
        }
        fn read_at(&self, _: &mut [u8], _: u64) -> std::io::Result<()> {
            unreachable!("not read in these tests")
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.0.sync_data()
        }
        fn set_len(&self, _: u64) -> std::io::Result<()> {
            unreachable!("not truncated in these tests")
        }
        fn len(&self) -> std::io::Result<u64> {
            Ok(self.0.metadata()?.len())
        }
        fn as_fd(&self) -> Option<BorrowedFd<'_>> {
            Some(self.0.as_fd())
        }
    }

    fn read_all(f: &FileRef) -> Vec<u8> {
        let mut buf = vec![0; f.len().expect("len") as usize];
        f.read_at(&mut buf, 0).expect("read");
        buf
    }

    #[test]
    fn one_submission_writes_and_syncs_several_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(mut io) = ring(dir.path()) else {
            return;
        };
        let files: Vec<FileRef> = (0..3)
            .map(|i| super::super::open_std(&dir.path().join(format!("f{i}")), true).unwrap())
            .collect();
        let writes: Vec<GroupWrite<'_>> = files
            .iter()
            .enumerate()
            .map(|(i, f)| GroupWrite {
                file: f,
                offset: 0,
                parts: vec![
                    Bytes::from(vec![b'a' + i as u8; 3]),
                    Bytes::from_static(b"!"),
                ],
            })
            .collect();
        // Files 0 and 1 are synced (linked behind their writes), 2 only written; 0 is also
        // written again at an offset in a second call that syncs nothing.
        let synced = [files[0].clone(), files[1].clone()];
        let (w, s) = io.write_and_sync(&writes, &synced);
        assert!(w.iter().chain(&s).all(Result::is_ok), "{w:?} {s:?}");
        let again = [GroupWrite {
            file: &files[0],
            offset: 4,
            parts: vec![Bytes::from_static(b"xy")],
        }];
        assert!(io.write(&again).iter().all(Result::is_ok));
        assert_eq!(read_all(&files[0]), b"aaa!xy");
        assert_eq!(read_all(&files[1]), b"bbb!");
        assert_eq!(read_all(&files[2]), b"ccc!");
    }

    #[test]
    fn a_failed_write_fails_its_linked_sync_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(mut io) = ring(dir.path()) else {
            return;
        };
        let good = super::super::open_std(&dir.path().join("good"), true).unwrap();
        let path = dir.path().join("ro");
        std::fs::write(&path, b"").unwrap();
        let ro: FileRef = Arc::new(ReadOnly(std::fs::File::open(&path).unwrap(), path));
        let writes = [
            GroupWrite {
                file: &ro,
                offset: 0,
                parts: vec![Bytes::from_static(b"lost")],
            },
            GroupWrite {
                file: &good,
                offset: 0,
                parts: vec![Bytes::from_static(b"kept")],
            },
        ];
        let (w, s) = io.write_and_sync(&writes, &[ro.clone(), good.clone()]);
        assert_eq!(w[0].as_ref().unwrap_err().raw_os_error(), Some(libc::EBADF));
        assert!(
            s[0].is_err(),
            "a sync behind a failed write reported success"
        );
        assert!(w[1].is_ok() && s[1].is_ok(), "{w:?} {s:?}");
        assert_eq!(read_all(&good), b"kept");
    }

    #[test]
    fn short_write_is_finished_by_hand() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = super::super::open_std(&dir.path().join("short"), true).unwrap();
        let w = GroupWrite {
            file: &file,
            offset: 2,
            parts: vec![Bytes::from_static(b"abc"), Bytes::from_static(b"defg")],
        };
        // As if the kernel had written "abcd" and stopped.
        file.write_at(b"..abcd", 0).unwrap();
        finish_short_write(&w, 4).unwrap();
        assert_eq!(read_all(&file), b"..abcdefg");
    }
}
