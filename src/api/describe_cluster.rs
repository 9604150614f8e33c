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
    let node = broker.identity.node_id;
    let mut response = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(broker.identity.cluster_id.clone()))
        .with_controller_id(BrokerId(node))
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
    let me = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(node))
        .with_host(str_bytes(broker.advertised.host.clone()))
        .with_port(broker.advertised.port)
        .with_rack(broker.config.rack.clone().map(str_bytes));
    response.with_brokers(vec![me])
}
