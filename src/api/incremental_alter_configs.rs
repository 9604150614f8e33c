//! api::incremental_alter_configs (key 44): set or delete topic configs. Broker settings are
//! static (from the node's config file) and cannot be altered at run time.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, RequestHeader,
};

use super::describe_configs::RESOURCE_TOPIC;
use super::{str_bytes, topic_error};
use crate::broker::Broker;

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
            .with_resource_name(r.resource_name.clone());
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
    let topic = broker.topic(&r.resource_name).ok_or_else(|| {
        refuse(
            ResponseError::UnknownTopicOrPartition,
            format!("unknown topic {}", &*r.resource_name),
        )
    })?;
    let mut configs: BTreeMap<String, String> = topic.configs();
    for c in r.configs {
        match (c.config_operation, c.value) {
            (OP_SET, Some(v)) => {
                configs.insert(c.name.to_string(), v.to_string());
            }
            (OP_DELETE, _) => {
                configs.remove(c.name.as_str());
            }
            (op, _) => {
                return Err(refuse(
                    ResponseError::InvalidConfig,
                    format!("operation {op} on {} is not supported", &*c.name),
                ));
            }
        }
    }
    broker
        .set_topic_configs(&topic.name, configs, validate_only)
        .await
        .map_err(|e| topic_error(&e))
}
