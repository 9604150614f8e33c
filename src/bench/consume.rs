//! bench::consume: `bramble bench consume`. Reads a topic from offset 0 of every partition with
//! one connection (one Fetch of all partitions at a time, long-polling) until `messages` records
//! have arrived; reports records/s, MB/s of fetched batch bytes (record headers included, as
//! they cross the wire) and the latency of each Fetch round trip.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

use super::histogram::Histogram;
use super::{BenchError, Latency, MB_BYTES, Progress, table};
use crate::client::consumer::Consumer;
use crate::client::{Client, admin};

/// A run fails if this long passes without a new record (the topic holds fewer than asked).
pub const STALL_MS_MAX: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    pub bootstrap: String,
    pub topic: String,
    pub messages: u64,
}

/// One run's figures. Latencies in ms, MB = 10^6 bytes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConsumeReport {
    pub topic: String,
    pub partitions: usize,
    /// Records read; the last fetch's whole batches may take it past `messages`.
    pub records: u64,
    pub batch_bytes: u64,
    pub fetches: u64,
    pub elapsed_s: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub fetch_latency_ms: Latency,
}

async fn partitions(client: &mut Client, topic: &str) -> Result<usize, BenchError> {
    let meta = admin::metadata(client, Some(&[topic])).await?;
    match meta.topics.first() {
        Some(t) if t.error_code == 0 && !t.partitions.is_empty() => Ok(t.partitions.len()),
        Some(t) => Err(BenchError::Invalid(format!(
            "topic {topic} unusable (metadata error {})",
            t.error_code
        ))),
        None => Err(BenchError::Invalid("metadata named no topic".into())),
    }
}

pub async fn run(opts: ConsumeOptions) -> Result<ConsumeReport, BenchError> {
    if opts.messages == 0 {
        return Err(BenchError::Invalid("--messages must be at least 1".into()));
    }
    let mut client = Client::connect(&opts.bootstrap).await?;
    let n = partitions(&mut client, &opts.topic).await?;
    let topic = TopicName(StrBytes::from_string(opts.topic.clone()));
    let mut consumer = Consumer::new(client, topic, vec![0; n]);
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(done.clone(), opts.messages, "records");
    let mut latency_us = Histogram::new();
    let (mut records, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    let mut last_progress = start;
    while records < opts.messages {
        let sent = Instant::now();
        let got = consumer.fetch().await?;
        latency_us.record(sent.elapsed().as_micros() as u64);
        if got.records > 0 {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_millis(STALL_MS_MAX) {
            return Err(BenchError::Invalid(format!(
                "only {records} of {} records in {} after {STALL_MS_MAX} ms without progress",
                opts.messages, opts.topic
            )));
        }
        records += got.records;
        bytes += got.batch_bytes;
        done.store(records, Ordering::Relaxed);
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    drop(progress);
    Ok(ConsumeReport {
        topic: opts.topic,
        partitions: n,
        records,
        batch_bytes: bytes,
        fetches: latency_us.count(),
        elapsed_s,
        records_per_s: records as f64 / elapsed_s,
        mb_per_s: bytes as f64 / MB_BYTES / elapsed_s,
        fetch_latency_ms: Latency::from_us(&latency_us),
    })
}

pub fn render(r: &ConsumeReport) -> String {
    let l = &r.fetch_latency_ms;
    table(
        &format!(
            "consume: {} records from {} ({} partitions), {} fetches",
            r.records, r.topic, r.partitions, r.fetches
        ),
        &[
            ("elapsed", format!("{:.2} s", r.elapsed_s)),
            ("records/s", format!("{:.0}", r.records_per_s)),
            ("MB/s (batch bytes)", format!("{:.2}", r.mb_per_s)),
            (
                "fetch latency ms p50/p99/p99.9/max",
                format!("{:.2} / {:.2} / {:.2} / {:.2}", l.p50, l.p99, l.p999, l.max),
            ),
        ],
    )
}
