//! client::admin: topic administration over the Kafka protocol, as `kafka-topics` does it. The
//! CLI prints what these return.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, MetadataRequest,
    MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::{Client, ClientError};

/// Versions the admin commands speak (Kafka 4.0 brokers, bramble among them, serve all of these).
const CREATE_TOPICS_VERSION: i16 = 7;
const DELETE_TOPICS_VERSION: i16 = 6;
const METADATA_VERSION: i16 = 12;
const DESCRIBE_CONFIGS_VERSION: i16 = 4;
/// How long the broker may take to create or delete a topic.
const ADMIN_TIMEOUT_MS: i32 = 30_000;
const RESOURCE_TOPIC: i8 = 2;

fn check(code: i16, message: Option<&StrBytes>) -> Result<(), ClientError> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(e) => {
            let detail = message
                .map(|m| format!(": {}", m.as_str()))
                .unwrap_or_default();
            Err(ClientError::Broker(format!("{e:?} (error {code}){detail}")))
        }
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub async fn create_topic(
    client: &mut Client,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &BTreeMap<String, String>,
) -> Result<(), ClientError> {
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_value(Some(StrBytes::from_string(v.clone())))
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)
                .with_configs(configs),
        ]);
    let response = client.call(&request, CREATE_TOPICS_VERSION).await?;
    for t in &response.topics {
        check(t.error_code, t.error_message.as_ref())?;
    }
    Ok(())
}

pub async fn delete_topic(client: &mut Client, topic: &str) -> Result<(), ClientError> {
    let request = DeleteTopicsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topics(vec![
            DeleteTopicState::default().with_name(Some(name(topic))),
        ]);
    let response = client.call(&request, DELETE_TOPICS_VERSION).await?;
    for t in &response.responses {
        check(t.error_code, t.error_message.as_ref())?;
    }
    Ok(())
}

/// Metadata for all topics (None) or the named ones, without auto-creating anything.
pub async fn metadata(
    client: &mut Client,
    topics: Option<&[&str]>,
) -> Result<MetadataResponse, ClientError> {
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(name(t))))
                .collect()
        }));
    client.call(&request, METADATA_VERSION).await
}

pub async fn list_topics(client: &mut Client) -> Result<Vec<String>, ClientError> {
    let response = metadata(client, None).await?;
    let mut names: Vec<String> = response
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref())
        .map(|n| n.as_str().to_string())
        .collect();
    names.sort();
    Ok(names)
}

/// One topic as `topic describe` shows it.
#[derive(Debug, Clone)]
pub struct TopicDescription {
    pub name: String,
    pub id: Uuid,
    pub replication_factor: usize,
    /// (partition, leader, replicas, isr)
    pub partitions: Vec<(i32, i32, Vec<i32>, Vec<i32>)>,
    /// Explicitly set (non-default) configs.
    pub configs: Vec<(String, String)>,
}

pub async fn describe_topic(
    client: &mut Client,
    topic: &str,
) -> Result<TopicDescription, ClientError> {
    let response = metadata(client, Some(&[topic])).await?;
    let t = response
        .topics
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::Broker("broker returned no topic".to_string()))?;
    check(t.error_code, None)?;
    let mut partitions: Vec<_> = t
        .partitions
        .iter()
        .map(|p| {
            let ids = |v: &Vec<kafka_protocol::messages::BrokerId>| {
                v.iter().map(|b| b.0).collect::<Vec<_>>()
            };
            (
                p.partition_index,
                p.leader_id.0,
                ids(&p.replica_nodes),
                ids(&p.isr_nodes),
            )
        })
        .collect();
    partitions.sort_by_key(|p| p.0);
    let replication_factor = partitions.first().map(|p| p.2.len()).unwrap_or(0);
    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            // Null asks for every config; an empty list would ask for none.
            .with_configuration_keys(None),
    ]);
    let configs_response = client.call(&request, DESCRIBE_CONFIGS_VERSION).await?;
    let mut configs = Vec::new();
    for r in configs_response.results {
        check(r.error_code, r.error_message.as_ref())?;
        for c in r.configs {
            // Kafka's DEFAULT_CONFIG source is 5; show only what was set on the topic.
            if c.config_source != 5 {
                configs.push((
                    c.name.to_string(),
                    c.value.map(|v| v.to_string()).unwrap_or_default(),
                ));
            }
        }
    }
    Ok(TopicDescription {
        name: topic.to_string(),
        id: t.topic_id,
        replication_factor,
        partitions,
        configs,
    })
}

/// What `bramble status` shows about one broker.
#[derive(Debug, Clone)]
pub struct BrokerStatus {
    pub node_id: i32,
    pub cluster_id: String,
    pub controller_id: i32,
    pub advertised: String,
    /// bramble's own read-only broker entries (`bramble.*`: io backend, fsync count).
    pub configs: Vec<(String, String)>,
    pub topics: usize,
    pub partitions: usize,
}

/// Version of DescribeCluster the status command speaks.
const DESCRIBE_CLUSTER_VERSION: i16 = 1;
const RESOURCE_BROKER: i8 = 4;

pub async fn broker_status(client: &mut Client) -> Result<BrokerStatus, ClientError> {
    use kafka_protocol::messages::DescribeClusterRequest;
    let cluster = client
        .call(
            &DescribeClusterRequest::default().with_endpoint_type(1),
            DESCRIBE_CLUSTER_VERSION,
        )
        .await?;
    check(cluster.error_code, cluster.error_message.as_ref())?;
    // The broker answering; with several, the first listed.
    let me = cluster
        .brokers
        .first()
        .ok_or_else(|| ClientError::Broker("no broker listed".to_string()))?;
    let node_id = me.broker_id.0;
    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_BROKER)
            .with_resource_name(StrBytes::from_string(node_id.to_string()))
            .with_configuration_keys(None),
    ]);
    let mut configs = Vec::new();
    for r in client
        .call(&request, DESCRIBE_CONFIGS_VERSION)
        .await?
        .results
    {
        check(r.error_code, r.error_message.as_ref())?;
        for c in r
            .configs
            .into_iter()
            .filter(|c| c.name.starts_with("bramble."))
        {
            configs.push((
                c.name.to_string(),
                c.value.map(|v| v.to_string()).unwrap_or_default(),
            ));
        }
    }
    let metadata = metadata(client, None).await?;
    Ok(BrokerStatus {
        node_id,
        cluster_id: cluster.cluster_id.to_string(),
        controller_id: cluster.controller_id.0,
        advertised: format!("{}:{}", me.host.as_str(), me.port),
        configs,
        topics: metadata.topics.len(),
        partitions: metadata.topics.iter().map(|t| t.partitions.len()).sum(),
    })
}
