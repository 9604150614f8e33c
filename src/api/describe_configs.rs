//! api::describe_configs (key 32): topic configs (effective values, and which are defaults) and
//! this broker's static settings.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse, RequestHeader};

use super::create_topics::{SOURCE_DEFAULT, SOURCE_DYNAMIC_TOPIC};
use super::str_bytes;
use crate::broker::{Broker, topic};

/// Kafka's ConfigResource types.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
const SOURCE_STATIC_BROKER: i8 = 4;
/// Kafka's ConfigType values (DescribeConfigs v3+).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const TYPE_LIST: i8 = 7;

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
        .with_resource_name(r.resource_name.clone());
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
        RESOURCE_BROKER
            if r.resource_name.is_empty()
                || *r.resource_name == *broker.identity.node_id.to_string() =>
        {
            broker_entries(broker)
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

fn topic_entries(
    broker: &Broker,
    explicit: &std::collections::BTreeMap<String, String>,
) -> Vec<DescribeConfigsResourceResult> {
    topic::effective_configs(&broker.config.log_defaults(), explicit)
        .into_iter()
        .map(|(name, value, is_default)| {
            let config_type = match name.as_str() {
                "cleanup.policy" => TYPE_LIST,
                "compression.type" | "message.timestamp.type" => TYPE_STRING,
                "unclean.leader.election.enable" | "preallocate" | "bramble.fsync.on.ack" => {
                    TYPE_BOOLEAN
                }
                "min.cleanable.dirty.ratio" => TYPE_DOUBLE,
                "max.message.bytes"
                | "segment.bytes"
                | "index.interval.bytes"
                | "min.insync.replicas"
                | "segment.index.bytes" => TYPE_INT,
                _ => TYPE_LONG,
            };
            entry(
                &name,
                value,
                if is_default {
                    SOURCE_DEFAULT
                } else {
                    SOURCE_DYNAMIC_TOPIC
                },
                config_type,
                false,
            )
        })
        .collect()
}

fn broker_entries(broker: &Broker) -> Vec<DescribeConfigsResourceResult> {
    let c = &broker.config;
    let s = SOURCE_STATIC_BROKER;
    vec![
        entry("broker.id", c.node_id.to_string(), s, TYPE_INT, true),
        entry(
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            s,
            TYPE_BOOLEAN,
            true,
        ),
        entry(
            "num.partitions",
            c.num_partitions.to_string(),
            s,
            TYPE_INT,
            true,
        ),
        entry(
            "default.replication.factor",
            c.default_replication_factor.to_string(),
            s,
            TYPE_INT,
            true,
        ),
        entry(
            "socket.request.max.bytes",
            c.frame_bytes_max.to_string(),
            s,
            TYPE_INT,
            true,
        ),
        entry(
            "message.max.bytes",
            c.message_bytes_max.to_string(),
            s,
            TYPE_INT,
            true,
        ),
        entry(
            "log.segment.bytes",
            c.segment_bytes.to_string(),
            s,
            TYPE_INT,
            true,
        ),
        entry(
            "log.retention.ms",
            c.retention_ms.to_string(),
            s,
            TYPE_LONG,
            true,
        ),
        entry(
            "log.retention.bytes",
            c.retention_bytes.to_string(),
            s,
            TYPE_LONG,
            true,
        ),
        entry(
            "log.dirs",
            c.data_dir.display().to_string(),
            s,
            TYPE_STRING,
            true,
        ),
        // bramble's own: the disk writer backend in use (uring or std; see io::backend).
        entry(
            "bramble.io.backend",
            c.io_backend.to_string(),
            s,
            TYPE_STRING,
            true,
        ),
        // The board profile and medium the node runs as (see board), or none.
        entry(
            "bramble.board",
            c.board.clone().unwrap_or_else(|| "none".to_string()),
            s,
            TYPE_STRING,
            true,
        ),
        // Not a setting: a live counter, read by `bramble bench produce` before and after a run.
        entry(
            "bramble.fsyncs",
            crate::io::fsyncs().to_string(),
            s,
            TYPE_LONG,
            true,
        ),
        // Not a setting: damage found in partitions' files (gaps, corrupt batches; see
        // log::damage), shown by `bramble status`.
        entry(
            "bramble.storage.damage",
            storage_damage(broker),
            s,
            TYPE_STRING,
            true,
        ),
    ]
}

/// Findings listed in `bramble.storage.damage` (the rest are counted).
const DAMAGE_LISTED_MAX: usize = 8;

/// "none", or how many findings and the first few, each as `topic-partition: what`.
fn storage_damage(broker: &Broker) -> String {
    let mut total = 0u64;
    let mut listed = Vec::new();
    for t in broker.topics() {
        for replica in t.partitions() {
            let damage = replica.log.damage();
            total += damage.total;
            for d in damage.kept {
                if listed.len() < DAMAGE_LISTED_MAX {
                    listed.push(format!("{}-{}: {d}", t.name, replica.index));
                }
            }
        }
    }
    if total == 0 {
        return "none".to_string();
    }
    format!("{total} found: {}", listed.join("; "))
}

fn entry(
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
}
