//! meta::store::tests_recovery: what open does with damaged files (a torn tail is cut with a
//! warning; damage anywhere else refuses, naming the file and offset), and that truncations,
//! purges, snapshots and installed snapshots survive a reopen.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{EntryPayload, RaftLogReader, RaftSnapshotBuilder};
use tokio::sync::watch;

use super::tests::{log_id, membership, normal};
use super::*;
use crate::io::StdStorage;
use crate::meta::command::MetadataCommand;
use crate::meta::types::{Entry, LogId};

/// Small segments, so a few appends span several files.
const SMALL: StoreConfig = StoreConfig { segment_bytes: 50 };

fn cmd(i: u64) -> MetadataCommand {
    MetadataCommand::AllocateProducerIds {
        node_id: 1,
        count: i as i64 + 1,
    }
}

fn entries(term: u64, from: u64, to: u64) -> Vec<Entry> {
    (from..=to).map(|i| normal(term, i, cmd(i))).collect()
}

fn open_dir(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let (tx, _) = watch::channel(Arc::default());
    open_with(dir, Arc::new(StdStorage), tx, SMALL)
}

async fn ids(log: &mut LogStore) -> Vec<LogId> {
    let got = log.try_get_log_entries(..).await.expect("read");
    got.iter().map(|e| e.log_id).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().contains("/log-"))
        .collect();
    v.sort();
    v
}

/// Writes 1..=12 in batches of three (several segments).
async fn fill(dir: &Path) {
    let (mut log, _) = open_dir(dir).expect("open");
    for start in [1, 4, 7, 10] {
        log.blocking_append(entries(1, start, start + 2))
            .await
            .expect("append");
    }
}

/// Captured log output of the tracing events emitted inside `f`.
fn capture<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let out = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || out.clone())
        .with_ansi(false)
        .finish();
    let r = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buf.0.lock().expect("lock")).into_owned();
    (r, text)
}

#[tokio::test]
async fn torn_tail_is_cut_with_a_warning_naming_the_file() {
    // Proves a last record missing its end, and garbage or zeros after the last record, are
    // cut back to the last valid record with a warning naming the file and the bytes cut, and
    // the log then appends where it was cut.
    for tear in ["short", "garbage", "zeros"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("raft");
        fill(&dir).await;
        let last = segments(&dir).pop().expect("a segment");
        let len = std::fs::metadata(&last).expect("stat").len();
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(&last)
            .expect("open");
        let valid = match tear {
            "short" => {
                // The last record is 10..=12; cut its end off.
                f.set_len(len - 5).expect("cut");
                record_start(&last, len)
            }
            "garbage" => {
                (&f).write_all(&[0xA5; 77]).expect("garbage");
                len
            }
            _ => {
                (&f).write_all(&[0; 4096]).expect("zeros");
                len
            }
        };
        drop(f);
        let (opened, logs) = capture(|| open_dir(&dir));
        let (mut log, _) = opened.unwrap_or_else(|e| panic!("{tear}: open refused: {e}"));
        assert!(logs.contains("torn tail cut"), "{tear}: {logs}");
        assert!(logs.contains(&*last.to_string_lossy()), "{tear}: {logs}");
        assert_eq!(
            std::fs::metadata(&last).expect("stat").len(),
            valid,
            "{tear}"
        );
        let want: Vec<LogId> = match tear {
            "short" => (1..=9).map(|i| log_id(1, 1, i)).collect(),
            _ => (1..=12).map(|i| log_id(1, 1, i)).collect(),
        };
        assert_eq!(ids(&mut log).await, want, "{tear}");
        let next = want.len() as u64 + 1;
        log.blocking_append(entries(2, next, next))
            .await
            .expect("append after the cut");
        drop(log);
        let (mut log, _) = open_dir(&dir).expect("reopen");
        assert_eq!(ids(&mut log).await.len() as u64, next, "{tear}");
    }
}

/// Byte offset in `path` (first `len` bytes) where the record holding its last entries starts:
/// the file's records walked by their length fields.
fn record_start(path: &Path, len: u64) -> u64 {
    let bytes = std::fs::read(path).expect("read");
    let mut at = 0usize;
    loop {
        let l = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
        let end = at + 8 + l;
        if end as u64 >= len {
            return at as u64;
        }
        at = end;
    }
}

#[tokio::test]
async fn damage_in_the_middle_refuses_naming_file_and_offset() {
    // Proves a flipped byte in a record followed by valid ones, a torn end of a segment that is
    // not the last, and a bad vote or purged file all refuse to open with the file and offset
    // in the error: committed metadata is never dropped silently, a vote never reset.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    fill(&dir).await;
    let segs = segments(&dir);
    assert!(segs.len() >= 2, "the fill spans segments: {segs:?}");
    let last = segs.last().expect("last").clone();
    let mut bytes = std::fs::read(&last).expect("read");
    bytes[12] ^= 0xFF;
    std::fs::write(&last, &bytes).expect("write");
    let err = open_dir(&dir).err().expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&*last.to_string_lossy()) && msg.contains("byte 0"),
        "{msg}"
    );
    bytes[12] ^= 0xFF;
    std::fs::write(&last, &bytes).expect("restore");

    let first = segs[0].clone();
    let len = std::fs::metadata(&first).expect("stat").len();
    let orig = std::fs::read(&first).expect("read");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .and_then(|f| f.set_len(len - 3))
        .expect("cut");
    let msg = open_dir(&dir).err().expect("refused").to_string();
    assert!(msg.contains(&*first.to_string_lossy()), "{msg}");
    assert!(msg.contains("not the last"), "{msg}");
    std::fs::write(&first, &orig).expect("restore");

    {
        let (mut log, _) = open_dir(&dir).expect("healthy again");
        log.save_vote(&openraft::Vote::new(3, 1))
            .await
            .expect("vote");
        log.purge(log_id(1, 1, 2)).await.expect("purge");
    }
    for name in ["vote.bin", "purged.bin"] {
        let path = dir.join(name);
        let good = std::fs::read(&path).expect("read");
        let mut bad = good.clone();
        let at = bad.len() - 1;
        bad[at] ^= 1;
        std::fs::write(&path, &bad).expect("write");
        let msg = open_dir(&dir).err().expect("refused").to_string();
        assert!(msg.contains(&*path.to_string_lossy()), "{name}: {msg}");
        std::fs::write(&path, &good).expect("restore");
    }
    let (mut log, _) = open_dir(&dir).expect("healthy again");
    assert_eq!(
        log.read_vote().await.expect("vote"),
        Some(openraft::Vote::new(3, 1))
    );
}

#[tokio::test]
async fn truncate_and_purge_survive_a_reopen() {
    // Proves a truncation inside an append's record (the rest of the record kept), a new term's
    // entries after it, and a purge that drops whole segments all read back the same after a
    // reopen, with the purged id remembered and the purged segments' files gone.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    fill(&dir).await;
    let (mut log, _) = open_dir(&dir).expect("open");
    log.truncate(log_id(1, 1, 11)).await.expect("truncate");
    log.blocking_append(entries(2, 11, 14))
        .await
        .expect("append");
    log.truncate(log_id(1, 1, 8))
        .await
        .expect("truncate across segments");
    log.blocking_append(entries(3, 8, 9)).await.expect("append");
    log.purge(log_id(1, 1, 6)).await.expect("purge");
    let want = ids(&mut log).await;
    let expected: Vec<LogId> = [7]
        .iter()
        .map(|&i| log_id(1, 1, i))
        .chain((8..=9).map(|i| log_id(3, 1, i)))
        .collect();
    assert_eq!(want, expected);
    let state = log.get_log_state().await.expect("state");
    drop(log);
    let before = segments(&dir);
    let (mut log, _) = open_dir(&dir).expect("reopen");
    assert_eq!(ids(&mut log).await, want);
    assert_eq!(log.get_log_state().await.expect("state"), state);
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 6)));
    assert_eq!(segments(&dir), before);
    assert!(
        !before
            .iter()
            .any(|p| p.ends_with(super::files::segment_name(1))),
        "the segment of 1..=3 is purged: {before:?}"
    );
}

#[tokio::test]
async fn snapshot_survives_reopen_and_installs_on_a_fresh_store() {
    // Proves a built snapshot reopens as the same image, applied id and membership (and is the
    // current snapshot), and installing it on a fresh store replaces and publishes the image
    // there and survives that store's reopen too.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("a");
    let (tx, rx) = watch::channel(Arc::default());
    let (_, mut sm) = open_with(&dir, Arc::new(StdStorage), tx, SMALL).expect("open");
    let mut batch = vec![Entry {
        log_id: log_id(1, 1, 1),
        payload: EntryPayload::Membership(membership(&[1, 2, 3])),
    }];
    batch.push(normal(
        1,
        2,
        MetadataCommand::InitCluster {
            cluster_id: "c1".into(),
            node_id: 1,
            topics: vec![],
            next_producer_id: 5,
        },
    ));
    batch.extend(entries(1, 3, 6));
    sm.apply(batch).await.expect("apply");
    let image = sm.image().clone();
    assert_eq!(**rx.borrow(), image, "the applied batch is published");
    assert_eq!(image.cluster_id.as_deref(), Some("c1"));
    let built = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let applied = sm.applied_state().await.expect("applied");
    drop(sm);

    let (tx, rx) = watch::channel(Arc::default());
    let (_, mut sm) = open_with(&dir, Arc::new(StdStorage), tx, SMALL).expect("reopen");
    assert_eq!(sm.image(), &image);
    assert_eq!(**rx.borrow(), image, "open publishes the snapshot's image");
    assert_eq!(sm.applied_state().await.expect("applied"), applied);
    let current = sm
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("some");
    assert_eq!(current.meta, built.meta);

    let fresh = tmp.path().join("b");
    let (tx, rx) = watch::channel(Arc::default());
    let (_, mut other) = open_with(&fresh, Arc::new(StdStorage), tx, SMALL).expect("open");
    let mut data = other.begin_receiving_snapshot().await.expect("begin");
    *data = *current.snapshot;
    other
        .install_snapshot(&current.meta, data)
        .await
        .expect("install");
    assert_eq!(other.image(), &image);
    assert_eq!(**rx.borrow(), image, "install publishes");
    assert_eq!(other.applied_state().await.expect("applied"), applied);
    drop(other);
    let (tx, _) = watch::channel(Arc::default());
    let (_, mut other) = open_with(&fresh, Arc::new(StdStorage), tx, SMALL).expect("reopen");
    assert_eq!(other.image(), &image);
    assert_eq!(other.applied_state().await.expect("applied"), applied);

    let snap = std::fs::read_dir(&fresh)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .find(|p| p.to_string_lossy().contains("snapshot-"))
        .expect("a snapshot file");
    let mut bytes = std::fs::read(&snap).expect("read");
    let at = bytes.len() - 2;
    bytes[at] ^= 1;
    std::fs::write(&snap, &bytes).expect("write");
    let (tx, _) = watch::channel(Arc::default());
    let msg = open_with(&fresh, Arc::new(StdStorage), tx, SMALL)
        .err()
        .expect("a bad snapshot refuses")
        .to_string();
    assert!(msg.contains(&*snap.to_string_lossy()), "{msg}");
}

#[tokio::test]
async fn a_truncation_lowers_the_submitted_index() {
    // Proves the index a lease grant waits for (`LogStore::submitted`) forgets entries a
    // truncation dropped: a deposed leader's unreplicated tail must not hold every later grant
    // until new entries reach its index again.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    let (mut log, _) = open_dir(&dir).expect("open");
    let submitted = log.submitted();
    let at = || submitted.load(std::sync::atomic::Ordering::Acquire);
    log.blocking_append(entries(1, 1, 15))
        .await
        .expect("append");
    assert_eq!(at(), 15);
    log.truncate(log_id(1, 1, 13)).await.expect("truncate");
    assert_eq!(at(), 12, "the dropped tail 13..=15 is still counted");
    log.blocking_append(entries(2, 13, 13))
        .await
        .expect("append");
    assert_eq!(at(), 13);
}
