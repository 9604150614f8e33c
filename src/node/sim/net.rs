//! node::sim::net: the simulation's fault-injecting network. One in-process TCP proxy per node
//! address (Kafka and Raft): what the node advertises and what the voters list names, forwarding
//! to the node's real listener. A proxy tells who connects by the source IP (`peer_source_ip` of
//! a node; anything else is the client), so each directed link (from, to) has its own state:
//!
//! - **down**: nothing crosses. A new connection on it is accepted but held, unforwarded, as a
//!   SYN that is retried until the route comes back; bytes of open connections stall where they
//!   are (TCP retransmits them once the link heals), so it is the applications' own timeouts
//!   that notice, as on a real cut. A one-way partition is one direction down.
//! - **delay**: each chunk is held a random time in a range, in order within its connection (so
//!   messages on different connections reorder).
//! - **resets**: each chunk may, with a set chance, reset its connection (RST both ends),
//!   dropping whatever was in flight.
//!
//! Delays and resets draw from a per-connection RNG seeded from the simulation's seed, but
//! which chunk a draw lands on depends on how the kernel splits the byte stream: not
//! deterministic.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::io::crash::XorShift;

/// Parties of the network: 0 is the client, 1..=NODES the nodes.
pub(crate) const PARTIES: usize = 4;
/// The client's party index.
pub(crate) const CLIENT: usize = 0;
/// Bytes read from a socket at once (one "chunk": the unit delays and resets apply to).
const CHUNK_BYTES: usize = 16 * 1024;
/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// Chunks in flight per direction of a connection before the reader waits (backpressure).
const CHUNKS_IN_FLIGHT_MAX: usize = 64;

/// One directed link's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Link {
    pub down: bool,
    /// Each chunk is held a random time in `delay_ms.0..=delay_ms.1` (0..=0: none).
    pub delay_ms: (u64, u64),
    /// Chance per chunk, in thousandths, that the connection is reset.
    pub reset_per_mille: u64,
}

/// Every directed link, `links[from][to]`.
pub(crate) type Links = [[Link; PARTIES]; PARTIES];

/// The network: link states and the proxies.
pub(crate) struct SimNet {
    links: watch::Sender<Links>,
    /// Source IP of each node (party 1..): who a connection comes from.
    node_ips: Vec<IpAddr>,
    seed: u64,
}

impl SimNet {
    pub(crate) fn new(node_ips: Vec<IpAddr>, seed: u64) -> Arc<SimNet> {
        let (links, _) = watch::channel(Links::default());
        Arc::new(SimNet {
            links,
            node_ips,
            seed,
        })
    }

    /// Changes links with `f` (seen at once by every proxied connection).
    pub(crate) fn update(&self, f: impl FnOnce(&mut Links)) {
        self.links.send_modify(f);
    }

    /// Every link back up, undelayed, without resets.
    pub(crate) fn heal(&self) {
        self.update(|l| *l = Links::default());
    }

    fn party_of(&self, ip: IpAddr) -> usize {
        self.node_ips
            .iter()
            .position(|n| *n == ip)
            .map_or(CLIENT, |i| i + 1)
    }

    /// Starts a proxy for node party `to` on `listener`, forwarding to what `target` holds (the
    /// node's real address, which may change when it restarts; `None` while it is down).
    pub(crate) fn proxy(
        self: &Arc<Self>,
        listener: TcpListener,
        to: usize,
        target: Arc<Mutex<Option<SocketAddr>>>,
    ) -> tokio::task::JoinHandle<()> {
        let net = self.clone();
        tokio::spawn(async move {
            let mut count = 0u64;
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    // Out of descriptors and the like: back off rather than spin.
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                };
                count += 1;
                let from = net.party_of(peer.ip());
                let rng = XorShift::new(net.seed ^ (to as u64) << 56 ^ (from as u64) << 48 ^ count);
                tokio::spawn(net.clone().carry(stream, from, to, target.clone(), rng));
            }
        })
    }

    /// One proxied connection: waits until both directions are up (a held SYN), connects to the
    /// node, then pumps both ways until either end closes or a reset is drawn.
    async fn carry(
        self: Arc<Self>,
        down: TcpStream,
        from: usize,
        to: usize,
        target: Arc<Mutex<Option<SocketAddr>>>,
        rng: XorShift,
    ) {
        let mut links = self.links.subscribe();
        let routed = links
            .wait_for(|l| !l[from][to].down && !l[to][from].down)
            .await
            .is_ok();
        let target = *target.lock().unwrap_or_else(|e| e.into_inner());
        let Some(target) = target.filter(|_| routed) else {
            return;
        };
        let Ok(up) = TcpStream::connect(target).await else {
            // The node is down: the client sees the connection reset, as a dead host's kernel
            // answers once it is back (and a crashed process's at once).
            let _ = down.set_zero_linger();
            return;
        };
        let _ = (up.set_nodelay(true), down.set_nodelay(true));
        let (mut down_read, mut down_write) = down.into_split();
        let (mut up_read, mut up_write) = up.into_split();
        let mut rng_back = rng.clone();
        rng_back.next_u64();
        let (reset_tx, mut reset_rx) = watch::channel(false);
        {
            let forth = pump(
                self.links.subscribe(),
                (from, to),
                (&mut down_read, &mut up_write),
                rng,
                reset_tx.clone(),
            );
            let back = pump(
                self.links.subscribe(),
                (to, from),
                (&mut up_read, &mut down_write),
                rng_back,
                reset_tx,
            );
            tokio::select! {
                _ = async { tokio::join!(forth, back) } => {}
                _ = reset_rx.wait_for(|r| *r) => {}
            }
        }
        if *reset_rx.borrow() {
            // Dropped with SO_LINGER 0: an RST to both ends, discarding what was in flight.
            let _ = down_write.as_ref().set_zero_linger();
            let _ = up_write.as_ref().set_zero_linger();
        }
    }
}

/// Carries one direction of a connection over link `(from, to)` until EOF, an error or a drawn
/// reset (which is signalled on `reset` and ends both directions with an RST).
async fn pump(
    links: watch::Receiver<Links>,
    (from, to): (usize, usize),
    (read, write): (
        &mut tokio::net::tcp::OwnedReadHalf,
        &mut tokio::net::tcp::OwnedWriteHalf,
    ),
    mut rng: XorShift,
    reset: watch::Sender<bool>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT_MAX);
    let mut read_links = links.clone();
    let reader = async move {
        let mut last = Instant::now();
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let n = match read.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            buf.truncate(n);
            let link = read_links.borrow_and_update()[from][to];
            if link.reset_per_mille > 0 && rng.below(1000) < link.reset_per_mille {
                return true;
            }
            let (lo, hi) = link.delay_ms;
            let held = Duration::from_millis(lo + rng.below(hi.saturating_sub(lo) + 1));
            // Order within the connection: never before the chunk ahead of it.
            last = last.max(Instant::now() + held);
            if tx.send((last, buf)).await.is_err() {
                return false;
            }
        }
    };
    let mut write_links = links;
    let writer = async move {
        while let Some((at, buf)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if write_links.wait_for(|l| !l[from][to].down).await.is_err() {
                return;
            }
            if write.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = write.shutdown().await;
    };
    let reader = async move {
        if reader.await {
            let _ = reset.send(true);
        }
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A started proxy for party 1 whose target is an echo server; returns the proxy address.
    async fn echo_behind_proxy(net: &Arc<SimNet>) -> SocketAddr {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Arc::new(Mutex::new(Some(echo.local_addr().unwrap())));
        tokio::spawn(async move {
            loop {
                let (mut s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = proxy.local_addr().unwrap();
        net.proxy(proxy, 1, target);
        addr
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await.unwrap();
        got
    }

    /// Proves the link states act: bytes cross an up link; a down link (client to node) stalls
    /// them until it heals, then they arrive; a delayed link holds each chunk at least its
    /// delay; a reset link closes the connection.
    #[tokio::test]
    async fn links_stall_delay_and_reset() {
        let net = SimNet::new(vec!["127.0.0.61".parse().unwrap()], 7);
        let addr = echo_behind_proxy(&net).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(round_trip(&mut s, b"hello").await, b"hello");

        net.update(|l| l[CLIENT][1].down = true);
        s.write_all(b"stalled").await.unwrap();
        let mut got = [0u8; 7];
        let early = tokio::time::timeout(Duration::from_millis(200), s.read_exact(&mut got)).await;
        assert!(early.is_err(), "bytes crossed a down link");
        net.heal();
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"stalled");

        net.update(|l| l[1][CLIENT].delay_ms = (150, 150));
        let started = std::time::Instant::now();
        assert_eq!(round_trip(&mut s, b"slow").await, b"slow");
        assert!(started.elapsed() >= Duration::from_millis(150));

        net.update(|l| l[CLIENT][1].reset_per_mille = 1000);
        s.write_all(b"lost").await.unwrap();
        let mut buf = [0u8; 4];
        let end = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(matches!(end, Ok(Ok(0)) | Ok(Err(_))), "{end:?}");
    }

    /// A connection from a node's source IP is that node's: a one-way cut of node 1's link to
    /// node 2 holds node 1's new connection while the client's goes through.
    #[tokio::test]
    async fn the_source_ip_names_the_sender() {
        let node = "127.0.0.62".parse().unwrap();
        let net = SimNet::new(vec!["127.0.0.63".parse().unwrap(), node], 8);
        let addr = echo_behind_proxy(&net).await;
        net.update(|l| l[2][1].down = true);
        let mut client = TcpStream::connect(addr).await.unwrap();
        assert_eq!(round_trip(&mut client, b"ok").await, b"ok");
        let mut peer = crate::client::connect_from(&addr.to_string(), Some(node))
            .await
            .unwrap();
        peer.write_all(b"held").await.unwrap();
        let mut got = [0u8; 4];
        let early =
            tokio::time::timeout(Duration::from_millis(200), peer.read_exact(&mut got)).await;
        assert!(early.is_err(), "a held connection was forwarded");
        net.heal();
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"held");
    }
}
