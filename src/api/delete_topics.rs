//! api::delete_topics (key 20): delete topics by name, or by id from v6.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    DeleteTopicsRequest, DeleteTopicsResponse, RequestHeader, TopicName,
};

use super::{str_bytes, topic_error};
use crate::broker::Broker;

pub async fn handle(
    broker: &Broker,
    _header: &RequestHeader,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let deadline = super::admin_deadline(request.timeout_ms);
    // v0-5 name topics in `topic_names`; v6 in `topics`, each by name or by id.
    let mut targets: Vec<(Option<TopicName>, uuid::Uuid)> = request
        .topic_names
        .into_iter()
        .map(|n| (Some(n), uuid::Uuid::nil()))
        .collect();
    targets.extend(request.topics.into_iter().map(|t| (t.name, t.topic_id)));
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let result = DeletableTopicResult::default()
            .with_name(name.clone())
            .with_topic_id(id);
        let name = match name {
            Some(n) => Some(n.to_string()),
            None => broker.topic_by_id(id).map(|t| t.name.clone()),
        };
        let Some(name) = name else {
            responses.push(
                result
                    .with_error_code(ResponseError::UnknownTopicId.code())
                    .with_error_message(Some(str_bytes(format!("unknown topic id {id}")))),
            );
            continue;
        };
        responses.push(
            match super::within(deadline, broker.delete_topic(&name)).await {
                Ok(deleted_id) => result
                    .with_name(Some(TopicName(str_bytes(name))))
                    .with_topic_id(deleted_id),
                Err(e) => {
                    let (code, message) = topic_error(&e);
                    result.with_error_code(code).with_error_message(message)
                }
            },
        );
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
