//! api::describe_log_dirs (key 35): the node's one log directory (`data_dir`) with the size of
//! each partition it holds (`kafka-log-dirs.sh`, AdminClient.describe_log_dirs). A single node
//! has no followers, so every offset lag is 0; v4 adds the file system's total and usable bytes.

use std::path::{Path, PathBuf};

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    DescribeLogDirsRequest, DescribeLogDirsResponse, RequestHeader, TopicName,
};

use super::str_bytes;
use crate::broker::{Broker, Topic};

/// DescribeLogDirs v4 added total_bytes and usable_bytes (-1 before, and when unknown).
const SPACE_VERSION_MIN: i16 = 4;

pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let dir = log_dir(&broker.config.data_dir);
    let topics: Vec<DescribeLogDirsTopic> = match request.topics {
        // Null: every partition.
        None => broker.topics().iter().map(|t| describe(t, None)).collect(),
        Some(wanted) => wanted
            .iter()
            .filter_map(|w| {
                let t = broker.topic(&w.topic)?;
                Some(describe(&t, Some(&w.partitions)))
            })
            .collect(),
    };
    let mut result = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(-1)
        .with_usable_bytes(-1);
    if header.request_api_version >= SPACE_VERSION_MIN
        && let Some((total, usable)) = space(&dir)
    {
        result = result.with_total_bytes(total).with_usable_bytes(usable);
    }
    DescribeLogDirsResponse::default().with_results(vec![result])
}

/// The data directory as Kafka names a log dir: an absolute path.
pub fn log_dir(data_dir: &Path) -> PathBuf {
    std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf())
}

fn describe(t: &Topic, only: Option<&[i32]>) -> DescribeLogDirsTopic {
    let partitions = t
        .partitions()
        .iter()
        .filter(|r| only.is_none_or(|wanted| wanted.contains(&r.index)))
        .map(|r| {
            DescribeLogDirsPartition::default()
                .with_partition_index(r.index)
                .with_partition_size(i64::try_from(r.log.size_bytes()).unwrap_or(i64::MAX))
                .with_offset_lag(0)
                .with_is_future_key(false)
        })
        .collect();
    DescribeLogDirsTopic::default()
        .with_name(TopicName(str_bytes(t.name.clone())))
        .with_partitions(partitions)
}

/// (total, usable) bytes of the file system holding `dir`, from statvfs; usable is what an
/// unprivileged writer may still use (f_bavail), as Kafka reports it.
fn space(dir: &Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stat` points to writable memory of the
    // right type; statvfs fills it completely when it returns 0.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let stat = unsafe { stat.assume_init() };
    // The fields are c_ulong / fsblkcnt_t: 64-bit here, 32-bit on armv7, hence the casts.
    #[allow(clippy::unnecessary_cast)]
    let (block, blocks, available) = (
        stat.f_frsize as u64,
        stat.f_blocks as u64,
        stat.f_bavail as u64,
    );
    let bytes = |blocks: u64| i64::try_from(blocks.saturating_mul(block)).unwrap_or(i64::MAX);
    Some((bytes(blocks), bytes(available)))
}
