//! meta::quorum::membership: this node's side of its membership, one loop each.
//! - The **broker loop** registers this node with the controller (again after each restart: a
//!   new incarnation, or when a controller does not know it) and heartbeats every
//!   `broker_heartbeat_ms`; each acknowledged beat renews the node's lease (`lease`) from the
//!   beat's send time, counted once the image applied the index the controller named.
//! - The **join loop** (a `--join` node) asks a voter to add it as a learner until it is one.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Quorum, QuorumError, RETRY_MAX_MS, lease};
use crate::meta::command::{ControllerRequest, ControllerResponse, MetadataCommand};
use crate::meta::types::raft_id;

/// Registers this node, then heartbeats; registers again whenever the controller does not know
/// this incarnation (a new controller, or this node was unregistered).
pub(super) async fn broker_loop(q: Arc<Quorum>) {
    let mut stop = q.stop.subscribe();
    let mut registered = false;
    let node_id = q.node_id;
    let incarnation = q.setup.registration.incarnation;
    let mut waiting_logged = false;
    let mut beat_now = false;
    loop {
        if registered {
            let sent = Instant::now();
            if q.is_leader() {
                registered = q.heard_from(node_id, incarnation);
                // As for any broker (`serve_controller`): no grant while its fencing commits.
                if registered
                    && !q.being_fenced(node_id)
                    && let Some(index) = q.confirmed_grant_index().await
                {
                    q.lease.renew(lease::Grant {
                        sent,
                        applied: Some(index),
                    });
                }
            } else if let Some(addr) = q.leader().and_then(|l| q.addr_of(l)) {
                let beat = ControllerRequest::Heartbeat {
                    node_id,
                    incarnation,
                };
                // Any other answer (no controller there, unreachable) keeps the registration: the
                // next beat finds the new controller.
                match q.peers.call(&addr, beat).await {
                    Ok(ControllerResponse::HeartbeatLease {
                        registered: known,
                        applied,
                    }) => {
                        registered = known;
                        if known {
                            q.lease.renew(lease::Grant { sent, applied });
                        }
                    }
                    Ok(ControllerResponse::HeartbeatAck { registered: known }) => {
                        // A controller of an older release (no lease answer), during a rolling
                        // upgrade: its acknowledgement is trusted as before leases, or this
                        // node's groups and partition roles would wait for the upgrade's end.
                        registered = known;
                        if known {
                            q.lease.renew(lease::Grant {
                                sent,
                                applied: None,
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
        if !registered {
            let cmd = MetadataCommand::RegisterBroker(q.setup.registration.clone());
            let deadline = Instant::now() + q.timing.session_timeout;
            match q.propose_until(cmd, deadline).await {
                Ok(_) => {
                    registered = true;
                    waiting_logged = false;
                    tracing::info!(node_id, "registered with the controller");
                    // Beat at once: the first acknowledged beat starts the lease, and this
                    // node's groups wait for it.
                    beat_now = true;
                }
                Err(QuorumError::ShuttingDown) => return,
                Err(e) if !waiting_logged => {
                    waiting_logged = true;
                    tracing::warn!(error = %e, "waiting for a controller to register with (a majority of the voters must be up)");
                }
                Err(_) => {}
            }
        }
        if std::mem::take(&mut beat_now) {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(q.timing.broker_heartbeat) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Asks the voter at `join` (which passes it to the controller) to add this node as a learner,
/// until the membership holds it.
pub(super) async fn join_loop(q: Arc<Quorum>, join: String) {
    let mut stop = q.stop.subscribe();
    let me = raft_id(q.node_id);
    let mut failures = 0u32;
    loop {
        let member = q
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&me)
            .is_some();
        if member {
            tracing::info!(
                node_id = q.node_id,
                "joined the metadata quorum as a learner"
            );
            return;
        }
        let req = ControllerRequest::Join {
            node_id: q.node_id,
            raft_addr: q.setup.registration.raft_addr.clone(),
        };
        match q.peers.call(&join, req).await {
            Ok(ControllerResponse::Joined) => failures = 0,
            Ok(other) => {
                failures += 1;
                tracing::info!(voter = %join, answer = ?other, "waiting to join the quorum");
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(voter = %join, error = %e, "cannot reach the voter to join through");
            }
        }
        let pause = Duration::from_millis((RETRY_MAX_MS << failures.min(3)).min(4_000));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
