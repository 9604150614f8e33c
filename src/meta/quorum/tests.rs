//! meta::quorum tests: a one-voter quorum in-process on a temporary directory (no peer listener)
//! forms the cluster — importing a single node's topics and producer id mark — commits what
//! `MetadataClient::propose` sends, and after a shutdown starts again on the same directory with
//! the same image, from its log and from a snapshot, ignoring what a second start would import.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::meta::command::{Refusal, codes};
use crate::meta::settings::Voter;

pub(super) const NODE: i32 = 1;
/// The data directory's id: the same on every start, as node.toml keeps it.
const DIRECTORY_ID: Uuid = Uuid::from_u128(0x5eed_0001);
pub(super) const CLUSTER_ID: &str = "quorum-test-cluster";
const OLD_MARK: i64 = 3_000;
const PRODUCER_BLOCK: i64 = 1_000;
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test waits for the image to show a change (a debug build on a loaded box).
const IMAGE_WAIT: Duration = Duration::from_secs(20);
/// Entries between snapshots in the snapshot test: small, so a few proposals build two.
const SNAPSHOT_ENTRIES: u64 = 4;

pub(super) fn setup(
    dir: &Path,
    cluster_id: &str,
    import: Vec<TopicImport>,
    next_producer_id: i64,
) -> QuorumSetup {
    QuorumSetup {
        node_id: NODE,
        directory_id: DIRECTORY_ID,
        role: Role::Voter(vec![Voter {
            id: raft_id(NODE),
            raft_addr: "127.0.0.1:0".into(),
        }]),
        dir: dir.join("meta").join("raft"),
        registration: BrokerRegistration {
            node_id: NODE,
            incarnation: Uuid::new_v4(),
            directory_id: DIRECTORY_ID,
            host: "127.0.0.1".into(),
            port: 9092,
            rack: None,
            raft_addr: "127.0.0.1:0".into(),
        },
        cluster_id: cluster_id.into(),
        import,
        next_producer_id,
        storage: Arc::new(crate::io::StdStorage),
    }
}

fn import(name: &str, partitions: i32) -> TopicImport {
    TopicImport {
        name: name.into(),
        id: Uuid::new_v4(),
        partitions,
        configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
    }
}

/// Starts the quorum and waits until it has formed and this node is registered (placement
/// needs a live broker).
pub(super) async fn start(config: &Config, setup: QuorumSetup) -> Arc<Quorum> {
    let q = Quorum::start(config, setup).await.unwrap();
    q.wait_ready().await;
    wait_image(&q, |i| i.cluster_id.is_some() && i.is_live(NODE)).await;
    q
}

pub(super) async fn wait_image(
    q: &Quorum,
    done: impl Fn(&MetadataImage) -> bool,
) -> Arc<MetadataImage> {
    let mut cell = q.subscribe();
    let found = tokio::time::timeout(IMAGE_WAIT, cell.wait_for(|i| done(i))).await;
    match found {
        Ok(Ok(image)) => image.clone(),
        _ => panic!("image never got there: {:?}", q.image()),
    }
}

pub(super) async fn propose(q: &Quorum, cmd: MetadataCommand) -> MetadataResponse {
    q.propose(cmd, PROPOSE_TIMEOUT).await.unwrap()
}

fn create(name: &str, partitions: i32) -> MetadataCommand {
    MetadataCommand::CreateTopic {
        name: name.into(),
        id: Uuid::new_v4(),
        partitions,
        replication_factor: 1,
        configs: BTreeMap::new(),
        assignment: None,
    }
}

fn allocate() -> MetadataCommand {
    MetadataCommand::AllocateProducerIds {
        node_id: NODE,
        count: PRODUCER_BLOCK,
    }
}

fn refused(code: i16) -> impl Fn(&MetadataResponse) -> bool {
    move |r| matches!(r, MetadataResponse::Refused(Refusal { code: c, .. }) if *c == code)
}

// Proves a lone voter is a whole cluster: it forms with the imported topics and producer id
// mark, commits topic creation and deletion and producer id blocks (refusing what the image
// refuses), and on a start over the same directory keeps its cluster id, topics and blocks,
// importing nothing again, and commits further proposals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_voter_commits_proposals_and_keeps_its_image_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default();
    let legacy = import("legacy", 2);
    let q = start(
        &config,
        setup(dir.path(), CLUSTER_ID, vec![legacy.clone()], OLD_MARK),
    )
    .await;
    let image = q.image();
    assert_eq!(image.cluster_id.as_deref(), Some(CLUSTER_ID));
    let t = &image.topics["legacy"];
    assert_eq!(
        (t.id, t.partitions.len(), &t.configs),
        (legacy.id, 2, &legacy.configs)
    );
    assert!(
        t.partitions
            .iter()
            .all(|p| p.leader == NODE && p.replicas == [NODE])
    );
    assert_eq!(q.controller_id(), Some(NODE));

    let cmd = create("a", 3);
    let MetadataCommand::CreateTopic { id, .. } = &cmd else {
        unreachable!()
    };
    let id = *id;
    assert_eq!(
        propose(&q, cmd).await,
        MetadataResponse::TopicCreated { id }
    );
    let image = wait_image(&q, |i| i.topics.contains_key("a")).await;
    let a = &image.topics["a"];
    assert_eq!((a.id, a.partitions.len()), (id, 3));
    assert!(
        a.partitions
            .iter()
            .all(|p| p.leader == NODE && p.isr == [NODE])
    );
    assert!(refused(codes::TOPIC_ALREADY_EXISTS)(
        &propose(&q, create("a", 1)).await
    ));

    let first = MetadataResponse::ProducerIds {
        first: OLD_MARK,
        count: PRODUCER_BLOCK,
    };
    assert_eq!(
        propose(&q, allocate()).await,
        first,
        "first block starts at the old mark"
    );
    let second = MetadataResponse::ProducerIds {
        first: OLD_MARK + PRODUCER_BLOCK,
        count: PRODUCER_BLOCK,
    };
    assert_eq!(propose(&q, allocate()).await, second);

    let delete = |name: &str| MetadataCommand::DeleteTopic {
        name: name.into(),
        id: None,
    };
    assert_eq!(propose(&q, delete("legacy")).await, MetadataResponse::Done);
    assert!(refused(codes::UNKNOWN_TOPIC_OR_PARTITION)(
        &propose(&q, delete("legacy")).await
    ));
    let before = wait_image(&q, |i| !i.topics.contains_key("legacy")).await;
    q.shutdown().await;
    drop(q);

    // Another cluster id and another import, as a second start of a single node would offer:
    // the formed cluster ignores both.
    let again = setup(dir.path(), "another-id", vec![import("ghost", 1)], 0);
    let q = start(&config, again).await;
    let after = q.image();
    assert_eq!(after.cluster_id.as_deref(), Some(CLUSTER_ID));
    assert_eq!(after.topics, before.topics);
    assert_eq!(after.next_producer_id, OLD_MARK + 2 * PRODUCER_BLOCK);
    let third = MetadataResponse::ProducerIds {
        first: OLD_MARK + 2 * PRODUCER_BLOCK,
        count: PRODUCER_BLOCK,
    };
    assert_eq!(
        propose(&q, allocate()).await,
        third,
        "blocks are never handed out twice"
    );
    assert!(matches!(
        propose(&q, create("b", 1)).await,
        MetadataResponse::TopicCreated { .. }
    ));
    let image = wait_image(&q, |i| i.topics.contains_key("b")).await;
    let names: Vec<&String> = image.topics.keys().collect();
    assert_eq!(names, ["a", "b"]);
    q.shutdown().await;
}

// Proves snapshots bound the log without losing the image: with a snapshot every few entries,
// a burst of proposals leaves one snapshot on disk and the log before it purged; a restart over
// the snapshot and the log after it rebuilds the same topics and producer id mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_over_a_snapshot_rebuilds_the_same_image() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        raft_snapshot_entries: SNAPSHOT_ENTRIES,
        ..Config::default()
    };
    let q = start(&config, setup(dir.path(), CLUSTER_ID, Vec::new(), 0)).await;
    for i in 0..SNAPSHOT_ENTRIES * 3 {
        let r = propose(&q, create(&format!("t{i}"), 1)).await;
        assert!(matches!(r, MetadataResponse::TopicCreated { .. }), "{r:?}");
        propose(&q, allocate()).await;
    }
    let mut metrics = q.raft.metrics();
    // Built, purged behind, and no build still running: one is started only once the applied
    // index is SNAPSHOT_ENTRIES past the last snapshot, and until it lands that stays so. (A
    // build left running would write into the directory the second start reads.)
    // A build that was running when the threshold was passed again starts no new one once the
    // proposals stop: ask for one until the condition holds (Raft's trigger is idempotent).
    let settled = |m: &openraft::RaftMetrics<u64, openraft::BasicNode>| {
        m.purged.is_some()
            && matches!((m.snapshot, m.last_applied), (Some(s), Some(a)) if a.index - s.index < SNAPSHOT_ENTRIES)
    };
    tokio::time::timeout(IMAGE_WAIT, async {
        loop {
            if tokio::time::timeout(Duration::from_secs(1), metrics.wait_for(settled))
                .await
                .is_ok()
            {
                return;
            }
            let _ = q.raft.trigger().snapshot().await;
        }
    })
    .await
    .expect("no snapshot built, or no log purged behind it");
    let before = wait_image(&q, |i| i.topics.len() == (SNAPSHOT_ENTRIES * 3) as usize).await;
    q.shutdown().await;
    drop(q);
    // Raft's shutdown does not wait for a snapshot build on the blocking pool: let it finish
    // before the same process opens the directory again.
    let raft_dir = dir.path().join("meta/raft");
    let deadline = tokio::time::Instant::now() + IMAGE_WAIT;
    let snapshots = loop {
        let names: Vec<String> = std::fs::read_dir(&raft_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("snapshot-"))
            .collect();
        if (names.len() == 1 && !names[0].ends_with(".tmp"))
            || tokio::time::Instant::now() > deadline
        {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        snapshots.len(),
        1,
        "only the newest snapshot is kept: {snapshots:?}"
    );

    let q = start(&config, setup(dir.path(), "another-id", Vec::new(), 0)).await;
    let after = q.image();
    assert_eq!(after.cluster_id.as_deref(), Some(CLUSTER_ID));
    assert_eq!(after.topics, before.topics);
    assert_eq!(after.next_producer_id, before.next_producer_id);
    assert!(matches!(
        propose(&q, allocate()).await,
        MetadataResponse::ProducerIds { first, .. } if first == before.next_producer_id
    ));
    q.shutdown().await;
}
