//! api::produce (key 0): the write path, in two halves. [`stage`] runs in request order: it
//! resolves each partition, and `log::Partition::append_staged` validates the batches, assigns
//! offsets and queues the write. [`Staged::finish`] then waits until the writes are durable (per
//! the flush policy) and builds the answer. The connection stages its next pipelined request
//! while this one waits, so one group commit covers several requests of a single producer.
//! acks=0 gets no response at all, as Kafka specifies.
//!
//! Before the append, [`apply_topic_rules`] applies what the topic's configs ask beyond batch
//! validation (`protocol::records`): a compacted topic refuses records without a key
//! (INVALID_RECORD with record_errors, as Kafka), and `message.timestamp.type=LogAppendTime`
//! stamps each batch with the broker's clock, answered as `log_append_time_ms`. The key check
//! walks (and decompresses) every record, so it runs off the async worker (`broker::blocking`)
//! and its decompressed bytes are bounded per request in total, not only per batch: a request of
//! thousands of small compressed bombs must not buy seconds of CPU.
//!
//! As Kafka (ProduceRequest.validateRecords for v3+, the only versions served), each partition's
//! records must be exactly one batch: INVALID_RECORD otherwise.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, RequestHeader, TopicName};
use uuid::Uuid;

use super::str_bytes;
use crate::broker::{Broker, topic};
use crate::config::MessageTimestampType;
use crate::log::{self, AppendInfo, LogError};
use crate::protocol::{batch, records as batch_records};
use crate::replica::{PartitionState, WaitError};
use std::time::Duration;
use tokio::time::Instant;

/// Kafka's valid `acks` values: all in-sync replicas, none, leader only.
const ACKS_VALID: [i16; 3] = [-1, 0, 1];

/// Null-key records named in one INVALID_RECORD answer (Kafka names every one; a 1 MiB batch of
/// tiny records would make that answer megabytes).
const RECORD_ERRORS_MAX: usize = 100;

/// The key check may decompress this many times the request's record bytes in total (and at
/// least one batch's cap, `RECORDS_DECOMPRESSED_BYTES_MAX`): room for the ~10x a legitimate
/// batch expands to, while a request of bombs runs out after a bounded amount of work.
const KEY_CHECK_EXPANSION_MAX: usize = 16;

/// Kafka's message for a partition whose records are not exactly one batch.
const ONE_BATCH_ONLY: &str =
    "Produce requests with version 3 are only allowed to contain exactly one record batch";

/// A queued write and what its answer waits on: durability here, and for acks=all the ISR.
struct Pending {
    write: Written,
    state: Arc<PartitionState>,
    epoch: i32,
}

/// What a partition's append came to, before the waits.
enum Written {
    /// Queued: durable once the writer completes it.
    Queued(log::Staged),
    /// A producer's retry of a batch already in the log (durable here), at its original offsets.
    Duplicate(AppendInfo),
}

/// A partition's answer so far, and the write it still waits for (None: already answered).
type PartitionSlot = (PartitionProduceResponse, Option<Pending>);

/// A produce request whose writes are queued in order; owns everything, so it outlives the call.
pub struct Staged {
    acks: i16,
    /// acks=all waits for the ISR until then (the request's timeout_ms).
    deadline: Instant,
    topics: Vec<(TopicName, Uuid, Vec<PartitionSlot>)>,
}

pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: ProduceRequest,
) -> Option<ProduceResponse> {
    stage(broker, header, request).await.finish().await
}

/// The ordered half: every partition's batches validated, offsets assigned, writes queued.
pub async fn stage(broker: &Broker, _header: &RequestHeader, request: ProduceRequest) -> Staged {
    let acks = request.acks;
    let timeout_ms = u64::try_from(request.timeout_ms).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut key_check_budget = key_check_bytes_max(&request);
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic_data in request.topic_data {
        // Auto-creation is Metadata's (as on Kafka): a produce never waits on the controller.
        let topic = broker.topic(&topic_data.name);
        let log_append_time = topic.as_ref().is_some_and(|t| {
            t.timestamp_type(broker.config.message_timestamp_type)
                == MessageTimestampType::LogAppendTime
        });
        let mut slots = Vec::with_capacity(topic_data.partition_data.len());
        for pd in topic_data.partition_data {
            let target = match &topic {
                Some(t) => crate::api::lead(broker, t, pd.index)
                    .map(|r| (r.state.clone(), r.leader_epoch())),
                None if topic::validate_name(&topic_data.name).is_err() => {
                    Err(ResponseError::InvalidTopicException)
                }
                None => Err(ResponseError::UnknownTopicOrPartition),
            };
            let rules = Rules {
                log_append_time,
                acks,
                snappy_bytes_max: broker.config.message_bytes_max as usize,
                key_checks: &broker.key_checks,
            };
            let budget = &mut key_check_budget;
            slots.push(stage_partition(target, pd.index, pd.records, rules, budget).await);
        }
        topics.push((topic_data.name, topic_data.topic_id, slots));
    }
    Staged {
        acks,
        deadline,
        topics,
    }
}

impl Staged {
    /// The waiting half: all partitions' writes become durable together (one group commit).
    pub async fn finish(self) -> Option<ProduceResponse> {
        let mut responses = Vec::with_capacity(self.topics.len());
        let (acks, deadline) = (self.acks, self.deadline);
        for (name, topic_id, slots) in self.topics {
            let partition_responses =
                join_all(slots.into_iter().map(|(response, pending)| async move {
                    match pending {
                        Some(p) => answer(response, replicated(p, acks, deadline).await),
                        None => response,
                    }
                }))
                .await;
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_topic_id(topic_id)
                    .with_partition_responses(partition_responses),
            );
        }
        if self.acks == 0 {
            return None;
        }
        Some(ProduceResponse::default().with_responses(responses))
    }
}

/// What the request and the topic ask of one partition's append.
#[derive(Clone, Copy)]
struct Rules<'a> {
    log_append_time: bool,
    acks: i16,
    /// Cap on the one buffer a snappy batch of a compacted topic decodes into: the node's
    /// `message_bytes_max` (not the topic's), so the memory model can count it, one per permit
    /// of `key_checks`.
    snappy_bytes_max: usize,
    /// The node's key checks at once (`Broker::key_checks`), held across one partition's check.
    key_checks: &'a tokio::sync::Semaphore,
}

async fn stage_partition(
    target: Result<(Arc<PartitionState>, i32), ResponseError>,
    index: i32,
    records: Option<Bytes>,
    rules: Rules<'_>,
    key_check_budget: &mut usize,
) -> PartitionSlot {
    let acks = rules.acks;
    let response = PartitionProduceResponse::default().with_index(index);
    let fail = |err: ResponseError, message: &str| {
        let r = response
            .clone()
            .with_error_code(err.code())
            .with_error_message(Some(str_bytes(message)));
        (r, None)
    };
    if !ACKS_VALID.contains(&acks) {
        return fail(
            ResponseError::InvalidRequiredAcks,
            &format!("acks must be -1, 0 or 1, not {acks}"),
        );
    }
    let (state, leader_epoch) = match target {
        Ok(target) => target,
        Err(e) => return fail(e, "this broker does not host that topic-partition"),
    };
    let log = state.log.clone();
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return fail(
            ResponseError::InvalidRecord,
            "produce request carried no record batch",
        );
    };
    if !one_batch(&records) {
        return fail(ResponseError::InvalidRecord, ONE_BATCH_ONLY);
    }
    // Waits its turn only when the check will run (a compacted topic); the permit is never
    // closed, so `ok()` only drops an impossible error.
    let key_check = match log.cleanup().compact {
        true => rules.key_checks.acquire().await.ok(),
        false => None,
    };
    let applied = apply_topic_rules(&log, records, rules, key_check_budget);
    drop(key_check);
    let (records, append_time) = match applied {
        Ok(applied) => applied,
        Err(refused) => return (refused.answer(response), None),
    };
    // Leadership is checked under the partition's role lock, which a leader change also takes:
    // no write lands after this node stopped leading at this epoch.
    let staged = {
        let _held = state.hold().await;
        if state.leading() != Some(leader_epoch) {
            return fail(
                ResponseError::NotLeaderOrFollower,
                "leadership moved; refresh metadata",
            );
        }
        if acks == -1 && state.isr_len() < state.min_isr() as usize {
            let message = format!(
                "the ISR has {} replica(s), fewer than min.insync.replicas {}",
                state.isr_len(),
                state.min_isr()
            );
            return fail(ResponseError::NotEnoughReplicas, &message);
        }
        log.append_staged(records, leader_epoch).await
    };
    let response = response.with_log_append_time_ms(append_time);
    let write = match staged {
        Ok(write) => Written::Queued(write),
        // Answered with its original offsets, but only once they are replicated as a fresh
        // append's would be: the first attempt may have timed out waiting for the ISR.
        Err(LogError::DuplicateSequence { original, .. }) => Written::Duplicate(original),
        Err(e) => return (answer(response.clone(), Err(Refusal::Log(e))), None),
    };
    let pending = Pending {
        write,
        state,
        epoch: leader_epoch,
    };
    (response, Some(pending))
}

/// Waits for a queued write: durable here, then for acks=all in every ISR member's durable log
/// (the high watermark passed it), with the ISR still at least min.insync.replicas.
async fn replicated(p: Pending, acks: i16, deadline: Instant) -> Result<AppendInfo, Refusal> {
    let info = match p.write {
        Written::Queued(write) => match write.durable().await {
            Ok(info) => info,
            // Found to be a retry once staged: the same as the duplicate below.
            Err(LogError::DuplicateSequence { original, .. }) => original,
            Err(e) => return Err(Refusal::Log(e)),
        },
        // A retry of a batch already in the log: as good as appended at its first offsets,
        // and it too must be replicated before acks=all answers.
        Written::Duplicate(original) => original,
    };
    if acks != -1 {
        return Ok(info);
    }
    let end = info.last_offset.saturating_add(1);
    match p.state.wait_replicated(end, p.epoch, deadline).await {
        Ok(()) => {}
        Err(WaitError::TimedOut) => {
            return Err(Refusal::Code(
                ResponseError::RequestTimedOut,
                "the in-sync replicas did not all have the records within the request's timeout"
                    .into(),
            ));
        }
        Err(WaitError::NotLeader) => {
            return Err(Refusal::Code(
                ResponseError::NotLeaderOrFollower,
                "leadership moved before the records were replicated".into(),
            ));
        }
    }
    let (isr, min) = (p.state.isr_len(), p.state.min_isr());
    if isr < min as usize {
        return Err(Refusal::Code(
            ResponseError::NotEnoughReplicasAfterAppend,
            format!("written, but the ISR shrank to {isr}, below min.insync.replicas {min}"),
        ));
    }
    Ok(info)
}

/// Why a written partition is not answered with success.
enum Refusal {
    Log(LogError),
    Code(ResponseError, String),
}

/// A partition's answer from the outcome of its append.
fn answer(
    response: PartitionProduceResponse,
    appended: Result<AppendInfo, Refusal>,
) -> PartitionProduceResponse {
    let appended = match appended {
        // A producer's retry of a batch already in the log: Kafka answers success with the
        // original offsets (not DUPLICATE_SEQUENCE_NUMBER), so the client completes the send.
        Err(Refusal::Log(LogError::DuplicateSequence { original, .. })) => Ok(original),
        Err(Refusal::Code(err, message)) => {
            tracing::debug!(partition = response.index, error = %message, "produce not acknowledged");
            return response
                .with_error_code(err.code())
                .with_log_append_time_ms(-1)
                .with_error_message(Some(str_bytes(message)));
        }
        Err(Refusal::Log(e)) => Err(e),
        Ok(info) => Ok(info),
    };
    match appended {
        Ok(info) => response
            .with_base_offset(info.base_offset)
            .with_log_start_offset(info.log_start_offset),
        Err(e) => {
            let err = match &e {
                LogError::Corrupt(_) => ResponseError::CorruptMessage,
                LogError::TooLarge { .. } => ResponseError::MessageTooLarge,
                LogError::WriterStopped => ResponseError::NotLeaderOrFollower,
                LogError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
                LogError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
                LogError::OffsetOutOfRange { .. }
                | LogError::Io { .. }
                | LogError::CorruptStored { .. }
                | LogError::DuplicateSequence { .. }
                | LogError::UnexpectedOffset { .. } => ResponseError::KafkaStorageError,
            };
            tracing::debug!(partition = response.index, error = %e, "produce refused");
            response
                .with_error_code(err.code())
                .with_log_append_time_ms(-1)
                .with_error_message(Some(str_bytes(e.to_string())))
        }
    }
}

/// Why a partition's batches were refused by its topic's rules.
struct Refused {
    error: ResponseError,
    message: String,
    /// Kafka's per-record errors: (record index, message).
    records: Vec<(i32, String)>,
}

impl Refused {
    fn answer(self, response: PartitionProduceResponse) -> PartitionProduceResponse {
        tracing::debug!(partition = response.index, error = %self.message, "produce refused");
        let record_errors = self
            .records
            .into_iter()
            .map(|(index, message)| {
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(index)
                    .with_batch_index_error_message(Some(str_bytes(message)))
            })
            .collect();
        response
            .with_error_code(self.error.code())
            .with_error_message(Some(str_bytes(self.message)))
            .with_record_errors(record_errors)
    }
}

/// Whether `records` hold no more than one batch (Kafka's rule for Produce v3+). Reads only the
/// first header: a buffer too short for its batch, or not a batch at all, passes here and is
/// refused by the append's validation.
fn one_batch(records: &[u8]) -> bool {
    batch::BatchHeader::parse(records).map_or(true, |h| h.total_bytes() >= records.len())
}

/// The decompressed bytes the key check may spend on the whole request (see
/// [`KEY_CHECK_EXPANSION_MAX`]).
fn key_check_bytes_max(request: &ProduceRequest) -> usize {
    let record_bytes: usize = request
        .topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .map(|p| p.records.as_ref().map_or(0, Bytes::len))
        .sum();
    record_bytes
        .saturating_mul(KEY_CHECK_EXPANSION_MAX)
        .max(crate::protocol::timestamps::RECORDS_DECOMPRESSED_BYTES_MAX)
}

/// The topic's rules beyond batch validation, applied to every batch of one partition: a
/// compacted topic refuses records with a null key (reading at most `key_check_budget` bytes of
/// records, and taking what it read off it); LogAppendTime stamps the batches with the clock,
/// returned with them (else -1). Batches that fail validation pass through untouched: the
/// append reports them.
fn apply_topic_rules(
    log: &log::Partition,
    records: Bytes,
    rules: Rules<'_>,
    key_check_budget: &mut usize,
) -> Result<(Bytes, i64), Refused> {
    let log_append_time = rules.log_append_time;
    let compact = log.cleanup().compact;
    if !compact && !log_append_time {
        return Ok((records, -1));
    }
    let Ok(batches) = batch::split(&records) else {
        return Ok((records, -1));
    };
    if compact {
        // Decompressing is CPU work without an await: hand the worker's other tasks away.
        crate::broker::blocking(|| {
            let mut first_index = 0usize;
            for (h, range) in &batches {
                let bytes = &records[range.clone()];
                check_keys(
                    bytes,
                    h,
                    first_index,
                    rules.snappy_bytes_max,
                    key_check_budget,
                )?;
                first_index += usize::try_from(h.record_count).unwrap_or(0);
            }
            Ok(())
        })?;
    }
    if !log_append_time {
        return Ok((records, -1));
    }
    let now = super::now_ms();
    let mut stamped = records.to_vec();
    for (_, range) in &batches {
        batch_records::stamp_log_append_time(&mut stamped[range.clone()], now);
    }
    Ok((Bytes::from(stamped), now))
}

/// Kafka's LogValidator rule for compacted topics: every record needs a key. `first_index` is the
/// index of the batch's first record among the partition's records in this request. At most one
/// batch's cap of `budget` is spent, and what the walk read is taken off it.
fn check_keys(
    bytes: &[u8],
    h: &batch::BatchHeader,
    first_index: usize,
    snappy_bytes_max: usize,
    budget: &mut usize,
) -> Result<(), Refused> {
    let cap = crate::protocol::timestamps::RECORDS_DECOMPRESSED_BYTES_MAX;
    let mut batch_budget = (*budget).min(cap);
    let before = batch_budget;
    let nulls = batch_records::null_key_records(
        bytes,
        h,
        &mut batch_budget,
        snappy_bytes_max,
        RECORD_ERRORS_MAX,
    );
    *budget -= before - batch_budget;
    let nulls = match nulls {
        Ok(nulls) if nulls.is_empty() => return Ok(()),
        Ok(nulls) => nulls,
        Err(e) => {
            let error = match e {
                batch_records::RecordsError::TooLarge(_) => ResponseError::MessageTooLarge,
                _ => ResponseError::CorruptMessage,
            };
            let message = e.to_string();
            return Err(Refused {
                error,
                message,
                records: Vec::new(),
            });
        }
    };
    let message = "Compacted topic cannot accept message without key.".to_string();
    let records = nulls
        .into_iter()
        .map(|i| {
            let index = i32::try_from(first_index + i).unwrap_or(i32::MAX);
            (index, message.clone())
        })
        .collect();
    Err(Refused {
        error: ResponseError::InvalidRecord,
        message,
        records,
    })
}

#[cfg(test)]
mod tests {
    //! The topic rules as the Produce answer carries them: INVALID_RECORD with record_errors and
    //! an error message for a keyless record on a compacted topic (nothing appended), and
    //! log_append_time_ms plus a stamped batch on a LogAppendTime topic.

    use std::collections::BTreeMap;

    use bytes::{Bytes, BytesMut};
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, RequestHeader, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    use crate::broker::{Advertised, Broker};
    use crate::config::Config;
    use crate::io::DiskWriter;
    use crate::protocol::batch::{self, TimestampType as BatchTimestampType};

    const OLD_TIMESTAMP_MS: i64 = 1_000_000_000_000;

    fn open(dir: &std::path::Path) -> Broker {
        let config = Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        };
        let writer = DiskWriter::start(&config.data_dir).unwrap();
        let advertised = Advertised {
            host: "127.0.0.1".into(),
            port: 9092,
        };
        Broker::open(config, advertised, writer).unwrap()
    }

    fn records(keys: &[Option<&'static [u8]>]) -> Bytes {
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1 + i as i32,
                timestamp: OLD_TIMESTAMP_MS,
                key: key.map(Bytes::from_static),
                value: Some(Bytes::from_static(b"v")),
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, records.iter(), &options).unwrap();
        buf.freeze()
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
        let broker = open(dir.path());
        let configs = BTreeMap::from([("cleanup.policy".into(), "compact".into())]);
        let topic = broker
            .create_topic("c", 1, 1, configs, false)
            .await
            .unwrap();
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
        let broker = open(dir.path());
        let topic = broker
            .create_topic("t", 1, 1, BTreeMap::new(), false)
            .await
            .unwrap();
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
        let broker = open(dir.path());
        let configs = BTreeMap::from([("cleanup.policy".into(), "compact".into())]);
        broker
            .create_topic("c", PARTITIONS, 1, configs, false)
            .await
            .unwrap();
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
        let record = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: OLD_TIMESTAMP_MS,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from(value)),
            headers: IndexMap::new(),
        };
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, [record].iter(), &options).unwrap();
        buf.freeze()
    }

    // Proves a LogAppendTime topic answers log_append_time_ms and stores the batch stamped with
    // it (type bit set, valid CRC); a CreateTime topic answers -1 and keeps the producer's time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn log_append_time_is_stamped_and_answered() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path());
        let configs = BTreeMap::from([("message.timestamp.type".into(), "LogAppendTime".into())]);
        let stamped = broker
            .create_topic("s", 1, 1, configs, false)
            .await
            .unwrap();
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
        let broker = open(dir.path());
        let topic = broker
            .create_topic("t", 1, 1, BTreeMap::new(), false)
            .await
            .unwrap();
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
        let record = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence,
            timestamp: OLD_TIMESTAMP_MS,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: IndexMap::new(),
        };
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, [record].iter(), &options).unwrap();
        buf.freeze()
    }
}
