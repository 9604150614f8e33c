//! api::incremental_alter_configs (key 44): set, delete, append to or subtract from topic configs
//! (APPEND and SUBTRACT only on list configs such as `cleanup.policy`), and change the broker
//! settings that can change at run time (`broker_configs`); any other broker setting is refused
//! as Kafka refuses it.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, RequestHeader,
};
use kafka_protocol::protocol::StrBytes;

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::{broker_configs, str_bytes, topic_error};
use crate::broker::{Broker, ConfigOp};

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Topic configs whose type is LIST (the only ones APPEND and SUBTRACT apply to).
pub const LIST_TOPIC_CONFIGS: &[&str] = &["cleanup.policy"];

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

/// An error code and message for one resource.
pub type Refusal = (i16, Option<StrBytes>);

pub fn refuse(e: ResponseError, message: String) -> Refusal {
    (e.code(), Some(str_bytes(message)))
}

async fn alter(
    broker: &Broker,
    r: AlterConfigsResource,
    validate_only: bool,
) -> Result<(), Refusal> {
    let mut ops = Vec::with_capacity(r.configs.len());
    for c in r.configs {
        let name = c.name.to_string();
        let list = LIST_TOPIC_CONFIGS.contains(&name.as_str()) && r.resource_type == RESOURCE_TOPIC;
        ops.push(match (c.config_operation, c.value) {
            (OP_SET, Some(v)) => ConfigOp::Set(name, v.to_string()),
            (OP_DELETE, _) => ConfigOp::Delete(name),
            // Kafka's words and code for APPEND/SUBTRACT on a config that is not a list.
            (OP_APPEND | OP_SUBTRACT, _) if !list => {
                let what = if c.config_operation == OP_APPEND {
                    "append"
                } else {
                    "subtract"
                };
                return Err(refuse(
                    ResponseError::InvalidRequest,
                    format!("Config value {what} is not allowed for config key: {name}"),
                ));
            }
            (OP_APPEND, Some(v)) => ConfigOp::Append(name, v.to_string()),
            (OP_SUBTRACT, Some(v)) => ConfigOp::Subtract(name, v.to_string()),
            (op, _) => {
                return Err(refuse(
                    ResponseError::InvalidRequest,
                    format!("operation {op} on {name} needs a value or is unknown"),
                ));
            }
        });
    }
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
