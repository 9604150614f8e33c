//! meta::image: the cluster's metadata as every node knows it after applying the committed log.
//!
//! [`MetadataImage`] is immutable once published: the state machine applies a batch of entries
//! to its own copy, then swaps an `Arc` of the result into a `watch` channel that the data path
//! and the local applier read (`meta::ImageCell`). Applying is deterministic: every node applies
//! the same commands to the same image and reaches the same result, placement included.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::command::{BrokerRegistration, MetadataCommand, MetadataResponse, Refusal, codes};

mod elect;
mod legacy;

pub use elect::{Change, Reason};
pub use legacy::decode_image;

/// No leader (Kafka's -1): every replica in the ISR is fenced.
pub const NO_LEADER: i32 = -1;

/// Most replicas one partition may have (every node enforces it when applying). A Pi cluster
/// has a handful of nodes; the data path keeps replica sets in fixed-capacity arrays this size
/// (`replica::REPLICAS_MAX`).
pub const REPLICAS_MAX: usize = 8;

/// Most partitions one topic may have, cluster-wide. Each node also holds its own share under
/// its `partitions_max` (checked before a proposal); this bound is what every node enforces when
/// applying, so no command in the log can make a node open, or allocate for, millions.
pub const TOPIC_PARTITIONS_MAX: i32 = 100_000;

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub registration: BrokerRegistration,
    /// Fenced brokers lead nothing and are not listed in Metadata.
    pub fenced: bool,
    /// The log index of the registration (Kafka's broker epoch).
    pub epoch: u64,
}

impl BrokerInfo {
    pub fn node_id(&self) -> i32 {
        self.registration.node_id
    }
    pub fn rack(&self) -> Option<&str> {
        self.registration.rack.as_deref()
    }
}

/// One partition's placement and leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    /// The first replica is the preferred leader.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    /// Bumped on every leader change (Kafka's leader epoch).
    pub leader_epoch: i32,
    /// Bumped on every change of this partition (Kafka's partition epoch).
    pub partition_epoch: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionImage>,
}

impl TopicImage {
    pub fn replication_factor(&self) -> i16 {
        self.partitions
            .first()
            .map(|p| p.replicas.len() as i16)
            .unwrap_or(0)
    }
}

/// What the state machine holds: the whole cluster's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Fixed by the quorum's first command; `None` until then.
    pub cluster_id: Option<String>,
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, TopicImage>,
    /// Dynamic broker configs: per node, and the cluster default under [`CLUSTER_DEFAULT`].
    pub broker_configs: BTreeMap<i32, BTreeMap<String, String>>,
    /// The first producer id not yet handed to any node.
    pub next_producer_id: i64,
    /// Log index of the last command applied to this image.
    pub applied_index: u64,
    /// Ids of every topic the cluster deleted (16 bytes each): a node that was down meanwhile
    /// removes their directories, and only theirs; a retried DeleteTopic answers Done.
    pub deleted_topics: BTreeSet<Uuid>,
    /// Brokers in controlled shutdown (`ControlledShutdown`): never elected, never added to an
    /// ISR, left out of placement. Their next registration (a new incarnation) clears the mark.
    /// Added in issue 11: images written before it decode through [`decode_image`].
    #[serde(default)]
    pub shutting_down: BTreeSet<i32>,
}

/// The key of the cluster-wide default in [`MetadataImage::broker_configs`].
pub const CLUSTER_DEFAULT: i32 = -1;

fn refuse(code: i16, message: impl Into<String>) -> MetadataResponse {
    MetadataResponse::Refused(Refusal {
        code,
        message: message.into(),
    })
}

impl MetadataImage {
    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicImage> {
        self.topics.values().find(|t| t.id == id)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionImage> {
        let p = usize::try_from(partition).ok()?;
        self.topics.get(topic)?.partitions.get(p)
    }

    /// Registered, unfenced brokers, by id.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    pub fn is_live(&self, node_id: i32) -> bool {
        self.brokers.get(&node_id).is_some_and(|b| !b.fenced)
    }

    /// Whether `node_id` may lead or join an ISR: live and not in controlled shutdown.
    pub fn is_eligible(&self, node_id: i32) -> bool {
        self.is_live(node_id) && !self.shutting_down.contains(&node_id)
    }

    /// Ids of every eligible broker ([`MetadataImage::is_eligible`]).
    fn eligible_ids(&self) -> BTreeSet<i32> {
        self.live_brokers()
            .map(|b| b.node_id())
            .filter(|id| !self.shutting_down.contains(id))
            .collect()
    }

    /// Applies one committed command at log `index`. A refused command leaves the image as it
    /// was (apart from `applied_index`).
    pub fn apply(&mut self, index: u64, cmd: &MetadataCommand) -> MetadataResponse {
        self.apply_traced(index, cmd, &mut Vec::new())
    }

    /// [`MetadataImage::apply`], pushing every election and ISR change it makes onto `trace`
    /// (the controller logs them: [`Change::log`]).
    pub fn apply_traced(
        &mut self,
        index: u64,
        cmd: &MetadataCommand,
        trace: &mut Vec<Change>,
    ) -> MetadataResponse {
        self.applied_index = index;
        match cmd {
            MetadataCommand::InitCluster {
                cluster_id,
                node_id,
                topics,
                next_producer_id,
            } => {
                if self.cluster_id.is_some() {
                    return MetadataResponse::Done;
                }
                self.cluster_id = Some(cluster_id.clone());
                self.next_producer_id = self.next_producer_id.max(*next_producer_id);
                for t in topics {
                    let partitions = (0..t.partitions.max(0))
                        .map(|_| PartitionImage {
                            replicas: vec![*node_id],
                            isr: vec![*node_id],
                            leader: *node_id,
                            leader_epoch: 0,
                            partition_epoch: 0,
                        })
                        .collect();
                    self.topics.insert(
                        t.name.clone(),
                        TopicImage {
                            name: t.name.clone(),
                            id: t.id,
                            configs: t.configs.clone(),
                            partitions,
                        },
                    );
                }
                MetadataResponse::Done
            }
            MetadataCommand::RegisterBroker(reg) => self.register(index, reg, trace),
            MetadataCommand::UnregisterBroker { node_id } => {
                self.fence(*node_id, trace);
                self.shutting_down.remove(node_id);
                self.brokers.remove(node_id);
                MetadataResponse::Done
            }
            MetadataCommand::FenceBroker {
                node_id,
                incarnation,
            } => match self.brokers.get(node_id) {
                Some(b) if b.registration.incarnation == *incarnation => {
                    self.fence(*node_id, trace);
                    MetadataResponse::Done
                }
                _ => refuse(codes::STALE_BROKER_EPOCH, "stale incarnation"),
            },
            MetadataCommand::UnfenceBroker {
                node_id,
                incarnation,
            } => match self.brokers.get(node_id) {
                Some(b) if b.registration.incarnation == *incarnation => {
                    self.unfence(*node_id, trace);
                    MetadataResponse::Done
                }
                _ => refuse(codes::STALE_BROKER_EPOCH, "stale incarnation"),
            },
            MetadataCommand::CreateTopic {
                name,
                id,
                partitions,
                replication_factor,
                configs,
                assignment,
            } => self.create_topic(
                name,
                *id,
                *partitions,
                *replication_factor,
                configs,
                assignment.as_deref(),
            ),
            MetadataCommand::DeleteTopic { name, id } => {
                match (self.topics.get(name).map(|t| t.id), id) {
                    (Some(found), Some(wanted)) if found != *wanted => refuse(
                        codes::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("topic {name} is another topic now (id {found})"),
                    ),
                    (Some(found), _) => {
                        self.topics.remove(name);
                        self.deleted_topics.insert(found);
                        MetadataResponse::Done
                    }
                    (None, Some(wanted)) if self.deleted_topics.contains(wanted) => {
                        MetadataResponse::Done
                    }
                    (None, _) => refuse(
                        codes::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("unknown topic {name}"),
                    ),
                }
            }
            MetadataCommand::CreatePartitions {
                name,
                count,
                assignment,
            } => self.create_partitions(name, *count, assignment.as_deref()),
            MetadataCommand::AlterPartition {
                topic_id,
                partition,
                partition_epoch,
                leader,
                replicas,
                isr,
            } => {
                let eligible = self.eligible_ids();
                let Some(t) = self.topics.values_mut().find(|t| t.id == *topic_id) else {
                    return refuse(codes::UNKNOWN_TOPIC_OR_PARTITION, "unknown topic id");
                };
                let Some(p) = usize::try_from(*partition)
                    .ok()
                    .and_then(|i| t.partitions.get_mut(i))
                else {
                    return refuse(codes::UNKNOWN_TOPIC_OR_PARTITION, "unknown partition");
                };
                if p.partition_epoch != *partition_epoch {
                    return refuse(
                        codes::INVALID_UPDATE_VERSION,
                        format!(
                            "partition epoch {partition_epoch} is not the current {}",
                            p.partition_epoch
                        ),
                    );
                }
                // KIP-841: a fenced or shutting-down broker never joins an ISR (a broker in
                // controlled shutdown left them; its leader must not take it back).
                if let Some(r) = isr
                    .iter()
                    .find(|r| !p.isr.contains(r) && !eligible.contains(r))
                {
                    return refuse(
                        codes::INELIGIBLE_REPLICA,
                        format!("broker {r} is fenced or shutting down: it cannot join the ISR"),
                    );
                }
                let before = p.clone();
                if p.leader != *leader {
                    p.leader_epoch += 1;
                }
                p.leader = *leader;
                p.replicas = replicas.clone();
                p.isr = isr.clone();
                p.partition_epoch += 1;
                elect::record(trace, &t.name, *partition, Reason::Altered, &before, p);
                MetadataResponse::Done
            }
            MetadataCommand::SetTopicConfigs { name, configs } => match self.topics.get_mut(name) {
                Some(t) => {
                    t.configs = configs.clone();
                    MetadataResponse::Done
                }
                None => refuse(
                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("unknown topic {name}"),
                ),
            },
            MetadataCommand::SetBrokerConfigs { node_id, configs } => {
                let key = node_id.unwrap_or(CLUSTER_DEFAULT);
                if configs.is_empty() {
                    self.broker_configs.remove(&key);
                } else {
                    self.broker_configs.insert(key, configs.clone());
                }
                MetadataResponse::Done
            }
            MetadataCommand::AllocateProducerIds { node_id: _, count } => {
                if *count <= 0 || self.next_producer_id.checked_add(*count).is_none() {
                    return refuse(codes::INVALID_REQUEST, "producer ids exhausted");
                }
                let first = self.next_producer_id;
                self.next_producer_id += count;
                MetadataResponse::ProducerIds {
                    first,
                    count: *count,
                }
            }
            MetadataCommand::ControlledShutdown {
                node_id,
                incarnation,
            } => self.controlled_shutdown(*node_id, *incarnation, trace),
            MetadataCommand::ElectLeaders {
                election,
                partitions,
            } => self.elect_leaders(*election, partitions.as_deref(), trace),
        }
    }

    fn register(
        &mut self,
        index: u64,
        reg: &BrokerRegistration,
        trace: &mut Vec<Change>,
    ) -> MetadataResponse {
        let known = self.brokers.get(&reg.node_id);
        let returning = known.is_some_and(|b| b.fenced);
        if known.is_none_or(|b| b.registration.incarnation != reg.incarnation) {
            // A restart: the stop it announced is over. (The same incarnation registering again
            // is a broker that found a new controller not knowing it, still stopping.)
            self.shutting_down.remove(&reg.node_id);
        }
        self.brokers.insert(
            reg.node_id,
            BrokerInfo {
                registration: reg.clone(),
                fenced: false,
                epoch: index,
            },
        );
        if returning {
            self.unfence(reg.node_id, trace);
        } else {
            // A restart never fenced (it came back within the session timeout): partitions left
            // leaderless by an earlier fence may still wait for it.
            self.elect_waiting(reg.node_id, trace);
        }
        MetadataResponse::Done
    }

    /// Fences `node_id`: each partition it leads moves to another eligible ISR member, or is
    /// left with no leader (its ISR kept, so the broker leads again when it returns); it leaves
    /// every ISR that has other members.
    fn fence(&mut self, node_id: i32, trace: &mut Vec<Change>) {
        if let Some(b) = self.brokers.get_mut(&node_id) {
            b.fenced = true;
        }
        self.move_away(node_id, Reason::Fenced, true, trace);
    }

    fn unfence(&mut self, node_id: i32, trace: &mut Vec<Change>) {
        if let Some(b) = self.brokers.get_mut(&node_id) {
            b.fenced = false;
        }
        self.elect_waiting(node_id, trace);
    }

    /// Partitions with no leader whose ISR holds `node_id` get it as leader (if it is eligible).
    fn elect_waiting(&mut self, node_id: i32, trace: &mut Vec<Change>) {
        if !self.is_eligible(node_id) {
            return;
        }
        for t in self.topics.values_mut() {
            for (i, p) in t.partitions.iter_mut().enumerate() {
                if p.leader == NO_LEADER && p.isr.contains(&node_id) {
                    let before = p.clone();
                    p.leader = node_id;
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                    elect::record(trace, &t.name, i as i32, Reason::Returned, &before, p);
                }
            }
        }
    }

    fn create_topic(
        &mut self,
        name: &str,
        id: Uuid,
        partitions: i32,
        rf: i16,
        configs: &BTreeMap<String, String>,
        assignment: Option<&[Vec<i32>]>,
    ) -> MetadataResponse {
        if let Some(t) = self.topics.get(name) {
            if t.id == id {
                // A retry of this very creation (the first try committed): the same answer.
                return MetadataResponse::TopicCreated { id };
            }
            return refuse(
                codes::TOPIC_ALREADY_EXISTS,
                format!("topic {name} already exists"),
            );
        }
        if self.topic_by_id(id).is_some() || self.deleted_topics.contains(&id) {
            // A retry that lands after its topic was deleted must not bring the id back: a
            // node that was down would take the deleted topic's directories for the new one's.
            return refuse(
                codes::INVALID_REQUEST,
                format!("topic id {id} is in use or deleted"),
            );
        }
        if !(1..=TOPIC_PARTITIONS_MAX).contains(&partitions) {
            return refuse(
                codes::INVALID_PARTITIONS,
                format!("{partitions}: must be 1..={TOPIC_PARTITIONS_MAX}"),
            );
        }
        let placed = match assignment {
            Some(a) => match self.check_assignment(a, partitions, None) {
                Ok(()) => a.to_vec(),
                Err(r) => return r,
            },
            None => match self.place(partitions, rf) {
                Ok(placed) => placed,
                Err(r) => return r,
            },
        };
        let partitions = placed
            .into_iter()
            .map(|replicas| self.new_partition(replicas))
            .collect();
        self.topics.insert(
            name.to_string(),
            TopicImage {
                name: name.to_string(),
                id,
                configs: configs.clone(),
                partitions,
            },
        );
        MetadataResponse::TopicCreated { id }
    }

    fn create_partitions(
        &mut self,
        name: &str,
        count: i32,
        assignment: Option<&[Vec<i32>]>,
    ) -> MetadataResponse {
        let Some(t) = self.topics.get(name) else {
            return refuse(
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                format!("unknown topic {name}"),
            );
        };
        let current = t.partitions.len() as i32;
        if count <= current {
            return refuse(
                codes::INVALID_PARTITIONS,
                format!("topic has {current} partitions; asked for {count}"),
            );
        }
        if count > TOPIC_PARTITIONS_MAX {
            return refuse(
                codes::INVALID_PARTITIONS,
                format!("{count}: a topic has at most {TOPIC_PARTITIONS_MAX} partitions"),
            );
        }
        let rf = t.replication_factor();
        let adding = count - current;
        let placed = match assignment {
            Some(a) => match self.check_assignment(a, adding, Some(rf)) {
                Ok(()) => a.to_vec(),
                Err(r) => return r,
            },
            None => match self.place(adding, rf) {
                Ok(placed) => placed,
                Err(r) => return r,
            },
        };
        let new: Vec<PartitionImage> = placed
            .into_iter()
            .map(|replicas| self.new_partition(replicas))
            .collect();
        if let Some(t) = self.topics.get_mut(name) {
            t.partitions.extend(new);
        }
        MetadataResponse::Done
    }

    /// A new, empty partition: every eligible replica (live, not shutting down) is in sync, as
    /// Kafka puts every unfenced replica in the ISR of a new partition (there is nothing to
    /// copy), and the first of them leads. With none eligible (a manual assignment naming only
    /// fenced brokers) it waits, leaderless, for its first replica.
    fn new_partition(&self, replicas: Vec<i32>) -> PartitionImage {
        let isr: Vec<i32> = replicas
            .iter()
            .copied()
            .filter(|r| self.is_eligible(*r))
            .collect();
        let (leader, isr) = match isr.first() {
            Some(&leader) => (leader, isr),
            None => (
                NO_LEADER,
                vec![replicas.first().copied().unwrap_or(NO_LEADER)],
            ),
        };
        PartitionImage {
            isr,
            replicas,
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    /// Kafka's checks of a manual assignment: one list per partition, each `rf` long (when the
    /// topic has one), naming registered brokers once each.
    fn check_assignment(
        &self,
        assignment: &[Vec<i32>],
        partitions: i32,
        rf: Option<i16>,
    ) -> Result<(), MetadataResponse> {
        let bad = |m: String| Err(refuse(codes::INVALID_REPLICA_ASSIGNMENT, m));
        if assignment.len() != partitions.max(0) as usize {
            return bad(format!(
                "attempted to add {partitions} partition(s), but {} assignment(s) were specified",
                assignment.len()
            ));
        }
        let rf = rf.unwrap_or_else(|| assignment.first().map_or(0, |r| r.len() as i16));
        for replicas in assignment {
            if replicas.len() > REPLICAS_MAX {
                return bad(format!(
                    "a partition may have at most {REPLICAS_MAX} replicas, not {}",
                    replicas.len()
                ));
            }
            if replicas.is_empty() {
                return bad(
                    "the manual partition assignment includes an empty replica list".into(),
                );
            }
            if replicas.len() != rf.max(0) as usize {
                return bad(format!(
                    "the manual partition assignment includes a partition with {} replica(s), but the topic's partitions have {rf}",
                    replicas.len()
                ));
            }
            for (i, broker) in replicas.iter().enumerate() {
                if replicas[..i].contains(broker) {
                    return bad(format!(
                        "the manual partition assignment includes broker {broker} more than once"
                    ));
                }
                if !self.brokers.contains_key(broker) {
                    return bad(format!(
                        "the manual partition assignment includes broker {broker}, but no such broker is registered"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Places `count` new partitions of `rf` replicas on the live brokers: each leader is the
    /// broker leading the fewest partitions so far (ties to the next in rack-interleaved order),
    /// and the other replicas follow it in that order, on racks not yet used by the partition
    /// while any remain. Deterministic: it reads only the image.
    pub fn place(&self, count: i32, rf: i16) -> Result<Vec<Vec<i32>>, MetadataResponse> {
        let order = self.rack_interleaved();
        let live = order.len();
        if rf as usize > REPLICAS_MAX {
            return Err(refuse(
                codes::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {rf} is larger than the most a partition may have, {REPLICAS_MAX}"
                ),
            ));
        }
        if rf < 1 || rf as usize > live {
            return Err(refuse(
                codes::INVALID_REPLICATION_FACTOR,
                format!("replication factor {rf} is larger than the {live} available broker(s)"),
            ));
        }
        let mut leading: BTreeMap<i32, usize> = order.iter().map(|b| (b.0, 0)).collect();
        for t in self.topics.values() {
            for p in &t.partitions {
                if let Some(n) = leading.get_mut(&p.replicas.first().copied().unwrap_or(NO_LEADER))
                {
                    *n += 1;
                }
            }
        }
        let mut placed = Vec::new();
        let mut cursor = 0usize;
        for _ in 0..count.max(0) {
            // The least-loaded leader, scanning from the cursor so ties rotate.
            let mut best = cursor % live;
            for step in 0..live {
                let i = (cursor + step) % live;
                if leading[&order[i].0] < leading[&order[best].0] {
                    best = i;
                }
            }
            let mut replicas = vec![order[best].0];
            let mut racks: BTreeSet<Option<&str>> = BTreeSet::new();
            racks.insert(order[best].1);
            // First pass: unused racks only; second pass: anything not yet chosen.
            for strict in [true, false] {
                for step in 1..live {
                    if replicas.len() == rf as usize {
                        break;
                    }
                    let (id, rack) = order[(best + step) % live];
                    if replicas.contains(&id) || (strict && rack.is_some() && racks.contains(&rack))
                    {
                        continue;
                    }
                    replicas.push(id);
                    racks.insert(rack);
                }
            }
            if let Some(n) = leading.get_mut(&order[best].0) {
                *n += 1;
            }
            cursor = best + 1;
            placed.push(replicas);
        }
        Ok(placed)
    }

    /// Eligible brokers (live, not shutting down: Kafka's usable brokers) ordered so racks
    /// alternate (Kafka's rack-alternated list): the first broker of each rack, then the second
    /// of each, …; brokers without a rack form one group.
    fn rack_interleaved(&self) -> Vec<(i32, Option<&str>)> {
        let mut by_rack: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
        for b in self
            .live_brokers()
            .filter(|b| !self.shutting_down.contains(&b.node_id()))
        {
            by_rack.entry(b.rack()).or_default().push(b.node_id());
        }
        let mut order = Vec::new();
        let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
        for depth in 0..deepest {
            for (rack, ids) in &by_rack {
                if let Some(id) = ids.get(depth) {
                    order.push((*id, *rack));
                }
            }
        }
        order
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_elect;
