//! node: one bramble node composed from its parts, what `bramble serve` runs once its settings
//! are resolved: the broker on its disk writer, its member of the metadata quorum (and the
//! controller when it leads), the image follower, replication and the Kafka listener.
//!
//! Process-wide concerns stay with the caller (`main.rs`): signals, systemd's notify and
//! watchdog, tracing, rlimits, the runtime. That lets a test run several nodes in one process,
//! each on its own storage (the cluster simulation in [`sim`]).
//!
//! A node starts in two steps: [`Node::start`] opens the data directory, starts the quorum and
//! waits (bounded) for the metadata it already had; [`Node::serve`] answers clients until `stop`
//! resolves or the quorum's store fails, then hands its leaderships away and shuts down.

#[cfg(test)]
mod sim;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::broker::{Advertised, Broker};
use crate::config::{Config, split_host_port};
use crate::io::DiskWriter;
use crate::meta::quorum::Quorum;

/// Longest a starting node waits for its partitions to take their roles (its image caught up
/// with a controller) before it serves anyway, every partition held.
const ROLES_WAIT_MS_MAX: u64 = 5_000;
/// How often the start checks whether the roles are taken.
const ROLES_POLL_MS: u64 = 10;

/// A started node: serving once [`Node::serve`] runs.
pub struct Node {
    broker: Arc<Broker>,
    quorum: Arc<Quorum>,
    listener: TcpListener,
    bound: SocketAddr,
    follow_stop: tokio::sync::watch::Sender<bool>,
    follower: JoinHandle<()>,
    replication: JoinHandle<()>,
}

impl Node {
    /// Opens `config.data_dir` through `writer`'s storage (the metadata quorum's store too),
    /// starts this node's member of the quorum and the loops that follow it. Clients queue in
    /// `listener`'s backlog until [`Node::serve`].
    pub async fn start(
        mut config: Config,
        listener: TcpListener,
        writer: DiskWriter,
    ) -> anyhow::Result<Node> {
        let bound = listener.local_addr()?;
        let advertised = advertised(&config, bound)?;
        // From here on the setting names the backend in use (DescribeConfigs shows it).
        config.io_backend = writer.backend().parse().unwrap_or(config.io_backend);
        let io_backend = writer.backend();
        let storage = writer.storage().clone();
        let data_dir = config.data_dir.clone();
        let broker =
            tokio::task::block_in_place(|| Broker::open(config, advertised.clone(), writer))
                .with_context(|| format!("opening data directory {}", data_dir.display()))?;
        let broker = Arc::new(broker);
        // Partitions take roles only once the image is known to be current (`follow_image`):
        // what this node applied before it stopped may be stale (it was replaced as leader).
        broker.hold_roles();
        let quorum = start_quorum(&broker, &data_dir, storage).await?;
        broker.attach_quorum(quorum.clone());
        broker.producer_ids.use_quorum(quorum.clone());
        tracing::info!(
            node_id = broker.identity.node_id,
            data_dir = %data_dir.display(),
            advertised = %format!("{}:{}", advertised.host, advertised.port),
            io_backend,
            "listening on {bound}"
        );
        let caught_up = quorum.wait_ready().await;
        // The local registry follows what was applied before the first client is served.
        broker
            .reconcile(&crate::meta::MetadataClient::image(&*quorum))
            .await;
        // Only now: the image has caught up with what this node applied before it stopped.
        let (follow_stop, follow_rx) = tokio::sync::watch::channel(false);
        let follower = tokio::spawn(crate::broker::follow_image(broker.clone(), follow_rx));
        let replication = tokio::spawn(crate::broker::run_replication(
            broker.clone(),
            follow_stop.subscribe(),
        ));
        // Serve (and tell systemd READY) once the partitions have taken their roles; without a
        // controller to catch up with, serve after ROLES_WAIT_MS_MAX with them held. A node whose
        // image did not even catch up with its own log (wait_ready's bound passed: no quorum
        // answered) has no controller to wait for: it serves at once, partitions held, rather
        // than after both bounds.
        let roles_wait_ms = if caught_up { ROLES_WAIT_MS_MAX } else { 0 };
        let roles_wait = tokio::time::Instant::now() + Duration::from_millis(roles_wait_ms);
        while !broker.roles_taken() && tokio::time::Instant::now() < roles_wait {
            tokio::time::sleep(Duration::from_millis(ROLES_POLL_MS)).await;
        }
        if !broker.roles_taken() {
            tracing::warn!(
                "not caught up with a controller yet: serving with every partition held (no leader or follower role) until then"
            );
        }
        tracing::info!(
            cluster_id = %broker.cluster_id(),
            controller = broker.controller_id(),
            "serving"
        );
        Ok(Node {
            broker,
            quorum,
            listener,
            bound,
            follow_stop,
            follower,
            replication,
        })
    }

    /// The node's broker (topics, partitions, the registry).
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The address the Kafka listener is bound to.
    pub fn bound(&self) -> SocketAddr {
        self.bound
    }

    /// Serves clients until `stop` resolves (then, before the listener closes, leaderships move
    /// to other in-sync replicas: Kafka's controlled shutdown, bounded by
    /// `controlled_shutdown_ms_max`) or the quorum's store fails (an error: the node must
    /// restart). `stopping` runs once either happens, before connections drain.
    pub async fn serve(
        self,
        stop: impl Future<Output = ()> + Send,
        stopping: impl FnOnce() + Send,
    ) -> anyhow::Result<()> {
        let failed = Arc::new(std::sync::Mutex::new(None::<String>));
        let quorum = self.quorum.clone();
        let failed_in = failed.clone();
        let handover = Duration::from_millis(self.broker.config.controlled_shutdown_ms_max);
        let shutdown = async move {
            tokio::select! {
                () = stop => quorum.controlled_shutdown(handover).await,
                why = quorum.fatal() => {
                    tracing::error!(error = %why, "the metadata quorum stopped (its store failed): shutting down so the node restarts");
                    *failed_in.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                }
            }
            stopping();
        };
        crate::server::run(self.broker, self.listener, shutdown).await;
        let _ = self.follow_stop.send(true);
        let _ = self.follower.await;
        let _ = self.replication.await;
        self.quorum.shutdown().await;
        if let Some(why) = failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bail!("metadata quorum stopped: {why}");
        }
        Ok(())
    }
}

/// What clients are told to connect to: `advertise`, else the bound address if concrete.
fn advertised(config: &Config, bound: SocketAddr) -> anyhow::Result<Advertised> {
    let (host, port) = match &config.advertise {
        Some(a) => split_host_port(a).context("advertise must be host:port")?,
        None if bound.ip().is_unspecified() => {
            bail!("listening on {bound}: set --advertise to the host:port clients should use")
        }
        None => (bound.ip().to_string(), bound.port()),
    };
    Ok(Advertised {
        host,
        port: i32::from(port),
    })
}

/// Starts this node's part of the metadata quorum, its store on `storage`: a voter of `voters`
/// (this node alone by default), or a learner with `join`.
async fn start_quorum(
    broker: &Arc<Broker>,
    data_dir: &std::path::Path,
    storage: Arc<dyn crate::io::Storage>,
) -> anyhow::Result<Arc<Quorum>> {
    use crate::meta::{command::BrokerRegistration, quorum, settings};
    let config = &broker.config;
    let node_id = broker.identity.node_id;
    let role =
        settings::role(config, node_id).map_err(|e| anyhow::anyhow!("cluster settings: {e}"))?;
    let directory_id = broker
        .identity
        .directory_id
        .context("node.toml has no directory id")?;
    let (import, next_producer_id) = broker.legacy_import().await;
    let registration = BrokerRegistration {
        node_id,
        incarnation: uuid::Uuid::new_v4(),
        directory_id,
        host: broker.advertised.host.clone(),
        port: broker.advertised.port,
        rack: config.rack.clone(),
        raft_addr: settings::raft_advertised(config),
    };
    let setup = quorum::QuorumSetup {
        node_id,
        directory_id,
        role,
        dir: crate::meta::raft_dir(data_dir),
        registration,
        cluster_id: broker.identity.cluster_id.clone(),
        import,
        next_producer_id,
    };
    Quorum::start(config, setup, storage).await
}
