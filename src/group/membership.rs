//! group::membership: the classic protocol's transitions on one [`Group`] — JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup and the timer (`tick`) that expires silent members and ends rebalances.
//! Synchronous and clock-explicit (`now`); the coordinator calls these under its lock and awaits
//! the returned receivers outside it.
//!
//! Generation state machine (Kafka's):
//! Empty → PreparingRebalance (first join) → CompletingRebalance (every member rejoined, or the
//! rebalance timeout passed: stragglers removed; generation + 1, leader gets the member list) →
//! Stable (leader's SyncGroup brings the assignment) → PreparingRebalance (a member joins, leaves,
//! changes its protocols or misses its session timeout) … → Empty (last member gone) → Dead
//! (deleted).

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::state::{Group, GroupState, JoinAnswer, JoinResult, Member, SyncResult};

/// Bounds and delays of the membership protocol (node settings).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub members_per_group_max: usize,
    pub session_timeout_min: Duration,
    pub session_timeout_max: Duration,
    pub initial_rebalance_delay: Duration,
}

/// A JoinGroup as the state machine sees it.
#[derive(Debug, Clone)]
pub struct Join {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a member without an id gets one with MEMBER_ID_REQUIRED and joins again.
    pub require_known_member_id: bool,
    /// JoinGroup v9+: the client understands `skip_assignment` (KIP-814).
    pub supports_skip_assignment: bool,
}

/// Either the answer now, or a receiver for it once the rebalance completes.
pub enum Step<T> {
    Now(T),
    Wait(oneshot::Receiver<T>),
}

/// MEMBER_ID_REQUIRED carries the new member id, so it is a value and not just an error.
pub enum JoinOutcome {
    Step(Step<JoinResult>),
    MemberIdRequired(String),
}

impl Group {
    pub fn join(&mut self, j: Join, limits: &Limits, now: Instant) -> JoinOutcome {
        let fail = |e| JoinOutcome::Step(Step::Now(Err(e)));
        if j.session_timeout < limits.session_timeout_min
            || j.session_timeout > limits.session_timeout_max
        {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        if self.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if !self.accepts(&j.protocol_type, &j.protocols) {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        if j.member_id.is_empty() {
            return self.join_new(j, limits, now);
        }
        if let Some(instance) = &j.instance_id
            && self
                .static_members
                .get(instance)
                .is_some_and(|id| *id != j.member_id)
        {
            return fail(ResponseError::FencedInstanceId);
        }
        if self.pending_members.remove(&j.member_id).is_some() {
            return JoinOutcome::Step(self.add_member(j.member_id.clone(), j, limits, now));
        }
        if !self.members.contains_key(&j.member_id) {
            return fail(ResponseError::UnknownMemberId);
        }
        JoinOutcome::Step(self.rejoin(j, limits, now))
    }

    /// A JoinGroup without a member id: a new member, or a static member coming back.
    fn join_new(&mut self, j: Join, limits: &Limits, now: Instant) -> JoinOutcome {
        if let Some(instance) = j.instance_id.clone()
            && let Some(old) = self.static_members.get(&instance).cloned()
        {
            return JoinOutcome::Step(self.replace_static(old, j, limits, now));
        }
        if self.members.len() + self.pending_members.len() >= limits.members_per_group_max {
            return JoinOutcome::Step(Step::Now(Err(ResponseError::GroupMaxSizeReached)));
        }
        let prefix = j.instance_id.as_deref().unwrap_or(&j.client_id);
        let id = format!("{prefix}-{}", uuid::Uuid::new_v4());
        if j.require_known_member_id && j.instance_id.is_none() {
            self.pending_members
                .insert(id.clone(), now + j.session_timeout);
            return JoinOutcome::MemberIdRequired(id);
        }
        JoinOutcome::Step(self.add_member(id, j, limits, now))
    }

    fn add_member(
        &mut self,
        id: String,
        j: Join,
        limits: &Limits,
        now: Instant,
    ) -> Step<JoinResult> {
        if self.members.len() >= limits.members_per_group_max {
            return Step::Now(Err(ResponseError::GroupMaxSizeReached));
        }
        if let Some(instance) = &j.instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        let (tx, rx) = oneshot::channel();
        self.protocol_type = Some(j.protocol_type.clone());
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                instance_id: j.instance_id,
                client_id: j.client_id,
                client_host: j.client_host,
                session_timeout: j.session_timeout,
                rebalance_timeout: j.rebalance_timeout,
                protocols: j.protocols,
                assignment: Bytes::new(),
                deadline: now + j.session_timeout,
                join_waiter: Some(tx),
                sync_waiter: None,
            },
        );
        self.join_order.push(id);
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(limits, now);
        }
        self.try_complete_join(now);
        Step::Wait(rx)
    }

    /// A known member joins again (after a rebalance started, or to change its subscription).
    fn rejoin(&mut self, j: Join, limits: &Limits, now: Instant) -> Step<JoinResult> {
        let is_leader = self.leader.as_deref() == Some(j.member_id.as_str());
        let Some(m) = self.members.get_mut(&j.member_id) else {
            return Step::Now(Err(ResponseError::UnknownMemberId));
        };
        let unchanged = m.protocols == j.protocols;
        m.protocols = j.protocols;
        m.session_timeout = j.session_timeout;
        m.rebalance_timeout = j.rebalance_timeout;
        m.deadline = now + j.session_timeout;
        let quiet = match self.state {
            GroupState::CompletingRebalance => unchanged,
            GroupState::Stable => unchanged && !is_leader,
            _ => false,
        };
        if quiet {
            // Nothing changed: answer with the current generation (Kafka does the same).
            return Step::Now(Ok(self.join_answer(&j.member_id)));
        }
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(&j.member_id) {
            m.answer_join(Err(ResponseError::UnknownMemberId));
            m.join_waiter = Some(tx);
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(limits, now);
        }
        self.try_complete_join(now);
        Step::Wait(rx)
    }

    /// A static member restarted (JoinGroup without a member id, known `group.instance.id`): it
    /// takes a new member id, the old id is fenced, and it keeps its assignment. Kafka's
    /// `updateStaticMemberAndRebalance`: in a Stable group whose selected protocol stays the same
    /// nothing rebalances, leader or not. A restarted leader must not re-assign (a Stable group
    /// would not pass a new assignment on), yet must know it leads, since only the leader watches
    /// metadata for partition growth: from JoinGroup v9 (KIP-814) it is answered as the leader
    /// with the members and `skip_assignment`; before v9 the answer names the *old* leader id and
    /// no members, so it does not take itself for the leader. Either way it then syncs and gets
    /// its stored assignment. While the
    /// leader is assigning (CompletingRebalance) the old id may be in the plan, so the group
    /// rebalances; during PreparingRebalance the member simply joins the pending generation.
    fn replace_static(
        &mut self,
        old: String,
        j: Join,
        limits: &Limits,
        now: Instant,
    ) -> Step<JoinResult> {
        let Some(mut m) = self.members.remove(&old) else {
            return Step::Now(Err(ResponseError::UnknownMemberId));
        };
        m.answer_join(Err(ResponseError::FencedInstanceId));
        m.answer_sync(Err(ResponseError::FencedInstanceId));
        let prefix = j.instance_id.as_deref().unwrap_or(&j.client_id);
        let id = format!("{prefix}-{}", uuid::Uuid::new_v4());
        let current_leader = self.leader.clone();
        m.id = id.clone();
        m.client_id = j.client_id.clone();
        m.client_host = j.client_host.clone();
        m.protocols = j.protocols.clone();
        m.session_timeout = j.session_timeout;
        m.rebalance_timeout = j.rebalance_timeout;
        m.deadline = now + j.session_timeout;
        self.members.insert(id.clone(), m);
        for o in &mut self.join_order {
            if *o == old {
                *o = id.clone();
            }
        }
        if let Some(instance) = &j.instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        if current_leader.as_deref() == Some(old.as_str()) {
            self.leader = Some(id.clone());
        }
        self.dirty = true;
        match self.state {
            GroupState::Stable if self.select_protocol() == self.protocol => {
                tracing::info!(group = %self.id, old, new = %id, "static member rejoined without a rebalance");
                let answer = self.join_answer(&id);
                let leads = answer.leader == id;
                if leads && j.supports_skip_assignment {
                    return Step::Now(Ok(JoinAnswer {
                        skip_assignment: true,
                        ..answer
                    }));
                }
                Step::Now(Ok(JoinAnswer {
                    leader: current_leader.unwrap_or_default(),
                    members: Vec::new(),
                    ..answer
                }))
            }
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(limits, now);
                self.rejoin(Join { member_id: id, ..j }, limits, now)
            }
            _ => self.rejoin(Join { member_id: id, ..j }, limits, now),
        }
    }

    /// The join answer of the current generation for `member_id` (members listed for the leader).
    fn join_answer(&self, member_id: &str) -> JoinAnswer {
        let protocol = self.protocol.clone();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            let p = protocol.clone().unwrap_or_default();
            self.join_order
                .iter()
                .filter_map(|id| self.members.get(id))
                .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata_for(&p)))
                .collect()
        } else {
            Vec::new()
        };
        JoinAnswer {
            generation: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol,
            leader,
            member_id: member_id.to_string(),
            members,
            skip_assignment: false,
        }
    }

    fn prepare_rebalance(&mut self, limits: &Limits, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                m.answer_sync(Err(ResponseError::RebalanceInProgress));
            }
        }
        let deadline = now + self.rebalance_timeout();
        self.join_not_before = (self.state == GroupState::Empty)
            .then(|| (now + limits.initial_rebalance_delay).min(deadline));
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(deadline);
        tracing::debug!(group = %self.id, generation = self.generation, "preparing rebalance");
    }

    /// Ends the join phase once every member has rejoined (and the initial delay is over), or the
    /// rebalance timeout has passed; members that did not rejoin are removed.
    pub(super) fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.pending_members.is_empty()
            && self.members.values().all(|m| m.join_waiter.is_some());
        let delay_over = self.join_not_before.is_none_or(|t| now >= t);
        let timed_out = self.rebalance_deadline.is_some_and(|t| now >= t);
        let ready = timed_out || (all_joined && delay_over);
        if !ready {
            return;
        }
        let stragglers: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in stragglers {
            tracing::info!(group = %self.id, member = %id, "member did not rejoin in time; removed");
            self.drop_member(&id);
        }
        self.pending_members.clear();
        self.generation += 1;
        self.rebalance_deadline = None;
        self.join_not_before = None;
        self.dirty = true;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.join_order.first().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        tracing::info!(group = %self.id, generation = self.generation, members = self.members.len(), protocol = ?self.protocol, "rebalance: members joined");
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let answer = self.join_answer(&id);
            if let Some(m) = self.members.get_mut(&id) {
                m.deadline = now + m.session_timeout;
                m.answer_join(Ok(answer));
            }
        }
    }

    /// Removes a member from every index, answering its waiting requests.
    fn drop_member(&mut self, id: &str) {
        if let Some(mut m) = self.members.remove(id) {
            m.answer_join(Err(ResponseError::UnknownMemberId));
            m.answer_sync(Err(ResponseError::UnknownMemberId));
            if let Some(i) = &m.instance_id
                && self.static_members.get(i).is_some_and(|cur| cur == id)
            {
                self.static_members.remove(i);
            }
        }
        self.join_order.retain(|o| o != id);
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    /// A member leaves (LeaveGroup, or its session expired): the others rebalance.
    pub fn remove_member(&mut self, id: &str, limits: &Limits, now: Instant) {
        self.drop_member(id);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(limits, now);
                self.try_complete_join(now);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Looks up the member a request names, checking its static instance id.
    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if let Some(instance) = instance_id {
            match self.static_members.get(instance) {
                Some(id) if id != member_id => return Err(ResponseError::FencedInstanceId),
                _ => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        Ok(())
    }

    /// SyncGroup. `assignments` are the leader's (ignored from others).
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Step<SyncResult> {
        if matches!(self.state, GroupState::Empty | GroupState::Dead) {
            return Step::Now(Err(ResponseError::UnknownMemberId));
        }
        if let Err(e) = self.check_member(member_id, instance_id) {
            return Step::Now(Err(e));
        }
        if generation != self.generation {
            return Step::Now(Err(ResponseError::IllegalGeneration));
        }
        let answer = |g: &Group, m: &Member| {
            let t = g.protocol_type.clone().unwrap_or_default();
            Ok((t, g.protocol.clone(), m.assignment.clone()))
        };
        match self.state {
            GroupState::PreparingRebalance => Step::Now(Err(ResponseError::RebalanceInProgress)),
            GroupState::Stable => match self.members.get_mut(member_id) {
                Some(m) => {
                    m.deadline = now + m.session_timeout;
                    Step::Now(answer(self, &self.members[member_id]))
                }
                None => Step::Now(Err(ResponseError::UnknownMemberId)),
            },
            _ => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(member_id) {
                    m.deadline = now + m.session_timeout;
                    m.sync_waiter = Some(tx);
                }
                if self.leader.as_deref() == Some(member_id) {
                    for (id, assignment) in assignments {
                        if let Some(m) = self.members.get_mut(&id) {
                            m.assignment = assignment;
                        }
                    }
                    self.state = GroupState::Stable;
                    self.dirty = true;
                    tracing::info!(group = %self.id, generation = self.generation, "rebalance complete: stable");
                    let ids: Vec<String> = self.members.keys().cloned().collect();
                    for id in ids {
                        let a = answer(self, &self.members[&id]);
                        if let Some(m) = self.members.get_mut(&id) {
                            m.answer_sync(a);
                        }
                    }
                }
                Step::Wait(rx)
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ResponseError> {
        if matches!(self.state, GroupState::Empty | GroupState::Dead) {
            return Err(ResponseError::UnknownMemberId);
        }
        self.check_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.deadline = now + m.session_timeout;
        }
        match self.state {
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// LeaveGroup of one member, named by member id or (static) instance id.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        limits: &Limits,
        now: Instant,
    ) -> Result<(), ResponseError> {
        if self.pending_members.remove(member_id).is_some() {
            return Ok(());
        }
        let id = match instance_id {
            Some(i) => {
                let id = self
                    .static_members
                    .get(i)
                    .cloned()
                    .ok_or(ResponseError::UnknownMemberId)?;
                if !member_id.is_empty() && member_id != id {
                    return Err(ResponseError::FencedInstanceId);
                }
                id
            }
            None => member_id.to_string(),
        };
        if !self.members.contains_key(&id) {
            return Err(ResponseError::UnknownMemberId);
        }
        tracing::info!(group = %self.id, member = %id, "member left");
        self.remove_member(&id, limits, now);
        Ok(())
    }

    /// The timer: expires members past their session timeout and pending member ids, and ends a
    /// rebalance whose timeout passed.
    pub fn tick(&mut self, limits: &Limits, now: Instant) {
        self.pending_members.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.sync_waiter.is_none() && m.deadline <= now)
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "session timeout: member removed");
            self.remove_member(&id, limits, now);
        }
        self.try_complete_join(now);
    }
}
