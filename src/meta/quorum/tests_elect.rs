//! meta::quorum election duties on a one-voter quorum in-process: brokers 2 and 3 are registered
//! by hand (they never heartbeat; the session timeout is long enough that they stay live), so
//! the controller's own loop does the work under test — an unclean election where the setting
//! allows it and none where a topic forbids it, the preferred replica getting its leadership
//! back, and this node's controlled shutdown handing its leadership over and fencing itself for
//! good (its own heartbeats do not unfence it).

use std::collections::BTreeMap;

use super::tests::{CLUSTER_ID, NODE, propose, setup, start, wait_image};
use super::*;
use crate::meta::command::codes;
use crate::meta::image::{NO_LEADER, PartitionImage};

/// Long enough that the hand-registered brokers are never fenced during the test.
const SESSION_TIMEOUT_MS: u64 = 60_000;
const HEARTBEAT_MS: u64 = 100;
const IMBALANCE_CHECK_MS: u64 = 200;
const HANDOVER_MAX: Duration = Duration::from_secs(10);

fn fake_broker(id: i32) -> MetadataCommand {
    MetadataCommand::RegisterBroker(BrokerRegistration {
        node_id: id,
        incarnation: Uuid::from_u128(id as u128),
        directory_id: Uuid::from_u128(100 + id as u128),
        host: "127.0.0.1".into(),
        port: 9091 + id,
        rack: None,
        raft_addr: format!("127.0.0.1:{}", 9191 + id),
    })
}

fn topic(name: &str, replicas: &[i32], configs: &[(&str, &str)]) -> MetadataCommand {
    MetadataCommand::CreateTopic {
        name: name.into(),
        id: Uuid::new_v4(),
        partitions: 1,
        replication_factor: replicas.len() as i16,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        assignment: Some(vec![replicas.to_vec()]),
    }
}

fn p0<'a>(image: &'a MetadataImage, name: &str) -> &'a PartitionImage {
    &image.topics[name].partitions[0]
}

async fn alter(q: &Quorum, name: &str, leader: i32, isr: &[i32]) {
    let image = q.image();
    let t = &image.topics[name];
    let p = &t.partitions[0];
    let cmd = MetadataCommand::AlterPartition {
        topic_id: t.id,
        partition: 0,
        partition_epoch: p.partition_epoch,
        leader,
        replicas: p.replicas.clone(),
        isr: isr.to_vec(),
    };
    assert_eq!(propose(q, cmd).await, MetadataResponse::Done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_elects_uncleanly_rebalances_and_hands_over_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        broker_heartbeat_ms: HEARTBEAT_MS,
        broker_session_timeout_ms: SESSION_TIMEOUT_MS,
        unclean_leader_election_enable: true,
        leader_imbalance_check_interval_ms: IMBALANCE_CHECK_MS,
        ..Config::default()
    };
    let q = start(&config, setup(dir.path(), CLUSTER_ID, Vec::new(), 0)).await;
    // Alone, a stopping node has nobody to hand over to: no mark, no fence.
    q.controlled_shutdown(HANDOVER_MAX).await;
    assert!(q.image().shutting_down.is_empty() && q.image().is_live(NODE));

    for id in [2, 3] {
        assert_eq!(propose(&q, fake_broker(id)).await, MetadataResponse::Done);
    }
    for cmd in [
        topic("u", &[2, NODE], &[]),
        topic("v", &[2, NODE], &[(UNCLEAN_CONFIG, "false")]),
        topic("p", &[3, NODE], &[]),
        topic("c", &[NODE, 3], &[]),
    ] {
        assert!(matches!(
            propose(&q, cmd).await,
            MetadataResponse::TopicCreated { .. }
        ));
    }
    // u and v: 2 alone in sync; p: led by this node, its preferred replica 3 in sync.
    alter(&q, "u", 2, &[2]).await;
    alter(&q, "v", 2, &[2]).await;
    alter(&q, "p", NODE, &[3, NODE]).await;
    let fence = MetadataCommand::FenceBroker {
        node_id: 2,
        incarnation: Uuid::from_u128(2),
    };
    assert_eq!(propose(&q, fence).await, MetadataResponse::Done);

    let image = wait_image(&q, |i| p0(i, "u").leader == NODE && p0(i, "p").leader == 3).await;
    let u = p0(&image, "u");
    assert_eq!(
        (u.isr.clone(), u.leader_epoch),
        (vec![NODE], 2),
        "fenced, then unclean"
    );
    assert_eq!(
        p0(&image, "p").leader_epoch,
        2,
        "moved away, then back to 3"
    );
    // v forbids it: it waits for 2, however long the controller looks.
    tokio::time::sleep(Duration::from_millis(IMBALANCE_CHECK_MS * 3)).await;
    let v = p0(&q.image(), "v").clone();
    assert_eq!((v.leader, v.isr), (NO_LEADER, vec![2]));

    q.controlled_shutdown(HANDOVER_MAX).await;
    let image = q.image();
    let c = p0(&image, "c");
    assert_eq!((c.leader, c.leader_epoch, c.isr.clone()), (3, 1, vec![3]));
    assert!(image.shutting_down.contains(&NODE));
    assert!(!image.is_live(NODE), "fenced on its way out");
    // This node's broker loop still beats: the controller must not unfence a stopping broker.
    tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS * 5)).await;
    assert!(!q.image().is_live(NODE));
    // A broker in controlled shutdown cannot be taken back into an ISR.
    let t = &image.topics["c"];
    let readmit = MetadataCommand::AlterPartition {
        topic_id: t.id,
        partition: 0,
        partition_epoch: t.partitions[0].partition_epoch,
        leader: 3,
        replicas: t.partitions[0].replicas.clone(),
        isr: vec![3, NODE],
    };
    assert!(matches!(
        propose(&q, readmit).await,
        MetadataResponse::Refused(r) if r.code == codes::INELIGIBLE_REPLICA
    ));
    q.shutdown().await;
}
