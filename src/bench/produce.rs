//! bench::produce: `bramble bench produce`. Creates the topic if missing, then runs `producers`
//! concurrent producers, each on its own connection, each sending its share of the records as v2
//! batches of up to `batch_bytes`, one batch per Produce request, rotating over the partitions
//! (producer i starts at partition i), with at most [`IN_FLIGHT_MAX`] requests outstanding per
//! connection (Kafka's `max.in.flight.requests.per.connection` default).
//!
//! Latency is per record, from enqueue to ack. The producer is closed-loop: a batch is filled
//! (its records "enqueued") only when a request slot is free, so the figure is what a record waits
//! once the client has room for it — not time queued behind an unbounded backlog. The record
//! generator never idles, so a batch always fills to `batch_bytes` at once and `linger_ms` only
//! bounds how long a partial batch may wait; it is reported but does not shape this load.
//!
//! Broker figures: fsyncs from DescribeConfigs (`bramble.fsyncs`, a live counter bramble
//! exposes; "n/a" against other brokers), and with `--broker-pid` (the broker must be local, same
//! user) peak RSS, CPU seconds and write amplification from /proc.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

use super::histogram::Histogram;
use super::proc_stats::{self, ProcSample};
use super::{BenchError, Latency, MB_BYTES, Progress, or_na, table};
use crate::client::producer::{self, Ack, Producer};
use crate::client::{Client, admin};

/// Produce requests outstanding per connection (Kafka's max.in.flight default).
pub const IN_FLIGHT_MAX: usize = 5;
/// Bounds on the command's inputs.
pub const PRODUCERS_MAX: usize = 256;
pub const RECORD_BYTES_MAX: usize = 16 * 1024 * 1024;
pub const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Kafka error code for a topic that does not exist.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// DescribeConfigs resource type of a broker, and bramble's fsync counter in it.
const RESOURCE_BROKER: i8 = 4;
const FSYNCS_KEY: &str = "bramble.fsyncs";
const DESCRIBE_CONFIGS_VERSION: i16 = 4;

#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub bootstrap: String,
    pub topic: String,
    /// Partitions for a topic this run creates; an existing topic keeps its own.
    pub partitions: i32,
    pub messages: u64,
    pub record_size: usize,
    /// -1 (all), 0 or 1.
    pub acks: i16,
    pub producers: usize,
    pub batch_bytes: usize,
    pub linger_ms: u64,
    pub broker_pid: Option<u32>,
}

/// One run's figures. Latencies in ms, rates per second, MB = 10^6 bytes; None = n/a.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProduceReport {
    pub topic: String,
    pub partitions: i32,
    pub producers: usize,
    pub records: u64,
    pub record_size: usize,
    pub acks: i16,
    pub batch_bytes: usize,
    pub records_per_batch: usize,
    pub in_flight_max: usize,
    pub linger_ms: u64,
    pub requests: u64,
    pub elapsed_s: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub requests_per_s: f64,
    pub latency_ms: Latency,
    pub fsyncs: Option<u64>,
    pub fsyncs_per_s: Option<f64>,
    pub broker_pid: Option<u32>,
    pub broker_rss_kib_peak: Option<u64>,
    pub broker_cpu_s: Option<f64>,
    pub disk_write_bytes: Option<u64>,
    pub write_amplification: Option<f64>,
    pub disk_bytes_per_fsync: Option<f64>,
}

fn check(opts: &ProduceOptions) -> Result<(), BenchError> {
    let bad = |m: &str| Err(BenchError::Invalid(m.to_string()));
    if !(1..=PRODUCERS_MAX).contains(&opts.producers) {
        return bad("--producers must be 1..=256");
    }
    if opts.messages == 0 {
        return bad("--messages must be at least 1");
    }
    if opts.record_size > RECORD_BYTES_MAX {
        return bad("--record-size must be at most 16 MiB");
    }
    if !(producer::BATCH_HEADER_BYTES..=BATCH_BYTES_MAX).contains(&opts.batch_bytes) {
        return bad("--batch-bytes must be 61..=64 MiB");
    }
    if ![-1, 0, 1].contains(&opts.acks) {
        return bad("--acks must be all, -1, 0 or 1");
    }
    if opts.partitions == 0 || opts.partitions < -1 {
        return bad("--partitions must be positive (or -1 for the broker's default)");
    }
    Ok(())
}

pub async fn run(opts: ProduceOptions) -> Result<ProduceReport, BenchError> {
    check(&opts)?;
    let mut admin = Client::connect(&opts.bootstrap).await?;
    let (partitions, node_id) = ensure_topic(&mut admin, &opts.topic, opts.partitions).await?;
    let fsyncs_before = broker_fsyncs(&mut admin, node_id).await?;
    let proc_before = opts.broker_pid.map(proc_stats::sample).transpose()?;
    let (per_batch, _) = producer::records_per_batch(opts.batch_bytes, opts.record_size);
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(done.clone(), opts.messages, "records");
    let start = Instant::now();
    let (latency_us, requests) = run_producers(&opts, partitions, per_batch, &done).await?;
    let elapsed_s = start.elapsed().as_secs_f64();
    drop(progress);
    let fsyncs_after = broker_fsyncs(&mut admin, node_id).await?;
    let proc_after = opts.broker_pid.map(proc_stats::sample).transpose()?;
    let fsyncs = fsyncs_before
        .zip(fsyncs_after)
        .and_then(|(b, a)| a.checked_sub(b));
    let payload_bytes = opts.messages as f64 * opts.record_size as f64;
    let mut report = ProduceReport {
        topic: opts.topic.clone(),
        partitions,
        producers: opts.producers,
        records: latency_us.count(),
        record_size: opts.record_size,
        acks: opts.acks,
        batch_bytes: opts.batch_bytes,
        records_per_batch: per_batch,
        in_flight_max: IN_FLIGHT_MAX,
        linger_ms: opts.linger_ms,
        requests,
        elapsed_s,
        records_per_s: latency_us.count() as f64 / elapsed_s,
        mb_per_s: payload_bytes / MB_BYTES / elapsed_s,
        requests_per_s: requests as f64 / elapsed_s,
        latency_ms: Latency::from_us(&latency_us),
        fsyncs,
        fsyncs_per_s: fsyncs.map(|f| f as f64 / elapsed_s),
        broker_pid: opts.broker_pid,
        broker_rss_kib_peak: None,
        broker_cpu_s: None,
        disk_write_bytes: None,
        write_amplification: None,
        disk_bytes_per_fsync: None,
    };
    if let (Some(b), Some(a)) = (proc_before, proc_after) {
        add_proc(&mut report, b, a, payload_bytes);
    }
    Ok(report)
}

fn add_proc(report: &mut ProduceReport, before: ProcSample, after: ProcSample, payload: f64) {
    let written = after.write_bytes.saturating_sub(before.write_bytes);
    report.broker_rss_kib_peak = Some(after.rss_kib_peak);
    report.broker_cpu_s = Some(after.cpu_s - before.cpu_s);
    report.disk_write_bytes = Some(written);
    report.write_amplification = (payload > 0.0).then(|| written as f64 / payload);
    report.disk_bytes_per_fsync = report
        .fsyncs
        .filter(|&f| f > 0)
        .map(|f| written as f64 / f as f64);
}

/// Splits the records over the producers (the first ones take the remainder), runs them all and
/// merges their latency histograms; also returns the requests sent.
async fn run_producers(
    opts: &ProduceOptions,
    partitions: i32,
    per_batch: usize,
    done: &Arc<AtomicU64>,
) -> Result<(Histogram, u64), BenchError> {
    let n = opts.producers as u64;
    let value = payload(opts.record_size);
    let topic = TopicName(StrBytes::from_string(opts.topic.clone()));
    let mut tasks = Vec::with_capacity(opts.producers);
    for i in 0..opts.producers {
        let share = opts.messages / n + u64::from((i as u64) < opts.messages % n);
        let job = ProducerJob {
            addr: opts.bootstrap.clone(),
            topic: topic.clone(),
            acks: opts.acks,
            first_partition: i as i32 % partitions,
            partitions,
            records: share,
            per_batch,
            value: value.clone(),
            done: done.clone(),
        };
        tasks.push(tokio::spawn(job.run()));
    }
    let mut latency_us = Histogram::new();
    let mut requests = 0;
    for task in tasks {
        let (h, r) = task.await.map_err(|e| BenchError::Task(e.to_string()))??;
        latency_us.merge(&h);
        requests += r;
    }
    Ok((latency_us, requests))
}

/// A record value of `len` bytes (a fixed pattern: compression is off, content is irrelevant).
fn payload(len: usize) -> Bytes {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

struct ProducerJob {
    addr: String,
    topic: TopicName,
    acks: i16,
    first_partition: i32,
    partitions: i32,
    records: u64,
    per_batch: usize,
    value: Bytes,
    done: Arc<AtomicU64>,
}

/// A batch in flight: when its records were enqueued, and how many.
type Token = (Instant, u64);

impl ProducerJob {
    /// Keeps the pipeline full until every record is sent, then drains it; returns the per-record
    /// latencies (µs) and the requests sent.
    async fn run(self) -> Result<(Histogram, u64), BenchError> {
        let mut producer = Producer::<Token>::connect(&self.addr, self.acks, IN_FLIGHT_MAX).await?;
        let mut latency_us = Histogram::new();
        let (mut left, mut partition, mut requests) = (self.records, self.first_partition, 0u64);
        loop {
            while left > 0 && !producer.is_full() {
                let n = left.min(self.per_batch as u64);
                let enqueued = Instant::now();
                let batch = producer::encode_batch(&self.value, n as usize, now_ms())?;
                let sent = producer
                    .send(&self.topic, partition, batch, (enqueued, n))
                    .await?;
                left -= n;
                requests += 1;
                partition = (partition + 1) % self.partitions;
                if let Some(ack) = sent {
                    self.settle(&mut latency_us, ack);
                }
            }
            match producer.next_ack().await? {
                Some(ack) => self.settle(&mut latency_us, ack),
                None if left == 0 => break,
                None => {}
            }
        }
        Ok((latency_us, requests))
    }

    fn settle(&self, latency_us: &mut Histogram, ack: Ack<Token>) {
        let (enqueued, n) = ack.token;
        latency_us.record_n(enqueued.elapsed().as_micros() as u64, n);
        self.done.fetch_add(n, Ordering::Relaxed);
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The topic's partition count, creating it with `partitions` if missing, and the id of a broker
/// (for DescribeConfigs).
async fn ensure_topic(
    client: &mut Client,
    topic: &str,
    partitions: i32,
) -> Result<(i32, i32), BenchError> {
    let mut created = false;
    loop {
        let meta = admin::metadata(client, Some(&[topic])).await?;
        let node_id = meta.brokers.first().map(|b| b.node_id.0).unwrap_or(-1);
        let t = meta
            .topics
            .first()
            .ok_or_else(|| BenchError::Invalid("metadata named no topic".into()))?;
        match t.error_code {
            0 if !t.partitions.is_empty() => return Ok((t.partitions.len() as i32, node_id)),
            UNKNOWN_TOPIC_OR_PARTITION if !created => {
                admin::create_topic(client, topic, partitions, -1, &Default::default()).await?;
                created = true;
            }
            code => {
                return Err(BenchError::Invalid(format!(
                    "topic {topic} unusable (metadata error {code})"
                )));
            }
        }
    }
}

/// bramble's `bramble.fsyncs` counter; None from a broker that does not expose it.
async fn broker_fsyncs(client: &mut Client, node_id: i32) -> Result<Option<u64>, BenchError> {
    use kafka_protocol::messages::DescribeConfigsRequest;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_BROKER)
            .with_resource_name(StrBytes::from_string(node_id.to_string()))
            .with_configuration_keys(Some(vec![StrBytes::from_static_str(FSYNCS_KEY)])),
    ]);
    let response = client.call(&request, DESCRIBE_CONFIGS_VERSION).await?;
    Ok(response
        .results
        .iter()
        .filter(|r| r.error_code == 0)
        .flat_map(|r| r.configs.iter())
        .find(|c| c.name.as_str() == FSYNCS_KEY)
        .and_then(|c| c.value.as_ref())
        .and_then(|v| v.as_str().parse().ok()))
}

/// The report as a table.
pub fn render(r: &ProduceReport) -> String {
    let l = &r.latency_ms;
    let f2 = |v: Option<f64>| or_na(v.map(|v| format!("{v:.2}")));
    table(
        &format!(
            "produce: {} records of {} B to {} ({} partitions), acks={}, {} producer(s), \
             batches of {} records (<= {} B), {} in flight",
            r.records,
            r.record_size,
            r.topic,
            r.partitions,
            r.acks,
            r.producers,
            r.records_per_batch,
            r.batch_bytes,
            r.in_flight_max
        ),
        &[
            ("elapsed", format!("{:.2} s", r.elapsed_s)),
            ("records/s", format!("{:.0}", r.records_per_s)),
            ("MB/s (payload)", format!("{:.2}", r.mb_per_s)),
            ("requests/s", format!("{:.0}", r.requests_per_s)),
            (
                "latency ms p50/p99/p99.9/max",
                format!("{:.2} / {:.2} / {:.2} / {:.2}", l.p50, l.p99, l.p999, l.max),
            ),
            ("broker fsyncs", or_na(r.fsyncs)),
            ("broker fsyncs/s", f2(r.fsyncs_per_s)),
            (
                "broker peak RSS",
                or_na(r.broker_rss_kib_peak.map(|k| format!("{k} KiB"))),
            ),
            ("broker CPU s", f2(r.broker_cpu_s)),
            (
                "broker disk writes",
                or_na(r.disk_write_bytes.map(|b| format!("{b} B"))),
            ),
            ("write amplification", f2(r.write_amplification)),
            ("disk bytes per fsync", f2(r.disk_bytes_per_fsync)),
        ],
    )
}
