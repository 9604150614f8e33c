//! `bramble bench produce|consume|disk` against the real binary: each run with `--json` prints one
//! JSON object whose structure is checked — record counts, positive rates, ordered percentiles,
//! broker figures present when the pid is given, write amplification above 1 (the broker writes
//! headers and indexes besides the payload). No assertion is made on speed: benchmarks are not
//! timed tests.

mod common;

use common::{Broker, run_cli};
use serde_json::Value;

const RECORDS: u64 = 20_000;

fn bench(args: &[&str], workdir: &std::path::Path) -> Value {
    let out = run_cli(args, workdir);
    assert!(
        out.status.success(),
        "bramble {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing or not a number in {v}"))
}

/// p50 <= p99 <= p99.9 <= max, all non-negative.
fn assert_ordered(latency: &Value) {
    let (p50, p99, p999, max) = (
        f(latency, "p50"),
        f(latency, "p99"),
        f(latency, "p999"),
        f(latency, "max"),
    );
    assert!(
        0.0 <= p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "{latency}"
    );
}

#[test]
fn produce_then_consume_report_consistent_figures() {
    let broker = Broker::start();
    let (addr, pid) = (broker.addr(), broker.pid().to_string());
    let n = RECORDS.to_string();
    let p = bench(
        &[
            "bench",
            "produce",
            "-b",
            &addr,
            "--topic",
            "bench",
            "--partitions",
            "3",
            "--messages",
            &n,
            "--record-size",
            "100",
            "--acks",
            "all",
            "--producers",
            "2",
            "--broker-pid",
            &pid,
            "--json",
        ],
        broker.dir.path(),
    );
    assert_eq!(p["records"].as_u64(), Some(RECORDS), "{p}");
    assert_eq!(p["partitions"].as_i64(), Some(3));
    for key in ["records_per_s", "mb_per_s", "requests_per_s", "elapsed_s"] {
        assert!(f(&p, key) > 0.0, "{key} in {p}");
    }
    assert_ordered(&p["latency_ms"]);
    // bramble exposes its fsync count; acks=all with fsync_on_ack syncs at least once.
    assert!(f(&p, "fsyncs") >= 1.0, "{p}");
    assert!(f(&p, "broker_rss_kib_peak") > 0.0, "{p}");
    assert!(f(&p, "broker_cpu_s") >= 0.0, "{p}");
    assert!(f(&p, "write_amplification") > 1.0, "{p}");

    let c = bench(
        &[
            "bench",
            "consume",
            "-b",
            &addr,
            "--topic",
            "bench",
            "--messages",
            &n,
            "--json",
        ],
        broker.dir.path(),
    );
    assert_eq!(
        c["records"].as_u64(),
        Some(RECORDS),
        "all records, no more: {c}"
    );
    assert!(
        f(&c, "records_per_s") > 0.0 && f(&c, "mb_per_s") > 0.0,
        "{c}"
    );
    assert!(f(&c, "fetches") >= 1.0, "{c}");
    assert_ordered(&c["fetch_latency_ms"]);
}

#[test]
fn produce_without_pid_reports_broker_figures_as_null() {
    let broker = Broker::start();
    let p = bench(
        &[
            "bench",
            "produce",
            "-b",
            &broker.addr(),
            "--messages",
            "1000",
            "--acks",
            "1",
            "--json",
        ],
        broker.dir.path(),
    );
    assert_eq!(p["records"].as_u64(), Some(1000));
    assert!(p["write_amplification"].is_null() && p["broker_rss_kib_peak"].is_null());
}

#[test]
fn disk_probe_reports_and_removes_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let probe_dir = dir.path().join("probe");
    std::fs::create_dir(&probe_dir).unwrap();
    let d = bench(
        &[
            "bench",
            "disk",
            "--dir",
            probe_dir.to_str().unwrap(),
            "--total-bytes",
            "8MiB",
            "--chunk-bytes",
            "64KiB",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(d["bytes"].as_u64(), Some(8 << 20), "{d}");
    assert_eq!(
        d["syncs"].as_u64(),
        Some(128),
        "one fdatasync per chunk: {d}"
    );
    assert!(f(&d, "mb_per_s") > 0.0 && f(&d, "syncs_per_s") > 0.0, "{d}");
    assert_ordered(&d["latency_ms"]);
    assert_eq!(std::fs::read_dir(&probe_dir).unwrap().count(), 0);
}
