//! api::fetch (key 1): the read path. Reads whole batches from each partition's log, bounded by
//! the request's max_bytes, each partition's max_bytes and the node's `fetch_bytes_max`; at least
//! one whole batch of the first non-empty partition even when it is larger (KIP-74), so a large
//! record never stalls a consumer. With fewer than min_bytes available it long-polls: it waits on
//! the partitions' high-watermark notifiers until data arrives or max_wait_ms passes.
//!
//! Memory: each read round first reserves twice its byte cap from the node's fetch budget
//! (`fetch_inflight_bytes_max`: the batches read, then the encoded answer), more when a KIP-74
//! batch overshoots the cap (`read_round`); a round that ends in waiting gives it back, so a
//! parked long poll holds nothing. The answer leaves with its reservation, which
//! `api::dispatch` trims to the encoded size and the connection keeps until the answer is
//! written.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::select_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, RequestHeader, TopicName};
use tokio::sync::OwnedSemaphorePermit;
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
    /// A consumer in another rack is told to read from this follower instead (KIP-392).
    preferred: Option<i32>,
}

/// Who is fetching: a consumer (reads up to the high watermark) or a follower broker (reads
/// up to the durable end, and its fetch offset is its progress).
#[derive(Debug, Clone, PartialEq)]
enum Fetcher {
    Consumer {
        rack: Option<String>,
        any_replica: bool,
    },
    Follower(i32),
}

/// Fetch v11 added rack_id (KIP-392): from then on consumers may read from followers.
const FOLLOWER_READ_VERSION_MIN: i16 = 11;
/// Fetch v15 moved the replica id into replica_state.
const REPLICA_STATE_VERSION_MIN: i16 = 15;

impl Fetcher {
    fn of(version: i16, request: &FetchRequest) -> Fetcher {
        let replica_id = if version >= REPLICA_STATE_VERSION_MIN {
            request.replica_state.replica_id.0
        } else {
            request.replica_id.0
        };
        if replica_id >= 0 {
            return Fetcher::Follower(replica_id);
        }
        let rack = Some(request.rack_id.to_string()).filter(|r| !r.is_empty());
        Fetcher::Consumer {
            rack,
            any_replica: version >= FOLLOWER_READ_VERSION_MIN,
        }
    }
}

/// Answers a Fetch; the permit is the answer's share of the node's fetch budget.
pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: FetchRequest,
) -> (FetchResponse, Option<OwnedSemaphorePermit>) {
    let version = header.request_api_version;
    let fetcher = Fetcher::of(version, &request);
    let (topics, wanted) = resolve(broker, version, &request, &fetcher);
    let follower = matches!(fetcher, Fetcher::Follower(_));
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
    // A follower also wakes for new durable records (it copies up to the durable end) and for
    // a high watermark that moved (it learns the HW from the answer).
    let mut watchers: Vec<_> = wanted
        .iter()
        .filter(|w| w.preferred.is_none())
        .filter_map(|w| w.replica.as_ref().ok())
        .flat_map(|r| {
            let durable = follower.then(|| r.log.subscribe_durable());
            std::iter::once(r.log.subscribe()).chain(durable)
        })
        .collect();
    let redirected = wanted.iter().any(|w| w.preferred.is_some());
    // A follower is answered at once when a high watermark moved, data or not: its own HW (and
    // what consumers reading from it see) follows the leader's only through these answers.
    let hw_seen = follower.then(|| high_watermarks(&wanted));
    loop {
        let (partitions, bytes, any_error, budget) =
            read_round(broker, &wanted, max_bytes, follower).await;
        let waited_enough = Instant::now() >= deadline;
        let hw_moved = hw_seen
            .as_ref()
            .is_some_and(|seen| *seen != high_watermarks(&wanted));
        if bytes >= min_bytes
            || any_error
            || redirected
            || hw_moved
            || waited_enough
            || watchers.is_empty()
        {
            return (
                respond(topics, fresh(partitions, &wanted, follower)),
                budget,
            );
        }
        drop(budget);
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
                let (partitions, _, _, budget) =
                    read_round(broker, &wanted, max_bytes, follower).await;
                return (
                    respond(topics, fresh(partitions, &wanted, follower)),
                    budget,
                );
            }
            // A closed notifier (partition deleted) would wake us forever: stop watching it.
            Some((true, index)) => {
                watchers.swap_remove(index);
            }
            Some((false, _)) => {}
        }
    }
}

/// A follower's answer carries each partition's high watermark as of now, not as of its read:
/// one that moved meanwhile would otherwise reach the follower only a long poll later.
fn fresh(
    mut partitions: Vec<(usize, PartitionData)>,
    wanted: &[Wanted],
    follower: bool,
) -> Vec<(usize, PartitionData)> {
    if follower {
        for ((_, data), w) in partitions.iter_mut().zip(wanted) {
            if let Ok(r) = &w.replica
                && data.error_code == 0
            {
                data.high_watermark = r.log.high_watermark();
            }
        }
    }
    partitions
}

/// The high watermark of each partition being read (-1 where it failed to resolve).
fn high_watermarks(wanted: &[Wanted]) -> Vec<i64> {
    wanted
        .iter()
        .map(|w| w.replica.as_ref().map_or(-1, |r| r.log.high_watermark()))
        .collect()
}

/// Room in an answer for one partition's fields around its records (index, error, watermarks,
/// lengths, tagged fields), so an answer of many empty partitions is counted too.
const ANSWER_BYTES_PER_PARTITION: usize = 64;
/// Read attempts of one round: the second reads under the larger reservation the first found
/// it needed; a third would only chase a log that keeps growing.
const READ_ATTEMPTS_MAX: usize = 2;

/// What one read round returns: the partitions' data, its record bytes, whether any partition
/// failed, and the answer's share of the fetch budget.
type Round = (
    Vec<(usize, PartitionData)>,
    usize,
    bool,
    Option<OwnedSemaphorePermit>,
);

/// One read round under the node's fetch budget: reserves twice the round's byte cap (read
/// buffers, then the encoded answer) plus room for per-partition fields, then reads. A first
/// batch larger than the cap (KIP-74; at most frame_bytes_max) needs more: taken at once if
/// free, otherwise the round lets go of everything — never waiting while holding part of the
/// budget, which could deadlock two such rounds — and reads again under the larger reservation.
async fn read_round(broker: &Broker, wanted: &[Wanted], max_bytes: usize, follower: bool) -> Round {
    let overhead = ANSWER_BYTES_PER_PARTITION.saturating_mul(wanted.len());
    let (pool, capacity) = if follower {
        (
            &broker.replica_fetch_budget,
            broker.config.replica_fetch_inflight_bytes_max,
        )
    } else {
        (&broker.fetch_budget, broker.config.fetch_inflight_bytes_max)
    };
    let mut want = max_bytes.saturating_mul(2).saturating_add(overhead);
    let mut attempt = 1;
    loop {
        let mut budget = reserve(pool, capacity, want).await;
        let (partitions, total, any_error) = read_all(wanted, max_bytes, follower).await;
        let need = total
            .saturating_mul(2)
            .saturating_add(overhead)
            .min(capacity);
        let have = budget
            .as_ref()
            .map_or(need, OwnedSemaphorePermit::num_permits);
        if need <= have || attempt == READ_ATTEMPTS_MAX {
            return (partitions, total, any_error, budget);
        }
        let extra = u32::try_from(need - have).unwrap_or(u32::MAX);
        if let (Some(held), Ok(more)) =
            (budget.as_mut(), pool.clone().try_acquire_many_owned(extra))
        {
            held.merge(more);
            return (partitions, total, any_error, budget);
        }
        drop((partitions, budget));
        want = need;
        attempt += 1;
    }
}

/// Waits for `bytes` of the fetch budget (at least 1, at most all of it; validation keeps the
/// budget at least twice the largest frame, so any round fits and the wait ends).
/// `None` only if the budget was closed, which the broker never does.
async fn reserve(
    pool: &Arc<tokio::sync::Semaphore>,
    capacity: usize,
    bytes: usize,
) -> Option<OwnedSemaphorePermit> {
    let want = u32::try_from(bytes.clamp(1, capacity)).unwrap_or(u32::MAX);
    pool.clone().acquire_many_owned(want).await.ok()
}

/// Resolves topics (by name, or by id from v13) and partitions once per request.
fn resolve(
    broker: &Broker,
    version: i16,
    request: &FetchRequest,
    fetcher: &Fetcher,
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
            let (replica, preferred) = match &topic {
                None => (Err(missing), None),
                Some(t) => serve(
                    broker,
                    fetcher,
                    t,
                    fp.partition,
                    fp.current_leader_epoch,
                    fp.fetch_offset,
                ),
            };
            wanted.push(Wanted {
                topic_slot: slot,
                partition: fp.partition,
                replica,
                fetch_offset: fp.fetch_offset,
                max_bytes: usize::try_from(fp.partition_max_bytes).unwrap_or(0),
                preferred,
            });
        }
    }
    (topics, wanted)
}

/// Which local replica serves one partition of this fetch, and for a consumer in another rack
/// the follower it should read from instead (KIP-392).
fn serve(
    broker: &Broker,
    fetcher: &Fetcher,
    t: &crate::broker::Topic,
    partition: i32,
    client_epoch: i32,
    fetch_offset: i64,
) -> (Result<Arc<Replica>, ResponseError>, Option<i32>) {
    match fetcher {
        Fetcher::Follower(id) => {
            let replica =
                crate::api::lead(broker, t, partition).and_then(|r| check_epoch(client_epoch, r));
            let replica = replica.and_then(|r| {
                match r
                    .state
                    .on_follower_fetch(*id, fetch_offset, tokio::time::Instant::now())
                {
                    Ok(Some(change)) => broker.replication.propose(change),
                    Ok(None) => {}
                    Err(_) => return Err(ResponseError::NotLeaderOrFollower),
                }
                Ok(r)
            });
            (replica, None)
        }
        Fetcher::Consumer { rack, any_replica } => {
            let replica = match broker.serving_replica(t, partition, *any_replica) {
                Ok(r) => check_epoch(client_epoch, r),
                Err(e) => Err(crate::api::not_leading(e)),
            };
            let preferred = match (&replica, rack) {
                (Ok(r), Some(rack)) => broker.preferred_read_replica(t, r, rack, fetch_offset),
                _ => None,
            };
            (replica, preferred)
        }
    }
}

/// A client that knows a newer leader epoch than ours is ahead of us; an older one is stale.
fn check_epoch(client_epoch: i32, replica: Arc<Replica>) -> Result<Arc<Replica>, ResponseError> {
    if client_epoch < 0 || client_epoch == replica.leader_epoch() {
        Ok(replica)
    } else if client_epoch > replica.leader_epoch() {
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
    follower: bool,
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
        let log = &replica.log;
        if let Some(preferred) = w.preferred {
            // KIP-392: no records, only where to read them (the consumer goes there).
            out.push((
                w.topic_slot,
                data.with_high_watermark(log.high_watermark())
                    .with_last_stable_offset(log.high_watermark())
                    .with_log_start_offset(log.log_start_offset())
                    .with_preferred_read_replica(kafka_protocol::messages::BrokerId(preferred))
                    .with_records(Some(Bytes::new())),
            ));
            continue;
        }
        let budget = w.max_bytes.min(max_bytes.saturating_sub(total));
        let read = if follower {
            log.read_replica(w.fetch_offset, budget.max(1)).await
        } else {
            log.read(w.fetch_offset, budget.max(1)).await
        };
        let data = match read {
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
                // A damaged stored batch answers CORRUPT_MESSAGE, as Kafka does: clients report
                // it to the application (librdkafka retries KAFKA_STORAGE_ERROR silently, so a
                // consumer would wait forever at the batch).
                let err = match e {
                    LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
                    LogError::CorruptStored { .. } => ResponseError::CorruptMessage,
                    _ => ResponseError::KafkaStorageError,
                };
                // A corrupt batch is logged once, when the partition records it (log::damage);
                // a consumer retrying at it would repeat this line every backoff.
                if err == ResponseError::KafkaStorageError {
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

#[cfg(test)]
mod tests {
    //! The node-wide fetch budget: a parked long poll holds none of it, an answer holds exactly
    //! its encoded size until the connection drops it, and a budget of one round's worth still
    //! serves every consumer in turn.

    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use kafka_protocol::messages::{RequestHeader, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use crate::api::{self, Reply};
    use crate::broker::Broker;
    use crate::client::consumer::fetch_request;
    use crate::config::Config;
    use crate::protocol::batch::test_batches;
    use crate::protocol::codec;

    const FETCH_BYTES_MAX: usize = 64 * 1024;
    /// Exactly one read round's reservation: the smallest budget validation allows.
    const BUDGET_BYTES: usize = 2 * FETCH_BYTES_MAX;
    /// Bound on how long a fetch that must not wait for the long poll may take.
    const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
    /// The long poll's wait: far longer than ANSWER_TIMEOUT.
    const LONG_POLL_MS: i32 = 60_000;

    fn open(dir: &std::path::Path) -> Arc<Broker> {
        let config = Config {
            data_dir: dir.to_path_buf(),
            fetch_bytes_max: FETCH_BYTES_MAX,
            message_bytes_max: 32 * 1024,
            fetch_inflight_bytes_max: BUDGET_BYTES,
            fetch_wait_ms_max: LONG_POLL_MS as u64,
            ..Config::default()
        };
        Arc::new(crate::broker::tests::open_with(config))
    }

    /// A Fetch v12 frame body (no length prefix) for partition 0 of `topic` from offset 0.
    fn fetch_frame(topic: &str, min_bytes: i32, max_wait_ms: i32) -> Bytes {
        fetch_frame_capped(topic, min_bytes, max_wait_ms, i32::MAX)
    }

    fn fetch_frame_capped(topic: &str, min_bytes: i32, max_wait_ms: i32, max_bytes: i32) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(1)
            .with_request_api_version(12)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("budget-test")));
        let topic = TopicName(StrBytes::from_string(topic.to_string()));
        let request = fetch_request(topic, &[0], max_bytes, max_bytes, max_wait_ms, min_bytes);
        let mut frame = codec::encode_request(&header, &request, "fetch").unwrap();
        Bytes::from(frame.split_off(4))
    }

    async fn topic_with_data(broker: &Broker, name: &str) {
        let t = broker
            .create_topic(name, 1, 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let log = t.partition(0).unwrap().log.clone();
        log.append(test_batches::batch(20, 1_000, 10).into(), 0)
            .await
            .unwrap();
    }

    // Proves the answer keeps exactly its encoded size of the budget, and gives it back on drop.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answer_holds_its_size_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path());
        topic_with_data(&broker, "t").await;
        let reply = api::dispatch(&broker, fetch_frame("t", 0, 0))
            .await
            .unwrap();
        let Reply::Held(answer, held) = reply else {
            panic!("a Fetch answer holds budget");
        };
        assert!(answer.len() > 100, "the answer carries the batch");
        assert_eq!(held.num_permits(), answer.len());
        assert_eq!(
            broker.fetch_budget.available_permits(),
            BUDGET_BYTES - answer.len()
        );
        drop(held);
        assert_eq!(broker.fetch_budget.available_permits(), BUDGET_BYTES);
        broker.shutdown().await;
    }

    // Proves a first batch larger than the request's cap (KIP-74) is counted in full: the
    // answer holds its whole encoded size, not just twice the tiny cap it asked for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_first_batch_is_held_in_full() {
        const TINY_MAX_BYTES: i32 = 16;
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path());
        topic_with_data(&broker, "t").await;
        let frame = fetch_frame_capped("t", 0, 0, TINY_MAX_BYTES);
        let Reply::Held(answer, held) = api::dispatch(&broker, frame).await.unwrap() else {
            panic!("a Fetch answer holds budget");
        };
        assert!(
            answer.len() > 4 * TINY_MAX_BYTES as usize,
            "KIP-74: one whole batch"
        );
        assert_eq!(held.num_permits(), answer.len());
        drop(held);
        assert_eq!(broker.fetch_budget.available_permits(), BUDGET_BYTES);
        broker.shutdown().await;
    }

    // Proves a long poll parked on an empty partition holds no budget: with a budget of one
    // round, another consumer's fetch is answered while the long poll still waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parked_long_poll_holds_no_budget() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path());
        topic_with_data(&broker, "t").await;
        broker
            .create_topic("empty", 1, 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let parked = {
            let broker = broker.clone();
            tokio::spawn(async move {
                api::dispatch(&broker, fetch_frame("empty", 1, LONG_POLL_MS))
                    .await
                    .map(|_| ())
            })
        };
        // Wait until the long poll has read once and parked (its round's budget returned).
        tokio::time::timeout(ANSWER_TIMEOUT, async {
            while broker.fetch_budget.available_permits() != BUDGET_BYTES
                || broker
                    .topic("empty")
                    .unwrap()
                    .partition(0)
                    .unwrap()
                    .log
                    .watchers()
                    == 0
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the long poll parks");
        let other = tokio::time::timeout(
            ANSWER_TIMEOUT,
            api::dispatch(&broker, fetch_frame("t", 0, 0)),
        )
        .await
        .expect("answered while the long poll waits");
        assert!(matches!(other, Ok(Reply::Held(..))));
        assert!(!parked.is_finished(), "the long poll is still waiting");
        parked.abort();
        broker.shutdown().await;
    }
}
