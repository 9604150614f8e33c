//! node::sim::schedule: a seed's fault schedule. Drawn whole from the seed before the run (so a
//! replay runs the same faults at the same offsets from the workload's start), one fault at a
//! time, each healed before the next: a crash is followed by the restart, a network fault by
//! every link back up.

use std::fmt;

use super::net::{CLIENT, Links};
use crate::io::crash::{CutMode, XorShift};

/// Nodes in the simulated cluster.
pub(crate) const NODES: usize = 3;
/// Faults per schedule: `FAULTS_MIN..=FAULTS_MAX`.
const FAULTS_MIN: u64 = 2;
const FAULTS_MAX: u64 = 4;
/// Chance (in thirds) that a fault starts while the one before it still stands.
const OVERLAP_THIRDS: u64 = 1;
/// How long a fault lasts (a node stays down, a partition stands): a range in ms.
const FAULT_MS: (u64, u64) = (300, 1_200);
/// Quiet time before each fault: a range in ms.
const GAP_MS: (u64, u64) = (100, 600);

/// One injected fault. Nodes are numbered 0..NODES (node id = index + 1).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    /// The node's machine loses power: its storage is cut with `mode`, its process dies.
    Crash { node: usize, mode: CutMode },
    /// Every machine loses power at the same instant, each storage cut with its own mode.
    PowerCut { modes: [CutMode; NODES] },
    /// The node cannot reach the other nodes nor they it (clients still reach every node).
    Partition { node: usize },
    /// Clients cannot reach the node (the nodes still can).
    ClientCut { node: usize },
    /// Nothing reaches the node nor leaves it, as a stalled machine looks from outside (its
    /// timers still run, unlike a SIGSTOP).
    Isolate { node: usize },
    /// Nothing gets from `from` to `to`; the other way works.
    OneWay { from: usize, to: usize },
    /// Every link holds each chunk a random time in `ms` (messages reorder across connections).
    Delay { ms: (u64, u64) },
    /// Every link resets connections at this chance per chunk (thousandths).
    Resets { per_mille: u64 },
}

impl Fault {
    /// The kind's name, for tallies.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Fault::Crash { .. } => "crash",
            Fault::PowerCut { .. } => "power-cut",
            Fault::Partition { .. } => "partition",
            Fault::ClientCut { .. } => "client-cut",
            Fault::Isolate { .. } => "isolate",
            Fault::OneWay { .. } => "one-way",
            Fault::Delay { .. } => "delay",
            Fault::Resets { .. } => "resets",
        }
    }

    /// The links a network fault sets (crashes and power cuts set none).
    pub(crate) fn apply(&self, links: &mut Links) {
        let party = |node: usize| node + 1;
        let all = 0..links.len();
        match *self {
            Fault::Crash { .. } | Fault::PowerCut { .. } => {}
            Fault::Partition { node } => {
                for other in (0..NODES).filter(|&o| o != node) {
                    links[party(node)][party(other)].down = true;
                    links[party(other)][party(node)].down = true;
                }
            }
            Fault::ClientCut { node } => {
                links[CLIENT][party(node)].down = true;
                links[party(node)][CLIENT].down = true;
            }
            Fault::Isolate { node } => {
                for other in all.clone().filter(|&o| o != party(node)) {
                    links[party(node)][other].down = true;
                    links[other][party(node)].down = true;
                }
            }
            Fault::OneWay { from, to } => links[party(from)][party(to)].down = true,
            Fault::Delay { ms } => {
                for from in all.clone() {
                    for link in &mut links[from] {
                        link.delay_ms = ms;
                    }
                }
            }
            Fault::Resets { per_mille } => {
                for from in all {
                    for link in &mut links[from] {
                        link.reset_per_mille = per_mille;
                    }
                }
            }
        }
    }
}

/// One scheduled fault: it starts `at_ms` after the workload does and lasts `ms`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub at_ms: u64,
    pub fault: Fault,
    pub ms: u64,
}

/// What happens at a moment of the schedule: step `i` starts or heals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Moment {
    Inject(usize),
    Heal(usize),
}

/// A seed's whole schedule.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    pub steps: Vec<Step>,
}

fn within(rng: &mut XorShift, (lo, hi): (u64, u64)) -> u64 {
    lo + rng.below(hi - lo + 1)
}

fn mode(rng: &mut XorShift) -> CutMode {
    CutMode::ALL[rng.below(CutMode::ALL.len() as u64) as usize]
}

fn fault(rng: &mut XorShift) -> Fault {
    let node = rng.below(NODES as u64) as usize;
    match rng.below(8) {
        0 => Fault::Crash {
            node,
            mode: mode(rng),
        },
        1 => Fault::PowerCut {
            modes: [mode(rng), mode(rng), mode(rng)],
        },
        2 => Fault::Partition { node },
        3 => Fault::ClientCut { node },
        4 => Fault::OneWay {
            from: node,
            to: (node + 1 + rng.below(NODES as u64 - 1) as usize) % NODES,
        },
        5 => Fault::Isolate { node },
        6 => {
            let lo = rng.below(20);
            Fault::Delay {
                ms: (lo, lo + 1 + rng.below(80)),
            }
        }
        _ => Fault::Resets {
            per_mille: 5 + rng.below(60),
        },
    }
}

impl Schedule {
    /// The schedule of `seed`.
    pub(crate) fn of(seed: u64) -> Schedule {
        let mut rng = XorShift::new(seed ^ 0x5343_4845_4455_4c45);
        let n = within(&mut rng, (FAULTS_MIN, FAULTS_MAX));
        let mut steps: Vec<Step> = Vec::new();
        for _ in 0..n {
            let gap = within(&mut rng, GAP_MS);
            let at_ms = match steps.last() {
                None => gap,
                Some(prev) if rng.below(3) < OVERLAP_THIRDS => prev.at_ms + gap.min(prev.ms),
                Some(prev) => prev.at_ms + prev.ms + gap,
            };
            steps.push(Step {
                at_ms,
                fault: fault(&mut rng),
                ms: within(&mut rng, FAULT_MS),
            });
        }
        Schedule { steps }
    }

    /// Every start and heal, in time order: (ms from the workload's start, what).
    pub(crate) fn moments(&self) -> Vec<(u64, Moment)> {
        let mut out: Vec<(u64, Moment)> = self
            .steps
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                [
                    (s.at_ms, Moment::Inject(i)),
                    (s.at_ms + s.ms, Moment::Heal(i)),
                ]
            })
            .collect();
        out.sort();
        out
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.steps {
            writeln!(
                f,
                "  at {:>5} ms for {:>4} ms: {:?}",
                s.at_ms, s.ms, s.fault
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A schedule is a function of its seed (what makes a replay run the same faults), and the
    /// seeds of one run cover every kind of fault.
    #[test]
    fn schedules_follow_the_seed_and_cover_every_kind() {
        assert_eq!(Schedule::of(42).to_string(), Schedule::of(42).to_string());
        assert_ne!(Schedule::of(42).to_string(), Schedule::of(43).to_string());
        let kinds: std::collections::BTreeSet<_> = (0..200)
            .flat_map(|s| Schedule::of(s).steps)
            .map(|s| s.fault.kind())
            .collect();
        assert_eq!(kinds.len(), 8, "{kinds:?}");
    }
}
