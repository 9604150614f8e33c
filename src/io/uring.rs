//! io::uring: the io_uring backend (64-bit Linux only), on the `io-uring` crate's raw ring.
//! Files are plain files opened as in the std backend, and everything off the writer thread
//! (fetch reads, recovery's truncations, directory syncs) stays std: `pread` from the page cache
//! is already cheap, and a ring belongs to one thread.
//!
//! What the ring does is the one thing it does better than plain system calls here: a group that
//! syncs several files submits all their `fdatasync`s at once (one `io_uring_enter`), so they run
//! in parallel on io_uring's worker threads and the file system can fold them into one journal
//! commit; the std backend waits for each in turn. Measured on ext4 (README, "Benchmark"): with 8
//! partitions the ring took 1.5-1.9M records/s where sequential syncs took 0.12M.
//!
//! Everything else is plain system calls on the writer thread, as in the std backend
//! ([`StdGroupIo`]): writes are `pwrite`/`pwritev` from the request bytes into the page cache,
//! and a single file's sync is one `fdatasync`. Both were tried on the ring and lost: a buffered
//! ext4 write submitted to the ring is handed to an io-wq worker (8x the writer thread's context
//! switches, measured), and every fsync is (no file system can start one without blocking), so a
//! ring buys nothing for one file. No async runtime sits between the writer and the ring.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

use io_uring::{IoUring, opcode, squeue, types};

use super::{FileRef, GroupIo, GroupWrite, StdGroupIo, StdStorage, Storage};

/// Submission queue entries. A group with more entries is submitted in several rounds; this
/// bounds the ring's memory, not the group's size.
const RING_ENTRIES: u32 = 256;
/// The probe writes and fsyncs this file in the data directory, then removes it.
const PROBE_FILE: &str = ".io-uring-probe";
const PROBE_BYTES: &[u8] = b"bramble io_uring probe\n";

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

    /// The probe: sets up a ring, runs a no-op, and writes a file in `data_dir` and fdatasyncs it
    /// through the ring, as groups will (an empty path skips the file step). Any failure is
    /// returned with the kernel's errno.
    fn group_io(&self, data_dir: &Path) -> std::io::Result<Box<dyn GroupIo>> {
        if let Some(e) = self.forced_failure() {
            return Err(e);
        }
        let mut io = UringIo {
            ring: IoUring::new(RING_ENTRIES)?,
            plain: StdGroupIo::default(),
            broken: false,
        };
        let nop = [Op::Nop];
        io.submit(&nop)
            .pop()
            .flatten()
            .unwrap_or_else(no_completion)?;
        if !data_dir.as_os_str().is_empty() {
            probe_file(&mut io, data_dir)?;
        }
        Ok(Box::new(io))
    }
}

fn probe_file(io: &mut UringIo, data_dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    // The data directory may not exist yet on a first start; the broker would create it anyway.
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join(PROBE_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let outcome = file.write_all(PROBE_BYTES).and_then(|()| {
        let sync = [Op::Sync {
            fd: file.as_raw_fd(),
        }];
        io.submit(&sync)
            .pop()
            .flatten()
            .unwrap_or_else(no_completion)
    });
    drop(file);
    let removed = std::fs::remove_file(&path);
    outcome.and(removed)
}

/// One ring entry: a no-op (the probe) or an fdatasync. Writes never go to the ring (see the
/// module comment), so no entry points at a buffer.
enum Op {
    Nop,
    Sync { fd: i32 },
}

impl Op {
    fn entry(&self, user_data: u64) -> squeue::Entry {
        let entry = match self {
            Op::Nop => opcode::Nop::new().build(),
            Op::Sync { fd } => opcode::Fsync::new(types::Fd(*fd))
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        };
        entry.user_data(user_data)
    }
}

fn no_completion() -> std::io::Result<()> {
    Err(std::io::Error::other("io_uring returned no completion"))
}

/// The writer thread's ring, and the plain system calls it shares with the std backend.
struct UringIo {
    ring: IoUring,
    plain: StdGroupIo,
    /// Set when waiting on the ring failed with entries in flight: their completions can no
    /// longer be matched to a submission, so the ring is abandoned and every later group syncs
    /// with plain system calls (the syncs left in flight touch no memory of ours).
    broken: bool,
}

impl UringIo {
    /// Submits `ops` in rounds of at most the ring's size and waits for all of them; one result
    /// per op, in order, `None` for an op the ring never answered (it broke first).
    fn submit(&mut self, ops: &[Op]) -> Vec<Option<std::io::Result<()>>> {
        let mut results: Vec<Option<std::io::Result<()>>> = Vec::with_capacity(ops.len());
        results.resize_with(ops.len(), || None);
        let capacity = self.ring.params().sq_entries() as usize;
        let mut start = 0;
        while start < ops.len() && !self.broken {
            let end = (start + capacity).min(ops.len());
            self.round(ops, start, end, &mut results);
            start = end;
        }
        results
    }

    /// One `io_uring_enter` for `ops[start..end]`, then their completions.
    fn round(
        &mut self,
        ops: &[Op],
        start: usize,
        end: usize,
        results: &mut [Option<std::io::Result<()>>],
    ) {
        let mut pushed = 0;
        {
            let mut sq = self.ring.submission();
            for (i, op) in ops.iter().enumerate().take(end).skip(start) {
                // SAFETY: a sync or no-op entry points at no memory; the descriptor is borrowed
                // from a file the caller holds until this call has waited for the completion.
                if unsafe { sq.push(&op.entry(i as u64)) }.is_err() {
                    // Left unanswered: the caller syncs it by hand.
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
                tracing::error!(error = %e, "io_uring wait failed: plain fdatasync from now on");
                self.broken = true;
                return;
            }
            for cqe in self.ring.completion() {
                let res = cqe.result();
                if let Some(slot) = results.get_mut(cqe.user_data() as usize) {
                    *slot = Some(if res < 0 {
                        Err(std::io::Error::from_raw_os_error(-res))
                    } else {
                        Ok(())
                    });
                }
                completed += 1;
            }
        }
    }
}

impl GroupIo for UringIo {
    fn write(&mut self, writes: &[GroupWrite<'_>]) -> Vec<std::io::Result<()>> {
        self.plain.write(writes)
    }

    /// Several files: every fdatasync in one submission. One file, a broken ring, or files
    /// without a descriptor: plain `fdatasync` on this thread.
    fn sync(&mut self, files: &[FileRef]) -> Vec<std::io::Result<()>> {
        let fds: Option<Vec<i32>> = files
            .iter()
            .map(|f| f.as_fd().map(|fd| fd.as_raw_fd()))
            .collect();
        match fds {
            Some(fds) if fds.len() > 1 && !self.broken => {
                let ops: Vec<Op> = fds.into_iter().map(|fd| Op::Sync { fd }).collect();
                let synced = self.submit(&ops);
                // Syncs the ring never answered (it broke, or its queue was full) are done by
                // hand. One it answered with an error keeps it: Linux reports a writeback error
                // once, so a retry could claim durability for data the kernel dropped.
                files
                    .iter()
                    .zip(synced)
                    .map(|(f, r)| r.unwrap_or_else(|| f.sync_data()))
                    .collect()
            }
            _ => self.plain.sync(files),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The ring's own path, beside the conformance suite every backend passes: several files'
    //! syncs in one submission, each answered for its own file.
    use std::os::fd::{AsFd, BorrowedFd};
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::io::StorageFile;

    fn ring(dir: &Path) -> Option<UringIo> {
        let mut io = UringIo {
            ring: IoUring::new(RING_ENTRIES).ok()?,
            plain: StdGroupIo::default(),
            broken: false,
        };
        match probe_file(&mut io, dir) {
            Ok(()) => Some(io),
            Err(e) => {
                eprintln!("SKIPPED: the io_uring probe failed here: {e}");
                None
            }
        }
    }

    /// A descriptor the kernel cannot fdatasync (a pipe: EINVAL), to see one failure reported
    /// for its own file only.
    #[derive(Debug)]
    struct Unsyncable(std::os::fd::OwnedFd, std::path::PathBuf);

    impl StorageFile for Unsyncable {
        fn path(&self) -> &Path {
            &self.1
        }
        fn write_at(&self, _: &[u8], _: u64) -> std::io::Result<()> {
            unreachable!("not written in these tests")
        }
        fn read_at(&self, _: &mut [u8], _: u64) -> std::io::Result<()> {
            unreachable!("not read in these tests")
        }
        fn sync_data(&self) -> std::io::Result<()> {
            Err(std::io::Error::from_raw_os_error(libc::EINVAL))
        }
        fn set_len(&self, _: u64) -> std::io::Result<()> {
            unreachable!("not truncated in these tests")
        }
        fn len(&self) -> std::io::Result<u64> {
            Ok(0)
        }
        fn as_fd(&self) -> Option<BorrowedFd<'_>> {
            Some(self.0.as_fd())
        }
    }

    #[test]
    fn several_syncs_in_one_submission_answer_per_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(mut io) = ring(dir.path()) else {
            return;
        };
        let files: Vec<FileRef> = (0..3)
            .map(|i| super::super::open_std(&dir.path().join(format!("f{i}")), true).unwrap())
            .collect();
        let writes: Vec<GroupWrite<'_>> = files
            .iter()
            .map(|f| GroupWrite {
                file: f,
                offset: 0,
                parts: vec![Bytes::from_static(b"abc"), Bytes::from_static(b"!")],
            })
            .collect();
        assert!(io.write(&writes).iter().all(Result::is_ok));
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: pipe(2) just opened both; each is owned once.
        let (read_end, _write_end) = unsafe {
            use std::os::fd::FromRawFd;
            (
                std::os::fd::OwnedFd::from_raw_fd(fds[0]),
                std::os::fd::OwnedFd::from_raw_fd(fds[1]),
            )
        };
        let pipe: FileRef = Arc::new(Unsyncable(read_end, dir.path().join("pipe")));
        let synced = io.sync(&[files[0].clone(), pipe, files[2].clone()]);
        assert!(synced[0].is_ok() && synced[2].is_ok(), "{synced:?}");
        assert_eq!(
            synced[1].as_ref().unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
        for f in &files {
            let mut buf = [0u8; 4];
            f.read_at(&mut buf, 0).unwrap();
            assert_eq!(&buf, b"abc!");
        }
    }
}
