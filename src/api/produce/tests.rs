//! The topic rules as the Produce answer carries them: INVALID_RECORD with record_errors and
//! an error message for a keyless record on a compacted topic (nothing appended), and
//! log_append_time_ms plus a stamped batch on a LogAppendTime topic.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::broker::{Broker, Topic};
use crate::config::Config;
use crate::protocol::batch::{self, TimestampType as BatchTimestampType};

const OLD_TIMESTAMP_MS: i64 = 1_000_000_000_000;

fn open(dir: &std::path::Path) -> Broker {
    let config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    crate::broker::tests::open_with(config)
}

/// A record at `index` of its batch: keyed `key`, created at OLD_TIMESTAMP_MS, no producer id.
fn record(index: usize, key: Option<&'static [u8]>, value: Bytes) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: index as i64,
        sequence: -1 + index as i32,
        timestamp: OLD_TIMESTAMP_MS,
        key: key.map(Bytes::from_static),
        value: Some(value),
        headers: IndexMap::new(),
    }
}

/// One uncompressed batch of `records`.
fn encode(records: &[Record]) -> Bytes {
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options).unwrap();
    buf.freeze()
}

/// One batch of records valued "v", keyed `keys`.
fn records(keys: &[Option<&'static [u8]>]) -> Bytes {
    let records: Vec<Record> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| record(i, *key, Bytes::from_static(b"v")))
        .collect();
    encode(&records)
}

/// A fresh broker in `dir` with a topic `name` of `partitions` partitions and `configs`.
async fn broker_with_topic(
    dir: &std::path::Path,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> (Broker, Arc<Topic>) {
    let broker = open(dir);
    let configs = configs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let topic = broker
        .create_topic(name, partitions, 1, configs, false)
        .await
        .unwrap();
    (broker, topic)
}

fn request(topic: &str, records: Bytes) -> ProduceRequest {
    let partition = PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(records));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_data(vec![partition]);
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![topic])
}

async fn produce(broker: &Broker, topic: &str, records: Bytes) -> (i16, Option<String>, i64) {
    let response = super::handle(broker, &RequestHeader::default(), request(topic, records))
        .await
        .unwrap();
    let p = &response.responses[0].partition_responses[0];
    let errors: Vec<i32> = p.record_errors.iter().map(|e| e.batch_index).collect();
    if p.error_code != 0 {
        assert!(p.log_append_time_ms == -1);
        return (p.error_code, Some(format!("{errors:?}")), -1);
    }
    (p.error_code, None, p.log_append_time_ms)
}

// Proves the keyless records of a compacted topic are named in record_errors with
// INVALID_RECORD (87) and nothing of the batch is appended; a keyed batch is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_topic_refuses_null_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, topic) =
        broker_with_topic(dir.path(), "c", 1, &[("cleanup.policy", "compact")]).await;
    let refused = produce(&broker, "c", records(&[Some(b"k"), None, None])).await;
    assert_eq!(refused, (87, Some("[1, 2]".into()), -1));
    assert_eq!(topic.partition(0).unwrap().log.log_end_offset(), 0);
    let accepted = produce(&broker, "c", records(&[Some(b"k"), Some(b"")])).await;
    assert_eq!(accepted, (0, None, -1));
    broker.shutdown().await;
}

// Proves Kafka's v3+ rule: a partition's records holding two batches are refused with
// INVALID_RECORD (87) and nothing is appended; each batch alone is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_batches_for_one_partition_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, topic) = broker_with_topic(dir.path(), "t", 1, &[]).await;
    let one = records(&[Some(b"k")]);
    let two = Bytes::from([one.as_ref(), one.as_ref()].concat());
    let (code, _, _) = produce(&broker, "t", two).await;
    assert_eq!(code, 87);
    assert_eq!(topic.partition(0).unwrap().log.log_end_offset(), 0);
    assert_eq!(produce(&broker, "t", one).await.0, 0);
    broker.shutdown().await;
}

// Proves the compacted-topic key check is bounded per request, not only per batch: twelve
// partitions each carrying a gzip batch that expands to 2 MiB (about 2 KiB on the wire) get a
// budget of RECORDS_DECOMPRESSED_BYTES_MAX (16 MiB) in total, so the first seven are checked
// and appended and the rest answer MESSAGE_TOO_LARGE (10) without being decompressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_check_decompression_is_bounded_per_request() {
    const PARTITIONS: i32 = 12;
    const VALUE_BYTES: usize = 2 << 20;
    let dir = tempfile::tempdir().unwrap();
    let (broker, _topic) = broker_with_topic(
        dir.path(),
        "c",
        PARTITIONS,
        &[("cleanup.policy", "compact")],
    )
    .await;
    let bomb = Bytes::from(crate::protocol::records::tests::recompress(
        keyed_record(vec![0; VALUE_BYTES]).to_vec(),
        Compression::Gzip,
    ));
    assert!(bomb.len() < VALUE_BYTES / 100, "{} bytes", bomb.len());
    let partitions = (0..PARTITIONS)
        .map(|i| {
            PartitionProduceData::default()
                .with_index(i)
                .with_records(Some(bomb.clone()))
        })
        .collect();
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("c")))
        .with_partition_data(partitions);
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![topic]);
    let response = super::handle(&broker, &RequestHeader::default(), request)
        .await
        .unwrap();
    let codes: Vec<i16> = response.responses[0]
        .partition_responses
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes, [[0; 7].as_slice(), &[10; 5]].concat());
    broker.shutdown().await;
}

/// One uncompressed batch of one keyed record with `value`.
fn keyed_record(value: Vec<u8>) -> Bytes {
    encode(&[record(0, Some(b"k"), Bytes::from(value))])
}

// Proves a LogAppendTime topic answers log_append_time_ms and stores the batch stamped with
// it (type bit set, valid CRC); a CreateTime topic answers -1 and keeps the producer's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_append_time_is_stamped_and_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, stamped) = broker_with_topic(
        dir.path(),
        "s",
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    )
    .await;
    let before = crate::api::now_ms();
    let (code, _, append_time) = produce(&broker, "s", records(&[Some(b"k")])).await;
    assert_eq!(code, 0);
    assert!(append_time >= before, "{append_time} < {before}");
    let read = stamped.partition(0).unwrap().log.read(0, 1 << 20).await;
    let read = read.unwrap().records;
    let h = batch::validate(&read).unwrap();
    assert_eq!(h.timestamp_type(), BatchTimestampType::LogAppendTime);
    assert_eq!(h.max_timestamp, append_time);

    let created = broker
        .create_topic("t", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    assert_eq!(
        produce(&broker, "t", records(&[Some(b"k")])).await,
        (0, None, -1)
    );
    let read = created.partition(0).unwrap().log.read(0, 1 << 20).await;
    let h = batch::validate(&read.unwrap().records).unwrap();
    assert_eq!(
        (h.timestamp_type(), h.max_timestamp),
        (BatchTimestampType::CreateTime, OLD_TIMESTAMP_MS)
    );
    broker.shutdown().await;
}

// Proves a retried batch already in the log (a duplicate) is acknowledged for acks=all only
// once the ISR has it: with an ISR follower that never fetches, the retry times out as the
// first attempt did. It was answered success at once, so an isolated leader acknowledged a
// record its replacement never had (cluster simulation, seed 700017006).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_retry_of_a_duplicate_waits_for_the_isr() {
    use crate::replica::{Assignment, replica_ids};
    const TIMEOUT_MS: i32 = 300;
    let dir = tempfile::tempdir().unwrap();
    let (broker, topic) = broker_with_topic(dir.path(), "t", 1, &[]).await;
    let replica = topic.partition(0).unwrap();
    let (me, epoch) = (broker.identity.node_id, replica.leader_epoch());
    let both = replica_ids(&[me, me + 1]);
    let placement = Assignment {
        leader: me,
        leader_epoch: epoch,
        partition_epoch: 1,
        replicas: both.clone(),
        isr: both,
    };
    replica.state.apply(placement, tokio::time::Instant::now());
    assert_eq!(replica.state.leading(), Some(epoch));
    let batch = idempotent_batch(4_000, 0);
    for attempt in ["first", "retry"] {
        let request = request("t", batch.clone()).with_timeout_ms(TIMEOUT_MS);
        let response = super::handle(&broker, &RequestHeader::default(), request)
            .await
            .unwrap();
        let p = &response.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 7, "{attempt}: REQUEST_TIMED_OUT expected");
    }
    assert_eq!(
        replica.log.log_end_offset(),
        1,
        "the retry was not written again"
    );
    broker.shutdown().await;
}

fn idempotent_batch(producer_id: i64, sequence: i32) -> Bytes {
    encode(&[Record {
        producer_id,
        producer_epoch: 0,
        sequence,
        ..record(0, Some(b"k"), Bytes::from_static(b"v"))
    }])
}
