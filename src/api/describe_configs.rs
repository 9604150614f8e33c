//! api::describe_configs (key 32): every topic config Kafka lists (effective values; source
//! TOPIC_CONFIG when overridden, DEFAULT_CONFIG otherwise) and this broker's settings
//! (`broker_configs`).

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse, RequestHeader};

use super::create_topics::{SOURCE_DEFAULT, SOURCE_DYNAMIC_TOPIC};
use super::{broker_configs, str_bytes};
use crate::broker::dynamic::DYNAMIC_BROKER_CONFIGS;
use crate::broker::{Broker, topic};

/// Kafka's ConfigResource types.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource for a value set by a dynamic broker config.
pub const SOURCE_DYNAMIC_BROKER: i8 = 2;
/// Kafka's ConfigType values (DescribeConfigs v3+).
pub const TYPE_BOOLEAN: i8 = 1;
pub const TYPE_STRING: i8 = 2;
pub const TYPE_INT: i8 = 3;
pub const TYPE_LONG: i8 = 5;
pub const TYPE_DOUBLE: i8 = 6;
pub const TYPE_LIST: i8 = 7;

/// Kafka 4.0's topic configs that this node stores but does not act on, with Kafka's defaults:
/// DescribeConfigs lists them like Kafka does, overridden or not.
const KAFKA_TOPIC_DEFAULTS: &[(&str, &str)] = &[
    ("compression.type", "producer"),
    ("file.delete.delay.ms", "60000"),
    ("flush.messages", "9223372036854775807"),
    ("flush.ms", "9223372036854775807"),
    ("follower.replication.throttled.replicas", ""),
    ("leader.replication.throttled.replicas", ""),
    ("local.retention.bytes", "-2"),
    ("local.retention.ms", "-2"),
    ("max.compaction.lag.ms", "9223372036854775807"),
    ("message.timestamp.after.max.ms", "3600000"),
    ("message.timestamp.before.max.ms", "9223372036854775807"),
    ("min.cleanable.dirty.ratio", "0.5"),
    ("min.insync.replicas", "1"),
    ("preallocate", "false"),
    ("remote.log.copy.disable", "false"),
    ("remote.log.delete.on.disable", "false"),
    ("remote.storage.enable", "false"),
    ("segment.index.bytes", "10485760"),
    ("segment.jitter.ms", "0"),
    ("unclean.leader.election.enable", "false"),
];

pub async fn handle(
    broker: &Broker,
    _header: &RequestHeader,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|r| describe(broker, r))
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn describe(
    broker: &Broker,
    r: kafka_protocol::messages::describe_configs_request::DescribeConfigsResource,
) -> DescribeConfigsResult {
    let result = DescribeConfigsResult::default()
        .with_resource_type(r.resource_type)
        .with_resource_name(r.resource_name.clone())
        // Null on success, as Kafka (the type's default is "").
        .with_error_message(None);
    let entries = match r.resource_type {
        RESOURCE_TOPIC => match broker.topic(&r.resource_name) {
            Some(t) => topic_entries(broker, &t.configs()),
            None => {
                return error(
                    result,
                    ResponseError::UnknownTopicOrPartition,
                    format!("unknown topic {}", &*r.resource_name),
                );
            }
        },
        RESOURCE_BROKER if broker_configs::is_this_broker(broker, &r.resource_name) => {
            broker_configs::entries(broker)
        }
        RESOURCE_BROKER => {
            return error(
                result,
                ResponseError::InvalidRequest,
                format!("this is broker {}", broker.identity.node_id),
            );
        }
        other => {
            return error(
                result,
                ResponseError::InvalidRequest,
                format!("unsupported resource type {other}"),
            );
        }
    };
    let wanted = r.configuration_keys;
    let configs = entries
        .into_iter()
        .filter(|e| {
            wanted
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| **k == *e.name))
        })
        .collect();
    result.with_configs(configs)
}

fn error(
    result: DescribeConfigsResult,
    err: ResponseError,
    message: String,
) -> DescribeConfigsResult {
    result
        .with_error_code(err.code())
        .with_error_message(Some(str_bytes(message)))
}

/// (name, effective value, is default) of every topic config Kafka lists, sorted by name: the
/// ones this node acts on, then Kafka's others at their defaults unless overridden.
pub fn topic_configs(
    broker: &Broker,
    explicit: &BTreeMap<String, String>,
) -> Vec<(String, String, bool)> {
    let mut all = topic::effective_configs(&broker.log_defaults(), explicit);
    // Acted on at produce (`api::produce`); without an override the node's setting applies.
    if !all.iter().any(|(n, _, _)| n == "message.timestamp.type") {
        let node = broker.config.message_timestamp_type.as_str();
        all.push(("message.timestamp.type".into(), node.into(), true));
    }
    for (name, value) in KAFKA_TOPIC_DEFAULTS {
        if !all.iter().any(|(n, _, _)| n == name) {
            all.push((name.to_string(), value.to_string(), true));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

fn topic_entries(
    broker: &Broker,
    explicit: &BTreeMap<String, String>,
) -> Vec<DescribeConfigsResourceResult> {
    let dynamic = broker.dynamic_configs();
    // A default that a dynamic broker config sets is reported as such, as Kafka does.
    let dynamic_default = |topic_key: &str| {
        DYNAMIC_BROKER_CONFIGS
            .iter()
            .any(|(b, t)| *t == topic_key && dynamic.contains_key(*b))
    };
    topic_configs(broker, explicit)
        .into_iter()
        .map(|(name, value, is_default)| {
            let config_type = match name.as_str() {
                "cleanup.policy"
                | "follower.replication.throttled.replicas"
                | "leader.replication.throttled.replicas" => TYPE_LIST,
                "compression.type" | "message.timestamp.type" => TYPE_STRING,
                "unclean.leader.election.enable"
                | "preallocate"
                | "bramble.fsync.on.ack"
                | "remote.storage.enable"
                | "remote.log.copy.disable"
                | "remote.log.delete.on.disable" => TYPE_BOOLEAN,
                "min.cleanable.dirty.ratio" => TYPE_DOUBLE,
                "max.message.bytes"
                | "segment.bytes"
                | "index.interval.bytes"
                | "min.insync.replicas"
                | "segment.index.bytes" => TYPE_INT,
                _ => TYPE_LONG,
            };
            let source = match (is_default, dynamic_default(&name)) {
                (false, _) => SOURCE_DYNAMIC_TOPIC,
                (true, true) => SOURCE_DYNAMIC_BROKER,
                (true, false) => SOURCE_DEFAULT,
            };
            entry(&name, value, source, config_type, false)
        })
        .collect()
}

pub fn entry(
    name: &str,
    value: String,
    source: i8,
    config_type: i8,
    read_only: bool,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_config_source(source)
        .with_read_only(read_only)
        .with_config_type(config_type)
        .with_documentation(None)
}
