//! `cluster status` and `cluster leaders` from hand-made DescribeCluster, DescribeQuorum and
//! Metadata answers: which rows, roles, lags and fencing they show, and the exact text.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterResponse, DescribeQuorumResponse, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::*;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn broker(id: i32, rack: Option<&str>, fenced: bool) -> DescribeClusterBroker {
    DescribeClusterBroker::default()
        .with_broker_id(BrokerId(id))
        .with_host(s("127.0.0.1"))
        .with_port(9091 + id)
        .with_rack(rack.map(s))
        .with_is_fenced(fenced)
}

/// Brokers 1-3 (3 fenced) and 4; the "controller" DescribeCluster names is 2 (a random broker,
/// as Kafka's brokers answer clients).
fn cluster() -> DescribeClusterResponse {
    DescribeClusterResponse::default()
        .with_cluster_id(s("c-1"))
        .with_controller_id(BrokerId(2))
        .with_brokers(vec![
            broker(1, Some("r1"), false),
            broker(2, Some("r2"), false),
            broker(3, Some("r3"), true),
            broker(4, None, false),
        ])
}

fn replica(id: i32, leo: i64) -> ReplicaState {
    ReplicaState::default()
        .with_replica_id(BrokerId(id))
        .with_log_end_offset(leo)
}

/// Voters 1, 2, 5 led by 1 at term 7, high watermark 42; node 5 is a voter no broker
/// registration names (its address comes from the v2 node list); 4 is a learner.
fn quorum() -> DescribeQuorumResponse {
    let p = PartitionData::default()
        .with_leader_id(BrokerId(1))
        .with_leader_epoch(7)
        .with_high_watermark(42)
        .with_current_voters(vec![replica(1, 42), replica(2, 40), replica(5, -1)])
        .with_observers(vec![replica(4, 42)]);
    DescribeQuorumResponse::default()
        .with_topics(vec![
            TopicData::default()
                .with_topic_name(TopicName(s("__cluster_metadata")))
                .with_partitions(vec![p]),
        ])
        .with_nodes(vec![
            Node::default()
                .with_node_id(BrokerId(5))
                .with_listeners(vec![
                    Listener::default()
                        .with_name(s("PLAINTEXT"))
                        .with_host(s("10.0.0.5"))
                        .with_port(9092),
                ]),
        ])
}

#[test]
fn quorum_members_get_roles_and_lag_behind_the_leader() {
    let status = assemble_status(&cluster(), true, summarize_quorum(&quorum()));
    assert_eq!(
        status.controller_id, 1,
        "the quorum's leader, not DescribeCluster's pick"
    );
    let rows: Vec<_> = status
        .nodes
        .iter()
        .map(|n| (n.node_id, n.role, n.controller, n.fenced, n.lag))
        .collect();
    assert_eq!(
        rows,
        [
            (1, Role::Voter, true, Some(false), Some(0)),
            (2, Role::Voter, false, Some(false), Some(2)),
            (3, Role::Broker, false, Some(true), None),
            (4, Role::Learner, false, Some(false), Some(0)),
            (5, Role::Voter, false, None, None),
        ]
    );
    assert_eq!(status.nodes[4].address.as_deref(), Some("10.0.0.5:9092"));
    assert_eq!(status.nodes[0].rack.as_deref(), Some("r1"));
}

#[test]
fn status_text_is_aligned_and_names_the_fenced() {
    let status = assemble_status(&cluster(), true, summarize_quorum(&quorum()));
    let expected = "\
Cluster: c-1  Controller: 1
Quorum: leader 1  term 7  commit index 41  high watermark 42
ID  ADDRESS         RACK  ROLE     CONTROLLER  FENCED  LOG-END  LAG
1   127.0.0.1:9092  r1    voter    yes         no      42       0
2   127.0.0.1:9093  r2    voter    no          no      40       2
3   127.0.0.1:9094  r3    broker   no          yes     -        -
4   127.0.0.1:9095  -     learner  no          no      42       0
5   10.0.0.5:9092   -     voter    no          -       -        -
Fenced brokers: 3
";
    assert_eq!(render_status(&status), expected);
}

#[test]
fn a_node_without_a_quorum_still_lists_its_brokers() {
    let not_leader = DescribeQuorumResponse::default().with_topics(vec![
        TopicData::default()
            .with_topic_name(TopicName(s("__cluster_metadata")))
            .with_partitions(vec![
                PartitionData::default()
                    .with_error_code(ResponseError::NotLeaderOrFollower.code())
                    .with_error_message(None),
            ]),
    ]);
    let quorum = summarize_quorum(&not_leader);
    assert_eq!(quorum, Err("NotLeaderOrFollower (error 6)".to_string()));
    let status = assemble_status(&cluster(), false, quorum);
    assert_eq!(
        status.controller_id, 2,
        "DescribeCluster's controller when no quorum"
    );
    assert!(
        status
            .nodes
            .iter()
            .all(|n| n.role == Role::Broker && n.fenced.is_none())
    );
    let text = render_status(&status);
    assert!(
        text.contains("Quorum: not described (NotLeaderOrFollower (error 6))\n"),
        "{text}"
    );
    assert!(
        text.ends_with("Fenced brokers: unknown (the broker does not serve DescribeCluster v2)\n")
    );
}

#[test]
fn quorum_errors_at_the_top_or_a_missing_partition_are_reported() {
    let top = DescribeQuorumResponse::default()
        .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
        .with_error_message(Some(s("denied")));
    assert_eq!(
        summarize_quorum(&top),
        Err("ClusterAuthorizationFailed (error 31): denied".to_string())
    );
    let empty = DescribeQuorumResponse::default();
    assert!(summarize_quorum(&empty).is_err());
}

#[test]
fn commit_index_is_one_below_the_high_watermark() {
    let mut q = summarize_quorum(&quorum()).unwrap();
    assert_eq!(q.commit_index(), Some(41));
    q.high_watermark = -1;
    assert_eq!(q.commit_index(), None);
    q.high_watermark = 0;
    assert_eq!(q.commit_index(), None);
}

#[test]
fn status_json_carries_the_quorum_and_nodes() {
    let status = assemble_status(&cluster(), true, summarize_quorum(&quorum()));
    let json = status_json(&status);
    assert_eq!(json["controller_id"], 1);
    assert_eq!(json["quorum"]["commit_index"], 41);
    assert_eq!(json["nodes"][3]["role"], "learner");
    assert_eq!(json["nodes"][2]["fenced"], true);
    let failed = assemble_status(&cluster(), true, Err("why".into()));
    assert_eq!(status_json(&failed)["quorum"]["error"], "why");
}

fn partition(index: i32, leader: i32, replicas: &[i32], isr: &[i32]) -> MetadataResponsePartition {
    MetadataResponsePartition::default()
        .with_partition_index(index)
        .with_leader_id(BrokerId(leader))
        .with_replica_nodes(replicas.iter().map(|&b| BrokerId(b)).collect())
        .with_isr_nodes(isr.iter().map(|&b| BrokerId(b)).collect())
}

fn topic(name: &str, partitions: Vec<MetadataResponsePartition>) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(s(name))))
        .with_partitions(partitions)
}

#[test]
fn leaders_are_sorted_and_aligned() {
    let metadata = MetadataResponse::default().with_topics(vec![
        topic(
            "orders",
            vec![
                partition(1, 2, &[2, 3, 1], &[2, 3]),
                partition(0, 1, &[1, 2, 3], &[1, 2, 3]).with_leader_epoch(4),
            ],
        ),
        topic("a", vec![partition(0, -1, &[3], &[])]),
    ]);
    let mut rows = leaders_from_metadata(&metadata).unwrap();
    let ends = crate::client::replica_lag::LogEnds::from([
        (("orders".to_string(), 0, 1), 100),
        (("orders".to_string(), 0, 2), 100),
        (("orders".to_string(), 0, 3), 60),
        (("orders".to_string(), 1, 2), 7),
        (("orders".to_string(), 1, 3), 7),
    ]);
    crate::client::replica_lag::fill_lag(&mut rows, &ends);
    let expected = "\
TOPIC   PARTITION  LEADER  EPOCH  REPLICAS  ISR    LAG
a       0          -       -      3                3:?
orders  0          1       4      1,2,3     1,2,3  2:0,3:40
orders  1          2       -      2,3,1     2,3    3:0,1:?
";
    assert_eq!(render_leaders(&rows), expected);
    let json = leaders_json(&rows);
    assert_eq!(json[2]["isr"], serde_json::json!([2, 3]));
    assert_eq!(json[0]["leader"], -1);
    assert_eq!(json[1]["lag"]["3"], 40);
}

#[test]
fn a_topic_error_in_metadata_is_an_error_naming_the_topic() {
    let metadata = MetadataResponse::default().with_topics(vec![
        topic("gone", vec![]).with_error_code(ResponseError::UnknownTopicOrPartition.code()),
    ]);
    let err = leaders_from_metadata(&metadata).unwrap_err();
    assert!(
        err.starts_with("topic gone: UnknownTopicOrPartition"),
        "{err}"
    );
}

#[test]
fn table_pads_all_but_the_last_column() {
    let rows = vec![vec!["long-cell".to_string(), "x".to_string()]];
    assert_eq!(table(&["A", "B"], &rows), "A          B\nlong-cell  x\n");
    assert_eq!(table(&["A"], &[]), "A\n");
}
