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
mod tests;
