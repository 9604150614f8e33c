//! broker::producer_ids: hands out idempotent producer ids for InitProducerId (`api/init_producer_id.rs`).
//! An id must never be handed out twice, even across restarts: partitions remember producers by
//! id, so a reused id would make a new producer's batches look like an old one's retries.
//!
//! Ids are reserved in blocks of `IDS_PER_BLOCK`: before the first id of a block is handed out,
//! the block's end is written to `<data_dir>/meta/producer-ids` (temporary file, fsync, rename,
//! directory fsync), so a power cut leaves the old or the new mark and at most one block's unused
//! ids are skipped. One small write per thousand producers keeps SD card wear negligible.
//!
//! Byte table of `meta/producer-ids` (big-endian):
//!
//! ```text
//! offset size field
//!      0    8 next_block_start   first id not yet reserved; every id below it may have been used
//!      8    4 crc                CRC-32C of bytes 0..8
//! ```

use std::path::{Path, PathBuf};

use crate::protocol::batch::crc32c;

/// Ids reserved by one write of the high-water mark.
pub const IDS_PER_BLOCK: i64 = 1000;
/// How long InitProducerId waits for the controller to hand this node a block.
const PROPOSE_TIMEOUT_MS: u64 = 5_000;
const FILE_NAME: &str = "producer-ids";
const MARK_AT: usize = 0;
const CRC_AT: usize = MARK_AT + 8;
const FILE_BYTES: usize = CRC_AT + 4;

#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    #[error("producer id file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("producer id file {path} is corrupt: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("producer ids exhausted")]
    Exhausted,
    #[error("producer id block from the controller: {0}")]
    Quorum(String),
}

/// Next id to hand out and the end of the reserved block (`next == block_end`: reserve first).
#[derive(Debug)]
struct Alloc {
    next: i64,
    block_end: i64,
    /// The block came from the local file (before a quorum was attached).
    from_file: bool,
}

/// The node's producer id allocator. Async lock: a block reservation fsyncs, on a blocking thread.
pub struct ProducerIds {
    path: PathBuf,
    alloc: tokio::sync::Mutex<Alloc>,
    /// Set in a cluster: blocks are allocated by the controller instead of the local file.
    quorum: std::sync::OnceLock<std::sync::Arc<dyn crate::meta::MetadataClient>>,
}

impl ProducerIds {
    /// Reads the high-water mark (0 when the file does not exist yet: a new data dir).
    pub fn open(data_dir: &Path) -> Result<ProducerIds, ProducerIdError> {
        let path = data_dir.join("meta").join(FILE_NAME);
        let mark = read_mark(&path)?;
        Ok(ProducerIds {
            path,
            alloc: tokio::sync::Mutex::new(Alloc {
                next: mark,
                block_end: mark,
                from_file: true,
            }),
            quorum: std::sync::OnceLock::new(),
        })
    }

    /// A producer id never handed out before by this data directory.
    pub async fn allocate(&self) -> Result<i64, ProducerIdError> {
        let mut alloc = self.alloc.lock().await;
        if let Some(q) = self.quorum.get() {
            if alloc.next >= alloc.block_end || alloc.from_file {
                let cmd = crate::meta::command::MetadataCommand::AllocateProducerIds {
                    node_id: q.node_id(),
                    count: IDS_PER_BLOCK,
                };
                let timeout = std::time::Duration::from_millis(PROPOSE_TIMEOUT_MS);
                match q.propose(cmd, timeout).await {
                    Ok(crate::meta::command::MetadataResponse::ProducerIds { first, count }) => {
                        alloc.next = first;
                        alloc.block_end = first + count;
                        alloc.from_file = false;
                    }
                    Ok(other) => return Err(ProducerIdError::Quorum(format!("{other:?}"))),
                    Err(e) => return Err(ProducerIdError::Quorum(e.to_string())),
                }
            }
            let id = alloc.next;
            alloc.next += 1;
            return Ok(id);
        }
        if alloc.next >= alloc.block_end {
            let end = alloc
                .block_end
                .checked_add(IDS_PER_BLOCK)
                .ok_or(ProducerIdError::Exhausted)?;
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || write_mark(&path, end))
                .await
                .map_err(|e| ProducerIdError::Io {
                    path: self.path.clone(),
                    source: std::io::Error::other(e),
                })??;
            alloc.block_end = end;
            tracing::debug!(block_end = end, "reserved a block of producer ids");
        }
        let id = alloc.next;
        alloc.next += 1;
        Ok(id)
    }

    /// The first id this data directory has not reserved (what a new quorum imports).
    pub async fn mark(&self) -> i64 {
        self.alloc.lock().await.block_end
    }

    /// From now on blocks come from the controller (`AllocateProducerIds`), so two nodes never
    /// hand out the same id; this node's own mark is no longer used.
    pub fn use_quorum(&self, quorum: std::sync::Arc<dyn crate::meta::MetadataClient>) {
        let _ = self.quorum.set(quorum);
    }

    /// True if `id` was handed out by this allocator at some point (it is below the reserved
    /// mark). A KIP-360 epoch bump is only granted for such ids: bumping an id the client made
    /// up could collide with one handed out later.
    pub async fn was_allocated(&self, id: i64) -> bool {
        if let Some(q) = self.quorum.get() {
            // Any node's block: ids are unique cluster-wide, so bumping one collides with none.
            return id >= 0 && id < q.image().next_producer_id;
        }
        id >= 0 && id < self.alloc.lock().await.next
    }
}

fn read_mark(path: &Path) -> Result<i64, ProducerIdError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(ProducerIdError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let corrupt = |why: String| ProducerIdError::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    let (Some(mark), Some(crc)) = (bytes.get(MARK_AT..CRC_AT), bytes.get(CRC_AT..FILE_BYTES))
    else {
        return Err(corrupt(format!(
            "{} bytes, expected {FILE_BYTES}",
            bytes.len()
        )));
    };
    let stored = u32::from_be_bytes(crc.try_into().map_err(|_| corrupt("crc".into()))?);
    if bytes.len() != FILE_BYTES || crc32c(mark) != stored {
        return Err(corrupt("length or crc-32c mismatch".into()));
    }
    let mark = i64::from_be_bytes(mark.try_into().map_err(|_| corrupt("mark".into()))?);
    if mark < 0 {
        return Err(corrupt(format!("negative mark {mark}")));
    }
    Ok(mark)
}

/// Writes the mark atomically: temp file, fsync, rename, directory fsync.
fn write_mark(path: &Path, mark: i64) -> Result<(), ProducerIdError> {
    use std::io::Write;
    let io = |source| ProducerIdError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    super::dirs::create_dir_durable(dir).map_err(io)?;
    let mut bytes = [0u8; FILE_BYTES];
    bytes[MARK_AT..CRC_AT].copy_from_slice(&mark.to_be_bytes());
    let crc = crc32c(&bytes[MARK_AT..CRC_AT]);
    bytes[CRC_AT..FILE_BYTES].copy_from_slice(&crc.to_be_bytes());
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ids_are_never_reused_across_reopens() {
        // Proves ids are dense within a run, a reopen continues after the reserved block (never
        // below anything handed out), and a corrupt mark file is refused rather than reset.
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = ProducerIds::open(dir.path()).expect("open");
        let first: Vec<i64> = futures_util::future::join_all((0..3).map(|_| ids.allocate()))
            .await
            .into_iter()
            .map(|r| r.expect("allocate"))
            .collect();
        assert_eq!(first, [0, 1, 2]);
        assert!(ids.was_allocated(2).await && !ids.was_allocated(3).await);
        drop(ids);
        let ids = ProducerIds::open(dir.path()).expect("reopen");
        assert_eq!(ids.allocate().await.expect("allocate"), IDS_PER_BLOCK);
        for _ in 0..IDS_PER_BLOCK {
            ids.allocate().await.expect("allocate");
        }
        drop(ids);
        let ids = ProducerIds::open(dir.path()).expect("reopen");
        assert_eq!(ids.allocate().await.expect("allocate"), 3 * IDS_PER_BLOCK);
        std::fs::write(dir.path().join("meta").join(FILE_NAME), b"garbage").expect("write");
        assert!(matches!(
            ProducerIds::open(dir.path()),
            Err(ProducerIdError::Corrupt { .. })
        ));
    }
}
