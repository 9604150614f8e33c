//! api::alter_configs (key 33): the legacy, non-incremental form many tools still send. Each
//! resource's listed configs replace its whole set: a topic's overrides not listed go back to
//! their defaults, and so do the broker's dynamic settings. `validate_only` checks and changes
//! nothing. Values must not be null (Kafka refuses them with INVALID_REQUEST).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, RequestHeader};

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::incremental_alter_configs::{Refusal, refuse};
use super::{broker_configs, topic_error};
use crate::broker::{Broker, ConfigOp};

pub async fn handle(
    broker: &Broker,
    _header: &RequestHeader,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for r in request.resources {
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone())
            // Null on success, as Kafka (the type's default is "").
            .with_error_message(None);
        responses.push(match alter(broker, r, request.validate_only).await {
            Ok(()) => response,
            Err((code, message)) => response.with_error_code(code).with_error_message(message),
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}

async fn alter(
    broker: &Broker,
    r: AlterConfigsResource,
    validate_only: bool,
) -> Result<(), Refusal> {
    let nulls: Vec<&str> = r
        .configs
        .iter()
        .filter(|c| c.value.is_none())
        .map(|c| c.name.as_str())
        .collect();
    if !nulls.is_empty() {
        return Err(refuse(
            ResponseError::InvalidRequest,
            format!("Null value not supported for : {}", nulls.join(", ")),
        ));
    }
    // Clear first, then set: the listed configs become the whole set, in one step under the
    // broker's admin lock.
    let mut ops = vec![ConfigOp::Clear];
    ops.extend(r.configs.into_iter().filter_map(|c| {
        c.value
            .map(|v| ConfigOp::Set(c.name.to_string(), v.to_string()))
    }));
    match r.resource_type {
        RESOURCE_TOPIC => broker
            .alter_topic_configs(&r.resource_name, ops, validate_only)
            .await
            .map_err(|e| topic_error(&e)),
        RESOURCE_BROKER => {
            broker_configs::alter(broker, &r.resource_name, ops, validate_only).await
        }
        other => Err(refuse(
            ResponseError::InvalidRequest,
            format!("unsupported resource type {other}"),
        )),
    }
}
