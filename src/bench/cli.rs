//! bench::cli: the `bramble bench …` command line (clap), kept beside the benchmark so main.rs
//! only routes to it. Sizes accept KiB/MiB/GiB suffixes.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{BenchError, consume, disk, produce};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Produce records as fast as the broker acks them; print rates, latency and broker figures.
    Produce(ProduceArgs),
    /// Read a topic from the beginning; print rates and fetch latency.
    Consume(ConsumeArgs),
    /// Measure the disk: sequential appends with fdatasync, as the broker writes.
    Disk(DiskArgs),
}

#[derive(Args)]
pub struct ProduceArgs {
    #[arg(
        short = 'b',
        long = "bootstrap-server",
        default_value = "localhost:9092"
    )]
    bootstrap_server: String,
    #[arg(long, default_value = "bramble-bench")]
    topic: String,
    /// Partitions if the topic is created (-1: the broker's default).
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Bytes of each record's value (keys are null).
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// all (-1), 1 or 0.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    acks: i16,
    /// Concurrent producers, each with its own connection.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Largest batch (Kafka's batch.size).
    #[arg(long, default_value = "16KiB", value_parser = parse_size)]
    batch_bytes: u64,
    /// Longest a partial batch waits (Kafka's linger.ms).
    #[arg(long, default_value_t = 0)]
    linger_ms: u64,
    /// Only `none`: bramble's client does not compress.
    #[arg(long, default_value = "none", value_parser = ["none"])]
    compression: String,
    /// A local broker's pid: adds peak RSS, CPU seconds and write amplification from /proc.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ConsumeArgs {
    #[arg(
        short = 'b',
        long = "bootstrap-server",
        default_value = "localhost:9092"
    )]
    bootstrap_server: String,
    #[arg(long, default_value = "bramble-bench")]
    topic: String,
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DiskArgs {
    /// Directory on the medium to measure (a temporary file is written there, then removed).
    #[arg(long)]
    dir: PathBuf,
    /// Bytes per write: use a produce run's "disk bytes per fsync" to compare like with like.
    #[arg(long, default_value = "16KiB", value_parser = parse_size)]
    chunk_bytes: u64,
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    total_bytes: u64,
    /// fdatasync after this many chunks.
    #[arg(long, default_value_t = 1)]
    sync_every: u64,
    #[arg(long)]
    json: bool,
}

fn parse_acks(s: &str) -> Result<i16, String> {
    match s {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        "0" => Ok(0),
        _ => Err(format!("acks must be all, -1, 1 or 0, not {s}")),
    }
}

/// "4096", "16KiB", "8MiB", "1GiB" (also K/M/G and KB/MB/GB as powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("not a size: {s}"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("unknown size unit in {s}")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size too large: {s}"))
}

fn print<T: serde::Serialize>(json: bool, report: &T, table: String) -> Result<(), BenchError> {
    if json {
        let text = serde_json::to_string(report).map_err(|e| BenchError::Invalid(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{table}");
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| BenchError::Io {
            what: "cannot start the runtime",
            path: PathBuf::new(),
            source,
        })
}

pub fn run(cmd: BenchCommand) -> Result<(), BenchError> {
    match cmd {
        BenchCommand::Produce(a) => {
            let opts = produce::ProduceOptions {
                bootstrap: a.bootstrap_server,
                topic: a.topic,
                partitions: a.partitions,
                messages: a.messages,
                record_size: a.record_size,
                acks: a.acks,
                producers: a.producers,
                batch_bytes: usize::try_from(a.batch_bytes).unwrap_or(usize::MAX),
                linger_ms: a.linger_ms,
                broker_pid: a.broker_pid,
            };
            let r = runtime()?.block_on(produce::run(opts))?;
            print(a.json, &r, produce::render(&r))
        }
        BenchCommand::Consume(a) => {
            let opts = consume::ConsumeOptions {
                bootstrap: a.bootstrap_server,
                topic: a.topic,
                messages: a.messages,
            };
            let r = runtime()?.block_on(consume::run(opts))?;
            print(a.json, &r, consume::render(&r))
        }
        BenchCommand::Disk(a) => {
            let opts = disk::DiskOptions {
                dir: a.dir,
                chunk_bytes: a.chunk_bytes,
                total_bytes: a.total_bytes,
                sync_every: a.sync_every,
            };
            let r = disk::run(&opts)?;
            print(a.json, &r, disk::render(&r))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_acks_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("8 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(parse_acks("all"), Ok(-1));
        assert!(parse_acks("2").is_err());
    }
}
