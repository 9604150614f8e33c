//! meta::quorum::controller: the controller's election duties and the stopping node's side of
//! a controlled shutdown.
//!
//! While this node is the Raft leader, each round of the controller loop ([`election_duties`]):
//! - **unclean elections**: when the image changed since the last look (a fence, a registration,
//!   a config change) or every `leader_imbalance_check_interval_ms` anyway, partitions with no
//!   live leader and no live ISR member but a live replica are elected uncleanly where
//!   `unclean.leader.election.enable` allows it (topic config, else the cluster-default dynamic
//!   broker config, else this controller's `unclean_leader_election_enable`). The setting is
//!   read here, not when the command applies: the controller's own setting is not in the image,
//!   and applying must be deterministic. The command itself re-checks the partition's state, so
//!   a stale proposal (the ISR member came back meanwhile) changes nothing.
//! - **preferred leaders** (`auto_leader_rebalance_enable`): every
//!   `leader_imbalance_check_interval_ms`, one ElectLeaders for the partitions whose preferred
//!   replica is live, in the ISR, not stopping, and not the leader.
//!
//! A stopping node ([`Quorum::controlled_shutdown`]) commits `ControlledShutdown` and waits until
//! its image shows it leads nothing another eligible ISR member could lead, then fences itself so
//! clients and followers stop using it at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Quorum;
use crate::meta::MetadataClient;
use crate::meta::command::{Election, MetadataCommand, MetadataResponse};
use crate::meta::image::{CLUSTER_DEFAULT, MetadataImage};

/// The topic (and dynamic broker) config that allows unclean elections.
pub const UNCLEAN_CONFIG: &str = "unclean.leader.election.enable";
/// How often a stopping node asks again while leaderships it could hand over remain (a leader
/// that re-grew an ISR meanwhile, a proposal lost in a controller change).
const CONTROLLED_SHUTDOWN_RETRY_MS: u64 = 1_000;
/// Longest one ControlledShutdown proposal may take: with no quorum (the other voters down) no
/// proposal commits, and the node must still stop well within its supervisor's patience.
const HANDOVER_PROPOSE_MS_MAX: u64 = 5_000;
/// Longest the stopping node waits for its own fence to commit (its leaderships are moved
/// already; the controller would fence it after its session timeout anyway).
const SELF_FENCE_MS_MAX: u64 = 2_000;

/// Kafka's boolean config values: `true` or `false`, any case.
pub fn parse_bool(value: &str) -> Option<bool> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Whether `topic` may elect a replica outside its ISR: its own config, else the cluster
/// default in the image, else `fallback` (the controller's static setting).
pub fn unclean_allowed(image: &MetadataImage, topic: &str, fallback: bool) -> bool {
    let topic_value = image
        .topics
        .get(topic)
        .and_then(|t| t.configs.get(UNCLEAN_CONFIG));
    let cluster_value = image
        .broker_configs
        .get(&CLUSTER_DEFAULT)
        .and_then(|c| c.get(UNCLEAN_CONFIG));
    topic_value
        .or(cluster_value)
        .and_then(|v| parse_bool(v))
        .unwrap_or(fallback)
}

/// The partitions the controller should elect uncleanly now, per the settings.
pub fn unclean_wanted(image: &MetadataImage, fallback: bool) -> Vec<(uuid::Uuid, i32)> {
    image
        .unclean_candidates()
        .into_iter()
        .filter(|(topic, _, _)| unclean_allowed(image, topic, fallback))
        .map(|(_, id, p)| (id, p))
        .collect()
}

/// What the controller remembers between rounds of its election duties.
#[derive(Debug, Default)]
pub(super) struct ElectionState {
    /// The applied index of the image last swept for unclean elections, and when.
    swept: Option<(u64, Instant)>,
    /// When the last preferred-leader check ran (or this node became controller).
    rebalanced: Option<Instant>,
}

impl ElectionState {
    /// Forgets everything (this node stopped leading): a new term starts afresh.
    pub(super) fn reset(&mut self) {
        *self = ElectionState::default();
    }
}

/// One round of the controller's election duties over `image` (see the module comment).
pub(super) async fn election_duties(q: &Arc<Quorum>, image: &MetadataImage) {
    let now = Instant::now();
    let interval = q.timing.imbalance_check;
    let (sweep, rebalance) = {
        let mut state = q.elections.lock().unwrap_or_else(|e| e.into_inner());
        let sweep = match state.swept {
            Some((index, at)) => index != image.applied_index || now >= at + interval,
            None => true,
        };
        let since = *state.rebalanced.get_or_insert(now);
        let rebalance = q.timing.auto_rebalance && now >= since + interval;
        if rebalance {
            state.rebalanced = Some(now);
        }
        (sweep, rebalance)
    };
    if sweep {
        let wanted = unclean_wanted(image, q.timing.unclean_default);
        let done = wanted.is_empty() || elect(q, Election::Unclean, wanted).await;
        if done {
            q.elections.lock().unwrap_or_else(|e| e.into_inner()).swept =
                Some((image.applied_index, now));
        }
    }
    if rebalance {
        let wanted = image.preferred_imbalance();
        if !wanted.is_empty() {
            tracing::info!(
                partitions = wanted.len(),
                "preferred replicas are in sync again: handing their leadership back"
            );
            elect(q, Election::Preferred, wanted).await;
        }
    }
}

/// Commits one ElectLeaders on this node (the controller); whether it committed.
async fn elect(q: &Quorum, election: Election, partitions: Vec<(uuid::Uuid, i32)>) -> bool {
    let cmd = MetadataCommand::ElectLeaders {
        election,
        partitions: Some(partitions),
    };
    match q.write_here(cmd).await {
        Some(Ok(_)) => true,
        Some(Err(e)) => {
            tracing::warn!(error = %e, ?election, "could not commit a leader election; retried");
            false
        }
        None => false,
    }
}

impl Quorum {
    /// KRaft's controlled shutdown, from the stopping node: asks the controller to move this
    /// node's leaderships to other in-sync replicas and waits (at most `max`) until the image
    /// shows none left that another eligible ISR member could take; then fences this node. The
    /// data path keeps serving meanwhile (clients of a moved partition get
    /// NOT_LEADER_OR_FOLLOWER and go to its new leader). Skipped when no other broker is live.
    pub async fn controlled_shutdown(&self, max: Duration) {
        let me = self.node_id;
        let incarnation = self.setup.registration.incarnation;
        if !self.image().live_brokers().any(|b| b.node_id() != me) {
            tracing::info!("no other live broker: nothing to hand over before stopping");
            return;
        }
        if self.leader().is_none() {
            tracing::warn!("no controller known: stopping without a controlled shutdown");
            return;
        }
        let started = Instant::now();
        let deadline = started + max;
        let mut cell = self.image.clone();
        loop {
            let cmd = MetadataCommand::ControlledShutdown {
                node_id: me,
                incarnation,
            };
            let until =
                (Instant::now() + Duration::from_millis(HANDOVER_PROPOSE_MS_MAX)).min(deadline);
            match self.propose_until(cmd, until).await {
                Ok(MetadataResponse::Done) => {}
                Ok(other) => {
                    tracing::warn!(answer = ?other, "the controller refused the controlled shutdown; stopping without it");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no controller to hand leaderships to; stopping without a controlled shutdown");
                    return;
                }
            }
            let retry = (Instant::now() + Duration::from_millis(CONTROLLED_SHUTDOWN_RETRY_MS))
                .min(deadline);
            let handed_over = |i: &Arc<MetadataImage>| {
                i.shutting_down.contains(&me) && i.movable_leaderships(me) == 0
            };
            if let Ok(Ok(_)) = tokio::time::timeout_at(retry, cell.wait_for(handed_over)).await {
                break;
            }
            if Instant::now() >= deadline {
                let left = self.image().movable_leaderships(me);
                tracing::warn!(
                    left,
                    controlled_shutdown_ms_max = max.as_millis() as u64,
                    "leaderships not all handed over in time; stopping anyway"
                );
                return;
            }
        }
        let led = self
            .image()
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.leader == me)
            .count();
        tracing::info!(
            took_ms = started.elapsed().as_millis() as u64,
            still_leading_alone = led,
            "controlled shutdown: leaderships handed to other in-sync replicas"
        );
        // Fenced now rather than after the session timeout: Metadata stops naming this node, and
        // the partitions only it held wait for its return from now on.
        let fence = MetadataCommand::FenceBroker {
            node_id: me,
            incarnation,
        };
        let until = Instant::now() + Duration::from_millis(SELF_FENCE_MS_MAX);
        match self.propose_until(fence, until).await {
            Ok(_) => tracing::info!("fenced on the way out: Metadata no longer names this node"),
            Err(e) => {
                tracing::info!(error = %e, "could not fence this node on the way out; the controller will after its session timeout")
            }
        }
    }
}
