//! api::heartbeat (key 12): a member says it is alive; the answer tells it whether a rebalance
//! has started (REBALANCE_IN_PROGRESS: join again) or it is no longer a member.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse, RequestHeader};

use crate::broker::Broker;

pub async fn handle(
    broker: &Broker,
    _header: &RequestHeader,
    request: HeartbeatRequest,
) -> HeartbeatResponse {
    let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
    let result = broker
        .groups
        .heartbeat(
            broker,
            &request.group_id,
            &request.member_id,
            instance.as_deref(),
            request.generation_id,
        )
        .await;
    HeartbeatResponse::default().with_error_code(result.err().map_or(0, |e| e.code()))
}
