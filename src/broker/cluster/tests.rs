//! broker::cluster tests: the local registry following images — what a stale image (a restart
//! that replayed less than the node had acted on) may and may not do to partition directories,
//! and the data path refusing a topic the image has replaced.

use std::collections::BTreeMap;
use std::path::Path;

use uuid::Uuid;

use super::*;
use crate::config::Config;
use crate::meta::image::PartitionImage;
use crate::protocol::batch::test_batches;

/// A broker on `dir` as a node of a quorum opens it: `meta/raft` holds a store, so start-up
/// leaves partition directories to the image (the contents of the store do not matter here).
fn open(dir: &Path) -> Broker {
    let raft = crate::meta::raft_dir(dir);
    std::fs::create_dir_all(&raft).unwrap();
    std::fs::write(raft.join("vote.bin"), b"").unwrap();
    let config = Config {
        data_dir: dir.to_path_buf(),
        node_id: Some(1),
        ..Config::default()
    };
    crate::broker::tests::open_with(config)
}

/// An image in which node 1 hosts and leads topic `name` (id `id`) with one partition.
fn image_with(name: &str, id: Uuid, deleted: &[Uuid]) -> MetadataImage {
    let mut image = MetadataImage {
        cluster_id: Some("c".into()),
        deleted_topics: deleted.iter().copied().collect(),
        ..MetadataImage::default()
    };
    image.topics.insert(
        name.to_string(),
        TopicImage {
            name: name.to_string(),
            id,
            configs: BTreeMap::new(),
            partitions: vec![PartitionImage {
                replicas: vec![1],
                isr: vec![1],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            }],
        },
    );
    image
}

fn log_end(broker: &Broker, name: &str) -> Option<i64> {
    Some(broker.topic(name)?.partition(0)?.log.log_end_offset())
}

// Proves a stale image never deletes records: the directory of topic T (id B, 3 records) meets
// an image that still names T's earlier id A (the restart replayed less than the node acted
// on). The directory is kept and the partition stays offline; once the image catches up (A
// deleted, T is B) the records are served again. Before the fix the directory was removed as
// "a deleted topic's".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_image_keeps_a_newer_topics_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Uuid::from_u128(0xa), Uuid::from_u128(0xb));
    let broker = open(dir.path());
    broker.reconcile(&image_with("t", b, &[a])).await;
    let log = broker.topic("t").unwrap().partition(0).unwrap().log.clone();
    log.append(test_batches::batch(3, 1_000, 10).into(), 0)
        .await
        .unwrap();
    broker.shutdown().await;
    drop((log, broker));

    let broker = open(dir.path());
    broker.reconcile(&image_with("t", a, &[])).await;
    assert_eq!(
        log_end(&broker, "t"),
        None,
        "served another topic's directory"
    );
    assert!(
        topic::partition_dir(dir.path(), "t", 0).exists(),
        "directory removed"
    );

    broker.reconcile(&image_with("t", b, &[a])).await;
    assert_eq!(log_end(&broker, "t"), Some(3));
}

// Proves a directory of a topic the cluster deleted while this node was down is removed when a
// new topic of the same name lands here, and only then (its id is in the image's deleted set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topics_directory_makes_way_for_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Uuid::from_u128(0xa), Uuid::from_u128(0xb));
    let broker = open(dir.path());
    broker.reconcile(&image_with("t", a, &[])).await;
    let log = broker.topic("t").unwrap().partition(0).unwrap().log.clone();
    log.append(test_batches::batch(2, 1_000, 10).into(), 0)
        .await
        .unwrap();
    broker.shutdown().await;
    drop((log, broker));

    let broker = open(dir.path());
    broker.reconcile(&image_with("t", b, &[a])).await;
    assert_eq!(log_end(&broker, "t"), Some(0), "the new topic starts empty");
}

// Proves the directories of a topic deleted while this node was down are removed when the node
// follows an image whose deleted set names the topic, even though no topic of that name comes
// back; a directory of an id the image does not know is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_of_topics_deleted_while_down_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Uuid::from_u128(0xa), Uuid::from_u128(0xb));
    let broker = open(dir.path());
    broker.reconcile(&image_with("gone", a, &[])).await;
    broker.shutdown().await;
    drop(broker);
    let broker = open(dir.path());
    broker.reconcile(&image_with("kept", b, &[])).await;
    broker.shutdown().await;
    drop(broker);

    let broker = open(dir.path());
    let mut image = image_with("other", Uuid::from_u128(0xc), &[a]);
    image.applied_index = 1;
    broker.reconcile(&image).await;
    assert!(
        !topic::partition_dir(dir.path(), "gone", 0).exists(),
        "deleted topic's directory kept"
    );
    assert!(
        topic::partition_dir(dir.path(), "kept", 0).exists(),
        "an unknown id's directory removed"
    );
}

// Proves the data path never appends to a topic the image has replaced: while the registry still
// holds T under its old id, the image's T (a new id) answers NOT_LEADER (clients retry) instead
// of acknowledging records into the deleted topic's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_topic_is_not_led_here() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Uuid::from_u128(0xa), Uuid::from_u128(0xb));
    let broker = open(dir.path());
    let old = image_with("t", a, &[]);
    broker.reconcile(&old).await;
    let t = broker.topic("t").unwrap();
    let q: Arc<dyn MetadataClient> = Arc::new(FixedImage(Arc::new(image_with("t", b, &[a]))));
    broker.attach_quorum(q);
    assert!(matches!(
        broker.leader_replica(&t, 0),
        Err(NotLeading::NotLeader)
    ));
}

/// A quorum stand-in that only answers with one image.
struct FixedImage(Arc<MetadataImage>);

impl MetadataClient for FixedImage {
    fn node_id(&self) -> i32 {
        1
    }
    fn image(&self) -> Arc<MetadataImage> {
        self.0.clone()
    }
    fn subscribe(&self) -> crate::meta::ImageCell {
        tokio::sync::watch::channel(self.0.clone()).1
    }
    fn propose(
        &self,
        _cmd: MetadataCommand,
        _timeout: Duration,
    ) -> futures_util::future::BoxFuture<'_, Result<MetadataResponse, QuorumError>> {
        Box::pin(async { Err(QuorumError::NoController("test".into())) })
    }
    fn controller_id(&self) -> Option<i32> {
        None
    }
    fn status(&self) -> crate::meta::QuorumStatus {
        crate::meta::QuorumStatus::default()
    }
}
