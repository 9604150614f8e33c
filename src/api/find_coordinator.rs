//! api::find_coordinator (key 10): which broker coordinates a consumer group. A group's
//! coordinator is the leader of its `__consumer_offsets` partition; with one node that is always
//! this node. Transactions are not served, so their coordinator is "not available".
//!
//! librdkafka also reads this API's presence as the broker's "LZ4 supported" feature flag (its
//! legacy feature detection), so advertising it is what lets librdkafka clients produce LZ4.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, RequestHeader,
};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::broker::Broker;

/// FindCoordinator v4 batched the keys into `coordinator_keys` / `coordinators`.
const BATCHED_VERSION_MIN: i16 = 4;
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    if header.request_api_version >= BATCHED_VERSION_MIN {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| locate(broker, request.key_type, key))
            .collect();
        return FindCoordinatorResponse::default()
            .with_error_message(None)
            .with_coordinators(coordinators);
    }
    let c = locate(broker, request.key_type, request.key);
    let response = FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port);
    // The error message exists from v1.
    if header.request_api_version >= 1 {
        response.with_error_message(c.error_message)
    } else {
        response
    }
}

fn locate(broker: &Broker, key_type: i8, key: StrBytes) -> Coordinator {
    // Kafka sends a null error message on success (the type's default is "").
    let c = Coordinator::default()
        .with_key(key)
        .with_error_message(None);
    let refuse = |c: Coordinator, e: ResponseError, why: &str| {
        c.with_error_code(e.code())
            .with_error_message(Some(str_bytes(why)))
            .with_node_id(BrokerId(-1))
            .with_port(-1)
    };
    match key_type {
        KEY_TYPE_GROUP => c
            .with_node_id(BrokerId(broker.identity.node_id))
            .with_host(str_bytes(broker.advertised.host.clone()))
            .with_port(broker.advertised.port),
        KEY_TYPE_TRANSACTION => refuse(
            c,
            ResponseError::CoordinatorNotAvailable,
            "transactions are not served",
        ),
        _ => refuse(
            c,
            ResponseError::InvalidRequest,
            "unknown coordinator key type",
        ),
    }
}
