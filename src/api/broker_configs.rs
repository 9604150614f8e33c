//! api::broker_configs: the BROKER resource of DescribeConfigs, IncrementalAlterConfigs and
//! AlterConfigs. Lists this node's settings under Kafka's names (static ones read-only with
//! source STATIC_BROKER_CONFIG, the dynamic ones of `broker::dynamic` alterable) and alters the
//! dynamic ones; any other setting answers Kafka's INVALID_REQUEST "Cannot update these configs
//! dynamically".

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;

use super::create_topics::SOURCE_DEFAULT;
use super::describe_configs::{
    SOURCE_DYNAMIC_BROKER, TYPE_BOOLEAN, TYPE_INT, TYPE_LIST, TYPE_LONG, TYPE_STRING, entry,
};
use super::incremental_alter_configs::{Refusal, refuse};
use crate::broker::dynamic::{BrokerConfigError, DYNAMIC_BROKER_CONFIGS};
use crate::broker::{Broker, ConfigOp};

/// Kafka's ConfigSource for a static broker setting.
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
        .alter_broker_configs(ops, validate_only, name.is_empty())
        .await
        .map_err(|e| match e {
            BrokerConfigError::Storage(_) => {
                refuse(ResponseError::KafkaStorageError, e.to_string())
            }
            BrokerConfigError::Unavailable(_) => {
                refuse(ResponseError::RequestTimedOut, e.to_string())
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
    let (host, port) = (&broker.advertised.host, broker.advertised.port);
    // (Kafka name, value, type) of the node's settings, all read at start; one line each, as a
    // table reads better than wrapped tuples.
    #[rustfmt::skip]
    let settings = [
        ("broker.id", broker.identity.node_id.to_string(), TYPE_INT),
        ("node.id", broker.identity.node_id.to_string(), TYPE_INT),
        ("listeners", format!("PLAINTEXT://{}", c.listen), TYPE_LIST),
        ("advertised.listeners", format!("PLAINTEXT://{host}:{port}"), TYPE_LIST),
        ("auto.create.topics.enable", c.auto_create_topics.to_string(), TYPE_BOOLEAN),
        ("num.partitions", c.num_partitions.to_string(), TYPE_INT),
        ("default.replication.factor", c.default_replication_factor.to_string(), TYPE_INT),
        ("socket.request.max.bytes", c.frame_bytes_max.to_string(), TYPE_INT),
        ("max.connections", c.connections_max.to_string(), TYPE_INT),
        ("queued.max.request.bytes", c.inflight_bytes_max.to_string(), TYPE_LONG),
        ("connections.max.idle.ms", c.connection_idle_ms_max.to_string(), TYPE_LONG),
        ("fetch.max.bytes", c.fetch_bytes_max.to_string(), TYPE_INT),
        ("log.dirs", c.data_dir.display().to_string(), TYPE_STRING),
        ("log.flush.interval.ms", c.flush_ms_max.to_string(), TYPE_LONG),
        ("log.retention.check.interval.ms", c.retention_check_ms.to_string(), TYPE_LONG),
        ("log.cleaner.backoff.ms", c.compaction_check_ms.to_string(), TYPE_LONG),
        ("log.message.timestamp.type", c.message_timestamp_type.as_str().to_string(), TYPE_STRING),
        ("offsets.topic.num.partitions", c.offsets_topic_num_partitions.to_string(), TYPE_INT),
        ("group.min.session.timeout.ms", c.group_min_session_timeout_ms.to_string(), TYPE_INT),
        ("group.max.session.timeout.ms", c.group_max_session_timeout_ms.to_string(), TYPE_INT),
        ("group.initial.rebalance.delay.ms", c.group_initial_rebalance_delay_ms.to_string(), TYPE_INT),
        // bramble's own: the disk writer backend in use (uring or std; see io::backend).
        ("bramble.io.backend", c.io_backend.to_string(), TYPE_STRING),
        // The board profile and medium the node runs as (see board), or none.
        ("bramble.board", c.board.clone().unwrap_or_else(|| "none".into()), TYPE_STRING),
        // Not a setting: a live counter, read by `bramble bench produce` before and after a run.
        ("bramble.fsyncs", crate::io::fsyncs().to_string(), TYPE_LONG),
        // Not a setting: damage found in partitions' files (gaps, corrupt batches; see
        // log::damage), shown by `bramble status`.
        ("bramble.storage.damage", storage_damage(broker), TYPE_STRING),
    ];
    // Kafka settings this node does not change: Kafka's defaults, read-only.
    let fixed = [
        ("compression.type", "producer", TYPE_STRING),
        ("log.cleanup.policy", "delete", TYPE_LIST),
        ("min.insync.replicas", "1", TYPE_INT),
        ("unclean.leader.election.enable", "false", TYPE_BOOLEAN),
        ("process.roles", "broker,controller", TYPE_LIST),
    ];
    let rack = match &c.rack {
        Some(rack) => entry(
            "broker.rack",
            rack.clone(),
            SOURCE_STATIC_BROKER,
            TYPE_STRING,
            true,
        ),
        // Unset: Kafka lists it with a null value.
        None => entry(
            "broker.rack",
            String::new(),
            SOURCE_DEFAULT,
            TYPE_STRING,
            true,
        )
        .with_value(None),
    };
    settings
        .into_iter()
        .map(|(name, value, ty)| entry(name, value, SOURCE_STATIC_BROKER, ty, true))
        .chain(
            fixed
                .into_iter()
                .map(|(name, value, ty)| entry(name, value.into(), SOURCE_DEFAULT, ty, true)),
        )
        .chain(std::iter::once(rack))
        .collect()
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
