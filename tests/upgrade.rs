//! Upgrade in place, and the quorum's log on a damaged disk, through the real binary.
//!
//! A data directory as the single-node release wrote it (topic files in `meta/topics`, the
//! producer id mark in `meta/producer-ids`, group offsets in `__consumer_offsets`) is built
//! in-process: a `Broker` opened without a quorum still writes exactly that. The binary then
//! starts on it and must serve the same topics (ids, partition counts, configs), every record at
//! its offset, the group's committed offsets and the old cluster id, hand out producer ids above
//! the old mark, and move `meta/topics` aside; a second restart must serve it all again from the
//! quorum's log alone. Then the quorum's log itself: a torn tail is cut with a log line, damage
//! in its middle refuses to start naming the file.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use bramble::broker::{Advertised, Broker as LocalBroker};
use bramble::config::Config;
use bramble::group::offsets::{Commit, Committer};
use bramble::io::DiskWriter;
use common::{BIN, Broker, EXIT_TIMEOUT, HOST, STARTUP_TIMEOUT, call, free_port, s, wait_bounded};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    CreateTopicsRequest, DescribeConfigsRequest, GroupId, InitProducerIdRequest, MetadataRequest,
    OffsetFetchRequest, ProducerId, TopicName,
};
use uuid::Uuid;

const NODE_ID: i32 = 1;
/// The topic with several partitions and a config override, and the one with defaults.
const ORDERS: &str = "orders";
const ORDERS_PARTITIONS: i32 = 3;
const RETENTION_MS: &str = "3600000";
const EVENTS: &str = "events";
/// Records appended to partition `p` of orders (partitions differ, so offsets are not
/// interchangeable), and to events.
const ORDERS_RECORDS_BASE: i64 = 4;
const EVENTS_RECORDS: i64 = 5;
const GROUP: &str = "upgrade-group";
const OFFSET_METADATA: &str = "kept";
/// Producer ids the single node handed out before the upgrade.
const OLD_PRODUCER_IDS: usize = 3;
/// Kafka's DescribeConfigs resource type of a topic, and the source of a topic's own config.
const RESOURCE_TOPIC: i8 = 2;
const SOURCE_TOPIC_CONFIG: i8 = 1;
const METADATA_VERSION: i16 = 12;
const DESCRIBE_CONFIGS_VERSION: i16 = 4;
const OFFSET_FETCH_VERSION: i16 = 5;
const INIT_PRODUCER_ID_VERSION: i16 = 4;
const CREATE_TOPICS_VERSION: i16 = 7;

/// What the single-node data directory held, as the upgraded node must serve it.
#[derive(Debug)]
struct Legacy {
    cluster_id: String,
    /// name → (topic id, partition count), `__consumer_offsets` included.
    topics: BTreeMap<String, (Uuid, i32)>,
    /// "topic partition offset value", sorted: what kcat must read back.
    records: Vec<String>,
    /// (topic, partition) → committed offset of GROUP.
    offsets: BTreeMap<(String, i32), i64>,
    /// The producer id mark on disk (every id below it may have been used).
    producer_mark: i64,
    producer_ids: Vec<i64>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Appends `count` one-record batches to `partition` of `topic`, valued
/// "topic-partition-i"; returns the "topic partition offset value" lines.
async fn append_records(
    broker: &LocalBroker,
    topic: &str,
    partition: i32,
    count: i64,
) -> Vec<String> {
    let log = broker
        .topic(topic)
        .unwrap()
        .partition(partition)
        .unwrap()
        .log
        .clone();
    let mut lines = Vec::new();
    for i in 0..count {
        let value = format!("{topic}-{partition}-{i}");
        let batch =
            bramble::client::producer::encode_batch(&value.clone().into(), 1, now_ms()).unwrap();
        let info = log.append(batch, 0).await.unwrap();
        assert_eq!(info.base_offset, i, "dense offsets from 0");
        lines.push(format!("{topic} {partition} {i} {value}"));
    }
    lines
}

/// Writes what the single-node release left in `data_dir`, through the library with no quorum
/// attached, and takes away the directory id node.toml gained since (the old release had none).
fn write_single_node_dir(data_dir: &Path) -> Legacy {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let legacy = runtime.block_on(async {
        let config = Config {
            data_dir: data_dir.to_path_buf(),
            node_id: Some(NODE_ID),
            ..Config::default()
        };
        let writer = DiskWriter::start(config.writer_config()).unwrap();
        let advertised = Advertised {
            host: HOST.into(),
            port: 9092,
        };
        let broker = LocalBroker::open(config, advertised, writer).unwrap();
        let configs = BTreeMap::from([("retention.ms".to_string(), RETENTION_MS.to_string())]);
        broker
            .create_topic(ORDERS, ORDERS_PARTITIONS, 1, configs, false)
            .await
            .unwrap();
        broker
            .create_topic(EVENTS, 1, 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let mut records = Vec::new();
        for p in 0..ORDERS_PARTITIONS {
            records.extend(
                append_records(&broker, ORDERS, p, ORDERS_RECORDS_BASE + i64::from(p)).await,
            );
        }
        records.extend(append_records(&broker, EVENTS, 0, EVENTS_RECORDS).await);
        records.sort();

        bramble::group::store::offsets_topic(&broker).await.unwrap();
        let offsets = BTreeMap::from([
            ((ORDERS.to_string(), 0), 2),
            ((ORDERS.to_string(), 1), 3),
            ((ORDERS.to_string(), 2), 6),
            ((EVENTS.to_string(), 0), 4),
        ]);
        let commits = offsets
            .iter()
            .map(|((topic, partition), offset)| Commit {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                leader_epoch: -1,
                metadata: Some(OFFSET_METADATA.to_string()),
            })
            .collect();
        let simple = Committer {
            member_id: "",
            instance_id: None,
            generation: -1,
        };
        let results = broker.groups.commit(&broker, GROUP, simple, commits).await;
        assert!(results.iter().all(|r| r.is_ok()), "commits: {results:?}");

        let mut producer_ids = Vec::new();
        for _ in 0..OLD_PRODUCER_IDS {
            producer_ids.push(broker.producer_ids.allocate().await.unwrap());
        }
        let producer_mark = broker.producer_ids.mark().await;
        let topics = broker
            .topics()
            .iter()
            .map(|t| (t.name.clone(), (t.id, t.partition_count())))
            .collect();
        let cluster_id = broker.identity.cluster_id.clone();
        broker.shutdown().await;
        Legacy {
            cluster_id,
            topics,
            records,
            offsets,
            producer_mark,
            producer_ids,
        }
    });
    runtime.shutdown_timeout(EXIT_TIMEOUT);
    let node_file = data_dir.join("node.toml");
    let text = fs::read_to_string(&node_file).unwrap();
    let old: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("directory_id"))
        .collect();
    fs::write(&node_file, old.join("\n") + "\n").unwrap();
    assert!(
        data_dir
            .join("meta/topics")
            .join(format!("{ORDERS}.toml"))
            .exists()
    );
    legacy
}

/// name → (topic id, partition count, error code) and the cluster id, from Metadata.
fn metadata(addr: &str) -> (BTreeMap<String, (Uuid, i32, i16)>, String) {
    let response = call(
        addr,
        &MetadataRequest::default().with_topics(None),
        METADATA_VERSION,
    );
    let topics = response
        .topics
        .iter()
        .map(|t| {
            let name = t.name.as_ref().unwrap().to_string();
            (name, (t.topic_id, t.partitions.len() as i32, t.error_code))
        })
        .collect();
    (topics, response.cluster_id.unwrap().to_string())
}

/// (value, source) of `key` of `topic`, from DescribeConfigs.
fn topic_config(addr: &str, topic: &str, key: &str) -> (String, i8) {
    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(s(topic))
            .with_configuration_keys(Some(vec![s(key)])),
    ]);
    let response = call(addr, &request, DESCRIBE_CONFIGS_VERSION);
    let result = &response.results[0];
    assert_eq!(result.error_code, 0, "{result:?}");
    let c = &result.configs[0];
    (
        c.value.as_deref().unwrap_or("").to_string(),
        c.config_source,
    )
}

/// Every record of `topics` from the beginning, as "topic partition offset value", sorted.
fn read_all(addr: &str, topics: &[&str], workdir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for topic in topics {
        let out_path = workdir.join(format!("kcat-{topic}.out"));
        let mut kcat = Command::new("kcat")
            .args(["-C", "-q", "-b", addr, "-t", topic, "-o", "beginning", "-e"])
            .args(["-f", "%t %p %o %s\\n"])
            .stdout(File::create(&out_path).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kcat -C");
        let status = wait_bounded(&mut kcat, EXIT_TIMEOUT).expect("kcat -C finished");
        assert!(status.success(), "kcat -C exited {status}");
        lines.extend(
            fs::read_to_string(&out_path)
                .unwrap()
                .lines()
                .map(String::from),
        );
    }
    lines.sort();
    lines
}

/// GROUP's committed (offset, metadata) of each of `wanted`, from OffsetFetch.
fn committed(
    addr: &str,
    wanted: &BTreeMap<(String, i32), i64>,
) -> BTreeMap<(String, i32), (i64, String)> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, p) in wanted.keys() {
        by_topic.entry(topic).or_default().push(*p);
    }
    let topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(s(t)))
                .with_partition_indexes(ps)
        })
        .collect();
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_topics(Some(topics));
    let response = call(addr, &request, OFFSET_FETCH_VERSION);
    assert_eq!(response.error_code, 0, "{response:?}");
    let mut out = BTreeMap::new();
    for t in &response.topics {
        for p in &t.partitions {
            assert_eq!(p.error_code, 0, "{t:?}");
            let metadata = p.metadata.as_deref().unwrap_or("").to_string();
            out.insert(
                (t.name.to_string(), p.partition_index),
                (p.committed_offset, metadata),
            );
        }
    }
    out
}

/// A new idempotent producer's id, from InitProducerId.
fn new_producer_id(addr: &str) -> i64 {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(-1)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let response = call(addr, &request, INIT_PRODUCER_ID_VERSION);
    assert_eq!(response.error_code, 0, "{response:?}");
    response.producer_id.0
}

/// Checks everything the single node had is served by `broker`, and the topic files are moved
/// aside; returns a fresh producer id (above every id handed out before).
fn assert_served(broker: &Broker, data_dir: &Path, legacy: &Legacy, above: i64) -> i64 {
    let addr = broker.addr();
    let (topics, cluster_id) = metadata(&addr);
    assert_eq!(
        cluster_id, legacy.cluster_id,
        "the cluster keeps the node's cluster id"
    );
    let expected: BTreeMap<String, (Uuid, i32, i16)> = legacy
        .topics
        .iter()
        .map(|(name, (id, n))| (name.clone(), (*id, *n, 0)))
        .collect();
    assert_eq!(topics, expected, "topics: ids and partition counts");
    assert_eq!(
        topic_config(&addr, ORDERS, "retention.ms"),
        (RETENTION_MS.to_string(), SOURCE_TOPIC_CONFIG)
    );
    assert_ne!(
        topic_config(&addr, EVENTS, "retention.ms").1,
        SOURCE_TOPIC_CONFIG
    );
    assert_eq!(
        read_all(&addr, &[ORDERS, EVENTS], broker.dir.path()),
        legacy.records
    );
    let want: BTreeMap<(String, i32), (i64, String)> = legacy
        .offsets
        .iter()
        .map(|(tp, o)| (tp.clone(), (*o, OFFSET_METADATA.to_string())))
        .collect();
    assert_eq!(committed(&addr, &legacy.offsets), want, "committed offsets");
    assert!(
        data_dir.join("meta/topics.imported").is_dir(),
        "topic files kept aside"
    );
    assert!(
        !data_dir.join("meta/topics").exists(),
        "meta/topics still there"
    );
    let id = new_producer_id(&addr);
    assert!(
        id > above && id >= legacy.producer_mark,
        "producer id {id} after {above}, mark {}",
        legacy.producer_mark
    );
    id
}

// Proves a single node's data directory upgrades in place: built by the library (no quorum),
// then served by the real binary (which forms a one-voter quorum and imports it), then served
// again after a restart, when the topic files are gone and the quorum's log is the only record.
#[test]
fn single_node_data_directory_upgrades_in_place() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let legacy = write_single_node_dir(&data_dir);
    assert_eq!(legacy.topics.len(), 3, "{:?}", legacy.topics);
    let old_max = *legacy.producer_ids.iter().max().unwrap();

    let mut broker = Broker::start_on(&data_dir, "");
    let first = assert_served(&broker, &data_dir, &legacy, old_max);
    let log = fs::read_to_string(&broker.log_path).unwrap();
    assert!(
        log.contains("cluster formed") && log.contains("imported_topics=3"),
        "{log}"
    );
    assert!(broker.terminate().success());

    let mut broker = Broker::start_on(&data_dir, "");
    assert_served(&broker, &data_dir, &legacy, first);
    let log = fs::read_to_string(&broker.log_path).unwrap();
    assert!(
        !log.contains("RECOVERED"),
        "topics recovered from partition directories:\n{log}"
    );
    assert!(broker.terminate().success());
}

/// The quorum's log segments in `data_dir`, in order.
fn raft_segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = fs::read_dir(data_dir.join("meta/raft"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("log-") && name.ends_with(".bin")
        })
        .collect();
    segments.sort();
    segments
}

/// Runs `bramble serve` on `data_dir` expecting it to exit by itself; its status and log.
fn serve_until_exit(data_dir: &Path, workdir: &Path) -> (ExitStatus, String) {
    let log_path = workdir.join("refused.log");
    let log = File::create(&log_path).unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(["--listen", &format!("{HOST}:{}", free_port())])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--node-id", &NODE_ID.to_string()])
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn bramble");
    let status = wait_bounded(&mut child, STARTUP_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let log = fs::read_to_string(&log_path).unwrap();
    (
        status.unwrap_or_else(|| panic!("bramble kept running on a damaged log:\n{log}")),
        log,
    )
}

// Proves the quorum's log recovers as its module promises (src/meta/store/mod.rs): garbage
// after the last record (a torn append) is cut with a warning and the node serves its topic;
// a flipped byte in the first record, with valid records after it, stops the node with an
// error naming the segment file.
#[test]
fn metadata_log_torn_tail_is_cut_and_damage_in_the_middle_refuses_to_start() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let mut broker = Broker::start_on(&data_dir, "");
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(s("kept")))
                .with_num_partitions(2)
                .with_replication_factor(1),
        ]);
    let created = call(&broker.addr(), &request, CREATE_TOPICS_VERSION);
    assert_eq!(created.topics[0].error_code, 0, "{:?}", created.topics[0]);
    let id = created.topics[0].topic_id;
    assert!(broker.terminate().success());

    let segments = raft_segments(&data_dir);
    let last = segments.last().expect("a log segment").clone();
    let good_len = fs::metadata(&last).unwrap().len();
    // A torn append: a record header promising more bytes than made it to the disk.
    let mut torn = 64u32.to_be_bytes().to_vec();
    torn.extend_from_slice(&[0xA5; 11]);
    let mut bytes = fs::read(&last).unwrap();
    bytes.extend_from_slice(&torn);
    fs::write(&last, &bytes).unwrap();

    let mut broker = Broker::start_on(&data_dir, "");
    let (topics, _) = metadata(&broker.addr());
    assert_eq!(topics.get("kept"), Some(&(id, 2, 0)), "{topics:?}");
    let log = fs::read_to_string(&broker.log_path).unwrap();
    assert!(log.contains("torn tail cut"), "{log}");
    assert!(log.contains(&format!("bytes_cut={}", torn.len())), "{log}");
    assert!(broker.terminate().success());
    assert!(fs::metadata(&last).unwrap().len() >= good_len);

    // Damage inside the first record's payload (past its length and CRC); later records are valid.
    let first = &raft_segments(&data_dir)[0];
    let mut bytes = fs::read(first).unwrap();
    bytes[9] ^= 0xFF;
    fs::write(first, &bytes).unwrap();
    let (status, log) = serve_until_exit(&data_dir, root.path());
    assert!(!status.success(), "started on a damaged log:\n{log}");
    assert!(
        log.contains(&first.display().to_string()),
        "file not named:\n{log}"
    );
    assert!(log.contains("damaged at byte 0"), "{log}");
}
