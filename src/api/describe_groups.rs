//! api::describe_groups (key 15): state, protocol and members (with their subscription metadata
//! and assignment once Stable) of each named group. An unknown group is answered "Dead" with no
//! error, as Kafka does.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, RequestHeader};

use super::str_bytes;
use crate::broker::Broker;

/// From v3 the response carries authorized operations (i32::MIN = not asked for).
const AUTHORIZED_OPERATIONS_VERSION_MIN: i16 = 3;
/// Every operation on a group (Kafka's bit set: READ, DESCRIBE, DELETE), as no ACLs exist yet.
const GROUP_OPERATIONS_ALL: i32 = (1 << 3) | (1 << 6) | (1 << 8);

pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let version = header.request_api_version;
    let mut groups = Vec::with_capacity(request.groups.len());
    for id in request.groups {
        let mut g = DescribedGroup::default().with_group_id(id.clone());
        if version >= AUTHORIZED_OPERATIONS_VERSION_MIN && request.include_authorized_operations {
            g = g.with_authorized_operations(GROUP_OPERATIONS_ALL);
        }
        let d = match broker.groups.describe(broker, &id).await {
            Ok(d) => d,
            Err(e) => {
                groups.push(g.with_error_code(e.code()));
                continue;
            }
        };
        let members = d
            .members
            .into_iter()
            .map(|(member, instance, client, host, meta, assignment)| {
                DescribedGroupMember::default()
                    .with_member_id(str_bytes(member))
                    .with_group_instance_id(instance.map(str_bytes))
                    .with_client_id(str_bytes(client))
                    .with_client_host(str_bytes(host))
                    .with_member_metadata(meta)
                    .with_member_assignment(assignment)
            })
            .collect();
        groups.push(
            g.with_group_state(str_bytes(d.state.name()))
                .with_protocol_type(str_bytes(d.protocol_type))
                .with_protocol_data(str_bytes(d.protocol))
                .with_members(members),
        );
    }
    DescribeGroupsResponse::default().with_groups(groups)
}
