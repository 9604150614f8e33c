//! Memory outside the budgets: attacks that make the broker allocate on a client's behalf (a gzip
//! bomb looked into by ListOffsets from many connections; a burst of hostile frames), checked
//! against the memory model (`bramble board show`) through the broker's VmHWM / VmRSS.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use bramble::protocol::batch::{
    ATTRIBUTES_AT, BATCH_LENGTH_AT, CRC_AT, HEADER_BYTES, LOG_OVERHEAD_BYTES, MAGIC_AT,
    MAX_TIMESTAMP_AT, RECORD_COUNT_AT, crc32c,
};
use bramble::protocol::codec;
use bytes::Bytes;
use common::{Broker, connect, run_cli};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, ProduceRequest, ProduceResponse, RequestHeader,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

const BOARD: &str = "pi-zero-2w";
/// Zeros behind the bomb's gzip: past every decompression cap, about 16 KB compressed.
const BOMB_RECORDS_BYTES: usize = 17 * 1024 * 1024;
/// Connections asking ListOffsets by timestamp at once, and for how long.
const BOMB_CONNECTIONS: usize = 50;
const BOMB_DURATION: Duration = Duration::from_secs(3);
const LIST_OFFSETS_VERSION: i16 = 1;
const PRODUCE_VERSION: i16 = 9;
const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn header(key: i16, version: i16, correlation_id: i32) -> RequestHeader {
    RequestHeader::default()
        .with_request_api_key(key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("memory-test")))
}

fn read_answer(stream: &mut TcpStream) -> std::io::Result<Bytes> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut body = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
    stream.read_exact(&mut body)?;
    Ok(Bytes::from(body))
}

/// A create-time v2 batch claiming one record at timestamp 1000 whose records section is gzip
/// of `records_bytes` zeros: a few KB on the wire and on disk, megabytes once decompressed.
fn gzip_bomb(records_bytes: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..records_bytes / zeros.len() {
        gz.write_all(&zeros).unwrap();
    }
    let records = gz.finish().unwrap();
    let mut b = vec![0u8; HEADER_BYTES];
    b.extend_from_slice(&records);
    let batch_length = (b.len() - LOG_OVERHEAD_BYTES) as i32;
    b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
    b[MAGIC_AT] = 2;
    b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&1i16.to_be_bytes()); // gzip
    // last_offset_delta 0, base timestamp 1000 (just before max), max timestamp 1000.
    b[MAX_TIMESTAMP_AT - 8..MAX_TIMESTAMP_AT].copy_from_slice(&1000i64.to_be_bytes());
    b[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&1000i64.to_be_bytes());
    b[MAX_TIMESTAMP_AT + 8..MAX_TIMESTAMP_AT + 16].copy_from_slice(&(-1i64).to_be_bytes());
    b[MAX_TIMESTAMP_AT + 16..MAX_TIMESTAMP_AT + 18].copy_from_slice(&(-1i16).to_be_bytes());
    b[MAX_TIMESTAMP_AT + 18..MAX_TIMESTAMP_AT + 22].copy_from_slice(&(-1i32).to_be_bytes());
    b[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&1i32.to_be_bytes());
    let crc = crc32c(&b[ATTRIBUTES_AT..]);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

fn produce(stream: &mut TcpStream, topic: &str, batch: Vec<u8>) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(batch))),
                ]),
        ]);
    let frame = codec::encode_request(&header(0, PRODUCE_VERSION, 1), &request, "produce")
        .unwrap()
        .to_vec();
    stream.write_all(&frame).unwrap();
    let mut body = read_answer(stream).expect("Produce answer");
    let (_, r): (i32, ProduceResponse) =
        codec::decode_response(&mut body, PRODUCE_VERSION, "produce").unwrap();
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0, "bomb refused on produce: {p:?}");
}

fn list_offsets_by_timestamp(topic: &str, correlation_id: i32) -> Vec<u8> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(0),
                ]),
        ]);
    codec::encode_request(
        &header(2, LIST_OFFSETS_VERSION, correlation_id),
        &request,
        "list offsets",
    )
    .unwrap()
    .to_vec()
}

/// A /proc/<pid>/status field in bytes (VmHWM: peak resident set; VmRSS: resident now).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    kb * 1024
}

/// Terms of the memory model that a load on one partition of a plain topic, with no consumer
/// group, cannot drive (per-partition index state, groups, the cleaner of compacted topics).
const TERMS_NOT_DRIVEN: [&str; 3] = ["partitions_max", "groups_max", "compaction"];

/// The memory model for `board` as `bramble board show` prints it ("#   name   bytes" lines),
/// summed over the terms the attack can drive.
fn model_bytes_driven(board: &str, workdir: &std::path::Path) -> u64 {
    let out = run_cli(&["board", "show", board], workdir);
    let text = String::from_utf8_lossy(&out.stdout);
    let model = text
        .split("# memory model")
        .nth(1)
        .unwrap_or_else(|| panic!("no memory model in `bramble board show {board}`:\n{text}"));
    let mut total = 0;
    for line in model.lines().skip(1) {
        let Some(term) = line.strip_prefix("#   ") else {
            break;
        };
        let mut words = term.split_whitespace();
        let (Some(name), Some(bytes)) = (words.next(), words.next()) else {
            break;
        };
        if !TERMS_NOT_DRIVEN.contains(&name) {
            total += bytes.parse::<u64>().expect("term bytes");
        }
    }
    assert!(total > 0, "no memory model terms parsed:\n{text}");
    total
}

/// One gzip bomb (17 MiB of zeros in ~17 KB), then 50 connections asking ListOffsets by timestamp
/// for it as fast as they can, under the Pi Zero 2 W profile. Every look inside the batch is
/// within `decompress_bytes_max`, so the broker's peak RSS stays under the profile's memory model
/// for the paths this load drives (before: up to 8 blocking threads decompressing 16 MiB each,
/// counted nowhere: about 140 MiB against a model of about 60).
#[test]
fn gzip_bomb_list_offsets_stays_within_the_memory_model() {
    let broker = Broker::start_with_config(&format!("board = \"{BOARD}\"\n"));
    let bound = model_bytes_driven(BOARD, broker.dir.path());
    let created = run_cli(
        &["topic", "create", "bomb", "-b", &broker.addr()],
        broker.dir.path(),
    );
    assert!(created.status.success(), "{created:?}");
    let mut s = connect(&broker.addr());
    produce(&mut s, "bomb", gzip_bomb(BOMB_RECORDS_BYTES));
    let addr = broker.addr();
    let hammers: Vec<_> = (0..BOMB_CONNECTIONS)
        .map(|_| {
            let addr = addr.clone();
            thread::spawn(move || {
                let mut s = connect(&addr);
                s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let started = Instant::now();
                let mut corr = 0;
                while started.elapsed() < BOMB_DURATION {
                    corr += 1;
                    s.write_all(&list_offsets_by_timestamp("bomb", corr))
                        .unwrap();
                    let mut body = read_answer(&mut s).expect("ListOffsets answer");
                    let (_, r): (i32, ListOffsetsResponse) =
                        codec::decode_response(&mut body, LIST_OFFSETS_VERSION, "list offsets")
                            .unwrap();
                    let p = &r.topics[0].partitions[0];
                    assert_eq!((p.error_code, p.offset), (0, 0), "{p:?}");
                }
            })
        })
        .collect();
    for h in hammers {
        h.join().expect("a ListOffsets client failed");
    }
    let peak = status_bytes(broker.pid(), "VmHWM");
    assert!(
        peak < bound,
        "peak RSS {} MiB over the {BOARD} memory model's {} MiB for what this load drives",
        peak >> 20,
        bound >> 20
    );
}

/// Threads sending hostile frames at once, frames each, and the share of large ones.
const BURST_THREADS: usize = 48;
const BURST_FRAMES_PER_THREAD: usize = 160;
/// Every this many frames is large (64 KiB - 2 MiB of garbage); the rest are under 600 bytes.
const BURST_LARGE_EVERY: usize = 2;
const BURST_LARGE_BYTES_MIN: usize = 64 * 1024;
const BURST_LARGE_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Connections one thread has open at once.
const BURST_BATCH: usize = 4;
const BURST_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The burst must raise the broker's peak RSS at least this much, or it tests nothing.
const BURST_GROWTH_MIN: u64 = 6 * 1024 * 1024;
/// What the node may keep of the burst beyond half of it.
const RSS_KEPT_SLACK: u64 = 1024 * 1024;
/// How long the node may take to give memory back once the burst ends (its trim runs every 5 s).
const RSS_SETTLE: Duration = Duration::from_secs(12);
const RSS_POLL: Duration = Duration::from_millis(250);

/// A garbage frame behind a real request header (`api_key`, version 9, null client id) with
/// `body` as its body; the broker reads the whole body, fails to decode it and closes the
/// connection.
fn garbage_frame(api_key: i16, body: &[u8]) -> Vec<u8> {
    let mut msg = api_key.to_be_bytes().to_vec();
    msg.extend_from_slice(&[0, 9, 0, 0, 0, 1, 0xff, 0xff]);
    msg.extend_from_slice(body);
    let mut framed = (msg.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&msg);
    framed
}

/// xorshift noise, deterministic.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// API keys the garbage goes behind (Produce, Fetch, ListOffsets, Metadata, OffsetCommit,
/// JoinGroup, CreateTopics, an unknown key), so several decoders see it.
const BURST_API_KEYS: [i16; 8] = [0, 1, 2, 3, 8, 11, 19, 9999];

/// After a burst of hostile frames (many concurrent, some of megabytes), the idle node gives the
/// memory back: its RSS returns to near where it was before the burst instead of staying at the
/// burst's peak (glibc heaps per thread, its self-raising mmap threshold, heaps never trimmed).
#[test]
fn rss_returns_after_a_burst_of_hostile_frames() {
    let broker = Broker::start();
    thread::sleep(RSS_POLL);
    let before = status_bytes(broker.pid(), "VmRSS");
    let addr: std::net::SocketAddr = broker.addr().parse().unwrap();
    let senders: Vec<_> = (0..BURST_THREADS)
        .map(|t| {
            thread::spawn(move || {
                let noise = noise(BURST_LARGE_BYTES_MAX, t as u64);
                for i in 0..BURST_FRAMES_PER_THREAD / BURST_BATCH {
                    // A few connections at once, so large bodies overlap in the broker.
                    let mut open: Vec<TcpStream> = (0..BURST_BATCH)
                        .filter_map(|j| {
                            // A connect the flood delays past the timeout is simply skipped.
                            let mut s =
                                TcpStream::connect_timeout(&addr, BURST_CONNECT_TIMEOUT).ok()?;
                            s.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
                            s.set_write_timeout(Some(IO_TIMEOUT)).ok()?;
                            // Sizes vary frame to frame, as a fuzzer's do: heaps fragment.
                            let n = i * BURST_BATCH + j;
                            let spread = (n * 7919 + t * 104_729) % BURST_LARGE_BYTES_MAX;
                            let len = if n.is_multiple_of(BURST_LARGE_EVERY) {
                                spread.max(BURST_LARGE_BYTES_MIN)
                            } else {
                                spread % 600
                            };
                            let key = BURST_API_KEYS[n % BURST_API_KEYS.len()];
                            // The broker closes after the bad frame; a failed write is expected.
                            let _ = s.write_all(&garbage_frame(key, &noise[..len]));
                            Some(s)
                        })
                        .collect();
                    for s in &mut open {
                        let mut sink = [0u8; 64];
                        let _ = s.read(&mut sink);
                    }
                }
            })
        })
        .collect();
    for s in senders {
        s.join().expect("sender");
    }
    let peak = status_bytes(broker.pid(), "VmHWM");
    let taken = peak.saturating_sub(before);
    assert!(
        taken >= BURST_GROWTH_MIN,
        "the burst took only {} KiB; it no longer loads the broker",
        taken >> 10
    );
    // At least half of what the burst took must be given back (plus a little the burst may
    // legitimately leave: thread stacks, a grown connection table).
    let bound = before + taken / 2 + RSS_KEPT_SLACK;
    let deadline = Instant::now() + RSS_SETTLE;
    let mut now = status_bytes(broker.pid(), "VmRSS");
    while now > bound && Instant::now() < deadline {
        thread::sleep(RSS_POLL);
        now = status_bytes(broker.pid(), "VmRSS");
    }
    assert!(
        now <= bound,
        "RSS {} MiB {RSS_SETTLE:?} after the burst: {} MiB before, peak {} MiB; less than half given back",
        now >> 20,
        before >> 20,
        peak >> 20,
    );
}
