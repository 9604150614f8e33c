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
    let deadline = super::admin_deadline(request.timeout_ms);
    for t in request.topics {
        let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        // Null means "let the broker place them"; a list is checked against the cluster.
        let assignments: Option<Vec<Vec<i32>>> = t.assignments.as_ref().map(|a| {
            a.iter()
                .map(|p| p.broker_ids.iter().map(|b| b.0).collect())
                .collect()
        });
        results.push(
            match super::within(
                deadline,
                broker.create_partitions(
                    &t.name,
                    t.count,
                    assignments.as_deref(),
                    request.validate_only,
                ),
            )
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
