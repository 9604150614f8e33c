//! io::writer: the disk writer, one std thread per data directory that performs every log write
//! and fsync. Submitters send [`Job`]s over a bounded channel; the thread blocks for one job,
//! drains what else is queued (bounded by `group_jobs_max` / `group_bytes_max`), writes them file
//! by file in submission order (a file's contiguous writes, across jobs, coalesce into one write
//! call), issues one fdatasync per distinct file that any job of the group asked to sync, then
//! completes every job in submission order. That is group commit: one fsync covers many produce
//! requests.
//!
//! Ordering promise: each file's writes land in the order they were submitted, jobs complete in
//! that order, and a job completes only after every earlier job has. A failed write or sync
//! poisons the file: every later job touching it fails too, so no later write can land beyond a
//! hole and no later sync can report durability for data the kernel may have dropped (fsync
//! errors are not retryable).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::{FileRef, GroupIo, GroupWrite, StdStorage, Storage, StorageFile};

/// fdatasyncs issued by every disk writer of this process, for the benchmark (DescribeConfigs shows
/// it as `bramble.fsyncs`). usize, not u64: 64-bit atomics are missing on some 32-bit ARM targets;
/// readers take differences with `wrapping_sub`.
static FSYNCS: AtomicUsize = AtomicUsize::new(0);

/// How many fdatasyncs the disk writers have issued since the process started (wraps).
pub fn fsyncs() -> usize {
    FSYNCS.load(Ordering::Relaxed)
}

/// One writer's data directory and limits. Units last.
#[derive(Debug, Clone, PartialEq)]
pub struct WriterConfig {
    /// The data directory this writer serves (names the thread's log lines; the io_uring probe
    /// will test this filesystem).
    pub data_dir: PathBuf,
    /// Jobs queued in the channel before submitters wait (backpressure on produce).
    pub queue_depth_max: usize,
    /// Jobs committed together in one group.
    pub group_jobs_max: usize,
    /// Bytes of writes gathered into one group (a single bigger job still goes, alone). Also bounds
    /// the buffer used to coalesce contiguous writes.
    pub group_bytes_max: usize,
    /// After the first job of a group that wants a sync, wait this long for more jobs to share the
    /// fsync (0 = never wait). The SD profile sets a few ms.
    pub group_wait_us: u64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            data_dir: PathBuf::new(),
            queue_depth_max: 1024,
            group_jobs_max: 256,
            group_bytes_max: 4 << 20,
            group_wait_us: 0,
        }
    }
}

impl WriterConfig {
    /// Default limits for the writer of `data_dir`.
    pub fn new(data_dir: &Path) -> WriterConfig {
        WriterConfig {
            data_dir: data_dir.to_path_buf(),
            ..WriterConfig::default()
        }
    }
}

/// `DiskWriter::start(&data_dir)` starts a writer with default limits.
impl From<&Path> for WriterConfig {
    fn from(data_dir: &Path) -> WriterConfig {
        WriterConfig::new(data_dir)
    }
}

impl From<&PathBuf> for WriterConfig {
    fn from(data_dir: &PathBuf) -> WriterConfig {
        WriterConfig::new(data_dir)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriterError {
    #[error("disk writer stopped")]
    Stopped,
    #[error("cannot start the disk writer for {data_dir}")]
    Start {
        data_dir: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("write to {path} failed")]
    Write {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("sync of {path} failed")]
    Sync {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("an earlier write or sync of {path} failed")]
    Poisoned { path: PathBuf },
}

type OnDone = Box<dyn FnOnce(Result<(), WriterError>) -> Result<(), WriterError> + Send>;

struct Write {
    file: FileRef,
    offset: u64,
    data: Bytes,
}

/// Writes (in order) and the files to make durable after them, plus an optional callback run on
/// the writer thread, in submission order, with the outcome; what it returns is what the
/// submitter's [`Completion`] yields. Keep callbacks short and panic-free: they run on the writer.
#[derive(Default)]
pub struct Job {
    writes: Vec<Write>,
    syncs: Vec<FileRef>,
    on_done: Option<OnDone>,
}

impl Job {
    pub fn new() -> Job {
        Job::default()
    }

    pub fn write(&mut self, file: &FileRef, offset: u64, data: Bytes) -> &mut Job {
        if !data.is_empty() {
            self.writes.push(Write {
                file: file.clone(),
                offset,
                data,
            });
        }
        self
    }

    /// fdatasync `file` after this group's writes, before this job completes.
    pub fn sync(&mut self, file: &FileRef) -> &mut Job {
        self.syncs.push(file.clone());
        self
    }

    pub fn on_done(
        &mut self,
        f: impl FnOnce(Result<(), WriterError>) -> Result<(), WriterError> + Send + 'static,
    ) -> &mut Job {
        self.on_done = Some(Box::new(f));
        self
    }

    pub fn bytes(&self) -> usize {
        self.writes.iter().map(|w| w.data.len()).sum()
    }
}

enum Msg {
    Job(Job, oneshot::Sender<Result<(), WriterError>>),
    Shutdown(oneshot::Sender<()>),
}

/// Cloneable handle to one writer thread. Dropping every handle also stops the thread (after it
/// finished what was queued); `shutdown` does it explicitly and waits.
#[derive(Clone)]
pub struct DiskWriter {
    tx: mpsc::Sender<Msg>,
    storage: Arc<dyn Storage>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for DiskWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskWriter")
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

/// A reserved slot in the writer's queue: submitting through it cannot fail or wait, so a caller
/// can reserve first, then change its own state, then submit.
pub struct Permit<'a> {
    permit: mpsc::Permit<'a, Msg>,
}

impl Permit<'_> {
    pub fn submit(self, job: Job) -> Completion {
        let (tx, rx) = oneshot::channel();
        self.permit.send(Msg::Job(job, tx));
        Completion { rx }
    }
}

/// Resolves once the job is written (and synced where asked).
#[must_use = "a completion does nothing unless waited on"]
pub struct Completion {
    rx: oneshot::Receiver<Result<(), WriterError>>,
}

impl Completion {
    pub async fn wait(self) -> Result<(), WriterError> {
        self.rx.await.unwrap_or(Err(WriterError::Stopped))
    }
}

impl DiskWriter {
    /// Starts a writer thread on plain files (`StdStorage`). `config` is a [`WriterConfig`] or
    /// just the data directory (default limits).
    pub fn start(config: impl Into<WriterConfig>) -> Result<DiskWriter, WriterError> {
        DiskWriter::start_with(config.into(), Arc::new(StdStorage))
    }

    /// Starts a writer thread on the given backend. The thread builds the backend's [`GroupIo`]
    /// first (for io_uring that is the probe); if that fails, the writer does not start.
    pub fn start_with(
        config: WriterConfig,
        storage: Arc<dyn Storage>,
    ) -> Result<DiskWriter, WriterError> {
        let (tx, rx) = mpsc::channel(config.queue_depth_max.max(1));
        let data_dir = config.data_dir.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread_storage = storage.clone();
        let handle = std::thread::Builder::new()
            .name("bramble-disk-writer".into())
            .spawn(move || match thread_storage.group_io(&config.data_dir) {
                Ok(io) => {
                    let _ = ready_tx.send(Ok(()));
                    run(rx, config, io);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| WriterError::Start {
                data_dir: data_dir.clone(),
                source: Arc::new(e),
            })?;
        let ready = ready_rx
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("disk writer thread ended at start")));
        if let Err(e) = ready {
            let _ = handle.join();
            let source = Arc::new(e);
            return Err(WriterError::Start { data_dir, source });
        }
        Ok(DiskWriter {
            tx,
            storage,
            thread: Arc::new(Mutex::new(Some(handle))),
        })
    }

    /// Which backend performs the writes: "uring" or "std" (or a test backend's name).
    pub fn backend(&self) -> &'static str {
        self.storage.backend()
    }

    /// The backend files are opened through (reads and recovery use it directly).
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Waits for room in the queue.
    pub async fn reserve(&self) -> Result<Permit<'_>, WriterError> {
        let permit = self.tx.reserve().await.map_err(|_| WriterError::Stopped)?;
        Ok(Permit { permit })
    }

    /// Queues a job (waiting for room) and returns its completion.
    pub async fn submit(&self, job: Job) -> Result<Completion, WriterError> {
        Ok(self.reserve().await?.submit(job))
    }

    /// Liveness probe: queues an empty job (no writes, no syncs, no fsync counted) and waits for
    /// the thread to complete it, behind whatever was queued before it. Not used by the record
    /// path; the systemd watchdog calls it once per period.
    pub async fn ping(&self) -> Result<(), WriterError> {
        self.submit(Job::new()).await?.wait().await
    }

    /// Writes and completes everything queued so far, refuses new jobs, and stops the thread.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

/// The writer thread's loop: one group per iteration until shutdown or every handle is dropped.
fn run(mut rx: mpsc::Receiver<Msg>, config: WriterConfig, io: Box<dyn GroupIo>) {
    let mut thread = WriterThread {
        config,
        poisoned: Vec::new(),
        io,
    };
    let mut stop_waiters = Vec::new();
    let mut closed = false;
    while let Some(first) = rx.blocking_recv() {
        let mut group = Vec::new();
        let mut bytes = 0usize;
        let mut take = |msg: Msg, group: &mut Vec<_>, bytes: &mut usize| match msg {
            Msg::Job(job, reply) => {
                *bytes += job.bytes();
                group.push((job, reply));
            }
            Msg::Shutdown(reply) => stop_waiters.push(reply),
        };
        take(first, &mut group, &mut bytes);
        thread.drain(&mut rx, &mut group, &mut bytes, &mut take);
        let wants_sync = group.iter().any(|(job, _)| !job.syncs.is_empty());
        if thread.config.group_wait_us > 0 && wants_sync && !thread.full(&group, bytes) {
            // Worth the wait only for a sync: it lets more produce requests share one fsync.
            std::thread::sleep(Duration::from_micros(thread.config.group_wait_us));
            thread.drain(&mut rx, &mut group, &mut bytes, &mut take);
        }
        thread.commit(group);
        if !stop_waiters.is_empty() && !closed {
            // Jobs already queued (and reserved permits) still arrive; new sends are refused.
            rx.close();
            closed = true;
        }
    }
    for reply in stop_waiters {
        let _ = reply.send(());
    }
    tracing::debug!(data_dir = %thread.config.data_dir.display(), "disk writer stopped");
}

struct WriterThread {
    config: WriterConfig,
    /// Files whose write or sync failed. Weak keeps the address from being reused for another
    /// file while listed; entries whose file is gone are pruned.
    poisoned: Vec<Weak<dyn StorageFile>>,
    /// The backend's way of performing a group's writes and syncs.
    io: Box<dyn GroupIo>,
}

type Reply = oneshot::Sender<Result<(), WriterError>>;

impl WriterThread {
    fn full(&self, group: &[(Job, Reply)], bytes: usize) -> bool {
        group.len() >= self.config.group_jobs_max.max(1) || bytes >= self.config.group_bytes_max
    }

    fn drain(
        &self,
        rx: &mut mpsc::Receiver<Msg>,
        group: &mut Vec<(Job, Reply)>,
        bytes: &mut usize,
        take: &mut impl FnMut(Msg, &mut Vec<(Job, Reply)>, &mut usize),
    ) {
        while !self.full(group, *bytes) {
            match rx.try_recv() {
                Ok(msg) => take(msg, group, bytes),
                Err(_) => break,
            }
        }
    }

    fn is_poisoned(&self, file: &FileRef) -> bool {
        self.poisoned
            .iter()
            .any(|w| std::ptr::addr_eq(w.as_ptr(), Arc::as_ptr(file)))
    }

    fn poison(&mut self, file: &FileRef) {
        self.poisoned.retain(|w| w.strong_count() > 0);
        if !self.is_poisoned(file) {
            self.poisoned.push(Arc::downgrade(file));
        }
    }

    /// Writes, syncs and completes one group.
    fn commit(&mut self, group: Vec<(Job, Reply)>) {
        let mut results: Vec<Result<(), WriterError>> = vec![Ok(()); group.len()];
        self.write_all(&group, &mut results);
        self.sync_all(&group, &mut results);
        for ((job, reply), result) in group.into_iter().zip(results) {
            let result = match job.on_done {
                Some(on_done) => on_done(result),
                None => result,
            };
            let _ = reply.send(result);
        }
    }

    /// Performs the group's writes, gathered file by file (`by_file`). Contiguous writes to one
    /// file form a run (one write call); runs go to the backend in waves holding at most one run
    /// per file, so a backend may submit a wave at once while each file's runs still land in
    /// submission order, and a failed run poisons its file before the file's next run is tried
    /// (no write lands beyond a hole).
    fn write_all(&mut self, group: &[(Job, Reply)], results: &mut [Result<(), WriterError>]) {
        let writes = by_file(group);
        let mut runs: Vec<&[(usize, &Write)]> = Vec::new();
        let mut start = 0;
        while start < writes.len() {
            let end = self.run_end(&writes, start);
            runs.push(&writes[start..end]);
            start = end;
        }
        for wave in waves(&runs) {
            self.write_wave(&wave, results);
        }
    }

    fn write_wave(&mut self, wave: &[&[(usize, &Write)]], results: &mut [Result<(), WriterError>]) {
        let mut ops = Vec::with_capacity(wave.len());
        let mut sent = Vec::with_capacity(wave.len());
        for &run in wave {
            let file = &run[0].1.file;
            if self.is_poisoned(file) {
                let path = file.path().to_path_buf();
                fail_run(run, results, WriterError::Poisoned { path });
                continue;
            }
            ops.push(GroupWrite {
                file,
                offset: run[0].1.offset,
                parts: run.iter().map(|(_, w)| w.data.clone()).collect(),
            });
            sent.push(run);
        }
        if ops.is_empty() {
            return;
        }
        let mut outcomes = self.io.write(&ops).into_iter();
        for (op, run) in ops.iter().zip(sent) {
            let outcome = outcomes.next().unwrap_or_else(missing_result);
            if let Err(e) = outcome {
                self.poison(op.file);
                let path = op.file.path().to_path_buf();
                let source = Arc::new(e);
                fail_run(run, results, WriterError::Write { path, source });
            }
        }
    }

    /// End (exclusive) of the run starting at `start`: same file, each write starting where the
    /// previous ended, total within `group_bytes_max`.
    fn run_end(&self, writes: &[(usize, &Write)], start: usize) -> usize {
        let first = writes[start].1;
        let mut next_offset = first.offset + first.data.len() as u64;
        let mut bytes = first.data.len();
        let mut end = start + 1;
        while let Some((_, w)) = writes.get(end) {
            let contiguous = Arc::ptr_eq(&w.file, &first.file) && w.offset == next_offset;
            if !contiguous || bytes + w.data.len() > self.config.group_bytes_max {
                break;
            }
            next_offset += w.data.len() as u64;
            bytes += w.data.len();
            end += 1;
        }
        end
    }

    /// One fdatasync per distinct file any job asked for, all handed to the backend together; a
    /// failure fails every job that asked.
    fn sync_all(&mut self, group: &[(Job, Reply)], results: &mut [Result<(), WriterError>]) {
        let mut files: Vec<FileRef> = Vec::new();
        for (job, _) in group {
            for f in &job.syncs {
                if self.is_poisoned(f) {
                    let path = f.path().to_path_buf();
                    fail_syncers(group, results, f, WriterError::Poisoned { path });
                } else if !files.iter().any(|g| Arc::ptr_eq(g, f)) {
                    files.push(f.clone());
                }
            }
        }
        if files.is_empty() {
            return;
        }
        FSYNCS.fetch_add(files.len(), Ordering::Relaxed);
        let mut outcomes = self.io.sync(&files).into_iter();
        for file in &files {
            let Err(e) = outcomes.next().unwrap_or_else(missing_result) else {
                continue;
            };
            self.poison(file);
            let path = file.path().to_path_buf();
            let source = Arc::new(e);
            fail_syncers(group, results, file, WriterError::Sync { path, source });
        }
    }
}

/// The group's writes (each with its job's index), gathered file by file (files in order of
/// first use) and in submission order within each file. Every job of a produce group writes the
/// segment's log, then its index files: gathered, a group's appends to one file are contiguous
/// and form one run (one write call) instead of one run per job. Order across files within a
/// group was never promised (a wave writes several files at once; nothing is durable before the
/// group's syncs), order within a file is kept.
fn by_file(group: &[(Job, Reply)]) -> Vec<(usize, &Write)> {
    let mut rank: HashMap<*const (), usize> = HashMap::new();
    let mut writes: Vec<(usize, usize, &Write)> = Vec::new();
    for (i, (job, _)) in group.iter().enumerate() {
        for w in &job.writes {
            let files = rank.len();
            let r = *rank.entry(Arc::as_ptr(&w.file).cast()).or_insert(files);
            writes.push((r, i, w));
        }
    }
    // Stable: a file's writes stay in submission order.
    writes.sort_by_key(|&(r, _, _)| r);
    writes.into_iter().map(|(_, i, w)| (i, w)).collect()
}

/// Splits runs into waves: wave k holds the k-th run of every file, in submission order.
fn waves<'r, 'w>(runs: &[&'r [(usize, &'w Write)]]) -> Vec<Vec<&'r [(usize, &'w Write)]>> {
    let mut seen: HashMap<*const (), usize> = HashMap::new();
    let mut waves: Vec<Vec<_>> = Vec::new();
    for &run in runs {
        let count = seen.entry(Arc::as_ptr(&run[0].1.file).cast()).or_insert(0);
        if waves.len() <= *count {
            waves.push(Vec::new());
        }
        waves[*count].push(run);
        *count += 1;
    }
    waves
}

/// A backend that answers fewer items than it was given failed the rest.
fn missing_result() -> std::io::Result<()> {
    Err(std::io::Error::other("storage backend returned no result"))
}

fn fail_run(run: &[(usize, &Write)], results: &mut [Result<(), WriterError>], e: WriterError) {
    for (i, _) in run {
        if results[*i].is_ok() {
            results[*i] = Err(e.clone());
        }
    }
}

/// Fails every still-successful job of `group` that asked to sync `file`.
fn fail_syncers(
    group: &[(Job, Reply)],
    results: &mut [Result<(), WriterError>],
    file: &FileRef,
    e: WriterError,
) {
    for (i, (job, _)) in group.iter().enumerate() {
        if results[i].is_ok() && job.syncs.iter().any(|g| Arc::ptr_eq(g, file)) {
            results[i] = Err(e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts syncs and can fail writes to files whose name starts with "bad".
    #[derive(Debug)]
    struct Counting {
        inner: FileRef,
        syncs: Arc<AtomicUsize>,
        writes: Arc<AtomicUsize>,
    }

    impl StorageFile for Counting {
        fn path(&self) -> &Path {
            self.inner.path()
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            let bad = self
                .path()
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("bad"));
            if bad {
                return Err(std::io::Error::other("injected"));
            }
            self.inner.write_at(buf, offset)
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            self.inner.read_at(buf, offset)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            self.inner.sync_data()
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.inner.set_len(len)
        }
        fn len(&self) -> std::io::Result<u64> {
            self.inner.len()
        }
    }

    fn counting(dir: &Path, name: &str) -> (FileRef, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let inner = StdStorage.open(&dir.join(name), true).expect("open");
        let (syncs, writes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        (
            Arc::new(Counting {
                inner,
                syncs: syncs.clone(),
                writes: writes.clone(),
            }),
            syncs,
            writes,
        )
    }

    #[tokio::test]
    async fn jobs_appending_to_two_files_coalesce_per_file() {
        // Proves a group of produce-like jobs (each appends to a log and to its index) writes each
        // file with few calls, not one per job: a file's appends are gathered across the jobs,
        // and both files hold them in submission order.
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _, log_writes) = counting(dir.path(), "log");
        let (index, _, index_writes) = counting(dir.path(), "index");
        let config = WriterConfig {
            group_wait_us: 20_000,
            ..WriterConfig::default()
        };
        let writer = DiskWriter::start(config).expect("writer");
        let mut completions = Vec::new();
        for i in 0..50u64 {
            let mut job = Job::new();
            job.write(&log, i * 3, Bytes::from(vec![i as u8; 3]))
                .write(&index, i, Bytes::from(vec![i as u8]))
                .sync(&log);
            completions.push(writer.submit(job).await.expect("submit"));
        }
        for c in completions {
            c.wait().await.expect("durable");
        }
        let calls = (
            log_writes.load(Ordering::SeqCst),
            index_writes.load(Ordering::SeqCst),
        );
        assert!(
            calls.0 < 10 && calls.1 < 10,
            "write calls (log, index): {calls:?}"
        );
        let mut buf = vec![0u8; 150];
        log.read_at(&mut buf, 0).expect("read log");
        assert!(buf.chunks(3).enumerate().all(|(i, c)| c == [i as u8; 3]));
        let mut buf = vec![0u8; 50];
        index.read_at(&mut buf, 0).expect("read index");
        assert!(buf.iter().enumerate().all(|(i, b)| *b == i as u8));
        writer.shutdown().await;
    }

    #[tokio::test]
    async fn queued_jobs_share_one_sync_and_one_write() {
        // Proves group commit: 50 appends queued while the writer is busy end in few syncs and
        // few pwrites (contiguous writes coalesce), and the file holds them in submission order.
        let dir = tempfile::tempdir().expect("tempdir");
        let (file, syncs, writes) = counting(dir.path(), "log");
        let config = WriterConfig {
            group_wait_us: 20_000,
            ..WriterConfig::default()
        };
        let writer = DiskWriter::start(config).expect("writer");
        let mut completions = Vec::new();
        for i in 0..50u64 {
            let mut job = Job::new();
            job.write(&file, i * 2, Bytes::from(vec![i as u8; 2]))
                .sync(&file);
            completions.push(writer.submit(job).await.expect("submit"));
        }
        for c in completions {
            c.wait().await.expect("durable");
        }
        assert!(
            syncs.load(Ordering::SeqCst) < 10,
            "syncs: {}",
            syncs.load(Ordering::SeqCst)
        );
        assert!(
            writes.load(Ordering::SeqCst) < 10,
            "writes: {}",
            writes.load(Ordering::SeqCst)
        );
        let mut buf = vec![0u8; 100];
        file.read_at(&mut buf, 0).expect("read back");
        assert!(
            buf.chunks(2)
                .enumerate()
                .all(|(i, c)| c == [i as u8, i as u8])
        );
        writer.shutdown().await;
    }

    #[tokio::test]
    async fn callbacks_run_in_order_and_failures_poison_the_file() {
        // Proves on_done runs in submission order, a failed write fails the job, later jobs on the
        // poisoned file fail, and other files are unaffected.
        let dir = tempfile::tempdir().expect("tempdir");
        let (bad, _, _) = counting(dir.path(), "bad");
        let (good, _, _) = counting(dir.path(), "good");
        let writer = DiskWriter::start(dir.path()).expect("writer");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut completions = Vec::new();
        for (i, file) in [&good, &bad, &good, &bad].into_iter().enumerate() {
            let order = order.clone();
            let mut job = Job::new();
            job.write(file, i as u64, Bytes::from_static(b"x"))
                .on_done(move |r| {
                    order.lock().expect("test lock").push(i);
                    r
                });
            completions.push(writer.submit(job).await.expect("submit"));
        }
        let mut outcomes = Vec::new();
        for c in completions {
            outcomes.push(c.wait().await.is_ok());
        }
        assert_eq!(outcomes, [true, false, true, false]);
        assert_eq!(*order.lock().expect("test lock"), [0, 1, 2, 3]);
        writer.shutdown().await;
    }

    #[tokio::test]
    async fn ping_answers_while_running_and_fails_once_stopped() {
        // Proves the watchdog's liveness probe round-trips through a running writer thread and
        // reports Stopped after shutdown, so the watchdog withholds its ping then.
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = DiskWriter::start(dir.path()).expect("writer");
        writer.ping().await.expect("ping a running writer");
        writer.shutdown().await;
        assert!(matches!(writer.ping().await, Err(WriterError::Stopped)));
    }

    #[tokio::test]
    async fn shutdown_drains_then_refuses() {
        // Proves shutdown completes what was queued and later submits get Stopped.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = StdStorage.open(&dir.path().join("f"), true).expect("open");
        let writer = DiskWriter::start(dir.path()).expect("writer");
        let mut job = Job::new();
        job.write(&file, 0, Bytes::from_static(b"abc")).sync(&file);
        let done = writer.submit(job).await.expect("submit");
        writer.shutdown().await;
        done.wait().await.expect("queued job completed");
        assert_eq!(file.len().expect("len"), 3);
        assert!(matches!(
            writer.submit(Job::new()).await,
            Err(WriterError::Stopped)
        ));
        writer.shutdown().await; // idempotent
    }
}
