//! api::broker_configs: the BROKER resource of DescribeConfigs, IncrementalAlterConfigs and
//! AlterConfigs. Lists this node's settings under Kafka's names (static ones read-only with
//! source STATIC_BROKER_CONFIG, the dynamic ones of `broker::dynamic` alterable) and alters the
//! dynamic ones; any other setting answers Kafka's INVALID_REQUEST "Cannot update these configs
//! dynamically".

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;

use super::create_topics::SOURCE_DEFAULT;
use super::describe_configs::{TYPE_BOOLEAN, TYPE_INT, TYPE_LIST, TYPE_LONG, TYPE_STRING, entry};
use super::incremental_alter_configs::{Refusal, refuse};
use crate::broker::dynamic::{BrokerConfigError, DYNAMIC_BROKER_CONFIGS};
use crate::broker::{Broker, ConfigOp};

/// Kafka's ConfigSource values for broker settings.
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_STATIC_BROKER: i8 = 4;

/// The BROKER resource names this node answers for: "" (the cluster-wide default) and its id.
pub fn is_this_broker(broker: &Broker, name: &str) -> bool {
    name.is_empty() || name == broker.identity.node_id.to_string()
}

pub async fn alter(
    broker: &Broker,
    name: &str,
    ops: Vec<ConfigOp>,
    validate_only: bool,
) -> Result<(), Refusal> {
    if !is_this_broker(broker, name) {
        return Err(refuse(
            ResponseError::InvalidRequest,
            format!("this is broker {}", broker.identity.node_id),
        ));
    }
    broker
        .alter_broker_configs(ops, validate_only)
        .await
        .map_err(|e| match e {
            BrokerConfigError::Storage(_) => {
                refuse(ResponseError::KafkaStorageError, e.to_string())
            }
            // Kafka answers both a static key and a bad value with INVALID_REQUEST.
            _ => refuse(ResponseError::InvalidRequest, e.to_string()),
        })
}

/// Every setting of this node under its Kafka name.
pub fn entries(broker: &Broker) -> Vec<DescribeConfigsResourceResult> {
    let mut out = static_entries(broker);
    out.extend(dynamic_entries(broker));
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn dynamic_entries(broker: &Broker) -> Vec<DescribeConfigsResourceResult> {
    let defaults = broker.log_defaults();
    let set = broker.dynamic_configs();
    let opt = |v: Option<u64>| v.map_or(-1, |v| v as i64).to_string();
    DYNAMIC_BROKER_CONFIGS
        .iter()
        .map(|&(name, _)| {
            let (value, config_type) = match name {
                "log.index.interval.bytes" => (defaults.index_interval_bytes.to_string(), TYPE_INT),
                "log.retention.bytes" => (opt(defaults.retention_bytes_max), TYPE_LONG),
                "log.retention.ms" => (opt(defaults.retention_ms_max), TYPE_LONG),
                "log.roll.ms" => (defaults.segment_ms_max.to_string(), TYPE_LONG),
                "log.segment.bytes" => (defaults.segment_bytes_max.to_string(), TYPE_INT),
                _ => (defaults.message_bytes_max.to_string(), TYPE_INT),
            };
            let source = if set.contains_key(name) {
                SOURCE_DYNAMIC_BROKER
            } else {
                SOURCE_STATIC_BROKER
            };
            entry(name, value, source, config_type, false)
        })
        .collect()
}

fn static_entries(broker: &Broker) -> Vec<DescribeConfigsResourceResult> {
    let c = &broker.config;
    let advertised = format!(
        "PLAINTEXT://{}:{}",
        broker.advertised.host, broker.advertised.port
    );
    let s = SOURCE_STATIC_BROKER;
    let fixed = |name, value: &str, config_type| {
        // Kafka settings this node does not change: Kafka's default, read-only.
        entry(name, value.to_string(), SOURCE_DEFAULT, config_type, true)
    };
    vec![
        entry("broker.id", c.node_id.to_string(), s, TYPE_INT, true),
        entry("node.id", c.node_id.to_string(), s, TYPE_INT, true),
        entry(
            "listeners",
            format!("PLAINTEXT://{}", c.listen),
            s,
            TYPE_LIST,
            true,
        ),
        entry("advertised.listeners", advertised, s, TYPE_LIST, true),
        match &c.rack {
            Some(rack) => entry("broker.rack", rack.clone(), s, TYPE_STRING, true),
            // Unset: Kafka lists it with a null value.
            None => entry(
                "broker.rack",
                String::new(),
                SOURCE_DEFAULT,
                TYPE_STRING,
                true,
            )
            .with_value(None),
        },
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
            "max.connections",
            c.connections_max.to_string(),
            s,
            TYPE_INT,
            true,
        ),
        entry(
            "queued.max.request.bytes",
            c.inflight_bytes_max.to_string(),
            s,
            TYPE_LONG,
            true,
        ),
        entry(
            "connections.max.idle.ms",
            c.connection_idle_ms_max.to_string(),
            s,
            TYPE_LONG,
            true,
        ),
        entry(
            "fetch.max.bytes",
            c.fetch_bytes_max.to_string(),
            s,
            TYPE_INT,
            true,
        ),
        entry(
            "log.dirs",
            c.data_dir.display().to_string(),
            s,
            TYPE_STRING,
            true,
        ),
        entry(
            "log.flush.interval.ms",
            c.flush_ms_max.to_string(),
            s,
            TYPE_LONG,
            true,
        ),
        entry(
            "log.retention.check.interval.ms",
            c.retention_check_ms.to_string(),
            s,
            TYPE_LONG,
            true,
        ),
        entry(
            "log.cleaner.backoff.ms",
            c.compaction_check_ms.to_string(),
            s,
            TYPE_LONG,
            true,
        ),
        entry(
            "offsets.topic.num.partitions",
            c.offsets_topic_num_partitions.to_string(),
            s,
            TYPE_INT,
            true,
        ),
        entry(
            "group.min.session.timeout.ms",
            c.group_min_session_timeout_ms.to_string(),
            s,
            TYPE_INT,
            true,
        ),
        entry(
            "group.max.session.timeout.ms",
            c.group_max_session_timeout_ms.to_string(),
            s,
            TYPE_INT,
            true,
        ),
        entry(
            "group.initial.rebalance.delay.ms",
            c.group_initial_rebalance_delay_ms.to_string(),
            s,
            TYPE_INT,
            true,
        ),
        fixed("compression.type", "producer", TYPE_STRING),
        fixed("log.cleanup.policy", "delete", TYPE_LIST),
        fixed("log.message.timestamp.type", "CreateTime", TYPE_STRING),
        fixed("min.insync.replicas", "1", TYPE_INT),
        fixed("unclean.leader.election.enable", "false", TYPE_BOOLEAN),
        fixed("process.roles", "broker,controller", TYPE_LIST),
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
    ]
}
