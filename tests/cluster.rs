//! The cluster view of one node: DescribeQuorum (API 55) at v0 and v2 and `bramble cluster
//! status|leaders`, against the real binary on a free 127.0.0.1 port with a temp data dir.
//!
//! A node started with no cluster flags is a one-voter cluster, so once its metadata quorum runs
//! (`Broker::quorum_status` returns `Some`) it leads: DescribeQuorum names it leader and only
//! voter, with no observers. `describe_quorum_names_this_node_the_leader_and_only_voter` and
//! `cluster_status_shows_this_node_as_voter_and_controller` assert that answer, so they fail
//! until the quorum runtime lands (the node answers NOT_LEADER_OR_FOLLOWER meanwhile). The
//! refusals and `cluster leaders` hold today.

mod common;

use std::process::Output;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{DescribeQuorumRequest, DescribeQuorumResponse, TopicName};

use common::{Broker, call, run_cli, s};

const NODE_ID: i32 = 1;
const METADATA_TOPIC: &str = "__cluster_metadata";
/// Partitions of the topic `cluster leaders` lists.
const PARTITIONS: i32 = 3;

fn request(topic: &str, partitions: &[i32]) -> DescribeQuorumRequest {
    DescribeQuorumRequest::default().with_topics(vec![
        TopicData::default()
            .with_topic_name(TopicName(s(topic)))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| PartitionData::default().with_partition_index(p))
                    .collect(),
            ),
    ])
}

fn describe_quorum(broker: &Broker, version: i16) -> DescribeQuorumResponse {
    call(&broker.addr(), &request(METADATA_TOPIC, &[0]), version)
}

fn cli(broker: &Broker, args: &[&str]) -> Output {
    let addr = broker.addr();
    let mut full = args.to_vec();
    full.extend_from_slice(&["-b", &addr]);
    let out = run_cli(&full, broker.dir.path());
    assert!(
        out.status.success(),
        "bramble {} exited {}\nstdout: {}\nstderr: {}",
        full.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Whitespace-split lines of `out`'s stdout.
fn rows(out: &Output) -> Vec<Vec<String>> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn describe_quorum_names_this_node_the_leader_and_only_voter() {
    let broker = Broker::start();
    for version in [0, 2] {
        let response = describe_quorum(&broker, version);
        assert_eq!(response.error_code, 0, "v{version}: {response:?}");
        assert_eq!(response.topics.len(), 1, "v{version}");
        assert_eq!(response.topics[0].topic_name.as_str(), METADATA_TOPIC);
        let p = &response.topics[0].partitions[0];
        assert_eq!(
            (p.partition_index, p.error_code),
            (0, 0),
            "v{version}: {p:?}"
        );
        assert_eq!(p.leader_id.0, NODE_ID, "v{version}");
        assert!(
            p.leader_epoch >= 1,
            "v{version}: a leader was elected in some term"
        );
        // The quorum's first entries are committed as soon as the one voter has them.
        assert!(p.high_watermark >= 1, "v{version}: {p:?}");
        assert_eq!(p.current_voters.len(), 1, "v{version}");
        let me = &p.current_voters[0];
        assert_eq!(me.replica_id.0, NODE_ID);
        assert_eq!(
            me.log_end_offset, p.high_watermark,
            "the only voter holds everything committed"
        );
        assert!(p.observers.is_empty(), "v{version}: {:?}", p.observers);
        if version >= 2 {
            let nodes: Vec<_> = response.nodes.iter().map(|n| n.node_id.0).collect();
            assert_eq!(nodes, [NODE_ID]);
            let l = &response.nodes[0].listeners[0];
            assert_eq!(
                format!("{}:{}", l.host.as_str(), l.port),
                broker.addr(),
                "v2 lists the node's advertised listener"
            );
            assert!(me.last_fetch_timestamp > 0 && me.last_caught_up_timestamp > 0);
        } else {
            assert!(response.nodes.is_empty());
        }
    }
}

#[test]
fn describe_quorum_of_any_other_partition_is_unknown_topic_or_partition() {
    let broker = Broker::start();
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    for version in [0, 2] {
        for (topic, partitions) in [
            ("orders", &[0][..]),
            (METADATA_TOPIC, &[1][..]),
            (METADATA_TOPIC, &[0, 1][..]),
        ] {
            let response: DescribeQuorumResponse =
                call(&broker.addr(), &request(topic, partitions), version);
            assert_eq!(response.error_code, 0);
            let t = &response.topics[0];
            assert_eq!(t.topic_name.as_str(), topic, "the topic is echoed");
            let answered: Vec<_> = t
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.error_code))
                .collect();
            let expected: Vec<_> = partitions.iter().map(|&p| (p, unknown)).collect();
            assert_eq!(answered, expected, "v{version} {topic} {partitions:?}");
            if version >= 2 {
                let message = t.partitions[0].error_message.as_ref().map(|m| m.as_str());
                assert_eq!(
                    message,
                    Some("This server does not host this topic-partition.")
                );
            }
        }
    }
}

#[test]
fn describe_quorum_is_advertised_at_kafka_4_0s_range() {
    use kafka_protocol::messages::{ApiKey, ApiVersionsRequest};
    let broker = Broker::start();
    let versions = call(&broker.addr(), &ApiVersionsRequest::default(), 3);
    let range = versions
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::DescribeQuorum as i16)
        .map(|k| (k.min_version, k.max_version));
    assert_eq!(range, Some((0, 2)));
}

#[test]
fn cluster_status_shows_this_node_as_voter_and_controller() {
    let broker = Broker::start();
    let out = cli(&broker, &["cluster", "status"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with("Quorum: leader 1  term ")),
        "{text}"
    );
    let me = rows(&out)
        .into_iter()
        .find(|r| r.first().map(String::as_str) == Some("1"))
        .unwrap_or_else(|| panic!("no row for node 1:\n{text}"));
    // ID ADDRESS RACK ROLE CONTROLLER FENCED LOG-END LAG
    assert_eq!(me[1], broker.addr(), "{text}");
    assert_eq!(&me[3..6], ["voter", "yes", "no"], "{text}");
    assert_eq!(me[7], "0", "the leader does not lag itself: {text}");
    assert!(text.ends_with("Fenced brokers: none\n"), "{text}");
}

#[test]
fn cluster_leaders_lists_every_partition_with_this_node_leading() {
    let broker = Broker::start();
    let partitions = PARTITIONS.to_string();
    cli(
        &broker,
        &["topic", "create", "orders", "--partitions", &partitions],
    );
    let out = cli(&broker, &["cluster", "leaders"]);
    let rows = rows(&out);
    assert_eq!(
        rows[0],
        [
            "TOPIC",
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "LAG"
        ]
    );
    let orders: Vec<_> = rows[1..].iter().filter(|r| r[0] == "orders").collect();
    assert_eq!(orders.len(), PARTITIONS as usize, "{rows:?}");
    for (i, r) in orders.iter().enumerate() {
        // One replica: no follower, so the LAG column is empty.
        let want = [
            i.to_string(),
            "1".into(),
            "0".into(),
            "1".into(),
            "1".into(),
        ];
        assert_eq!(r[1..], want);
    }

    let out = cli(&broker, &["cluster", "leaders", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let first = json
        .as_array()
        .and_then(|a| a.iter().find(|p| p["topic"] == "orders"))
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(first["leader"], NODE_ID);
    assert_eq!(first["isr"], serde_json::json!([NODE_ID]));
}

#[test]
fn cluster_commands_name_the_broker_they_could_not_reach() {
    let dir = tempfile::tempdir().unwrap();
    // A port just freed: nothing listens on it.
    let addr = format!("{}:{}", common::HOST, common::free_port());
    for sub in ["status", "leaders"] {
        let out = run_cli(&["cluster", sub, "-b", &addr], dir.path());
        assert!(
            !out.status.success(),
            "cluster {sub} against nothing succeeded"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("broker {addr}")), "{err}");
    }
}
