//! api::elect_leaders (key 43): Kafka's ElectLeaders — a preferred or unclean leader election of
//! named partitions (or, with a null list, every partition), committed through the controller as
//! one `MetadataCommand::ElectLeaders` and answered per partition with Kafka's codes (NONE,
//! ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE, ELIGIBLE_LEADERS_NOT_AVAILABLE,
//! UNKNOWN_TOPIC_OR_PARTITION). The request's `timeout_ms` bounds the wait, as for the other
//! admin requests; past it every partition answers REQUEST_TIMED_OUT.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    ElectLeadersRequest, ElectLeadersResponse, RequestHeader, TopicName,
};
use uuid::Uuid;

use super::{str_bytes, topic_error};
use crate::broker::{Broker, TopicError};
use crate::meta::command::{Election, MetadataCommand, MetadataResponse, codes};

/// Kafka's ElectionType values.
pub const ELECTION_PREFERRED: i8 = 0;
pub const ELECTION_UNCLEAN: i8 = 1;

/// One partition's outcome: topic name, partition, Kafka error code.
type Outcome = (String, i32, i16);

/// The first version whose answer has a request-level error code.
const VERSION_TOP_LEVEL_ERROR: i16 = 1;

pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let election = match request.election_type {
        ELECTION_PREFERRED => Election::Preferred,
        ELECTION_UNCLEAN => Election::Unclean,
        _ => {
            return ElectLeadersResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_replica_election_results(refuse_all(&request, codes::INVALID_REQUEST));
        }
    };
    let wanted: Option<Vec<(String, i32)>> = request.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.to_string(), *p)))
            .collect()
    });
    let deadline = super::admin_deadline(request.timeout_ms);
    let mut response = ElectLeadersResponse::default();
    let outcomes = match super::within(deadline, elect(broker, election, wanted.clone())).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            let (code, _) = topic_error(&e);
            if wanted.is_none() && header.request_api_version >= VERSION_TOP_LEVEL_ERROR {
                // Every partition was asked for: no partition to carry the failure.
                response = response.with_error_code(code);
            }
            wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(t, p)| (t, p, code))
                .collect()
        }
    };
    response.with_replica_election_results(group(outcomes))
}

/// Every named partition answered with `code` (a request refused as a whole).
fn refuse_all(request: &ElectLeadersRequest, code: i16) -> Vec<ReplicaElectionResult> {
    let outcomes = request
        .topic_partitions
        .iter()
        .flatten()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.to_string(), *p, code)))
        .collect();
    group(outcomes)
}

/// Commits the election through the controller and names each outcome's topic. Partitions of
/// topics the image does not know answer UNKNOWN_TOPIC_OR_PARTITION without a proposal.
pub async fn elect(
    broker: &Broker,
    election: Election,
    wanted: Option<Vec<(String, i32)>>,
) -> Result<Vec<Outcome>, TopicError> {
    let Some(q) = broker.quorum() else {
        // A node without a quorum leads every partition it has, each its own preferred replica.
        let known = |t: &str, p: i32| broker.topic(t).is_some_and(|t| t.partition(p).is_some());
        return Ok(wanted
            .unwrap_or_default()
            .into_iter()
            .map(|(t, p)| {
                let code = match known(&t, p) {
                    true => codes::ELECTION_NOT_NEEDED,
                    false => codes::UNKNOWN_TOPIC_OR_PARTITION,
                };
                (t, p, code)
            })
            .collect());
    };
    let image = q.image();
    let mut outcomes = Vec::new();
    let partitions = wanted.map(|wanted| {
        let mut ids = Vec::with_capacity(wanted.len());
        for (topic, p) in wanted {
            match image.topics.get(&topic) {
                Some(t) => ids.push((t.id, p)),
                None => outcomes.push((topic, p, codes::UNKNOWN_TOPIC_OR_PARTITION)),
            }
        }
        ids
    });
    if partitions.as_ref().is_some_and(Vec::is_empty) {
        return Ok(outcomes);
    }
    let timeout = std::time::Duration::from_millis(broker.config.controller_request_ms_max);
    let cmd = MetadataCommand::ElectLeaders {
        election,
        partitions,
    };
    let results = match q.propose(cmd, timeout).await {
        Ok(MetadataResponse::Elected(results)) => results,
        Ok(MetadataResponse::Refused(r)) => {
            return Err(TopicError::Refused {
                code: r.code,
                message: r.message,
            });
        }
        Ok(other) => {
            return Err(TopicError::InvalidRequest(format!(
                "the controller answered {other:?}"
            )));
        }
        Err(e) => return Err(TopicError::Unavailable(e)),
    };
    // Names by id: the image the request was resolved with, then the newest (a topic created
    // since answers under its name; one deleted since keeps the name it was asked by).
    let newest = q.image();
    let names: BTreeMap<Uuid, &str> = image
        .topics
        .values()
        .chain(newest.topics.values())
        .map(|t| (t.id, t.name.as_str()))
        .collect();
    for r in results {
        let name = names.get(&r.topic_id).copied().unwrap_or_default();
        outcomes.push((name.to_string(), r.partition, r.code));
    }
    Ok(outcomes)
}

/// Outcomes grouped by topic (first-seen order), each partition with its code and, for an
/// error, Kafka's description of it.
pub fn group(outcomes: Vec<Outcome>) -> Vec<ReplicaElectionResult> {
    let mut topics: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, partition, code) in outcomes {
        let result = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(code)
            .with_error_message(description(code).map(str_bytes));
        match topics.iter_mut().find(|t| t.topic.as_str() == topic) {
            Some(t) => t.partition_result.push(result),
            None => topics.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(str_bytes(topic)))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    topics
}

/// Kafka's message for an error code (none for NONE): its own words for the election codes,
/// else the error's name.
fn description(code: i16) -> Option<String> {
    let text = match code {
        codes::NONE => return None,
        codes::ELECTION_NOT_NEEDED => "Leader election not needed for topic partition.",
        codes::PREFERRED_LEADER_NOT_AVAILABLE => "The preferred leader was not available.",
        codes::ELIGIBLE_LEADERS_NOT_AVAILABLE => {
            "Eligible topic partition leaders are not available."
        }
        codes::UNKNOWN_TOPIC_OR_PARTITION => "This server does not host this topic-partition.",
        other => return ResponseError::try_from_code(other).map(|e| e.to_string()),
    };
    Some(text.to_string())
}
