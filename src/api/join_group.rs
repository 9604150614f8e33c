//! api::join_group (key 11): a member joins (or rejoins) a consumer group; the answer waits until
//! the rebalance completes (`group::membership`). v4+ joins without a member id are answered
//! MEMBER_ID_REQUIRED with the id to use, and the client joins again with it.

use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, RequestHeader};

use super::str_bytes;
use crate::broker::Broker;
use crate::group::{Join, JoinError};

/// From v4 a new member must first learn its member id (KIP-394).
const MEMBER_ID_REQUIRED_VERSION_MIN: i16 = 4;
/// Before v1 there is no rebalance timeout: it equals the session timeout.
const REBALANCE_TIMEOUT_VERSION_MIN: i16 = 1;
/// From v7 the response names the protocol type; before, the protocol name is not nullable.
const PROTOCOL_TYPE_VERSION_MIN: i16 = 7;
/// From v9 the response can tell a leader to skip the assignment (KIP-814).
const SKIP_ASSIGNMENT_VERSION_MIN: i16 = 9;

pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let version = header.request_api_version;
    let ms = |v: i32| Duration::from_millis(v.max(0) as u64);
    let rebalance_timeout_ms = if version >= REBALANCE_TIMEOUT_VERSION_MIN {
        request.rebalance_timeout_ms
    } else {
        request.session_timeout_ms
    };
    let join = Join {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host: "/".to_string(),
        session_timeout: ms(request.session_timeout_ms),
        rebalance_timeout: ms(rebalance_timeout_ms),
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= MEMBER_ID_REQUIRED_VERSION_MIN,
        supports_skip_assignment: version >= SKIP_ASSIGNMENT_VERSION_MIN,
    };
    let result = broker.groups.join(broker, &request.group_id, join).await;
    let response = JoinGroupResponse::default().with_generation_id(-1);
    let response = match result {
        Ok(a) => {
            let members = a
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(id))
                        .with_group_instance_id(instance.map(str_bytes))
                        .with_metadata(metadata)
                })
                .collect();
            response
                .with_generation_id(a.generation)
                .with_protocol_type(Some(str_bytes(a.protocol_type)))
                .with_protocol_name(a.protocol.map(str_bytes))
                .with_leader(str_bytes(a.leader))
                .with_skip_assignment(a.skip_assignment)
                .with_member_id(str_bytes(a.member_id))
                .with_members(members)
        }
        Err(JoinError::MemberIdRequired(id)) => response
            .with_error_code(ResponseError::MemberIdRequired.code())
            .with_member_id(str_bytes(id)),
        Err(JoinError::Error(e)) => response
            .with_error_code(e.code())
            .with_member_id(request.member_id),
    };
    fit_version(response, version)
}

/// Before v7 the protocol name is a non-null string and there is no protocol type.
fn fit_version(response: JoinGroupResponse, version: i16) -> JoinGroupResponse {
    if version >= PROTOCOL_TYPE_VERSION_MIN {
        return response;
    }
    let name = response.protocol_name.clone().unwrap_or_default();
    response
        .with_protocol_type(None)
        .with_protocol_name(Some(name))
}
