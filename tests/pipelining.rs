//! Pipelined requests on one connection: a client may send several requests before reading any
//! answer (librdkafka and the Java client keep up to 5 in flight). The broker dispatches them in
//! order — Produce offsets are assigned in request order — and answers them in request order,
//! even though Produce answers wait for the disk while later requests are dispatched.

mod common;

use std::io::{Read, Write};

use bramble::client::consumer::fetch_request;
use bramble::client::producer::encode_batch;
use bramble::protocol::codec;
use bytes::{Buf, Bytes};
use common::{Broker, IO_TIMEOUT, connect, run_cli};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, ProduceRequest, ProduceResponse, RequestHeader,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

/// Produce v9 is what current librdkafka sends; three records per batch.
const PRODUCE_VERSION: i16 = 9;
const RECORDS_PER_BATCH: usize = 3;
/// Requests written before the first answer is read (more than the broker's default in-flight
/// limit of 5, so its backpressure is exercised too).
const REQUESTS: i32 = 24;

fn header(key: i16, version: i16, correlation_id: i32) -> RequestHeader {
    RequestHeader::default()
        .with_request_api_key(key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("pipelining-test")))
}

fn produce(topic: &str, correlation_id: i32) -> Vec<u8> {
    produce_value(topic, correlation_id, Bytes::from_static(b"value"))
}

fn produce_value(topic: &str, correlation_id: i32, value: Bytes) -> Vec<u8> {
    let batch = encode_batch(&value, RECORDS_PER_BATCH, 1_700_000_000_000).unwrap();
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch)),
                ]),
        ]);
    codec::encode_request(
        &header(0, PRODUCE_VERSION, correlation_id),
        &request,
        "produce",
    )
    .unwrap()
    .to_vec()
}

fn create_topic(broker: &Broker, name: &str) {
    let created = run_cli(
        &["topic", "create", name, "-b", &broker.addr()],
        broker.dir.path(),
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
}

fn read_answer(stream: &mut std::net::TcpStream) -> Bytes {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).unwrap();
    Bytes::from(body)
}

/// Even correlation ids are Produce, odd are ApiVersions; all written before any is read. The
/// answers come back in exactly that order, and the n-th Produce got offsets 3n..3n+2.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let broker = Broker::start();
    create_topic(&broker, "pipe");
    let mut stream = connect(&broker.addr());
    let mut all = Vec::new();
    for id in 0..REQUESTS {
        if id % 2 == 0 {
            all.extend(produce("pipe", id));
        } else {
            let request = ApiVersionsRequest::default();
            all.extend(
                codec::encode_request(&header(18, 0, id), &request, "api versions")
                    .unwrap()
                    .to_vec(),
            );
        }
    }
    stream.write_all(&all).unwrap();
    for id in 0..REQUESTS {
        let mut body = read_answer(&mut stream);
        if id % 2 == 0 {
            let (corr, r): (i32, ProduceResponse) =
                codec::decode_response(&mut body, PRODUCE_VERSION, "produce").unwrap();
            assert_eq!(corr, id, "answers out of order");
            let p = &r.responses[0].partition_responses[0];
            assert_eq!(p.error_code, 0, "{p:?}");
            assert_eq!(
                p.base_offset,
                (id / 2) as i64 * RECORDS_PER_BATCH as i64,
                "offsets out of request order"
            );
        } else {
            let (corr, r): (i32, ApiVersionsResponse) =
                codec::decode_response(&mut body, 0, "api versions").unwrap();
            assert_eq!(corr, id, "answers out of order");
            assert_eq!(r.error_code, 0);
        }
        assert_eq!(body.remaining(), 0);
    }
}

/// Fetch v12 for partition 0 of `topic` from offset 0, asking for up to `max_bytes`.
fn fetch(topic: &str, correlation_id: i32, max_bytes: i32) -> Vec<u8> {
    let topic = TopicName(StrBytes::from_string(topic.to_string()));
    let request = fetch_request(topic, &[0], max_bytes, max_bytes, 0, 0);
    codec::encode_request(&header(1, FETCH_VERSION, correlation_id), &request, "fetch")
        .unwrap()
        .to_vec()
}

const FETCH_VERSION: i16 = 12;

/// A Fetch answer holds part of the node's fetch budget until it is written. Here one answer
/// waits behind a Produce whose fsync the group commit window delays, while the next Fetch
/// needs the whole budget (the smallest validation allows): the connection must keep writing
/// answers while it dispatches, or it wedges itself — and, through the shared budget, every
/// other consumer. All three answers arrive, in order, and another connection's Fetch too.
#[test]
fn pipelined_fetches_behind_a_slow_produce_do_not_wedge_the_fetch_budget() {
    let broker = Broker::start_with_config(
        "frame_bytes_max = 1048576\nmessage_bytes_max = 1048576\nfetch_bytes_max = 1048576\n\
         inflight_bytes_max = 16777216\nfetch_inflight_bytes_max = 2097152\nflush_ms = 1000\n",
    );
    create_topic(&broker, "budget");
    let mut stream = connect(&broker.addr());
    let mut all = produce("budget", 0);
    all.extend(fetch("budget", 1, 1_048_576));
    all.extend(fetch("budget", 2, 1_048_576));
    stream.write_all(&all).unwrap();
    // The other consumer asks while the first connection's requests are in flight.
    let mut other = connect(&broker.addr());
    other.write_all(&fetch("budget", 9, 1_048_576)).unwrap();
    let mut body = read_answer(&mut other);
    let (corr, _): (i32, kafka_protocol::messages::FetchResponse) =
        codec::decode_response(&mut body, FETCH_VERSION, "fetch").unwrap();
    assert_eq!(corr, 9);
    for id in 0..3 {
        let mut body = read_answer(&mut stream);
        let corr = if id == 0 {
            let (corr, r): (i32, ProduceResponse) =
                codec::decode_response(&mut body, PRODUCE_VERSION, "produce").unwrap();
            assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
            corr
        } else {
            let (corr, r): (i32, kafka_protocol::messages::FetchResponse) =
                codec::decode_response(&mut body, FETCH_VERSION, "fetch").unwrap();
            assert_eq!(r.responses[0].partitions[0].error_code, 0);
            corr
        };
        assert_eq!(corr, id, "answers out of order");
    }
}

/// Connects with a 4 KiB receive buffer, set before the handshake so the window stays small: a
/// client that does not read stops a large answer after a few KiB.
fn connect_small_window(addr: &str) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let addr: std::net::SocketAddrV4 = addr.parse().unwrap();
    // SAFETY: plain socket calls on a descriptor this function owns until from_raw_fd takes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket");
        let size: libc::c_int = 4096;
        let set = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(set, 0, "SO_RCVBUF");
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let connected = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(connected, 0, "connect");
        std::net::TcpStream::from_raw_fd(fd)
    }
}

/// A consumer that asks for a large answer and never reads it would keep that answer's share of
/// the fetch budget for as long as it stays connected, and with the budget gone every other
/// consumer waits. `response_stall_ms_max` closes such a connection: another consumer's Fetch,
/// which needs the whole budget, is answered, and the log says why the stuck one was closed.
#[test]
fn a_client_that_stops_reading_is_cut_off_and_frees_the_fetch_budget() {
    const ANSWER_BYTES: usize = 12 * 1024 * 1024;
    const VALUE_BYTES: usize = 256 * 1024;
    let broker = Broker::start_with_config(
        "fetch_bytes_max = 16777216\nfetch_inflight_bytes_max = 33554432\n\
         response_stall_ms_max = 500\n",
    );
    create_topic(&broker, "stuck");
    let mut producer = connect(&broker.addr());
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    let batches = ANSWER_BYTES / (VALUE_BYTES * RECORDS_PER_BATCH) + 1;
    for id in 0..batches as i32 {
        producer
            .write_all(&produce_value("stuck", id, value.clone()))
            .unwrap();
        let mut body = read_answer(&mut producer);
        let (_, r): (i32, ProduceResponse) =
            codec::decode_response(&mut body, PRODUCE_VERSION, "produce").unwrap();
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    // Asks for everything, never reads.
    let mut stuck = connect_small_window(&broker.addr());
    stuck
        .write_all(&fetch("stuck", 1, 16 * 1024 * 1024))
        .unwrap();
    // Needs the whole budget (2 x 16 MiB): only there once the stuck answer is let go.
    let mut other = connect(&broker.addr());
    other
        .write_all(&fetch("stuck", 2, 16 * 1024 * 1024))
        .unwrap();
    let mut body = read_answer(&mut other);
    let (corr, r): (i32, kafka_protocol::messages::FetchResponse) =
        codec::decode_response(&mut body, FETCH_VERSION, "fetch").unwrap();
    assert_eq!(corr, 2);
    let records = r.responses[0].partitions[0]
        .records
        .as_ref()
        .map_or(0, |b| b.len());
    assert!(
        records >= ANSWER_BYTES,
        "the whole topic came back: {records} bytes"
    );
    // The budget comes back as the stuck connection is dropped, just before its log line.
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    let mut log = String::new();
    while std::time::Instant::now() < deadline {
        log = std::fs::read_to_string(&broker.log_path).unwrap();
        if log.contains("client read nothing") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(log.contains("client read nothing"), "{log}");
    drop(stuck);
}
