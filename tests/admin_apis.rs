//! The admin APIs of issue 9 item 14 over raw frames built from kafka-protocol types, for the
//! cases no real client sends (tests/compat/test_admin_apis.py drives the clients): the legacy
//! AlterConfigs replacing a topic's whole override set, AlterReplicaLogDirs, the edges of
//! DescribeTopicPartitions' paging, DeleteRecords' special offsets and refusals, DescribeLogDirs
//! by version, the advertised version ranges, and the refusal of a dynamic broker config DELETE
//! of a static key.

mod common;

use common::{Broker, call, s};
use kafka_protocol::messages::alter_configs_request::{
    AlterConfigsResource, AlterableConfig as LegacyConfig,
};
use kafka_protocol::messages::alter_replica_log_dirs_request::{
    AlterReplicaLogDir, AlterReplicaLogDirTopic,
};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;

const RESOURCE_TOPIC: i8 = 2;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REQUEST: i16 = 42;
const POLICY_VIOLATION: i16 = 44;
const LOG_DIR_NOT_FOUND: i16 = 57;

fn name(v: &str) -> TopicName {
    TopicName(s(v))
}

fn create_topic(addr: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(s(k))
                .with_value(Some(s(v)))
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(1)
                .with_configs(configs),
        ]);
    let response = call(addr, &request, 7);
    assert_eq!(response.topics[0].error_code, 0, "{:?}", response.topics[0]);
}

/// (value, source) of each config of a topic.
fn topic_configs(addr: &str, topic: &str) -> Vec<(String, String, i8)> {
    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(s(topic))
            // Null: every config (an empty list asks for none).
            .with_configuration_keys(None),
    ]);
    let response = call(addr, &request, 4);
    response.results[0]
        .configs
        .iter()
        .map(|c| {
            let value = c.value.as_deref().unwrap_or("").to_string();
            (c.name.to_string(), value, c.config_source)
        })
        .collect()
}

fn config<'a>(all: &'a [(String, String, i8)], key: &str) -> &'a (String, String, i8) {
    all.iter()
        .find(|(k, _, _)| k == key)
        .unwrap_or_else(|| panic!("{key} not in {all:?}"))
}

fn legacy_alter(addr: &str, topic: &str, configs: &[(&str, Option<&str>)]) -> i16 {
    let configs = configs
        .iter()
        .map(|(k, v)| LegacyConfig::default().with_name(s(k)).with_value(v.map(s)))
        .collect();
    let request = AlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(s(topic))
            .with_configs(configs),
    ]);
    let response = call(addr, &request, 2);
    if response.responses[0].error_code == 0 {
        assert_eq!(response.responses[0].error_message, None);
    }
    response.responses[0].error_code
}

#[test]
fn legacy_alter_configs_replaces_the_whole_set() {
    let broker = Broker::start();
    let addr = broker.addr();
    create_topic(&addr, "legacy", 1, &[("segment.ms", "3600000")]);
    assert_eq!(
        legacy_alter(&addr, "legacy", &[("retention.ms", Some("60000"))]),
        0
    );
    let after = topic_configs(&addr, "legacy");
    let retention = config(&after, "retention.ms");
    assert_eq!((retention.1.as_str(), retention.2), ("60000", SOURCE_TOPIC));
    // Not listed: back to the default.
    assert_eq!(config(&after, "segment.ms").2, SOURCE_DEFAULT);
    // Null values are refused and change nothing.
    let refused = legacy_alter(&addr, "legacy", &[("retention.ms", None)]);
    assert_eq!(refused, INVALID_REQUEST);
    assert_eq!(
        config(&topic_configs(&addr, "legacy"), "retention.ms").1,
        "60000"
    );
}

#[test]
fn alter_replica_log_dirs_only_to_the_node_dir() {
    let broker = Broker::start();
    let addr = broker.addr();
    create_topic(&addr, "dirs", 1, &[]);
    let ours = broker.dir.path().join("data");
    let dir = |path: &str| {
        AlterReplicaLogDir::default()
            .with_path(s(path))
            .with_topics(vec![
                AlterReplicaLogDirTopic::default()
                    .with_name(name("dirs"))
                    .with_partitions(vec![0]),
            ])
    };
    for version in [1, 2] {
        let request = AlterReplicaLogDirsRequest::default().with_dirs(vec![
            dir(ours.to_str().unwrap()),
            dir("/nonexistent/elsewhere"),
        ]);
        let response = call(&addr, &request, version);
        let codes: Vec<i16> = response
            .results
            .iter()
            .map(|t| t.partitions[0].error_code)
            .collect();
        assert_eq!(codes, vec![0, LOG_DIR_NOT_FOUND], "v{version}");
    }
}

fn describe_partitions(
    addr: &str,
    topics: &[&str],
    limit: i32,
    cursor: Option<(&str, i32)>,
) -> DescribeTopicPartitionsResponse {
    let request = DescribeTopicPartitionsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|t| TopicRequest::default().with_name(name(t)))
                .collect(),
        )
        .with_response_partition_limit(limit)
        .with_cursor(cursor.map(|(t, p)| {
            Cursor::default()
                .with_topic_name(name(t))
                .with_partition_index(p)
        }));
    call(addr, &request, 0)
}

#[test]
fn describe_topic_partitions_pages_and_refuses_bad_cursors() {
    let broker = Broker::start();
    let addr = broker.addr();
    create_topic(&addr, "a", 2, &[]);
    create_topic(&addr, "b", 1, &[]);
    // Every topic (empty list), one partition per page: a0, a1, b0, then no cursor.
    let mut cursor: Option<(String, i32)> = None;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let page = describe_partitions(
            &addr,
            &[],
            1,
            cursor.as_ref().map(|(t, p)| (t.as_str(), *p)),
        );
        for t in &page.topics {
            let topic = t.name.as_ref().unwrap().to_string();
            seen.extend(
                t.partitions
                    .iter()
                    .map(|p| (topic.clone(), p.partition_index)),
            );
        }
        cursor = page
            .next_cursor
            .map(|c| (c.topic_name.to_string(), c.partition_index));
    }
    let want = [("a", 0), ("a", 1), ("b", 0)].map(|(t, p)| (t.to_string(), p));
    assert_eq!(seen, want);
    assert_eq!(cursor, None);

    // An unknown topic is answered with its error; a cursor naming a topic not asked for is
    // INVALID_REQUEST, as Kafka.
    let page = describe_partitions(&addr, &["a", "nope"], 10, None);
    let codes: Vec<i16> = page.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, vec![0, UNKNOWN_TOPIC_OR_PARTITION]);
    let page = describe_partitions(&addr, &["a"], 10, Some(("b", 0)));
    assert_eq!(page.topics[0].error_code, INVALID_REQUEST);
}

fn produce(addr: &str, topic: &str, records: usize) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let batch = bramble::client::producer::encode_batch(
        &bytes::Bytes::from_static(b"value"),
        records,
        now_ms,
    )
    .unwrap();
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch)),
                ]),
        ]);
    let response = call(addr, &request, 9);
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
}

/// (error code, low watermark) of DeleteRecords on partition 0 of `topic`.
fn delete_records(addr: &str, topic: &str, offset: i64, version: i16) -> (i16, i64) {
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            DeleteRecordsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(offset),
                ]),
        ]);
    let response = call(addr, &request, version);
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.low_watermark)
}

#[test]
fn delete_records_offsets_and_refusals() {
    let broker = Broker::start();
    let addr = broker.addr();
    create_topic(&addr, "dr", 1, &[]);
    create_topic(&addr, "compacted", 1, &[("cleanup.policy", "compact")]);
    produce(&addr, "dr", 5);
    assert_eq!(delete_records(&addr, "dr", 2, 0), (0, 2));
    // Lower than the start: nothing changes, the answer is the current start.
    assert_eq!(delete_records(&addr, "dr", 1, 1), (0, 2));
    assert_eq!(delete_records(&addr, "dr", 6, 2).0, OFFSET_OUT_OF_RANGE);
    assert_eq!(delete_records(&addr, "dr", -1, 2), (0, 5));
    assert_eq!(
        delete_records(&addr, "nope", 0, 2).0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(delete_records(&addr, "compacted", 0, 2).0, POLICY_VIOLATION);
}

#[test]
fn describe_log_dirs_space_from_v4_and_advertised_ranges() {
    let broker = Broker::start();
    let addr = broker.addr();
    let v1 = call(&addr, &DescribeLogDirsRequest::default(), 1);
    assert_eq!(v1.results[0].total_bytes, -1);
    let v4 = call(&addr, &DescribeLogDirsRequest::default(), 4);
    let dir = &v4.results[0];
    assert!(dir.total_bytes > 0 && dir.usable_bytes >= 0, "{dir:?}");
    let canonical = std::fs::canonicalize(broker.dir.path().join("data")).unwrap();
    assert_eq!(dir.log_dir.as_str(), canonical.to_str().unwrap());

    let versions = call(&addr, &ApiVersionsRequest::default(), 3);
    let range = |key: ApiKey| {
        let v = versions
            .api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .unwrap_or_else(|| panic!("{key:?} not advertised"));
        (v.min_version, v.max_version)
    };
    // Apache Kafka 4.0's ranges.
    assert_eq!(range(ApiKey::DeleteRecords), (0, 2));
    assert_eq!(range(ApiKey::AlterConfigs), (0, 2));
    assert_eq!(range(ApiKey::AlterReplicaLogDirs), (1, 2));
    assert_eq!(range(ApiKey::DescribeLogDirs), (1, 4));
    assert_eq!(range(ApiKey::DescribeTopicPartitions), (0, 0));
}

fn earliest(addr: &str, topic: &str) -> i64 {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let request = ListOffsetsRequest::default().with_topics(vec![
        ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![
                ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-2),
            ]),
    ]);
    call(addr, &request, 7).topics[0].partitions[0].offset
}

/// Retention passes run this often in the test below.
const RETENTION_CHECK_MS: u64 = 100;
/// How long the dynamic change may take to show in retention (many passes).
const RETENTION_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[test]
fn dynamic_broker_config_applies_to_existing_partitions() {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let broker = Broker::start_with_config(&format!("retention_check_ms = {RETENTION_CHECK_MS}"));
    let addr = broker.addr();
    create_topic(&addr, "live", 1, &[]);
    // Fresh records: the static 7-day log.roll.ms and log.retention.ms keep them.
    produce(&addr, "live", 5);
    std::thread::sleep(std::time::Duration::from_millis(5 * RETENTION_CHECK_MS));
    assert_eq!(earliest(&addr, "live"), 0);
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(s("1"))
            .with_configs(
                ["log.roll.ms", "log.retention.ms"]
                    .map(|key| {
                        AlterableConfig::default()
                            .with_name(s(key))
                            .with_value(Some(s("1")))
                    })
                    .to_vec(),
            ),
    ]);
    let response = call(&addr, &request, 1);
    assert_eq!(response.responses[0].error_code, 0);
    // The existing partition now rolls its aged segment, and retention deletes it.
    let deadline = std::time::Instant::now() + RETENTION_WAIT;
    while earliest(&addr, "live") != 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            broker.log_tail()
        );
        std::thread::sleep(std::time::Duration::from_millis(RETENTION_CHECK_MS));
    }
}

#[test]
fn dynamic_broker_config_refuses_a_delete_of_a_static_key() {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    const OP_DELETE: i8 = 1;
    let broker = Broker::start();
    let addr = broker.addr();
    for key in ["log.dirs", "broker.id", "no.such.config"] {
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(s("1"))
                .with_configs(vec![
                    AlterableConfig::default()
                        .with_name(s(key))
                        .with_config_operation(OP_DELETE)
                        .with_value(None),
                ]),
        ]);
        let response = &call(&addr, &request, 1).responses[0];
        assert_eq!(response.error_code, INVALID_REQUEST, "{key}");
        let message = response.error_message.as_deref().unwrap_or_default();
        assert!(
            message.contains("Cannot update these configs dynamically") && message.contains(key),
            "{key}: {message}"
        );
    }
}

/// Random bodies sent per API version in the test below.
const NOISE_BODIES: usize = 40;
const NOISE_BODY_BYTES_MAX: usize = 96;

#[test]
fn new_apis_survive_noise_and_extreme_values() {
    let mut broker = Broker::start();
    let addr = broker.addr();
    create_topic(&addr, "edge", 1, &[]);
    // Garbage bodies (xorshift noise) for every version of every new API: the broker may close
    // the connection, never crash.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let apis: [(i16, std::ops::RangeInclusive<i16>); 5] = [
        (21, 0..=2),
        (33, 0..=2),
        (34, 1..=2),
        (35, 1..=4),
        (75, 0..=0),
    ];
    for (key, versions) in apis {
        for version in versions {
            for i in 0..NOISE_BODIES {
                let len = (next() as usize) % NOISE_BODY_BYTES_MAX;
                let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let mut stream = common::connect(&addr);
                use std::io::Write;
                let _ = stream.write_all(&common::frame_v1(key, version, i as i32, &body));
                let _ = common::read_frame(&mut stream);
            }
        }
    }
    assert!(broker.is_alive(), "{}", broker.log_tail());
    common::assert_api_versions_v0_ok(&addr);

    // Well-formed requests with extreme values are answered.
    assert_eq!(
        delete_records(&addr, "edge", i64::MAX, 2).0,
        OFFSET_OUT_OF_RANGE
    );
    assert_eq!(
        delete_records(&addr, "edge", i64::MIN, 2).0,
        OFFSET_OUT_OF_RANGE
    );
    let page = describe_partitions(&addr, &["edge"], i32::MIN, Some(("edge", i32::MAX)));
    assert_eq!(page.topics[0].error_code, 0);
    assert!(page.topics[0].partitions.is_empty());
    let page = describe_partitions(&addr, &["edge"], i32::MAX, Some(("edge", -1)));
    assert_eq!(page.topics[0].error_code, INVALID_REQUEST);
}
