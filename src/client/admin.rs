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

// ---- Consumer groups (`bramble group …`), as `kafka-consumer-groups` does it. ----

/// Versions the group commands speak (Kafka 4.0 brokers, bramble among them, serve these).
const LIST_GROUPS_VERSION: i16 = 4;
const DESCRIBE_GROUPS_VERSION: i16 = 5;
const DELETE_GROUPS_VERSION: i16 = 2;
const OFFSET_FETCH_VERSION: i16 = 7;
const OFFSET_COMMIT_VERSION: i16 = 8;
const LIST_OFFSETS_VERSION: i16 = 7;
/// ListOffsets timestamps meaning "log start" and "log end".
pub const EARLIEST: i64 = -2;
pub const LATEST: i64 = -1;

/// (group id, state, protocol type) of every group.
pub async fn list_groups(
    client: &mut Client,
) -> Result<Vec<(String, String, String)>, ClientError> {
    use kafka_protocol::messages::ListGroupsRequest;
    let response = client
        .call(&ListGroupsRequest::default(), LIST_GROUPS_VERSION)
        .await?;
    check(response.error_code, None)?;
    let mut groups: Vec<_> = response
        .groups
        .into_iter()
        .map(|g| {
            (
                g.group_id.to_string(),
                g.group_state.to_string(),
                g.protocol_type.to_string(),
            )
        })
        .collect();
    groups.sort();
    Ok(groups)
}

/// One member as `group describe` shows it.
#[derive(Debug, Clone)]
pub struct GroupMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    /// (topic, partition) assigned (consumer protocol), empty until the group is Stable.
    pub assignment: Vec<(String, i32)>,
}

/// One partition's committed offset and lag.
#[derive(Debug, Clone)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// -1 when nothing is committed.
    pub committed: i64,
    pub log_end: i64,
    /// log end − committed (log end − log start if nothing committed: everything is unread).
    pub lag: i64,
    pub member_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    pub protocol: String,
    pub members: Vec<GroupMember>,
    pub partitions: Vec<PartitionLag>,
}

/// Topic partitions of a consumer protocol assignment: i16 version, then [topic: str,
/// partitions: [i32]] (user data after it is ignored). Malformed bytes give an empty list.
pub fn assignment_partitions(raw: &[u8]) -> Vec<(String, i32)> {
    fn parse(raw: &[u8]) -> Option<Vec<(String, i32)>> {
        let mut p = raw.get(2..)?;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, rest) = (p.get(..n)?, p.get(n..)?);
            p = rest;
            Some(head)
        };
        let mut out = Vec::new();
        let topics = i32::from_be_bytes(take(4)?.try_into().ok()?);
        for _ in 0..topics.max(0) {
            let len = i16::from_be_bytes(take(2)?.try_into().ok()?);
            let name = String::from_utf8(take(usize::try_from(len).ok()?)?.to_vec()).ok()?;
            let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
            for _ in 0..count.max(0) {
                out.push((name.clone(), i32::from_be_bytes(take(4)?.try_into().ok()?)));
            }
        }
        Some(out)
    }
    parse(raw).unwrap_or_default()
}

/// Committed offsets of a group: (topic, partition) → offset, every partition it committed.
pub async fn committed_offsets(
    client: &mut Client,
    group: &str,
) -> Result<BTreeMap<(String, i32), i64>, ClientError> {
    use kafka_protocol::messages::{GroupId, OffsetFetchRequest};
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(None);
    let response = client.call(&request, OFFSET_FETCH_VERSION).await?;
    check(response.error_code, None)?;
    let mut out = BTreeMap::new();
    for t in response.topics {
        for p in t.partitions {
            check(p.error_code, None)?;
            out.insert((t.name.to_string(), p.partition_index), p.committed_offset);
        }
    }
    Ok(out)
}

/// ListOffsets of every partition of `topic` at `timestamp` (EARLIEST or LATEST).
pub async fn topic_offsets(
    client: &mut Client,
    topic: &str,
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>, ClientError> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{BrokerId, ListOffsetsRequest};
    let described = describe_topic(client, topic).await?;
    let partitions = described
        .partitions
        .iter()
        .map(|(p, ..)| {
            ListOffsetsPartition::default()
                .with_partition_index(*p)
                .with_current_leader_epoch(-1)
                .with_timestamp(timestamp)
        })
        .collect();
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(partitions),
        ]);
    let response = client.call(&request, LIST_OFFSETS_VERSION).await?;
    let mut out = BTreeMap::new();
    for t in response.topics {
        for p in t.partitions {
            check(p.error_code, None)?;
            out.insert(p.partition_index, p.offset);
        }
    }
    Ok(out)
}

pub async fn describe_group(
    client: &mut Client,
    group: &str,
) -> Result<GroupDescription, ClientError> {
    use kafka_protocol::messages::{DescribeGroupsRequest, GroupId};
    let request = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
    let response = client.call(&request, DESCRIBE_GROUPS_VERSION).await?;
    let g = response
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::Broker("broker described no group".to_string()))?;
    check(g.error_code, None)?;
    let members: Vec<GroupMember> = g
        .members
        .iter()
        .map(|m| GroupMember {
            member_id: m.member_id.to_string(),
            instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assignment: assignment_partitions(&m.member_assignment),
        })
        .collect();
    let committed = committed_offsets(client, group).await?;
    let partitions = partition_lags(client, &committed, &members).await?;
    Ok(GroupDescription {
        group: group.to_string(),
        state: g.group_state.to_string(),
        protocol: g.protocol_data.to_string(),
        members,
        partitions,
    })
}

/// Committed offset, log end and lag of every partition the group committed or is assigned.
async fn partition_lags(
    client: &mut Client,
    committed: &BTreeMap<(String, i32), i64>,
    members: &[GroupMember],
) -> Result<Vec<PartitionLag>, ClientError> {
    let mut topics: Vec<String> = committed.keys().map(|(t, _)| t.clone()).collect();
    topics.extend(
        members
            .iter()
            .flat_map(|m| m.assignment.iter().map(|(t, _)| t.clone())),
    );
    topics.sort();
    topics.dedup();
    let mut partitions = Vec::new();
    for topic in topics {
        let ends = topic_offsets(client, &topic, LATEST).await?;
        let starts = topic_offsets(client, &topic, EARLIEST).await?;
        for (&partition, &log_end) in &ends {
            let key = (topic.clone(), partition);
            let owner = members
                .iter()
                .find(|m| m.assignment.contains(&key))
                .map(|m| m.member_id.clone());
            let Some(&c) = committed.get(&key) else {
                if owner.is_none() {
                    continue;
                }
                let start = starts.get(&partition).copied().unwrap_or(0);
                partitions.push(PartitionLag {
                    topic: topic.clone(),
                    partition,
                    committed: -1,
                    log_end,
                    lag: log_end - start,
                    member_id: owner,
                });
                continue;
            };
            let lag = (log_end - c).max(0);
            partitions.push(PartitionLag {
                topic: topic.clone(),
                partition,
                committed: c,
                log_end,
                lag,
                member_id: owner,
            });
        }
    }
    Ok(partitions)
}

pub async fn delete_group(client: &mut Client, group: &str) -> Result<(), ClientError> {
    use kafka_protocol::messages::{DeleteGroupsRequest, GroupId};
    let request = DeleteGroupsRequest::default()
        .with_groups_names(vec![GroupId(StrBytes::from_string(group.to_string()))]);
    let response = client.call(&request, DELETE_GROUPS_VERSION).await?;
    for r in &response.results {
        check(r.error_code, None)?;
    }
    Ok(())
}

/// Where `reset_offsets` moves a group's position.
#[derive(Debug, Clone, Copy)]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
}

/// Commits new offsets for every partition of `topic` as a simple consumer (generation -1), which
/// the coordinator accepts only while the group has no members — as Kafka's tool requires.
/// Returns (partition, new offset).
pub async fn reset_offsets(
    client: &mut Client,
    group: &str,
    topic: &str,
    to: ResetTo,
) -> Result<Vec<(i32, i64)>, ClientError> {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, OffsetCommitRequest};
    let starts = topic_offsets(client, topic, EARLIEST).await?;
    let ends = topic_offsets(client, topic, LATEST).await?;
    let targets: Vec<(i32, i64)> = ends
        .iter()
        .map(|(&p, &end)| {
            let start = starts.get(&p).copied().unwrap_or(0);
            let offset = match to {
                ResetTo::Earliest => start,
                ResetTo::Latest => end,
                // Kafka's tool clamps a target outside the log into it.
                ResetTo::Offset(n) => n.clamp(start, end),
            };
            (p, offset)
        })
        .collect();
    let partitions = targets
        .iter()
        .map(|&(p, offset)| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(p)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(-1)
        })
        .collect();
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(name(topic))
                .with_partitions(partitions),
        ]);
    let response = client.call(&request, OFFSET_COMMIT_VERSION).await?;
    for t in &response.topics {
        for p in &t.partitions {
            if p.error_code == ResponseError::UnknownMemberId.code() {
                return Err(ClientError::Broker(format!(
                    "group {group} has active members; stop them before resetting offsets"
                )));
            }
            check(p.error_code, None)?;
        }
    }
    Ok(targets)
}
