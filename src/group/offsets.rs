//! group::offsets: committed offsets and the group administration requests — OffsetCommit,
//! OffsetFetch, OffsetDelete, ListGroups, DescribeGroups, DeleteGroups — on the [`Coordinator`].
//! A commit is acknowledged only after its records are in `__consumer_offsets` (durable per the
//! flush policy); memory is updated after the write, under the same per-partition store lock,
//! so a failed write changes nothing and memory always matches the log's last record.

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::records::{self, Key, OffsetValue};
use super::state::GroupState;
use super::{Coordinator, store, validate_group_id};
use crate::broker::Broker;

/// Longest metadata string of a commit (Kafka's offset.metadata.max.bytes default).
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// Kafka's "no offset committed".
pub const NO_OFFSET: i64 = -1;

/// One partition of an OffsetCommit.
#[derive(Debug, Clone)]
pub struct Commit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// Who commits: a group member (generation ≥ 0) or a simple consumer (generation -1, no member).
#[derive(Debug, Clone)]
pub struct Committer<'a> {
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
    pub generation: i32,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct Description {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    /// (member id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

impl Coordinator {
    /// Checks that `who` may commit to the group now (Kafka's rules).
    fn check_committer(&self, group_id: &str, who: &Committer<'_>) -> Result<(), ResponseError> {
        let simple = who.generation < 0 && who.member_id.is_empty();
        self.with_group(group_id, simple, |g| {
            if simple && g.state == GroupState::Empty {
                return Ok(());
            }
            if let Some(instance) = who.instance_id
                && g.static_members
                    .get(instance)
                    .is_some_and(|id| id != who.member_id)
            {
                return Err(ResponseError::FencedInstanceId);
            }
            if !g.members.contains_key(who.member_id) {
                return Err(ResponseError::UnknownMemberId);
            }
            if who.generation != g.generation {
                return Err(ResponseError::IllegalGeneration);
            }
            // Kafka checks membership and generation first: a stale member learns that first.
            if g.state == GroupState::CompletingRebalance {
                return Err(ResponseError::RebalanceInProgress);
            }
            Ok(())
        })?
    }

    /// OffsetCommit: one result per partition, in order. A group-level refusal (unknown member,
    /// wrong generation, …) applies to every partition, as Kafka answers it.
    pub async fn commit(
        &self,
        broker: &Broker,
        group_id: &str,
        who: Committer<'_>,
        commits: Vec<Commit>,
    ) -> Vec<Result<(), ResponseError>> {
        if let Err(e) = self.owns(broker, group_id).await {
            return commits.iter().map(|_| Err(e)).collect();
        }
        self.ensure_loaded(broker).await;
        if let Err(e) = self.check_committer(group_id, &who) {
            return commits.iter().map(|_| Err(e)).collect();
        }
        let now_ms = crate::api::now_ms();
        let mut results = Vec::with_capacity(commits.len());
        let mut accepted = Vec::new();
        for c in commits {
            // The partition may live on another node: the topic's cluster-wide count decides.
            let exists = broker
                .topic(&c.topic)
                .is_some_and(|t| (0..t.partition_count()).contains(&c.partition));
            let r = if !exists {
                Err(ResponseError::UnknownTopicOrPartition)
            } else if c
                .metadata
                .as_ref()
                .is_some_and(|m| m.len() > OFFSET_METADATA_BYTES_MAX)
            {
                Err(ResponseError::OffsetMetadataTooLarge)
            } else {
                let value = OffsetValue {
                    offset: c.offset,
                    leader_epoch: c.leader_epoch,
                    commit_timestamp_ms: now_ms,
                    metadata: c.metadata,
                };
                accepted.push(((c.topic, c.partition), value));
                Ok(())
            };
            results.push(r);
        }
        let entries = accepted
            .iter()
            .map(|((topic, partition), v)| {
                let key = Key::Offset {
                    group: group_id.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                };
                (key, Some(records::encode_offset(v)))
            })
            .collect();
        // Memory is updated under the same store lock as the append (the groups lock is a std
        // one, taken only after the await), so two racing commits of one partition leave memory
        // holding the offset whose record is last in the log.
        let written = {
            let _store = self.store_locks.lock(broker, group_id).await;
            let written = store::append(broker, group_id, entries).await;
            if written.is_ok() {
                let _ = self.with_group(group_id, true, |g| g.offsets.extend(accepted));
            }
            written
        };
        if let Err(e) = written {
            tracing::warn!(group = group_id, error = %e, "cannot persist offsets");
            return results
                .into_iter()
                .map(|r| r.and(Err(ResponseError::CoordinatorNotAvailable)))
                .collect();
        }
        results
    }

    /// Committed offsets of the group: the listed partitions (-1 where none), or all (None).
    /// A group that never committed is no error (clients treat one as fatal).
    pub async fn fetch_offsets(
        &self,
        broker: &Broker,
        group_id: &str,
        wanted: Option<Vec<(String, i32)>>,
    ) -> Result<Vec<((String, i32), Option<OffsetValue>)>, ResponseError> {
        self.owns(broker, group_id).await?;
        self.ensure_loaded(broker).await;
        validate_group_id(group_id)?;
        let groups = self.lock();
        let offsets = groups.get(group_id).map(|g| &g.offsets);
        Ok(match wanted {
            Some(list) => list
                .into_iter()
                .map(|tp| {
                    let v = offsets.and_then(|o| o.get(&tp)).cloned();
                    (tp, v)
                })
                .collect(),
            None => offsets
                .into_iter()
                .flatten()
                .map(|(tp, v)| (tp.clone(), Some(v.clone())))
                .collect(),
        })
    }

    /// OffsetDelete: removes committed offsets of topics no member subscribes to.
    pub async fn delete_offsets(
        &self,
        broker: &Broker,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        self.owns(broker, group_id).await?;
        self.ensure_loaded(broker).await;
        validate_group_id(group_id)?;
        let subscribed = {
            let groups = self.lock();
            let g = groups.get(group_id).ok_or(ResponseError::GroupIdNotFound)?;
            match g.state {
                GroupState::Empty => Some(Vec::new()),
                _ => g.subscribed_topics(),
            }
        };
        let results: Vec<Result<(), ResponseError>> = partitions
            .iter()
            .map(|(topic, _)| match &subscribed {
                Some(ts) if !ts.contains(topic) => Ok(()),
                _ => Err(ResponseError::GroupSubscribedToTopic),
            })
            .collect();
        let doomed: Vec<(String, i32)> = partitions
            .into_iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(tp, _)| tp)
            .collect();
        self.tombstone_offsets(broker, group_id, &doomed).await?;
        Ok(results)
    }

    async fn tombstone_offsets(
        &self,
        broker: &Broker,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<(), ResponseError> {
        let entries = partitions
            .iter()
            .map(|(topic, partition)| {
                let key = Key::Offset {
                    group: group_id.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                };
                (key, None)
            })
            .collect();
        let _store = self.store_locks.lock(broker, group_id).await;
        store::append(broker, group_id, entries)
            .await
            .map_err(|e| {
                tracing::warn!(group = group_id, error = %e, "cannot delete offsets");
                ResponseError::CoordinatorNotAvailable
            })?;
        let mut groups = self.lock();
        if let Some(g) = groups.get_mut(group_id) {
            for tp in partitions {
                g.offsets.remove(tp);
            }
        }
        Ok(())
    }

    /// DeleteGroups of one group: only an empty group may go (its offsets with it).
    pub async fn delete_group(&self, broker: &Broker, group_id: &str) -> Result<(), ResponseError> {
        self.owns(broker, group_id).await?;
        self.ensure_loaded(broker).await;
        validate_group_id(group_id)?;
        let partitions: Vec<(String, i32)> = {
            let groups = self.lock();
            let g = groups.get(group_id).ok_or(ResponseError::GroupIdNotFound)?;
            if g.state != GroupState::Empty {
                return Err(ResponseError::NonEmptyGroup);
            }
            g.offsets.keys().cloned().collect()
        };
        self.tombstone_offsets(broker, group_id, &partitions)
            .await?;
        let _store = self.store_locks.lock(broker, group_id).await;
        let key = Key::Group(group_id.to_string());
        store::append(broker, group_id, vec![(key, None)])
            .await
            .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
        let mut groups = self.lock();
        if groups
            .get(group_id)
            .is_some_and(|g| g.state == GroupState::Empty)
        {
            groups.remove(group_id);
        }
        tracing::info!(group = group_id, "deleted group");
        Ok(())
    }

    /// ListGroups: (group id, protocol type, state), filtered by state names (case-insensitive).
    pub async fn list(
        &self,
        broker: &Broker,
        states: &[String],
    ) -> Vec<(String, String, GroupState)> {
        self.ensure_loaded(broker).await;
        let groups = self.lock();
        groups
            .values()
            .filter(|g| {
                states.is_empty()
                    || states
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state.name()))
            })
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect()
    }

    /// DescribeGroups of one group; an unknown group is "Dead" with no members, as Kafka answers.
    pub async fn describe(
        &self,
        broker: &Broker,
        group_id: &str,
    ) -> Result<Description, ResponseError> {
        self.owns(broker, group_id).await?;
        self.ensure_loaded(broker).await;
        validate_group_id(group_id)?;
        let groups = self.lock();
        let Some(g) = groups.get(group_id) else {
            return Ok(Description {
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            });
        };
        let stable = g.state == GroupState::Stable;
        let protocol = g.protocol.clone().unwrap_or_default();
        let members = g
            .join_order
            .iter()
            .filter_map(|id| g.members.get(id))
            .map(|m| {
                // Kafka shows metadata and assignment only once the generation is stable.
                let (meta, assignment) = if stable {
                    (m.metadata_for(&protocol), m.assignment.clone())
                } else {
                    (Bytes::new(), Bytes::new())
                };
                let (client, host) = (m.client_id.clone(), m.client_host.clone());
                (
                    m.id.clone(),
                    m.instance_id.clone(),
                    client,
                    host,
                    meta,
                    assignment,
                )
            })
            .collect();
        Ok(Description {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if stable { protocol } else { String::new() },
            members,
        })
    }
}
