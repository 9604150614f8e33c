//! log::tests_power_cut: randomized power cuts through the crash-simulating backend
//! (`io::crash`), the acceptance test of the log's durability contract.
//!
//! The contract: a batch is durable once acknowledged (fsync_on_ack on) or once a flush that
//! started after its ack returns (fsync_on_ack off). So after any power cut and a reopen,
//! (1) every such batch not deleted by retention is served at its offsets with its exact bytes,
//! (2) every batch served validates (length, CRC-32C, record count) and is one a producer really
//! sent (unacknowledged but durable is allowed, torn is not), (3) offsets are dense from the log
//! start to the log end, the high watermark is the log end, and the next append gets the log
//! end offset.
//!
//! Each cut point is one seed: the seed draws the workload (how many concurrent producers,
//! batch sizes, whether size retention runs, whether acks wait for fsync), the mutating storage
//! call the power dies at (rolls, retention deletions and the first open included), the
//! [`CutMode`], and sometimes a second cut in the middle of recovery. A failure panics with its
//! seed; `POWER_CUT_SEED=<seed> cargo test power_cut` runs that seed alone, and
//! `POWER_CUT_POINTS=<n>` runs a longer sweep. With one producer the run is deterministic and
//! replays exactly; with several, the writer's grouping depends on timing, so a replay draws the
//! same workload and cut call number but may interleave otherwise.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::tests::config;
use super::*;
use crate::io::crash::{CrashStorage, CutMode, XorShift};
use crate::io::{DiskWriter, WriterConfig};
use crate::protocol::batch::test_batches::batch;

/// First seed; cut point `i` uses `BASE_SEED + i`.
const BASE_SEED: u64 = 0xB4A3_B1E5_0003_0000;
/// Cut points per run of the test (sized to stay well under 20 s in a debug build).
const CUT_POINTS: u64 = 2000;
/// Appends per cut point, shared among the producers.
const APPENDS_TOTAL: usize = 24;
const PRODUCERS_MAX: u64 = 4;
const BATCHES_PER_APPEND_MAX: u64 = 3;
const RECORDS_PER_BATCH_MAX: u64 = 4;
const VALUE_BYTES_MAX: u64 = 120;
/// Small, so a cut point sees several rolls.
const SEGMENT_BYTES_MAX: u64 = 1024;
const RETENTION_BYTES_MAX: u64 = 2048;
/// A second cut during recovery lands within this many mutating calls of the reopen.
const RECOVERY_CUT_OPS_MAX: u64 = 8;
/// One in this many cut points also cuts during recovery.
const RECOVERY_CUT_ONE_IN: u64 = 4;
const LEADER_EPOCH: i32 = 3;
/// The builders' leader epoch, restored to compare a served batch with the one sent.
const BUILT_LEADER_EPOCH: i32 = -1;
const READ_BYTES_MAX: usize = 4096;
/// Bounds the read loop of the check (each read returns at least one batch).
const READS_MAX: usize = 10_000;
/// With fsync_on_ack off, producer 0 flushes every this many appends (acks before it then count).
const FLUSH_EVERY_APPENDS: usize = 3;

/// What one seed draws.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    seed: u64,
    producers: u64,
    retention: bool,
    fsync_on_ack: bool,
    mode: CutMode,
    /// Filled in once the variant is calibrated: the mutating call the power dies at.
    cut_at_op: u64,
    recovery_cut: Option<(u64, CutMode)>,
}

impl Scenario {
    fn draw(seed: u64) -> Scenario {
        let mut rng = XorShift::new(seed);
        let mode = CutMode::ALL[rng.below(CutMode::ALL.len() as u64) as usize];
        let recovery_cut = (rng.below(RECOVERY_CUT_ONE_IN) == 0).then(|| {
            let mode = CutMode::ALL[rng.below(CutMode::ALL.len() as u64) as usize];
            (rng.below(RECOVERY_CUT_OPS_MAX), mode)
        });
        Scenario {
            seed,
            producers: 1 + rng.below(PRODUCERS_MAX),
            retention: rng.coin(),
            // Mostly acks that promise durability; sometimes not, to recover from more torn data.
            fsync_on_ack: rng.below(4) != 0,
            mode,
            cut_at_op: rng.next_u64(),
            recovery_cut,
        }
    }

    fn variant(&self) -> (u64, bool, bool) {
        (self.producers, self.retention, self.fsync_on_ack)
    }

    fn config(&self) -> LogConfig {
        LogConfig {
            segment_bytes_max: SEGMENT_BYTES_MAX,
            retention_bytes_max: self.retention.then_some(RETENTION_BYTES_MAX),
            fsync_on_ack: self.fsync_on_ack,
            ..config()
        }
    }
}

/// An acknowledged batch: its offset and the exact bytes the log must serve there.
struct Acked {
    base_offset: i64,
    last_offset: i64,
    bytes: Vec<u8>,
}

/// What the producers sent (as built, base offset 0) and what was acknowledged, in ack order.
#[derive(Default)]
struct Sent {
    built: HashSet<Vec<u8>>,
    acked: Vec<Acked>,
    /// `acked[..durable]` must survive: acked with fsync_on_ack, or acked before a flush that
    /// succeeded.
    durable: usize,
}

type Ledger = Arc<std::sync::Mutex<Sent>>;

fn ledger(l: &Ledger) -> std::sync::MutexGuard<'_, Sent> {
    l.lock().expect("ledger")
}

/// A batch as the builders made it: base offset 0 and leader epoch -1, as sent by a producer.
fn as_built(served: &[u8]) -> Vec<u8> {
    let mut b = served.to_vec();
    batch::patch_base_offset(&mut b, 0);
    batch::patch_leader_epoch(&mut b, BUILT_LEADER_EPOCH);
    b
}

pub(super) fn start_writer(dir: &Path, storage: &CrashStorage) -> DiskWriter {
    DiskWriter::start_with(WriterConfig::new(dir), Arc::new(storage.clone())).expect("writer")
}

/// Records the batches of an acknowledged append at the offsets it was given, as the log must
/// now hold them (offset and leader epoch patched).
fn record_ack(
    sent: &Ledger,
    base_offset: i64,
    batches: Vec<Vec<u8>>,
    durable: bool,
) -> Result<(), String> {
    let mut sent = ledger(sent);
    let mut offset = base_offset;
    for mut b in batches {
        batch::patch_base_offset(&mut b, offset);
        batch::patch_leader_epoch(&mut b, LEADER_EPOCH);
        let h = batch::BatchHeader::parse(&b).map_err(|e| e.to_string())?;
        sent.acked.push(Acked {
            base_offset: offset,
            last_offset: h.last_offset(),
            bytes: b,
        });
        offset = h.last_offset() + 1;
    }
    if durable {
        sent.durable = sent.acked.len();
    }
    Ok(())
}

/// One producer: `appends` appends of 1..=3 batches each, unique by their timestamps. Stops at
/// the first failure, which must come from the power cut. Producer 0 also runs retention and,
/// when acks do not wait for fsync, flushes.
async fn produce(
    p: Arc<Partition>,
    storage: CrashStorage,
    sc: Scenario,
    producer: u64,
    appends: usize,
    sent: Ledger,
) -> Result<(), String> {
    let mut rng = XorShift::new(sc.seed ^ (producer + 1).wrapping_mul(0x9E37_79B9));
    let ts_base = now_ms() + (producer as i64) * 1_000_000;
    for i in 0..appends {
        let batches: Vec<Vec<u8>> = (0..1 + rng.below(BATCHES_PER_APPEND_MAX))
            .map(|j| {
                let records = 1 + rng.below(RECORDS_PER_BATCH_MAX) as usize;
                let ts0 = ts_base + (i as i64) * 100 + (j as i64) * 10;
                batch(records, ts0, rng.below(VALUE_BYTES_MAX + 1) as usize)
            })
            .collect();
        ledger(&sent).built.extend(batches.iter().cloned());
        let result = p.append(Bytes::from(batches.concat()), LEADER_EPOCH).await;
        let info = match result {
            Ok(info) => info,
            Err(_) if storage.is_off() => return Ok(()),
            Err(e) => return Err(format!("append failed with the power on: {e}")),
        };
        record_ack(&sent, info.base_offset, batches, sc.fsync_on_ack)?;
        if producer == 0 && sc.retention && i % 2 == 1 {
            match p.enforce_retention(now_ms()).await {
                Err(e) if !storage.is_off() => return Err(format!("retention failed: {e}")),
                _ => {}
            }
        }
        if producer == 0 && !sc.fsync_on_ack && i % FLUSH_EVERY_APPENDS == 0 {
            let acked_before = ledger(&sent).acked.len();
            match p.flush().await {
                Ok(()) => {
                    let mut sent_now = ledger(&sent);
                    sent_now.durable = sent_now.durable.max(acked_before);
                }
                Err(_) if storage.is_off() => return Ok(()),
                Err(e) => return Err(format!("flush failed with the power on: {e}")),
            }
        }
    }
    Ok(())
}

/// Runs the producers concurrently to the end (or the cut) and merges what they sent. Also
/// returns the log start offset the partition reached in memory: retention may have deleted up
/// to it, no further.
async fn workload(
    p: Arc<Partition>,
    storage: &CrashStorage,
    sc: Scenario,
) -> Result<(Sent, i64), String> {
    let per = APPENDS_TOTAL / sc.producers as usize;
    let sent = Ledger::default();
    let tasks: Vec<_> = (0..sc.producers)
        .map(|i| {
            let producer = produce(p.clone(), storage.clone(), sc, i, per, sent.clone());
            tokio::spawn(producer)
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| format!("producer panicked: {e}"))??;
    }
    let sent = std::mem::take(&mut *ledger(&sent));
    Ok((sent, p.log_start_offset()))
}

/// Mutating calls a whole uncut workload of this variant makes (cut points are drawn below it,
/// plus a tenth more so some cuts land after the end).
async fn calibrate(root: &Path, sc: Scenario) -> u64 {
    let storage = CrashStorage::new(root);
    let dir = root.join("t-0");
    let writer = start_writer(&dir, &storage);
    let p = Arc::new(Partition::open(&dir, sc.config(), writer.clone()).expect("open"));
    workload(p, &storage, sc).await.expect("uncut workload");
    writer.shutdown().await;
    storage.ops() + storage.ops() / 10 + 1
}

/// Reads the whole log and checks the contract (see the module comment).
async fn check(p: &Partition, sent: &Sent, start_max: i64) -> Result<usize, String> {
    let (start, end) = (p.log_start_offset(), p.log_end_offset());
    if p.high_watermark() != end {
        return Err(format!(
            "high watermark {} != log end {end}",
            p.high_watermark()
        ));
    }
    if start > start_max {
        return Err(format!(
            "log start {start} is past {start_max}, what retention deleted"
        ));
    }
    let mut served: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    let mut next = start;
    for _ in 0..READS_MAX {
        if next >= end {
            break;
        }
        let r = p
            .read(next, READ_BYTES_MAX)
            .await
            .map_err(|e| format!("read {next}: {e}"))?;
        let batches =
            batch::split(&r.records).map_err(|e| format!("corrupt batch served at {next}: {e}"))?;
        for (h, range) in batches {
            if h.base_offset != next {
                return Err(format!(
                    "offsets not dense: batch at {} where {next} was due",
                    h.base_offset
                ));
            }
            let bytes = r.records[range].to_vec();
            if !sent.built.contains(&as_built(&bytes)) {
                return Err(format!("batch at {next} was never sent"));
            }
            served.insert(next, bytes);
            next = h.last_offset() + 1;
        }
    }
    if next != end {
        return Err(format!("reads stopped at {next}, log end is {end}"));
    }
    for a in &sent.acked[..sent.durable] {
        if a.last_offset < start {
            continue; // Deleted by retention before the cut.
        }
        if served.get(&a.base_offset) != Some(&a.bytes) {
            return Err(format!(
                "acknowledged batch {}..={} lost or changed (log {start}..{end})",
                a.base_offset, a.last_offset
            ));
        }
    }
    let next_batch = Bytes::from(batch(2, now_ms(), 8));
    let info = p
        .append(next_batch, LEADER_EPOCH)
        .await
        .map_err(|e| format!("append after recovery: {e}"))?;
    if info.base_offset != end || p.high_watermark() != end + 2 {
        return Err(format!(
            "append after recovery got {info:?}, log end was {end}"
        ));
    }
    Ok(served.len())
}

/// Reopens after the cut, first through a second cut during recovery when the scenario has one.
async fn recover(
    root: &Path,
    storage: &CrashStorage,
    sc: Scenario,
) -> Result<(Partition, DiskWriter), String> {
    let dir = root.join("t-0");
    if let Some((ops, mode)) = sc.recovery_cut {
        storage.pull_plug_after(ops, mode, sc.seed.rotate_left(17));
        let writer = start_writer(&dir, storage);
        let opened = Partition::open(&dir, sc.config(), writer.clone());
        if opened.is_err() && !storage.is_off() {
            return Err(format!(
                "recovery failed with the power on: {:?}",
                opened.err()
            ));
        }
        drop(opened);
        writer.shutdown().await;
        storage.disarm();
        storage.power_on();
    }
    let writer = start_writer(&dir, storage);
    let p = Partition::open(&dir, sc.config(), writer.clone())
        .map_err(|e| format!("recovery failed: {e}"))?;
    Ok((p, writer))
}

/// What one cut point saw: batches served after recovery, and the storage calls the cut and the
/// recovery cut fired at (None: the workload ended first, or recovery finished first).
struct Outcome {
    batches: usize,
    cut_call: Option<&'static str>,
    recovery_cut_call: Option<&'static str>,
}

/// One cut point: workload, cut, recovery, check.
async fn cut_point(root: &Path, sc: Scenario) -> Result<Outcome, String> {
    let storage = CrashStorage::new(root);
    let dir = root.join("t-0");
    storage.pull_plug_after(sc.cut_at_op, sc.mode, sc.seed);
    let writer = start_writer(&dir, &storage);
    let (sent, start_max) = match Partition::open(&dir, sc.config(), writer.clone()) {
        Ok(p) => workload(Arc::new(p), &storage, sc).await?,
        Err(_) if storage.is_off() => (Sent::default(), 0),
        Err(e) => return Err(format!("first open failed with the power on: {e}")),
    };
    writer.shutdown().await;
    let cut_call = storage.cut_call();
    storage
        .pull_plug(sc.mode, sc.seed)
        .map_err(|e| e.to_string())?;
    storage.power_on();
    let (p, writer) = recover(root, &storage, sc).await?;
    let recovery_cut_call = sc.recovery_cut.and(storage.cut_call());
    let served = check(&p, &sent, start_max).await;
    writer.shutdown().await;
    Ok(Outcome {
        batches: served?,
        cut_call,
        recovery_cut_call,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_lose_no_acknowledged_batch_and_serve_no_corrupt_one() {
    // Proves the durability contract above at CUT_POINTS randomized cut points (or at the one
    // seed in POWER_CUT_SEED), and that the cuts really land mid-workload in every mode.
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.parse::<u64>().expect(name))
    };
    let seeds: Vec<u64> = match (env("POWER_CUT_SEED"), env("POWER_CUT_POINTS")) {
        (Some(seed), _) => vec![seed],
        (None, points) => (0..points.unwrap_or(CUT_POINTS))
            .map(|i| BASE_SEED + i)
            .collect(),
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ops_total: HashMap<(u64, bool, bool), u64> = HashMap::new();
    let mut batches_checked = 0usize;
    let mut modes: HashMap<&str, u64> = HashMap::new();
    let mut calls: BTreeMap<&str, u64> = BTreeMap::new();
    let mut recovery_calls: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, &seed) in seeds.iter().enumerate() {
        let mut sc = Scenario::draw(seed);
        if let std::collections::hash_map::Entry::Vacant(e) = ops_total.entry(sc.variant()) {
            let root = tmp.path().join(format!("calibrate-{i}"));
            std::fs::create_dir(&root).expect("mkdir");
            e.insert(calibrate(&root, sc).await);
        }
        let total = ops_total[&sc.variant()];
        sc.cut_at_op %= total;
        *modes.entry(mode_name(sc.mode)).or_default() += 1;
        let root = tmp.path().join(format!("cut-{i}"));
        std::fs::create_dir(&root).expect("mkdir");
        match cut_point(&root, sc).await {
            Ok(o) => {
                batches_checked += o.batches;
                *calls.entry(o.cut_call.unwrap_or("none")).or_default() += 1;
                if let Some(call) = o.recovery_cut_call {
                    *recovery_calls.entry(call).or_default() += 1;
                }
            }
            Err(why) => panic!("power cut seed {seed} ({sc:?}): {why}"),
        }
        std::fs::remove_dir_all(&root).expect("clean up");
    }
    let fired: u64 = calls
        .iter()
        .filter(|(c, _)| **c != "none")
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "power cuts: {} cut points, {fired} fired mid-workload, modes {modes:?}, cut at \
         {calls:?}, recovery cut at {recovery_calls:?}, {batches_checked} batches checked",
        seeds.len()
    );
    if seeds.len() as u64 == CUT_POINTS {
        assert!(fired > CUT_POINTS / 2, "most cuts must land mid-workload");
        assert_eq!(modes.len(), CutMode::ALL.len(), "every mode drawn");
        // Appends (write, fsync), rolls (create, sync_dir) and retention (remove_file) all cut.
        for call in ["write_at", "sync_data", "create", "sync_dir", "remove_file"] {
            assert!(calls.contains_key(call), "no cut at {call}: {calls:?}");
        }
    }
}

fn mode_name(mode: CutMode) -> &'static str {
    match mode {
        CutMode::DropUnsynced => "drop",
        CutMode::KeepPrefix => "prefix",
        CutMode::TearLast => "tear",
        CutMode::Scramble => "scramble",
    }
}

#[tokio::test]
async fn one_producer_cut_points_replay_exactly() {
    // Proves the replay promise of the module comment: with one producer, running a seed twice
    // cuts at the same storage call and recovers the same log, so a failing seed reproduces.
    const SEEDS_TRIED_MAX: u64 = 1000;
    const CUT_AT_OP: u64 = 60;
    let tmp = tempfile::tempdir().expect("tempdir");
    let seed = (BASE_SEED..BASE_SEED + SEEDS_TRIED_MAX)
        .find(|&s| Scenario::draw(s).producers == 1)
        .expect("a one-producer seed");
    let sc = Scenario {
        cut_at_op: CUT_AT_OP,
        ..Scenario::draw(seed)
    };
    let mut runs = Vec::new();
    for run in 0..2 {
        let root = tmp.path().join(format!("run-{run}"));
        std::fs::create_dir(&root).expect("mkdir");
        let o = cut_point(&root, sc)
            .await
            .unwrap_or_else(|why| panic!("seed {seed}: {why}"));
        runs.push((o.batches, o.cut_call, o.recovery_cut_call));
    }
    assert!(runs[0].1.is_some(), "the cut fired mid-workload");
    assert_eq!(runs[0], runs[1], "seed {seed} replays");
}
