//! node::sim::workload: what the simulation's client does, over the simulated network (it
//! connects from 127.0.0.1, so it is the network's client party). Per partition one idempotent
//! acks=all producer sends batches of 1 to [`BATCH_RECORDS_MAX`] unique values, retrying a batch
//! with its sequence until it is acknowledged; one reader fetches from the leader below the high
//! watermark. Both write what they saw into the [`History`] the checker judges.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, InitProducerIdRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;

use crate::client::producer::{Stamp, encode_values};
use crate::client::{Client, admin};
use crate::io::crash::XorShift;

/// The simulated topic.
pub(crate) const TOPIC: &str = "sim";
/// Its partitions.
pub(crate) const PARTITIONS: i32 = 2;
/// Most records in one produced batch.
const BATCH_RECORDS_MAX: u64 = 3;
/// Longest wait for one request (or connect) before the client gives up on that broker; well
/// under a partition's length, so a stalled connection is abandoned as a real client would.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_millis(1_500);
/// Pause after a failed attempt before the next (a client's retry.backoff.ms).
const RETRY_BACKOFF: Duration = Duration::from_millis(25);
/// How long a fetch may wait at the leader for new records.
const FETCH_WAIT_MS: i32 = 100;
/// Bytes one fetch asks for.
const FETCH_BYTES_MAX: i32 = 1024 * 1024;
const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;
const INIT_PRODUCER_ID_VERSION: i16 = 4;
const PRODUCE_TIMEOUT_MS: i32 = 1_000;

/// One acknowledged record: where the broker said it is.
#[derive(Debug, Clone)]
pub(crate) struct Acked {
    pub partition: i32,
    pub offset: i64,
    pub value: String,
}

/// What the client saw during a run.
#[derive(Debug, Default)]
pub(crate) struct History {
    pub acked: Vec<Acked>,
    /// Records read below the high watermark: (partition, offset, value).
    pub read: Vec<(i32, i64, String)>,
    /// Notable answers (fatal producer errors, out-of-range fetches), for the report.
    pub events: Vec<String>,
}

/// The workload's shared state.
pub(crate) struct Workload {
    pub history: Mutex<History>,
    /// The addresses clients bootstrap from (the nodes' Kafka proxies).
    pub bootstrap: Vec<String>,
    pub stop: AtomicBool,
    pub seed: u64,
}

impl Workload {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn event(&self, what: String) {
        tracing::warn!(seed = self.seed, "{what}");
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .events
            .push(what);
    }
}

/// Runs `f` within [`CALL_TIMEOUT`]; a timeout is an error like any other.
async fn bounded<T>(
    f: impl Future<Output = Result<T, crate::client::ClientError>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// A connection to any broker that answers, trying each in turn from `start`.
pub(crate) async fn connect_any(bootstrap: &[String], start: usize) -> Option<Client> {
    for i in 0..bootstrap.len() {
        let addr = &bootstrap[(start + i) % bootstrap.len()];
        if let Ok(c) = bounded(Client::connect(addr)).await {
            return Some(c.with_client_id("sim"));
        }
    }
    None
}

/// The address of `partition`'s leader as some broker's Metadata names it.
async fn leader_addr(bootstrap: &[String], partition: i32, start: usize) -> Option<String> {
    let mut client = connect_any(bootstrap, start).await?;
    let meta = bounded(admin::metadata(&mut client, Some(&[TOPIC])))
        .await
        .ok()?;
    let leader = meta
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == partition)?
        .leader_id
        .0;
    let broker = meta.brokers.iter().find(|b| b.node_id.0 == leader)?;
    Some(format!("{}:{}", broker.host.as_str(), broker.port))
}

/// A connection to `partition`'s leader, or None after a backoff (no leader known or reachable).
async fn connect_leader(bootstrap: &[String], partition: i32, start: usize) -> Option<Client> {
    let client = match leader_addr(bootstrap, partition, start).await {
        Some(addr) => bounded(Client::connect(&addr)).await.ok(),
        None => None,
    };
    if client.is_none() {
        tokio::time::sleep(RETRY_BACKOFF).await;
    }
    client
}

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

/// Producer identity and the next sequence to use.
#[derive(Debug, Clone, Copy)]
struct Identity {
    id: i64,
    epoch: i16,
    sequence: i32,
}

async fn init_producer_id(w: &Workload, start: usize) -> Option<Identity> {
    let mut client = connect_any(&w.bootstrap, start).await?;
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(kafka_protocol::messages::ProducerId(-1))
        .with_producer_epoch(-1);
    let r = bounded(client.call(&request, INIT_PRODUCER_ID_VERSION))
        .await
        .map_err(|e| tracing::debug!(error = %e, "InitProducerId failed"))
        .ok()?;
    tracing::debug!(
        code = r.error_code,
        id = r.producer_id.0,
        "InitProducerId answered"
    );
    (r.error_code == 0).then_some(Identity {
        id: r.producer_id.0,
        epoch: r.producer_epoch,
        sequence: 0,
    })
}

/// One idempotent batch of `values` with the producer's identity.
fn encode(values: &[String], who: Identity) -> Bytes {
    let stamp = Stamp {
        producer_id: who.id,
        producer_epoch: who.epoch,
        base_sequence: who.sequence,
    };
    let values = values.iter().map(|v| Bytes::from(v.clone()));
    // Encoding plain records into a buffer cannot fail.
    encode_values(values, stamp, 0).expect("encode a batch")
}

/// What one produce attempt came to.
enum Produced {
    Acked(i64),
    /// Retriable: look the leader up again and resend the same batch.
    Retry,
    /// The producer's sequence state is gone (named): start a new producer.
    Fatal(String),
}

async fn produce_once(client: &mut Client, partition: i32, batch: Bytes) -> Produced {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(PRODUCE_TIMEOUT_MS)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic_name())
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(batch)),
                ]),
        ]);
    let response = match bounded(client.call(&request, PRODUCE_VERSION)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(partition, error = %e, "produce failed");
            return Produced::Retry;
        }
    };
    let Some(p) = response
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
    else {
        return Produced::Retry;
    };
    match ResponseError::try_from_code(p.error_code) {
        None => Produced::Acked(p.base_offset),
        Some(
            e @ (ResponseError::OutOfOrderSequenceNumber
            | ResponseError::UnknownProducerId
            | ResponseError::InvalidProducerEpoch
            | ResponseError::DuplicateSequenceNumber),
        ) => Produced::Fatal(format!("{e:?}")),
        Some(e) => {
            tracing::debug!(partition, error = ?e, "produce refused");
            Produced::Retry
        }
    }
}

/// The producer of `partition`: runs until the workload stops.
pub(crate) async fn produce(w: Arc<Workload>, partition: i32) {
    let mut rng = XorShift::new(w.seed ^ 0x5052_4f44 ^ partition as u64);
    let mut next_value = 0u64;
    let mut who: Option<Identity> = None;
    let mut pending: Vec<String> = Vec::new();
    let mut client: Option<Client> = None;
    let mut attempt = 0usize;
    while !w.stopped() {
        attempt += 1;
        let Some(me) = who else {
            who = init_producer_id(&w, attempt).await;
            pending.clear();
            if who.is_none() {
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
            continue;
        };
        if pending.is_empty() {
            let n = 1 + rng.below(BATCH_RECORDS_MAX);
            pending = (0..n)
                .map(|_| {
                    next_value += 1;
                    format!("p{partition}-{next_value:06}")
                })
                .collect();
        }
        let Some(c) = client.as_mut() else {
            client = connect_leader(&w.bootstrap, partition, attempt).await;
            continue;
        };
        match produce_once(c, partition, encode(&pending, me)).await {
            Produced::Acked(base) => {
                tracing::debug!(partition, base, values = ?pending, "acknowledged");
                let sent = pending.len() as i32;
                let mut h = w.history.lock().unwrap_or_else(|e| e.into_inner());
                for (i, value) in pending.drain(..).enumerate() {
                    h.acked.push(Acked {
                        partition,
                        offset: base + i as i64,
                        value,
                    });
                }
                drop(h);
                who = Some(Identity {
                    sequence: me.sequence + sent,
                    ..me
                });
            }
            Produced::Retry => {
                client = None;
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
            Produced::Fatal(why) => {
                w.event(format!(
                    "partition {partition}: producer {} got {why} at sequence {}; starting a new producer",
                    me.id, me.sequence
                ));
                who = None;
                client = None;
            }
        }
    }
}

/// The number of every partition's last value: above any a producer reaches in a run.
const SENTINEL_NUMBER: u64 = 999_999;

impl Workload {
    /// Produces one last value per partition (one idempotent producer, acks=all, retried with
    /// its sequence as any batch), until each is acknowledged or `bound` passes.
    pub(crate) async fn sentinels(&self, bound: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + bound;
        let late = |what: &str| format!("{what} not done within {bound:?}");
        let mut attempt = 0;
        let who = loop {
            attempt += 1;
            if let Some(who) = init_producer_id(self, attempt).await {
                break who;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(late("InitProducerId"));
            }
            tokio::time::sleep(RETRY_BACKOFF).await;
        };
        for partition in 0..PARTITIONS {
            let value = format!("p{partition}-{SENTINEL_NUMBER}");
            let batch = encode(std::slice::from_ref(&value), who);
            loop {
                if tokio::time::Instant::now() > deadline {
                    return Err(late(&value));
                }
                attempt += 1;
                if let Some(base) = self.produce_one(partition, batch.clone(), attempt).await {
                    self.history
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .acked
                        .push(Acked {
                            partition,
                            offset: base,
                            value,
                        });
                    break;
                }
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
        }
        Ok(())
    }

    /// One attempt at producing `batch` to `partition`'s leader: its base offset if acked.
    async fn produce_one(&self, partition: i32, batch: Bytes, attempt: usize) -> Option<i64> {
        let addr = leader_addr(&self.bootstrap, partition, attempt).await?;
        let mut client = bounded(Client::connect(&addr)).await.ok()?;
        match produce_once(&mut client, partition, batch).await {
            Produced::Acked(base) => Some(base),
            _ => None,
        }
    }
}

/// The reader of `partition`: fetches from the leader from offset 0 on, recording every record
/// it is given (all below the high watermark), until the workload stops.
pub(crate) async fn read(w: Arc<Workload>, partition: i32) {
    let mut offset = 0i64;
    let mut client: Option<Client> = None;
    let mut attempt = 0usize;
    while !w.stopped() {
        attempt += 1;
        let Some(c) = client.as_mut() else {
            client = connect_leader(&w.bootstrap, partition, attempt).await;
            continue;
        };
        match fetch(c, partition, offset).await {
            Ok((records, _hw)) => {
                let mut h = w.history.lock().unwrap_or_else(|e| e.into_inner());
                for (o, v) in records {
                    if o >= offset {
                        h.read.push((partition, o, v));
                        offset = o + 1;
                    }
                }
            }
            Err(why) => {
                if why.contains("OffsetOutOfRange") {
                    w.event(format!(
                        "partition {partition}: fetch at {offset} (read before) out of range"
                    ));
                }
                client = None;
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
        }
    }
}

/// One fetch of `partition` from `offset`: the records returned (offset, value) and the high
/// watermark.
pub(crate) async fn fetch(
    client: &mut Client,
    partition: i32,
    offset: i64,
) -> Result<(Vec<(i64, String)>, i64), String> {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(FETCH_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_BYTES_MAX)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic_name())
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(FETCH_BYTES_MAX),
                ]),
        ]);
    let response = bounded(client.call(&request, FETCH_VERSION)).await?;
    let p = response
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or("fetch answered no partition")?;
    if let Some(e) = ResponseError::try_from_code(p.error_code) {
        return Err(format!("{e:?}"));
    }
    let mut records = Vec::new();
    let mut buf = p.records.clone().unwrap_or_default();
    // A partial batch at the end (the size cap cut it) stops the decode; the next fetch gets it.
    while !buf.is_empty() {
        let Ok(set) = RecordBatchDecoder::decode(&mut buf) else {
            break;
        };
        for r in set.records {
            let value = r.value.map(|v| String::from_utf8_lossy(&v).into_owned());
            records.push((r.offset, value.unwrap_or_default()));
        }
    }
    Ok((records, p.high_watermark))
}
