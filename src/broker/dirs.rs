//! broker::dirs: the partition directories in the data directory — their names, the
//! `partition.metadata` file that ties each one to its topic id, marking a deleted topic's
//! directories for removal, and telling a directory that holds records from an unused one.
//!
//! Layout: `<data_dir>/<topic>-<p>/` holds partition `p` of `<topic>`; its `partition.metadata`
//! (as Kafka's) says which topic id the data belongs to, and keeps a copy of the topic's config
//! overrides so that losing the topic's metadata file does not lose them (retention settings
//! decide whether the records live). DeleteTopics first renames each directory to
//! `<topic>-<p>.<id>-delete` (as Kafka does, the topic part capped so the name fits the file
//! system's limit): that rename is the point after which the data is gone, and start-up finishes
//! removing what such a rename marked, and every directory tied to a marked topic id. Nothing
//! else removes a directory that holds records.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use uuid::Uuid;

/// The file in each partition directory naming the topic id its data belongs to.
pub const PARTITION_METADATA: &str = "partition.metadata";
/// Version of the `partition.metadata` format written here (Kafka's is 0 too).
const PARTITION_METADATA_VERSION: u32 = 0;
/// Suffix of a directory marked for deletion: `<topic>-<p>.<id>-delete`.
const DELETE_SUFFIX: &str = "-delete";
/// Longest file name (bytes) the file systems a node runs on accept (ext4, xfs, btrfs, f2fs).
pub const FILE_NAME_BYTES_MAX: usize = 255;

/// What a partition directory's `partition.metadata` says.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionMeta {
    pub topic_id: Uuid,
    /// The topic's config overrides as of the last create or config change; None in a file
    /// written before the copy was kept.
    pub configs: Option<BTreeMap<String, String>>,
}

/// What the data directory holds, by name.
#[derive(Debug, Default)]
pub struct Scan {
    /// Partition directories `<topic>-<p>`, by topic then partition.
    pub partitions: BTreeMap<String, BTreeMap<i32, PathBuf>>,
    /// Directories marked for deletion, with the topic id in their name.
    pub deleting: Vec<(PathBuf, Uuid)>,
}

/// `<topic>-<p>` → (topic, p). A name splits uniquely at its last '-' (partition numbers have no
/// '-'), so no other topic's directory can match.
pub fn parse_partition_dir(name: &str) -> Option<(&str, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    if partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    super::topic::validate_name(topic).ok()?;
    Some((topic, partition.parse().ok()?))
}

/// `<topic>-<p>.<id>-delete` → the topic id, read from the suffix only: the topic part may be
/// truncated (`delete_dir`).
fn parse_delete_dir(name: &str) -> Option<Uuid> {
    let (_, id) = name.strip_suffix(DELETE_SUFFIX)?.rsplit_once('.')?;
    Uuid::try_parse(id).ok()
}

/// `prefix` + `suffix`, `prefix` cut so the whole fits `FILE_NAME_BYTES_MAX` (as Kafka's
/// logDirNameWithSuffixCappedLength): a 249-character topic name plus a suffix passes the limit.
pub fn capped_name(prefix: &str, suffix: &str) -> String {
    let mut keep = FILE_NAME_BYTES_MAX
        .saturating_sub(suffix.len())
        .min(prefix.len());
    while !prefix.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{suffix}", &prefix[..keep])
}

/// Where DeleteTopics moves partition `p` of topic `topic` (id `id`) before removing it. The
/// topic part is capped to fit the file-name limit; the id and partition keep the name unique.
pub fn delete_dir(data_dir: &Path, topic: &str, p: i32, id: Uuid) -> PathBuf {
    let suffix = format!("-{p}.{}{DELETE_SUFFIX}", id.simple());
    data_dir.join(capped_name(topic, &suffix))
}

/// Lists the partition directories and the ones marked for deletion.
pub fn scan(data_dir: &Path) -> std::io::Result<Scan> {
    let mut out = Scan::default();
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        if let Some(id) = parse_delete_dir(name) {
            out.deleting.push((entry.path(), id));
        } else if let Some((topic, p)) = parse_partition_dir(name) {
            out.partitions
                .entry(topic.to_string())
                .or_default()
                .insert(p, entry.path());
        }
    }
    Ok(out)
}

/// The partition directories of one topic name (for CreateTopics, which must not reuse them).
pub fn topic_dirs(data_dir: &Path, topic: &str) -> std::io::Result<BTreeMap<i32, PathBuf>> {
    Ok(scan(data_dir)?.partitions.remove(topic).unwrap_or_default())
}

/// The topic id in `dir`'s `partition.metadata`: None when the file is absent (a directory
/// written before the file existed, or cut before it was written). A file that does not parse is
/// an `InvalidData` error.
pub fn read_topic_id(dir: &Path) -> std::io::Result<Option<Uuid>> {
    Ok(read_partition_meta(dir)?.map(|m| m.topic_id))
}

/// `dir`'s `partition.metadata` (see `read_topic_id`). A config copy that does not parse is
/// reported as absent (the topic id is what the directory must keep).
pub fn read_partition_meta(dir: &Path) -> std::io::Result<Option<PartitionMeta>> {
    let text = match std::fs::read_to_string(dir.join(PARTITION_METADATA)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let mut version = None;
    let mut id = None;
    let mut configs = None;
    for line in text.lines() {
        match line.split_once(':').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("version", v)) => version = v.parse::<u32>().ok(),
            Some(("topic_id", v)) => id = Uuid::try_parse(v).ok(),
            Some(("configs", v)) => configs = serde_json::from_str(v).ok(),
            _ => {}
        }
    }
    if version != Some(PARTITION_METADATA_VERSION) {
        return Err(invalid("partition.metadata: missing or unknown version"));
    }
    let topic_id = id.ok_or_else(|| invalid("partition.metadata: missing or bad topic_id"))?;
    Ok(Some(PartitionMeta { topic_id, configs }))
}

/// Writes `dir`'s `partition.metadata` durably: temp file, fsync, rename, fsync the directory,
/// so after a power cut the directory has either no file or a whole one. `configs` (the topic's
/// overrides) is one JSON line, which earlier versions (reading `version` and `topic_id`) skip.
pub fn write_partition_meta(
    dir: &Path,
    id: Uuid,
    configs: &BTreeMap<String, String>,
) -> std::io::Result<()> {
    let tmp = dir.join(format!("{PARTITION_METADATA}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    let configs = serde_json::to_string(configs).map_err(std::io::Error::other)?;
    write!(
        f,
        "version: {PARTITION_METADATA_VERSION}\ntopic_id: {}\nconfigs: {configs}\n",
        id.hyphenated()
    )?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(PARTITION_METADATA))?;
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// `create_dir_all` whose new directories survive a power cut ([`crate::io::create_dir_durable`]
/// with plain files: the broker's own files, not written through the node's storage).
pub fn create_dir_durable(dir: &Path) -> std::io::Result<()> {
    crate::io::create_dir_durable(&crate::io::StdStorage, dir)
}

/// Whether `dir` may hold records. Only a directory exactly as a new partition leaves it (its
/// first segment's files, empty log, plus `partition.metadata`) counts as unused; anything else
/// (a longer log, a later segment, a snapshot, a file this code does not know) counts as data.
pub fn holds_records(dir: &Path) -> std::io::Result<bool> {
    const FIRST_SEGMENT: &str = "00000000000000000000";
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let name = file_name.to_string_lossy();
        let unused = match name.split_once('.') {
            Some((FIRST_SEGMENT, "log")) => entry.metadata()?.len() == 0,
            Some((FIRST_SEGMENT, "index" | "timeindex")) => true,
            // A power-cut mode keep link (io::power_cut) is no file of the partition.
            _ => name.starts_with(PARTITION_METADATA) || crate::io::is_keep_name(&name),
        };
        if !unused {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves create_dir_durable makes every missing level (syncing each new one's parent) and
    // accepts a directory that exists; a file in the way is an error, not a silent success.
    #[test]
    fn create_dir_durable_makes_missing_levels() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let deep = tmp.path().join("a").join("b").join("c");
        create_dir_durable(&deep).expect("create");
        assert!(deep.is_dir());
        create_dir_durable(&deep).expect("exists already");
        std::fs::write(tmp.path().join("file"), b"x").expect("write");
        assert!(create_dir_durable(&tmp.path().join("file").join("d")).is_err());
    }

    // Proves partition and deletion directory names parse only as written, and other names not.
    #[test]
    fn directory_names() {
        assert_eq!(parse_partition_dir("a-b-12"), Some(("a-b", 12)));
        for other in ["meta", "t-", "t-x", "-1", "t-1.tmp", "a b-1"] {
            assert_eq!(parse_partition_dir(other), None, "{other}");
        }
        let id = Uuid::new_v4();
        let d = delete_dir(Path::new("/d"), "t-1", 3, id);
        let name = d.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_partition_dir(name), None);
        assert_eq!(parse_delete_dir(name), Some(id));
    }

    // Proves a deletion directory name fits the file-name limit for the longest topic name and
    // any partition, stays unique per partition, and still yields the topic id.
    #[test]
    fn delete_dir_names_fit_the_file_name_limit() {
        let id = Uuid::new_v4();
        let topic = "x".repeat(super::super::topic::TOPIC_NAME_BYTES_MAX);
        let names: Vec<String> = [0, 11, i32::MAX]
            .iter()
            .map(|&p| {
                let d = delete_dir(Path::new("/d"), &topic, p, id);
                d.file_name().unwrap().to_str().unwrap().to_string()
            })
            .collect();
        for name in &names {
            assert!(name.len() <= FILE_NAME_BYTES_MAX, "{} bytes", name.len());
            assert_eq!(parse_delete_dir(name), Some(id), "{name}");
            assert_eq!(parse_partition_dir(name), None);
        }
        assert!(names[0] != names[1] && names[1] != names[2]);
        assert_eq!(capped_name("ab", ".c"), "ab.c");
    }

    // Proves partition.metadata round-trips (id and config copy), is absent as None, a file
    // without the copy still gives the id, and a damaged one is an error.
    #[test]
    fn partition_metadata_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_topic_id(dir.path()).unwrap(), None);
        let id = Uuid::new_v4();
        let configs = BTreeMap::from([("retention.ms".to_string(), "-1\n\"x".to_string())]);
        write_partition_meta(dir.path(), id, &configs).unwrap();
        assert_eq!(read_topic_id(dir.path()).unwrap(), Some(id));
        let meta = read_partition_meta(dir.path()).unwrap().unwrap();
        assert_eq!(meta.configs, Some(configs));
        let older = format!("version: 0\ntopic_id: {id}\n");
        std::fs::write(dir.path().join(PARTITION_METADATA), older).unwrap();
        let meta = read_partition_meta(dir.path()).unwrap().unwrap();
        assert_eq!((meta.topic_id, meta.configs), (id, None));
        std::fs::write(dir.path().join(PARTITION_METADATA), "garbage").unwrap();
        assert!(read_topic_id(dir.path()).is_err());
    }
}
