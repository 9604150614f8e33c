//! replica::fetcher: a follower's side of replication. One task per leader broker this node
//! follows partitions of, over one connection, as Kafka's replica fetcher threads do:
//!
//! 1. **Truncate** (a partition just assigned to follow, or whose log ran past the leader's):
//!    OffsetForLeaderEpoch for its latest local epoch, then cut the log where the leader's
//!    history ends for that epoch (KIP-101/KIP-279), asking again while the leader answers
//!    with an epoch this log does not know.
//! 2. **Fetch**: one Fetch (replica id set, at each partition's log end offset) for every
//!    partition in step; the leader long-polls up to `replica_fetch_wait_ms_max`. The batches
//!    are appended byte for byte (`log::Partition::append_replica`), all partitions' writes
//!    staged first and awaited together (one group commit), and only then is the next fetch
//!    sent: its offsets are durable log ends, which is what the leader's HW counts.
//!
//! Memory: one answer in flight per leader, at most `replica_fetch_response_bytes_max` (plus
//! one oversized first batch, KIP-74), bounded again by `client::RESPONSE_BYTES_MAX`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use super::{PartitionState, Role};
use crate::client::{Client, ClientError};
use crate::log::{LogError, Staged};

/// Fetch version the follower speaks: topic ids, replica id in the request body.
const FETCH_VERSION: i16 = 13;
/// OffsetForLeaderEpoch version: replica id and current leader epoch.
const EPOCH_VERSION: i16 = 4;
/// A leader that does not lead yet, or does not know our epoch yet, is catching up on the
/// image (or ours is): ask again soon, not after a full `replica_fetch_backoff_ms`.
const LEADERSHIP_BACKOFF_MS: u64 = 100;

/// The pause after a partition error from the leader.
fn backoff_for(code: i16, settings: &FetchSettings) -> u64 {
    let leadership = [
        ResponseError::UnknownLeaderEpoch,
        ResponseError::FencedLeaderEpoch,
        ResponseError::NotLeaderOrFollower,
    ];
    if leadership.iter().any(|e| e.code() == code) {
        LEADERSHIP_BACKOFF_MS
    } else {
        settings.backoff_ms
    }
}

/// The replication settings a fetcher needs.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub me: i32,
    pub wait_ms_max: u64,
    pub partition_bytes_max: usize,
    pub response_bytes_max: usize,
    pub backoff_ms: u64,
    /// The largest batch a leader may hold (a produce frame): one may come whole past
    /// `response_bytes_max` (KIP-74), so an answer is read up to the sum.
    pub batch_bytes_max: usize,
    /// Local IP the connection to a leader leaves from (`peer_source_ip`).
    pub source_ip: Option<std::net::IpAddr>,
}

/// Pause before fetching a partition whose last append is not durable yet (a write still in
/// the disk queue from before a leader change): its fetch offset must be its durable end.
const NOT_DURABLE_RETRY_MS: u64 = 20;

/// Where a followed partition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Truncate,
    Fetch,
}

#[derive(Clone)]
struct Entry {
    state: Arc<PartitionState>,
    epoch: i32,
    phase: Phase,
    retry_at: Option<Instant>,
}

type Key = (Uuid, i32);

struct Shared {
    leader: i32,
    addr: String,
    settings: FetchSettings,
    entries: Mutex<BTreeMap<Key, Entry>>,
    wake: Notify,
    stopped: AtomicBool,
    /// A partition was added since the loop last looked: a long-polling fetch without it is cut
    /// short, so a new follower (after a failover) starts at once instead of after up to
    /// `wait_ms_max` (found by the cluster benchmark: a new RF=3 partition's first acks=all
    /// produce waited for the follower's long poll to the same leader).
    added: AtomicBool,
}

impl Shared {
    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Updates the entry if it still follows at `epoch` (the image may have moved it).
    fn update(&self, key: Key, epoch: i32, f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.entries().get_mut(&key)
            && e.epoch == epoch
        {
            f(e);
        }
    }

    fn back_off(&self, key: Key, epoch: i32, ms: u64) {
        self.update(key, epoch, |e| {
            e.retry_at = Some(Instant::now() + Duration::from_millis(ms))
        });
    }
}

/// One leader's fetcher: its partitions and its task.
pub struct Fetcher {
    shared: Arc<Shared>,
}

impl Fetcher {
    /// Starts a fetcher for `leader` at `addr` (its Kafka listener).
    pub fn start(leader: i32, addr: String, settings: FetchSettings) -> Fetcher {
        let shared = Arc::new(Shared {
            leader,
            addr,
            settings,
            entries: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
            stopped: AtomicBool::new(false),
            added: AtomicBool::new(false),
        });
        tokio::spawn(run(shared.clone()));
        Fetcher { shared }
    }

    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// Follows `state` at `epoch`, starting with truncation.
    pub fn add(&self, state: Arc<PartitionState>, epoch: i32) {
        let key = (state.topic_id, state.index);
        let entry = Entry {
            state,
            epoch,
            phase: Phase::Truncate,
            retry_at: None,
        };
        self.shared.entries().insert(key, entry);
        self.shared.added.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }

    /// Stops following the partition; true when no partition is left.
    pub fn remove(&self, topic_id: Uuid, index: i32) -> bool {
        let mut entries = self.shared.entries();
        entries.remove(&(topic_id, index));
        entries.is_empty()
    }

    /// Takes every partition out (the fetcher is being replaced): (state, epoch) each.
    pub fn drain(&self) -> Vec<(Arc<PartitionState>, i32)> {
        let mut entries = self.shared.entries();
        std::mem::take(&mut *entries)
            .into_values()
            .map(|e| (e.state, e.epoch))
            .collect()
    }

    pub fn contains(&self, topic_id: Uuid, index: i32) -> bool {
        self.shared.entries().contains_key(&(topic_id, index))
    }

    /// Ends the task after its current step (an append in progress finishes first).
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn run(shared: Arc<Shared>) {
    let mut client: Option<Client> = None;
    let backoff = Duration::from_millis(shared.settings.backoff_ms);
    tracing::debug!(leader = shared.leader, addr = %shared.addr, "replica fetcher started");
    while !shared.stopped.load(Ordering::Acquire) {
        // Whatever was added by now is in this round's snapshot.
        shared.added.store(false, Ordering::Release);
        let now = Instant::now();
        let (ready, next_retry) = {
            let entries = shared.entries();
            let ready: Vec<(Key, Entry)> = entries
                .iter()
                .filter(|(_, e)| e.retry_at.is_none_or(|at| at <= now))
                .map(|(k, e)| (*k, e.clone()))
                .collect();
            let next = entries.values().filter_map(|e| e.retry_at).min();
            (ready, next)
        };
        if ready.is_empty() {
            let until = next_retry.unwrap_or(now + backoff);
            tokio::select! {
                () = shared.wake.notified() => {}
                () = tokio::time::sleep_until(until) => {}
            }
            continue;
        }
        let c = match client.as_mut() {
            Some(c) => c,
            None => match connect(&shared).await {
                Some(c) => client.insert(c),
                None => {
                    pause(&shared, backoff).await;
                    continue;
                }
            },
        };
        let truncating: Vec<_> = ready
            .iter()
            .filter(|(_, e)| e.phase == Phase::Truncate)
            .cloned()
            .collect();
        let step = if truncating.is_empty() {
            let fetching: Vec<_> = ready.into_iter().collect();
            fetch(&shared, c, fetching).await
        } else {
            truncate(&shared, c, truncating).await
        };
        if let Err(e) = step {
            if shared.added.load(Ordering::Acquire) {
                // Cut short for a new partition: the answer in flight is abandoned with its
                // connection; the next round starts the new partition's truncation at once.
                tracing::debug!(
                    leader = shared.leader,
                    "replica fetch restarted: partition added"
                );
                client = None;
                continue;
            }
            tracing::debug!(leader = shared.leader, addr = %shared.addr, error = %e, "replica fetch failed; reconnecting");
            client = None;
            pause(&shared, backoff).await;
        }
    }
    tracing::debug!(leader = shared.leader, "replica fetcher stopped");
}

/// Sleeps `d` unless stopped first.
async fn pause(shared: &Shared, d: Duration) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        () = shared.wake.notified() => {}
    }
}

async fn connect(shared: &Shared) -> Option<Client> {
    let connect = Client::connect_from(&shared.addr, shared.settings.source_ip);
    let stop = shared.wake.notified();
    tokio::select! {
        c = connect => match c {
            Ok(c) => {
                let cap = shared
                    .settings
                    .response_bytes_max
                    .saturating_add(shared.settings.batch_bytes_max);
                let id = format!("bramble-replica-{}", shared.settings.me);
                Some(c.with_client_id(&id).with_response_bytes_max(cap))
            }
            Err(e) => {
                tracing::debug!(leader = shared.leader, error = %e, "cannot reach the leader");
                None
            }
        },
        () = stop => None,
    }
}

/// When a call in flight gives way: only to a stop, or also to a newly added partition (a long
/// poll must not keep the new partition waiting for its wait to run out).
#[derive(Clone, Copy)]
enum CutOn {
    Stop,
    StopOrAdded,
}

/// Runs `call` unless the fetcher is stopped (or, with [`CutOn::StopOrAdded`], a partition is
/// added) first: a paused leader must not hold the fetcher.
async fn until_cut<T>(
    shared: &Shared,
    cut_on: CutOn,
    call: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    let cut = || {
        shared.stopped.load(Ordering::Acquire)
            || matches!(cut_on, CutOn::StopOrAdded) && shared.added.load(Ordering::Acquire)
    };
    tokio::select! {
        r = call => r,
        () = async {
            loop {
                shared.wake.notified().await;
                if cut() {
                    break;
                }
            }
        } => Err(ClientError::Broker("call cut short: fetcher stopped or partition added".into())),
    }
}

/// How long this round's fetch may wait at the leader: `wait_ms_max`, but no later than the
/// earliest retry of a partition backing off outside this round (refused by a leader not leading
/// it yet, its log not durable yet), which must not wait for the long poll too (found by
/// tests/compat/test_replica_fetcher.py under load: a new partition refused NOT_LEADER_OR_FOLLOWER
/// once, by a leader a few ms from taking it, waited out a 10 s poll). Rounded up, and at least
/// LEADERSHIP_BACKOFF_MS, so a partition that keeps backing off (a log not durable for long: a
/// stalled disk) cannot turn the poll into a busy loop.
fn long_poll_ms(shared: &Shared, asked: &BTreeMap<Key, Entry>) -> u64 {
    let now = Instant::now();
    let next_retry = shared
        .entries()
        .iter()
        .filter(|(key, _)| !asked.contains_key(key))
        .filter_map(|(_, e)| e.retry_at)
        .min();
    let Some(at) = next_retry else {
        return shared.settings.wait_ms_max;
    };
    let until_retry = at
        .saturating_duration_since(now)
        .as_micros()
        .div_ceil(1_000);
    let until_retry = u64::try_from(until_retry).unwrap_or(u64::MAX);
    until_retry
        .max(LEADERSHIP_BACKOFF_MS)
        .min(shared.settings.wait_ms_max)
}

/// Whether `state` still follows this fetcher's leader at `epoch`.
fn still_following(shared: &Shared, state: &PartitionState, epoch: i32) -> bool {
    state.role()
        == Role::Follower {
            leader: shared.leader,
            epoch,
        }
}

/// One OffsetForLeaderEpoch round for the partitions in the truncation phase.
async fn truncate(
    shared: &Shared,
    client: &mut Client,
    work: Vec<(Key, Entry)>,
) -> Result<(), ClientError> {
    let mut by_topic: BTreeMap<String, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    let mut asked: BTreeMap<(String, i32), (Key, Entry, i32)> = BTreeMap::new();
    for (key, entry) in work {
        let log = &entry.state.log;
        let Some(local_epoch) = log.latest_epoch() else {
            // No epoch history (an empty log, or a single-node release's data): Kafka's
            // fallback is the high watermark, which this node only ever learned from leaders.
            let hw = log.high_watermark();
            if cut(shared, &entry, hw).await {
                shared.update(key, entry.epoch, |e| e.phase = Phase::Fetch);
            } else {
                shared.back_off(key, entry.epoch, shared.settings.backoff_ms);
            }
            continue;
        };
        by_topic.entry(entry.state.topic.clone()).or_default().push(
            OffsetForLeaderPartition::default()
                .with_partition(entry.state.index)
                .with_current_leader_epoch(entry.epoch)
                .with_leader_epoch(local_epoch),
        );
        asked.insert(
            (entry.state.topic.clone(), entry.state.index),
            (key, entry, local_epoch),
        );
    }
    if asked.is_empty() {
        return Ok(());
    }
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(shared.settings.me))
        .with_topics(
            by_topic
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(name)))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response = until_cut(shared, CutOn::Stop, client.call(&request, EPOCH_VERSION)).await?;
    for topic in response.topics {
        for p in topic.partitions {
            let Some((key, entry, local_epoch)) =
                asked.remove(&(topic.topic.to_string(), p.partition))
            else {
                continue;
            };
            on_epoch_answer(
                shared,
                key,
                &entry,
                local_epoch,
                p.error_code,
                p.leader_epoch,
                p.end_offset,
            )
            .await;
        }
    }
    // Partitions the leader did not answer: try again later.
    for (_, (key, entry, _)) in asked {
        shared.back_off(key, entry.epoch, shared.settings.backoff_ms);
    }
    Ok(())
}

/// Acts on the leader's answer for one partition (Kafka's follower truncation rules).
async fn on_epoch_answer(
    shared: &Shared,
    key: Key,
    entry: &Entry,
    local_epoch: i32,
    error_code: i16,
    leader_epoch: i32,
    leader_end: i64,
) {
    if error_code != 0 {
        let ms = backoff_for(error_code, &shared.settings);
        tracing::debug!(topic = %entry.state.topic, partition = entry.state.index, error_code, "leader refused OffsetForLeaderEpoch");
        shared.back_off(key, entry.epoch, ms);
        return;
    }
    let log = &entry.state.log;
    let end = log.log_end_offset();
    let (to, done) = if leader_end < 0 {
        // The leader has no history at or below our epoch: keep what the HW proves.
        (log.high_watermark(), true)
    } else if leader_epoch < 0 {
        (leader_end.min(end), true)
    } else {
        let (found_epoch, found_end) = log.end_offset_for_epoch(leader_epoch);
        if found_epoch < 0 {
            // We never saw the leader's epoch or an older one: the leader's end is safe.
            (leader_end, true)
        } else if found_epoch != leader_epoch {
            // We do not know the leader's epoch: cut to the end of our older one, ask again.
            (found_end.min(end), false)
        } else {
            (found_end.min(leader_end).min(end), true)
        }
    };
    tracing::debug!(topic = %entry.state.topic, partition = entry.state.index, local_epoch, leader_epoch, leader_end, to, "follower truncation point");
    if !cut(shared, entry, to).await {
        shared.back_off(key, entry.epoch, shared.settings.backoff_ms);
        return;
    }
    // Each round that is not done cuts to the end of an older epoch, so the next asks about an
    // older one; if the cut removed no epoch (an epoch without records), stop asking.
    let done = done || log.latest_epoch().is_none_or(|e| e >= local_epoch);
    shared.update(key, entry.epoch, |e| {
        if done {
            e.phase = Phase::Fetch;
        }
        e.retry_at = None;
    });
}

/// Truncates the follower's log to `offset` if it is still following at the entry's epoch;
/// false when the truncation failed (the partition must not fetch from a diverged end).
async fn cut(shared: &Shared, entry: &Entry, offset: i64) -> bool {
    let state = &entry.state;
    let _held = state.hold().await;
    if !still_following(shared, state, entry.epoch) {
        return true;
    }
    if offset >= state.log.log_end_offset() {
        return true;
    }
    match state.log.truncate_to(offset.max(0)).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(topic = %state.topic, partition = state.index, offset, error = %e, "follower truncation failed; tried again");
            false
        }
    }
}

/// One Fetch round for the partitions in step.
async fn fetch(
    shared: &Shared,
    client: &mut Client,
    work: Vec<(Key, Entry)>,
) -> Result<(), ClientError> {
    let settings = &shared.settings;
    let mut topics: BTreeMap<Uuid, Vec<FetchPartition>> = BTreeMap::new();
    let mut asked: BTreeMap<Key, Entry> = BTreeMap::new();
    for (key, entry) in work {
        let log = &entry.state.log;
        if log.is_failed() && log.recheck_if_failed().await.is_err() {
            // A replica that cannot write counts for nothing: it stops fetching, so it leaves
            // the ISR, until its log re-checks itself (tried again after the backoff).
            shared.back_off(key, entry.epoch, settings.backoff_ms);
            continue;
        }
        // The fetch offset is what the leader counts as this replica's durable end: only
        // fetch once everything appended is durable.
        let durable = log.durable_end();
        if durable < log.log_end_offset() {
            shared.back_off(key, entry.epoch, NOT_DURABLE_RETRY_MS);
            continue;
        }
        topics.entry(key.0).or_default().push(
            FetchPartition::default()
                .with_partition(key.1)
                .with_current_leader_epoch(entry.epoch)
                .with_fetch_offset(durable)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(log.log_start_offset())
                .with_partition_max_bytes(
                    i32::try_from(settings.partition_bytes_max).unwrap_or(i32::MAX),
                ),
        );
        asked.insert(key, entry);
    }
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(settings.me))
        .with_max_wait_ms(i32::try_from(long_poll_ms(shared, &asked)).unwrap_or(i32::MAX))
        .with_min_bytes(1)
        .with_max_bytes(i32::try_from(settings.response_bytes_max).unwrap_or(i32::MAX))
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(id, partitions)| {
                    FetchTopic::default()
                        .with_topic_id(id)
                        .with_partitions(partitions)
                })
                .collect(),
        );
    if asked.is_empty() {
        return Ok(());
    }
    let response = until_cut(
        shared,
        CutOn::StopOrAdded,
        client.call(&request, FETCH_VERSION),
    )
    .await?;
    if response.error_code != 0 {
        return Err(ClientError::Broker(format!(
            "leader answered fetch with error {}",
            response.error_code
        )));
    }
    let mut written: Vec<(Entry, Staged, i64, i64)> = Vec::new();
    for topic in response.responses {
        for p in topic.partitions {
            let key = (topic.topic_id, p.partition_index);
            let Some(entry) = asked.remove(&key) else {
                continue;
            };
            let answer = Answer {
                error_code: p.error_code,
                high_watermark: p.high_watermark,
                log_start_offset: p.log_start_offset,
                records: p.records.unwrap_or_default(),
            };
            if let Some(w) = on_fetch_answer(shared, key, entry, answer).await {
                written.push(w);
            }
        }
    }
    for (entry, staged, hw, leader_start) in written {
        let state = &entry.state;
        match staged.durable().await {
            Ok(_) => after_append(state, entry.epoch, hw, leader_start).await,
            Err(e) => {
                tracing::error!(topic = %state.topic, partition = state.index, error = %e, "follower append failed");
                shared.back_off(
                    (state.topic_id, state.index),
                    entry.epoch,
                    settings.backoff_ms,
                );
            }
        }
    }
    Ok(())
}

/// One partition's part of a fetch answer.
struct Answer {
    error_code: i16,
    high_watermark: i64,
    log_start_offset: i64,
    records: Bytes,
}

/// Acts on one partition's answer: stages its batches (returned, to await with the others), or
/// moves the partition to truncation or backoff.
async fn on_fetch_answer(
    shared: &Shared,
    key: Key,
    entry: Entry,
    answer: Answer,
) -> Option<(Entry, Staged, i64, i64)> {
    let state = entry.state.clone();
    let code = answer.error_code;
    if code == ResponseError::OffsetOutOfRange.code() {
        out_of_range(shared, key, &entry, answer.log_start_offset).await;
        return None;
    }
    if code != 0 {
        let ms = backoff_for(code, &shared.settings);
        tracing::debug!(topic = %state.topic, partition = state.index, error_code = code, "leader refused a replica fetch");
        shared.back_off(key, entry.epoch, ms);
        return None;
    }
    if answer.records.is_empty() {
        after_append(
            &state,
            entry.epoch,
            answer.high_watermark,
            answer.log_start_offset,
        )
        .await;
        return None;
    }
    let staged = {
        let _held = state.hold().await;
        if !still_following(shared, &state, entry.epoch) {
            return None;
        }
        state.log.append_replica(answer.records).await
    };
    match staged {
        Ok(staged) => Some((
            entry,
            staged,
            answer.high_watermark,
            answer.log_start_offset,
        )),
        Err(LogError::UnexpectedOffset { expected, got }) => {
            let log = &state.log;
            if log.log_start_offset() == expected && got < expected {
                // An empty log started inside the leader's first batch (its log start was
                // raised mid-batch): start at that batch instead (KAFKA-6975).
                let _held = state.hold().await;
                if still_following(shared, &state, entry.epoch)
                    && let Err(e) = log.truncate_fully_and_start_at(got).await
                {
                    tracing::error!(topic = %state.topic, partition = state.index, error = %e, "cannot restart the follower's log");
                }
            } else {
                // Our log end is not where the leader's answer starts: find the boundary again.
                shared.update(key, entry.epoch, |e| e.phase = Phase::Truncate);
            }
            shared.back_off(key, entry.epoch, LEADERSHIP_BACKOFF_MS);
            None
        }
        Err(e) => {
            tracing::error!(topic = %state.topic, partition = state.index, error = %e, "follower cannot append the leader's batches");
            shared.back_off(key, entry.epoch, shared.settings.backoff_ms);
            None
        }
    }
}

/// The leader says our fetch offset is out of its range: below its log start (it deleted
/// what we lack: start over at its start), or past its end (we hold records it never had:
/// truncate by epochs).
async fn out_of_range(shared: &Shared, key: Key, entry: &Entry, leader_start: i64) {
    let state = &entry.state;
    let end = state.log.log_end_offset();
    if leader_start > end {
        let _held = state.hold().await;
        if !still_following(shared, state, entry.epoch) {
            return;
        }
        tracing::warn!(topic = %state.topic, partition = state.index, from = end, to = leader_start, "follower is behind the leader's log start: starting over there");
        if let Err(e) = state.log.truncate_fully_and_start_at(leader_start).await {
            tracing::error!(topic = %state.topic, partition = state.index, error = %e, "cannot restart the follower's log");
            shared.back_off(key, entry.epoch, shared.settings.backoff_ms);
        }
    } else {
        shared.update(key, entry.epoch, |e| e.phase = Phase::Truncate);
    }
}

/// After a durable append (or an empty answer): the leader's HW and log start apply here.
async fn after_append(state: &PartitionState, epoch: i32, leader_hw: i64, leader_start: i64) {
    state.follower_high_watermark(epoch, leader_hw);
    let start = leader_start.min(state.log.high_watermark());
    if start > state.log.log_start_offset()
        && let Err(e) = state.log.raise_log_start_offset(start).await
    {
        tracing::warn!(topic = %state.topic, partition = state.index, error = %e, "cannot raise the follower's log start offset");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(wait_ms_max: u64) -> Shared {
        Shared {
            leader: 2,
            addr: "127.0.0.1:1".into(),
            settings: FetchSettings {
                me: 1,
                wait_ms_max,
                partition_bytes_max: 1 << 20,
                response_bytes_max: 1 << 20,
                backoff_ms: 100,
                batch_bytes_max: 1 << 20,
                source_ip: None,
            },
            entries: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
            stopped: AtomicBool::new(false),
            added: AtomicBool::new(false),
        }
    }

    // Proves a partition backing off bounds the long poll by its retry time: refused once by a
    // leader a few ms from leading it, it waited out a whole 10 s poll for the other partitions
    // (test_replica_fetcher.py, under load).
    #[tokio::test]
    async fn a_partition_backing_off_ends_the_long_poll_by_its_retry() {
        const LONG_POLL_MS: u64 = 10_000;
        const BACKOFF_MS: u64 = 300;
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(LONG_POLL_MS);
        let none_asked = BTreeMap::new();
        assert_eq!(long_poll_ms(&shared, &none_asked), LONG_POLL_MS);
        let state = crate::replica::tests::state(dir.path());
        let key = (state.topic_id, state.index);
        shared.entries().insert(
            key,
            Entry {
                state,
                epoch: 0,
                phase: Phase::Fetch,
                retry_at: None,
            },
        );
        assert_eq!(
            long_poll_ms(&shared, &none_asked),
            LONG_POLL_MS,
            "nothing backs off"
        );
        shared.back_off(key, 0, BACKOFF_MS);
        let ms = long_poll_ms(&shared, &none_asked);
        assert!(ms <= BACKOFF_MS, "the poll may wait {ms} ms");
        // Asked in this very round, its retry time bounds nothing.
        let asked = shared.entries().clone();
        assert_eq!(long_poll_ms(&shared, &asked), LONG_POLL_MS);
    }
}
