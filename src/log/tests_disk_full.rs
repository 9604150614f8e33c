//! log::tests_disk_full: a partition on a real, tiny tmpfs that fills up: appends fail while it
//! is full, resume by themselves once space is freed (no reopen: `resume`), every acknowledged
//! batch reads back in order, and a partition created on the full disk fails to open instead of
//! failing its first append. Needs root to mount; without it the test says why and skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::tests::{config, open, read_all};
use super::*;
use crate::protocol::batch::test_batches::batch;

/// Size of the filesystem under test.
const TMPFS_BYTES: u64 = 1 << 20;
/// Bound on appends resuming once space is back (one re-check interval and a little more).
const RESUME_TIMEOUT: Duration = Duration::from_secs(10);
/// Appends tried while filling before the test gives up on the disk ever filling.
const FILL_APPENDS_MAX: usize = 10_000;

/// A tmpfs of `TMPFS_BYTES` mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// None (with the reason printed) where mounting is impossible (not root, no CAP_SYS_ADMIN).
    fn mount() -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_BYTES}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                let why = String::from_utf8_lossy(&o.stderr);
                eprintln!("SKIPPED: cannot mount a tmpfs for the disk-full test: {why}");
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount for the disk-full test: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the disk writer's thread may still be closing its files.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills what is left of the filesystem holding `dir` with a ballast file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("ballast");
    let mut f = std::fs::File::create(&path).expect("ballast");
    let block = vec![0xEEu8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.write_all(&[0u8; 1]);
    path
}

fn value_batch(i: usize) -> Bytes {
    Bytes::from(batch(4, i as i64, 200))
}

// Proves a full disk that is freed again needs no restart: appends fail while it is full, then
// succeed on their own, offsets continue densely after the last acknowledged batch, and every
// acknowledged batch reads back in order. Also that a partition created while the disk is full
// fails to open (CreateTopics answers KAFKA_STORAGE_ERROR) rather than opening and failing later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_resume_after_a_full_disk_is_freed() {
    let Some(fs) = Tmpfs::mount() else {
        return;
    };
    let dir = fs.path().join("t-0");
    let cfg = LogConfig {
        segment_bytes_max: 64 << 10,
        ..config()
    };
    let p = open(&dir, cfg.clone());
    let mut acked = Vec::new();
    for i in 0..20 {
        let a = p
            .append(value_batch(i), 0)
            .await
            .expect("append with space");
        acked.push((a.base_offset, a.last_offset));
    }
    let ballast = fill(fs.path());
    let mut failures = 0;
    for i in 0..FILL_APPENDS_MAX {
        match p.append(value_batch(i), 0).await {
            Ok(a) => acked.push((a.base_offset, a.last_offset)),
            Err(_) => {
                failures += 1;
                if failures == 3 {
                    break;
                }
            }
        }
    }
    assert_eq!(failures, 3, "the disk filled up");
    let writer =
        crate::io::DiskWriter::start(crate::io::WriterConfig::new(fs.path())).expect("writer");
    let created = Partition::open(&fs.path().join("new-0"), cfg, writer);
    assert!(
        created.is_err(),
        "a new partition on a full disk must not open"
    );

    std::fs::remove_file(&ballast).expect("free space");
    let deadline = Instant::now() + RESUME_TIMEOUT;
    let resumed = loop {
        match p.append(value_batch(0), 0).await {
            Ok(a) => break a,
            Err(e) => {
                assert!(Instant::now() < deadline, "appends never resumed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let last_acked = acked.last().map_or(-1, |&(_, last)| last);
    assert_eq!(
        resumed.base_offset,
        last_acked + 1,
        "dense after the last ack"
    );
    acked.push((resumed.base_offset, resumed.last_offset));
    for i in 0..10 {
        let a = p
            .append(value_batch(i), 0)
            .await
            .expect("append after resume");
        acked.push((a.base_offset, a.last_offset));
    }
    assert_eq!(read_all(&p).await, acked);
    assert!(p.damage().kept.is_empty(), "{:?}", p.damage());
}
