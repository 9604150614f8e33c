//! log::tests_compaction: the cleaner on real files in a temp dir. Proves the record parser is
//! bounded (garbage never panics), a pass keeps exactly the latest record per key with offsets
//! unchanged and reads working across the gaps, tombstones outlive one pass and go after
//! delete.retention.ms, compacted segments survive a reopen, and a crash at every step of the swap
//! protocol (left as files in each intermediate state) reopens to either the old or the new
//! segment, never a mix.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;

use super::records;
use super::tests::{config, open};
use super::*;
use crate::protocol::batch::{self, BatchHeader, HEADER_BYTES};

fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn put_nullable(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => put_zigzag(out, -1),
        Some(f) => {
            put_zigzag(out, f.len() as i64);
            out.extend_from_slice(f);
        }
    }
}

/// An uncompressed batch (base offset 0, create time `ts`) of (key, value) records.
fn keyed_batch(records: &[(Option<&str>, Option<&str>)], ts: i64) -> Bytes {
    let mut body = Vec::new();
    for (i, (k, v)) in records.iter().enumerate() {
        let mut r = vec![0u8];
        put_zigzag(&mut r, 0);
        put_zigzag(&mut r, i as i64);
        put_nullable(&mut r, k.map(str::as_bytes));
        put_nullable(&mut r, v.map(str::as_bytes));
        put_zigzag(&mut r, 0);
        put_zigzag(&mut body, r.len() as i64);
        body.extend_from_slice(&r);
    }
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_BYTES - 12 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&((records.len() as i32) - 1).to_be_bytes());
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&(records.len() as i32).to_be_bytes());
    b.extend_from_slice(&body);
    batch::test_batches::refresh_crc(&mut b);
    Bytes::from(b)
}

/// (offset, key, value) of every record from the log start, read batch by batch from each
/// offset the consumer would ask next (so reads land inside gaps).
async fn records_of(p: &Partition) -> Vec<(i64, Option<String>, Option<String>)> {
    let mut out = Vec::new();
    let mut next = p.log_start_offset();
    for _ in 0..10_000 {
        if next >= p.high_watermark() {
            break;
        }
        let r = p.read(next, 200).await.expect("read");
        assert!(!r.records.is_empty(), "no batch at or after offset {next}");
        for (h, bytes) in stored_batches(&r.records) {
            let section = records::section(bytes, &h).expect("section");
            for rec in records::parse_all(&section, &h).expect("records") {
                if rec.offset >= next {
                    let s = |f: Option<&[u8]>| f.map(|f| String::from_utf8_lossy(f).into_owned());
                    let value = (!rec.tombstone).then(|| value_of(rec.bytes));
                    out.push((rec.offset, s(rec.key), value));
                }
            }
            next = next.max(h.last_offset() + 1);
        }
    }
    out
}

/// The batches of a read, each checked as a stored batch (CRC-32C, header, compacted counts).
fn stored_batches(mut buf: &[u8]) -> Vec<(BatchHeader, &[u8])> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let h = BatchHeader::parse(buf).expect("header");
        let (bytes, rest) = buf.split_at(h.total_bytes());
        batch::check_stored_header(&h).expect("stored header");
        assert_eq!(batch::crc32c(&bytes[batch::ATTRIBUTES_AT..]), h.crc, "crc");
        out.push((h, bytes));
        buf = rest;
    }
    out
}

/// The value of an encoded record (the parser only says whether it is null).
fn value_of(record: &[u8]) -> String {
    let text = String::from_utf8_lossy(record).into_owned();
    text.rsplit_once('=')
        .map_or(String::new(), |(_, v)| v.trim_end_matches('\0').to_string())
}

fn small() -> LogConfig {
    LogConfig {
        segment_bytes_max: 400,
        ..config()
    }
}

fn compact_only(delete_retention_ms: u64) -> Cleanup {
    Cleanup {
        compact: true,
        delete: false,
        delete_retention_ms,
        compaction_lag_ms_min: 0,
    }
}

/// Keys k0..k3 × versions v0..v4, two records a batch, a tombstone for k1 and a keyless record,
/// all sealed, then a last batch in the active segment.
async fn fill(p: &Partition) {
    for v in 0..5 {
        for pair in [[0, 1], [2, 3]] {
            let recs: Vec<(String, String)> = pair
                .iter()
                .map(|k| (format!("k{k}"), format!("v={v}")))
                .collect();
            let refs: Vec<(Option<&str>, Option<&str>)> = recs
                .iter()
                .map(|(k, v)| (Some(k.as_str()), Some(v.as_str())))
                .collect();
            p.append(keyed_batch(&refs, 1_000 + v), 0)
                .await
                .expect("append");
        }
    }
    p.append(
        keyed_batch(&[(Some("k1"), None), (None, Some("x=nokey"))], 2_000),
        0,
    )
    .await
    .expect("tombstone");
    // Seal everything so far: the active segment is never cleaned.
    p.roll().await.expect("roll");
    p.append(keyed_batch(&[(Some("k9"), Some("v=9"))], 3_000), 0)
        .await
        .expect("active");
}

fn latest(
    recs: &[(i64, Option<String>, Option<String>)],
) -> BTreeMap<Option<String>, (i64, Option<String>)> {
    recs.iter()
        .map(|(o, k, v)| (k.clone(), (*o, v.clone())))
        .collect()
}

#[test]
fn parser_reads_keys_and_never_panics_on_garbage() {
    let b = keyed_batch(&[(Some("a"), Some("v=1")), (None, None)], 5);
    let h = BatchHeader::parse(&b).expect("header");
    let section = records::section(&b, &h).expect("section");
    let recs = records::parse_all(&section, &h).expect("records");
    assert_eq!(recs.len(), 2);
    assert_eq!(
        (recs[0].key, recs[0].tombstone, recs[0].offset),
        (Some(&b"a"[..]), false, 0)
    );
    assert_eq!(
        (recs[1].key, recs[1].tombstone, recs[1].offset),
        (None, true, 1)
    );
    // Every truncation and a spread of byte flips: Some or None, never a panic.
    for cut in 0..section.len() {
        let _ = records::parse_all(&section[..cut], &h);
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut s = section.to_vec();
        let at = (seed as usize) % s.len();
        s[at] = (seed >> 32) as u8;
        let _ = records::parse_all(&s, &h);
        let mut pos = 0;
        let _ = records::parse_record(&s, &mut pos, &h);
    }
    let lying = BatchHeader {
        record_count: i32::MAX,
        ..h
    };
    assert!(records::parse_all(&section, &lying).is_none());
}

#[tokio::test]
async fn compaction_keeps_latest_per_key_then_drops_tombstones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = open(dir.path(), small());
    fill(&p).await;
    let before = records_of(&p).await;
    let want = latest(&before);
    assert!(
        p.compact(now_ms()).await.expect("noop").segments_rewritten == 0,
        "delete policy: no cleaning"
    );
    p.set_cleanup(compact_only(60_000));
    let stats = p.compact(now_ms()).await.expect("compact");
    assert!(
        stats.segments_rewritten > 0 && stats.records_dropped > 0,
        "{stats:?}"
    );
    let after = records_of(&p).await;
    // Latest per key kept, at its original offset; every kept record is an original one.
    assert_eq!(latest(&after), want);
    for rec in &after {
        assert!(before.contains(rec), "{rec:?} not an original record");
    }
    let keyed: Vec<_> = after.iter().filter(|r| r.1.is_some()).collect();
    let keys: std::collections::BTreeSet<_> = keyed.iter().map(|r| r.1.clone()).collect();
    assert_eq!(keyed.len(), keys.len(), "one record per key: {after:?}");
    assert!(
        after
            .iter()
            .any(|r| r.1.as_deref() == Some("k1") && r.2.is_none()),
        "tombstone kept"
    );
    assert!(after.iter().any(|r| r.1.is_none()), "keyless record kept");
    // Reads from every offset, gaps included, land on the next record.
    for offset in 0..p.high_watermark() {
        let r = p.read(offset, 1).await.expect("read in gap");
        assert!(!r.records.is_empty());
    }
    // A second pass changes nothing; one past delete.retention.ms drops the tombstone, here
    // from a segment sealed with no append after it (the high watermark's byte sits in it).
    p.roll().await.expect("roll with nothing after");
    assert_eq!(
        p.compact(now_ms()).await.expect("again").segments_rewritten,
        0
    );
    p.set_cleanup(compact_only(0));
    p.compact(now_ms() + 1).await.expect("tombstones");
    let last = records_of(&p).await;
    assert!(
        !last.iter().any(|r| r.1.as_deref() == Some("k1")),
        "{last:?}"
    );
    drop(p);
    // The compacted segments (gaps inside and between batches) reopen as they are.
    let p = open(dir.path(), small());
    assert_eq!(records_of(&p).await, last);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("ls") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

fn name(base: i64, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

#[tokio::test]
async fn swap_recovery_at_every_step() {
    let root = tempfile::tempdir().expect("tempdir");
    let (old_dir, new_dir) = (root.path().join("old"), root.path().join("new"));
    let p = open(&old_dir, small());
    fill(&p).await;
    let old_records = records_of(&p).await;
    drop(p);
    copy_dir(&old_dir, &new_dir);
    let p = open(&new_dir, small());
    p.set_cleanup(compact_only(60_000));
    p.compact(now_ms()).await.expect("compact");
    let new_records = records_of(&p).await;
    drop(p);
    assert_ne!(old_records, new_records);
    // The first segment is rewritten by the pass; stage its new files in each state.
    let base = 0i64;
    let exts = ["index", "timeindex", "log"];
    // (final name or suffix for each of index, timeindex, log; "old" keeps the old file)
    let states: [([&str; 3], bool); 6] = [
        (["cleaned", "cleaned", "cleaned"], false),
        (["swap", "cleaned", "cleaned"], false),
        (["swap", "swap", "cleaned"], false),
        (["swap", "swap", "swap"], true),
        (["final", "swap", "swap"], true),
        (["final", "final", "swap"], true),
    ];
    for (i, (state, committed)) in states.iter().enumerate() {
        let dir = root.path().join(format!("state{i}"));
        copy_dir(&old_dir, &dir);
        for (ext, how) in exts.iter().zip(state) {
            let src = new_dir.join(name(base, ext));
            let dst = match *how {
                "final" => dir.join(name(base, ext)),
                suffix => dir.join(format!("{}.{suffix}", name(base, ext))),
            };
            std::fs::copy(&src, &dst).expect("stage");
        }
        let p = open(&dir, small());
        let got = records_of(&p).await;
        let expected = if *committed {
            &new_records[..]
        } else {
            &old_records[..]
        };
        // Only segment 0 is staged, so a committed state shows segment 0 cleaned and the rest
        // as before: compare segment 0's records and the latest values.
        let seg0_end = std::fs::read_dir(&dir)
            .expect("ls")
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()
                    .and_then(segment::parse_log_name)
            })
            .filter(|&b| b > 0)
            .min()
            .expect("a second segment");
        let head = |v: &[(i64, Option<String>, Option<String>)]| {
            v.iter()
                .filter(|r| r.0 < seg0_end)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(head(&got), head(expected), "state {i}: {state:?}");
        assert_eq!(latest(&got), latest(&old_records), "state {i}");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .expect("ls")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
            .collect();
        assert!(leftovers.is_empty(), "state {i}: {leftovers:?}");
    }
}
