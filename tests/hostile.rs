//! Hostile and malformed input on the Kafka port. Each test starts the real binary, sends bytes
//! no client should send (truncated frames, absurd or negative length prefixes, unknown API
//! keys, noise, a Produce request with a garbage body, a record batch that lies about its record
//! count), and then proves the broker is unharmed: it is still running, a fresh connection gets
//! a well-formed ApiVersions v0 answer, and its peak RSS stayed bounded (no allocation driven by
//! an attacker-chosen count).

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::{
    API_KEY_API_VERSIONS, Broker, ERROR_UNSUPPORTED_VERSION, assert_api_versions_v0_ok, connect,
    frame_v1, parse_api_versions_v0, peer_closes_within, read_frame, run_cli,
};

/// How long the broker may take to drop a connection whose length prefix it must refuse.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to give the broker to digest input before probing it (it may keep the socket).
const DIGEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Peak resident memory allowed after hostile input (a debug build idles far below this).
const PEAK_RSS_BYTES_MAX: u64 = 512 * 1024 * 1024;
/// Noise rounds and their size.
const NOISE_ROUNDS: u64 = 8;
const NOISE_BYTES: usize = 4096;
/// Frames with a correct length prefix and a random body.
const NOISE_FRAMES: u64 = 32;

const API_KEY_PRODUCE: i16 = 0;
const UNKNOWN_API_KEY: i16 = 9999;

/// Deterministic noise: Knuth's MMIX LCG, high bytes.
struct Lcg(u64);

impl Lcg {
    fn next_u8(&mut self) -> u8 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 56) as u8
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u8()).collect()
    }
}

/// The broker survived: process alive, fresh connection answered, memory bounded.
fn assert_unharmed(broker: &mut Broker, after: &str) {
    assert!(
        broker.is_alive(),
        "bramble died after {after}\n{}",
        broker.log_tail()
    );
    assert_api_versions_v0_ok(&broker.addr());
    let peak = peak_rss_bytes(broker);
    assert!(
        peak < PEAK_RSS_BYTES_MAX,
        "peak RSS {peak} bytes after {after}"
    );
}

/// VmHWM of the broker process (peak resident set), from /proc.
fn peak_rss_bytes(broker: &Broker) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", broker.pid()))
        .expect("read /proc/<pid>/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kb * 1024
}

fn send_and_close(broker: &Broker, bytes: &[u8]) {
    let mut s = connect(&broker.addr());
    // The broker may close first (that is fine); a write error then is expected.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    peer_closes_within(&mut s, DIGEST_TIMEOUT);
    // Every single hostile input leaves the broker able to serve a fresh connection.
    assert_api_versions_v0_ok(&broker.addr());
}

#[test]
fn truncated_header_then_close() {
    let mut broker = Broker::start();
    // Length says 10 bytes, only 3 arrive, then the client goes away.
    let mut bytes = 10i32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0, 18, 0]);
    send_and_close(&broker, &bytes);
    // A length shorter than any request header (kafka-protocol panics on < 4 header bytes).
    for len in [0i32, 1, 3] {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(0u8, len as usize));
        send_and_close(&broker, &bytes);
    }
    assert_unharmed(&mut broker, "truncated headers");
}

#[test]
fn huge_length_prefix_is_refused() {
    let mut broker = Broker::start();
    let mut s = connect(&broker.addr());
    s.write_all(&0x7fff_ffffi32.to_be_bytes()).unwrap();
    assert!(
        peer_closes_within(&mut s, CLOSE_TIMEOUT),
        "a 2 GiB length prefix did not get the connection closed within {CLOSE_TIMEOUT:?}"
    );
    assert_unharmed(&mut broker, "a 0x7fffffff length prefix");
}

#[test]
fn negative_length_prefix_is_refused() {
    let mut broker = Broker::start();
    for len in [-1i32, i32::MIN] {
        let mut s = connect(&broker.addr());
        s.write_all(&len.to_be_bytes()).unwrap();
        assert!(
            peer_closes_within(&mut s, CLOSE_TIMEOUT),
            "length prefix {len} did not get the connection closed within {CLOSE_TIMEOUT:?}"
        );
    }
    assert_unharmed(&mut broker, "negative length prefixes");
}

#[test]
fn unknown_api_key() {
    let mut broker = Broker::start();
    let mut s = connect(&broker.addr());
    s.write_all(&frame_v1(UNKNOWN_API_KEY, 0, 1, &[])).unwrap();
    // Kafka closes such a connection; answering with an error would also be acceptable.
    peer_closes_within(&mut s, DIGEST_TIMEOUT);
    // An unknown key with a body, and a known key at an absurd version.
    send_and_close(
        &broker,
        &frame_v1(UNKNOWN_API_KEY, 3, 2, &[0xde, 0xad, 0xbe, 0xef]),
    );
    send_and_close(&broker, &frame_v1(API_KEY_PRODUCE, 32000, 3, &[0; 16]));
    send_and_close(&broker, &frame_v1(-1, 0, 4, &[]));
    assert_unharmed(&mut broker, "unknown API keys");
}

#[test]
fn random_noise() {
    let mut broker = Broker::start();
    let mut rng = Lcg(0x5eed_b7a3_b1e5);
    for _ in 0..NOISE_ROUNDS {
        send_and_close(&broker, &rng.bytes(NOISE_BYTES));
    }
    // Correctly framed noise reaches the header and body decoders.
    for i in 0..NOISE_FRAMES {
        let body = rng.bytes(16 + (i as usize * 37) % 512);
        let mut framed = (body.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        send_and_close(&broker, &framed);
    }
    assert_unharmed(&mut broker, "random noise");
}

/// Request header v2 (flexible: v1 plus an empty tagged-field section).
fn frame_v2(api_key: i16, api_version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut with_tags = vec![0u8];
    with_tags.extend_from_slice(body);
    frame_v1(api_key, api_version, correlation_id, &with_tags)
}

fn uvarint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A structurally valid Produce v9 body for one partition holding `records`.
fn produce_v9_body(topic: &str, records: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8]; // transactional_id: null compact string
    b.extend_from_slice(&(-1i16).to_be_bytes()); // acks=all
    b.extend_from_slice(&5000i32.to_be_bytes()); // timeout_ms
    uvarint(2, &mut b); // one topic
    uvarint(topic.len() as u64 + 1, &mut b);
    b.extend_from_slice(topic.as_bytes());
    uvarint(2, &mut b); // one partition
    b.extend_from_slice(&0i32.to_be_bytes());
    uvarint(records.len() as u64 + 1, &mut b);
    b.extend_from_slice(records);
    b.push(0); // partition tagged fields
    b.push(0); // topic tagged fields
    b.push(0); // request tagged fields
    b
}

fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A v2 record batch header claiming `record_count` records, followed by `tail` bytes, with a
/// correct CRC-32C (so only the count is a lie) when `valid_crc`.
fn lying_batch(record_count: i32, tail: &[u8], valid_crc: bool) -> Vec<u8> {
    let mut after_crc = Vec::new();
    after_crc.extend_from_slice(&0i16.to_be_bytes()); // attributes: no compression
    after_crc.extend_from_slice(&(record_count - 1).to_be_bytes()); // last offset delta
    after_crc.extend_from_slice(&1_700_000_000_000i64.to_be_bytes()); // base timestamp
    after_crc.extend_from_slice(&1_700_000_000_000i64.to_be_bytes()); // max timestamp
    after_crc.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    after_crc.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    after_crc.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    after_crc.extend_from_slice(&record_count.to_be_bytes());
    after_crc.extend_from_slice(tail);
    let crc = if valid_crc {
        crc32c(&after_crc)
    } else {
        0xdead_beef
    };
    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset
    batch.extend_from_slice(&((4 + 1 + 4 + after_crc.len()) as i32).to_be_bytes()); // length
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc.to_be_bytes());
    batch.extend_from_slice(&after_crc);
    batch
}

/// Reads one Produce v9 response (header v1) and returns the first partition's error code.
fn produce_v9_error_code(body: &[u8], correlation_id: i32) -> i16 {
    assert!(body.len() >= 4, "short Produce response {body:?}");
    assert_eq!(
        i32::from_be_bytes(body[0..4].try_into().unwrap()),
        correlation_id
    );
    let mut at = 5; // correlation id, empty header tagged fields
    let varint = |at: &mut usize| {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = body[*at];
            *at += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    };
    assert_eq!(varint(&mut at), 2, "one topic expected in Produce response");
    let name_len = varint(&mut at) as usize - 1;
    at += name_len;
    assert_eq!(
        varint(&mut at),
        2,
        "one partition expected in Produce response"
    );
    at += 4; // partition index
    i16::from_be_bytes(body[at..at + 2].try_into().unwrap())
}

#[test]
fn produce_v9_with_garbage_body() {
    let mut broker = Broker::start();
    let create = run_cli(
        &[
            "topic",
            "create",
            "hostile",
            "--partitions",
            "1",
            "-b",
            &broker.addr(),
        ],
        broker.dir.path(),
    );
    assert!(
        create.status.success(),
        "topic create: {}",
        String::from_utf8_lossy(&create.stderr)
    );

    // Pure noise after a valid Produce v9 header.
    let mut rng = Lcg(0xbad_b0d1e5);
    for i in 0..8 {
        send_and_close(
            &broker,
            &frame_v2(API_KEY_PRODUCE, 9, 100 + i, &rng.bytes(256)),
        );
    }
    // Array counts that claim billions of entries.
    let mut huge_counts = vec![0u8, 0xff, 0xff, 0, 0, 0x13, 0x88];
    huge_counts.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    huge_counts.extend_from_slice(&rng.bytes(64));
    send_and_close(&broker, &frame_v2(API_KEY_PRODUCE, 9, 200, &huge_counts));

    // A well-formed request whose batch has a bad CRC: Kafka answers CORRUPT_MESSAGE (2).
    let corr = 300;
    let mut s = connect(&broker.addr());
    let batch = lying_batch(3, &rng.bytes(40), false);
    s.write_all(&frame_v2(
        API_KEY_PRODUCE,
        9,
        corr,
        &produce_v9_body("hostile", &batch),
    ))
    .unwrap();
    // Closing the connection instead of answering is an acceptable refusal.
    if let Ok(body) = read_frame(&mut s) {
        let code = produce_v9_error_code(&body, corr);
        assert_ne!(code, 0, "a batch with a bad CRC was accepted");
    }
    drop(s);

    // A batch with a correct CRC that claims i32::MAX records in 40 bytes: whatever the broker
    // answers, it must not try to allocate for the claimed count.
    let batch = lying_batch(i32::MAX, &rng.bytes(40), true);
    send_and_close(
        &broker,
        &frame_v2(API_KEY_PRODUCE, 9, 400, &produce_v9_body("hostile", &batch)),
    );

    assert_unharmed(&mut broker, "Produce v9 with garbage bodies");
}

#[test]
fn api_versions_unknown_high_version_gets_v0_unsupported_version() {
    let mut broker = Broker::start();
    let mut s = connect(&broker.addr());
    let corr = 99;
    // What a newer client sends: v99, flexible header, v3-style body.
    let mut body = Vec::new();
    uvarint(b"future-client".len() as u64 + 1, &mut body);
    body.extend_from_slice(b"future-client");
    uvarint(b"9.9".len() as u64 + 1, &mut body);
    body.extend_from_slice(b"9.9");
    body.push(0);
    s.write_all(&frame_v2(API_KEY_API_VERSIONS, 99, corr, &body))
        .unwrap();
    let answer = parse_api_versions_v0(&read_frame(&mut s).expect("ApiVersions v99 answer"), corr);
    assert_eq!(answer.error_code, ERROR_UNSUPPORTED_VERSION, "{answer:?}");
    assert!(
        answer
            .apis
            .iter()
            .any(|&(k, min, _)| k == API_KEY_API_VERSIONS && min == 0),
        "the UNSUPPORTED_VERSION answer must list the broker's ranges: {answer:?}"
    );
    // Clients retry on the same connection with a version from those ranges.
    s.write_all(&frame_v1(API_KEY_API_VERSIONS, 0, corr + 1, &[]))
        .unwrap();
    let retry = parse_api_versions_v0(&read_frame(&mut s).expect("ApiVersions v0 retry"), corr + 1);
    assert_eq!(retry.error_code, 0, "{retry:?}");
    assert_eq!(
        retry.apis, answer.apis,
        "both answers should list the same ranges"
    );
    assert_unharmed(&mut broker, "ApiVersions v99");
}

/// A connection that sends nothing is closed after `connection_idle_ms_max`, and one that sends
/// only a length prefix is closed after `request_read_ms_max`, so silent sockets cannot hold
/// connection slots or frame buffers forever. Meanwhile the broker keeps serving.
#[test]
fn idle_and_stalled_connections_are_closed() {
    const IDLE_MS: u64 = 300;
    const CLOSE_WAIT: Duration = Duration::from_secs(5);
    let broker = Broker::start_with_config(&format!(
        "connection_idle_ms_max = {IDLE_MS}\nrequest_read_ms_max = {IDLE_MS}\n"
    ));
    let mut idle = connect(&broker.addr());
    let mut stalled = connect(&broker.addr());
    stalled.write_all(&100i32.to_be_bytes()).unwrap();
    for (name, s) in [("idle", &mut idle), ("stalled", &mut stalled)] {
        s.set_read_timeout(Some(CLOSE_WAIT)).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 1];
        let n = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("{name}: not closed within {CLOSE_WAIT:?}: {e}"));
        assert_eq!(n, 0, "{name}: expected EOF");
        assert!(started.elapsed() < CLOSE_WAIT, "{name}: closed too late");
    }
    assert_api_versions_v0_ok(&broker.addr());
}
