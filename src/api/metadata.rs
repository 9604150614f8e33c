//! api::metadata (key 3): brokers, controller and topic/partition leaders. Every node answers for
//! the whole cluster; clients then connect to exactly the advertised host:port of each leader.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, MetadataRequest, MetadataResponse, RequestHeader, TopicName,
};
use uuid::Uuid;

use super::{cluster_operations, str_bytes, topic_operations};
use crate::broker::{Broker, Topic, topic};

/// Metadata v8 added authorized operations; v11 dropped the cluster's (DescribeCluster has it).
const AUTHORIZED_OPERATIONS_VERSION_MIN: i16 = 8;
const CLUSTER_OPERATIONS_VERSION_MAX: i16 = 10;

pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: MetadataRequest,
) -> MetadataResponse {
    let version = header.request_api_version;
    // v0 asks for all topics with an empty list; v1+ with a null list.
    let all_topics = match &request.topics {
        None => true,
        Some(t) => version == 0 && t.is_empty(),
    };
    // Auto-creation is always allowed before v4, where the flag did not exist.
    let may_create = version < 4 || request.allow_auto_topic_creation;
    let ops_version = version >= AUTHORIZED_OPERATIONS_VERSION_MIN;
    let topic_ops = topic_operations(ops_version && request.include_topic_authorized_operations);
    let mut topics = Vec::new();
    if all_topics {
        for t in broker.topics() {
            topics.push(describe(broker, &t));
        }
    } else {
        for wanted in request.topics.unwrap_or_default() {
            topics.push(lookup(broker, wanted.name, wanted.topic_id, may_create).await);
        }
    }
    for t in topics.iter_mut().filter(|t| t.error_code == 0) {
        t.topic_authorized_operations = topic_ops;
    }
    let cluster_ops = cluster_operations(
        ops_version
            && version <= CLUSTER_OPERATIONS_VERSION_MAX
            && request.include_cluster_authorized_operations,
    );
    let brokers = broker
        .broker_views(false)
        .into_iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(str_bytes(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(str_bytes))
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(broker.cluster_id())))
        .with_controller_id(BrokerId(broker.controller_id()))
        .with_topics(topics)
        .with_cluster_authorized_operations(cluster_ops)
}

async fn lookup(
    broker: &Broker,
    name: Option<TopicName>,
    id: Uuid,
    may_create: bool,
) -> MetadataResponseTopic {
    let Some(name) = name else {
        return match broker.topic_by_id(id) {
            Some(t) => describe(broker, &t),
            None => MetadataResponseTopic::default()
                .with_topic_id(id)
                .with_error_code(ResponseError::UnknownTopicId.code()),
        };
    };
    let found = match broker.topic(&name) {
        Some(t) => Some(t),
        // Kafka answers the request that auto-creates a topic with LEADER_NOT_AVAILABLE and no
        // partitions (the controller has only just been asked); clients retry and find it led.
        None if may_create && broker.topic_or_auto_create(&name).await.is_some() => {
            return MetadataResponseTopic::default()
                .with_name(Some(name))
                .with_error_code(ResponseError::LeaderNotAvailable.code());
        }
        None => None,
    };
    match found {
        Some(t) => describe(broker, &t),
        None => {
            let err = if topic::validate_name(&name).is_err() {
                ResponseError::InvalidTopicException
            } else {
                ResponseError::UnknownTopicOrPartition
            };
            MetadataResponseTopic::default()
                .with_name(Some(name))
                .with_error_code(err.code())
        }
    }
}

fn describe(broker: &Broker, t: &Topic) -> MetadataResponseTopic {
    let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
    let partitions = broker
        .partition_views(t)
        .into_iter()
        .map(|p| {
            // Kafka flags a partition with no live leader; clients wait and refresh.
            let error = if p.leader < 0 {
                ResponseError::LeaderNotAvailable.code()
            } else {
                0
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(p.index)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(p.replicas))
                .with_isr_nodes(ids(p.isr))
                .with_offline_replicas(ids(p.offline))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(t.name.clone()))))
        .with_topic_id(t.id)
        .with_is_internal(t.is_internal())
        .with_partitions(partitions)
}
