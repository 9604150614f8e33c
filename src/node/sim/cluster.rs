//! node::sim::cluster: three real nodes ([`crate::node::Node`]) in this process, each in its own
//! tokio runtime (one worker thread) on its own [`CrashStorage`], reached through [`SimNet`]'s
//! proxies. Node i listens (Kafka, Raft) on its own loopback IP and its peer connections leave
//! from it (`peer_source_ip`), so the network knows who sends what.
//!
//! A crash pulls the node's plug (its storage keeps what a power cut under the chosen
//! [`CutMode`] could leave) and then drops its runtime: every task and socket of the node goes at
//! once, its disk writer thread finds the disk dead. A restart powers the storage on and starts a
//! new node on it, as `bramble serve` would start on the same data directory.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::Instrument;

use super::net::SimNet;
use super::schedule::NODES;
use crate::config::Config;
use crate::io::crash::{CrashStorage, CutMode};
use crate::io::{Backend, DiskWriter};
use crate::node::Node;

/// Port of every node's Raft listener, on the node's own IP (so it is the same after a restart).
const RAFT_PORT: u16 = 9192;
/// Longest a crashed node's runtime gets to drop its tasks (and close its listeners) before the
/// crash returns; the blocking threads it leaves find a dead disk.
const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Blocking threads per node (log reads, opens).
const NODE_BLOCKING_THREADS: usize = 8;

/// Clusters started by this process so far: each gets its own IPs (several run at once).
static CLUSTERS: AtomicU32 = AtomicU32::new(0);

/// The settings of simulated node `index`, timings scaled down from tests/compat/cluster.py's
/// CLUSTER_TIMING so a failover takes a fraction of a second.
fn config(index: usize, ip: IpAddr, data_dir: &std::path::Path, proxies: &Proxies) -> Config {
    let voters: Vec<String> = (0..NODES)
        .map(|i| format!("{}@{}", i + 1, proxies.raft[i]))
        .collect();
    let mut c = Config {
        node_id: Some(index as i32 + 1),
        listen: format!("{ip}:0"),
        advertise: Some(proxies.kafka[index].to_string()),
        data_dir: data_dir.to_path_buf(),
        raft_listen: Some(format!("{ip}:{RAFT_PORT}")),
        raft_advertise: Some(proxies.raft[index].to_string()),
        voters: Some(voters.join(",")),
        peer_source_ip: Some(ip),
        io_backend: Backend::Std,
        raft_heartbeat_ms: 50,
        raft_election_timeout_min_ms: 300,
        raft_election_timeout_max_ms: 600,
        raft_rpc_timeout_ms: 500,
        broker_heartbeat_ms: 100,
        broker_session_timeout_ms: 1_000,
        controller_request_ms_max: 2_000,
        replica_lag_ms_max: 500,
        replica_fetch_wait_ms_max: 100,
        replica_fetch_backoff_ms: 50,
        hw_checkpoint_ms: 100,
        min_insync_replicas: 2,
        default_replication_factor: 3,
        auto_create_topics: false,
        leader_imbalance_check_interval_ms: 1_000,
        controlled_shutdown_ms_max: 1_000,
        blocking_threads_max: NODE_BLOCKING_THREADS,
        ..Config::default()
    };
    c.worker_threads = 1;
    c
}

/// Where the nodes are reached: their proxies.
pub(crate) struct Proxies {
    pub kafka: Vec<SocketAddr>,
    pub raft: Vec<SocketAddr>,
}

struct SimNode {
    ip: IpAddr,
    config: Config,
    storage: CrashStorage,
    _dir: tempfile::TempDir,
    /// The node's Kafka listener while it runs (the proxy's target).
    target: Arc<Mutex<Option<SocketAddr>>>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Why the running node's task ended, once it has.
    exit: Arc<Mutex<Option<String>>>,
}

/// The three nodes and their network.
pub(crate) struct Cluster {
    pub net: Arc<SimNet>,
    pub proxies: Proxies,
    nodes: Vec<SimNode>,
    seed: u64,
    cuts: u64,
}

impl Cluster {
    /// Builds the network (proxies run on `driver`) and the nodes' storage; starts nothing.
    pub(crate) fn new(seed: u64, driver: &tokio::runtime::Runtime) -> anyhow::Result<Cluster> {
        let slot = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        // 127/8 is all loopback: a second octet from the pid keeps test processes apart.
        let octet = 100 + (std::process::id() % 150) as u8;
        let ips: Vec<IpAddr> = (0..NODES)
            .map(|i| {
                let (hi, lo) = ((slot >> 8) as u8, slot as u8);
                IpAddr::V4(Ipv4Addr::new(127, octet.wrapping_add(hi), lo, 10 + i as u8))
            })
            .collect();
        let net = SimNet::new(ips.clone(), seed);
        let targets: Vec<_> = (0..NODES).map(|_| Arc::new(Mutex::new(None))).collect();
        let proxies = driver.block_on(async {
            let mut kafka = Vec::new();
            let mut raft = Vec::new();
            for (i, ip) in ips.iter().enumerate() {
                let l = TcpListener::bind("127.0.0.1:0").await?;
                kafka.push(l.local_addr()?);
                net.proxy(l, i + 1, targets[i].clone());
                let l = TcpListener::bind("127.0.0.1:0").await?;
                raft.push(l.local_addr()?);
                let to = Arc::new(Mutex::new(Some(SocketAddr::new(*ip, RAFT_PORT))));
                net.proxy(l, i + 1, to);
            }
            anyhow::Ok(Proxies { kafka, raft })
        })?;
        let mut nodes = Vec::new();
        for (i, ip) in ips.into_iter().enumerate() {
            let dir = tempfile::tempdir()?;
            nodes.push(SimNode {
                ip,
                config: config(i, ip, dir.path(), &proxies),
                storage: CrashStorage::new(dir.path()),
                _dir: dir,
                target: targets[i].clone(),
                runtime: None,
                exit: Arc::new(Mutex::new(None)),
            });
        }
        for n in &nodes {
            n.config.validate()?;
        }
        Ok(Cluster {
            net,
            proxies,
            nodes,
            seed,
            cuts: 0,
        })
    }

    /// The Kafka addresses clients bootstrap from.
    pub(crate) fn bootstrap(&self) -> Vec<String> {
        self.proxies.kafka.iter().map(|a| a.to_string()).collect()
    }

    /// Powers node `i`'s storage on and starts a node on it.
    pub(crate) fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &mut self.nodes[i];
        n.storage.power_on();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(NODE_BLOCKING_THREADS)
            .thread_name(format!("sim-node-{}", i + 1))
            .enable_all()
            .build()?;
        let exit = Arc::new(Mutex::new(None));
        n.exit = exit.clone();
        let run = run_node(n.config.clone(), n.ip, n.storage.clone(), n.target.clone());
        let span = tracing::info_span!(parent: None, "node", seed = self.seed, id = i + 1);
        runtime.spawn(
            async move {
                let why = match run.await {
                    Ok(()) => "stopped".to_string(),
                    Err(e) => format!("{e:#}"),
                };
                tracing::warn!(why, "node ended");
                *exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            }
            .instrument(span),
        );
        n.runtime = Some(runtime);
        Ok(())
    }

    /// Whether node `i` runs.
    pub(crate) fn is_up(&self, i: usize) -> bool {
        self.nodes[i].runtime.is_some()
    }

    /// Why node `i` ended by itself, if it did (it runs no more: a restart is due).
    pub(crate) fn exited(&self, i: usize) -> Option<String> {
        self.nodes[i]
            .exit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Power cut of node `i` under `mode`; then its process is gone.
    pub(crate) fn crash(&mut self, i: usize, mode: CutMode) {
        self.cuts += 1;
        let cut_seed = self.seed ^ self.cuts << 40 ^ i as u64;
        if let Err(e) = self.nodes[i].storage.pull_plug(mode, cut_seed) {
            tracing::error!(node = i + 1, error = %e, "pulling the plug failed");
        }
        self.stop_process(i);
    }

    /// Every node's power cut at once (each storage with its own mode), then the processes.
    pub(crate) fn power_cut(&mut self, modes: [CutMode; NODES]) {
        self.cuts += 1;
        for (i, mode) in modes.iter().enumerate() {
            let cut_seed = self.seed ^ self.cuts << 40 ^ i as u64;
            if let Err(e) = self.nodes[i].storage.pull_plug(*mode, cut_seed) {
                tracing::error!(node = i + 1, error = %e, "pulling the plug failed");
            }
        }
        for i in 0..NODES {
            self.stop_process(i);
        }
    }

    /// Restarts node `i`'s process (its storage keeps everything: the machine stayed up).
    pub(crate) fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.stop_process(i);
        self.start(i)
    }

    fn stop_process(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        *n.target.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Some(runtime) = n.runtime.take() {
            runtime.shutdown_timeout(NODE_STOP_TIMEOUT);
        }
    }

    /// Stops everything (the end of a run): plugs pulled so nothing more lands on disk.
    pub(crate) fn stop(&mut self) {
        for i in 0..NODES {
            let _ = self.nodes[i].storage.pull_plug(CutMode::DropUnsynced, 0);
            self.stop_process(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One node's life: the Kafka listener on its IP (published to its proxy), a disk writer on its
/// storage, then [`Node::start`] and [`Node::serve`] until the runtime is dropped.
async fn run_node(
    config: Config,
    ip: IpAddr,
    storage: CrashStorage,
    target: Arc<Mutex<Option<SocketAddr>>>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind((ip, 0)).await?;
    *target.lock().unwrap_or_else(|e| e.into_inner()) = Some(listener.local_addr()?);
    let writer = tokio::task::block_in_place(|| {
        DiskWriter::start_with(config.writer_config(), Arc::new(storage))
    })?;
    let node = Node::start(config, listener, writer).await?;
    node.serve(std::future::pending(), || {}).await
}
