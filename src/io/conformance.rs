//! io::conformance: the one suite every storage backend must pass (docs/CONVENTIONS.md rule 10),
//! run for `StdStorage` and `UringStorage` below; any other backend (the crash-simulating one) adds
//! one call to [`check`]. It covers the file operations the log relies on (positional writes and
//! reads, sparse and overlapping writes, truncate and extend, syncs, open vs create, removal,
//! errors on missing files, writes over 1 MiB, rename over an existing file) and, through a [`DiskWriter`] on the backend, the
//! group path: many small and overlapping writes in one group keep their order, waiters complete
//! in submission order, and one group asks for fewer fsyncs than it has jobs.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{DiskWriter, FileRef, GroupIo, GroupWrite, Job, Storage, WriterConfig};

/// Bigger than one MiB and not a multiple of the page size, so short writes would show.
const LARGE_BYTES: usize = (3 << 20) + 17;
/// Jobs queued for one group in the group-commit case.
const GROUP_JOBS: usize = 100;
/// Long enough for all GROUP_JOBS submissions to queue up behind the first job.
const GROUP_WAIT_US: u64 = 50_000;

/// Runs every case against `storage`, with files under `dir` (which must exist).
pub(crate) async fn check(storage: Arc<dyn Storage>, dir: &Path) {
    let s = &*storage;
    round_trip_sparse_and_overlapping(s, dir);
    truncate_and_extend(s, dir);
    open_existing_vs_create(s, dir);
    remove_and_missing_files(s, dir);
    directories(s, dir);
    large_write(s, dir);
    runs_of_many_parts(s, dir);
    rename_replaces_and_content_follows_the_name(s, dir);
    writer_group_keeps_order(storage.clone(), dir).await;
    writer_group_commit(storage.clone(), dir).await;
}

fn read(f: &FileRef, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    f.read_at(&mut buf, offset)
        .unwrap_or_else(|e| panic!("read {len} bytes at {offset} of {:?}: {e}", f.path()));
    buf
}

fn round_trip_sparse_and_overlapping(s: &dyn Storage, dir: &Path) {
    let f = s.open(&dir.join("rt"), true).expect("create");
    assert_eq!(f.len().expect("len"), 0);
    assert!(f.is_empty().expect("is_empty"));
    f.write_at(b"world", 6).expect("write at 6");
    f.write_at(b"hello ", 0).expect("write at 0");
    assert_eq!(read(&f, 0, 11), b"hello world");
    // Sparse: a write past the end leaves a hole that reads as zeros.
    f.write_at(b"!", 20).expect("sparse write");
    assert_eq!(f.len().expect("len"), 21);
    assert_eq!(
        read(&f, 11, 10),
        [0u8; 9].iter().chain(b"!").copied().collect::<Vec<_>>()
    );
    // Overlapping: the later write wins where they overlap.
    f.write_at(b"HELLO", 0).expect("overwrite");
    f.write_at(b"xx", 4).expect("overlap");
    assert_eq!(read(&f, 0, 8), b"HELLxxwo");
    let err = f
        .read_at(&mut [0u8; 2], 20)
        .expect_err("read past end must fail");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    f.sync_data().expect("sync_data");
}

fn truncate_and_extend(s: &dyn Storage, dir: &Path) {
    let f = s.open(&dir.join("len"), true).expect("create");
    f.write_at(b"0123456789", 0).expect("write");
    f.set_len(4).expect("truncate");
    assert_eq!(f.len().expect("len"), 4);
    assert!(
        f.read_at(&mut [0u8; 5], 0).is_err(),
        "truncated bytes are gone"
    );
    f.set_len(8).expect("extend");
    assert_eq!(f.len().expect("len"), 8);
    assert_eq!(read(&f, 0, 8), b"0123\0\0\0\0");
    f.sync_data().expect("sync_data");
}

fn open_existing_vs_create(s: &dyn Storage, dir: &Path) {
    let path = dir.join("reopen");
    let err = s
        .open(&path, false)
        .expect_err("open without create of a missing file");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    let f = s.open(&path, true).expect("create");
    f.write_at(b"kept", 0).expect("write");
    f.sync_data().expect("sync");
    drop(f);
    let again = s.open(&path, false).expect("open existing");
    assert_eq!(read(&again, 0, 4), b"kept");
    let created_again = s.open(&path, true).expect("create on an existing file");
    assert_eq!(
        created_again.len().expect("len"),
        4,
        "create must not truncate"
    );
    assert_eq!(created_again.path(), path);
}

fn remove_and_missing_files(s: &dyn Storage, dir: &Path) {
    let path = dir.join("gone");
    let f = s.open(&path, true).expect("create");
    f.write_at(b"x", 0).expect("write");
    drop(f);
    s.remove_file(&path).expect("remove");
    assert!(s.open(&path, false).is_err(), "removed file must not open");
    let err = s.remove_file(&path).expect_err("remove of a missing file");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(s.sync_dir(&dir.join("no-such-dir")).is_err());
    s.sync_dir(dir).expect("sync_dir");
}

fn directories(s: &dyn Storage, dir: &Path) {
    let nested = dir.join("a").join("b");
    s.create_dir_all(&nested).expect("create_dir_all");
    s.create_dir_all(&nested)
        .expect("create_dir_all is idempotent");
    let f = s
        .open(&nested.join("f"), true)
        .expect("create in nested dir");
    f.write_at(b"x", 0).expect("write");
    drop(f);
    s.sync_dir(&nested).expect("sync_dir");
    s.remove_dir_all(&dir.join("a")).expect("remove_dir_all");
    assert!(s.open(&nested.join("f"), false).is_err());
}

/// What compaction's segment swap relies on: rename replaces an existing `to` atomically, the
/// content follows the name, `from` is gone, handles opened before keep their own file (the
/// replaced one its old bytes), and renaming a missing file fails with NotFound.
fn rename_replaces_and_content_follows_the_name(s: &dyn Storage, dir: &Path) {
    let (from, to) = (dir.join("mv-from"), dir.join("mv-to"));
    let f = s.open(&from, true).expect("create from");
    f.write_at(b"fresh", 0).expect("write");
    f.sync_data().expect("sync");
    let t = s.open(&to, true).expect("create to");
    t.write_at(b"stale!", 0).expect("write");
    t.sync_data().expect("sync");
    s.rename(&from, &to).expect("rename over an existing file");
    let err = s.open(&from, false).expect_err("from is gone");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    let reopened = s.open(&to, false).expect("open to");
    assert_eq!(reopened.len().expect("len"), 5);
    assert_eq!(read(&reopened, 0, 5), b"fresh", "content follows the name");
    assert_eq!(
        read(&t, 0, 6),
        b"stale!",
        "the replaced file's handle keeps it"
    );
    f.write_at(b"F", 0).expect("write through the moved handle");
    assert_eq!(
        read(&reopened, 0, 5),
        b"Fresh",
        "the moved handle is the same file"
    );
    let err = s
        .rename(&from, &dir.join("mv-else"))
        .expect_err("rename of a missing file");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    s.sync_dir(dir).expect("sync_dir after rename");
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

fn large_write(s: &dyn Storage, dir: &Path) {
    let f = s.open(&dir.join("large"), true).expect("create");
    let data = pattern(LARGE_BYTES, 0x5a);
    f.write_at(&data, 1).expect("large write");
    f.sync_data().expect("sync");
    assert_eq!(f.len().expect("len"), LARGE_BYTES as u64 + 1);
    assert!(read(&f, 1, LARGE_BYTES) == data, "large write read back");
}

/// A run's parts land back to back: a few parts (one `pwritev`/`writev` of them where they lie),
/// more parts than one call takes (gathered), and a run appended after an earlier one.
fn runs_of_many_parts(s: &dyn Storage, dir: &Path) {
    let f = s.open(&dir.join("parts"), true).expect("create");
    let mut io = s.group_io(dir).expect("group io");
    let few: Vec<Bytes> = [1usize, 16, 4000, 45, 0, 3]
        .iter()
        .enumerate()
        .map(|(i, &len)| Bytes::from(pattern(len, i as u8)))
        .collect();
    let many: Vec<Bytes> = (0..1500)
        .map(|i| Bytes::from(pattern(i % 7 + 1, i as u8)))
        .collect();
    let expected: Vec<u8> = few.iter().chain(&many).flat_map(|p| p.to_vec()).collect();
    let first = GroupWrite {
        file: &f,
        offset: 0,
        parts: few.clone(),
    };
    let first_len = first.bytes() as u64;
    assert!(
        io.write(&[first]).into_iter().all(|r| r.is_ok()),
        "few parts"
    );
    let second = GroupWrite {
        file: &f,
        offset: first_len,
        parts: many,
    };
    let written = io.write(&[second]);
    let synced = io.sync(std::slice::from_ref(&f));
    assert!(
        written.iter().chain(&synced).all(Result::is_ok),
        "many parts"
    );
    assert_eq!(f.len().expect("len"), expected.len() as u64);
    assert!(
        read(&f, 0, expected.len()) == expected,
        "parts read back in order"
    );
}

/// Jobs alternate between two files; job i writes 4 bytes at offset i, overlapping the last two
/// of the previous job on that file, so only submission order gives the expected bytes. One job also writes a
/// large buffer and one a sparse one; all are queued before any completes.
async fn writer_group_keeps_order(storage: Arc<dyn Storage>, dir: &Path) {
    let config = WriterConfig {
        group_wait_us: GROUP_WAIT_US,
        ..WriterConfig::new(dir)
    };
    let writer = DiskWriter::start_with(config, storage.clone()).expect("writer");
    let files = [
        storage.open(&dir.join("w-a"), true).expect("create"),
        storage.open(&dir.join("w-b"), true).expect("create"),
    ];
    let big = storage.open(&dir.join("w-big"), true).expect("create");
    let mut completions = Vec::new();
    for i in 0..GROUP_JOBS as u64 {
        let mut job = Job::new();
        job.write(&files[(i % 2) as usize], i, Bytes::from(vec![i as u8; 4]));
        completions.push(writer.submit(job).await.expect("submit"));
    }
    let large = Bytes::from(pattern(LARGE_BYTES, 7));
    let mut job = Job::new();
    job.write(&big, 0, large.clone())
        .write(
            &big,
            LARGE_BYTES as u64 + 4096,
            Bytes::from_static(b"sparse"),
        )
        .sync(&big);
    completions.push(writer.submit(job).await.expect("submit"));
    for c in completions {
        c.wait().await.expect("write");
    }
    for (k, f) in files.iter().enumerate() {
        // Job i (i % 2 == k) writes at offset i, so byte j holds the last such job covering it.
        let len = f.len().expect("len") as usize;
        let got = read(f, 0, len);
        for (j, b) in got.iter().enumerate().skip(k) {
            let last = (0..GROUP_JOBS)
                .filter(|i| i % 2 == k && *i <= j && j < i + 4)
                .max();
            assert_eq!(Some(*b as usize), last, "file {k} byte {j}");
        }
    }
    assert!(
        read(&big, 0, LARGE_BYTES) == large,
        "large write through the writer"
    );
    assert_eq!(read(&big, LARGE_BYTES as u64 + 4096, 6), b"sparse");
    assert_eq!(
        read(&big, LARGE_BYTES as u64, 4),
        [0u8; 4],
        "hole reads as zeros"
    );
    writer.shutdown().await;
}

/// Queued appends with a sync each complete in submission order, land in order, and share
/// fsyncs: the backend is asked for fewer syncs than there were jobs.
async fn writer_group_commit(storage: Arc<dyn Storage>, dir: &Path) {
    let counted = Arc::new(Counted {
        inner: storage,
        syncs: Arc::new(AtomicUsize::new(0)),
    });
    let config = WriterConfig {
        group_wait_us: GROUP_WAIT_US,
        ..WriterConfig::new(dir)
    };
    let writer = DiskWriter::start_with(config, counted.clone()).expect("writer");
    let file = counted.open(&dir.join("commit"), true).expect("create");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut completions = Vec::new();
    for i in 0..GROUP_JOBS {
        let order = order.clone();
        let mut job = Job::new();
        job.write(&file, i as u64 * 3, Bytes::from(vec![i as u8; 3]))
            .sync(&file)
            .on_done(move |r| {
                order.lock().expect("test lock").push(i);
                r
            });
        completions.push(writer.submit(job).await.expect("submit"));
    }
    for c in completions {
        c.wait().await.expect("durable");
    }
    let syncs = counted.syncs.load(Ordering::SeqCst);
    assert!(
        syncs < GROUP_JOBS / 2,
        "{syncs} fsyncs for {GROUP_JOBS} jobs"
    );
    let order = order.lock().expect("test lock").clone();
    assert_eq!(
        order,
        (0..GROUP_JOBS).collect::<Vec<_>>(),
        "completion order"
    );
    let got = read(&file, 0, GROUP_JOBS * 3);
    assert!(got.chunks(3).enumerate().all(|(i, c)| c == [i as u8; 3]));
    writer.shutdown().await;
}

/// The backend under test, counting the fsyncs the writer asks its group I/O for. Files are the
/// inner backend's own, so its fast path (e.g. the ring) is what runs.
#[derive(Debug)]
struct Counted {
    inner: Arc<dyn Storage>,
    syncs: Arc<AtomicUsize>,
}

struct CountedIo {
    inner: Box<dyn GroupIo>,
    syncs: Arc<AtomicUsize>,
}

impl GroupIo for CountedIo {
    fn write(&mut self, writes: &[GroupWrite<'_>]) -> Vec<std::io::Result<()>> {
        self.inner.write(writes)
    }
    fn sync(&mut self, files: &[FileRef]) -> Vec<std::io::Result<()>> {
        self.syncs.fetch_add(files.len(), Ordering::SeqCst);
        self.inner.sync(files)
    }
}

impl Storage for Counted {
    fn open(&self, path: &Path, create: bool) -> std::io::Result<FileRef> {
        self.inner.open(path, create)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_file(path)
    }
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn remove_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn group_io(&self, data_dir: &Path) -> std::io::Result<Box<dyn GroupIo>> {
        Ok(Box::new(CountedIo {
            inner: self.inner.group_io(data_dir)?,
            syncs: self.syncs.clone(),
        }))
    }
}

#[tokio::test]
async fn std_storage_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    check(Arc::new(super::StdStorage), dir.path()).await;
}

#[tokio::test]
async fn crash_storage_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    check(
        Arc::new(super::crash::CrashStorage::new(dir.path())),
        dir.path(),
    )
    .await;
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
#[tokio::test]
async fn uring_storage_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = super::UringStorage::default();
    // The probe builds a ring runtime, which may not be nested in this test's runtime.
    let (probe, path) = (storage.clone(), dir.path().to_path_buf());
    let probed = std::thread::spawn(move || probe.group_io(&path).map(drop))
        .join()
        .expect("probe thread");
    if let Err(e) = probed {
        eprintln!(
            "SKIPPED uring conformance: the io_uring probe failed here: {}",
            super::uring_failure_reason(&e)
        );
        return;
    }
    check(Arc::new(storage), dir.path()).await;
}
