//! api::api_versions (key 18): what this broker serves. Clients send it first on every connection.

use bytes::BytesMut;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, RequestHeader};

use super::SUPPORTED_APIS;
use crate::broker::Broker;
use crate::protocol::codec::{self, CodecError};

pub async fn handle(
    _broker: &Broker,
    _header: &RequestHeader,
    _request: ApiVersionsRequest,
) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_keys())
}

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

/// The answer to an ApiVersions request newer than we know: always v0 format (clients cannot
/// know which format a broker that does not know their version would use), UNSUPPORTED_VERSION,
/// and our ranges so the client can retry with a version we serve.
pub fn unsupported_version_response(correlation_id: i32) -> Result<BytesMut, CodecError> {
    let response = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys());
    codec::encode_response(correlation_id, 0, &response, "api versions")
}
