//! log::tests_power_cut: randomized power cuts through the crash-simulating backend
//! (`io::crash`), the acceptance test of the log's durability contract.
//!
//! The contract at the moment of the ack (fsync_on_ack on): the batch is durable. So after any
//! power cut and a reopen, (1) every acknowledged batch not deleted by retention is served at
//! its offsets with its exact bytes, (2) every batch served validates (length, CRC-32C, record
//! count) and is one a producer really sent (unacknowledged but durable is allowed, torn is
//! not), (3) offsets are dense from the log start to the log end, the high watermark is the
//! log end, and the next append gets the log end offset.
//!
//! Each cut point is one seed: the seed draws the workload (how many concurrent producers,
//! batch sizes, whether size retention runs, whether acks wait for fsync), the mutating storage
//! call the power dies at (rolls, retention deletions and the first open included), the
//! [`CutMode`], and sometimes a second cut in the middle of recovery. A failure panics with its
//! seed; `POWER_CUT_SEED=<seed> cargo test power_cut` runs that seed alone, and
//! `POWER_CUT_POINTS=<n>` runs a longer sweep. With one producer
//! the run is deterministic and replays exactly; with several, the writer's grouping depends on
//! timing, so a replay draws the same workload and cut call number but may interleave otherwise.

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
const RECOVERY_CUT_OPS_MAX: u64 = 24;
/// One in this many cut points also cuts during recovery.
const RECOVERY_CUT_ONE_IN: u64 = 4;
const LEADER_EPOCH: i32 = 3;
/// The builders' leader epoch, restored to compare a served batch with the one sent.
const BUILT_LEADER_EPOCH: i32 = -1;
const READ_BYTES_MAX: usize = 4096;
/// Bounds the read loop of the check (each read returns at least one batch).
const READS_MAX: usize = 10_000;

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

/// What the producers sent (as built, base offset 0) and what was acknowledged.
#[derive(Default)]
struct Sent {
    built: HashSet<Vec<u8>>,
    acked: Vec<Acked>,
}

/// A batch as the builders made it: base offset 0 and leader epoch -1, as sent by a producer.
fn as_built(served: &[u8]) -> Vec<u8> {
    let mut b = served.to_vec();
    batch::patch_base_offset(&mut b, 0);
    batch::patch_leader_epoch(&mut b, BUILT_LEADER_EPOCH);
    b
}

fn start_writer(dir: &Path, storage: &CrashStorage) -> DiskWriter {
    DiskWriter::start_with(WriterConfig::new(dir), Arc::new(storage.clone())).expect("writer")
}

/// One producer: `appends` appends of 1..=3 batches each, unique by their timestamps. Stops at
/// the first failure, which must come from the power cut. Producer 0 also runs retention.
async fn produce(
    p: Arc<Partition>,
    storage: CrashStorage,
    sc: Scenario,
    producer: u64,
    appends: usize,
) -> Result<Sent, String> {
    let mut rng = XorShift::new(sc.seed ^ (producer + 1).wrapping_mul(0x9E37_79B9));
    let ts_base = now_ms() + (producer as i64) * 1_000_000;
    let mut sent = Sent::default();
    for i in 0..appends {
        let batches: Vec<Vec<u8>> = (0..1 + rng.below(BATCHES_PER_APPEND_MAX))
            .map(|j| {
                let records = 1 + rng.below(RECORDS_PER_BATCH_MAX) as usize;
                let ts0 = ts_base + (i as i64) * 100 + (j as i64) * 10;
                batch(records, ts0, rng.below(VALUE_BYTES_MAX + 1) as usize)
            })
            .collect();
        sent.built.extend(batches.iter().cloned());
        let result = p.append(Bytes::from(batches.concat()), LEADER_EPOCH).await;
        let info = match result {
            Ok(info) => info,
            Err(_) if storage.is_off() => return Ok(sent),
            Err(e) => return Err(format!("append failed with the power on: {e}")),
        };
        let mut offset = info.base_offset;
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
        if producer == 0 && sc.retention && i % 2 == 1 {
            match p.enforce_retention(now_ms()).await {
                Err(e) if !storage.is_off() => return Err(format!("retention failed: {e}")),
                _ => {}
            }
        }
    }
    Ok(sent)
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
    let tasks: Vec<_> = (0..sc.producers)
        .map(|i| tokio::spawn(produce(p.clone(), storage.clone(), sc, i, per)))
        .collect();
    let mut all = Sent::default();
    for t in tasks {
        let sent = t.await.map_err(|e| format!("producer panicked: {e}"))??;
        all.built.extend(sent.built);
        all.acked.extend(sent.acked);
    }
    Ok((all, p.log_start_offset()))
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
async fn check(
    p: &Partition,
    sent: &Sent,
    start_max: i64,
    acks_durable: bool,
) -> Result<usize, String> {
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
    for a in sent.acked.iter().filter(|_| acks_durable) {
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

/// One cut point: workload, cut, recovery, check. Returns the batches served after recovery.
async fn cut_point(root: &Path, sc: Scenario) -> Result<usize, String> {
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
    storage
        .pull_plug(sc.mode, sc.seed)
        .map_err(|e| e.to_string())?;
    storage.power_on();
    let (p, writer) = recover(root, &storage, sc).await?;
    let served = check(&p, &sent, start_max, sc.fsync_on_ack).await;
    writer.shutdown().await;
    served
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
    let (mut mid_workload, mut batches_checked) = (0u64, 0usize);
    let mut modes: HashMap<&str, u64> = HashMap::new();
    for (i, &seed) in seeds.iter().enumerate() {
        let mut sc = Scenario::draw(seed);
        if !ops_total.contains_key(&sc.variant()) {
            let root = tmp.path().join(format!("calibrate-{i}"));
            std::fs::create_dir(&root).expect("mkdir");
            ops_total.insert(sc.variant(), calibrate(&root, sc).await);
        }
        let total = ops_total[&sc.variant()];
        sc.cut_at_op %= total;
        mid_workload += u64::from(sc.cut_at_op < total * 10 / 11);
        *modes.entry(mode_name(sc.mode)).or_default() += 1;
        let root = tmp.path().join(format!("cut-{i}"));
        std::fs::create_dir(&root).expect("mkdir");
        match cut_point(&root, sc).await {
            Ok(n) => batches_checked += n,
            Err(why) => panic!("power cut seed {seed} ({sc:?}): {why}"),
        }
        std::fs::remove_dir_all(&root).expect("clean up");
    }
    eprintln!(
        "power cuts: {} cut points ({mid_workload} mid-workload), modes {modes:?}, {batches_checked} batches checked",
        seeds.len()
    );
    if seeds.len() as u64 == CUT_POINTS {
        assert!(
            mid_workload > CUT_POINTS / 2,
            "most cuts must land mid-workload"
        );
        assert_eq!(modes.len(), CutMode::ALL.len(), "every mode drawn");
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
