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
            .map(|key| locate(broker, request.key_type, key));
        let coordinators = futures_util::future::join_all(coordinators).await;
        return FindCoordinatorResponse::default()
            .with_error_message(None)
            .with_coordinators(coordinators);
    }
    let c = locate(broker, request.key_type, request.key).await;
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

async fn locate(broker: &Broker, key_type: i8, key: StrBytes) -> Coordinator {
    // Kafka sends a null error message on success (the type's default is "").
    let c = Coordinator::default()
        .with_key(key.clone())
        .with_error_message(None);
    let refuse = |c: Coordinator, e: ResponseError, why: &str| {
        c.with_error_code(e.code())
            .with_error_message(Some(str_bytes(why)))
            .with_node_id(BrokerId(-1))
            .with_port(-1)
    };
    match key_type {
        KEY_TYPE_GROUP => {
            let node = match crate::group::coordinator_of(broker, key.as_str()).await {
                Ok(node) => node,
                Err(e) => return refuse(c, e, "the group's coordinator is not available yet"),
            };
            match broker
                .broker_views(false)
                .into_iter()
                .find(|b| b.node_id == node)
            {
                Some(b) => c
                    .with_node_id(BrokerId(node))
                    .with_host(str_bytes(b.host))
                    .with_port(b.port),
                None => refuse(
                    c,
                    ResponseError::CoordinatorNotAvailable,
                    "the group's coordinator is not available yet",
                ),
            }
        }
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
