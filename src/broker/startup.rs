//! broker::startup: what the node makes of its data directory when it opens — topic metadata
//! files, partition directories (`broker::dirs`) and what a stop or a damaged file left behind.
//!
//! The rule it keeps: a directory that holds records is never removed unless this node deleted
//! its topic (DeleteTopics marked it `-delete` first). So:
//! - a deletion cut short (directories marked, metadata file still there) is finished;
//! - a topic whose metadata file is missing or unreadable is **recovered** from its partition
//!   directories (topic id from `partition.metadata`, partition count from the directories,
//!   configs reset to the defaults, with a loud warning), rather than refused: on a Pi nobody may
//!   be watching, and a topic that keeps serving its records (and can have its configs set again)
//!   is what its user wants; the unreadable file is kept aside as `<name>.toml.corrupt`;
//! - partition directories with no records and no metadata (a CreateTopics cut by a stop before
//!   its metadata file was written) are removed, with a log line;
//! - directories that contradict the metadata (another topic id) are left in place and their
//!   topic is refused with a clear error (`Broker::refused`), for an operator to decide.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::{Broker, BrokerError, TopicMeta, dirs, topic};

impl Broker {
    /// Loads every topic from the data directory (see the module doc for what is recovered).
    pub(super) fn load_topics(&self) -> Result<(), BrokerError> {
        let io = |source| BrokerError::DataDir {
            path: self.data_dir.clone(),
            source,
        };
        let mut scan = dirs::scan(&self.data_dir).map_err(io)?;
        let mut metas = BTreeMap::new();
        let mut set_aside = BTreeMap::new();
        for meta in topic::read_all_meta(&self.data_dir).map_err(io)? {
            match meta {
                Ok(m) => {
                    metas.insert(m.name.clone(), m);
                }
                Err((path, why)) => {
                    let kept = topic::set_aside_meta(&path).map_err(io)?;
                    tracing::error!(path = %path.display(), kept = %kept.display(), %why, "unreadable topic metadata set aside; the topic is recovered from its partition directories");
                    if let Some(name) = path.file_stem().and_then(|s| s.to_str()) {
                        set_aside.insert(name.to_string(), kept);
                    }
                }
            }
        }
        self.finish_deletions(&mut scan, &mut metas).map_err(io)?;
        for (name, meta) in metas {
            let found = scan.partitions.remove(&name).unwrap_or_default();
            self.load_topic(meta, found)?;
        }
        for (name, found) in std::mem::take(&mut scan.partitions) {
            self.load_orphans(&name, found, set_aside.get(&name))?;
        }
        Ok(())
    }

    /// Removes what DeleteTopics marked. A topic whose metadata file survived a marked directory
    /// was being deleted when the node stopped: the marking is the commit point, so its deletion
    /// is finished (its other directories marked, its metadata file removed).
    fn finish_deletions(
        &self,
        scan: &mut dirs::Scan,
        metas: &mut BTreeMap<String, TopicMeta>,
    ) -> std::io::Result<()> {
        let ids: BTreeSet<Uuid> = scan.deleting.iter().map(|(_, id)| *id).collect();
        let cut: Vec<TopicMeta> = metas
            .values()
            .filter(|m| ids.contains(&m.id))
            .cloned()
            .collect();
        for meta in cut {
            let found = scan.partitions.remove(&meta.name).unwrap_or_default();
            let mut kept = BTreeMap::new();
            for (p, dir) in found {
                // Only directories of this topic id (or from before ids were written) go.
                if matches!(dirs::read_topic_id(&dir), Ok(Some(id)) if id != meta.id) {
                    kept.insert(p, dir);
                    continue;
                }
                let to = dirs::delete_dir(&self.data_dir, &meta.name, p, meta.id);
                std::fs::rename(&dir, &to)?;
                scan.deleting.push((to, meta.id));
            }
            if !kept.is_empty() {
                scan.partitions.insert(meta.name.clone(), kept);
            }
            dirs::sync_dir(&self.data_dir)?;
            topic::remove_meta(&self.data_dir, &meta.name)?;
            metas.remove(&meta.name);
            tracing::warn!(topic = %meta.name, topic_id = %meta.id, "finished deleting a topic whose deletion a stop cut short");
        }
        for (dir, id) in std::mem::take(&mut scan.deleting) {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), topic_id = %id, "removed partition directory of a deleted topic")
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove partition directory of a deleted topic")
                }
            }
        }
        Ok(())
    }

    /// Opens a topic that has a metadata file. Directories past its partition count (a
    /// CreatePartitions cut before its metadata file was rewritten) are adopted if they hold
    /// records and removed if not; a directory of another topic id refuses the topic.
    fn load_topic(
        &self,
        mut meta: TopicMeta,
        found: BTreeMap<i32, PathBuf>,
    ) -> Result<(), BrokerError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BrokerError::DataDir { path, source }
        };
        let mut count = meta.partitions;
        for (&p, dir) in &found {
            match dirs::read_topic_id(dir) {
                Ok(Some(id)) if id != meta.id && p < meta.partitions => {
                    self.refuse(
                        &meta.name,
                        format!(
                            "partition directory {} belongs to topic id {id}, but the metadata of topic {} says {}; topic not served and nothing removed: move the directory away (or the metadata file, to recover the topic from its directories) and restart",
                            dir.display(),
                            meta.name,
                            meta.id
                        ),
                    );
                    return Ok(());
                }
                Ok(Some(id)) if id != meta.id => {
                    tracing::error!(dir = %dir.display(), topic_id = %id, "partition directory of another topic id past the topic's partitions; left in place, not served");
                }
                _ if p < meta.partitions => {}
                _ if dirs::holds_records(dir).map_err(io(dir))? => {
                    count = count.max(p.saturating_add(1));
                    tracing::warn!(dir = %dir.display(), "partition directory past the topic's metadata holds records (a partition growth cut short); adopting it");
                }
                _ => {
                    std::fs::remove_dir_all(dir).map_err(io(dir))?;
                    tracing::info!(dir = %dir.display(), "removed empty partition directory of a partition growth cut short");
                }
            }
        }
        if count > meta.partitions {
            meta.partitions = count;
            topic::write_meta(&self.data_dir, &meta).map_err(io(&self.data_dir))?;
        }
        for p in (0..meta.partitions).filter(|p| !found.contains_key(p)) {
            tracing::warn!(topic = %meta.name, partition = p, "partition directory missing; the partition starts empty");
        }
        let t = self.open_topic(&meta)?;
        tracing::info!(topic = %meta.name, partitions = meta.partitions, "loaded topic");
        self.write_topics().insert(meta.name.clone(), t);
        Ok(())
    }

    /// Partition directories with no metadata file: removed if none holds a record (a creation
    /// cut short), otherwise the topic is recovered from them.
    fn load_orphans(
        &self,
        name: &str,
        found: BTreeMap<i32, PathBuf>,
        set_aside: Option<&PathBuf>,
    ) -> Result<(), BrokerError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BrokerError::DataDir { path, source }
        };
        let mut used = false;
        for dir in found.values() {
            used |= dirs::holds_records(dir).map_err(io(dir))?;
        }
        if !used && set_aside.is_none() {
            for dir in found.values() {
                std::fs::remove_dir_all(dir).map_err(io(dir))?;
            }
            tracing::info!(
                topic = name,
                directories = found.len(),
                "removed empty partition directories of a topic whose creation was cut short (no metadata, no records)"
            );
            return Ok(());
        }
        let ids: BTreeSet<Uuid> = found
            .values()
            .filter_map(|d| dirs::read_topic_id(d).ok().flatten())
            .collect();
        if ids.len() > 1 {
            self.refuse(name, format!("the partition directories of topic {name} belong to {} different topic ids and no metadata file says which is current; topic not served and nothing removed: move the stale directories away and restart", ids.len()));
            return Ok(());
        }
        let id = ids.first().copied().unwrap_or_else(Uuid::new_v4);
        let partitions = found.keys().last().map_or(1, |p| p.saturating_add(1));
        let meta = TopicMeta {
            name: name.to_string(),
            id,
            partitions,
            replication_factor: self.broker_count(),
            configs: topic::internal_topic_configs(name),
        };
        topic::write_meta(&self.data_dir, &meta).map_err(io(&self.data_dir))?;
        let why = match set_aside {
            Some(kept) => format!("unreadable (kept as {})", kept.display()),
            None => "missing".to_string(),
        };
        tracing::warn!(topic = name, topic_id = %id, partitions, "RECOVERED topic metadata from its partition directories: the metadata file was {why}; the topic's configs were RESET to the node defaults (set them again with IncrementalAlterConfigs if they differed)");
        self.load_topic(meta, found)
    }

    /// Marks a topic name as not served: its directories stay as they are, CreateTopics of the
    /// name is refused with `why` until an operator sorts the directories out and restarts.
    fn refuse(&self, name: &str, why: String) {
        tracing::error!(topic = name, "{why}");
        self.refused
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), why);
    }

    /// Why topic `name` is not served, if start-up refused it.
    pub fn refused(&self, name: &str) -> Option<String> {
        self.refused
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }
}
