//! Three real `openraft::Raft` nodes talking only over this transport (real TCP on 127.0.0.1)
//! elect a leader, replicate and apply a command on all three, and elect a new leader among the
//! two that remain when the leader stops. Storage is a minimal in-memory log and state machine
//! defined here (the real file store is `meta::store`'s business); what is under test is that
//! the transport carries every RPC openraft needs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Config, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StoredMembership, Vote,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::tests::{FakeController, fast_config, local};
use super::*;
use crate::meta::command::{MetadataCommand, MetadataResponse};
use crate::meta::types::{Raft, TypeConfig};

/// Longest wait for an election or a commit on a loaded 2-core test machine.
const CONVERGE: Duration = Duration::from_secs(20);

#[derive(Debug, Default)]
struct Log {
    vote: Option<Vote<NodeId>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    purged: Option<LogId<NodeId>>,
}

/// An in-memory Raft log shared with its readers.
#[derive(Debug, Clone, Default)]
struct MemLog(Arc<Mutex<Log>>);

impl RaftLogReader<TypeConfig> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let log = self.0.lock().unwrap();
        Ok(log.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemLog {
    type LogReader = MemLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let log = self.0.lock().unwrap();
        let last = log.entries.values().last().map(|e| e.log_id).or(log.purged);
        Ok(LogState {
            last_purged_log_id: log.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> MemLog {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.0.lock().unwrap().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.0.lock().unwrap().vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut log = self.0.lock().unwrap();
        for e in entries {
            log.entries.insert(e.log_id.index, e);
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.0.lock().unwrap().entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut log = self.0.lock().unwrap();
        log.entries = log.entries.split_off(&(log_id.index + 1));
        log.purged = Some(log_id);
        Ok(())
    }
}

/// A state machine that remembers what it applied; snapshots carry only their meta.
#[derive(Debug, Clone, Default)]
struct MemMachine(Arc<Mutex<Machine>>);

#[derive(Debug, Default)]
struct Machine {
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    commands: Vec<MetadataCommand>,
    snapshot: Option<SnapshotMeta<NodeId, BasicNode>>,
}

impl RaftSnapshotBuilder<TypeConfig> for MemMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let mut m = self.0.lock().unwrap();
        let meta = SnapshotMeta {
            last_log_id: m.applied,
            last_membership: m.membership.clone(),
            snapshot_id: format!("{:?}", m.applied),
        };
        m.snapshot = Some(meta.clone());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MemMachine {
    type SnapshotBuilder = MemMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let m = self.0.lock().unwrap();
        Ok((m.applied, m.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetadataResponse>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut m = self.0.lock().unwrap();
        let mut out = Vec::new();
        for e in entries {
            m.applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(cmd) => m.commands.push(cmd),
                EntryPayload::Membership(mem) => {
                    m.membership = StoredMembership::new(Some(e.log_id), mem)
                }
            }
            out.push(MetadataResponse::Done);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> MemMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut m = self.0.lock().unwrap();
        m.applied = meta.last_log_id;
        m.membership = meta.last_membership.clone();
        m.snapshot = Some(meta.clone());
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let m = self.0.lock().unwrap();
        Ok(m.snapshot.clone().map(|meta| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        }))
    }
}

/// One node: its Raft, its state machine, and its server's stop switch.
struct Node {
    raft: Raft,
    machine: MemMachine,
    stop: oneshot::Sender<()>,
}

async fn start_node(id: NodeId, listener: TcpListener, raft_config: Arc<Config>) -> Node {
    // The image never changes here; its receiver keeps the last value once the sender is gone.
    let (me, _) = local(id, Some("c1"));
    let transport = fast_config();
    let machine = MemMachine::default();
    let network = NetworkFactory::new(me.clone(), transport.clone());
    let raft = Raft::new(id, raft_config, network, MemLog::default(), machine.clone())
        .await
        .unwrap();
    let service = Arc::new(PeerService {
        local: me,
        config: transport,
        raft: Arc::new(raft.clone()),
        controller: Arc::new(FakeController),
        peer_check: accept_any_peer(),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, service, async {
        let _ = stopped.await;
    }));
    Node {
        raft,
        machine,
        stop,
    }
}

/// The leader every node in `nodes` agrees on, once they all name the same one.
async fn agreed_leader(nodes: &[&Node]) -> NodeId {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let leaders: BTreeSet<Option<NodeId>> = nodes
            .iter()
            .map(|n| n.raft.metrics().borrow().current_leader)
            .collect();
        if let [Some(leader)] = leaders.iter().copied().collect::<Vec<_>>()[..] {
            return leader;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no agreed leader: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_rafts_elect_replicate_and_fail_over() {
    let raft_config = Arc::new(
        Config {
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            ..Config::default()
        }
        .validate()
        .unwrap(),
    );
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        members.insert(id, BasicNode::new(l.local_addr().unwrap()));
        listeners.push((id, l));
    }
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        nodes.insert(id, start_node(id, l, raft_config.clone()).await);
    }
    nodes[&1].raft.initialize(members).await.unwrap();

    let all: Vec<&Node> = nodes.values().collect();
    let leader = agreed_leader(&all).await;

    // A command proposed on the leader is applied on all three.
    let cmd = MetadataCommand::DeleteTopic {
        name: "over-the-wire".into(),
        id: None,
    };
    let written = nodes[&leader].raft.client_write(cmd.clone()).await.unwrap();
    for node in nodes.values() {
        node.raft
            .wait(Some(CONVERGE))
            .applied_index_at_least(Some(written.log_id.index), "command applied")
            .await
            .unwrap();
        assert_eq!(node.machine.0.lock().unwrap().commands, vec![cmd.clone()]);
    }

    // The leader goes away; the other two elect one of themselves over the transport.
    let old = nodes.remove(&leader).unwrap();
    old.raft.shutdown().await.unwrap();
    let _ = old.stop.send(());
    let rest: Vec<&Node> = nodes.values().collect();
    let deadline = tokio::time::Instant::now() + CONVERGE;
    let new_leader = loop {
        let l = agreed_leader(&rest).await;
        if l != leader {
            break l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "old leader {leader} still named"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(nodes.contains_key(&new_leader));
    let cmd2 = MetadataCommand::DeleteTopic {
        name: "after-failover".into(),
        id: None,
    };
    nodes[&new_leader]
        .raft
        .client_write(cmd2.clone())
        .await
        .unwrap();
    for node in nodes.values() {
        node.raft.shutdown().await.unwrap();
    }
}
