//! api::create_partitions (key 37): grow a topic's partition count.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse, RequestHeader};

use super::topic_error;
use crate::broker::Broker;

pub async fn handle(
    broker: &Broker,
    _header: &RequestHeader,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        results.push(
            match broker
                .create_partitions(&t.name, t.count, request.validate_only)
                .await
            {
                Ok(()) => result,
                Err(e) => {
                    let (code, message) = topic_error(&e);
                    result.with_error_code(code).with_error_message(message)
                }
            },
        );
    }
    CreatePartitionsResponse::default().with_results(results)
}
