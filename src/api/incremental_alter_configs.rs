//! api::incremental_alter_configs (key 44): set or delete topic configs. Broker settings are
//! static (from the node's config file) and cannot be altered at run time.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, RequestHeader,
};

use super::describe_configs::RESOURCE_TOPIC;
use super::{str_bytes, topic_error};
use crate::broker::{Broker, ConfigOp};

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

pub async fn handle(
    broker: &Broker,
    _header: &RequestHeader,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for r in request.resources {
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone())
            // Null on success, as Kafka (the type's default is "").
            .with_error_message(None);
        let outcome = alter(broker, r, request.validate_only).await;
        responses.push(match outcome {
            Ok(()) => response,
            Err((code, message)) => response.with_error_code(code).with_error_message(message),
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

type Refusal = (i16, Option<kafka_protocol::protocol::StrBytes>);

async fn alter(
    broker: &Broker,
    r: AlterConfigsResource,
    validate_only: bool,
) -> Result<(), Refusal> {
    let refuse = |e: ResponseError, m: String| (e.code(), Some(str_bytes(m)));
    if r.resource_type != RESOURCE_TOPIC {
        return Err(refuse(
            ResponseError::InvalidRequest,
            "only topic configs can be altered; broker settings are static".into(),
        ));
    }
    let mut ops = Vec::with_capacity(r.configs.len());
    for c in r.configs {
        ops.push(match (c.config_operation, c.value) {
            (OP_SET, Some(v)) => ConfigOp::Set(c.name.to_string(), v.to_string()),
            (OP_DELETE, _) => ConfigOp::Delete(c.name.to_string()),
            (op, _) => {
                return Err(refuse(
                    ResponseError::InvalidConfig,
                    format!("operation {op} on {} is not supported", &*c.name),
                ));
            }
        });
    }
    broker
        .alter_topic_configs(&r.resource_name, ops, validate_only)
        .await
        .map_err(|e| topic_error(&e))
}
