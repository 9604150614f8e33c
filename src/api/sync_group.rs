//! api::sync_group (key 14): members fetch their assignment for the current generation; the
//! leader's request carries everyone's. Followers wait until the leader's arrives
//! (`group::membership`).

use kafka_protocol::messages::{RequestHeader, SyncGroupRequest, SyncGroupResponse};

use super::str_bytes;
use crate::broker::Broker;

/// From v5 both sides name the protocol type and name, and the broker checks them.
const PROTOCOL_VERSION_MIN: i16 = 5;

pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let version = header.request_api_version;
    let assignments = request
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
    let result = broker
        .groups
        .sync(
            broker,
            &request.group_id,
            &request.member_id,
            instance.as_deref(),
            request.generation_id,
            assignments,
        )
        .await;
    let result = result.and_then(|(protocol_type, protocol, assignment)| {
        // A v5 client names what it expects; a mismatch is Kafka's INCONSISTENT_GROUP_PROTOCOL.
        let type_ok = request
            .protocol_type
            .as_ref()
            .is_none_or(|t| t.as_str() == protocol_type);
        let name_ok = request
            .protocol_name
            .as_ref()
            .is_none_or(|n| Some(n.as_str()) == protocol.as_deref());
        if type_ok && name_ok {
            Ok((protocol_type, protocol, assignment))
        } else {
            Err(kafka_protocol::ResponseError::InconsistentGroupProtocol)
        }
    });
    match result {
        Ok((protocol_type, protocol, assignment)) => {
            let response = SyncGroupResponse::default().with_assignment(assignment);
            if version >= PROTOCOL_VERSION_MIN {
                response
                    .with_protocol_type(Some(str_bytes(protocol_type)))
                    .with_protocol_name(protocol.map(str_bytes))
            } else {
                response
            }
        }
        Err(e) => SyncGroupResponse::default().with_error_code(e.code()),
    }
}
