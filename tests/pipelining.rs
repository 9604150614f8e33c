//! Pipelined requests on one connection: a client may send several requests before reading any
//! answer (librdkafka and the Java client keep up to 5 in flight). The broker dispatches them in
//! order — Produce offsets are assigned in request order — and answers them in request order,
//! even though Produce answers wait for the disk while later requests are dispatched.

mod common;

use std::io::{Read, Write};

use bramble::client::producer::encode_batch;
use bramble::protocol::codec;
use bytes::{Buf, Bytes};
use common::{Broker, connect, run_cli};
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
    let batch = encode_batch(
        &Bytes::from_static(b"value"),
        RECORDS_PER_BATCH,
        1_700_000_000_000,
    )
    .unwrap();
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
    let created = run_cli(
        &["topic", "create", "pipe", "-b", &broker.addr()],
        broker.dir.path(),
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
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
