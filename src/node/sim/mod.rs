//! node::sim: the in-process cluster simulation (test only). Per seed: three real nodes (quorum,
//! controller, broker, replication, Kafka API: [`crate::node::Node`]) on crash-simulating storage
//! ([`crate::io::crash`]) behind a fault-injecting network ([`net`]); an RF=3 topic with
//! min.insync.replicas=2; idempotent acks=all producers and readers ([`workload`]); a seeded
//! fault schedule ([`schedule`]): node crashes under each power-cut mode, whole-cluster power
//! cuts, partitions, client cuts, isolated (stalled-looking) nodes, one-way links, delays,
//! connection resets. Then everything is
//! healed and [`check`] judges what the client saw against what the cluster holds.
//!
//! Replay a seed with `BRAMBLE_SIM_SEED=<n> cargo test --lib sim::` (`BRAMBLE_SIM_LOG=debug`
//! adds the nodes' logs); `BRAMBLE_SIM_SEEDS` sets how many seeds a run tries (from
//! `BRAMBLE_SIM_SEED_BASE`, random by default) and `BRAMBLE_SIM_JOBS` how many run at once.
//!
//! **Determinism.** The seed fixes the schedule (which faults, when, for how long, which cut
//! modes), the bytes each power cut keeps (the cut's own RNG over the storage's state), the
//! workload's batch sizes and the network's draws per connection. It does not fix thread
//! scheduling, the kernel's TCP (how bytes split into chunks, so which chunk a delay or reset
//! lands on), or wall-clock timeouts (elections, sessions, ISR lag): the storage state a cut
//! meets, and so the run, differ between replays of one seed. A replay re-runs the same
//! schedule against the same code; a failure that does not come back on replay is still a
//! failure, and its printed schedule and violations are the evidence.

mod check;
mod cluster;
mod net;
mod schedule;
mod tests;
mod workload;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::Instrument;

use cluster::Cluster;
use schedule::{Fault, Moment, NODES, Schedule};
use workload::{PARTITIONS, TOPIC, Workload};

/// Bound on a fresh cluster forming and taking the topic.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the cluster converging (one controller, full ISRs) after the last fault healed.
const HEAL_TIMEOUT: Duration = Duration::from_secs(30);
/// The workload keeps running this long after the last fault heals.
const SETTLE: Duration = Duration::from_millis(500);
/// The workload runs this long before the first fault.
const WARM_UP: Duration = Duration::from_millis(300);

/// What one seed's run came to.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub seed: u64,
    pub schedule: Schedule,
    /// Broken promises; empty when the run passed.
    pub violations: Vec<String>,
    pub events: Vec<String>,
    pub acked: usize,
    pub read: usize,
    pub elapsed: Duration,
    /// Time from the last heal to convergence.
    pub converged_in: Option<Duration>,
}

impl Outcome {
    pub(crate) fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The failure report: seed, schedule, violations, events, and how to replay.
    pub(crate) fn report(&self) -> String {
        format!(
            "seed {} FAILED after {:.1?} ({} acked, {} read)\nschedule:\n{}violations:\n  {}\nevents:\n  {}\nreplay: BRAMBLE_SIM_SEED={} cargo test --lib sim::\n",
            self.seed,
            self.elapsed,
            self.acked,
            self.read,
            self.schedule,
            self.violations.join("\n  "),
            self.events.join("\n  "),
            self.seed,
        )
    }
}

/// Runs seed `seed` start to end.
pub(crate) fn run(seed: u64) -> Outcome {
    let started = Instant::now();
    let schedule = Schedule::of(seed);
    let mut outcome = Outcome {
        seed,
        schedule: schedule.clone(),
        violations: Vec::new(),
        events: Vec::new(),
        acked: 0,
        read: 0,
        elapsed: Duration::ZERO,
        converged_in: None,
    };
    if let Err(e) = run_into(seed, &schedule, &mut outcome) {
        outcome.violations.push(format!("{e:#}"));
    }
    outcome.elapsed = started.elapsed();
    outcome
}

fn run_into(seed: u64, schedule: &Schedule, outcome: &mut Outcome) -> anyhow::Result<()> {
    let driver = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sim-client")
        .enable_all()
        .build()?;
    let mut cluster = Cluster::new(seed, &driver)?;
    for i in 0..NODES {
        cluster.start(i)?;
    }
    let bootstrap = cluster.bootstrap();
    driver
        .block_on(create_topic(&bootstrap))
        .map_err(|e| anyhow::anyhow!("the cluster did not form: {e}"))?;
    let workload = Arc::new(Workload {
        history: Default::default(),
        bootstrap: bootstrap.clone(),
        stop: Default::default(),
        seed,
    });
    let mut tasks = Vec::new();
    let span = tracing::info_span!("client", seed);
    for p in 0..PARTITIONS {
        let produce = workload::produce(workload.clone(), p).instrument(span.clone());
        tasks.push(driver.spawn(produce));
        tasks.push(driver.spawn(workload::read(workload.clone(), p).instrument(span.clone())));
    }
    std::thread::sleep(WARM_UP);
    let entered = span.enter();
    let start = Instant::now();
    let mut standing = Vec::new();
    for (at_ms, moment) in schedule.moments() {
        let at = start + Duration::from_millis(at_ms);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        match moment {
            Moment::Inject(i) => {
                standing.push(schedule.steps[i].fault);
                inject(&mut cluster, schedule.steps[i].fault);
            }
            Moment::Heal(i) => {
                let fault = schedule.steps[i].fault;
                if let Some(k) = standing.iter().position(|f| same(f, &fault)) {
                    standing.remove(k);
                }
                heal(&mut cluster, fault, &standing, &mut outcome.events)?;
            }
        }
    }
    drop(entered);
    std::thread::sleep(SETTLE);
    workload.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = driver.block_on(t);
    }
    restart_exited(&mut cluster, &mut outcome.events)?;
    let converged = driver.block_on(check::converge(&bootstrap, HEAL_TIMEOUT));
    match converged {
        Ok(t) => outcome.converged_in = Some(t),
        Err(e) => {
            outcome.violations.push(e);
            return Ok(());
        }
    }
    // One more acknowledged batch per partition: the healed cluster takes writes, and its high
    // watermark moves past everything before (a new leader's may wait for a record of its own).
    driver
        .block_on(workload.sentinels(HEAL_TIMEOUT))
        .map_err(|e| anyhow::anyhow!("after the heal: {e}"))?;
    let history = std::mem::take(&mut *workload.history.lock().unwrap_or_else(|e| e.into_inner()));
    let mut ends = vec![0; PARTITIONS as usize];
    for a in &history.acked {
        ends[a.partition as usize] = ends[a.partition as usize].max(a.offset + 1);
    }
    let logs = driver
        .block_on(check::final_logs(&bootstrap, &ends, HEAL_TIMEOUT))
        .map_err(|e| anyhow::anyhow!("reading the final logs: {e}"))?;
    outcome.acked = history.acked.len();
    outcome.read = history.read.len();
    outcome.events.extend(history.events.iter().cloned());
    for (p, log) in logs.iter().enumerate() {
        outcome.events.push(format!(
            "partition {p} at the end: leader {}, high watermark {}, {} records",
            log.leader,
            log.high_watermark,
            log.records.len()
        ));
    }
    if history.acked.is_empty() {
        outcome
            .violations
            .push("no record was acknowledged in the whole run".into());
    }
    outcome.violations.extend(check::judge(&history, &logs));
    cluster.stop();
    Ok(())
}

/// Creates the topic once the cluster can (it forms first), then waits for full ISRs.
async fn create_topic(bootstrap: &[String]) -> Result<(), String> {
    let started = Instant::now();
    let configs = [("min.insync.replicas".to_string(), "2".to_string())].into();
    loop {
        if let Some(mut c) = workload::connect_any(bootstrap, 0).await {
            let created = tokio::time::timeout(
                workload::CALL_TIMEOUT,
                crate::client::admin::create_topic(&mut c, TOPIC, PARTITIONS, 3, &configs),
            )
            .await;
            match created {
                Ok(Ok(())) => break,
                Ok(Err(e)) if e.to_string().contains("TopicAlreadyExists") => break,
                _ => {}
            }
        }
        if started.elapsed() > FORM_TIMEOUT {
            return Err(format!("topic not created within {FORM_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check::converge(bootstrap, FORM_TIMEOUT.saturating_sub(started.elapsed()))
        .await
        .map(drop)
}

fn inject(cluster: &mut Cluster, fault: Fault) {
    tracing::info!(?fault, "injecting");
    match fault {
        Fault::Crash { node, mode } => cluster.crash(node, mode),
        Fault::PowerCut { modes } => cluster.power_cut(modes),
        network => cluster.net.update(|links| network.apply(links)),
    }
}

/// Whether two faults are the same (a schedule's steps are told apart by value).
fn same(a: &Fault, b: &Fault) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// Ends `fault`: a crashed node restarts (every node after a power cut), a network fault's links
/// come back, except what the faults still `standing` hold.
fn heal(
    cluster: &mut Cluster,
    fault: Fault,
    standing: &[Fault],
    events: &mut Vec<String>,
) -> anyhow::Result<()> {
    tracing::info!(?fault, "healing");
    // A node stays down while a standing fault still holds it down.
    let held = |i: usize| {
        standing.iter().any(|f| match f {
            Fault::PowerCut { .. } => true,
            Fault::Crash { node, .. } => *node == i,
            _ => false,
        })
    };
    match fault {
        Fault::Crash { .. } | Fault::PowerCut { .. } => {
            let down: Vec<usize> = (0..NODES)
                .filter(|&i| !cluster.is_up(i) && !held(i))
                .collect();
            for i in down {
                cluster.start(i)?;
            }
        }
        _ => cluster.net.update(|links| {
            *links = Default::default();
            for f in standing {
                f.apply(links);
            }
        }),
    }
    restart_exited(cluster, events)
}

/// A node that ended by itself (as systemd would) is restarted; that it ended is an event.
fn restart_exited(cluster: &mut Cluster, events: &mut Vec<String>) -> anyhow::Result<()> {
    for i in 0..NODES {
        if cluster.is_up(i)
            && let Some(why) = cluster.exited(i)
        {
            events.push(format!("node {} ended by itself: {why}", i + 1));
            cluster.restart(i)?;
        }
    }
    Ok(())
}
