//! DescribeQuorum's answers built by `respond` from hand-made quorum states, checked field by
//! field and through the real encoder at every version (v0/v1 must not carry v2-only fields).

use bytes::BytesMut;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{DescribeQuorumRequest, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use uuid::Uuid;

use super::*;
use crate::meta::{QuorumStatus, ReplicaStatus};

const NOW_MS: i64 = 1_700_000_000_000;

fn request(topics: &[(&str, &[i32])]) -> DescribeQuorumRequest {
    DescribeQuorumRequest::default().with_topics(
        topics
            .iter()
            .map(|(name, partitions)| {
                TopicData::default()
                    .with_topic_name(TopicName(StrBytes::from_string(name.to_string())))
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|&p| PartitionData::default().with_partition_index(p))
                            .collect(),
                    )
            })
            .collect(),
    )
}

fn metadata_request() -> DescribeQuorumRequest {
    request(&[(METADATA_TOPIC, &[0])])
}

fn replica(node_id: i32, log_end_offset: i64, fetch: i64, caught_up: i64) -> ReplicaStatus {
    ReplicaStatus {
        node_id,
        log_end_offset,
        last_fetch_ms: fetch,
        last_caught_up_ms: caught_up,
    }
}

/// Three voters led by node 1 at term 7, entries up to index 41 committed; node 3 lags; node 4
/// is a learner.
fn three_voters() -> QuorumStatus {
    QuorumStatus {
        leader_id: Some(1),
        term: 7,
        commit_index: Some(41),
        voters: vec![
            replica(1, 42, -1, -1),
            replica(2, 42, NOW_MS - 10, NOW_MS - 10),
            replica(3, 30, NOW_MS - 500, NOW_MS - 2_000),
        ],
        observers: vec![replica(4, 42, NOW_MS - 20, NOW_MS - 20)],
    }
}

fn dir(n: u8) -> Uuid {
    Uuid::from_bytes([n; 16])
}

fn nodes() -> Vec<QuorumNode> {
    vec![
        QuorumNode::new(1, dir(1), "10.0.0.1", 9092),
        QuorumNode::new(2, dir(2), "10.0.0.2", 9092),
        QuorumNode::new(4, dir(4), "10.0.0.4", 9092),
    ]
}

fn view<'a>(
    local_id: i32,
    status: Option<&'a QuorumStatus>,
    nodes: &'a [QuorumNode],
) -> QuorumView<'a> {
    QuorumView {
        local_id,
        status,
        nodes,
        now_ms: NOW_MS,
    }
}

fn encodes(response: &DescribeQuorumResponse, version: i16) {
    let mut buf = BytesMut::new();
    response
        .encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("v{version} does not encode: {e}"));
}

#[test]
fn leader_answers_term_high_watermark_voters_and_observers() {
    let status = three_voters();
    let nodes = nodes();
    let response = respond(&metadata_request(), &view(1, Some(&status), &nodes), 2);
    assert_eq!(response.error_code, 0);
    let topic = &response.topics[0];
    assert_eq!(topic.topic_name.as_str(), METADATA_TOPIC);
    let p = &topic.partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.partition_index, 0);
    assert_eq!(p.leader_id.0, 1);
    assert_eq!(p.leader_epoch, 7);
    assert_eq!(p.high_watermark, 42, "commit index 41 + 1");
    let voters: Vec<_> = p
        .current_voters
        .iter()
        .map(|v| (v.replica_id.0, v.log_end_offset))
        .collect();
    assert_eq!(voters, [(1, 42), (2, 42), (3, 30)]);
    // The leader reports itself as fetching and caught up now, as Kafka's leader does.
    assert_eq!(p.current_voters[0].last_fetch_timestamp, NOW_MS);
    assert_eq!(p.current_voters[0].last_caught_up_timestamp, NOW_MS);
    assert_eq!(p.current_voters[2].last_fetch_timestamp, NOW_MS - 500);
    assert_eq!(p.current_voters[2].last_caught_up_timestamp, NOW_MS - 2_000);
    assert_eq!(p.observers.len(), 1);
    assert_eq!(p.observers[0].replica_id.0, 4);
    assert_eq!(p.observers[0].replica_directory_id, dir(4));
    // Directory ids from the node list; nil for a member the node does not know.
    assert_eq!(p.current_voters[1].replica_directory_id, dir(2));
    assert_eq!(p.current_voters[2].replica_directory_id, Uuid::nil());
    encodes(&response, 2);
}

#[test]
fn v2_lists_the_voters_with_their_listeners() {
    let status = three_voters();
    let nodes = nodes();
    let response = respond(&metadata_request(), &view(1, Some(&status), &nodes), 2);
    let listed: Vec<_> = response
        .nodes
        .iter()
        .map(|n| {
            let l: Vec<_> = n
                .listeners
                .iter()
                .map(|l| format!("{}://{}:{}", l.name.as_str(), l.host.as_str(), l.port))
                .collect();
            (n.node_id.0, l)
        })
        .collect();
    assert_eq!(
        listed,
        [
            (1, vec!["PLAINTEXT://10.0.0.1:9092".to_string()]),
            (2, vec!["PLAINTEXT://10.0.0.2:9092".to_string()]),
            // A voter whose address is unknown is listed without listeners; the learner is not.
            (3, vec![]),
        ]
    );
}

#[test]
fn v0_and_v1_leave_out_directory_ids_and_nodes() {
    let status = three_voters();
    let nodes = nodes();
    for version in [0, 1] {
        let response = respond(
            &metadata_request(),
            &view(1, Some(&status), &nodes),
            version,
        );
        assert!(response.nodes.is_empty(), "v{version}");
        let p = &response.topics[0].partitions[0];
        assert!(
            p.current_voters
                .iter()
                .chain(&p.observers)
                .all(|r| r.replica_directory_id.is_nil()),
            "v{version}"
        );
        // The encoder refuses v2-only fields at v0/v1, so this is the real check.
        encodes(&response, version);
    }
}

#[test]
fn follower_answers_its_view_without_claiming_the_leaders_clock() {
    let mut status = three_voters();
    for r in &mut status.voters {
        r.log_end_offset = -1;
        r.last_fetch_ms = -1;
        r.last_caught_up_ms = -1;
    }
    let nodes = nodes();
    let response = respond(&metadata_request(), &view(2, Some(&status), &nodes), 1);
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.leader_id.0, 1);
    assert!(
        p.current_voters
            .iter()
            .all(|v| v.last_fetch_timestamp == -1 && v.log_end_offset == -1),
        "{p:?}"
    );
}

#[test]
fn no_quorum_or_no_leader_is_not_leader_or_follower_on_the_metadata_partition() {
    let leaderless = QuorumStatus {
        leader_id: None,
        ..three_voters()
    };
    for status in [None, Some(&leaderless)] {
        for version in 0..=2 {
            let response = respond(&metadata_request(), &view(1, status, &[]), version);
            assert_eq!(response.error_code, 0, "errors are per partition, as Kafka");
            assert_eq!(response.topics.len(), 1);
            assert_eq!(response.topics[0].topic_name.as_str(), METADATA_TOPIC);
            let p = &response.topics[0].partitions[0];
            assert_eq!(p.partition_index, 0);
            assert_eq!(p.error_code, ResponseError::NotLeaderOrFollower.code());
            assert!(p.current_voters.is_empty() && response.nodes.is_empty());
            encodes(&response, version);
        }
    }
}

#[test]
fn anything_but_exactly_the_metadata_partition_is_unknown_topic_or_partition() {
    let status = three_voters();
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    let cases: [&[(&str, &[i32])]; 5] = [
        &[("orders", &[0])],
        &[(METADATA_TOPIC, &[1])],
        &[(METADATA_TOPIC, &[0, 1])],
        // Kafka refuses the valid partition too when anything else is asked alongside it.
        &[(METADATA_TOPIC, &[0]), ("orders", &[3])],
        &[(METADATA_TOPIC, &[])],
    ];
    for topics in cases {
        let response = respond(&request(topics), &view(1, Some(&status), &[]), 2);
        let answered: Vec<_> = response
            .topics
            .iter()
            .map(|t| {
                let ps: Vec<_> = t
                    .partitions
                    .iter()
                    .map(|p| (p.partition_index, p.error_code))
                    .collect();
                (t.topic_name.to_string(), ps)
            })
            .collect();
        let expected: Vec<_> = topics
            .iter()
            .map(|(t, ps)| {
                (
                    t.to_string(),
                    ps.iter().map(|&p| (p, unknown)).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(answered, expected, "{topics:?}");
        assert!(response.nodes.is_empty());
    }
    // No topics at all: an empty answer, no error anywhere.
    let response = respond(&request(&[]), &view(1, Some(&status), &[]), 2);
    assert!(response.topics.is_empty() && response.error_code == 0);
}

#[test]
fn high_watermark_is_one_past_the_commit_index() {
    assert_eq!(high_watermark(None), -1);
    assert_eq!(high_watermark(Some(0)), 1);
    assert_eq!(high_watermark(Some(41)), 42);
    assert_eq!(
        high_watermark(Some(u64::MAX)),
        -1,
        "out of range reads as unknown"
    );
}

#[test]
fn a_registration_gives_its_directory_id_and_listener() {
    let r = crate::meta::command::BrokerRegistration {
        node_id: 5,
        incarnation: Uuid::nil(),
        directory_id: dir(5),
        host: "pi5.local".to_string(),
        port: 9092,
        rack: None,
        raft_addr: "pi5.local:9192".to_string(),
    };
    let n = QuorumNode::from_registration(&r);
    assert_eq!(n.node_id, 5);
    assert_eq!(n.directory_id, dir(5));
    assert_eq!(n.listeners[0].host, "pi5.local");
    assert_eq!(n.listeners[0].port, 9092);
    assert!(QuorumNode::new(5, dir(5), "h", 70_000).listeners.is_empty());
}
