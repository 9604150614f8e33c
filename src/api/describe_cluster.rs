//! api::describe_cluster (key 60): cluster id, controller and brokers (AdminClient.describe_cluster).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, RequestHeader,
};

use super::{cluster_operations, str_bytes};
use crate::broker::Broker;

/// DescribeCluster v1 endpoint types: 1 brokers, 2 controllers.
const ENDPOINT_BROKERS: i8 = 1;

pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let mut response = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(broker.cluster_id()))
        .with_controller_id(BrokerId(broker.controller_id()))
        .with_cluster_authorized_operations(cluster_operations(
            request.include_cluster_authorized_operations,
        ));
    if header.request_api_version >= 1 {
        response = response.with_endpoint_type(request.endpoint_type);
        if request.endpoint_type != ENDPOINT_BROKERS {
            return response
                .with_error_code(ResponseError::UnsupportedEndpointType.code())
                .with_error_message(Some(str_bytes("only broker endpoints are served")));
        }
    }
    // v2 (KIP-1073) can ask for fenced brokers too, flagged as such.
    let with_fenced = header.request_api_version >= 2 && request.include_fenced_brokers;
    let brokers = broker
        .broker_views(with_fenced)
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.node_id))
                .with_host(str_bytes(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(str_bytes))
                .with_is_fenced(b.fenced)
        })
        .collect();
    response.with_brokers(brokers)
}
