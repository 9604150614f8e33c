//! log::tests_power_cut_producers: idempotent producer state (`producers`) across randomized
//! power cuts through the crash-simulating backend (`io::crash`).
//!
//! Several idempotent producers append concurrently (one batch per request, sequences counting
//! up, one producer sometimes bumping its epoch half way), acks waiting for fsync; the power dies
//! at a random mutating storage call (sometimes again during recovery). After the reopen each
//! producer does what a client does after a lost connection, and the log must answer as if no cut
//! had happened: (1) the batch it had in flight, sent again, is a duplicate answered with the
//! offsets it is served at if it reached the disk, and is appended at the log end if it did not;
//! (2) its last acknowledged batch, sent again, is a duplicate answered with its original offsets
//! and adds nothing to the log (or is refused as a fenced epoch when the in-flight batch opened
//! a newer one), whenever that batch lies in the segments the state is rebuilt from
//! (`producers::REBUILD_SEGMENTS_MAX`; older ones are forgotten by design, as in Kafka without
//! a snapshot, and the test counts how often that happens); (3) its next sequence is accepted
//! at the log end. `PRODUCER_CUT_SEED=<seed>` runs one seed, `PRODUCER_CUT_POINTS=<n>`
//! a longer sweep.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::producers::REBUILD_SEGMENTS_MAX;
use super::tests::config;
use super::tests_power_cut::start_writer;
use super::*;
use crate::io::DiskWriter;
use crate::io::crash::{CrashStorage, CutMode, XorShift};
use crate::protocol::batch::test_batches::{batch, with_producer};

const BASE_SEED: u64 = 0x1DE4_0000;
/// Cut points per run (a few seconds in a debug build).
const CUT_POINTS: u64 = 300;
const APPENDS_PER_PRODUCER: usize = 10;
const PRODUCERS_MAX: u64 = 3;
/// Producer ids are this plus the producer's index.
const PRODUCER_ID_BASE: i64 = 4000;
const RECORDS_PER_BATCH_MAX: u64 = 4;
const VALUE_BYTES_MAX: u64 = 100;
/// Small, so a cut point sees rolls and the rebuild reads across segments.
const SEGMENT_BYTES_MAX: u64 = 1024;
const RECOVERY_CUT_OPS_MAX: u64 = 8;
const RECOVERY_CUT_ONE_IN: u64 = 4;
const LEADER_EPOCH: i32 = 2;
const READ_BYTES_MAX: usize = 4096;
const READS_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Scenario {
    seed: u64,
    producers: u64,
    /// Producer 0 moves to epoch 1 (sequence 0) half way.
    bump_epoch: bool,
    mode: CutMode,
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
            bump_epoch: rng.coin(),
            mode,
            cut_at_op: rng.next_u64(),
            recovery_cut,
        }
    }

    fn variant(&self) -> (u64, bool) {
        (self.producers, self.bump_epoch)
    }

    fn config(&self) -> LogConfig {
        LogConfig {
            segment_bytes_max: SEGMENT_BYTES_MAX,
            ..config()
        }
    }
}

/// One producer's batch: its identity and, once acknowledged, its offsets.
#[derive(Debug, Clone)]
struct Sent {
    epoch: i16,
    base_sequence: i32,
    records: i32,
    bytes: Vec<u8>,
}

/// What one producer ended the workload with.
#[derive(Debug, Default, Clone)]
struct Producer {
    /// The last acknowledged batch and its (base, last) offsets.
    last_acked: Option<(Sent, (i64, i64))>,
    /// The batch whose append the cut interrupted, if any.
    in_flight: Option<Sent>,
    /// Where the next batch goes: (epoch, base sequence).
    next: (i16, i32),
}

/// One producer's appends; stops at the first failure, which must come from the cut.
async fn produce(
    p: Arc<Partition>,
    storage: CrashStorage,
    sc: Scenario,
    index: u64,
) -> Result<Producer, String> {
    let mut rng = XorShift::new(sc.seed ^ (index + 1).wrapping_mul(0x9E37_79B9));
    let pid = PRODUCER_ID_BASE + index as i64;
    let mut state = Producer::default();
    let ts0 = now_ms() + (index as i64) * 1_000_000;
    for i in 0..APPENDS_PER_PRODUCER {
        if index == 0 && sc.bump_epoch && i == APPENDS_PER_PRODUCER / 2 {
            state.next = (state.next.0 + 1, 0);
        }
        let records = 1 + rng.below(RECORDS_PER_BATCH_MAX) as i32;
        let plain = batch(
            records as usize,
            ts0 + (i as i64) * 10,
            rng.below(VALUE_BYTES_MAX) as usize,
        );
        let (epoch, base_sequence) = state.next;
        let sent = Sent {
            epoch,
            base_sequence,
            records,
            bytes: with_producer(plain, pid, epoch, base_sequence),
        };
        match p
            .append(Bytes::from(sent.bytes.clone()), LEADER_EPOCH)
            .await
        {
            Ok(info) => state.last_acked = Some((sent, (info.base_offset, info.last_offset))),
            Err(_) if storage.is_off() => {
                state.in_flight = Some(sent);
                return Ok(state);
            }
            Err(e) => return Err(format!("append failed with the power on: {e}")),
        }
        state.next = (epoch, base_sequence + records);
    }
    Ok(state)
}

async fn workload(
    p: Arc<Partition>,
    storage: &CrashStorage,
    sc: Scenario,
) -> Result<Vec<Producer>, String> {
    let tasks: Vec<_> = (0..sc.producers)
        .map(|i| tokio::spawn(produce(p.clone(), storage.clone(), sc, i)))
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.map_err(|e| format!("producer panicked: {e}"))??);
    }
    Ok(out)
}

async fn calibrate(root: &Path, sc: Scenario) -> u64 {
    let storage = CrashStorage::new(root);
    let dir = root.join("t-0");
    let writer = start_writer(&dir, &storage);
    let p = Arc::new(Partition::open(&dir, sc.config(), writer.clone()).expect("open"));
    workload(p, &storage, sc).await.expect("uncut workload");
    writer.shutdown().await;
    storage.ops() + storage.ops() / 10 + 1
}

/// (producer id, epoch, base sequence) of every batch served, to its (base, last) offsets.
async fn served_batches(p: &Partition) -> Result<HashMap<(i64, i16, i32), (i64, i64)>, String> {
    let (mut next, end) = (p.log_start_offset(), p.high_watermark());
    let mut out = HashMap::new();
    for _ in 0..READS_MAX {
        if next >= end {
            return Ok(out);
        }
        let r = p
            .read(next, READ_BYTES_MAX)
            .await
            .map_err(|e| format!("read {next}: {e}"))?;
        let batches =
            batch::split(&r.records).map_err(|e| format!("corrupt batch at {next}: {e}"))?;
        for (h, _) in batches {
            out.insert(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (h.base_offset, h.last_offset()),
            );
            next = h.last_offset() + 1;
        }
    }
    Err(format!("reads did not reach the end {end}"))
}

/// The first offset of the segments the producer state is rebuilt from.
fn rebuild_window_start(p: &Partition) -> i64 {
    let inner = p.shared.lock();
    let bases: Vec<i64> = inner
        .segments
        .keys()
        .rev()
        .take(REBUILD_SEGMENTS_MAX)
        .copied()
        .collect();
    bases.last().copied().unwrap_or(0)
}

/// Appends `bytes` and says how the log answered: Ok(new offsets) or a duplicate's offsets.
async fn send(p: &Partition, bytes: &[u8]) -> Result<Result<(i64, i64), (i64, i64)>, String> {
    match p.append(Bytes::copy_from_slice(bytes), LEADER_EPOCH).await {
        Ok(info) => Ok(Ok((info.base_offset, info.last_offset))),
        Err(LogError::DuplicateSequence { original, .. }) => {
            Ok(Err((original.base_offset, original.last_offset)))
        }
        Err(e) => Err(format!("append refused: {e}")),
    }
}

/// Rules (1)-(3) of the module comment for one producer; returns whether rule (2) applied.
/// `window` is the first offset the state was rebuilt from at open: a batch before it (all of
/// the producer's batches, then) is forgotten by design and taken as new.
async fn check_producer(
    p: &Partition,
    pid: i64,
    state: &Producer,
    window: i64,
) -> Result<bool, String> {
    let served = served_batches(p).await?;
    if let Some(sent) = &state.in_flight {
        let end = p.log_end_offset();
        let want = match served.get(&(pid, sent.epoch, sent.base_sequence)) {
            Some(&at) if at.0 >= window => Err(at),
            _ => Ok((end, end + i64::from(sent.records) - 1)),
        };
        let got = send(p, &sent.bytes).await?;
        if got != want {
            return Err(format!(
                "producer {pid}: in-flight batch resent got {got:?}, expected {want:?}"
            ));
        }
    }
    let mut replayed = false;
    if let Some((sent, offsets)) = &state.last_acked {
        let key = (pid, sent.epoch, sent.base_sequence);
        if served.get(&key) != Some(offsets) {
            return Err(format!(
                "producer {pid}: acknowledged batch {offsets:?} served at {:?}",
                served.get(&key)
            ));
        }
        let fenced = state
            .in_flight
            .as_ref()
            .is_some_and(|f| f.epoch > sent.epoch);
        if fenced {
            // The in-flight batch, resent above, started a newer epoch: the old one is fenced.
            let got = p
                .append(Bytes::from(sent.bytes.clone()), LEADER_EPOCH)
                .await;
            if !matches!(got, Err(LogError::InvalidProducerEpoch { .. })) {
                return Err(format!(
                    "producer {pid}: old epoch batch resent got {got:?}"
                ));
            }
        } else if offsets.0 >= window {
            let end = p.log_end_offset();
            let got = send(p, &sent.bytes).await?;
            if got != Err(*offsets) || p.log_end_offset() != end {
                return Err(format!(
                    "producer {pid}: acknowledged batch {offsets:?} resent got {got:?}"
                ));
            }
            replayed = true;
        }
    }
    let (epoch, seq) = match &state.in_flight {
        Some(s) => (s.epoch, s.base_sequence + s.records),
        None => state.next,
    };
    let end = p.log_end_offset();
    let next = with_producer(batch(1, now_ms(), 8), pid, epoch, seq);
    match send(p, &next).await? {
        Ok((base, _)) if base == end => Ok(replayed),
        other => Err(format!(
            "producer {pid}: next sequence {seq} got {other:?} at log end {end}"
        )),
    }
}

async fn recover(
    root: &Path,
    storage: &CrashStorage,
    sc: Scenario,
) -> Result<(Partition, DiskWriter), String> {
    let dir = root.join("t-0");
    if let Some((ops, mode)) = sc.recovery_cut {
        storage.pull_plug_after(ops, mode, sc.seed.rotate_left(29));
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

/// One cut point; returns (producers checked, last acknowledged batches replayed).
async fn cut_point(root: &Path, sc: Scenario) -> Result<(usize, usize), String> {
    let storage = CrashStorage::new(root);
    let dir = root.join("t-0");
    storage.pull_plug_after(sc.cut_at_op, sc.mode, sc.seed);
    let writer = start_writer(&dir, &storage);
    let producers = match Partition::open(&dir, sc.config(), writer.clone()) {
        Ok(p) => workload(Arc::new(p), &storage, sc).await?,
        Err(_) if storage.is_off() => Vec::new(),
        Err(e) => return Err(format!("first open failed with the power on: {e}")),
    };
    writer.shutdown().await;
    storage
        .pull_plug(sc.mode, sc.seed)
        .map_err(|e| e.to_string())?;
    storage.power_on();
    let (p, writer) = recover(root, &storage, sc).await?;
    let window = rebuild_window_start(&p);
    let mut replayed = 0;
    for (i, state) in producers.iter().enumerate() {
        let checked = check_producer(&p, PRODUCER_ID_BASE + i as i64, state, window).await;
        if checked.as_ref().is_err() {
            writer.shutdown().await;
        }
        replayed += usize::from(checked?);
    }
    writer.shutdown().await;
    Ok((producers.len(), replayed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_keep_idempotent_producer_state() {
    // Proves the module comment's rules at CUT_POINTS randomized cut points (or the one seed in
    // PRODUCER_CUT_SEED), and that most last acknowledged batches were really replayed.
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.parse::<u64>().expect(name))
    };
    let seeds: Vec<u64> = match (env("PRODUCER_CUT_SEED"), env("PRODUCER_CUT_POINTS")) {
        (Some(seed), _) => vec![seed],
        (None, points) => (0..points.unwrap_or(CUT_POINTS))
            .map(|i| BASE_SEED + i)
            .collect(),
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ops_total: HashMap<(u64, bool), u64> = HashMap::new();
    let (mut checked, mut replayed) = (0usize, 0usize);
    let mut modes: BTreeMap<String, u64> = BTreeMap::new();
    for (i, &seed) in seeds.iter().enumerate() {
        let mut sc = Scenario::draw(seed);
        if let std::collections::hash_map::Entry::Vacant(e) = ops_total.entry(sc.variant()) {
            let root = tmp.path().join(format!("calibrate-{i}"));
            std::fs::create_dir(&root).expect("mkdir");
            e.insert(calibrate(&root, sc).await);
        }
        sc.cut_at_op %= ops_total[&sc.variant()];
        *modes.entry(format!("{:?}", sc.mode)).or_default() += 1;
        let root = tmp.path().join(format!("cut-{i}"));
        std::fs::create_dir(&root).expect("mkdir");
        match cut_point(&root, sc).await {
            Ok((c, r)) => (checked, replayed) = (checked + c, replayed + r),
            Err(why) => panic!("producer power cut seed {seed} ({sc:?}): {why}"),
        }
        std::fs::remove_dir_all(&root).expect("clean up");
    }
    eprintln!(
        "producer power cuts: {} cut points, modes {modes:?}, {checked} producers checked, \
         {replayed} last acknowledged batches replayed as duplicates",
        seeds.len()
    );
    if seeds.len() as u64 == CUT_POINTS {
        assert!(
            replayed > checked / 2,
            "most replays must fall in the rebuild window"
        );
    }
}
