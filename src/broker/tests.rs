//! broker tests: topics as the node keeps them on disk — creation, deletion, growth, and what
//! start-up makes of missing, damaged or leftover metadata and partition directories.

use super::*;
use crate::protocol::batch::test_batches;
use std::path::Path;

fn open(dir: &Path) -> Broker {
    open_with(Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    })
}

/// A broker on `config` with its own disk writer, advertised as 127.0.0.1:9092 (for tests here
/// and in the layers above).
pub(crate) fn open_with(config: Config) -> Broker {
    let writer = DiskWriter::start(&config.data_dir).unwrap();
    let advertised = Advertised {
        host: "127.0.0.1".into(),
        port: 9092,
    };
    Broker::open(config, advertised, writer).unwrap()
}

/// Creates topic `name` with `partitions` partitions and appends `records` to partition 0.
async fn topic_with_records(broker: &Broker, name: &str, partitions: i32, records: usize) -> Uuid {
    let t = broker
        .create_topic(name, partitions, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    if records > 0 {
        let log = t.partition(0).unwrap().log.clone();
        log.append(test_batches::batch(records, 1_000, 10).into(), 0)
            .await
            .unwrap();
    }
    t.id
}

fn log_end(broker: &Broker, name: &str, p: i32) -> i64 {
    broker
        .topic(name)
        .unwrap()
        .partition(p)
        .unwrap()
        .log
        .log_end_offset()
}

fn meta_file(dir: &Path, name: &str) -> PathBuf {
    topic::meta_dir(dir).join(format!("{name}.toml"))
}

// Proves a deleted topic stays deleted: DeleteTopics then CreateTopics of the name starts empty,
// and so does one after a stop cut the deletion short (directory marked `-delete`, metadata file
// and another partition's directory still there): start-up finishes the deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreated_topic_does_not_resurrect_old_data() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    topic_with_records(&broker, "live", 1, 3).await;
    broker.delete_topic("live").await.unwrap();
    topic_with_records(&broker, "live", 1, 0).await;
    assert_eq!(log_end(&broker, "live", 0), 0);

    let id = topic_with_records(&broker, "t", 2, 3).await;
    broker.shutdown().await;
    drop(broker);
    // The stop came after the first rename of DeleteTopics.
    std::fs::rename(
        topic::partition_dir(dir.path(), "t", 0),
        dirs::delete_dir(dir.path(), "t", 0, id),
    )
    .unwrap();

    let broker = open(dir.path());
    assert!(broker.topic("t").is_none());
    assert!(!meta_file(dir.path(), "t").exists());
    assert!(dirs::scan(dir.path()).unwrap().deleting.is_empty());
    topic_with_records(&broker, "t", 1, 0).await;
    assert_eq!(log_end(&broker, "t", 0), 0);
    assert!(
        !topic::partition_dir(dir.path(), "t", 1).exists(),
        "stale partition 1 left behind"
    );
    broker.shutdown().await;
}

// Proves a missing topic metadata file loses nothing: the topic comes back from its partition
// directories with its id, partition count, records and configs (from the copy each
// `partition.metadata` keeps, updated by a config change), and an auto-create of the name finds
// it rather than replacing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topic_metadata_recovers_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    let configs = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
    let id = broker
        .create_topic("t", 3, 1, configs, false)
        .await
        .unwrap()
        .id;
    let set = ConfigOp::Set("retention.ms".to_string(), "-1".to_string());
    broker
        .alter_topic_configs("t", vec![set], false)
        .await
        .unwrap();
    let log = broker.topic("t").unwrap().partition(0).unwrap().log.clone();
    log.append(test_batches::batch(5, 1_000, 10).into(), 0)
        .await
        .unwrap();
    broker.shutdown().await;
    drop((log, broker));
    std::fs::remove_file(meta_file(dir.path(), "t")).unwrap();

    let broker = open(dir.path());
    let t = broker.topic_or_auto_create("t").await.unwrap();
    assert_eq!((t.id, t.partition_count()), (id, 3));
    let kept = BTreeMap::from([("retention.ms".to_string(), "-1".to_string())]);
    assert_eq!(t.configs(), kept, "configs not recovered");
    assert_eq!(log_end(&broker, "t", 0), 5);
    assert!(
        meta_file(dir.path(), "t").exists(),
        "recovered metadata not written"
    );
    broker.shutdown().await;
}

// Proves a recovered topic keeps every record through retention: with its configs recovered
// from the partition directories' copy (retention.ms=-1), and with no copy at all (a directory
// from an earlier version), where recovery turns retention off rather than apply the 7-day
// default to records that are older.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovered_topic_keeps_its_records_through_retention() {
    let far_future = i64::MAX / 4;
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    let configs = BTreeMap::from([("retention.ms".to_string(), "-1".to_string())]);
    let id = broker
        .create_topic("t", 1, 1, configs.clone(), false)
        .await
        .unwrap()
        .id;
    let log = broker.topic("t").unwrap().partition(0).unwrap().log.clone();
    // Timestamps near 1970: far past any default retention.
    log.append(test_batches::batch(5, 1_000, 10).into(), 0)
        .await
        .unwrap();
    broker.shutdown().await;
    drop((log, broker));
    let p0 = topic::partition_dir(dir.path(), "t", 0);
    for copy in [true, false] {
        std::fs::write(meta_file(dir.path(), "t"), b"\x00garbage = [").unwrap();
        if !copy {
            std::fs::write(
                p0.join(dirs::PARTITION_METADATA),
                format!("version: 0\ntopic_id: {id}\n"),
            )
            .unwrap();
        }
        let broker = open(dir.path());
        let t = broker.topic("t").unwrap();
        broker.enforce_retention(far_future).await;
        let log = &t.partition(0).unwrap().log;
        assert_eq!(
            (log.log_start_offset(), log.log_end_offset()),
            (0, 5),
            "records deleted (copy kept: {copy})"
        );
        let expected = if copy {
            configs.clone()
        } else {
            topic::recovery_configs("t")
        };
        assert_eq!(t.configs(), expected, "copy kept: {copy}");
        broker.shutdown().await;
    }
}

// Proves a node that runs with a metadata quorum (`meta/raft` present, its single-node topic
// files moved aside) opens without recovering its partition directories as lost topics: none
// is loaded or removed (empty ones included) and no topic file is written; the image opens them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_of_a_quorum_node_wait_for_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    topic_with_records(&broker, "full", 1, 3).await;
    topic_with_records(&broker, "empty", 2, 0).await;
    broker.shutdown().await;
    drop(broker);
    // A quorum's store (its contents do not matter to start-up).
    let raft = crate::meta::raft_dir(dir.path());
    std::fs::create_dir_all(&raft).unwrap();
    std::fs::write(raft.join("vote.bin"), b"").unwrap();
    let imported = dir.path().join("meta").join("topics.imported");
    std::fs::rename(topic::meta_dir(dir.path()), imported).unwrap();

    let broker = open(dir.path());
    assert!(
        broker.topics().is_empty(),
        "topics loaded without the image"
    );
    assert!(!topic::meta_dir(dir.path()).exists(), "topic files written");
    for (name, p) in [("full", 0), ("empty", 0), ("empty", 1)] {
        assert!(
            topic::partition_dir(dir.path(), name, p).is_dir(),
            "{name}-{p} removed"
        );
    }
    broker.shutdown().await;
}

// Proves an unreadable metadata file is kept aside (not deleted) and the topic recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_topic_metadata_is_set_aside_and_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    let id = topic_with_records(&broker, "t", 1, 4).await;
    broker.shutdown().await;
    drop(broker);
    std::fs::write(meta_file(dir.path(), "t"), b"\x00garbage = [").unwrap();

    let broker = open(dir.path());
    assert_eq!(broker.topic("t").unwrap().id, id);
    assert_eq!(log_end(&broker, "t", 0), 4);
    let aside = topic::meta_dir(dir.path()).join("t.toml.corrupt");
    assert_eq!(std::fs::read(aside).unwrap(), b"\x00garbage = [");
    broker.shutdown().await;
}

// Proves a data directory from before `partition.metadata` existed upgrades in place: the file is
// written with the topic's id and the records stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_metadata_is_written_into_older_directories() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    let id = topic_with_records(&broker, "t", 1, 2).await;
    broker.shutdown().await;
    drop(broker);
    let p0 = topic::partition_dir(dir.path(), "t", 0);
    std::fs::remove_file(p0.join(dirs::PARTITION_METADATA)).unwrap();

    let broker = open(dir.path());
    assert_eq!(log_end(&broker, "t", 0), 2);
    assert_eq!(dirs::read_topic_id(&p0).unwrap(), Some(id));
    broker.shutdown().await;
}

// Proves orphan partition directories (a creation or growth cut short by a stop) are removed when
// they hold no records and adopted when they do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_partition_directories_are_removed_or_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    topic_with_records(&broker, "empty", 2, 0).await;
    topic_with_records(&broker, "full", 1, 3).await;
    topic_with_records(&broker, "grown", 1, 0).await;
    broker
        .create_partitions("grown", 3, None, false)
        .await
        .unwrap();
    let log = broker
        .topic("grown")
        .unwrap()
        .partition(2)
        .unwrap()
        .log
        .clone();
    log.append(test_batches::batch(1, 1_000, 10).into(), 0)
        .await
        .unwrap();
    broker.shutdown().await;
    drop((log, broker));
    // Creations cut before their metadata file; a growth cut before its rewrite.
    std::fs::remove_file(meta_file(dir.path(), "empty")).unwrap();
    std::fs::remove_file(meta_file(dir.path(), "full")).unwrap();
    let grown_meta = TopicMeta {
        partitions: 1,
        ..toml::from_str(&std::fs::read_to_string(meta_file(dir.path(), "grown")).unwrap()).unwrap()
    };
    topic::write_meta(dir.path(), &grown_meta).unwrap();
    // An empty directory (no partition.metadata) of a growth cut even earlier.
    let stray = topic::partition_dir(dir.path(), "grown", 5);
    std::fs::create_dir(&stray).unwrap();
    // A creation by an earlier version cut short: no partition.metadata, an empty first segment.
    let ghost = topic::partition_dir(dir.path(), "ghost", 0);
    std::fs::create_dir(&ghost).unwrap();
    for ext in ["log", "index", "timeindex"] {
        std::fs::write(ghost.join(format!("00000000000000000000.{ext}")), b"").unwrap();
    }

    let broker = open(dir.path());
    assert!(broker.topic("empty").is_none());
    assert!(!topic::partition_dir(dir.path(), "empty", 0).exists());
    assert!(!topic::partition_dir(dir.path(), "empty", 1).exists());
    assert_eq!(log_end(&broker, "full", 0), 3);
    assert_eq!(broker.topic("grown").unwrap().partition_count(), 3);
    assert_eq!(log_end(&broker, "grown", 2), 1);
    assert!(!stray.exists());
    assert!(!ghost.exists() && broker.topic("ghost").is_none());
    broker.shutdown().await;
}

// Proves a partition directory of another topic id is never reused nor removed: its topic is
// refused with a clear error, and CreateTopics of the name is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_partition_directory_refuses_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    topic_with_records(&broker, "t", 1, 2).await;
    broker.shutdown().await;
    drop(broker);
    let p0 = topic::partition_dir(dir.path(), "t", 0);
    let other = Uuid::new_v4();
    dirs::write_partition_meta(&p0, other, &BTreeMap::new()).unwrap();

    let broker = open(dir.path());
    assert!(broker.topic("t").is_none());
    assert!(broker.topic_or_auto_create("t").await.is_none());
    let refused = broker.create_topic("t", 1, 1, BTreeMap::new(), false).await;
    assert!(
        matches!(&refused, Err(TopicError::Storage(why)) if why.contains(&other.to_string())),
        "{:?}",
        refused.err()
    );
    assert_eq!(dirs::read_topic_id(&p0).unwrap(), Some(other));
    assert!(dirs::holds_records(&p0).unwrap());
    broker.shutdown().await;
}

// Proves partitions_max bounds creation and growth together, and refusals change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_max_bounds_create_and_grow() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_with(Config {
        data_dir: dir.path().to_path_buf(),
        partitions_max: 3,
        ..Config::default()
    });
    broker
        .create_topic("a", 2, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let refused = broker.create_topic("b", 2, 1, BTreeMap::new(), false).await;
    assert!(
        matches!(refused, Err(TopicError::InvalidPartitions(_))),
        "{:?}",
        refused.err()
    );
    assert!(broker.topic("b").is_none());
    broker.create_partitions("a", 3, None, false).await.unwrap();
    assert!(matches!(
        broker.create_partitions("a", 4, None, false).await,
        Err(TopicError::InvalidPartitions(_))
    ));
    assert_eq!(broker.topic("a").unwrap().partition_count(), 3);
    broker.shutdown().await;
}

// Proves a deletion that marked only some partition directories (then lost its metadata file)
// is finished on start: the unmarked directory carrying the deleted topic id is removed, not
// recovered as the topic with its old records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_deletion_is_finished_not_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    let id = broker
        .create_topic("t", 3, 1, BTreeMap::new(), false)
        .await
        .unwrap()
        .id;
    for p in 0..3 {
        let log = broker.topic("t").unwrap().partition(p).unwrap().log.clone();
        log.append(test_batches::batch(2, 1_000, 10).into(), 0)
            .await
            .unwrap();
    }
    broker.shutdown().await;
    drop(broker);
    // DeleteTopics renamed partition 0, could not rename 1 and 2, and removed the metadata file.
    std::fs::rename(
        topic::partition_dir(dir.path(), "t", 0),
        dirs::delete_dir(dir.path(), "t", 0, id),
    )
    .unwrap();
    std::fs::remove_file(meta_file(dir.path(), "t")).unwrap();

    let broker = open(dir.path());
    assert!(broker.topic("t").is_none(), "deleted topic came back");
    let scan = dirs::scan(dir.path()).unwrap();
    assert!(
        scan.partitions.is_empty() && scan.deleting.is_empty(),
        "{scan:?}"
    );
    assert!(!meta_file(dir.path(), "t").exists());
    let t = broker.topic_or_auto_create("t").await.unwrap();
    assert_ne!(t.id, id);
    assert_eq!(log_end(&broker, "t", 0), 0);
    broker.shutdown().await;
}

// Proves a topic with the longest name Kafka allows (249 characters) and 12 partitions can be
// created, written, deleted, deleted again after a stop cut the deletion short, and its name
// reused, and that the node starts each time: the deletion directories' names fit the
// file-name limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_topic_name_can_be_deleted() {
    let name = "n".repeat(topic::TOPIC_NAME_BYTES_MAX);
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    for round in 0..2 {
        let t = broker
            .create_topic(&name, 12, 1, BTreeMap::new(), false)
            .await
            .unwrap();
        for replica in t.partitions() {
            assert_eq!(replica.log.log_end_offset(), 0, "round {round}");
            replica
                .log
                .append(test_batches::batch(2, 1_000, 10).into(), 0)
                .await
                .unwrap();
        }
        broker.delete_topic(&name).await.unwrap();
        assert!(broker.topic(&name).is_none());
        let scan = dirs::scan(dir.path()).unwrap();
        assert!(
            scan.partitions.is_empty() && scan.deleting.is_empty(),
            "{scan:?}"
        );
    }
    let id = topic_with_records(&broker, &name, 12, 2).await;
    broker.shutdown().await;
    drop(broker);
    // A stop right after DeleteTopics marked partition 11.
    std::fs::rename(
        topic::partition_dir(dir.path(), &name, 11),
        dirs::delete_dir(dir.path(), &name, 11, id),
    )
    .unwrap();

    let broker = open(dir.path());
    assert!(broker.topic(&name).is_none());
    let scan = dirs::scan(dir.path()).unwrap();
    assert!(
        scan.partitions.is_empty() && scan.deleting.is_empty(),
        "{scan:?}"
    );
    topic_with_records(&broker, &name, 12, 0).await;
    assert_eq!(log_end(&broker, &name, 0), 0);
    broker.shutdown().await;
}

/// Sets or clears the immutable flag (chattr +i) of `path`: Err where the caller may not
/// (not root) or the file system has no such flag, and the test using it then proves nothing.
#[cfg(target_os = "linux")]
fn set_immutable(path: &Path, on: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    const FS_IMMUTABLE_FL: libc::c_int = 0x10;
    let f = std::fs::File::open(path)?;
    let mut flags: libc::c_int = 0;
    // SAFETY: both ioctls read or write one c_int (the kernel's type for these flags) at a
    // pointer valid for the call, on a descriptor that stays open.
    let get = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    if get < 0 {
        return Err(std::io::Error::last_os_error());
    }
    flags = if on {
        flags | FS_IMMUTABLE_FL
    } else {
        flags & !FS_IMMUTABLE_FL
    };
    // SAFETY: as above.
    let set = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) };
    if set < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

// Proves a deletion start-up cannot finish (the stop came after DeleteTopics marked partition
// 0; partition 1's directory can be neither renamed nor removed) does not stop the node from
// starting: the deleted topic is not served, and the next start finishes the deletion once the
// directory can go. Needs the immutable flag (root on ext4/xfs/btrfs); skipped, saying so,
// where it cannot be set.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinishable_deletion_does_not_stop_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    let id = topic_with_records(&broker, "t", 2, 3).await;
    broker.shutdown().await;
    drop(broker);
    std::fs::rename(
        topic::partition_dir(dir.path(), "t", 0),
        dirs::delete_dir(dir.path(), "t", 0, id),
    )
    .unwrap();
    let p1 = topic::partition_dir(dir.path(), "t", 1);
    if let Err(e) = set_immutable(&p1, true) {
        eprintln!("skipped: cannot set the immutable flag here: {e}");
        return;
    }
    // Cleared however the test ends, so the temporary directory can be removed.
    struct Clear<'a>(&'a Path);
    impl Drop for Clear<'_> {
        fn drop(&mut self) {
            let _ = set_immutable(self.0, false);
        }
    }
    let guard = Clear(&p1);

    let writer = DiskWriter::start(dir.path()).unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let advertised = Advertised {
        host: "127.0.0.1".into(),
        port: 9092,
    };
    let broker = Broker::open(config, advertised, writer);
    let broker = broker.expect("an unfinished deletion must not stop the node");
    assert!(broker.topic("t").is_none(), "deleted topic served");
    assert!(p1.exists());
    broker.shutdown().await;
    drop((broker, guard));

    let broker = open(dir.path());
    assert!(broker.topic("t").is_none());
    let scan = dirs::scan(dir.path()).unwrap();
    assert!(
        scan.partitions.is_empty() && scan.deleting.is_empty(),
        "{scan:?}"
    );
    broker.shutdown().await;
}
