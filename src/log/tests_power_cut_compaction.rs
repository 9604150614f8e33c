//! log::tests_power_cut_compaction: randomized power cuts through the crash-simulating backend
//! (`io::crash`) on a compacted topic, while the cleaner rewrites and swaps segments.
//!
//! The contract checked after every cut and reopen (acks wait for fsync here): (1) no `.cleaned`
//! or `.swap` file is left in the partition directory; (2) every batch served validates as a
//! stored batch (length, CRC-32C, compacted counts), batches come in increasing offset order and
//! records in increasing offsets inside them; (3) offsets are never reused: a record served at
//! an acknowledged offset is the acknowledged record, the log end is past every acknowledged
//! offset, and the next append gets the log end; (4) compaction never loses the latest value of
//! a key: for every key, the newest record served for it is the latest acknowledged one or a
//! newer one the producer sent (an acknowledged tombstone may be gone, its key with it, once
//! delete.retention.ms allows). The same checks run again after one more cleaner pass on the
//! recovered log.
//!
//! Each cut point is one seed: it draws whether the cleaner runs inline between appends
//! (deterministic: a seed replays exactly) or as a concurrent task, whether tombstones go at once
//! (delete.retention.ms 0), the mutating storage call the power dies at (cleaner writes, renames
//! and directory syncs of the swap included), the [`CutMode`], and sometimes a second cut during
//! recovery (inside `recover_swaps`). `COMPACTION_CUT_SEED=<seed>` runs one seed,
//! `COMPACTION_CUT_POINTS=<n>` a longer sweep.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use super::records;
use super::tests::config;
use super::tests_power_cut::start_writer;
use super::*;
use crate::io::DiskWriter;
use crate::io::crash::{CrashStorage, CutMode, XorShift};
use crate::protocol::batch::test_batches::keyed;

/// First seed; cut point `i` uses `BASE_SEED + i`.
const BASE_SEED: u64 = 0xC0_4AC7_0000;
/// Cut points per run (sized to stay under 15 s in a debug build).
const CUT_POINTS: u64 = 300;
/// Appends per cut point, one batch each.
const APPENDS: usize = 30;
/// Few keys, so every key gets several versions and segments lose records to the cleaner.
const KEYS: u64 = 5;
const RECORDS_PER_BATCH_MAX: u64 = 3;
/// One record in this many is a tombstone.
const TOMBSTONE_ONE_IN: u64 = 6;
const PADDING_BYTES_MAX: u64 = 40;
/// Small, so a cut point sees many sealed segments for the cleaner.
const SEGMENT_BYTES_MAX: u64 = 512;
/// The inline cleaner runs after every this many appends.
const CLEAN_EVERY_APPENDS: usize = 3;
/// Passes of the concurrent cleaner, at most (it stops early once the producer is done).
const CLEANER_PASSES_MAX: usize = 200;
const CLEANER_PAUSE_MS: u64 = 1;
/// delete.retention.ms when tombstones are kept (longer than any run).
const TOMBSTONES_KEPT_MS: u64 = 3_600_000;
const RECOVERY_CUT_OPS_MAX: u64 = 12;
const RECOVERY_CUT_ONE_IN: u64 = 4;
const LEADER_EPOCH: i32 = 5;
const READ_BYTES_MAX: usize = 4096;
/// Bounds the read loop of the check (each read returns at least one batch or ends it).
const READS_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Scenario {
    seed: u64,
    concurrent: bool,
    drop_tombstones: bool,
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
            concurrent: rng.coin(),
            drop_tombstones: rng.coin(),
            mode,
            cut_at_op: rng.next_u64(),
            recovery_cut,
        }
    }

    fn variant(&self) -> (bool, bool) {
        (self.concurrent, self.drop_tombstones)
    }

    fn config(&self) -> LogConfig {
        LogConfig {
            segment_bytes_max: SEGMENT_BYTES_MAX,
            ..config()
        }
    }

    /// compact,delete with no retention limit: the cleaner bounds the log, and retention only
    /// deletes the segments the cleaner emptied (which exercises removals next to swaps).
    fn cleanup(&self) -> Cleanup {
        Cleanup {
            compact: true,
            delete: true,
            delete_retention_ms: if self.drop_tombstones {
                0
            } else {
                TOMBSTONES_KEPT_MS
            },
            compaction_lag_ms_min: 0,
        }
    }
}

/// A record as the producer sent it: its key and its version (None: a tombstone). Versions
/// count up across the run, so for one key a newer record has a larger version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    key: u64,
    version: Option<u64>,
}

/// What the producer sent and what was acknowledged (at which offset).
#[derive(Default)]
struct Ledger {
    sent: HashSet<(u64, Option<u64>)>,
    acked: BTreeMap<i64, Sent>,
}

fn key_bytes(key: u64) -> Vec<u8> {
    format!("key{key}").into_bytes()
}

/// `=<version>` then padding: the version reads back from the record bytes (`version_of`).
fn value_bytes(version: u64, padding: usize) -> Vec<u8> {
    let mut v = format!("={version}").into_bytes();
    v.resize(v.len() + padding, b'~');
    v
}

/// One batch of 1..=RECORDS_PER_BATCH_MAX records with random keys, fresh versions and some
/// tombstones; returns its bytes and its records in order.
fn draw_batch(rng: &mut XorShift, version: &mut u64, ts: i64) -> (Vec<u8>, Vec<Sent>) {
    let n = 1 + rng.below(RECORDS_PER_BATCH_MAX);
    let mut sent = Vec::new();
    let mut owned = Vec::new();
    for _ in 0..n {
        let key = rng.below(KEYS);
        let value = (rng.below(TOMBSTONE_ONE_IN) != 0).then(|| {
            *version += 1;
            *version
        });
        let bytes = value.map(|v| value_bytes(v, rng.below(PADDING_BYTES_MAX + 1) as usize));
        owned.push((key_bytes(key), bytes));
        sent.push(Sent {
            key,
            version: value,
        });
    }
    let refs: Vec<crate::protocol::batch::test_batches::KeyValue<'_>> = owned
        .iter()
        .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
        .collect();
    (keyed(&refs, ts), sent)
}

/// One cleaner pass: compaction, then retention (which deletes only emptied segments here).
/// Ok(false) once the power is off.
async fn clean_once(p: &Partition, storage: &CrashStorage) -> Result<bool, String> {
    let compacted = p.compact(now_ms()).await;
    let retained = match compacted {
        Ok(_) => p.enforce_retention(now_ms()).await.map(drop),
        Err(e) => Err(e),
    };
    match retained {
        Ok(()) => Ok(true),
        Err(_) if storage.is_off() => Ok(false),
        Err(e) => Err(format!("cleaner failed with the power on: {e}")),
    }
}

/// The producer: APPENDS appends of one batch, the inline cleaner between them unless the
/// scenario runs it concurrently. Stops at the first failure, which must come from the cut.
async fn produce(
    p: &Partition,
    storage: &CrashStorage,
    sc: Scenario,
    ledger: &std::sync::Mutex<Ledger>,
) -> Result<(), String> {
    let mut rng = XorShift::new(sc.seed ^ 0x5EED);
    let mut version = 0u64;
    let ts0 = now_ms();
    for i in 0..APPENDS {
        let (bytes, sent) = draw_batch(&mut rng, &mut version, ts0 + (i as i64) * 10);
        ledger
            .lock()
            .expect("ledger")
            .sent
            .extend(sent.iter().map(|s| (s.key, s.version)));
        let info = match p.append(Bytes::from(bytes), LEADER_EPOCH).await {
            Ok(info) => info,
            Err(_) if storage.is_off() => return Ok(()),
            Err(e) => return Err(format!("append failed with the power on: {e}")),
        };
        ledger
            .lock()
            .expect("ledger")
            .acked
            .extend((info.base_offset..).zip(sent));
        if !sc.concurrent
            && i % CLEAN_EVERY_APPENDS == CLEAN_EVERY_APPENDS - 1
            && !clean_once(p, storage).await?
        {
            return Ok(());
        }
    }
    Ok(())
}

/// The concurrent cleaner: passes until the producer is done or the power is off.
async fn cleaner(
    p: Arc<Partition>,
    storage: CrashStorage,
    done: Arc<AtomicBool>,
) -> Result<(), String> {
    for _ in 0..CLEANER_PASSES_MAX {
        if done.load(Ordering::SeqCst) || !clean_once(&p, &storage).await? {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(CLEANER_PAUSE_MS)).await;
    }
    Ok(())
}

async fn workload(
    p: Arc<Partition>,
    storage: &CrashStorage,
    sc: Scenario,
) -> Result<Ledger, String> {
    p.set_cleanup(sc.cleanup());
    let ledger = std::sync::Mutex::new(Ledger::default());
    let done = Arc::new(AtomicBool::new(false));
    let task = sc
        .concurrent
        .then(|| tokio::spawn(cleaner(p.clone(), storage.clone(), done.clone())));
    let produced = produce(&p, storage, sc, &ledger).await;
    done.store(true, Ordering::SeqCst);
    if let Some(t) = task {
        t.await.map_err(|e| format!("cleaner panicked: {e}"))??;
    }
    produced?;
    Ok(ledger.into_inner().expect("ledger"))
}

/// Mutating calls of an uncut workload of this variant, plus a tenth so some cuts land after.
async fn calibrate(root: &Path, sc: Scenario) -> u64 {
    let storage = CrashStorage::new(root);
    let dir = root.join("t-0");
    let writer = start_writer(&dir, &storage);
    let p = Arc::new(Partition::open(&dir, sc.config(), writer.clone()).expect("open"));
    workload(p, &storage, sc).await.expect("uncut workload");
    writer.shutdown().await;
    storage.ops() + storage.ops() / 10 + 1
}

/// The record at the front of an encoded record's value: its version (see `value_bytes`).
fn version_of(record: &[u8]) -> Option<u64> {
    let at = record.iter().rposition(|&b| b == b'=')?;
    let digits: Vec<u8> = record[at + 1..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// The records of one served batch, checked as a stored batch: (offset, key, version).
fn served_records(bytes: &[u8], h: &batch::BatchHeader) -> Result<Vec<(i64, Sent)>, String> {
    batch::check_stored_header(h).map_err(|e| format!("bad header at {}: {e}", h.base_offset))?;
    if batch::crc32c(&bytes[batch::ATTRIBUTES_AT..]) != h.crc {
        return Err(format!("crc mismatch in batch at {}", h.base_offset));
    }
    let section = records::section(bytes, h).ok_or("unreadable records section")?;
    let all = records::parse_all(&section, h).ok_or("records do not parse")?;
    let mut out = Vec::new();
    for r in all {
        let key = r
            .key
            .and_then(|k| {
                std::str::from_utf8(k)
                    .ok()?
                    .strip_prefix("key")?
                    .parse()
                    .ok()
            })
            .ok_or(format!("record at {} has no key of ours", r.offset))?;
        let version = if r.tombstone {
            None
        } else {
            Some(version_of(r.bytes).ok_or(format!("no version at {}", r.offset))?)
        };
        let last = out.last().map_or(h.base_offset - 1, |(o, _)| *o);
        if r.offset <= last || r.offset > h.last_offset() {
            return Err(format!(
                "record offset {} out of order in its batch",
                r.offset
            ));
        }
        out.push((r.offset, Sent { key, version }));
    }
    Ok(out)
}

/// Every record served from the log start to the high watermark, checking batch order.
async fn read_log(p: &Partition) -> Result<BTreeMap<i64, Sent>, String> {
    let end = p.high_watermark();
    let mut served = BTreeMap::new();
    let mut next = p.log_start_offset();
    for _ in 0..READS_MAX {
        if next >= end {
            return Ok(served);
        }
        let r = p
            .read(next, READ_BYTES_MAX)
            .await
            .map_err(|e| format!("read {next}: {e}"))?;
        if r.records.is_empty() {
            return Ok(served); // The rest is a gap the cleaner left.
        }
        let mut buf: &[u8] = &r.records;
        while !buf.is_empty() {
            let h = batch::BatchHeader::parse(buf).map_err(|e| format!("at {next}: {e}"))?;
            if h.total_bytes() > buf.len() || h.base_offset < next {
                return Err(format!(
                    "batch at {} served where {next} was due",
                    h.base_offset
                ));
            }
            let (bytes, rest) = buf.split_at(h.total_bytes());
            served.extend(served_records(bytes, &h)?);
            next = h.last_offset() + 1;
            buf = rest;
        }
    }
    Err(format!("reads did not reach the end {end}"))
}

/// Checks the contract (module comment) on what `p` serves now.
async fn check(p: &Partition, ledger: &Ledger, drop_tombstones: bool) -> Result<(), String> {
    let end = p.log_end_offset();
    if p.high_watermark() != end {
        return Err(format!(
            "high watermark {} != log end {end}",
            p.high_watermark()
        ));
    }
    if let Some((&last, _)) = ledger.acked.last_key_value()
        && end <= last
    {
        return Err(format!(
            "log end {end} at or before acknowledged offset {last}"
        ));
    }
    let served = read_log(p).await?;
    let mut newest: HashMap<u64, (i64, Option<u64>)> = HashMap::new();
    for (&offset, s) in &served {
        if !ledger.sent.contains(&(s.key, s.version)) {
            return Err(format!("record at {offset} was never sent: {s:?}"));
        }
        if ledger.acked.get(&offset).is_some_and(|a| a != s) {
            return Err(format!(
                "offset {offset} reused: {s:?}, acknowledged {:?}",
                ledger.acked[&offset]
            ));
        }
        newest.insert(s.key, (offset, s.version));
    }
    let mut latest_acked: HashMap<u64, (i64, Option<u64>)> = HashMap::new();
    for (&offset, a) in &ledger.acked {
        latest_acked.insert(a.key, (offset, a.version));
    }
    for (key, (offset, version)) in latest_acked {
        match (newest.get(&key), version) {
            (None, None) if drop_tombstones => {}
            (Some(&(o, _)), _) if o > offset => {}
            (Some(&(o, v)), _) if o == offset && v == version => {}
            (got, _) => {
                return Err(format!(
                    "key{key}: latest acknowledged {version:?} at {offset}, newest served {got:?}"
                ));
            }
        }
    }
    Ok(())
}

/// Names in the partition directory the cleaner's swap leaves behind when unfinished.
fn leftovers(dir: &Path) -> Vec<String> {
    let names = std::fs::read_dir(dir).expect("read dir");
    names
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
        .collect()
}

async fn recover(
    root: &Path,
    storage: &CrashStorage,
    sc: Scenario,
) -> Result<(Partition, DiskWriter), String> {
    let dir = root.join("t-0");
    if let Some((ops, mode)) = sc.recovery_cut {
        storage.pull_plug_after(ops, mode, sc.seed.rotate_left(23));
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
    p.set_cleanup(sc.cleanup());
    Ok((p, writer))
}

/// One cut point: workload, cut, recovery, checks, one more cleaner pass, checks, an append.
/// Returns the call the cut fired at.
async fn cut_point(root: &Path, sc: Scenario) -> Result<Option<&'static str>, String> {
    let storage = CrashStorage::new(root);
    let dir = root.join("t-0");
    storage.pull_plug_after(sc.cut_at_op, sc.mode, sc.seed);
    let writer = start_writer(&dir, &storage);
    let ledger = match Partition::open(&dir, sc.config(), writer.clone()) {
        Ok(p) => workload(Arc::new(p), &storage, sc).await?,
        Err(_) if storage.is_off() => Ledger::default(),
        Err(e) => return Err(format!("first open failed with the power on: {e}")),
    };
    writer.shutdown().await;
    let cut_call = storage.cut_call();
    storage
        .pull_plug(sc.mode, sc.seed)
        .map_err(|e| e.to_string())?;
    storage.power_on();
    let (p, writer) = recover(root, &storage, sc).await?;
    let left = leftovers(&dir);
    if !left.is_empty() {
        return Err(format!("cleaner files left after open: {left:?}"));
    }
    check(&p, &ledger, sc.drop_tombstones).await?;
    p.compact(now_ms())
        .await
        .map_err(|e| format!("compact after recovery: {e}"))?;
    check(&p, &ledger, sc.drop_tombstones).await?;
    let end = p.log_end_offset();
    let next = keyed(
        &[(Some(b"key0".as_slice()), Some(b"=0".as_slice()))],
        now_ms(),
    );
    let info = p.append(Bytes::from(next), LEADER_EPOCH).await;
    writer.shutdown().await;
    match info {
        Ok(info) if info.base_offset == end => Ok(cut_call),
        other => Err(format!(
            "append after recovery got {other:?}, log end was {end}"
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_during_compaction_lose_no_latest_value_and_reuse_no_offset() {
    // Proves the contract of the module comment at CUT_POINTS randomized cut points (or the one
    // seed in COMPACTION_CUT_SEED), and that cuts land inside the cleaner's swap (renames).
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.parse::<u64>().expect(name))
    };
    let seeds: Vec<u64> = match (env("COMPACTION_CUT_SEED"), env("COMPACTION_CUT_POINTS")) {
        (Some(seed), _) => vec![seed],
        (None, points) => (0..points.unwrap_or(CUT_POINTS))
            .map(|i| BASE_SEED + i)
            .collect(),
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ops_total: HashMap<(bool, bool), u64> = HashMap::new();
    let mut calls: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, &seed) in seeds.iter().enumerate() {
        let mut sc = Scenario::draw(seed);
        if let std::collections::hash_map::Entry::Vacant(e) = ops_total.entry(sc.variant()) {
            let root = tmp.path().join(format!("calibrate-{i}"));
            std::fs::create_dir(&root).expect("mkdir");
            e.insert(calibrate(&root, sc).await);
        }
        sc.cut_at_op %= ops_total[&sc.variant()];
        let root = tmp.path().join(format!("cut-{i}"));
        std::fs::create_dir(&root).expect("mkdir");
        match cut_point(&root, sc).await {
            Ok(call) => *calls.entry(call.unwrap_or("none")).or_default() += 1,
            Err(why) => panic!("compaction power cut seed {seed} ({sc:?}): {why}"),
        }
        std::fs::remove_dir_all(&root).expect("clean up");
    }
    eprintln!(
        "compaction power cuts: {} cut points, cut at {calls:?}",
        seeds.len()
    );
    if seeds.len() as u64 == CUT_POINTS {
        for call in ["rename", "sync_dir", "write_at", "sync_data", "remove_file"] {
            assert!(calls.contains_key(call), "no cut at {call}: {calls:?}");
        }
    }
}
