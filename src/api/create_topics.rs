//! api::create_topics (key 19): create topics with a partition count, replication factor and
//! configs, or validate the request only.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, RequestHeader};

use super::{str_bytes, topic_error};
use crate::broker::Broker;

/// CreateTopics v5 started returning the created topic's configs.
const CONFIGS_VERSION_MIN: i16 = 5;
/// Kafka's DescribeConfigs/CreateTopics config sources.
pub const SOURCE_DYNAMIC_TOPIC: i8 = 1;
pub const SOURCE_DEFAULT: i8 = 5;

pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let version = header.request_api_version;
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = request
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.to_string()))
        .map(|t| t.name.to_string())
        .collect();
    let mut results = Vec::with_capacity(request.topics.len());
    let deadline = super::admin_deadline(request.timeout_ms);
    for t in request.topics {
        // Kafka sends a null error message on success (the type's default is "").
        let result = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_error_message(None);
        if duplicates.contains(t.name.as_str()) {
            results.push(
                result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(
                        "topic named more than once in one request",
                    ))),
            );
            continue;
        }
        let created = create_one(broker, version, t, request.validate_only, result, deadline);
        results.push(created.await);
    }
    CreateTopicsResponse::default().with_topics(results)
}

async fn create_one(
    broker: &Broker,
    version: i16,
    t: CreatableTopic,
    validate_only: bool,
    result: CreatableTopicResult,
    deadline: Option<tokio::time::Instant>,
) -> CreatableTopicResult {
    let (partitions, replication_factor) = match explicit_assignment(broker, &t) {
        Ok(shape) => shape,
        Err(message) => {
            return result
                .with_error_code(ResponseError::InvalidReplicaAssignment.code())
                .with_error_message(Some(str_bytes(message)));
        }
    };
    let mut configs = BTreeMap::new();
    for c in &t.configs {
        let Some(v) = &c.value else {
            return result
                .with_error_code(ResponseError::InvalidConfig.code())
                .with_error_message(Some(str_bytes(format!(
                    "config {} has no value",
                    c.name.as_str()
                ))));
        };
        configs.insert(c.name.to_string(), v.to_string());
    }
    let create = broker.create_topic(
        &t.name,
        partitions,
        replication_factor,
        configs,
        validate_only,
    );
    match super::within(deadline, create).await {
        Ok(created) => {
            let mut result = result
                .with_topic_id(created.id)
                .with_num_partitions(if validate_only {
                    requested_or_default(broker, partitions)
                } else {
                    created.partition_count()
                })
                .with_replication_factor(created.replication_factor);
            if version >= CONFIGS_VERSION_MIN {
                result = result.with_configs(Some(config_list(broker, &created.configs())));
            }
            result
        }
        Err(e) => {
            let (code, message) = topic_error(&e);
            result
                .with_error_code(code)
                .with_error_message(message)
                .with_num_partitions(-1)
                .with_replication_factor(-1)
        }
    }
}

fn requested_or_default(broker: &Broker, partitions: i32) -> i32 {
    if partitions == -1 {
        broker.config.num_partitions
    } else {
        partitions
    }
}

/// A manual assignment fixes the partition count and replication factor; it may only name this node.
fn explicit_assignment(broker: &Broker, t: &CreatableTopic) -> Result<(i32, i16), String> {
    if t.assignments.is_empty() {
        return Ok((t.num_partitions, t.replication_factor));
    }
    if t.num_partitions != -1 || t.replication_factor != -1 {
        return Err(
            "with a manual assignment, partition count and replication factor must be -1".into(),
        );
    }
    let node = broker.identity.node_id;
    let mut rf = None;
    for a in &t.assignments {
        if a.broker_ids.iter().any(|b| b.0 != node) {
            return Err(format!("assignment names a broker other than node {node}"));
        }
        let this = a.broker_ids.len() as i16;
        if *rf.get_or_insert(this) != this {
            return Err("every partition must have the same number of replicas".into());
        }
    }
    Ok((t.assignments.len() as i32, rf.unwrap_or(1)))
}

fn config_list(broker: &Broker, explicit: &BTreeMap<String, String>) -> Vec<CreatableTopicConfigs> {
    super::describe_configs::topic_configs(broker, explicit)
        .into_iter()
        .map(|(name, value, is_default)| {
            CreatableTopicConfigs::default()
                .with_name(str_bytes(name))
                .with_value(Some(str_bytes(value)))
                .with_config_source(if is_default {
                    SOURCE_DEFAULT
                } else {
                    SOURCE_DYNAMIC_TOPIC
                })
        })
        .collect()
}
