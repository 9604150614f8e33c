//! meta::store::state_machine: openraft's `RaftStateMachine`: applies committed entries to the
//! [`MetadataImage`] and publishes each applied batch whole on the image watch channel; keeps
//! the newest snapshot in `snapshot-<seq>.bin` (a `SnapshotMeta` record, then the image record;
//! the image record alone is the snapshot data openraft ships to followers). Applying does no
//! I/O: the image lives in memory and is rebuilt on open from the snapshot plus the log.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use tokio::sync::watch;

use super::record::{self, Parsed};
use super::{StoreError, blocking};
use crate::io::Storage;
use crate::meta::command::MetadataResponse;
use crate::meta::image::{MetadataImage, decode_image};
use crate::meta::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

pub(super) const SNAPSHOT_PREFIX: &str = "snapshot-";

fn snapshot_name(seq: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{seq:020}.bin")
}

/// The snapshot files of one store: the newest is current, older ones are removed.
#[derive(Debug)]
struct Snapshots {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    state: Mutex<SnapState>,
}

#[derive(Debug)]
struct SnapState {
    /// The current snapshot's metadata and file number.
    current: Option<(SnapshotMeta, u64)>,
    next_seq: u64,
}

/// A snapshot file's content.
struct Loaded {
    meta: SnapshotMeta,
    /// The framed image record (openraft's snapshot data).
    data: Vec<u8>,
    image: MetadataImage,
}

/// Parses a snapshot file: a meta record, an image record, nothing after.
fn parse_snapshot(path: &Path, bytes: &[u8]) -> Result<Loaded, StoreError> {
    let record_at = |at: usize| match record::parse(bytes, at) {
        Parsed::Record { payload, end } => Ok((payload, end)),
        Parsed::Unsupported { version } => Err(StoreError::corrupt(
            path,
            at as u64,
            format!("format version {version}"),
        )),
        Parsed::Bad(why) => Err(StoreError::corrupt(path, at as u64, why)),
    };
    let (meta, image_at) = record_at(0)?;
    let meta: SnapshotMeta =
        record::decode(meta).map_err(|why| StoreError::corrupt(path, 0, why))?;
    let data = bytes.get(image_at..).unwrap_or_default().to_vec();
    let image = record::single_with(path, &data, false, decode_image).map_err(|e| match e {
        StoreError::Corrupt { why, offset, .. } => {
            StoreError::corrupt(path, image_at as u64 + offset, why)
        }
        other => other,
    })?;
    Ok(Loaded { meta, data, image })
}

impl Snapshots {
    /// Finds the newest snapshot file (which must be valid) and removes older ones.
    fn open(
        dir: &Path,
        storage: Arc<dyn Storage>,
    ) -> Result<(Snapshots, Option<Loaded>), StoreError> {
        let seqs: Vec<u64> = record::list(dir)?
            .iter()
            .filter_map(|n| record::numbered(n, SNAPSHOT_PREFIX))
            .collect();
        let mut loaded = None;
        let mut current = None;
        if let Some(&newest) = seqs.last() {
            let path = dir.join(snapshot_name(newest));
            let bytes = record::read_file(&*storage, dir, &snapshot_name(newest))?
                .ok_or_else(|| StoreError::io(&path, std::io::ErrorKind::NotFound.into()))?;
            let l = parse_snapshot(&path, &bytes)?;
            current = Some((l.meta.clone(), newest));
            loaded = Some(l);
            for &old in &seqs[..seqs.len() - 1] {
                let path = dir.join(snapshot_name(old));
                storage
                    .remove_file(&path)
                    .map_err(|e| StoreError::io(&path, e))?;
            }
            if seqs.len() > 1 {
                storage.sync_dir(dir).map_err(|e| StoreError::io(dir, e))?;
            }
        }
        let snapshots = Snapshots {
            dir: dir.to_path_buf(),
            storage,
            state: Mutex::new(SnapState {
                next_seq: current.as_ref().map_or(0, |(_, s)| s + 1),
                current,
            }),
        };
        Ok((snapshots, loaded))
    }

    fn lock(&self) -> MutexGuard<'_, SnapState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a snapshot durably and makes it current, removing the one before. With
    /// `only_if_newer`, a snapshot older than the current one is dropped (a build that raced an
    /// install); returns whether it was stored.
    fn store(
        &self,
        meta: &SnapshotMeta,
        data: &[u8],
        only_if_newer: bool,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        if only_if_newer
            && let Some((current, _)) = &state.current
            && current.last_log_id > meta.last_log_id
        {
            return Ok(false);
        }
        let seq = state.next_seq;
        let name = snapshot_name(seq);
        let mut bytes = record::frame(&self.dir.join(&name), meta)?;
        bytes.extend_from_slice(data);
        record::replace_durably(&*self.storage, &self.dir, &name, &bytes)?;
        state.next_seq = seq + 1;
        if let Some((_, old)) = state.current.replace((meta.clone(), seq)) {
            let path = self.dir.join(snapshot_name(old));
            self.storage
                .remove_file(&path)
                .map_err(|e| StoreError::io(&path, e))?;
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| StoreError::io(&self.dir, e))?;
        }
        Ok(true)
    }

    /// The current snapshot, read back from its file.
    fn current(&self) -> Result<Option<Loaded>, StoreError> {
        let state = self.lock();
        let Some((_, seq)) = &state.current else {
            return Ok(None);
        };
        let name = snapshot_name(*seq);
        let path = self.dir.join(&name);
        let bytes = record::read_file(&*self.storage, &self.dir, &name)?
            .ok_or_else(|| StoreError::io(&path, std::io::ErrorKind::NotFound.into()))?;
        parse_snapshot(&path, &bytes).map(Some)
    }
}

/// The metadata state machine: the image, what was applied last, and the snapshots.
pub struct StateMachineStore {
    image: MetadataImage,
    applied: Option<LogId>,
    membership: StoredMembership,
    published: watch::Sender<Arc<MetadataImage>>,
    snapshots: Arc<Snapshots>,
    /// Set while this node is the controller: it alone logs the elections and ISR changes every
    /// node applies ([`StateMachineStore::change_log_switch`]).
    log_changes: Arc<AtomicBool>,
}

/// Builds a snapshot of the state as it was when the builder was taken.
pub struct SnapshotBuilder {
    image: MetadataImage,
    applied: Option<LogId>,
    membership: StoredMembership,
    snapshots: Arc<Snapshots>,
}

impl StateMachineStore {
    /// Loads the newest snapshot (if any) and publishes its image.
    pub(super) fn open(
        dir: &Path,
        storage: Arc<dyn Storage>,
        published: watch::Sender<Arc<MetadataImage>>,
    ) -> Result<StateMachineStore, StoreError> {
        let (snapshots, loaded) = Snapshots::open(dir, storage)?;
        let (image, applied, membership) = match loaded {
            Some(l) => (l.image, l.meta.last_log_id, l.meta.last_membership),
            None => Default::default(),
        };
        published.send_replace(Arc::new(image.clone()));
        Ok(StateMachineStore {
            image,
            applied,
            membership,
            published,
            snapshots: Arc::new(snapshots),
            log_changes: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The image as last applied (what the watch channel carries).
    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    /// The switch that makes applying log each election and ISR change (`image::Change::log`):
    /// the quorum turns it on while this node is the Raft leader, so each change is logged once,
    /// by the controller, rather than by every node.
    pub fn change_log_switch(&self) -> Arc<AtomicBool> {
        self.log_changes.clone()
    }

    fn publish(&self) {
        self.published.send_replace(Arc::new(self.image.clone()));
    }
}

fn snapshot_error(meta: Option<&SnapshotMeta>, e: &StoreError) -> StorageError {
    StorageIOError::write_snapshot(meta.map(|m| m.signature()), AnyError::new(e)).into()
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    /// Writes the snapshot file durably (temp file, fsync, rename, directory fsync).
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let snapshot_id = match &self.applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
            None => "none".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let snapshots = self.snapshots.clone();
        let data = record::frame(&snapshots.dir, &self.image)
            .map_err(|e| snapshot_error(Some(&meta), &e))?;
        let (m, d) = (meta.clone(), data.clone());
        let dir = snapshots.dir.clone();
        blocking(&dir, move || snapshots.store(&m, &d, true))
            .await
            .map_err(|e| snapshot_error(Some(&meta), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    /// Applies the batch, then publishes the image once: readers never see half a batch.
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetadataResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut responses = Vec::new();
        let mut changes = Vec::new();
        for entry in entries {
            let response = match entry.payload {
                EntryPayload::Normal(cmd) => {
                    self.image
                        .apply_traced(entry.log_id.index, &cmd, &mut changes)
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    MetadataResponse::Done
                }
                EntryPayload::Blank => MetadataResponse::Done,
            };
            self.applied = Some(entry.log_id);
            responses.push(response);
        }
        if !responses.is_empty() {
            self.publish();
        }
        if self.log_changes.load(Ordering::Relaxed) {
            changes.iter().for_each(crate::meta::image::Change::log);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            image: self.image.clone(),
            applied: self.applied,
            membership: self.membership.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Checks and persists the received snapshot, then replaces the image with it.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let path = self.snapshots.dir.join("(received snapshot)");
        let image = record::single_with(&path, &data, false, decode_image)
            .map_err(|e| snapshot_error(Some(meta), &e))?;
        let snapshots = self.snapshots.clone();
        let m = meta.clone();
        blocking(&snapshots.dir.clone(), move || {
            snapshots.store(&m, &data, false)
        })
        .await
        .map_err(|e| snapshot_error(Some(meta), &e))?;
        self.image = image;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let snapshots = self.snapshots.clone();
        let loaded = blocking(&snapshots.dir.clone(), move || snapshots.current())
            .await
            .map_err(|e| {
                StorageError::from(StorageIOError::read_snapshot(None, AnyError::new(&e)))
            })?;
        Ok(loaded.map(|l| Snapshot {
            meta: l.meta,
            snapshot: Box::new(Cursor::new(l.data)),
        }))
    }
}
