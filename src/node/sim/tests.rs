//! node::sim::tests: the seeded runs. `seeds` runs `BRAMBLE_SIM_SEEDS` seeds (default
//! [`SEEDS_DEFAULT`]), `BRAMBLE_SIM_JOBS` at a time, or the one seed `BRAMBLE_SIM_SEED`; every
//! failing seed is printed with its schedule, violations and replay command.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::{Outcome, run};

/// Seeds per run unless `BRAMBLE_SIM_SEEDS` says (issue 12: at least 200 in CI).
const SEEDS_DEFAULT: u64 = 200;
/// Seeds run at once unless `BRAMBLE_SIM_JOBS` says: each mostly waits on timers, so more than
/// the 2 cores' worth keep the box busy.
const JOBS_DEFAULT: u64 = 6;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a number"),
    }
}

/// Logs of the nodes (each line under its `node{id=…}` span) when `BRAMBLE_SIM_LOG` names a
/// filter, for a replay.
fn init_logs() {
    if let Ok(filter) = std::env::var("BRAMBLE_SIM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// The seeds of this run: the one to replay, or a count from a base (random unless set).
fn chosen_seeds() -> (Vec<u64>, String) {
    if let Some(seed) = env_u64("BRAMBLE_SIM_SEED") {
        return (vec![seed], format!("seed {seed}"));
    }
    let count = env_u64("BRAMBLE_SIM_SEEDS").unwrap_or(SEEDS_DEFAULT);
    let base = env_u64("BRAMBLE_SIM_SEED_BASE").unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        (now % 1_000_000) * 1_000
    });
    let label = format!("{count} seeds from {base} (BRAMBLE_SIM_SEED_BASE={base})");
    ((base..base + count).collect(), label)
}

/// A tally line: faults run per kind, records acked and read, seeds per second.
fn summary(outcomes: &[Outcome], seconds: f64) -> String {
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for o in outcomes {
        for s in &o.schedule.steps {
            *kinds.entry(s.fault.kind()).or_default() += 1;
        }
    }
    // Events by kind (their numbers stripped), so a run shows what the client met.
    let mut events: BTreeMap<String, usize> = BTreeMap::new();
    for e in outcomes.iter().flat_map(|o| o.events.iter()) {
        let kind: String = e.chars().filter(|c| !c.is_ascii_digit()).take(90).collect();
        *events.entry(kind).or_default() += 1;
    }
    let acked: usize = outcomes.iter().map(|o| o.acked).sum();
    let read: usize = outcomes.iter().map(|o| o.read).sum();
    let slowest = outcomes.iter().map(|o| o.elapsed).max().unwrap_or_default();
    let heal_max = outcomes.iter().filter_map(|o| o.converged_in).max();
    format!(
        "sim: {} seeds in {seconds:.1} s ({:.2} seeds/s, slowest {slowest:.1?}); faults {kinds:?}; \
         {acked} records acked and verified, {read} reads verified; longest heal {heal_max:.1?}; {} failed; events {events:#?}",
        outcomes.len(),
        outcomes.len() as f64 / seconds.max(0.001),
        outcomes.iter().filter(|o| !o.passed()).count(),
    )
}

/// Proves the cluster keeps its promises under every fault kind, over many seeds: each seed's
/// run ends with every acknowledged record exactly once at its offset, in order, every read still
/// there, one controller and full ISRs within the heal bound (see `check`).
#[test]
fn seeds() {
    init_logs();
    let (seeds, label) = chosen_seeds();
    let jobs = env_u64("BRAMBLE_SIM_JOBS").unwrap_or(JOBS_DEFAULT).max(1);
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(seeds.len() as u64) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&seed) = seeds.get(i) else { return };
                    let outcome = run(seed);
                    if !outcome.passed() {
                        eprintln!("{}", outcome.report());
                    }
                    outcomes.lock().unwrap().push(outcome);
                }
            });
        }
    });
    let outcomes = outcomes.into_inner().unwrap();
    let summary = summary(&outcomes, started.elapsed().as_secs_f64());
    eprintln!("{label}\n{summary}");
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(Outcome::report)
        .collect();
    assert!(
        failed.is_empty(),
        "{label}\n{summary}\n\n{}",
        failed.join("\n")
    );
}
