//! broker::startup: what the node makes of its data directory when it opens — topic metadata
//! files, partition directories (`broker::dirs`) and what a stop or a damaged file left behind.
//!
//! The rule it keeps: a directory that holds records is never removed unless this node deleted
//! its topic (DeleteTopics marked it `-delete` first). So:
//! - a deletion cut short (some directories marked) is finished: its metadata file, if it
//!   survived, and every directory tied to the marked topic id, whatever its name;
//! - a topic whose metadata file is missing or unreadable is **recovered** from its partition
//!   directories (topic id and the copy of its configs from `partition.metadata`, partition count
//!   from the directories; with no copy, retention off so nothing is deleted, and a loud error),
//!   rather than refused: on a Pi nobody may be watching, and a topic that keeps serving its
//!   records is what its user wants; the unreadable file is kept aside as `<name>.toml.corrupt`;
//! - partition directories with no records and no metadata (a CreateTopics cut by a stop before
//!   its metadata file was written) are removed, with a log line;
//! - directories that contradict the metadata (another topic id) are left in place and their
//!   topic is refused with a clear error (`Broker::refused`), for an operator to decide.
//!
//! Once the data directory holds a metadata quorum (`meta/raft`), topics come from its image
//! (`broker::cluster`) and only the deletions cut short are finished here. Without one (a
//! single-node release's directory, or `meta/raft` lost), everything above applies and what is
//! loaded is imported when the quorum first forms.

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
        self.finish_deletions(&mut scan, &mut metas);
        if self.quorum_holds_topics() {
            // The metadata quorum's log holds the topics: the registry follows its image once it
            // is applied (`broker::cluster::reconcile` opens what this node hosts); recovering
            // directories here would write topic files the quorum replaced. Deletions cut short
            // are finished above all the same.
            if !scan.partitions.is_empty() {
                tracing::debug!(
                    topics = scan.partitions.len(),
                    "partition directories left for the metadata quorum's image to open"
                );
            }
            return Ok(());
        }
        for (name, meta) in metas {
            let found = scan.partitions.remove(&name).unwrap_or_default();
            self.load_topic(meta, found)?;
        }
        for (name, found) in std::mem::take(&mut scan.partitions) {
            self.load_orphans(&name, found, set_aside.get(&name))?;
        }
        Ok(())
    }

    /// Whether the metadata quorum holds this node's topics: it has run with a quorum
    /// (`meta/raft` holds a store) and no single-node topic files wait to be imported
    /// (`meta/topics` is moved aside once they are; a stop before the import keeps them). Then a
    /// partition directory without a topic file is the quorum's, not a single-node topic whose
    /// file was lost.
    fn quorum_holds_topics(&self) -> bool {
        crate::meta::holds_quorum(&self.data_dir) && !topic::meta_dir(&self.data_dir).exists()
    }

    /// Removes what DeleteTopics marked. The marking is the commit point: a topic whose metadata
    /// file survived a marked directory was being deleted when the node stopped, so its deletion
    /// is finished (its metadata file removed, its other directories removed); so is every
    /// partition directory whose `partition.metadata` carries a marked topic id, whatever its
    /// name, so a deletion that marked only some directories never brings the topic back. Marked
    /// directories are known by their suffix (the topic part of the name may be truncated).
    /// Nothing here stops the node from starting: what cannot be removed is logged loudly.
    fn finish_deletions(&self, scan: &mut dirs::Scan, metas: &mut BTreeMap<String, TopicMeta>) {
        let ids: BTreeSet<Uuid> = scan.deleting.iter().map(|(_, id)| *id).collect();
        let cut: BTreeMap<String, Uuid> = metas
            .values()
            .filter(|m| ids.contains(&m.id))
            .map(|m| (m.name.clone(), m.id))
            .collect();
        // Topic ids whose marked directories stay, so the next start finishes what this one could not.
        let mut failed = BTreeSet::new();
        for (name, id) in &cut {
            metas.remove(name);
            match topic::remove_meta(&self.data_dir, name) {
                Ok(()) => {
                    tracing::warn!(topic = %name, topic_id = %id, "finished deleting a topic whose deletion a stop cut short")
                }
                Err(e) => {
                    tracing::error!(topic = %name, topic_id = %id, error = %e, "could not remove the metadata file of a deleted topic; not served, retried on next start");
                    failed.insert(*id);
                }
            }
        }
        let mut doomed = Vec::new();
        for (name, found) in scan.partitions.iter_mut() {
            found.retain(|&p, dir| {
                let id = match dirs::read_topic_id(dir) {
                    Ok(Some(id)) if ids.contains(&id) => id,
                    // A cut topic's directory of no known id (from before ids were written).
                    Ok(None) | Err(_) if cut.contains_key(name) => cut[name],
                    _ => return true,
                };
                doomed.push((name.clone(), p, dir.clone(), id));
                false
            });
        }
        scan.partitions.retain(|_, found| !found.is_empty());
        // Unmarked directories first: the marked ones are what tells a later start to finish.
        for (name, p, dir, id) in doomed {
            tracing::warn!(dir = %dir.display(), topic_id = %id, "partition directory of a deleted topic left unmarked by a deletion cut short; removing it");
            // Marked first, so a removal cut short is retried by the next start.
            let to = dirs::delete_dir(&self.data_dir, &name, p, id);
            // A directory that cannot be marked is left whole: removing it unmarked could take
            // its partition.metadata before its records, and a later start would then recover
            // the records as a topic. The marked siblings kept below make the next start retry.
            let removed = match std::fs::rename(&dir, &to) {
                Ok(()) => std::fs::remove_dir_all(&to).map_err(|e| (to, e)),
                Err(e) => Err((dir, e)),
            };
            if let Err((dir, e)) = removed {
                tracing::error!(dir = %dir.display(), topic_id = %id, error = %e, "could not remove partition directory of a deleted topic; not served, retried on next start");
                failed.insert(id);
            }
        }
        for (dir, id) in std::mem::take(&mut scan.deleting) {
            if failed.contains(&id) {
                // Kept as the mark that makes the next start retry its unmarked siblings.
                continue;
            }
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), topic_id = %id, "removed partition directory of a deleted topic")
                }
                Err(e) => {
                    tracing::error!(dir = %dir.display(), topic_id = %id, error = %e, "could not remove partition directory of a deleted topic; retried on next start")
                }
            }
        }
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
        let why = match set_aside {
            Some(kept) => format!("unreadable (kept as {})", kept.display()),
            None => "missing".to_string(),
        };
        let meta = TopicMeta {
            name: name.to_string(),
            id,
            partitions,
            replication_factor: self.broker_count(),
            configs: recovered_configs(name, &found, &why),
        };
        topic::write_meta(&self.data_dir, &meta).map_err(io(&self.data_dir))?;
        tracing::warn!(topic = name, topic_id = %id, partitions, configs = ?meta.configs, "RECOVERED topic metadata from its partition directories: the metadata file was {why}");
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

/// The configs of a topic recovered from its partition directories: the copy its
/// `partition.metadata` files keep (the lowest partition's readable one: a config change writes
/// the copies in partition order after the metadata file), else `topic::recovery_configs`,
/// which delete nothing, with a loud error saying what the operator must restore.
fn recovered_configs(
    name: &str,
    found: &BTreeMap<i32, PathBuf>,
    why: &str,
) -> BTreeMap<String, String> {
    let copies: Vec<BTreeMap<String, String>> = found
        .values()
        .filter_map(|dir| dirs::read_partition_meta(dir).ok().flatten()?.configs)
        .collect();
    if let Some(first) = copies.first() {
        if copies.iter().any(|c| c != first) {
            tracing::warn!(
                topic = name,
                "the partition directories keep different copies of the topic's configs (a config change cut short); using the lowest partition's"
            );
        }
        return first.clone();
    }
    let configs = topic::recovery_configs(name);
    tracing::error!(topic = name, configs = ?configs, "the topic's metadata file was {why} and no partition directory keeps a readable copy of its configs: recovered with retention OFF so no record is deleted; restore the topic's real configs (retention.ms, retention.bytes, cleanup.policy, ...) with IncrementalAlterConfigs");
    configs
}
