//! log::tests_durability: the order of syncs and file creations on disk, seen through a storage
//! backend that records every call (roll seals before it creates, new directories are synced in
//! their parent), and recovery of a sealed segment whose tail never reached the disk.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::tests::config;
use super::*;
use crate::io::{FileRef, StdStorage, Storage, StorageFile, WriterConfig};
use crate::protocol::batch::test_batches::batch;

/// One call that changes what is durable.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    /// `open` with `create` set.
    Create(PathBuf),
    Sync(PathBuf),
    SyncDir(PathBuf),
}

/// Plain files that log every create, fdatasync and directory sync, in call order.
#[derive(Debug, Clone, Default)]
struct RecordingStorage {
    events: Arc<Mutex<Vec<Event>>>,
}

impl RecordingStorage {
    fn push(&self, e: Event) {
        self.events.lock().expect("events").push(e);
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().expect("events").clone()
    }
}

#[derive(Debug)]
struct RecordingFile {
    inner: FileRef,
    storage: RecordingStorage,
}

impl StorageFile for RecordingFile {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.storage.push(Event::Sync(self.path().to_path_buf()));
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
}

impl Storage for RecordingStorage {
    fn open(&self, path: &Path, create: bool) -> std::io::Result<FileRef> {
        let inner = StdStorage.open(path, create)?;
        if create {
            self.push(Event::Create(path.to_path_buf()));
        }
        Ok(Arc::new(RecordingFile {
            inner,
            storage: self.clone(),
        }))
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
        self.push(Event::SyncDir(dir.to_path_buf()));
        StdStorage.sync_dir(dir)
    }
}

fn open_recorded(dir: &Path, config: LogConfig) -> (Partition, RecordingStorage) {
    let storage = RecordingStorage::default();
    let writer =
        DiskWriter::start_with(WriterConfig::new(dir), Arc::new(storage.clone())).expect("writer");
    let p = Partition::open(dir, config, writer).expect("open partition");
    (p, storage)
}

#[tokio::test]
async fn roll_syncs_the_old_segment_before_creating_the_new_one() {
    // Proves a roll makes the old segment's three files durable before the new segment's first
    // file exists: a crash in between must leave the old segment as the newest one, which
    // recovery CRC-checks. Appends do not sync (fsync_on_ack off), so the only syncs of segment
    // 0 are the seal's.
    let dir = tempfile::tempdir().expect("tempdir");
    let one = batch(1, 1, 20).len() as u64;
    let cfg = LogConfig {
        segment_bytes_max: 2 * one,
        fsync_on_ack: false,
        ..config()
    };
    let (p, storage) = open_recorded(dir.path(), cfg);
    for _ in 0..3 {
        p.append(Bytes::from(batch(1, 1, 20)), 0)
            .await
            .expect("append");
    }
    let events = storage.events();
    let at = |e: Event| events.iter().position(|x| *x == e);
    let path = |base: i64, ext: &str| dir.path().join(segment::file_name(base, ext));
    let created =
        at(Event::Create(path(2, "log"))).expect("the third append must have rolled to segment 2");
    for ext in ["log", "index", "timeindex"] {
        let synced = at(Event::Sync(path(0, ext))).expect("the roll syncs segment 0");
        assert!(
            synced < created,
            "segment 0 .{ext} synced after segment 2 was created: {events:?}"
        );
    }
}

#[tokio::test]
async fn torn_tail_of_the_newest_sealed_segment_is_cut() {
    // Proves recovery CRC-checks the newest sealed segment's tail: its last batch, header intact
    // but body zeroed (a page that never reached the disk), is cut from the file, and reads see
    // only valid batches on either side of the gap it leaves.
    let dir = tempfile::tempdir().expect("tempdir");
    let one = batch(1, 1, 20).len();
    let cfg = LogConfig {
        segment_bytes_max: 2 * one as u64,
        ..config()
    };
    let p = super::tests::open(dir.path(), cfg.clone());
    for _ in 0..3 {
        p.append(Bytes::from(batch(1, 1, 20)), 0)
            .await
            .expect("append");
    }
    drop(p);
    let sealed = dir.path().join(segment::file_name(0, "log"));
    let mut bytes = std::fs::read(&sealed).expect("read sealed");
    assert_eq!(bytes.len(), 2 * one, "segment 0 holds offsets 0 and 1");
    bytes[one + crate::protocol::batch::HEADER_BYTES..].fill(0);
    std::fs::write(&sealed, &bytes).expect("tear sealed tail");
    let p = super::tests::open(dir.path(), cfg);
    let len = std::fs::metadata(&sealed).expect("stat").len();
    assert_eq!(len, one as u64, "the torn batch must be cut");
    assert_eq!(p.log_end_offset(), 3);
    assert_eq!(super::tests::read_all(&p).await, [(0, 0), (2, 2)]);
}

#[tokio::test]
async fn new_partition_directories_are_synced_in_their_parents() {
    // Proves opening a partition whose directory (and its parent) do not exist yet syncs each new
    // directory's parent, outermost first, and reopening an existing one syncs no parent again.
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let dir = data.join("t-0");
    let (p, storage) = open_recorded(&dir, config());
    drop(p);
    let parent_syncs: Vec<Event> = storage
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::SyncDir(d) if *d != dir))
        .collect();
    assert_eq!(
        parent_syncs,
        [
            Event::SyncDir(root.path().to_path_buf()),
            Event::SyncDir(data.clone())
        ]
    );
    let (_p, storage) = open_recorded(&dir, config());
    assert!(
        !storage
            .events()
            .iter()
            .any(|e| matches!(e, Event::SyncDir(_))),
        "reopening syncs nothing: {:?}",
        storage.events()
    );
}
