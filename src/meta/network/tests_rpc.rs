//! Tests of requests over the transport: every request kind makes a round trip through a
//! served fake Raft and controller (`tests.rs`), and failures map to the errors openraft and
//! callers act on: a silent peer is a timeout, a dead address is unreachable at once, an
//! oversized AppendEntries asks openraft for fewer entries.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use openraft::error::{Fatal, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use openraft::testing::log_id;
use openraft::{BasicNode, Entry, EntryPayload, Vote};
use tokio::net::TcpListener;
use uuid::Uuid;

use super::tests::{
    FATAL_TERM, PROMPT, SILENT_NODE, SILENT_TERM, SLOW_FENCED_NODE, SLOW_PROPOSAL, fast_config,
    local, start, start_with,
};
use super::*;
use crate::meta::command::{
    ControllerRequest, ControllerResponse, MetadataCommand, MetadataResponse,
};
use crate::meta::types::TypeConfig;

/// openraft's own deadline for the RPC; longer than the transport's so the transport's counts.
fn option() -> RPCOption {
    RPCOption::new(Duration::from_secs(10))
}

async fn network_to(target: NodeId, addr: &str, config: TransportConfig) -> Network {
    let (me, image) = local(2, Some("c1"));
    // The image's sender may go: the receiver keeps the last image.
    drop(image);
    NetworkFactory::new(me, config)
        .new_client(target, &BasicNode::new(addr))
        .await
}

fn entry(index: u64, configs: BTreeMap<String, String>) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(3, 1, index),
        payload: EntryPayload::Normal(MetadataCommand::SetTopicConfigs {
            name: "t".into(),
            configs,
        }),
    }
}

fn append(entries: Vec<Entry<TypeConfig>>) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(log_id(3, 1, 4)),
        entries,
        leader_commit: Some(log_id(3, 1, 4)),
    }
}

/// AppendEntries, Vote and InstallSnapshot reach the served Raft whole and its answers come
/// back, errors included (a remote fatal error is openraft's RemoteError naming the target).
#[tokio::test]
async fn raft_rpcs_round_trip() {
    let server = start(1, Some("c1")).await;
    let mut net = network_to(1, &server.addr, fast_config()).await;

    let entries = (5..8).map(|i| entry(i, BTreeMap::new())).collect();
    let r = net.append_entries(append(entries), option()).await.unwrap();
    assert_eq!(
        r,
        AppendEntriesResponse::PartialSuccess(Some(log_id(3, 1, 7)))
    );

    let vote = Vote::new(4, 2);
    let r = net
        .vote(VoteRequest::new(vote, Some(log_id(3, 1, 7))), option())
        .await
        .unwrap();
    assert_eq!(
        (r.vote, r.vote_granted, r.last_log_id),
        (vote, true, Some(log_id(3, 1, 7)))
    );

    let snapshot = InstallSnapshotRequest {
        vote: Vote::new_committed(4, 2),
        meta: Default::default(),
        offset: 0,
        data: vec![7u8; 1000],
        done: true,
    };
    let r = net.install_snapshot(snapshot, option()).await.unwrap();
    assert_eq!(
        r.vote.leader_id().term,
        1000,
        "the chunk's 1000 bytes arrived"
    );

    let e = net
        .vote(VoteRequest::new(Vote::new(FATAL_TERM, 2), None), option())
        .await
        .unwrap_err();
    match e {
        RPCError::RemoteError(remote) => {
            assert_eq!(remote.target, 1);
            assert!(matches!(remote.source, RaftError::Fatal(Fatal::Stopped)));
        }
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

/// Controller requests make the round trip through PeerClient; the server tells the service
/// which node asked (from the handshake).
#[tokio::test]
async fn controller_requests_round_trip() {
    let server = start(1, Some("c1")).await;
    let (me, _image) = local(2, Some("c1"));
    let client = PeerClient::new(me, fast_config());
    let id = Uuid::new_v4();
    let create = MetadataCommand::CreateTopic {
        name: "orders".into(),
        id,
        partitions: 6,
        replication_factor: 1,
        configs: BTreeMap::new(),
        assignment: None,
    };
    let r = client
        .call(&server.addr, ControllerRequest::Propose(create))
        .await
        .unwrap();
    assert_eq!(
        r,
        ControllerResponse::Applied(MetadataResponse::TopicCreated { id })
    );
    let join = ControllerRequest::Join {
        node_id: 4,
        raft_addr: "127.0.0.1:1".into(),
    };
    let r = client.call(&server.addr, join).await.unwrap();
    assert_eq!(r, ControllerResponse::NotController { leader: Some(2) });
    server.stop().await;
}

/// A peer that never answers: the RPC fails as a Timeout after about `rpc_timeout_ms`, and the
/// next RPC on the same Network gets its own answer (the silent connection was not reused).
#[tokio::test]
async fn raft_rpc_to_a_silent_peer_times_out() {
    let server = start(1, Some("c1")).await;
    let config = fast_config();
    let mut net = network_to(1, &server.addr, config.clone()).await;
    let t0 = Instant::now();
    let e = net
        .vote(VoteRequest::new(Vote::new(SILENT_TERM, 2), None), option())
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert!(
        matches!(&e, RPCError::Timeout(t) if t.target == 1 && t.id == 2),
        "{e:?}"
    );
    assert!(
        took >= config.rpc_timeout() && took < PROMPT,
        "took {took:?}"
    );

    let vote = Vote::new(5, 2);
    let r = net
        .vote(VoteRequest::new(vote, None), option())
        .await
        .unwrap();
    assert_eq!(r.vote, vote);
    server.stop().await;
}

/// A controller that never answers: the caller gets NetError::Timeout after
/// `controller_timeout_ms`, then a correct answer to its next call; a server whose own bound is
/// shorter answers Unavailable instead of leaving the caller waiting.
#[tokio::test]
async fn controller_call_to_a_silent_peer_times_out() {
    let patient = TransportConfig {
        controller_timeout_ms: 5_000,
        ..fast_config()
    };
    let server = start_with(1, None, patient, accept_any_peer()).await;
    let (me, _image) = local(2, None);
    let client = PeerClient::new(me, fast_config());
    let silent = ControllerRequest::Heartbeat {
        node_id: SILENT_NODE,
        incarnation: Uuid::new_v4(),
    };
    let t0 = Instant::now();
    let e = client.call(&server.addr, silent.clone()).await.unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    assert!(t0.elapsed() < PROMPT);
    let hb = ControllerRequest::Heartbeat {
        node_id: 2,
        incarnation: Uuid::new_v4(),
    };
    let r = client.call(&server.addr, hb).await.unwrap();
    assert_eq!(r, ControllerResponse::HeartbeatAck { registered: true });
    server.stop().await;

    let hasty = TransportConfig {
        controller_timeout_ms: 100,
        ..fast_config()
    };
    let server = start_with(1, None, hasty, accept_any_peer()).await;
    let (me, _image) = local(2, None);
    let client = PeerClient::new(
        me,
        TransportConfig {
            controller_timeout_ms: 3_000,
            ..fast_config()
        },
    );
    let r = client.call(&server.addr, silent).await.unwrap();
    assert!(matches!(r, ControllerResponse::Unavailable(_)), "{r:?}");
    server.stop().await;
}

/// A heartbeat does not wait behind proposals in flight to the same controller: with three
/// slow proposals queued on the connection, the heartbeat is answered at once, the proposals
/// later. Sharing one connection it waited for all three (4.5 s), past a 2 s broker session:
/// a node's own burst of ISR changes got it fenced (found by the long nemesis run).
#[tokio::test]
async fn heartbeats_do_not_wait_behind_proposals() {
    let patient = TransportConfig {
        controller_timeout_ms: 10_000,
        ..fast_config()
    };
    let server = start_with(1, None, patient.clone(), accept_any_peer()).await;
    let (me, _image) = local(2, None);
    let client = std::sync::Arc::new(PeerClient::new(me, patient));
    let slow = || {
        ControllerRequest::Propose(MetadataCommand::FenceBroker {
            node_id: SLOW_FENCED_NODE,
            incarnation: Uuid::new_v4(),
        })
    };
    let proposals: Vec<_> = (0..3)
        .map(|_| {
            let (client, addr, req) = (client.clone(), server.addr.clone(), slow());
            tokio::spawn(async move { client.call(&addr, req).await })
        })
        .collect();
    // Let the proposals take the connection first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let hb = ControllerRequest::Heartbeat {
        node_id: 2,
        incarnation: Uuid::new_v4(),
    };
    let t0 = Instant::now();
    let r = client.call(&server.addr, hb).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(r, ControllerResponse::HeartbeatAck { registered: true });
    assert!(took < SLOW_PROPOSAL / 2, "the heartbeat waited {took:?}");
    for p in proposals {
        let r = p.await.unwrap().unwrap();
        assert_eq!(r, ControllerResponse::Applied(MetadataResponse::Done));
    }
    server.stop().await;
}

/// A dead address is Unreachable at once (openraft backs off); a PeerClient then refuses to
/// redial it until its backoff has run, and reaches a server started there afterwards.
#[tokio::test]
async fn dead_address_is_unreachable_quickly() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);

    let mut net = network_to(1, &addr, fast_config()).await;
    let t0 = Instant::now();
    let e = net
        .vote(VoteRequest::new(Vote::new(1, 2), None), option())
        .await
        .unwrap_err();
    assert!(matches!(e, RPCError::Unreachable(_)), "{e:?}");
    assert!(
        t0.elapsed() < Duration::from_millis(400),
        "took {:?}",
        t0.elapsed()
    );
    let delays: Vec<Duration> = net.backoff().take(5).collect();
    assert_eq!(
        delays.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
        vec![20, 40, 80, 160, 200]
    );

    let (me, _image) = local(2, None);
    let config = TransportConfig {
        backoff_min_ms: 300,
        backoff_max_ms: 300,
        ..fast_config()
    };
    let client = PeerClient::new(me, config);
    let hb = || ControllerRequest::Heartbeat {
        node_id: 2,
        incarnation: Uuid::new_v4(),
    };
    let e = client.call(&addr, hb()).await.unwrap_err();
    assert!(matches!(e, NetError::Connect { .. }), "{e:?}");
    let e = client.call(&addr, hb()).await.unwrap_err();
    assert!(
        matches!(e, NetError::BackingOff { .. }) && e.is_unreachable(),
        "{e:?}"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let e = client.call(&addr, hb()).await.unwrap_err();
    assert!(
        matches!(e, NetError::Connect { .. }),
        "redialled after the backoff: {e:?}"
    );
}

/// A peer that accepts TCP but never completes the handshake is Unreachable after
/// `connect_timeout_ms`, not a hang.
#[tokio::test]
async fn peer_silent_in_handshake_is_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut net = network_to(1, &addr, fast_config()).await;
    let t0 = Instant::now();
    let e = net
        .vote(VoteRequest::new(Vote::new(1, 2), None), option())
        .await
        .unwrap_err();
    assert!(matches!(e, RPCError::Unreachable(_)), "{e:?}");
    assert!(t0.elapsed() >= fast_config().connect_timeout() && t0.elapsed() < PROMPT);
    drop(listener);
}

/// A Network for node 3 that reaches node 1 at the configured address refuses it.
#[tokio::test]
async fn network_refuses_the_wrong_node() {
    let server = start(1, None).await;
    let mut net = network_to(3, &server.addr, fast_config()).await;
    let e = net
        .vote(VoteRequest::new(Vote::new(1, 2), None), option())
        .await
        .unwrap_err();
    match e {
        RPCError::Unreachable(u) => assert!(u.to_string().contains("not node 3"), "{u}"),
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

/// An AppendEntries over `frame_bytes_max` is not sent; openraft is asked for half the entries,
/// and half fit.
#[tokio::test]
async fn oversized_append_entries_asks_for_fewer_entries() {
    let server = start(1, Some("c1")).await;
    let mut net = network_to(1, &server.addr, fast_config()).await;
    // Four entries of ~40 KiB each: 160 KiB, over the 128 KiB limit; two fit.
    let big = |i| {
        entry(
            i,
            BTreeMap::from([("k".to_string(), "v".repeat(40 * 1024))]),
        )
    };
    let e = net
        .append_entries(append((5..9).map(big).collect()), option())
        .await
        .unwrap_err();
    match e {
        RPCError::PayloadTooLarge(p) => assert_eq!(p.entries_hint(), 2),
        other => panic!("{other:?}"),
    }
    let r = net
        .append_entries(append((5..7).map(big).collect()), option())
        .await
        .unwrap();
    assert_eq!(
        r,
        AppendEntriesResponse::PartialSuccess(Some(log_id(3, 1, 6)))
    );
    server.stop().await;
}
