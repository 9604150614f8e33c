//! broker::replication: where the broker meets `replica`. It hands each committed image's
//! assignments to the replication manager, carries the ISR changes leaders decide to the
//! controller (`AlterPartition`, checked against the partition epoch), and runs the periodic
//! work: ISR shrink checks and high watermark checkpoints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Broker, Replica};
use crate::meta::command::{MetadataCommand, MetadataResponse};
use crate::meta::image::{MetadataImage, PartitionImage};
use crate::replica::{Assignment, IsrChange, IsrReason, Role, replica_ids};

/// Topic config naming how many replicas an acks=all write needs in the ISR.
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";

impl Broker {
    /// min.insync.replicas in force for a topic with `configs`: its own, else the node's.
    pub(super) fn min_insync_replicas(&self, configs: &BTreeMap<String, String>) -> i32 {
        configs
            .get(MIN_INSYNC_REPLICAS)
            .and_then(|v| v.trim().parse::<i32>().ok())
            .filter(|v| *v >= 1)
            .unwrap_or(self.config.min_insync_replicas)
    }

    /// The local replica that may serve a consumer's read of `partition`: the leader's, or with
    /// `any_replica` (Fetch v11+, KIP-392) a follower's too, which serves up to its own high
    /// watermark.
    pub fn serving_replica(
        &self,
        t: &super::Topic,
        partition: i32,
        any_replica: bool,
    ) -> Result<Arc<Replica>, super::NotLeading> {
        let not_leader = match self.leader_replica(t, partition) {
            Ok((replica, _)) => return Ok(replica),
            Err(e @ super::NotLeading::UnknownPartition) => return Err(e),
            Err(e) => e,
        };
        if !any_replica {
            return Err(not_leader);
        }
        let replica = t.partition(partition).ok_or(not_leader)?;
        match replica.state.role() {
            Role::Follower { epoch, .. } if epoch == replica.leader_epoch() => Ok(replica),
            _ => Err(not_leader),
        }
    }

    /// KIP-392: the in-sync follower a consumer in `rack` should read `replica`'s partition
    /// from, when this node leads it and sits in another rack, and the follower has
    /// `fetch_offset` already (else the consumer would bounce back and forth).
    pub fn preferred_read_replica(
        &self,
        t: &super::Topic,
        replica: &Replica,
        rack: &str,
        fetch_offset: i64,
    ) -> Option<i32> {
        if self.config.rack.as_deref() == Some(rack) {
            return None;
        }
        replica.state.leading()?;
        let image = self.image()?;
        let p = image
            .topics
            .get(&t.name)?
            .partitions
            .get(replica.index as usize)?;
        p.isr.iter().copied().find(|id| {
            *id != self.identity.node_id
                && replica.state.follower_end(*id) >= fetch_offset
                && fetch_offset >= replica.log.log_start_offset()
                && image
                    .brokers
                    .get(id)
                    .is_some_and(|b| !b.fenced && b.rack() == Some(rack))
        })
    }

    /// Applies the image's view of one hosted partition to its replication state.
    pub(super) async fn apply_assignment(
        &self,
        image: &MetadataImage,
        replica: &Arc<Replica>,
        p: &PartitionImage,
    ) {
        if !self.roles_allowed() {
            // Stays unassigned (serves nothing) until the image is known to be current; the
            // node reconciles again then.
            return;
        }
        let assignment = Assignment {
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            replicas: replica_ids(&p.replicas),
            isr: replica_ids(&p.isr),
        };
        let addr = image
            .brokers
            .get(&p.leader)
            .filter(|_| p.leader != self.identity.node_id)
            .map(|b| format!("{}:{}", b.registration.host, b.registration.port));
        self.replication
            .apply(&replica.state, assignment, addr)
            .await;
    }

    /// Holds every partition's role back until [`Broker::allow_roles`] (a starting node whose
    /// image may be stale).
    pub fn hold_roles(&self) {
        self.roles_allowed
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// Lets partitions take the roles the image gives them (the caller reconciles again).
    pub fn allow_roles(&self) {
        self.roles_allowed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether an image has been reconciled since roles were allowed: the partitions serve.
    pub fn roles_taken(&self) -> bool {
        self.roles_taken.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn roles_allowed(&self) -> bool {
        self.roles_allowed
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Partitions this node leads whose log failed, handed to the first eligible ISR member.
    fn failed_leaderships(&self, now: tokio::time::Instant) -> Vec<IsrChange> {
        let Some(image) = self.image() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for t in self.topics() {
            for replica in t.partitions() {
                if !replica.log.is_failed() || replica.state.leading().is_none() {
                    continue;
                }
                let Some(p) = image
                    .topics
                    .get(&t.name)
                    .and_then(|ti| ti.partitions.get(replica.index as usize))
                else {
                    continue;
                };
                let me = self.identity.node_id;
                let to = p
                    .isr
                    .iter()
                    .copied()
                    .find(|id| *id != me && image.is_eligible(*id));
                if let Some(change) = to.and_then(|to| replica.state.hand_over(to, now)) {
                    out.push(change);
                }
            }
        }
        out
    }

    /// Proposes one ISR change to the controller; a refusal (the partition moved on) or a
    /// failure frees the leader to decide again.
    async fn propose_isr_change(&self, change: IsrChange) {
        let Some(q) = self.quorum().cloned() else {
            change.state.abandon_pending(change.partition_epoch);
            return;
        };
        let state = &change.state;
        let cmd = MetadataCommand::AlterPartition {
            topic_id: state.topic_id,
            partition: state.index,
            partition_epoch: change.partition_epoch,
            leader: change.leader,
            replicas: change.replicas.to_vec(),
            isr: change.isr.to_vec(),
        };
        let timeout = Duration::from_millis(self.config.controller_request_ms_max);
        match q.propose(cmd, timeout).await {
            Ok(MetadataResponse::Refused(r)) => {
                tracing::info!(topic = %state.topic, partition = state.index, reason = %r.message, "ISR change refused by the controller");
                state.abandon_pending(change.partition_epoch);
            }
            Ok(_) => match &change.reason {
                IsrReason::Expand { replica, offset } => {
                    tracing::info!(topic = %state.topic, partition = state.index, replica, offset, isr = ?change.isr.as_slice(), "replica caught up: joined the ISR");
                }
                IsrReason::Shrink { replicas, lag_ms } => {
                    tracing::warn!(topic = %state.topic, partition = state.index, replicas = ?replicas.as_slice(), lag_ms, isr = ?change.isr.as_slice(), "replicas fell behind: left the ISR");
                }
                IsrReason::StorageFailed { to } => {
                    tracing::error!(topic = %state.topic, partition = state.index, new_leader = to, "this node's log of the partition failed: leadership handed over");
                }
            },
            Err(e) => {
                tracing::warn!(topic = %state.topic, partition = state.index, error = %e, "cannot reach the controller for an ISR change; retried at the next check");
                state.abandon_pending(change.partition_epoch);
            }
        }
    }
}

/// Runs replication's background work until `stop`: carries ISR changes to the controller,
/// checks for lagging followers every half `replica_lag_ms_max`, checkpoints high watermarks
/// every `hw_checkpoint_ms`.
pub async fn run_replication(broker: Arc<Broker>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(mut changes) = broker.replication.take_isr_changes() else {
        return;
    };
    let settings = broker.replication.settings().clone();
    let mut lag_check =
        tokio::time::interval(Duration::from_millis((settings.lag_ms_max / 2).max(1)));
    let mut checkpoint = tokio::time::interval(Duration::from_millis(settings.hw_checkpoint_ms));
    lag_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Some(change) => {
                    // Each proposal waits on the controller: run them side by side.
                    let broker = broker.clone();
                    tokio::spawn(async move { broker.propose_isr_change(change).await });
                }
                None => return,
            },
            _ = lag_check.tick() => {
                let now = tokio::time::Instant::now();
                for change in broker.replication.lagging(now) {
                    broker.replication.propose(change);
                }
                for change in broker.failed_leaderships(now) {
                    broker.replication.propose(change);
                }
            }
            _ = checkpoint.tick() => broker.replication.checkpoint().await,
            _ = stop.changed() => {
                broker.replication.stop();
                broker.replication.checkpoint().await;
                return;
            }
        }
    }
}
