//! api::list_groups (key 16): the groups this node coordinates, optionally filtered by state
//! (v4+) and type (v5+: only "classic" groups exist here).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse, RequestHeader};

use super::str_bytes;
use crate::broker::Broker;

const STATE_VERSION_MIN: i16 = 4;
const TYPE_VERSION_MIN: i16 = 5;
/// The only group type served (KIP-848's "consumer" groups are not).
const GROUP_TYPE: &str = "classic";

pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let version = header.request_api_version;
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_string())
        .collect();
    let type_ok = request.types_filter.is_empty()
        || request
            .types_filter
            .iter()
            .any(|t| t.eq_ignore_ascii_case(GROUP_TYPE));
    let groups = if type_ok {
        broker.groups.list(broker, &states).await
    } else {
        Vec::new()
    };
    let listed = groups
        .into_iter()
        .map(|(id, protocol_type, state)| {
            let g = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(protocol_type));
            let g = if version >= STATE_VERSION_MIN {
                g.with_group_state(str_bytes(state.name()))
            } else {
                g
            };
            if version >= TYPE_VERSION_MIN {
                g.with_group_type(str_bytes(GROUP_TYPE))
            } else {
                g
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}
