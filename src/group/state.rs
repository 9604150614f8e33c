//! group::state: one consumer group in memory — its members, generation, selected protocol and
//! committed offsets — and the classic protocol's state names. Pure data plus small queries; the
//! transitions (join, sync, heartbeat, leave, expiry) are in `group::membership`. Times are
//! `tokio::time::Instant`, so tests drive the timeouts with tokio's paused clock.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::records::{GroupValue, MemberValue, OffsetValue};

/// The classic protocol's group states (Kafka's names, as DescribeGroups and ListGroups show them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members; may still hold committed offsets.
    Empty,
    /// Waiting for every known member to (re)join, bounded by the rebalance timeout.
    PreparingRebalance,
    /// Joined; waiting for the leader's SyncGroup with the assignment.
    CompletingRebalance,
    Stable,
    /// Deleted; the entry goes once the caller drops it.
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What a waiting JoinGroup is answered with.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinAnswer {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, group instance id, metadata for the selected protocol): the leader's only.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// JoinGroup v9+ (KIP-814): the leader must not compute an assignment (a restarted static
    /// leader of a Stable group), only watch metadata and sync for its stored one.
    pub skip_assignment: bool,
}

pub type JoinResult = Result<JoinAnswer, ResponseError>;
/// A SyncGroup's answer: the protocol type and name, and the member's assignment.
pub type SyncResult = Result<(String, Option<String>, Bytes), ResponseError>;

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// (protocol name, metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// The member is removed if no heartbeat, join or sync arrives before this.
    pub deadline: Instant,
    pub join_waiter: Option<oneshot::Sender<JoinResult>>,
    pub sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    pub fn answer_join(&mut self, result: JoinResult) {
        if let Some(w) = self.join_waiter.take() {
            let _ = w.send(result);
        }
    }

    pub fn answer_sync(&mut self, result: SyncResult) {
        if let Some(w) = self.sync_waiter.take() {
            let _ = w.send(result);
        }
    }
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// Members by id; `join_order` keeps who came first (the next leader if the leader leaves).
    pub members: BTreeMap<String, Member>,
    pub join_order: Vec<String>,
    /// group.instance.id → member id of the static member holding it.
    pub static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, awaiting their second JoinGroup; each
    /// expires after its session timeout.
    pub pending_members: BTreeMap<String, Instant>,
    /// A rebalance ends here even if some members have not rejoined (they are removed).
    pub rebalance_deadline: Option<Instant>,
    /// The first rebalance of an empty group waits until here for more members (Kafka's
    /// group.initial.rebalance.delay.ms), so a fleet starting together rebalances once.
    pub join_not_before: Option<Instant>,
    /// Committed offsets by (topic, partition).
    pub offsets: BTreeMap<(String, i32), OffsetValue>,
    /// Membership changed in a way the metadata record should show (a generation completed, the
    /// group emptied); the coordinator writes the record and clears this.
    pub dirty: bool,
}

impl Group {
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            join_order: Vec::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            rebalance_deadline: None,
            join_not_before: None,
            offsets: BTreeMap::new(),
            dirty: false,
        }
    }

    /// Protocols every member supports, in the order of `first`'s preference.
    pub fn common_protocols(&self) -> Vec<String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else {
            return Vec::new();
        };
        let mut common: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in members {
            common.retain(|p| m.protocols.iter().any(|(n, _)| n == p));
        }
        common
    }

    /// Whether a member offering `protocols` of `protocol_type` can join this group.
    pub fn accepts(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocols.is_empty() || protocol_type.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && self
                .common_protocols()
                .iter()
                .any(|p| protocols.iter().any(|(n, _)| n == p))
    }

    /// Kafka's vote: each member votes for its most preferred protocol among the common ones; the
    /// protocol with most votes wins (ties: the first member's preference).
    pub fn select_protocol(&self) -> Option<String> {
        let common = self.common_protocols();
        let mut votes: Vec<(String, usize)> = common.iter().map(|p| (p.clone(), 0)).collect();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| common.contains(n))
                && let Some(v) = votes.iter_mut().find(|(p, _)| p == name)
            {
                v.1 += 1;
            }
        }
        let best = votes.iter().map(|(_, n)| *n).max()?;
        votes.into_iter().find(|(_, n)| *n == best).map(|(p, _)| p)
    }

    /// The longest rebalance timeout of the members (how long a rebalance may wait for them).
    pub fn rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    /// Topics the members subscribe to, from the consumer protocol's subscription metadata; None
    /// if some subscription cannot be read (callers then assume every topic is in use).
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        let protocol = self.protocol.as_deref()?;
        let mut topics = Vec::new();
        for m in self.members.values() {
            topics.extend(consumer_subscription_topics(&m.metadata_for(protocol))?);
        }
        Some(topics)
    }

    /// The metadata record of this group as it stands.
    pub fn to_value(&self) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Restores a group from its metadata record (on start). Members come back Stable with a fresh
    /// session timeout: they keep their assignment if they heartbeat in time, else they expire.
    pub fn restore(&mut self, v: GroupValue, now: Instant) {
        self.generation = v.generation;
        self.protocol_type = Some(v.protocol_type).filter(|t| !t.is_empty());
        self.protocol = v.protocol;
        self.leader = v.leader;
        self.members.clear();
        self.join_order.clear();
        self.static_members.clear();
        let protocol = self.protocol.clone().unwrap_or_default();
        for m in v.members {
            let session_timeout = Duration::from_millis(m.session_timeout_ms.max(0) as u64);
            if let Some(i) = &m.group_instance_id {
                self.static_members.insert(i.clone(), m.member_id.clone());
            }
            self.join_order.push(m.member_id.clone());
            let member = Member {
                id: m.member_id.clone(),
                instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout,
                rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                protocols: vec![(protocol.clone(), m.subscription)],
                assignment: m.assignment,
                deadline: now + session_timeout,
                join_waiter: None,
                sync_waiter: None,
            };
            self.members.insert(m.member_id, member);
        }
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
    }
}

/// Topics of a consumer protocol subscription (ConsumerProtocolSubscription, any version: they all
/// start with an i16 version and an array of i16-length topic names).
pub fn consumer_subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut p = metadata.get(2..)?;
    let take = |p: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        let (head, rest) = (p.get(..n)?, p.get(n..)?);
        *p = rest;
        Some(head.to_vec())
    };
    let count = i32::from_be_bytes(take(&mut p, 4)?.try_into().ok()?);
    // Each name takes at least 2 bytes: a larger count is a lie.
    if count < 0 || count as usize > p.len() / 2 {
        return None;
    }
    let mut topics = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = i16::from_be_bytes(take(&mut p, 2)?.try_into().ok()?);
        let name = take(&mut p, usize::try_from(len).ok()?)?;
        topics.push(String::from_utf8(name).ok()?);
    }
    Some(topics)
}
