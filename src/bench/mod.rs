//! bench: `bramble bench produce|consume|disk`, the benchmark of issue 3 (in the spirit of
//! kafka-producer-perf-test and rdkafka_performance). It drives a broker with the crate's own
//! client ([`crate::client::producer`], [`crate::client::consumer`]) and measures the disk's own
//! ceiling the way the broker writes ([`disk`]), so a produce figure can be quoted as a fraction
//! of what the medium can do.
//!
//! - [`produce`]: concurrent pipelined producers; records/s, MB/s, per-record latency, and from
//!   the broker: peak RSS, CPU seconds, fsyncs, write amplification.
//! - [`consume`]: Fetch from offset 0; records/s, MB/s, fetch latency.
//! - [`disk`]: sequential appends + fdatasync cadence; MB/s, syncs/s, latency.
//! - [`histogram`]: percentiles in fixed memory; [`proc_stats`]: /proc of the broker.
//!
//! Every command returns a report that prints as a table or, with `--json`, one JSON object.
//! MB means 10^6 bytes. No figure here is asserted by a test: benchmarks are not timed tests.

pub mod cli;
pub mod consume;
pub mod disk;
pub mod histogram;
pub mod proc_stats;
pub mod produce;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::client::ClientError;

/// How often a terminal sees a progress line.
const PROGRESS_INTERVAL_MS: u64 = 1_000;
/// Bytes in the MB of "MB/s".
pub const MB_BYTES: f64 = 1_000_000.0;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("a benchmark task failed: {0}")]
    Task(String),
}

/// Nanosecond-free latency unit of reports: milliseconds with microsecond resolution.
pub fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1_000.0
}

/// Latency percentiles of a report, in ms.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    /// From a histogram of microseconds.
    pub fn from_us(h: &histogram::Histogram) -> Latency {
        Latency {
            p50: us_to_ms(h.quantile(0.50)),
            p99: us_to_ms(h.quantile(0.99)),
            p999: us_to_ms(h.quantile(0.999)),
            max: us_to_ms(h.max()),
        }
    }
}

/// Prints "records done, rate" on stderr once a second while a run lasts, only when stderr is a
/// terminal (a pipe or a test gets nothing). Stops when dropped.
pub struct Progress {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Progress {
    pub fn start(done: Arc<AtomicU64>, total: u64, what: &'static str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { stop: None };
        }
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let start = Instant::now();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(PROGRESS_INTERVAL_MS));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tick.tick() => {}
                }
                let n = done.load(Ordering::Relaxed);
                let rate = n as f64 / start.elapsed().as_secs_f64();
                eprint!("\r{n}/{total} {what}, {rate:.0}/s   ");
                let _ = std::io::stderr().flush();
            }
            eprint!("\r{:60}\r", "");
        });
        Progress { stop: Some(tx) }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Formats `rows` as an aligned two-column table.
pub fn table(title: &str, rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = format!("{title}\n");
    for (k, v) in rows {
        out.push_str(&format!("  {k:<width$}  {v}\n"));
    }
    out
}

/// "n/a" for a missing figure.
pub fn or_na<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string())
        .unwrap_or_else(|| "n/a".to_string())
}
