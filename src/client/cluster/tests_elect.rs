//! `cluster elect-leaders` on the wire: the request the CLI builds survives encoding and the
//! broker's decoding at v0-v2 (v0 has no election type: always preferred; a null list stays
//! null), and the broker's per-partition answer (`api::elect_leaders::group`) read back by the
//! client gives the rows, codes, messages, text and JSON the CLI prints.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ElectLeadersRequest, ElectLeadersResponse, RequestHeader};

use super::elect::*;
use crate::api::elect_leaders::group;
use crate::meta::command::codes;
use crate::protocol::codec;

/// Encodes `request` as the client sends it and decodes it as `api::dispatch` does.
fn through_the_wire(request: &ElectLeadersRequest, version: i16) -> ElectLeadersRequest {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::ElectLeaders as i16)
        .with_request_api_version(version)
        .with_correlation_id(7);
    let frame = codec::encode_request(&header, request, "elect").unwrap();
    let mut frame = Bytes::from(frame.to_vec()).split_off(4);
    let prefix = codec::peek_prefix(&frame).unwrap();
    assert_eq!((prefix.api_key, prefix.api_version), (43, version));
    codec::decode_header(&mut frame, ApiKey::ElectLeaders, version).unwrap();
    let decoded = codec::decode_body(&mut frame, version, "elect").unwrap();
    assert!(frame.is_empty(), "bytes left after the body");
    decoded
}

// Proves the CLI's request reaches the broker's handler as built, at every version served.
#[test]
fn requests_decode_as_sent_at_every_version() {
    for version in 0..=ELECT_LEADERS_VERSION_MAX {
        let unclean = version >= ELECT_LEADERS_VERSION_TYPED;
        let named = elect_request(unclean, Some(vec![("t".into(), vec![0, 2])]));
        let got = through_the_wire(&named, version);
        let topics = got.topic_partitions.as_ref().expect("named partitions");
        assert_eq!(topics.len(), 1);
        assert_eq!(
            (topics[0].topic.as_str(), topics[0].partitions.clone()),
            ("t", vec![0, 2])
        );
        assert_eq!(got.timeout_ms, ELECT_LEADERS_TIMEOUT_MS);
        assert_eq!(got.election_type, i8::from(unclean), "v{version}");
        let all = through_the_wire(&elect_request(false, None), version);
        assert_eq!((all.topic_partitions, all.election_type), (None, 0));
    }
}

// Proves why the CLI refuses --unclean against a v0-only broker: v0 cannot carry the type.
#[test]
fn an_unclean_election_does_not_encode_at_v0() {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::ElectLeaders as i16)
        .with_request_api_version(0);
    assert!(codec::encode_request(&header, &elect_request(true, None), "elect").is_err());
}

// Proves the broker's grouped answer reads back, sorted, with Kafka's codes and messages, as
// the text and JSON the CLI prints.
#[test]
fn answers_read_back_as_rows_text_and_json() {
    let outcomes = vec![
        ("t".to_string(), 1, codes::PREFERRED_LEADER_NOT_AVAILABLE),
        ("a".to_string(), 0, codes::NONE),
        ("t".to_string(), 0, codes::ELECTION_NOT_NEEDED),
        ("gone".to_string(), 3, codes::UNKNOWN_TOPIC_OR_PARTITION),
    ];
    let response = ElectLeadersResponse::default().with_replica_election_results(group(outcomes));
    assert_eq!(
        response.replica_election_results.len(),
        3,
        "grouped by topic"
    );
    for version in 0..=ELECT_LEADERS_VERSION_MAX {
        let frame = codec::encode_response(5, version, &response, "elect").unwrap();
        let mut body = Bytes::from(frame.to_vec()).split_off(4);
        let (correlation, back): (i32, ElectLeadersResponse) =
            codec::decode_response(&mut body, version, "elect").unwrap();
        assert_eq!(correlation, 5);
        let rows = rows_from_response(&back).unwrap();
        let got: Vec<(&str, i32, i16)> = rows
            .iter()
            .map(|r| (r.topic.as_str(), r.partition, r.error_code))
            .collect();
        assert_eq!(
            got,
            vec![("a", 0, 0), ("gone", 3, 3), ("t", 0, 84), ("t", 1, 80),]
        );
        assert_eq!(rows[0].error, None);
        assert_eq!(
            rows[2].error.as_deref(),
            Some("ElectionNotNeeded (error 84): Leader election not needed for topic partition.")
        );
        let text = render_elections(&rows);
        assert_eq!(
            text.lines().take(2).collect::<Vec<_>>(),
            vec!["TOPIC  PARTITION  RESULT", "a      0          elected"]
        );
        assert!(text.contains("t      1          PreferredLeaderNotAvailable (error 80)"));
        let json = elections_json(&rows);
        assert_eq!(json[3]["error_code"], 80);
        assert_eq!(json[0]["error"], serde_json::Value::Null);
    }
}

// Proves an error for the whole request is an error, and an empty answer says so.
#[test]
fn a_request_level_error_is_an_error() {
    let response = ElectLeadersResponse::default().with_error_code(42);
    assert!(
        rows_from_response(&response)
            .unwrap_err()
            .contains("error 42")
    );
    assert_eq!(render_elections(&[]), "No partition needed an election.\n");
}
