//! api::fetch (key 1): the read path. Reads whole batches from each partition's log, bounded by
//! the request's max_bytes, each partition's max_bytes and the node's `fetch_bytes_max`; at least
//! one whole batch of the first non-empty partition even when it is larger (KIP-74), so a large
//! record never stalls a consumer. With fewer than min_bytes available it long-polls: it waits on
//! the partitions' high-watermark notifiers until data arrives or max_wait_ms passes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::select_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, RequestHeader, TopicName};
use tokio::time::Instant;
use uuid::Uuid;

use crate::broker::{Broker, Replica};
use crate::log::LogError;

/// Fetch v13 replaced topic names with topic ids.
const TOPIC_ID_VERSION_MIN: i16 = 13;

/// One requested partition, resolved once and re-read on every long-poll round.
struct Wanted {
    topic_slot: usize,
    partition: i32,
    replica: Result<Arc<Replica>, ResponseError>,
    fetch_offset: i64,
    max_bytes: usize,
}

pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: FetchRequest,
) -> FetchResponse {
    let version = header.request_api_version;
    let (topics, wanted) = resolve(broker, version, &request);
    let max_bytes = usize::try_from(request.max_bytes)
        .unwrap_or(0)
        .min(broker.config.fetch_bytes_max);
    // Kafka answers as soon as min_bytes are readable; min_bytes <= 0 means at once.
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_wait = Duration::from_millis(
        u64::try_from(request.max_wait_ms)
            .unwrap_or(0)
            .min(broker.config.fetch_wait_ms_max),
    );
    let deadline = Instant::now() + max_wait;
    // Subscribe before the first read so no append between read and wait is missed.
    let mut watchers: Vec<_> = wanted
        .iter()
        .filter_map(|w| w.replica.as_ref().ok())
        .map(|r| r.log.subscribe())
        .collect();
    loop {
        let (partitions, bytes, any_error) = read_all(&wanted, max_bytes).await;
        let waited_enough = Instant::now() >= deadline;
        if bytes >= min_bytes || any_error || waited_enough || watchers.is_empty() {
            return respond(topics, partitions);
        }
        let woke = {
            let changed = select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
            match tokio::time::timeout_at(deadline, changed).await {
                Err(_) => None,
                Ok((result, index, _rest)) => Some((result.is_err(), index)),
            }
        };
        match woke {
            None => {
                // Deadline passed: answer with whatever is there now.
                let (partitions, _, _) = read_all(&wanted, max_bytes).await;
                return respond(topics, partitions);
            }
            // A closed notifier (partition deleted) would wake us forever: stop watching it.
            Some((true, index)) => {
                watchers.swap_remove(index);
            }
            Some((false, _)) => {}
        }
    }
}

/// Resolves topics (by name, or by id from v13) and partitions once per request.
fn resolve(
    broker: &Broker,
    version: i16,
    request: &FetchRequest,
) -> (Vec<(TopicName, Uuid)>, Vec<Wanted>) {
    let mut topics = Vec::with_capacity(request.topics.len());
    let mut wanted = Vec::new();
    // A partition named twice is read and answered once: one request cannot multiply its reads.
    let mut seen = HashSet::new();
    for (slot, ft) in request.topics.iter().enumerate() {
        let (topic, missing) = if version >= TOPIC_ID_VERSION_MIN {
            (
                broker.topic_by_id(ft.topic_id),
                ResponseError::UnknownTopicId,
            )
        } else {
            (
                broker.topic(&ft.topic),
                ResponseError::UnknownTopicOrPartition,
            )
        };
        topics.push((ft.topic.clone(), ft.topic_id));
        for fp in &ft.partitions {
            if !seen.insert((ft.topic.to_string(), ft.topic_id, fp.partition)) {
                continue;
            }
            let replica = match &topic {
                None => Err(missing),
                Some(t) => t
                    .partition(fp.partition)
                    .ok_or(ResponseError::UnknownTopicOrPartition),
            };
            let replica = replica.and_then(|r| check_epoch(fp.current_leader_epoch, r));
            wanted.push(Wanted {
                topic_slot: slot,
                partition: fp.partition,
                replica,
                fetch_offset: fp.fetch_offset,
                max_bytes: usize::try_from(fp.partition_max_bytes).unwrap_or(0),
            });
        }
    }
    (topics, wanted)
}

/// A client that knows a newer leader epoch than ours is ahead of us; an older one is stale.
fn check_epoch(client_epoch: i32, replica: Arc<Replica>) -> Result<Arc<Replica>, ResponseError> {
    if client_epoch < 0 || client_epoch == replica.leader_epoch {
        Ok(replica)
    } else if client_epoch > replica.leader_epoch {
        Err(ResponseError::UnknownLeaderEpoch)
    } else {
        Err(ResponseError::FencedLeaderEpoch)
    }
}

/// Reads every wanted partition once; returns (slot, data) pairs, total record bytes and whether any
/// partition answered with an error (which ends long-polling, as in Kafka).
async fn read_all(
    wanted: &[Wanted],
    max_bytes: usize,
) -> (Vec<(usize, PartitionData)>, usize, bool) {
    let mut out = Vec::with_capacity(wanted.len());
    let mut total = 0usize;
    let mut any_error = false;
    for w in wanted {
        let data = PartitionData::default().with_partition_index(w.partition);
        let replica = match &w.replica {
            Ok(r) => r,
            Err(e) => {
                any_error = true;
                out.push((
                    w.topic_slot,
                    data.with_error_code(e.code()).with_high_watermark(-1),
                ));
                continue;
            }
        };
        let budget = w.max_bytes.min(max_bytes.saturating_sub(total));
        let log = &replica.log;
        let data = match log.read(w.fetch_offset, budget.max(1)).await {
            Ok(read) => {
                // Past the first non-empty partition, a batch that does not fit the budget waits.
                let records = if total > 0 && read.records.len() > budget {
                    Bytes::new()
                } else {
                    read.records
                };
                total += records.len();
                data.with_high_watermark(read.high_watermark)
                    .with_last_stable_offset(read.high_watermark)
                    .with_log_start_offset(read.log_start_offset)
                    .with_records(Some(records))
            }
            Err(e) => {
                any_error = true;
                let err = match e {
                    LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
                    _ => ResponseError::KafkaStorageError,
                };
                if err != ResponseError::OffsetOutOfRange {
                    tracing::warn!(partition = w.partition, error = %e, "fetch read failed");
                }
                data.with_error_code(err.code())
                    .with_high_watermark(log.high_watermark())
                    .with_last_stable_offset(log.high_watermark())
                    .with_log_start_offset(log.log_start_offset())
            }
        };
        out.push((w.topic_slot, data));
    }
    (out, total, any_error)
}

fn respond(
    topics: Vec<(TopicName, Uuid)>,
    partitions: Vec<(usize, PartitionData)>,
) -> FetchResponse {
    let mut responses: Vec<FetchableTopicResponse> = topics
        .into_iter()
        .map(|(name, id)| {
            FetchableTopicResponse::default()
                .with_topic(name)
                .with_topic_id(id)
        })
        .collect();
    for (slot, data) in partitions {
        if let Some(t) = responses.get_mut(slot) {
            t.partitions.push(data);
        }
    }
    FetchResponse::default().with_responses(responses)
}
