//! server: the Kafka listener. Accepts connections up to `connections_max` (a semaphore; further
//! clients wait in the listen backlog), runs one task per connection, and on shutdown stops
//! accepting, lets each connection finish the request it is serving, then syncs the logs.

pub mod connection;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::api::now_ms;
use crate::broker::Broker;

/// Runs the listener until `shutdown` resolves, then drains connections and stops the broker.
pub async fn run(
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let connections_max = broker.config.connections_max;
    let permits = Arc::new(Semaphore::new(connections_max));
    let inflight = Arc::new(Semaphore::new(broker.config.inflight_bytes_max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let retention = tokio::spawn(retention_loop(broker.clone(), stop_rx.clone()));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let broker = broker.clone();
                let stop = stop_rx.clone();
                let inflight = inflight.clone();
                tokio::spawn(async move {
                    connection::serve(broker, stream, peer, stop, inflight).await;
                    drop(permit);
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
    broker.shutdown().await;
    tracing::info!("shutdown complete");
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
