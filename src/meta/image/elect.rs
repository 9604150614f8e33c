//! meta::image::elect: elections and ISR changes of the image — leadership moving away from a
//! fenced or stopping broker, controlled shutdown, Kafka's ElectLeaders (preferred and unclean) —
//! the questions the controller asks of an image to decide what to propose (imbalanced preferred
//! leaders, partitions only an unclean election can bring back, leaderships a stopping broker
//! still holds), and the [`Change`] trace the controller logs.
//!
//! Every rule reads only the image it applies to, so every node reaches the same result. A
//! broker is *eligible* to lead or join an ISR when it is live (unfenced) and not shutting down.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::{MetadataImage, NO_LEADER, PartitionImage, refuse};
use crate::meta::command::{Election, ElectionResult, MetadataResponse, codes};

/// Why a partition's leader or ISR changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its leader's (or an ISR member's) broker was fenced.
    Fenced,
    /// Its leader's (or an ISR member's) broker is stopping (controlled shutdown).
    ControlledShutdown,
    /// The preferred replica took leadership back (ElectLeaders, or the automatic rebalance).
    Preferred,
    /// A replica outside the ISR was elected: records acknowledged only by the lost ISR may be gone.
    Unclean,
    /// A leaderless partition's ISR member came back.
    Returned,
    /// A leader's AlterPartition (ISR shrink or expand).
    Altered,
}

/// One partition's election or ISR change, as applying a command made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub topic: String,
    pub partition: i32,
    pub reason: Reason,
    pub leader_before: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr_before: Vec<i32>,
    pub isr: Vec<i32>,
}

impl Change {
    /// What the change was, in words: the reason, or for an AlterPartition what it did.
    pub fn what(&self) -> &'static str {
        match self.reason {
            Reason::Fenced => "broker fenced",
            Reason::ControlledShutdown => "controlled shutdown",
            Reason::Preferred => "preferred leader election",
            Reason::Unclean => "unclean leader election",
            Reason::Returned => "in-sync replica returned",
            Reason::Altered if self.isr.len() < self.isr_before.len() => "ISR shrink",
            Reason::Altered if self.isr.len() > self.isr_before.len() => "ISR expand",
            Reason::Altered => "leader and ISR change",
        }
    }

    /// Logs the change (on the controller only: every node applies it). An unclean election is
    /// a warning naming what may be lost.
    pub fn log(&self) {
        let what = self.what();
        if self.reason == Reason::Unclean {
            tracing::warn!(
                topic = %self.topic,
                partition = self.partition,
                leader = self.leader,
                leader_epoch = self.leader_epoch,
                lost_isr = ?self.isr_before,
                "unclean leader election: broker {} leads {}-{} from outside the ISR; records acknowledged only by the lost in-sync replicas {:?} may be gone",
                self.leader, self.topic, self.partition, self.isr_before
            );
            return;
        }
        if self.leader != self.leader_before {
            tracing::info!(
                topic = %self.topic,
                partition = self.partition,
                from = self.leader_before,
                to = self.leader,
                leader_epoch = self.leader_epoch,
                isr = ?self.isr,
                "leader election ({what})"
            );
        } else {
            tracing::info!(
                topic = %self.topic,
                partition = self.partition,
                leader = self.leader,
                isr_before = ?self.isr_before,
                isr = ?self.isr,
                "ISR change ({what})"
            );
        }
    }
}

/// Pushes the change from `before` to `after` onto `trace`, if leader or ISR changed.
pub(super) fn record(
    trace: &mut Vec<Change>,
    topic: &str,
    partition: i32,
    reason: Reason,
    before: &PartitionImage,
    after: &PartitionImage,
) {
    if before.leader == after.leader && before.isr == after.isr {
        return;
    }
    trace.push(Change {
        topic: topic.to_string(),
        partition,
        reason,
        leader_before: before.leader,
        leader: after.leader,
        leader_epoch: after.leader_epoch,
        isr_before: before.isr.clone(),
        isr: after.isr.clone(),
    });
}

impl MetadataImage {
    /// Moves what `node_id` holds away from it: each partition it leads goes to the first other
    /// eligible ISR member (leader epoch bumped); with none, `leaderless` decides whether it is
    /// left with no leader (a fence) or stays with the node (a controlled shutdown: it serves
    /// until it stops). The node leaves every ISR that has other members.
    pub(super) fn move_away(
        &mut self,
        node_id: i32,
        reason: Reason,
        leaderless: bool,
        trace: &mut Vec<Change>,
    ) {
        let eligible = self.eligible_ids();
        for t in self.topics.values_mut() {
            for (i, p) in t.partitions.iter_mut().enumerate() {
                if p.leader != node_id && !p.isr.contains(&node_id) {
                    continue;
                }
                let before = p.clone();
                let next = p
                    .isr
                    .iter()
                    .copied()
                    .find(|r| *r != node_id && eligible.contains(r));
                if p.leader == node_id {
                    match next {
                        Some(next) => p.leader = next,
                        None if leaderless => p.leader = NO_LEADER,
                        None => {}
                    }
                }
                if p.isr.len() > 1 && p.leader != node_id {
                    p.isr.retain(|r| *r != node_id);
                }
                if p.leader != before.leader {
                    p.leader_epoch += 1;
                }
                if *p != before {
                    p.partition_epoch += 1;
                }
                record(trace, &t.name, i as i32, reason, &before, p);
            }
        }
    }

    /// Applies `ControlledShutdown` ([`crate::meta::command::MetadataCommand::ControlledShutdown`]).
    pub(super) fn controlled_shutdown(
        &mut self,
        node_id: i32,
        incarnation: Uuid,
        trace: &mut Vec<Change>,
    ) -> MetadataResponse {
        match self.brokers.get(&node_id) {
            Some(b) if b.registration.incarnation == incarnation => {}
            _ => return refuse(codes::STALE_BROKER_EPOCH, "stale incarnation"),
        }
        self.shutting_down.insert(node_id);
        self.move_away(node_id, Reason::ControlledShutdown, false, trace);
        MetadataResponse::Done
    }

    /// Applies `ElectLeaders`: each named partition's outcome, in the order asked; for all
    /// partitions (`None`), those that needed no election are left out (as Kafka answers).
    pub(super) fn elect_leaders(
        &mut self,
        election: Election,
        partitions: Option<&[(Uuid, i32)]>,
        trace: &mut Vec<Change>,
    ) -> MetadataResponse {
        let all = partitions.is_none();
        let wanted: Vec<(Uuid, i32)> = match partitions {
            Some(p) => p.to_vec(),
            None => {
                let mut every: Vec<(Uuid, i32)> = self
                    .topics
                    .values()
                    .flat_map(|t| (0..t.partitions.len() as i32).map(|i| (t.id, i)))
                    .collect();
                every.sort();
                every
            }
        };
        let eligible = self.eligible_ids();
        let live: BTreeSet<i32> = self.live_brokers().map(|b| b.node_id()).collect();
        let mut results = Vec::with_capacity(wanted.len());
        for (topic_id, partition) in wanted {
            let code = self.elect_one(topic_id, partition, election, (&eligible, &live), trace);
            if all && code == codes::ELECTION_NOT_NEEDED {
                continue;
            }
            results.push(ElectionResult {
                topic_id,
                partition,
                code,
            });
        }
        MetadataResponse::Elected(results)
    }

    /// One partition's election; answers its Kafka error code.
    fn elect_one(
        &mut self,
        topic_id: Uuid,
        partition: i32,
        election: Election,
        (eligible, live): (&BTreeSet<i32>, &BTreeSet<i32>),
        trace: &mut Vec<Change>,
    ) -> i16 {
        let Some(t) = self.topics.values_mut().find(|t| t.id == topic_id) else {
            return codes::UNKNOWN_TOPIC_OR_PARTITION;
        };
        let Some(p) = usize::try_from(partition)
            .ok()
            .and_then(|i| t.partitions.get_mut(i))
        else {
            return codes::UNKNOWN_TOPIC_OR_PARTITION;
        };
        let before = p.clone();
        let (leader, isr, reason) = match election {
            Election::Preferred => {
                let Some(&preferred) = p.replicas.first() else {
                    return codes::PREFERRED_LEADER_NOT_AVAILABLE;
                };
                if p.leader == preferred {
                    return codes::ELECTION_NOT_NEEDED;
                }
                if !eligible.contains(&preferred) || !p.isr.contains(&preferred) {
                    return codes::PREFERRED_LEADER_NOT_AVAILABLE;
                }
                (preferred, p.isr.clone(), Reason::Preferred)
            }
            Election::Unclean => {
                if live.contains(&p.leader) {
                    return codes::ELECTION_NOT_NEEDED;
                }
                if let Some(r) = p.isr.iter().copied().find(|r| eligible.contains(r)) {
                    // A clean choice exists (the ISR member is back): no loss needed.
                    (r, p.isr.clone(), Reason::Returned)
                } else if p.isr.iter().any(|r| live.contains(r)) {
                    // The ISR lives on a stopping broker: nothing may be given up for it.
                    return codes::ELIGIBLE_LEADERS_NOT_AVAILABLE;
                } else if let Some(r) = p.replicas.iter().copied().find(|r| eligible.contains(r)) {
                    (r, vec![r], Reason::Unclean)
                } else {
                    return codes::ELIGIBLE_LEADERS_NOT_AVAILABLE;
                }
            }
        };
        p.leader = leader;
        p.isr = isr;
        p.leader_epoch += 1;
        p.partition_epoch += 1;
        record(trace, &t.name, partition, reason, &before, p);
        codes::NONE
    }

    /// Partitions whose preferred replica is eligible, in the ISR and not the leader: what the
    /// automatic rebalance elects. Sorted by topic id and partition.
    pub fn preferred_imbalance(&self) -> Vec<(Uuid, i32)> {
        let eligible = self.eligible_ids();
        let mut found: Vec<(Uuid, i32)> = self
            .topics
            .values()
            .flat_map(|t| {
                t.partitions.iter().enumerate().filter_map(|(i, p)| {
                    let preferred = *p.replicas.first()?;
                    (p.leader != preferred
                        && p.isr.contains(&preferred)
                        && eligible.contains(&preferred))
                    .then_some((t.id, i as i32))
                })
            })
            .collect();
        found.sort();
        found
    }

    /// Partitions with no live leader and no live ISR member but an eligible replica: only an
    /// unclean election brings them back. With each, its topic's name.
    pub fn unclean_candidates(&self) -> Vec<(&str, Uuid, i32)> {
        let eligible = self.eligible_ids();
        self.topics
            .values()
            .flat_map(|t| {
                let eligible = &eligible;
                t.partitions.iter().enumerate().filter_map(move |(i, p)| {
                    let stuck = !self.is_live(p.leader)
                        && !p.isr.iter().any(|r| self.is_live(*r))
                        && p.replicas.iter().any(|r| eligible.contains(r));
                    stuck.then_some((t.name.as_str(), t.id, i as i32))
                })
            })
            .collect()
    }

    /// Partitions `node_id` leads that another eligible ISR member could lead: what a
    /// controlled shutdown still has to move.
    pub fn movable_leaderships(&self, node_id: i32) -> usize {
        let eligible = self.eligible_ids();
        self.topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| {
                p.leader == node_id && p.isr.iter().any(|r| *r != node_id && eligible.contains(r))
            })
            .count()
    }
}
