//! server: the Kafka listener. Accepts connections up to `connections_max` in all and
//! `connections_per_ip_max` per peer address (`peers`); a connection over either is accepted and
//! closed at once, so a refused client learns it at once instead of waiting in the listen
//! backlog. Runs one task per connection (`connection`, reading frames with `read`), and on
//! shutdown stops accepting, lets each connection finish the request it is serving, then syncs
//! the logs. `memory` hands freed memory back to the OS after load. `systemd` tells systemd
//! (when it runs the node) that the node is ready, stopping, and alive.

pub mod connection;
pub mod memory;
pub mod peers;
pub mod read;
pub mod systemd;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::api::now_ms;
use crate::broker::Broker;
use peers::{Admitted, Peers};
use read::Budgets;

/// Refused connections are logged at most once per this interval (a flood must not flood the log).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Runs the listener until `shutdown` resolves, then drains connections and stops the broker.
pub async fn run(
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let connections_max = broker.config.connections_max;
    let permits = Arc::new(Semaphore::new(connections_max));
    let (inflight, reserve) = Budgets::node_shares(&broker.config);
    let (stop_tx, stop_rx) = watch::channel(false);
    let retention = tokio::spawn(retention_loop(broker.clone(), stop_rx.clone()));
    let cleaner = tokio::spawn(compaction_loop(broker.clone(), stop_rx.clone()));
    let scrubber = tokio::spawn(scrub_loop(broker.clone(), stop_rx.clone()));
    let flusher = tokio::spawn(flush_loop(broker.clone(), stop_rx.clone()));
    let trimmer = tokio::spawn(memory::trim_loop(stop_rx.clone()));
    let peers = Peers::new(
        broker.config.connections_per_ip_max,
        broker.config.ip_request_bytes_max(),
    );
    let mut refusals = Refusals::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some((slot, admitted)) = admit(&permits, &peers, peer, &mut refusals) else {
                    // Closed at once: the client sees EOF now rather than a connect that hangs.
                    drop(stream);
                    continue;
                };
                let broker = broker.clone();
                let stop = stop_rx.clone();
                let budgets = Budgets {
                    node: inflight.clone(),
                    reserve: reserve.clone(),
                    ip: admitted.bytes.clone(),
                    connection: Arc::new(Semaphore::new(
                        broker.config.connection_request_bytes_max(),
                    )),
                };
                tokio::spawn(async move {
                    connection::serve(broker, stream, peer, stop, budgets).await;
                    drop((admitted, slot));
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    drop(listener);
    let _ = stop_tx.send(true);
    let grace = Duration::from_millis(broker.config.shutdown_grace_ms);
    let all = u32::try_from(connections_max).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "connections still busy after the grace period; closing them"
        );
    }
    retention.abort();
    scrubber.abort();
    cleaner.abort();
    flusher.abort();
    trimmer.abort();
    broker.shutdown().await;
    tracing::info!("shutdown complete");
}

/// A connection slot under `connections_max` and one under its address's
/// `connections_per_ip_max`, or `None` (logged, rate-limited) when either is full.
fn admit(
    permits: &Arc<Semaphore>,
    peers: &Arc<Peers>,
    peer: SocketAddr,
    refusals: &mut Refusals,
) -> Option<(OwnedSemaphorePermit, Admitted)> {
    let Ok(slot) = permits.clone().try_acquire_owned() else {
        refusals.note(peer, "connections_max");
        return None;
    };
    let Some(admitted) = peers.admit(peer.ip()) else {
        refusals.note(peer, "connections_per_ip_max");
        return None;
    };
    Some((slot, admitted))
}

/// Counts refused connections and logs them at most once per [`REFUSAL_LOG_INTERVAL`].
struct Refusals {
    logged_at: Option<Instant>,
    suppressed: u64,
}

impl Refusals {
    fn new() -> Refusals {
        Refusals {
            logged_at: None,
            suppressed: 0,
        }
    }

    fn note(&mut self, peer: SocketAddr, limit: &'static str) {
        let now = Instant::now();
        if self
            .logged_at
            .is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            %peer,
            limit,
            refused_since_last_line = self.suppressed,
            "refusing connection: limit reached"
        );
        self.logged_at = Some(now);
        self.suppressed = 0;
    }
}

/// Files one partition keeps open at least: the active segment's log, offset index and time index.
const FILES_PER_PARTITION_MIN: u64 = 3;

/// Raises the soft open-files limit to the hard limit (shells often start at 1024) and warns when
/// even that cannot cover `partitions_max` partitions and `connections_max` connections.
// rlim_t is u64 on 64-bit targets but u32 on armv7: the casts are needed there.
#[allow(clippy::unnecessary_cast)]
pub fn raise_open_files_limit(partitions_max: usize, connections_max: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-files limit");
        return;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot raise the open-files limit");
            limit.rlim_cur = before;
        }
    }
    let needed = (partitions_max as u64)
        .saturating_mul(FILES_PER_PARTITION_MIN)
        .saturating_add(connections_max as u64);
    if (limit.rlim_cur as u64) < needed {
        tracing::warn!(
            open_files_max = limit.rlim_cur as u64,
            needed,
            "open-files limit is below partitions_max x 3 + connections_max; raise LimitNOFILE or lower them"
        );
    } else if limit.rlim_cur != before {
        tracing::debug!(
            from = before as u64,
            to = limit.rlim_cur as u64,
            "raised the open-files limit"
        );
    }
}

/// Partitions whose acks do not wait for fsync (`fsync_on_ack = false` on the node or
/// `bramble.fsync.on.ack = false` on the topic) need something else to sync them: every
/// `flush_ms_max` their logs are synced, bounding what a power cut can take.
async fn flush_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let period = Duration::from_millis(broker.config.flush_ms_max);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => broker.flush_unsynced().await,
            _ = stop.changed() => return,
        }
    }
}

async fn retention_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let period = Duration::from_millis(broker.config.retention_check_ms);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => broker.enforce_retention(now_ms()).await,
            _ = stop.changed() => return,
        }
    }
}

/// The scrubber (`log::scrub`): every `scrub_interval_ms`, one paced pass over every partition's
/// sealed segments; stopping interrupts a pass (it may take hours at an SD card's rate).
async fn scrub_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let period = Duration::from_millis(broker.config.scrub_interval_ms);
    if period.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = async {
                tokio::time::sleep(period).await;
                scrub_pass(&broker).await;
            } => {}
            _ = stop.changed() => return,
        }
    }
}

async fn scrub_pass(broker: &Broker) {
    let mut pace = crate::log::Pace::new(broker.config.scrub_bytes_per_sec_max);
    for t in broker.topics() {
        for replica in t.partitions() {
            match replica.log.scrub(&mut pace).await {
                Ok(s) => {
                    tracing::debug!(topic = %t.name, partition = replica.index, segments = s.segments, batches = s.batches, bytes = s.bytes, damaged = s.damaged, "scrubbed")
                }
                Err(e) => {
                    tracing::warn!(topic = %t.name, partition = replica.index, error = %e, "scrub failed")
                }
            }
        }
    }
}

/// The cleaner: its own task, so a long compaction pass delays neither appends nor retention's
/// schedule (retention waits only for the partition being cleaned).
async fn compaction_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let period = Duration::from_millis(broker.config.compaction_check_ms);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => broker.compact_all(now_ms()).await,
            _ = stop.changed() => return,
        }
    }
}
