//! broker::identity: who this node is, kept in `<data_dir>/node.toml` (node id, cluster id).
//!
//! A data directory belongs to one node. An id given explicitly (config `node_id` or
//! `--node-id`) pins it: a later start with another id is refused, since the data would then
//! claim to be another broker's. A first start without an id (a freshly installed package
//! starts its service before the operator has written the node's config) writes id 1 unpinned,
//! and the first explicit id given later takes its place and pins it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::BrokerError;

/// Who this node is and where it belongs. The TOML form is `node.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeIdentity {
    pub node_id: i32,
    pub cluster_id: String,
    /// Whether `node_id` was given explicitly. Files written before this field existed are
    /// treated as pinned: an id that may have been chosen is never silently replaced.
    #[serde(default = "pinned_by_default")]
    pub pinned: bool,
    /// This data directory's own id (KIP-853's directory id), drawn once: a voter whose card was
    /// reflashed comes back with another one, and its peers refuse it (its vote is lost).
    /// Files written before this field existed get one on their next start.
    #[serde(default)]
    pub directory_id: Option<Uuid>,
}

fn pinned_by_default() -> bool {
    true
}

/// The id a node takes when none is configured and its data directory has none yet.
pub const NODE_ID_DEFAULT: i32 = 1;

/// Reads node.toml, or writes it on first start; pins an unpinned id to the configured one.
pub fn load(data_dir: &Path, configured: Option<i32>) -> Result<NodeIdentity, BrokerError> {
    let path = data_dir.join("node.toml");
    let on_disk = match std::fs::read_to_string(&path) {
        Ok(text) => Some(
            toml::from_str::<NodeIdentity>(&text)
                .map_err(|e| BrokerError::NodeFile(format!("{}: {e}", path.display())))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(BrokerError::DataDir { path, source }),
    };
    let Some(mut id) = on_disk else {
        let id = NodeIdentity {
            node_id: configured.unwrap_or(NODE_ID_DEFAULT),
            cluster_id: new_cluster_id(),
            pinned: configured.is_some(),
            directory_id: Some(Uuid::new_v4()),
        };
        write(&path, &id)?;
        return Ok(id);
    };
    if id.directory_id.is_none() || !crate::meta::holds_quorum(data_dir) {
        // A store that is gone took this node's vote with it: under a new directory id its peers
        // refuse it as a voter instead of letting it vote twice in one term (KIP-853). A node
        // that never had a store (a single-node release's directory) just gets its first id.
        if id.directory_id.is_some() {
            tracing::warn!(
                "the metadata quorum's store (meta/raft) is missing: this data directory gets a new directory id, and its peers will not take it back as the voter it was"
            );
        }
        id.directory_id = Some(Uuid::new_v4());
        write(&path, &id)?;
    }
    match configured {
        None => Ok(id),
        Some(wanted) if wanted == id.node_id && id.pinned => Ok(id),
        Some(wanted) if id.pinned => Err(BrokerError::NodeFile(format!(
            "data directory belongs to node {} but this node is configured as {wanted}",
            id.node_id
        ))),
        Some(wanted) => {
            // The quorum formed before the node had its identity was a provisional cluster of
            // one: the node's real config (its id, its voters) starts it afresh.
            set_aside_quorum(data_dir, id.node_id)?;
            if wanted != id.node_id {
                tracing::info!(
                    from = id.node_id,
                    to = wanted,
                    "data directory was first started without a node id: taking the configured one"
                );
            }
            id.node_id = wanted;
            id.pinned = true;
            write(&path, &id)?;
            Ok(id)
        }
    }
}

/// A node first started without an id (a package's first start) formed a provisional quorum of
/// one, as node 1 with no peers. When its configured id arrives (with the cluster's voters, as the
/// Pi walkthrough's step 3 gives it), that quorum cannot join the cluster — it has its own cluster
/// id and lists itself as the only voter — so its store is moved aside, and the topics, recovered
/// from their partition directories, are imported when the node's real quorum forms.
fn set_aside_quorum(data_dir: &Path, old_id: i32) -> Result<(), BrokerError> {
    let raft = crate::meta::raft_dir(data_dir);
    if !raft.exists() {
        return Ok(());
    }
    let kept = raft.with_file_name(format!("raft.node-{old_id}"));
    let io = |source| BrokerError::DataDir {
        path: raft.clone(),
        source,
    };
    if kept.exists() {
        std::fs::remove_dir_all(&kept).map_err(io)?;
    }
    std::fs::rename(&raft, &kept).map_err(io)?;
    if let Some(meta) = raft.parent() {
        std::fs::File::open(meta)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    tracing::warn!(kept = %kept.display(), "the provisional metadata quorum formed before this node had an id is set aside; its topics are recovered from their partition directories");
    Ok(())
}

/// Replaces node.toml atomically: a temporary file, synced, renamed over it, directory synced.
fn write(path: &Path, id: &NodeIdentity) -> Result<(), BrokerError> {
    let text = toml::to_string(id).map_err(|e| BrokerError::NodeFile(e.to_string()))?;
    let io = |source| BrokerError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    let tmp: PathBuf = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

/// Kafka cluster ids are 22-character URL-safe base64 of a UUID.
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = Uuid::new_v4().as_u128();
    (0..22)
        .map(|i| ALPHABET[((bits >> (i * 6)) & 63) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    //! The pinning rules, on a real directory: what a package's first start writes, what an
    //! operator's config then does, and what stays refused.
    use super::*;

    #[test]
    fn first_start_without_id_does_not_pin() {
        let dir = tempfile::tempdir().unwrap();
        let first = load(dir.path(), None).unwrap();
        assert_eq!((first.node_id, first.pinned), (NODE_ID_DEFAULT, false));
        // The operator's config names node 2: the directory takes it and keeps the cluster id.
        let second = load(dir.path(), Some(2)).unwrap();
        assert_eq!((second.node_id, second.pinned), (2, true));
        assert_eq!(second.cluster_id, first.cluster_id);
        // From now on node 2 it is: another id is refused, no id keeps 2.
        assert!(load(dir.path(), Some(3)).is_err());
        assert_eq!(load(dir.path(), None).unwrap().node_id, 2);
    }

    #[test]
    fn a_provisional_quorum_is_set_aside_when_the_id_arrives() {
        let dir = tempfile::tempdir().unwrap();
        load(dir.path(), None).unwrap();
        let raft = crate::meta::raft_dir(dir.path());
        std::fs::create_dir_all(&raft).unwrap();
        std::fs::write(raft.join("vote.bin"), b"v").unwrap();
        // Restarts without an id keep the provisional quorum.
        load(dir.path(), None).unwrap();
        assert!(raft.join("vote.bin").exists());
        // The same id, given explicitly (pi1 in the walkthrough), still starts afresh.
        load(dir.path(), Some(NODE_ID_DEFAULT)).unwrap();
        assert!(!raft.exists());
        let kept = raft.with_file_name(format!("raft.node-{NODE_ID_DEFAULT}"));
        assert_eq!(std::fs::read(kept.join("vote.bin")).unwrap(), b"v");
        // Once pinned, the quorum stays where it is.
        std::fs::create_dir_all(&raft).unwrap();
        load(dir.path(), Some(NODE_ID_DEFAULT)).unwrap();
        assert!(raft.exists());
    }

    #[test]
    fn explicit_id_pins_at_once() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), Some(1)).unwrap().pinned);
        assert!(load(dir.path(), Some(2)).is_err());
    }

    #[test]
    fn files_without_the_flag_stay_pinned() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("node.toml"),
            "node_id = 1\ncluster_id = \"abc\"\n",
        )
        .unwrap();
        assert!(load(dir.path(), Some(2)).is_err());
        assert_eq!(load(dir.path(), Some(1)).unwrap().cluster_id, "abc");
    }
}
