//! broker::delete: topic deletion on a node without a quorum, and the marking both paths use
//! (each partition directory renamed `<name>-<p>.<id>-delete` first, as Kafka does, so a
//! deletion cut short is finished on the next start, never recovered).

use std::path::PathBuf;

use uuid::Uuid;

use super::{Broker, Topic, TopicError, blocking, dirs, topic};

impl Broker {
    /// Deletes a topic: through the controller in a cluster, else here (directories marked, then
    /// removed once the partitions stopped).
    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, TopicError> {
        let t = self
            .topic(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        // Deleting `__consumer_offsets` would drop every group's committed offsets. Kafka's own
        // tools refuse it ("a kafka internal topic ... not allowed to be marked for deletion").
        if t.is_internal() {
            return Err(TopicError::InvalidRequest(format!(
                "topic {name} is an internal topic and cannot be deleted"
            )));
        }
        if let Some(q) = self.quorum.get() {
            return self.cluster_delete_topic(q, &t).await;
        }
        let _admin = self.admin.lock().await;
        if self.topic(name).is_none_or(|now| now.id != t.id) {
            return Err(TopicError::Unknown(name.to_string()));
        }
        let marked = blocking(|| self.mark_for_deletion(&t))
            .map_err(|e| TopicError::Storage(e.to_string()))?;
        self.write_topics().remove(name);
        for replica in t.partitions() {
            self.replication.unregister(t.id, replica.index);
            // Waits for the partition's queued writes; its directory is already renamed.
            if let Err(e) = replica.log.clone().delete().await {
                tracing::warn!(topic = name, partition = replica.index, error = %e, "could not stop partition");
            }
        }
        blocking(|| {
            // Directories left unmarked (a rename failed) go too: the deletion is committed, and
            // one left behind with no marked sibling would come back as a recovered topic.
            for dir in marked {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove partition data; removed on next start");
                }
            }
        });
        tracing::info!(topic = name, "deleted topic");
        Ok(t.id)
    }

    /// Renames each partition directory of `t` to `<name>-<p>.<id>-delete` (as Kafka does), then
    /// removes the metadata file. The first rename commits the deletion: start-up finishes any
    /// deletion cut short, and removes no directory of a topic it did not mark. Returns the
    /// directories to remove: any a rename failed for (removed in place, first, so a marked
    /// sibling still tells start-up to finish them if the stop comes now), then the marked ones.
    pub(super) fn mark_for_deletion(&self, t: &Topic) -> std::io::Result<Vec<PathBuf>> {
        let mut marked = Vec::new();
        let mut unmarked = Vec::new();
        for replica in t.partitions() {
            let from = topic::partition_dir(&self.data_dir, &t.name, replica.index);
            let to = dirs::delete_dir(&self.data_dir, &t.name, replica.index, t.id);
            match std::fs::rename(&from, &to) {
                Ok(()) => marked.push(to),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if marked.is_empty() => return Err(e),
                Err(e) => {
                    tracing::warn!(dir = %from.display(), error = %e, "could not mark partition directory for deletion; removing it in place (start-up finishes what is left)");
                    unmarked.push(from);
                }
            }
        }
        unmarked.append(&mut marked);
        dirs::sync_dir(&self.data_dir)?;
        topic::remove_meta(&self.data_dir, &t.name)?;
        Ok(unmarked)
    }
}
