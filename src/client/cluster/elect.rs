//! client::cluster::elect: what `bramble cluster elect-leaders` sends and shows, like Kafka's
//! `kafka-leader-election`: one ElectLeaders request (preferred, or unclean with `--unclean`) for
//! every partition, one topic's, or one partition, and a row per partition the broker answered.
//! Building the request ([`elect_request`]) and reading the answer ([`rows_from_response`],
//! [`render_elections`], [`elections_json`]) are pure functions, tested without a broker.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{ApiKey, ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use super::{Client, ClientError, admin, error_text, served, table, version};

/// Newest ElectLeaders this client speaks (v1 adds the election type, v2 is flexible).
pub const ELECT_LEADERS_VERSION_MAX: i16 = 2;
/// The first version that can ask for an unclean election.
pub const ELECT_LEADERS_VERSION_TYPED: i16 = 1;
/// How long the broker may take to commit the election (the request's `timeout_ms`).
pub const ELECT_LEADERS_TIMEOUT_MS: i32 = 30_000;
/// Kafka's ElectionType values.
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

/// One partition's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ElectionRow {
    pub topic: String,
    pub partition: i32,
    pub error_code: i16,
    /// The error's name and message; `None` when a leader was elected.
    pub error: Option<String>,
}

/// The ElectLeaders request: `partitions` `None` asks for every partition.
pub fn elect_request(
    unclean: bool,
    partitions: Option<Vec<(String, Vec<i32>)>>,
) -> ElectLeadersRequest {
    ElectLeadersRequest::default()
        .with_election_type(if unclean { UNCLEAN } else { PREFERRED })
        .with_timeout_ms(ELECT_LEADERS_TIMEOUT_MS)
        .with_topic_partitions(partitions.map(|topics| {
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    TopicPartitions::default()
                        .with_topic(TopicName(StrBytes::from_string(topic)))
                        .with_partitions(partitions)
                })
                .collect()
        }))
}

/// Asks the broker for the election: every partition (`topic` `None`), each partition of
/// `topic` (from Metadata), or one.
pub async fn elect_leaders(
    client: &mut Client,
    unclean: bool,
    topic: Option<&str>,
    partition: Option<i32>,
) -> Result<Vec<ElectionRow>, ClientError> {
    let served = served(client).await?;
    let v = version(&served, ApiKey::ElectLeaders, ELECT_LEADERS_VERSION_MAX)
        .ok_or_else(|| ClientError::Broker("the broker does not serve ElectLeaders".into()))?;
    if unclean && v < ELECT_LEADERS_VERSION_TYPED {
        return Err(ClientError::Broker(
            "the broker's ElectLeaders cannot ask for an unclean election".into(),
        ));
    }
    let partitions = match (topic, partition) {
        (None, _) => None,
        (Some(t), Some(p)) => Some(vec![(t.to_string(), vec![p])]),
        (Some(t), None) => {
            let metadata = admin::metadata(client, Some(&[t])).await?;
            let found = metadata
                .topics
                .iter()
                .find(|m| m.name.as_ref().is_some_and(|n| n.as_str() == t));
            match found {
                Some(m) if m.error_code == 0 => Some(vec![(
                    t.to_string(),
                    m.partitions.iter().map(|p| p.partition_index).collect(),
                )]),
                Some(m) => {
                    let e = error_text(m.error_code, None).unwrap_or_default();
                    return Err(ClientError::Broker(format!("topic {t}: {e}")));
                }
                None => return Err(ClientError::Broker(format!("topic {t}: not found"))),
            }
        }
    };
    let response = client.call(&elect_request(unclean, partitions), v).await?;
    rows_from_response(&response).map_err(ClientError::Broker)
}

/// The partitions of an answer, by topic then partition; an error for the whole request is an
/// error.
pub fn rows_from_response(response: &ElectLeadersResponse) -> Result<Vec<ElectionRow>, String> {
    if let Some(e) = error_text(response.error_code, None) {
        return Err(e);
    }
    let mut rows: Vec<ElectionRow> = response
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result.iter().map(|p| ElectionRow {
                topic: t.topic.to_string(),
                partition: p.partition_id,
                error_code: p.error_code,
                error: error_text(p.error_code, p.error_message.as_ref()),
            })
        })
        .collect();
    rows.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(rows)
}

/// `cluster elect-leaders` as an aligned table: each partition's result.
pub fn render_elections(rows: &[ElectionRow]) -> String {
    if rows.is_empty() {
        return "No partition needed an election.\n".to_string();
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let result = match ResponseError::try_from_code(r.error_code) {
                None => "elected".to_string(),
                Some(_) => r.error.clone().unwrap_or_default(),
            };
            vec![r.topic.clone(), r.partition.to_string(), result]
        })
        .collect();
    table(&["TOPIC", "PARTITION", "RESULT"], &rows)
}

/// `cluster elect-leaders --json`: an array of partitions.
pub fn elections_json(rows: &[ElectionRow]) -> serde_json::Value {
    serde_json::json!(rows)
}
