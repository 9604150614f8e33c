//! Exact answers that real clients' own suites check (issue 9, item 15), over raw frames built
//! from kafka-protocol types: null error messages on success, LEADER_NOT_AVAILABLE for the
//! Metadata request that auto-creates a topic, and every authorized operation reported when a
//! client asks (this node has no authorizer).

mod common;

use common::{Broker, call, s};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreateTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest, FindCoordinatorRequest,
    IncrementalAlterConfigsRequest, MetadataRequest, TopicName,
};

/// Kafka's AclOperation bit sets with no authorizer: every operation a topic / the cluster
/// supports (READ..ALTER_CONFIGS without CLUSTER_ACTION; CREATE, ALTER, DESCRIBE,
/// CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE).
const TOPIC_OPERATIONS_ALL: i32 = 3576;
const CLUSTER_OPERATIONS_ALL: i32 = 8096;
const NOT_REQUESTED: i32 = i32::MIN;
const LEADER_NOT_AVAILABLE: i16 = 5;
const RESOURCE_TOPIC: i8 = 2;

fn create_topic(addr: &str, name: &str) {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(s(name)))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]);
    let response = call(addr, &request, 7);
    assert_eq!(response.topics[0].error_code, 0);
    // Kafka sends null on success; the type's default (and what bramble sent) is "".
    assert_eq!(response.topics[0].error_message, None);
}

#[test]
fn success_answers_carry_null_error_messages() {
    let broker = Broker::start();
    let addr = broker.addr();
    create_topic(&addr, "exact");

    for version in [1, 3] {
        let request = FindCoordinatorRequest::default().with_key(s("g"));
        let response = call(&addr, &request, version);
        assert_eq!(response.error_code, 0);
        assert_eq!(response.error_message, None, "FindCoordinator v{version}");
    }
    let request = FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g")]);
    let response = call(&addr, &request, 6);
    assert_eq!(response.coordinators[0].error_code, 0);
    assert_eq!(response.coordinators[0].error_message, None);

    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(s("exact")),
    ]);
    let response = call(&addr, &request, 4);
    assert_eq!(response.results[0].error_code, 0);
    assert_eq!(response.results[0].error_message, None);

    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(s("exact"))
            .with_configs(vec![
                AlterableConfig::default()
                    .with_name(s("retention.ms"))
                    .with_value(Some(s("1000"))),
            ]),
    ]);
    let response = call(&addr, &request, 1);
    assert_eq!(response.responses[0].error_code, 0);
    assert_eq!(response.responses[0].error_message, None);
}

fn metadata_for(topic: &str) -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(s(topic)))),
        ]))
        .with_allow_auto_topic_creation(true)
}

#[test]
fn metadata_that_auto_creates_answers_leader_not_available_first() {
    let broker = Broker::start();
    let addr = broker.addr();
    let first = call(&addr, &metadata_for("auto"), 12);
    assert_eq!(first.topics[0].error_code, LEADER_NOT_AVAILABLE);
    assert!(first.topics[0].partitions.is_empty());
    let second = call(&addr, &metadata_for("auto"), 12);
    assert_eq!(second.topics[0].error_code, 0);
    assert_eq!(second.topics[0].partitions.len(), 1);
}

#[test]
fn authorized_operations_are_all_when_asked() {
    let broker = Broker::start();
    let addr = broker.addr();
    // Created by auto-creation, so this test depends on nothing but authorized operations.
    call(&addr, &metadata_for("ops"), 10);

    let asked = metadata_for("ops")
        .with_include_topic_authorized_operations(true)
        .with_include_cluster_authorized_operations(true);
    let response = call(&addr, &asked, 10);
    assert_eq!(
        response.topics[0].topic_authorized_operations,
        TOPIC_OPERATIONS_ALL
    );
    assert_eq!(
        response.cluster_authorized_operations,
        CLUSTER_OPERATIONS_ALL
    );
    let response = call(&addr, &metadata_for("ops"), 10);
    assert_eq!(
        response.topics[0].topic_authorized_operations,
        NOT_REQUESTED
    );
    assert_eq!(response.cluster_authorized_operations, NOT_REQUESTED);

    let asked = DescribeClusterRequest::default().with_include_cluster_authorized_operations(true);
    let response = call(&addr, &asked, 1);
    assert_eq!(
        response.cluster_authorized_operations,
        CLUSTER_OPERATIONS_ALL
    );
    let response = call(&addr, &DescribeClusterRequest::default(), 1);
    assert_eq!(response.cluster_authorized_operations, NOT_REQUESTED);
}
