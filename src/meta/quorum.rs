//! meta::quorum: the running metadata quorum of one node — openraft over the file store
//! (`store`) and the peer transport (`network`) — and the controller duties of the Raft leader.
//!
//! Every node runs three loops beside Raft:
//! - the **broker loop** registers this node with the controller (again after each restart: a
//!   new incarnation) and heartbeats every `broker_heartbeat_ms`;
//! - the **controller loop** acts only while this node is the Raft leader: it commits the
//!   quorum's first command (the cluster id, and the topics of a single-node data directory),
//!   fences brokers it has not heard from within `broker_session_timeout_ms` (a new leader
//!   gives every broker one full session first), elects uncleanly where allowed and hands
//!   leadership back to preferred replicas (`controller`), and logs every election and ISR
//!   change the quorum applies;
//! - for a `--join` node, the **join loop** asks a voter to add it as a learner until it is one.
//!
//! The broker and join loops, this node's side of its membership, are in `membership`.
//!
//! Proposals ([`MetadataClient::propose`]) go to the Raft leader wherever it runs: written
//! directly on the leader, forwarded over the peer transport from any other node, retried across
//! elections until their deadline, and answered once applied on the controller.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use openraft::BasicNode;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::command::{
    BrokerRegistration, ControllerRequest, ControllerResponse, MetadataCommand, MetadataResponse,
    TopicImport,
};
use super::image::MetadataImage;
use super::network::{
    ControllerService, LocalNode, NetworkFactory, PeerClient, PeerService, TransportConfig,
};
use super::settings::Role;
use super::types::{NodeId, Raft, broker_id, raft_id};
use super::{ImageCell, MetadataClient, QuorumError, QuorumStatus, ReplicaStatus};
use crate::config::Config;

mod controller;
mod lease;
mod membership;

pub use controller::{UNCLEAN_CONFIG, parse_bool, unclean_allowed, unclean_wanted};

/// First pause between two tries of a proposal that found no controller; doubles up to
/// [`RETRY_MAX_MS`].
const RETRY_MIN_MS: u64 = 25;
const RETRY_MAX_MS: u64 = 500;
/// How long start-up waits for the quorum's first command (or, on a restart, the replay of the
/// committed log) before the node serves clients anyway.
const READY_WAIT_MS_MAX: u64 = 5_000;
/// Longest pause between two rounds of the controller's duties (a new controller commits the
/// cluster's first command within it).
const CONTROLLER_TICK_MS_MAX: u64 = 100;

/// Who this node is and what it brings, for [`Quorum::start`].
pub struct QuorumSetup {
    pub node_id: i32,
    /// The data directory's id (node.toml): peers refuse a voter that comes back with another.
    pub directory_id: Uuid,
    pub role: Role,
    /// `<data_dir>/meta/raft`.
    pub dir: PathBuf,
    pub registration: BrokerRegistration,
    /// This node's own cluster id (node.toml): the cluster's if this node forms it.
    pub cluster_id: String,
    /// Topics of a single-node release's data directory, imported if this node forms the cluster.
    pub import: Vec<TopicImport>,
    pub next_producer_id: i64,
}

/// The quorum's timings, from the node config.
#[derive(Debug, Clone)]
struct Timing {
    broker_heartbeat: Duration,
    session_timeout: Duration,
    /// `raft_election_timeout_min_ms`: a leader with a quorum's acknowledgement more recent than
    /// this is surely still the leader (no follower can have started an election yet).
    election_timeout_min: Duration,
    /// Longest wait for one write on the leader (`controller_request_ms_max`).
    write_timeout: Duration,
    /// `unclean_leader_election_enable`: what applies where neither the topic nor the cluster
    /// default says.
    unclean_default: bool,
    /// `auto_leader_rebalance_enable`.
    auto_rebalance: bool,
    /// `leader_imbalance_check_interval_ms`.
    imbalance_check: Duration,
}

pub struct Quorum {
    node_id: i32,
    raft: Raft,
    image: ImageCell,
    peers: PeerClient,
    timing: Timing,
    setup: QuorumSetup,
    /// Controller side: the last heartbeat of each broker (incarnation, when).
    seen: Mutex<HashMap<i32, (Uuid, Instant)>>,
    /// Controller side: the term this node leads in and since when (the fencing grace period).
    leading: Mutex<Option<(u64, Instant)>>,
    /// Controller side: brokers whose unfencing is being committed (one write each at a time).
    unfencing: Mutex<std::collections::HashSet<i32>>,
    /// Controller side: brokers whose fencing is being committed. Marked while `seen` is locked,
    /// so a heartbeat recorded after the broker was found stale sees the mark and gets no lease
    /// whose index could miss the fencing (`lease`).
    fencing: Mutex<std::collections::HashSet<i32>>,
    /// Controller side: what the election duties remember between rounds.
    elections: Mutex<controller::ElectionState>,
    /// On while this node leads: the state machine then logs each election and ISR change.
    change_log: Arc<AtomicBool>,
    /// Broker side: how long this node's image may be trusted about what it holds (`lease`).
    lease: lease::Lease,
    /// The highest index handed to the metadata log to append (`LogStore::submitted`): on the
    /// controller, every entry it has logged, a fencing whose write is stalled included.
    logged: Arc<std::sync::atomic::AtomicU64>,
    stop: watch::Sender<bool>,
}

impl Quorum {
    /// Opens the store, starts Raft and the peer listener, forms or joins the quorum, and starts
    /// the node's loops. The store's files go through `storage` (the node's disk backend).
    /// Returns once Raft runs; the quorum itself may still be forming.
    pub async fn start(
        config: &Config,
        setup: QuorumSetup,
        storage: Arc<dyn crate::io::Storage>,
    ) -> anyhow::Result<Arc<Quorum>> {
        let (image_tx, image_rx) = watch::channel(Arc::new(MetadataImage::default()));
        let dir = setup.dir.clone();
        let (log, sm) = tokio::task::block_in_place(|| super::store::open(&dir, storage, image_tx))
            .map_err(|e| anyhow::anyhow!("metadata store: {e}"))?;
        let change_log = sm.change_log_switch();
        let logged = log.submitted();
        let transport = TransportConfig {
            rpc_timeout_ms: config.raft_rpc_timeout_ms,
            controller_timeout_ms: config.controller_request_ms_max,
            source_ip: config.peer_source_ip,
            ..TransportConfig::default()
        };
        transport.check().map_err(|e| anyhow::anyhow!(e))?;
        let raft_config = openraft::Config {
            cluster_name: "bramble".to_string(),
            heartbeat_interval: config.raft_heartbeat_ms,
            election_timeout_min: config.raft_election_timeout_min_ms,
            election_timeout_max: config.raft_election_timeout_max_ms,
            install_snapshot_timeout: config.raft_rpc_timeout_ms.max(1) * 4,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.raft_snapshot_entries),
            max_in_snapshot_log_to_keep: config.raft_snapshot_entries / 2,
            snapshot_max_chunk_size: transport.snapshot_chunk_bytes_max() as u64,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| anyhow::anyhow!("raft settings: {e}"))?;
        let local = LocalNode {
            node_id: raft_id(setup.node_id),
            directory_id: setup.directory_id,
            image: image_rx.clone(),
            peer_check: voter_check(image_rx.clone(), &setup.role),
        };
        let network = NetworkFactory::new(local.clone(), transport.clone());
        let raft = Raft::new(
            raft_id(setup.node_id),
            Arc::new(raft_config),
            network,
            log,
            sm,
        )
        .await
        .map_err(|e| anyhow::anyhow!("starting raft: {e}"))?;
        let (stop, _) = watch::channel(false);
        let quorum = Arc::new(Quorum {
            node_id: setup.node_id,
            raft: raft.clone(),
            image: image_rx.clone(),
            peers: PeerClient::new(local.clone(), transport.clone()),
            timing: Timing {
                broker_heartbeat: Duration::from_millis(config.broker_heartbeat_ms),
                session_timeout: Duration::from_millis(config.broker_session_timeout_ms),
                election_timeout_min: Duration::from_millis(config.raft_election_timeout_min_ms),
                write_timeout: Duration::from_millis(config.controller_request_ms_max),
                unclean_default: config.unclean_leader_election_enable,
                auto_rebalance: config.auto_leader_rebalance_enable,
                imbalance_check: Duration::from_millis(config.leader_imbalance_check_interval_ms),
            },
            setup,
            seen: Mutex::new(HashMap::new()),
            leading: Mutex::new(None),
            unfencing: Mutex::new(std::collections::HashSet::new()),
            fencing: Mutex::new(std::collections::HashSet::new()),
            elections: Mutex::new(controller::ElectionState::default()),
            lease: lease::Lease::default(),
            logged,
            change_log,
            stop,
        });
        if let Some(addr) = &config.raft_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen for peers on {addr}: {e}"))?;
            let service = Arc::new(PeerService {
                peer_check: local.peer_check.clone(),
                local,
                config: transport,
                raft: Arc::new(raft.clone()),
                controller: Arc::new(ControllerHandle(Arc::downgrade(&quorum))),
            });
            let mut stopped = quorum.stop.subscribe();
            tokio::spawn(super::network::serve(listener, service, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
        }
        quorum.form().await;
        tokio::spawn(membership::broker_loop(quorum.clone()));
        tokio::spawn(controller_loop(quorum.clone()));
        Ok(quorum)
    }

    /// Voters initialize the quorum (safe on every voter with the same list; a formed quorum
    /// refuses it); a `--join` node asks to be added as a learner.
    async fn form(self: &Arc<Self>) {
        match &self.setup.role {
            Role::Voter(voters) => {
                let members: BTreeMap<NodeId, BasicNode> = voters
                    .iter()
                    .map(|v| (v.id, BasicNode::new(v.raft_addr.clone())))
                    .collect();
                match self.raft.initialize(members).await {
                    Ok(()) => tracing::info!(
                        voters = voters.len(),
                        "metadata quorum initialized; waiting for a majority of the voters to elect a controller"
                    ),
                    Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                        tracing::info!("metadata quorum already formed; rejoining it")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not initialize the metadata quorum")
                    }
                }
            }
            Role::Learner { join } => {
                tokio::spawn(membership::join_loop(self.clone(), join.clone()));
            }
        }
    }

    /// Waits (bounded) until the image holds the cluster's first command, so a node that has
    /// metadata serves it from its first request. False if the bound passed first: no quorum
    /// answered (a majority of the voters is not up yet). True does not mean one did: a log
    /// whose every entry is known committed is applied without a peer.
    pub async fn wait_ready(&self) -> bool {
        // What the local log held at start: applied once this node knows it is committed (at
        // once on a lone voter; from the leader's first heartbeat elsewhere).
        let logged = self.raft.metrics().borrow().last_log_index;
        let mut cell = self.image.clone();
        let mut metrics = self.raft.metrics();
        let ready = async {
            let _ = cell.wait_for(|i| i.cluster_id.is_some()).await;
            let _ = metrics
                .wait_for(|m| m.last_applied.map(|l| l.index) >= logged)
                .await;
        };
        let answered = tokio::time::timeout(Duration::from_millis(READY_WAIT_MS_MAX), ready)
            .await
            .is_ok();
        if !answered {
            tracing::warn!(
                "no metadata quorum yet: serving with what this node knows; admin requests fail with a retriable error until a controller is elected"
            );
        }
        answered
    }

    /// Stops the loops, the peer listener and Raft.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not stop cleanly");
        }
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    fn is_leader(&self) -> bool {
        self.leader() == Some(raft_id(self.node_id))
    }

    /// The raft address of node `id`, from the quorum's membership.
    fn addr_of(&self, id: NodeId) -> Option<String> {
        let metrics = self.raft.metrics().borrow().clone();
        let found = metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone());
        found.or_else(|| match &self.setup.role {
            Role::Voter(voters) => voters
                .iter()
                .find(|v| v.id == id)
                .map(|v| v.raft_addr.clone()),
            Role::Learner { .. } => None,
        })
    }

    /// Commits on this node if it leads; `None` when it does not (the caller forwards).
    /// Bounded by `controller_request_ms_max`: with the quorum lost a leader's write never
    /// commits, and nothing may wait on it for ever.
    async fn write_here(&self, cmd: MetadataCommand) -> Option<Result<MetadataResponse, String>> {
        match tokio::time::timeout(self.timing.write_timeout, self.raft.client_write(cmd)).await {
            Ok(Ok(r)) => Some(Ok(r.data)),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => None,
            Ok(Err(e)) => Some(Err(e.to_string())),
            Err(_) => Some(Err(format!(
                "not committed within {} ms (no quorum?)",
                self.timing.write_timeout.as_millis()
            ))),
        }
    }

    /// Resolves, with why, if Raft stops for good (a storage error: a full or failing disk
    /// under `meta/raft`). The node then exits, so its supervisor restarts it, rather than
    /// serving an image that can no longer change.
    pub async fn fatal(&self) -> String {
        let mut metrics = self.raft.metrics();
        match metrics.wait_for(|m| m.running_state.is_err()).await {
            Ok(m) => match &m.running_state {
                Err(e) => e.to_string(),
                Ok(()) => "stopped".to_string(),
            },
            Err(_) => "raft stopped".to_string(),
        }
    }

    async fn propose_until(
        &self,
        cmd: MetadataCommand,
        deadline: Instant,
    ) -> Result<MetadataResponse, QuorumError> {
        let mut pause = RETRY_MIN_MS;
        let mut why = "no controller elected yet".to_string();
        loop {
            if self.stopped() {
                return Err(QuorumError::ShuttingDown);
            }
            let attempt = async {
                match self.leader() {
                    Some(id) if id == raft_id(self.node_id) => {
                        match self.write_here(cmd.clone()).await {
                            Some(Ok(r)) => Ok(r),
                            Some(Err(e)) => Err(e),
                            None => Err("leadership moved".to_string()),
                        }
                    }
                    Some(id) => {
                        let Some(addr) = self.addr_of(id) else {
                            return Err(format!("no address known for controller {id}"));
                        };
                        match self
                            .peers
                            .call(&addr, ControllerRequest::Propose(cmd.clone()))
                            .await
                        {
                            Ok(ControllerResponse::Applied(r)) => Ok(r),
                            Ok(other) => Err(format!("controller {id} answered {other:?}")),
                            Err(e) => Err(format!("controller {id} at {addr}: {e}")),
                        }
                    }
                    None => Err("no controller elected yet".to_string()),
                }
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(e)) => why = e,
                Err(_) => return Err(QuorumError::NoController(why)),
            }
            let next = Instant::now() + Duration::from_millis(pause);
            if next >= deadline {
                return Err(QuorumError::NoController(why));
            }
            tokio::time::sleep_until(next).await;
            pause = (pause * 2).min(RETRY_MAX_MS);
        }
    }

    /// Controller side of a heartbeat: remembers it, and unfences a returning broker.
    fn heard_from(self: &Arc<Self>, node_id: i32, incarnation: Uuid) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node_id, (incarnation, Instant::now()));
        let image = self.image.borrow().clone();
        let Some(b) = image.brokers.get(&node_id) else {
            return false;
        };
        if b.registration.incarnation != incarnation {
            return false;
        }
        // A stopping broker fenced itself on its way out: its last beats must not undo that.
        let fenced = b.fenced && !image.shutting_down.contains(&node_id);
        let first = self
            .unfencing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node_id);
        if fenced && first {
            let q = self.clone();
            tokio::spawn(async move {
                let cmd = MetadataCommand::UnfenceBroker {
                    node_id,
                    incarnation,
                };
                if let Some(Ok(_)) = q.write_here(cmd).await {
                    tracing::info!(node_id, "broker is back: unfenced");
                }
                q.unfencing
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&node_id);
            });
        } else if first {
            self.unfencing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&node_id);
        }
        true
    }
}

impl MetadataClient for Quorum {
    fn node_id(&self) -> i32 {
        self.node_id
    }

    fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    fn subscribe(&self) -> ImageCell {
        self.image.clone()
    }

    fn propose(
        &self,
        cmd: MetadataCommand,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<MetadataResponse, QuorumError>> {
        Box::pin(self.propose_until(cmd, Instant::now() + timeout))
    }

    fn controller_id(&self) -> Option<i32> {
        self.leader().map(broker_id)
    }

    fn lease_holds(&self) -> bool {
        self.lease_holds_now()
    }

    fn status(&self) -> QuorumStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let me = raft_id(self.node_id);
        let progress = |id: NodeId| -> i64 {
            if id == me {
                return m.last_log_index.map_or(0, |i| i as i64 + 1);
            }
            match &m.replication {
                Some(r) => r
                    .get(&id)
                    .map_or(-1, |l| l.map_or(0, |l| l.index as i64 + 1)),
                None => -1,
            }
        };
        let member = |id: NodeId| ReplicaStatus {
            node_id: broker_id(id),
            log_end_offset: progress(id),
            last_fetch_ms: -1,
            last_caught_up_ms: -1,
        };
        QuorumStatus {
            leader_id: m.current_leader.map(broker_id),
            term: m.current_term,
            commit_index: m.last_applied.map(|l| l.index),
            voters: membership.voter_ids().map(member).collect(),
            observers: membership.learner_ids().map(member).collect(),
        }
    }
}

/// Refuses a voter whose data directory is not the one the quorum registered for its id: a
/// reflashed card has lost its vote, and voting again could elect two leaders in one term. Run
/// on both ends of every peer connection.
fn voter_check(image: ImageCell, role: &Role) -> Arc<dyn super::network::PeerCheck> {
    let voters: Vec<NodeId> = match role {
        Role::Voter(v) => v.iter().map(|v| v.id).collect(),
        Role::Learner { .. } => Vec::new(),
    };
    Arc::new(move |node: NodeId, dir: Uuid| {
        let image = image.borrow();
        match image.brokers.get(&broker_id(node)) {
            Some(b) if voters.contains(&node) && b.registration.directory_id != dir => {
                Err(format!(
                    "voter {node} presents data directory {dir}, but the cluster knows it by {}: a voter whose disk was wiped has lost its vote and must not rejoin under the same id",
                    b.registration.directory_id
                ))
            }
            _ => Ok(()),
        }
    })
}

/// The controller side of the peer transport: a weak handle, so the server never keeps a
/// stopped quorum alive.
struct ControllerHandle(std::sync::Weak<Quorum>);

impl ControllerService for ControllerHandle {
    fn handle(
        &self,
        _from: NodeId,
        req: ControllerRequest,
    ) -> BoxFuture<'static, ControllerResponse> {
        let Some(q) = self.0.upgrade() else {
            return Box::pin(async { ControllerResponse::Unavailable("stopping".into()) });
        };
        Box::pin(async move { q.serve_controller(req).await })
    }
}

impl Quorum {
    async fn serve_controller(self: Arc<Self>, req: ControllerRequest) -> ControllerResponse {
        let not_controller = |q: &Quorum| ControllerResponse::NotController { leader: q.leader() };
        match req {
            ControllerRequest::Propose(cmd) => match self.write_here(cmd).await {
                Some(Ok(r)) => ControllerResponse::Applied(r),
                Some(Err(e)) => ControllerResponse::Unavailable(e),
                None => not_controller(&self),
            },
            ControllerRequest::Heartbeat {
                node_id,
                incarnation,
            } => {
                if !self.is_leader() {
                    return not_controller(&self);
                }
                let registered = self.heard_from(node_id, incarnation);
                if self.being_fenced(node_id) {
                    return ControllerResponse::Unavailable(
                        "this broker's fencing is being committed".into(),
                    );
                }
                let Some(index) = self.confirmed_grant_index().await else {
                    // Maybe no longer the controller: grant no lease (the broker keeps its
                    // registration and beats again).
                    return ControllerResponse::Unavailable(
                        "leadership not confirmed by a quorum within the election timeout".into(),
                    );
                };
                // The broker counts the grant once its image has everything committed so far
                // and everything this controller logged, a fencing of it included.
                ControllerResponse::HeartbeatLease {
                    registered,
                    applied: Some(index),
                }
            }
            ControllerRequest::Join { node_id, raft_addr } => {
                if !self.is_leader() {
                    // Pass it on: the joining node knows only the voter it was pointed at.
                    let Some(addr) = self.leader().and_then(|l| self.addr_of(l)) else {
                        return not_controller(&self);
                    };
                    return match self
                        .peers
                        .call(&addr, ControllerRequest::Join { node_id, raft_addr })
                        .await
                    {
                        Ok(r) => r,
                        Err(e) => ControllerResponse::Unavailable(e.to_string()),
                    };
                }
                let node = BasicNode::new(raft_addr.clone());
                match self.raft.add_learner(raft_id(node_id), node, false).await {
                    Ok(_) => {
                        tracing::info!(node_id, %raft_addr, "added a broker-only node to the quorum as a learner");
                        ControllerResponse::Joined
                    }
                    Err(e) => ControllerResponse::Unavailable(e.to_string()),
                }
            }
        }
    }
}

/// The controller's duties while this node leads: the first command, and fencing.
async fn controller_loop(q: Arc<Quorum>) {
    let mut stop = q.stop.subscribe();
    let tick = (q.timing.broker_heartbeat / 2).min(Duration::from_millis(CONTROLLER_TICK_MS_MAX));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let term = q.raft.metrics().borrow().current_term;
        if !q.is_leader() {
            q.change_log.store(false, Ordering::Relaxed);
            *q.leading.lock().unwrap_or_else(|e| e.into_inner()) = None;
            q.elections
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .reset();
            continue;
        }
        q.change_log.store(true, Ordering::Relaxed);
        let since = {
            let mut leading = q.leading.lock().unwrap_or_else(|e| e.into_inner());
            match *leading {
                Some((t, since)) if t == term => since,
                _ => {
                    tracing::info!(node_id = q.node_id, term, "this node is the controller");
                    let now = Instant::now();
                    *leading = Some((term, now));
                    now
                }
            }
        };
        let image = q.image.borrow().clone();
        if image.cluster_id.is_none() {
            let init = MetadataCommand::InitCluster {
                cluster_id: q.setup.cluster_id.clone(),
                node_id: q.node_id,
                topics: q.setup.import.clone(),
                next_producer_id: q.setup.next_producer_id,
            };
            match q.write_here(init).await {
                Some(Ok(_)) => tracing::info!(
                    cluster_id = %q.setup.cluster_id,
                    imported_topics = q.setup.import.len(),
                    "cluster formed"
                ),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "could not commit the cluster's first command")
                }
                None => {}
            }
            continue;
        }
        let now = Instant::now();
        let stale: Vec<(i32, Uuid)> = {
            let seen = q.seen.lock().unwrap_or_else(|e| e.into_inner());
            let stale: Vec<(i32, Uuid)> = image
                .brokers
                .values()
                .filter(|b| !b.fenced)
                .filter(|b| {
                    let last = match seen.get(&b.node_id()) {
                        Some((inc, at)) if *inc == b.registration.incarnation => (*at).max(since),
                        _ => since,
                    };
                    now.duration_since(last) > q.timing.session_timeout
                })
                .map(|b| (b.node_id(), b.registration.incarnation))
                .collect();
            q.fencing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(stale.iter().map(|(id, _)| *id));
            stale
        };
        for (node_id, incarnation) in stale {
            let cmd = MetadataCommand::FenceBroker {
                node_id,
                incarnation,
            };
            if let Some(Ok(MetadataResponse::Done)) = q.write_here(cmd).await {
                tracing::warn!(
                    node_id,
                    session_timeout_ms = q.timing.session_timeout.as_millis() as u64,
                    "broker missed its session timeout: fenced (its partitions move to other in-sync replicas, or wait for it)"
                );
            }
            q.fencing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&node_id);
        }
        controller::election_duties(&q, &image).await;
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_elect;
