//! node::sim::check: the checker. After the faults are healed the cluster must converge (every
//! node names the same controller and sees all three brokers, every partition has a leader and
//! its full ISR) within a bound; then each partition is read from its leader up to the high
//! watermark and judged against the [`History`]: every acknowledged record present exactly once
//! at its acknowledged offset, values in the order they were produced, and every record read
//! during the run still there.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::schedule::NODES;
use super::workload::{self, History, PARTITIONS, TOPIC};
use crate::client::{Client, admin};

/// Pause between two looks at a cluster that has not converged yet.
const POLL: Duration = Duration::from_millis(50);
/// Violations listed per run (the count is always given).
const VIOLATIONS_SHOWN_MAX: usize = 20;

/// One look at every node: None when the cluster has converged, else what is still off.
pub(crate) async fn unconverged(bootstrap: &[String]) -> Option<String> {
    let mut controllers = Vec::new();
    for (i, addr) in bootstrap.iter().enumerate() {
        let node = i + 1;
        let Ok(Ok(mut client)) =
            tokio::time::timeout(workload::CALL_TIMEOUT, Client::connect(addr)).await
        else {
            return Some(format!("node {node} does not answer"));
        };
        let meta = match tokio::time::timeout(
            workload::CALL_TIMEOUT,
            admin::metadata(&mut client, Some(&[TOPIC])),
        )
        .await
        {
            Ok(Ok(m)) => m,
            _ => return Some(format!("node {node} gives no metadata")),
        };
        controllers.push(meta.controller_id.0);
        if meta.brokers.len() != NODES {
            return Some(format!("node {node} sees {} brokers", meta.brokers.len()));
        }
        let partitions: Vec<_> = meta
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .collect();
        if partitions.len() != PARTITIONS as usize {
            return Some(format!("node {node} sees {} partitions", partitions.len()));
        }
        for p in partitions {
            if p.leader_id.0 < 0 || p.isr_nodes.len() != NODES {
                return Some(format!(
                    "node {node}: partition {} led by {} with ISR {:?}",
                    p.partition_index,
                    p.leader_id.0,
                    p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>()
                ));
            }
        }
    }
    if controllers.iter().any(|&c| c < 0 || c != controllers[0]) {
        return Some(format!("controllers named: {controllers:?}"));
    }
    None
}

/// Waits until the cluster converges; Err with what was still off after `bound`.
pub(crate) async fn converge(bootstrap: &[String], bound: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let Some(off) = unconverged(bootstrap).await else {
            return Ok(started.elapsed());
        };
        if started.elapsed() > bound {
            return Err(format!("not converged after {bound:?}: {off}"));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A partition as its leader serves it at the end.
#[derive(Debug, Default)]
pub(crate) struct FinalLog {
    pub leader: i32,
    pub high_watermark: i64,
    /// (offset, value) of every record below the high watermark.
    pub records: Vec<(i64, String)>,
}

/// Every partition from its leader, up to the high watermark, once that reaches `ends[p]` (one
/// past the last acknowledged offset) or `bound` passes: a leader that just took over (the
/// controller hands leadership back to a preferred replica) learns the high watermark from its
/// followers' next fetches, as in Kafka.
pub(crate) async fn final_logs(
    bootstrap: &[String],
    ends: &[i64],
    bound: Duration,
) -> Result<Vec<FinalLog>, String> {
    let started = Instant::now();
    let mut logs = Vec::new();
    for partition in 0..PARTITIONS {
        let end = ends.get(partition as usize).copied().unwrap_or(0);
        let log = loop {
            let log = read_partition(bootstrap, partition).await;
            match log {
                Ok(log) if log.high_watermark >= end => break log,
                Ok(log) if started.elapsed() > bound => break log,
                Err(e) if started.elapsed() > bound => return Err(e),
                _ => tokio::time::sleep(POLL).await,
            }
        };
        logs.push(log);
    }
    Ok(logs)
}

async fn read_partition(bootstrap: &[String], partition: i32) -> Result<FinalLog, String> {
    let mut client = workload::connect_any(bootstrap, 0)
        .await
        .ok_or("no node answers")?;
    let meta = tokio::time::timeout(
        workload::CALL_TIMEOUT,
        admin::metadata(&mut client, Some(&[TOPIC])),
    )
    .await
    .map_err(|_| "metadata timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let leader = meta
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == partition)
        .map(|p| p.leader_id.0)
        .ok_or("no such partition")?;
    let broker = meta
        .brokers
        .iter()
        .find(|b| b.node_id.0 == leader)
        .ok_or("leader not among the brokers")?;
    let mut client = Client::connect(&format!("{}:{}", broker.host.as_str(), broker.port))
        .await
        .map_err(|e| e.to_string())?;
    let mut records = Vec::new();
    let mut offset = 0;
    loop {
        let (got, hw) = workload::fetch(&mut client, partition, offset)
            .await
            .map_err(|e| format!("final read of partition {partition} at {offset}: {e}"))?;
        let before = offset;
        for (o, v) in got {
            if o >= offset {
                offset = o + 1;
                records.push((o, v));
            }
        }
        if offset < hw && offset == before {
            // Nothing at `offset` although it is below the high watermark (a gap, a batch that
            // does not decode): an error, retried by the caller until its bound, not a hang.
            return Err(format!(
                "final read of partition {partition}: nothing at {offset}, below the high watermark {hw}"
            ));
        }
        if offset >= hw {
            return Ok(FinalLog {
                leader,
                high_watermark: hw,
                records,
            });
        }
    }
}

/// The producer's number in a value (`p<partition>-<n>`).
fn number(value: &str) -> Option<u64> {
    value.rsplit('-').next()?.parse().ok()
}

/// What the final logs break of the history's promises.
pub(crate) fn judge(history: &History, logs: &[FinalLog]) -> Vec<String> {
    let logs: Vec<&Vec<(i64, String)>> = logs.iter().map(|l| &l.records).collect();
    let mut violations = Vec::new();
    let at: Vec<BTreeMap<i64, &str>> = logs
        .iter()
        .map(|l| l.iter().map(|(o, v)| (*o, v.as_str())).collect())
        .collect();
    let mut seen: BTreeMap<&str, Vec<(usize, i64)>> = BTreeMap::new();
    for (p, log) in logs.iter().enumerate() {
        for (o, v) in log.iter() {
            seen.entry(v.as_str()).or_default().push((p, *o));
        }
        let mut last = 0;
        for (o, v) in log.iter() {
            let n = number(v).unwrap_or(0);
            if n <= last {
                violations.push(format!(
                    "partition {p}: {v} at offset {o} follows value number {last} (out of order or duplicated)"
                ));
            }
            last = last.max(n);
        }
    }
    for (v, places) in &seen {
        if places.len() > 1 {
            violations.push(format!("{v} stored {} times: {places:?}", places.len()));
        }
    }
    for a in &history.acked {
        let found = at[a.partition as usize].get(&a.offset).copied();
        if found != Some(a.value.as_str()) {
            violations.push(format!(
                "acknowledged {} at partition {} offset {}: found {found:?} (stored at {:?})",
                a.value,
                a.partition,
                a.offset,
                seen.get(a.value.as_str())
            ));
        }
    }
    for (p, o, v) in &history.read {
        let found = at[*p as usize].get(o).copied();
        if found != Some(v.as_str()) {
            violations.push(format!(
                "read {v} at partition {p} offset {o} during the run: now {found:?}"
            ));
        }
    }
    let total = violations.len();
    if total > VIOLATIONS_SHOWN_MAX {
        violations.truncate(VIOLATIONS_SHOWN_MAX);
        violations.push(format!("… {} more", total - VIOLATIONS_SHOWN_MAX));
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::sim::workload::Acked;

    fn log(values: &[(i64, &str)]) -> FinalLog {
        FinalLog {
            records: values.iter().map(|(o, v)| (*o, v.to_string())).collect(),
            ..FinalLog::default()
        }
    }

    /// The checker can fail: a lost acknowledged record, a moved one, a duplicate, a reordering
    /// and a vanished read are each reported; a clean history passes.
    #[test]
    fn the_checker_catches_each_kind_of_loss() {
        let acked = |offset, value: &str| Acked {
            partition: 0,
            offset,
            value: value.into(),
        };
        let mut history = History {
            acked: vec![acked(0, "p0-000001"), acked(1, "p0-000002")],
            read: vec![(0, 0, "p0-000001".into())],
            ..History::default()
        };
        let good = vec![log(&[(0, "p0-000001"), (1, "p0-000002")]), log(&[])];
        assert_eq!(judge(&history, &good), Vec::<String>::new());

        let lost = vec![log(&[(0, "p0-000001")]), log(&[])];
        assert_eq!(
            judge(&history, &lost).len(),
            1,
            "{:?}",
            judge(&history, &lost)
        );
        let moved = vec![log(&[(0, "p0-000001"), (2, "p0-000002")]), log(&[])];
        assert_eq!(judge(&history, &moved).len(), 1);
        let twice = vec![
            log(&[(0, "p0-000001"), (1, "p0-000002"), (2, "p0-000002")]),
            log(&[]),
        ];
        assert_eq!(
            judge(&history, &twice).len(),
            2,
            "{:?}",
            judge(&history, &twice)
        );
        let swapped = vec![log(&[(0, "p0-000002"), (1, "p0-000001")]), log(&[])];
        assert!(judge(&history, &swapped).len() >= 3);
        history.read.push((0, 2, "p0-000003".into()));
        assert_eq!(judge(&history, &good).len(), 1);
    }
}
