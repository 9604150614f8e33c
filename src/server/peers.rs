//! server::peers: what each peer address holds. Counts its open connections against
//! `connections_per_ip_max` and gives all its connections one shared request-byte budget
//! (`inflight_bytes_per_ip_max`), so one host cannot take every connection slot or the whole
//! node-wide request budget. An address's entry lives while it has a connection open, so the map
//! holds at most `connections_max` entries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

/// One address's open connections and its request-byte budget.
struct Entry {
    connections: usize,
    bytes: Arc<Semaphore>,
}

/// The registry of peer addresses with open connections.
pub struct Peers {
    entries: Mutex<HashMap<IpAddr, Entry>>,
    connections_per_ip_max: usize,
    bytes_per_ip_max: usize,
}

/// One admitted connection's place in its address's entry; leaving it (drop) frees the slot.
pub struct Admitted {
    peers: Arc<Peers>,
    ip: IpAddr,
    /// The address's request-byte budget, shared by its connections.
    pub bytes: Arc<Semaphore>,
}

impl Peers {
    pub fn new(connections_per_ip_max: usize, bytes_per_ip_max: usize) -> Arc<Peers> {
        Arc::new(Peers {
            entries: Mutex::new(HashMap::new()),
            connections_per_ip_max,
            bytes_per_ip_max,
        })
    }

    /// Admits one more connection from `ip`, or `None` when the address already has
    /// `connections_per_ip_max` open.
    pub fn admit(self: &Arc<Peers>, ip: IpAddr) -> Option<Admitted> {
        // A poisoned lock only means a panic elsewhere mid-update of plain counters; keep going.
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.entry(ip).or_insert_with(|| Entry {
            connections: 0,
            bytes: Arc::new(Semaphore::new(self.bytes_per_ip_max)),
        });
        if entry.connections >= self.connections_per_ip_max {
            return None;
        }
        entry.connections += 1;
        Some(Admitted {
            peers: self.clone(),
            ip,
            bytes: entry.bytes.clone(),
        })
    }

    /// Connections open from `ip` (tests and diagnostics).
    pub fn connections(&self, ip: IpAddr) -> usize {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(&ip).map_or(0, |e| e.connections)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut entries = self
            .peers
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get_mut(&self.ip) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 {
                entries.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the per-address limit counts connections per address and frees slots on drop.
    #[test]
    fn per_address_limit_and_release() {
        let peers = Peers::new(2, 1024);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = peers.admit(a).expect("first");
        let second = peers.admit(a).expect("second");
        assert!(peers.admit(a).is_none(), "third from one address admitted");
        let other = peers
            .admit(b)
            .expect("another address is not limited by the first");
        assert!(
            Arc::ptr_eq(&first.bytes, &second.bytes),
            "one budget per address"
        );
        assert!(!Arc::ptr_eq(&first.bytes, &other.bytes));
        drop(first);
        assert_eq!(peers.connections(a), 1);
        let _again = peers.admit(a).expect("a freed slot is reusable");
        drop((second, other));
        assert_eq!(peers.connections(b), 0);
    }
}
