//! bramble's command line: `serve` runs a node; `topic …` and `group …` administer topics and
//! consumer groups over the Kafka protocol against any broker, like `kafka-topics` and
//! `kafka-consumer-groups`; `bench …` measures a broker or a disk (`bramble::bench`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use bramble::board::{self, Medium};
use bramble::broker::{Advertised, Broker};
use bramble::client::cluster::cli::{ClusterCommand, cluster};
use bramble::client::{Bootstrap, Client, admin};
use bramble::config::{Config, split_host_port};
use bramble::io::{Backend, DiskWriter};
use bramble::server::systemd;

#[derive(Parser)]
#[command(
    name = "bramble",
    version,
    about = "A Kafka-compatible event broker for small ARM boards"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker node (defaults: 127.0.0.1:9092, data in ./bramble-data).
    Serve(ServeArgs),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// List, describe (members, committed offsets, lag), delete consumer groups; reset offsets.
    #[command(subcommand)]
    Group(GroupCommand),
    /// The cluster: nodes, roles, controller and metadata quorum; partition leaders.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// A broker's identity, disk backend, fsync count and topic totals.
    Status {
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Benchmark a broker (produce, consume) or the disk under it; see `bramble bench --help`.
    #[command(subcommand)]
    Bench(bramble::bench::cli::BenchCommand),
    /// Board profiles: list them, or show one's settings and memory budgets.
    #[command(subcommand)]
    Board(BoardCommand),
}

#[derive(Subcommand)]
enum BoardCommand {
    /// The built-in profiles.
    List,
    /// A profile's settings on a medium, and its memory model against memory_max_bytes.
    Show {
        /// Profile name, profile file, or auto.
        name: String,
        #[arg(long, value_name = "sd|usb-ssd|nvme")]
        medium: Option<Medium>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// TOML file with the node's settings; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to bind, e.g. 0.0.0.0:9092 (port 0 picks a free port).
    #[arg(long)]
    listen: Option<String>,
    /// host:port clients should connect to; defaults to the bound address.
    #[arg(long)]
    advertise: Option<String>,
    #[arg(long)]
    node_id: Option<i32>,
    /// Rack of this node (Kafka's broker.rack): replicas of a partition go to distinct racks.
    #[arg(long)]
    rack: Option<String>,
    /// Address the metadata quorum's peer transport binds to, e.g. 0.0.0.0:9192.
    #[arg(long, value_name = "IP:PORT")]
    raft_listen: Option<String>,
    /// The quorum's voters, e.g. 1@pi1:9192,2@pi2:9192,3@pi3:9192 (controller.quorum.voters).
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    voters: Option<String>,
    /// Join the cluster of this voter (its raft address) as a broker-only node (a learner).
    #[arg(long, value_name = "HOST:PORT")]
    join: Option<String>,
    /// host:port other nodes reach this node's quorum transport at (default: --raft-listen).
    #[arg(long, value_name = "HOST:PORT")]
    raft_advertise: Option<String>,
    /// Let the controller elect a live replica outside the ISR when no in-sync one is left.
    #[arg(long, value_name = "BOOL")]
    unclean_leader_election_enable: Option<bool>,
    /// Hand leadership back to preferred replicas once they are in sync again.
    #[arg(long, value_name = "BOOL")]
    auto_leader_rebalance_enable: Option<bool>,
    /// How often the controller checks for partitions off their preferred leader.
    #[arg(long, value_name = "MS")]
    leader_imbalance_check_interval_ms: Option<u64>,
    /// Longest a stopping node waits for its leaderships to move away (SIGTERM).
    #[arg(long, value_name = "MS")]
    controlled_shutdown_ms_max: Option<u64>,
    /// Disk writer backend: auto (io_uring if available, else std), uring, or std.
    #[arg(long, value_name = "auto|uring|std")]
    io_backend: Option<Backend>,
    /// Board profile (see `bramble board list`), a profile file, or `auto` (from
    /// /proc/device-tree/model). The config file and flags override it.
    #[arg(long, value_name = "NAME|auto|FILE")]
    board: Option<String>,
    /// The medium under the data directory; picks the board's flush policy.
    #[arg(long, value_name = "sd|usb-ssd|nvme")]
    medium: Option<Medium>,
    /// Check the settings (profile, file, flags, memory budgets) and exit without serving.
    #[arg(long)]
    check: bool,
}

#[derive(Subcommand)]
enum TopicCommand {
    Create {
        name: String,
        #[arg(long, default_value_t = -1)]
        partitions: i32,
        #[arg(long, default_value_t = -1)]
        replication_factor: i16,
        /// Topic config as key=value; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    List {
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    Describe {
        name: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    Delete {
        name: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
}

#[derive(Subcommand)]
enum GroupCommand {
    List {
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    Describe {
        name: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    Delete {
        name: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Move an empty group's committed offsets for every partition of a topic.
    #[command(group(clap::ArgGroup::new("to").required(true)))]
    ResetOffsets {
        name: String,
        #[arg(long)]
        topic: String,
        #[arg(long, group = "to")]
        to_earliest: bool,
        #[arg(long, group = "to")]
        to_latest: bool,
        #[arg(long, group = "to", value_name = "N")]
        to_offset: Option<i64>,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Topic(_)
            | Command::Group(_)
            | Command::Cluster(_)
            | Command::Status { .. }
            | Command::Board(_)
    ) {
        print_to_pipes_quietly();
    }
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Topic(cmd) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(topic(cmd))
        }
        Command::Group(cmd) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(group(cmd))
        }
        Command::Cluster(cmd) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(cluster(cmd))
        }
        Command::Status { bootstrap } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(status(&bootstrap.bootstrap_server))
        }
        Command::Bench(cmd) => Ok(bramble::bench::cli::run(cmd)?),
        Command::Board(cmd) => board(cmd),
    }
}

/// The admin commands' output is meant for pipes (`bramble topic list | head`): a reader that
/// stops early ends the process quietly, as for any Unix tool, instead of a panic in println!.
/// Their sockets are unaffected: Rust writes to TCP with MSG_NOSIGNAL, so a closed connection
/// is still an error, not a signal. `serve` and `bench` keep ignoring SIGPIPE (their logs and
/// progress go to stderr, which must not kill a node when a pipe closes).
fn print_to_pipes_quietly() {
    // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(log_filter(
            std::env::var("RUST_LOG").ok(),
        )))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut resolved = board::resolve(args.board.as_deref(), args.medium, args.config.as_deref())?;
    let config = &mut resolved.config;
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.advertise {
        config.advertise = Some(v);
    }
    if let Some(v) = args.node_id {
        config.node_id = Some(v);
    }
    if let Some(v) = args.io_backend {
        config.io_backend = v;
    }
    if let Some(v) = args.rack {
        config.rack = Some(v);
    }
    if let Some(v) = args.raft_listen {
        config.raft_listen = Some(v);
    }
    if let Some(v) = args.voters {
        config.voters = Some(v);
    }
    if let Some(v) = args.join {
        config.join = Some(v);
    }
    if let Some(v) = args.raft_advertise {
        config.raft_advertise = Some(v);
    }
    if let Some(v) = args.unclean_leader_election_enable {
        config.unclean_leader_election_enable = v;
    }
    if let Some(v) = args.auto_leader_rebalance_enable {
        config.auto_leader_rebalance_enable = v;
    }
    if let Some(v) = args.leader_imbalance_check_interval_ms {
        config.leader_imbalance_check_interval_ms = v;
    }
    if let Some(v) = args.controlled_shutdown_ms_max {
        config.controlled_shutdown_ms_max = v;
    }
    resolved.check()?;
    if let Some(b) = &resolved.board {
        if let Some(warning) =
            board::machine_memory_bytes().and_then(|m| board::machine_fit_warning(&b.info, m))
        {
            tracing::warn!("{warning}");
        }
        tracing::info!(
            board = %b.info.name,
            medium = %b.medium,
            budgets_mib = b.budgets_bytes >> 20,
            memory_max_mib = b.info.memory_max_bytes >> 20,
            "board profile applied"
        );
    }
    if args.check {
        let board = resolved.config.board.as_deref().unwrap_or("none");
        println!("settings ok (board {board})");
        return Ok(());
    }
    let config = resolved.config;
    bramble::server::raise_open_files_limit(config.partitions_max, config.connections_max);
    bramble::server::memory::tune_allocator();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime
        .enable_all()
        .max_blocking_threads(config.blocking_threads_max);
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    let runtime = runtime.build()?;
    runtime.block_on(run_node(config))
}

async fn run_node(mut config: Config) -> anyhow::Result<()> {
    let signals = StopSignals::install();
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let bound = listener.local_addr()?;
    let advertised = match &config.advertise {
        Some(a) => split_host_port(a).context("advertise must be host:port")?,
        None if bound.ip().is_unspecified() => {
            bail!("listening on {bound}: set --advertise to the host:port clients should use")
        }
        None => (bound.ip().to_string(), bound.port()),
    };
    let advertised = Advertised {
        host: advertised.0,
        port: i32::from(advertised.1),
    };
    let writer = tokio::task::block_in_place(|| start_writer(&config))
        .context("starting the disk writer")?;
    // From here on the setting names the backend in use (DescribeConfigs shows it).
    config.io_backend = writer.backend().parse().unwrap_or(config.io_backend);
    let io_backend = writer.backend();
    let data_dir = config.data_dir.clone();
    let broker = tokio::task::block_in_place(|| Broker::open(config, advertised.clone(), writer))
        .with_context(|| format!("opening data directory {}", data_dir.display()))?;
    let broker = Arc::new(broker);
    let quorum = start_quorum(&broker, &data_dir).await?;
    broker.attach_quorum(quorum.clone());
    broker.producer_ids.use_quorum(quorum.clone());
    tracing::info!(
        node_id = broker.identity.node_id,
        data_dir = %data_dir.display(),
        advertised = %format!("{}:{}", advertised.host, advertised.port),
        io_backend,
        "listening on {bound}"
    );
    quorum.wait_ready().await;
    // The local registry follows what was applied before the first client is served.
    broker
        .reconcile(&bramble::meta::MetadataClient::image(&*quorum))
        .await;
    // Only now: the image has caught up with what this node applied before it stopped.
    let (follow_stop, follow_rx) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(bramble::broker::follow_image(broker.clone(), follow_rx));
    let replication = tokio::spawn(bramble::broker::run_replication(
        broker.clone(),
        follow_stop.subscribe(),
    ));
    tracing::info!(
        cluster_id = %broker.cluster_id(),
        controller = broker.controller_id(),
        "serving"
    );
    // Ready only now: the socket is bound (clients queue in its backlog until the accept loop
    // runs) and Broker::open has recovered every log.
    systemd::notify_ready(&ready_status(&broker, bound));
    let watchdog = systemd::spawn_watchdog(broker.clone());
    let failed = Arc::new(std::sync::Mutex::new(None::<String>));
    let quorum_for_shutdown = quorum.clone();
    let failed_in = failed.clone();
    let handover = std::time::Duration::from_millis(broker.config.controlled_shutdown_ms_max);
    let shutdown = async move {
        tokio::select! {
            () = shutdown_signal(signals) => {
                // Before the listener closes: leaderships move to other in-sync replicas while
                // this node still answers (clients get NOT_LEADER_OR_FOLLOWER and move on).
                quorum_for_shutdown.controlled_shutdown(handover).await;
            }
            why = quorum_for_shutdown.fatal() => {
                tracing::error!(error = %why, "the metadata quorum stopped (its store failed): shutting down so the node restarts");
                *failed_in.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            }
        }
        systemd::notify_stopping();
        // systemd stops enforcing the watchdog at STOPPING=1; the writer is about to stop.
        if let Some(task) = watchdog {
            task.abort();
        }
    };
    bramble::server::run(broker, listener, shutdown).await;
    let _ = follow_stop.send(true);
    let _ = follower.await;
    let _ = replication.await;
    quorum.shutdown().await;
    if let Some(why) = failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
        bail!("metadata quorum stopped: {why}");
    }
    Ok(())
}

/// Starts the disk writer on the configured backend, or, in power-cut mode (tests only:
/// `BRAMBLE_TEST_POWER_CUT=1`), on a `PowerCutStorage` with a SIGUSR2 handler that cuts it.
fn start_writer(config: &Config) -> anyhow::Result<DiskWriter> {
    if !bramble::io::power_cut_requested() {
        return Ok(DiskWriter::start_backend(
            config.writer_config(),
            config.io_backend,
        )?);
    }
    use bramble::io::{POWER_CUT_ENV, PowerCutStorage};
    tracing::warn!(
        "{POWER_CUT_ENV}=1: power-cut test mode (std backend, unsynced changes tracked; SIGUSR2 cuts the power and exits)"
    );
    match PowerCutStorage::remove_leftovers(&config.data_dir) {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            removed = n,
            "power-cut mode: removed keep links of an earlier run"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("removing power-cut keep links"),
    }
    let storage = PowerCutStorage::new();
    let mut usr2 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())
        .context("installing the SIGUSR2 handler of power-cut mode")?;
    let cut = storage.clone();
    tokio::spawn(async move {
        if usr2.recv().await.is_some() {
            // Holds the storage's mutex for good: nothing writes between the cut and the exit.
            let summary = tokio::task::block_in_place(|| cut.cut());
            tracing::warn!("power cut: {summary}");
            std::process::exit(bramble::io::POWER_CUT_EXIT_CODE);
        }
    });
    Ok(DiskWriter::start_with(
        config.writer_config(),
        std::sync::Arc::new(storage),
    )?)
}

/// The log filter: RUST_LOG, or info. openraft narrates every vote and membership step at info,
/// so it logs warnings only unless RUST_LOG names it.
fn log_filter(env: Option<String>) -> String {
    let base = env
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "info".to_string());
    if base.contains("openraft") {
        base
    } else {
        format!("{base},openraft=warn")
    }
}

/// Starts this node's part of the metadata quorum: a voter of `voters` (this node alone by
/// default), or a learner with `join`.
async fn start_quorum(
    broker: &Arc<Broker>,
    data_dir: &std::path::Path,
) -> anyhow::Result<Arc<bramble::meta::quorum::Quorum>> {
    use bramble::meta::{command::BrokerRegistration, quorum, settings};
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
        dir: bramble::meta::raft_dir(data_dir),
        registration,
        cluster_id: broker.identity.cluster_id.clone(),
        import,
        next_producer_id,
        storage: broker.writer_storage(),
    };
    quorum::Quorum::start(config, setup).await
}

/// `bramble board list|show`: what the profiles set, and whether their budgets fit.
fn board(cmd: BoardCommand) -> anyhow::Result<()> {
    match cmd {
        BoardCommand::List => {
            for (name, text) in board::BUILT_IN {
                let p = board::Profile::parse(name, text)?;
                println!("{name:<16} {}", p.info.description);
            }
        }
        BoardCommand::Show { name, medium } => {
            let mut r = board::resolve(Some(&name), medium, None)?;
            r.check()?;
            let b = r.board.context("a board was named")?;
            println!(
                "board = {:?}\nmedium = {:?}",
                b.info.name,
                b.medium.as_str()
            );
            println!("memory_bytes = {}", b.info.memory_bytes);
            println!("memory_max_bytes = {}", b.info.memory_max_bytes);
            println!(
                "# memory model (worst case, bytes): total {}",
                b.budgets_bytes
            );
            for (field, bytes) in board::memory_model(&r.config) {
                println!("#   {field:<26} {bytes:>12}");
            }
            print!("{}", toml::to_string(&r.config)?);
        }
    }
    Ok(())
}

/// The one-line STATUS= systemd shows for a ready node (`systemctl status bramble`).
fn ready_status(broker: &Broker, bound: std::net::SocketAddr) -> String {
    let topics = broker.topics();
    let partitions: i64 = topics.iter().map(|t| i64::from(t.partition_count())).sum();
    format!(
        "serving on {bound}; {} topics, {partitions} partitions recovered",
        topics.len()
    )
}

/// SIGTERM and SIGINT, caught from the start of `run_node` on (one that arrives while the node
/// opens its logs or waits for the quorum is acted on once it serves, never the default kill).
struct StopSignals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl StopSignals {
    fn install() -> StopSignals {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => StopSignals(Some((term, int))),
            _ => {
                tracing::error!("cannot install signal handlers; stop with SIGKILL");
                StopSignals(None)
            }
        }
    }
}

async fn shutdown_signal(signals: StopSignals) {
    let Some((mut term, mut int)) = signals.0 else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

async fn status(bootstrap: &str) -> anyhow::Result<()> {
    let mut client = Client::connect(bootstrap).await?;
    let s = admin::broker_status(&mut client).await?;
    println!(
        "Broker: {}\tCluster: {}\tController: {}",
        s.node_id, s.cluster_id, s.controller_id
    );
    println!("Advertised: {}", s.advertised);
    for (name, value) in &s.configs {
        println!("{name}: {value}");
    }
    println!("Topics: {}\tPartitions: {}", s.topics, s.partitions);
    Ok(())
}

async fn topic(cmd: TopicCommand) -> anyhow::Result<()> {
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            bootstrap,
        } => {
            let mut map = BTreeMap::new();
            for kv in configs {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--config {kv}: expected key=value"))?;
                map.insert(k.to_string(), v.to_string());
            }
            let mut client = Client::connect(&bootstrap.bootstrap_server).await?;
            admin::create_topic(&mut client, &name, partitions, replication_factor, &map).await?;
            println!("Created topic {name}.");
        }
        TopicCommand::List { bootstrap } => {
            let mut client = Client::connect(&bootstrap.bootstrap_server).await?;
            for t in admin::list_topics(&mut client).await? {
                println!("{t}");
            }
        }
        TopicCommand::Describe { name, bootstrap } => {
            let mut client = Client::connect(&bootstrap.bootstrap_server).await?;
            let d = admin::describe_topic(&mut client, &name).await?;
            let configs: Vec<String> = d.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "Topic: {}\tTopicId: {}\tPartitionCount: {}\tReplicationFactor: {}\tConfigs: {}",
                d.name,
                d.id,
                d.partitions.len(),
                d.replication_factor,
                configs.join(",")
            );
            let join = |v: &[i32]| {
                v.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            for (p, leader, replicas, isr) in &d.partitions {
                println!(
                    "\tTopic: {}\tPartition: {p}\tLeader: {leader}\tReplicas: {}\tIsr: {}",
                    d.name,
                    join(replicas),
                    join(isr)
                );
            }
        }
        TopicCommand::Delete { name, bootstrap } => {
            let mut client = Client::connect(&bootstrap.bootstrap_server).await?;
            admin::delete_topic(&mut client, &name).await?;
            println!("Deleted topic {name}.");
        }
    }
    Ok(())
}

async fn group(cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::List { bootstrap } => {
            let mut client = Client::connect(&bootstrap.bootstrap_server).await?;
            for (id, state, protocol_type) in admin::list_groups(&mut client).await? {
                println!("{id}\t{state}\t{protocol_type}");
            }
        }
        GroupCommand::Describe { name, bootstrap } => {
            let mut client = Client::connect(&bootstrap.bootstrap_server).await?;
            let d = admin::describe_group(&mut client, &name).await?;
            print_group(&d);
        }
        GroupCommand::Delete { name, bootstrap } => {
            let mut client = Client::connect(&bootstrap.bootstrap_server).await?;
            admin::delete_group(&mut client, &name).await?;
            println!("Deleted group {name}.");
        }
        GroupCommand::ResetOffsets {
            name,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            bootstrap,
        } => {
            let to = match (to_earliest, to_latest, to_offset) {
                (true, _, _) => admin::ResetTo::Earliest,
                (_, true, _) => admin::ResetTo::Latest,
                (_, _, Some(n)) => admin::ResetTo::Offset(n),
                _ => bail!("one of --to-earliest, --to-latest, --to-offset N is required"),
            };
            let mut client = Client::connect(&bootstrap.bootstrap_server).await?;
            for (p, offset) in admin::reset_offsets(&mut client, &name, &topic, to).await? {
                println!("{name}\t{topic}\t{p}\t{offset}");
            }
        }
    }
    Ok(())
}

fn print_group(d: &admin::GroupDescription) {
    println!(
        "Group: {}\tState: {}\tProtocol: {}\tMembers: {}",
        d.group,
        d.state,
        d.protocol,
        d.members.len()
    );
    for m in &d.members {
        let assigned: Vec<String> = m
            .assignment
            .iter()
            .map(|(t, p)| format!("{t}-{p}"))
            .collect();
        println!(
            "\tMember: {}\tInstance: {}\tClient: {}\tHost: {}\tAssigned: {}",
            m.member_id,
            m.instance_id.as_deref().unwrap_or("-"),
            m.client_id,
            m.host,
            assigned.join(",")
        );
    }
    println!("TOPIC\tPARTITION\tCOMMITTED\tLOG-END\tLAG\tMEMBER");
    for p in &d.partitions {
        let committed = if p.committed < 0 {
            "-".to_string()
        } else {
            p.committed.to_string()
        };
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            p.topic,
            p.partition,
            committed,
            p.log_end,
            p.lag,
            p.member_id.as_deref().unwrap_or("-")
        );
    }
}
