//! broker::dynamic: the broker settings that can change at run time, as Kafka's dynamic broker
//! configs (IncrementalAlterConfigs / AlterConfigs on the BROKER resource). They are the node-wide
//! log defaults — what a topic without its own override uses — so a change applies to every such
//! partition at once (from its next append, roll or retention pass). Every other setting is read
//! at start only and is refused here.
//!
//! The overrides live in `<data_dir>/meta/broker-configs.toml` (Kafka names, string values),
//! written atomically before they apply, so they survive a restart and win over the config file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Broker, ConfigOp, topic};
use crate::log::LogConfig;

/// Kafka's dynamic broker settings this node acts on, each with the topic config it is the
/// default of.
pub const DYNAMIC_BROKER_CONFIGS: &[(&str, &str)] = &[
    ("log.index.interval.bytes", "index.interval.bytes"),
    ("log.retention.bytes", "retention.bytes"),
    ("log.retention.ms", "retention.ms"),
    ("log.roll.ms", "segment.ms"),
    ("log.segment.bytes", "segment.bytes"),
    ("message.max.bytes", "max.message.bytes"),
    // Read by the controller (meta::quorum) as the cluster default under a topic's own config.
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum BrokerConfigError {
    /// Kafka's own words for a static setting.
    #[error("Cannot update these configs dynamically: {}", .0.join(", "))]
    NotDynamic(Vec<String>),
    #[error("{0}")]
    Invalid(#[from] topic::ConfigValueError),
    #[error("storage: {0}")]
    Storage(#[source] std::io::Error),
    /// The controller could not commit the change in time (retriable).
    #[error("{0}")]
    Unavailable(String),
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("meta").join("broker-configs.toml")
}

/// The stored overrides; none when the file is missing. An unreadable file is logged and the
/// node starts with its static settings (an operator can set them again).
pub(super) fn load(data_dir: &Path) -> BTreeMap<String, String> {
    let path = path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "ignoring unreadable dynamic broker configs");
            return BTreeMap::new();
        }
    };
    match toml::from_str(&text) {
        Ok(map) => map,
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "ignoring corrupt dynamic broker configs");
            BTreeMap::new()
        }
    }
}

/// Temp file, fsync, rename, fsync the directory (as topic metadata).
fn store(data_dir: &Path, configs: &BTreeMap<String, String>) -> std::io::Result<()> {
    use std::io::Write;
    let target = path(data_dir);
    let dir = data_dir.join("meta");
    super::dirs::create_dir_durable(&dir)?;
    let text = toml::to_string(configs).map_err(std::io::Error::other)?;
    let tmp = dir.join("broker-configs.toml.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &target)?;
    std::fs::File::open(&dir)?.sync_all()
}

/// The overrides under their topic config names, as `topic::log_config` reads them.
fn as_topic_configs(dynamic: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    dynamic
        .iter()
        .filter_map(|(k, v)| {
            let (_, topic_key) = DYNAMIC_BROKER_CONFIGS.iter().find(|(b, _)| b == k)?;
            Some((topic_key.to_string(), v.clone()))
        })
        .collect()
}

/// The key an op names (`Clear` names none).
fn op_key(op: &ConfigOp) -> Option<&str> {
    match op {
        ConfigOp::Set(k, _) | ConfigOp::Delete(k) | ConfigOp::Append(k, _) => Some(k),
        ConfigOp::Subtract(k, _) => Some(k),
        ConfigOp::Clear => None,
    }
}

/// The keys among `keys` that cannot change at run time.
fn not_dynamic(keys: impl Iterator<Item = String>) -> Vec<String> {
    keys.filter(|k| !DYNAMIC_BROKER_CONFIGS.iter().any(|(b, _)| b == k))
        .collect()
}

impl Broker {
    /// The log defaults every topic starts from: the node's settings with the dynamic overrides.
    pub fn log_defaults(&self) -> LogConfig {
        let base = self.config.log_defaults();
        let overrides = as_topic_configs(&self.dynamic_configs());
        topic::log_config(&base, &overrides).unwrap_or(base)
    }

    /// The dynamic overrides in force (Kafka names).
    pub fn dynamic_configs(&self) -> BTreeMap<String, String> {
        self.dynamic
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes dynamic broker settings; refuses the whole change if any key is not dynamic or any
    /// value is invalid. Applied to every partition that has no override of its own.
    /// `cluster_wide` (the BROKER resource "") changes the cluster's default, which every node
    /// applies; otherwise this node's own settings. Without a quorum both are this node's.
    pub async fn alter_broker_configs(
        &self,
        ops: Vec<ConfigOp>,
        validate_only: bool,
        cluster_wide: bool,
    ) -> Result<(), BrokerConfigError> {
        if let Some(q) = self.quorum() {
            let q = q.clone();
            return self
                .cluster_alter_broker_configs(&q, ops, validate_only, cluster_wide)
                .await;
        }
        let _admin = self.admin.lock().await;
        let configs = self.checked_dynamic(self.dynamic_configs(), ops)?;
        if validate_only {
            return Ok(());
        }
        super::blocking(|| store(&self.data_dir, &configs)).map_err(BrokerConfigError::Storage)?;
        self.set_dynamic(configs);
        Ok(())
    }

    /// Puts `configs` in force: every partition without its own override follows them.
    pub(super) fn set_dynamic(&self, configs: BTreeMap<String, String>) {
        *self.dynamic.write().unwrap_or_else(|e| e.into_inner()) = configs.clone();
        for t in self.topics() {
            let log_config = self.topic_log_config(&t.configs());
            for replica in t.partitions() {
                replica.log.set_config(log_config.clone());
            }
        }
        tracing::info!(?configs, "dynamic broker configs changed");
    }

    /// Checks one scope's new settings (after `ops`) as the local path does.
    pub(super) fn checked_dynamic(
        &self,
        mut configs: BTreeMap<String, String>,
        ops: Vec<ConfigOp>,
    ) -> Result<BTreeMap<String, String>, BrokerConfigError> {
        let base = self.config.log_defaults();
        // Every op's key, not only the keys left after applying them: a DELETE of a static
        // setting leaves nothing behind, yet Kafka refuses it all the same.
        let named = ops.iter().filter_map(op_key).map(str::to_string);
        let mut refused = not_dynamic(named);
        for op in ops {
            topic::apply_config_op(&base, &mut configs, op);
        }
        refused.extend(not_dynamic(configs.keys().cloned()));
        if !refused.is_empty() {
            refused.sort();
            refused.dedup();
            return Err(BrokerConfigError::NotDynamic(refused));
        }
        topic::log_config(&base, &as_topic_configs(&configs))?;
        Ok(configs)
    }

    /// What this node runs with in a cluster: the cluster's default, then its own file of the
    /// single-node release (this broker's settings, as Kafka ranks per-broker over default), then
    /// its own settings in the image, each over the one before.
    pub(super) fn merged_dynamic(
        &self,
        image: &crate::meta::image::MetadataImage,
    ) -> BTreeMap<String, String> {
        let scope = |id| image.broker_configs.get(&id).cloned().unwrap_or_default();
        let mut merged = scope(crate::meta::image::CLUSTER_DEFAULT);
        merged.extend(load(&self.data_dir));
        merged.extend(scope(self.identity.node_id));
        merged
    }
}
