//! client::cluster: what `bramble cluster status` and `bramble cluster leaders` show, fetched
//! over the Kafka protocol from any node (as `kafka-metadata-quorum describe --status
//! --replication` and `kafka-topics --describe` do). Fetching gathers DescribeCluster,
//! DescribeQuorum and Metadata answers; turning them into rows ([`assemble_status`],
//! [`leaders_from_metadata`]) and rows into text or JSON ([`render_status`],
//! [`render_leaders`]) are pure functions, tested without a broker.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, DescribeClusterRequest, DescribeClusterResponse,
    DescribeQuorumRequest, DescribeQuorumResponse, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use super::{Client, ClientError, admin};

pub mod cli;
pub mod elect;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_elect;

/// ApiVersions version asked first (Kafka 2.4+ and bramble serve it).
const API_VERSIONS_VERSION: i16 = 3;
/// Newest DescribeCluster this client speaks; v2 adds `include_fenced_brokers`.
const DESCRIBE_CLUSTER_VERSION_MAX: i16 = 2;
const DESCRIBE_CLUSTER_VERSION_FENCING: i16 = 2;
/// Newest DescribeQuorum this client speaks; v2 adds the voters' listeners.
const DESCRIBE_QUORUM_VERSION_MAX: i16 = 2;
/// DescribeCluster endpoint type: brokers.
const ENDPOINT_BROKERS: i8 = 1;
/// The metadata log as DescribeQuorum names it.
const METADATA_TOPIC: &str = "__cluster_metadata";
/// Placeholder for a value that is not known or does not apply.
const NONE_SHOWN: &str = "-";
/// Spaces between the columns of a table.
const COLUMN_GAP: usize = 2;

/// A node's part in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A member of the metadata quorum that votes.
    Voter,
    /// A quorum member that replicates the metadata log without voting (a `--join` node).
    Learner,
    /// A registered broker the quorum did not list (or the quorum could not be described).
    Broker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Voter => "voter",
            Role::Learner => "learner",
            Role::Broker => "broker",
        }
    }
}

/// One node of `cluster status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRow {
    pub node_id: i32,
    /// Advertised `host:port`, if any answer named it.
    pub address: Option<String>,
    pub rack: Option<String>,
    pub role: Role,
    pub controller: bool,
    /// `None` when the broker does not report fencing (DescribeCluster before v2) or the node is
    /// not a registered broker.
    pub fenced: Option<bool>,
    /// The member's metadata log end offset (quorum members, as the leader knows them).
    pub log_end_offset: Option<i64>,
    /// How many entries the member is behind the leader's log end offset.
    pub lag: Option<i64>,
}

/// The metadata quorum as DescribeQuorum reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuorumSummary {
    pub leader_id: i32,
    /// The Raft term (Kafka's leader epoch of the metadata log).
    pub term: i32,
    /// One past the last committed entry; -1 when nothing is committed.
    pub high_watermark: i64,
    /// (node, log end offset or -1) of each voter.
    pub voters: Vec<(i32, i64)>,
    /// (node, log end offset or -1) of each observer (learner).
    pub observers: Vec<(i32, i64)>,
    /// Listener `host:port` of each voter (DescribeQuorum v2).
    pub addresses: BTreeMap<i32, String>,
}

impl QuorumSummary {
    /// Index of the last committed entry, if any (the high watermark is one past it).
    pub fn commit_index(&self) -> Option<i64> {
        (self.high_watermark > 0).then(|| self.high_watermark - 1)
    }

    /// The leader's log end offset, if the answer has it.
    fn leader_log_end(&self) -> Option<i64> {
        self.voters
            .iter()
            .find(|(id, _)| *id == self.leader_id)
            .map(|&(_, leo)| leo)
            .filter(|leo| *leo >= 0)
    }
}

/// Everything `cluster status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    pub cluster_id: String,
    /// The quorum's leader when known, else the controller DescribeCluster named.
    pub controller_id: i32,
    /// Sorted by node id.
    pub nodes: Vec<NodeRow>,
    /// The quorum, or why the node could not describe it.
    pub quorum: Result<QuorumSummary, String>,
    /// Whether `fenced` was reported (DescribeCluster v2).
    pub fencing_known: bool,
}

/// One partition of `cluster leaders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLeader {
    pub topic: String,
    pub partition: i32,
    /// -1 when the partition has no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Offsets each replica's log end is behind its leader's (replicas whose broker did not
    /// answer are missing).
    pub lag: BTreeMap<i32, i64>,
}

/// The error a Kafka error code names, with its message, or `None` for no error.
fn error_text(code: i16, message: Option<&StrBytes>) -> Option<String> {
    let e = ResponseError::try_from_code(code)?;
    let detail = message
        .filter(|m| !m.is_empty())
        .map(|m| format!(": {}", m.as_str()))
        .unwrap_or_default();
    Some(format!("{e:?} (error {code}){detail}"))
}

/// The versions of every API the broker serves (api key → (min, max)), from ApiVersions.
async fn served(client: &mut Client) -> Result<BTreeMap<i16, (i16, i16)>, ClientError> {
    let response = client
        .call(&ApiVersionsRequest::default(), API_VERSIONS_VERSION)
        .await?;
    if let Some(e) = error_text(response.error_code, None) {
        return Err(ClientError::Broker(e));
    }
    Ok(response
        .api_keys
        .iter()
        .map(|k| (k.api_key, (k.min_version, k.max_version)))
        .collect())
}

/// The newest version both sides speak, if any.
fn version(served: &BTreeMap<i16, (i16, i16)>, key: ApiKey, ours: i16) -> Option<i16> {
    let &(min, max) = served.get(&(key as i16))?;
    let v = max.min(ours);
    (v >= min).then_some(v)
}

/// DescribeQuorum for the metadata log, as Kafka's admin client sends it.
pub fn quorum_request() -> DescribeQuorumRequest {
    DescribeQuorumRequest::default().with_topics(vec![
        TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
    ])
}

/// Asks the broker for its cluster view and quorum. A node that cannot describe the quorum
/// (DescribeQuorum not served, or answered with an error) still gives its brokers.
pub async fn cluster_status(client: &mut Client) -> Result<ClusterStatus, ClientError> {
    let served = served(client).await?;
    let cluster_version = version(
        &served,
        ApiKey::DescribeCluster,
        DESCRIBE_CLUSTER_VERSION_MAX,
    )
    .ok_or_else(|| ClientError::Broker("the broker does not serve DescribeCluster".into()))?;
    let mut request = DescribeClusterRequest::default();
    if cluster_version >= 1 {
        request = request.with_endpoint_type(ENDPOINT_BROKERS);
    }
    let fencing_known = cluster_version >= DESCRIBE_CLUSTER_VERSION_FENCING;
    if fencing_known {
        request = request.with_include_fenced_brokers(true);
    }
    let cluster = client.call(&request, cluster_version).await?;
    if let Some(e) = error_text(cluster.error_code, cluster.error_message.as_ref()) {
        return Err(ClientError::Broker(e));
    }
    let quorum = match version(&served, ApiKey::DescribeQuorum, DESCRIBE_QUORUM_VERSION_MAX) {
        Some(v) => summarize_quorum(&client.call(&quorum_request(), v).await?),
        None => Err("the broker does not serve DescribeQuorum".to_string()),
    };
    Ok(assemble_status(&cluster, fencing_known, quorum))
}

/// The quorum from a DescribeQuorum answer, or the error it carries.
pub fn summarize_quorum(response: &DescribeQuorumResponse) -> Result<QuorumSummary, String> {
    if let Some(e) = error_text(response.error_code, response.error_message.as_ref()) {
        return Err(e);
    }
    let p = response
        .topics
        .iter()
        .filter(|t| t.topic_name.as_str() == METADATA_TOPIC)
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition_index == 0)
        .ok_or_else(|| format!("the answer does not describe {METADATA_TOPIC}-0"))?;
    if let Some(e) = error_text(p.error_code, p.error_message.as_ref()) {
        return Err(e);
    }
    let members = |rs: &[kafka_protocol::messages::describe_quorum_response::ReplicaState]| {
        rs.iter()
            .map(|r| (r.replica_id.0, r.log_end_offset))
            .collect::<Vec<_>>()
    };
    let addresses = response
        .nodes
        .iter()
        .filter_map(|n| {
            let l = n.listeners.first()?;
            Some((n.node_id.0, format!("{}:{}", l.host.as_str(), l.port)))
        })
        .collect();
    Ok(QuorumSummary {
        leader_id: p.leader_id.0,
        term: p.leader_epoch,
        high_watermark: p.high_watermark,
        voters: members(&p.current_voters),
        observers: members(&p.observers),
        addresses,
    })
}

/// The nodes of the cluster: every broker DescribeCluster listed and every quorum member, each
/// with its role, whether it is the controller, fencing and, for quorum members, its lag.
pub fn assemble_status(
    cluster: &DescribeClusterResponse,
    fencing_known: bool,
    quorum: Result<QuorumSummary, String>,
) -> ClusterStatus {
    // Kafka's brokers name a random live broker as "controller" to clients (KIP-919); the
    // quorum's leader is the real one.
    let controller_id = match &quorum {
        Ok(q) if q.leader_id >= 0 => q.leader_id,
        _ => cluster.controller_id.0,
    };
    let mut nodes: BTreeMap<i32, NodeRow> = BTreeMap::new();
    for b in &cluster.brokers {
        nodes.insert(
            b.broker_id.0,
            NodeRow {
                node_id: b.broker_id.0,
                address: Some(format!("{}:{}", b.host.as_str(), b.port)),
                rack: b.rack.as_ref().map(|r| r.to_string()),
                role: Role::Broker,
                controller: false,
                fenced: fencing_known.then_some(b.is_fenced),
                log_end_offset: None,
                lag: None,
            },
        );
    }
    if let Ok(q) = &quorum {
        let leader_end = q.leader_log_end();
        let members = q.voters.iter().map(|m| (Role::Voter, m));
        let members = members.chain(q.observers.iter().map(|m| (Role::Learner, m)));
        for (role, &(id, leo)) in members {
            let row = nodes.entry(id).or_insert_with(|| NodeRow {
                node_id: id,
                address: q.addresses.get(&id).cloned(),
                rack: None,
                role,
                controller: false,
                fenced: None,
                log_end_offset: None,
                lag: None,
            });
            row.role = role;
            if leo >= 0 {
                row.log_end_offset = Some(leo);
                row.lag = leader_end.map(|end| (end - leo).max(0));
            }
        }
    }
    if let Some(row) = nodes.get_mut(&controller_id) {
        row.controller = true;
    }
    ClusterStatus {
        cluster_id: cluster.cluster_id.to_string(),
        controller_id,
        nodes: nodes.into_values().collect(),
        quorum,
        fencing_known,
    }
}

/// `cluster status` as text: a header, the quorum line, the nodes table, the fenced brokers.
pub fn render_status(s: &ClusterStatus) -> String {
    let mut out = format!(
        "Cluster: {}  Controller: {}\n",
        s.cluster_id, s.controller_id
    );
    match &s.quorum {
        Ok(q) => {
            let commit = q
                .commit_index()
                .map_or_else(|| "none".to_string(), |i| i.to_string());
            out.push_str(&format!(
                "Quorum: leader {}  term {}  commit index {}  high watermark {}\n",
                q.leader_id, q.term, commit, q.high_watermark
            ));
        }
        Err(why) => out.push_str(&format!("Quorum: not described ({why})\n")),
    }
    let shown = |v: Option<String>| v.unwrap_or_else(|| NONE_SHOWN.to_string());
    let rows: Vec<Vec<String>> = s
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.node_id.to_string(),
                shown(n.address.clone()),
                shown(n.rack.clone()),
                n.role.as_str().to_string(),
                if n.controller { "yes" } else { "no" }.to_string(),
                shown(n.fenced.map(|f| if f { "yes" } else { "no" }.to_string())),
                shown(n.log_end_offset.map(|o| o.to_string())),
                shown(n.lag.map(|l| l.to_string())),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "ID",
            "ADDRESS",
            "RACK",
            "ROLE",
            "CONTROLLER",
            "FENCED",
            "LOG-END",
            "LAG",
        ],
        &rows,
    ));
    let fenced: Vec<String> = s
        .nodes
        .iter()
        .filter(|n| n.fenced == Some(true))
        .map(|n| n.node_id.to_string())
        .collect();
    let fenced = match (s.fencing_known, fenced.is_empty()) {
        (false, _) => "unknown (the broker does not serve DescribeCluster v2)".to_string(),
        (true, true) => "none".to_string(),
        (true, false) => fenced.join(","),
    };
    out.push_str(&format!("Fenced brokers: {fenced}\n"));
    out
}

/// `cluster status --json`: the same facts as one JSON object.
pub fn status_json(s: &ClusterStatus) -> serde_json::Value {
    let quorum = match &s.quorum {
        Ok(q) => serde_json::json!({
            "leader_id": q.leader_id,
            "term": q.term,
            "commit_index": q.commit_index(),
            "high_watermark": q.high_watermark,
        }),
        Err(why) => serde_json::json!({ "error": why }),
    };
    serde_json::json!({
        "cluster_id": s.cluster_id,
        "controller_id": s.controller_id,
        "quorum": quorum,
        "fencing_known": s.fencing_known,
        "nodes": s.nodes,
    })
}

/// Every partition's leader, replicas and ISR, from one Metadata answer for all topics.
pub async fn partition_leaders(client: &mut Client) -> Result<Vec<PartitionLeader>, ClientError> {
    let metadata = admin::metadata(client, None).await?;
    let mut rows = leaders_from_metadata(&metadata).map_err(ClientError::Broker)?;
    let ends = super::replica_lag::log_ends(&metadata, &rows).await;
    super::replica_lag::fill_lag(&mut rows, &ends);
    Ok(rows)
}

/// The partitions of a Metadata answer, by topic then partition; a topic the broker answered
/// with an error makes the whole answer an error naming it.
pub fn leaders_from_metadata(metadata: &MetadataResponse) -> Result<Vec<PartitionLeader>, String> {
    let mut rows = Vec::new();
    for t in &metadata.topics {
        let topic = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
        if let Some(e) = error_text(t.error_code, None) {
            return Err(format!("topic {topic}: {e}"));
        }
        for p in &t.partitions {
            rows.push(PartitionLeader {
                topic: topic.clone(),
                partition: p.partition_index,
                leader: p.leader_id.0,
                leader_epoch: p.leader_epoch,
                replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                lag: BTreeMap::new(),
            });
        }
    }
    rows.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(rows)
}

/// `cluster leaders` as an aligned table.
pub fn render_leaders(rows: &[PartitionLeader]) -> String {
    let ids = |v: &[i32]| {
        v.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let leader = match r.leader {
                l if l < 0 => NONE_SHOWN.to_string(),
                l => l.to_string(),
            };
            // Followers only: the leader's own lag is 0 by definition.
            let lag = r
                .replicas
                .iter()
                .filter(|id| **id != r.leader)
                .map(|id| match r.lag.get(id) {
                    Some(l) => format!("{id}:{l}"),
                    None => format!("{id}:?"),
                })
                .collect::<Vec<_>>()
                .join(",");
            vec![
                r.topic.clone(),
                r.partition.to_string(),
                leader,
                match r.leader_epoch {
                    e if e < 0 => NONE_SHOWN.to_string(),
                    e => e.to_string(),
                },
                ids(&r.replicas),
                ids(&r.isr),
                lag,
            ]
        })
        .collect();
    table(
        &[
            "TOPIC",
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "LAG",
        ],
        &rows,
    )
}

/// `cluster leaders --json`: an array of partitions.
pub fn leaders_json(rows: &[PartitionLeader]) -> serde_json::Value {
    serde_json::json!(rows)
}

/// Left-aligned columns, each as wide as its widest cell plus [`COLUMN_GAP`]; lines carry no
/// trailing spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            s.push_str(cell);
            if i < last {
                let pad = w - cell.chars().count() + COLUMN_GAP;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        // Empty trailing cells (an empty ISR) would leave spaces at the end of the line.
        let mut s = s.trim_end().to_string();
        s.push('\n');
        s
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
