//! Tests of the transport's frames and handshake, against real TCP on 127.0.0.1 and a fake
//! Raft and controller behind the server. Shared helpers (`local`, `fast_config`, `start`, the
//! fakes) are used by `tests_rpc.rs` too.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use openraft::error::{Fatal, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::frame::{self, FrameError, HEADER_BYTES};
use super::wire::{HELLO_BYTES_MAX, Hello, HelloReply, MAGIC, PROTOCOL_VERSION, PeerRequest};
use super::*;
use crate::meta::command::MetadataResponse;
use crate::meta::command::{ControllerRequest, ControllerResponse, MetadataCommand};
use crate::meta::image::MetadataImage;
use crate::meta::types::TypeConfig;

/// Longest any test waits for something that should happen at once (a close, an answer).
pub(super) const PROMPT: Duration = Duration::from_secs(3);
/// A vote request of this term never gets an answer from [`FakeRaft`].
pub(super) const SILENT_TERM: u64 = 666;
/// A vote request of this term gets a fatal error from [`FakeRaft`].
pub(super) const FATAL_TERM: u64 = 13;
/// A heartbeat from this node id never gets an answer from [`FakeController`].
pub(super) const SILENT_NODE: i32 = 99;
/// A proposal to fence this node id is answered only after [`SLOW_PROPOSAL`] (a controller
/// busy committing).
pub(super) const SLOW_FENCED_NODE: i32 = 98;
pub(super) const SLOW_PROPOSAL: Duration = Duration::from_millis(1_500);

/// A node's identity with an image carrying `cluster` (the sender keeps the image alive).
pub(super) fn local(
    node_id: NodeId,
    cluster: Option<&str>,
) -> (LocalNode, watch::Sender<Arc<MetadataImage>>) {
    let image = MetadataImage {
        cluster_id: cluster.map(str::to_string),
        ..MetadataImage::default()
    };
    let (tx, rx) = watch::channel(Arc::new(image));
    let local = LocalNode {
        node_id,
        directory_id: Uuid::new_v4(),
        image: rx,
        peer_check: accept_any_peer(),
    };
    (local, tx)
}

/// Timeouts short enough for tests, frames small enough to overflow on purpose.
pub(super) fn fast_config() -> TransportConfig {
    TransportConfig {
        connect_timeout_ms: 500,
        rpc_timeout_ms: 300,
        controller_timeout_ms: 500,
        frame_bytes_max: 128 * 1024,
        backoff_min_ms: 20,
        backoff_max_ms: 200,
        peer_connections_max: 8,
        idle_timeout_ms: 10_000,
        source_ip: None,
    }
}

/// Answers from the request, so a round trip proves the request arrived whole.
pub(super) struct FakeRaft;

impl RaftService for FakeRaft {
    fn append_entries(
        &self,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> BoxFuture<'static, Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>> {
        let last = req.entries.last().map(|e| e.log_id);
        Box::pin(async move { Ok(AppendEntriesResponse::PartialSuccess(last)) })
    }

    fn vote(
        &self,
        req: VoteRequest<NodeId>,
    ) -> BoxFuture<'static, Result<VoteResponse<NodeId>, RaftError<NodeId>>> {
        Box::pin(async move {
            match req.vote.leader_id().term {
                SILENT_TERM => std::future::pending().await,
                FATAL_TERM => Err(RaftError::Fatal(Fatal::Stopped)),
                _ => Ok(VoteResponse::new(req.vote, req.last_log_id, true)),
            }
        })
    }

    fn install_snapshot(
        &self,
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> BoxFuture<
        'static,
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    > {
        // The answer's vote carries the chunk's length as its term: proof the bytes arrived.
        let vote = openraft::Vote::new(
            req.data.len() as u64,
            req.vote.leader_id().voted_for().unwrap_or(0),
        );
        Box::pin(async move { Ok(InstallSnapshotResponse { vote }) })
    }
}

/// Answers from the request and the caller's handshake node id.
pub(super) struct FakeController;

impl ControllerService for FakeController {
    fn handle(
        &self,
        from: NodeId,
        req: ControllerRequest,
    ) -> BoxFuture<'static, ControllerResponse> {
        Box::pin(async move {
            match req {
                ControllerRequest::Heartbeat { node_id, .. } if node_id == SILENT_NODE => {
                    std::future::pending().await
                }
                ControllerRequest::Heartbeat { node_id, .. } => ControllerResponse::HeartbeatAck {
                    registered: node_id as NodeId == from,
                },
                ControllerRequest::Propose(MetadataCommand::FenceBroker { node_id, .. })
                    if node_id == SLOW_FENCED_NODE =>
                {
                    tokio::time::sleep(SLOW_PROPOSAL).await;
                    ControllerResponse::Applied(MetadataResponse::Done)
                }
                ControllerRequest::Propose(MetadataCommand::CreateTopic { id, .. }) => {
                    ControllerResponse::Applied(MetadataResponse::TopicCreated { id })
                }
                ControllerRequest::Propose(_) => {
                    ControllerResponse::Applied(MetadataResponse::Done)
                }
                ControllerRequest::Join { .. } => {
                    ControllerResponse::NotController { leader: Some(from) }
                }
            }
        })
    }
}

/// A served node and how to stop it.
pub(super) struct Server {
    pub addr: String,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<()>,
    pub image: watch::Sender<Arc<MetadataImage>>,
}

impl Server {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(PROMPT, &mut self.task)
            .await
            .expect("serve returns on shutdown")
            .expect("serve does not panic");
    }
}

/// Serves node `node_id` of `cluster` with the fakes, `check` deciding on peers.
pub(super) async fn start_with(
    node_id: NodeId,
    cluster: Option<&str>,
    config: TransportConfig,
    check: Arc<dyn PeerCheck>,
) -> Server {
    let (local, image) = local(node_id, cluster);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let service = Arc::new(PeerService {
        local,
        config,
        raft: Arc::new(FakeRaft),
        controller: Arc::new(FakeController),
        peer_check: check,
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, service, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        stop: Some(stop),
        task,
        image,
    }
}

pub(super) async fn start(node_id: NodeId, cluster: Option<&str>) -> Server {
    start_with(node_id, cluster, fast_config(), accept_any_peer()).await
}

fn heartbeat(node_id: i32) -> ControllerRequest {
    ControllerRequest::Heartbeat {
        node_id,
        incarnation: Uuid::new_v4(),
    }
}

fn hello(magic: u32, version: u16, cluster: Option<&str>) -> Hello {
    Hello {
        magic,
        protocol_version: version,
        cluster_id: cluster.map(str::to_string),
        node_id: 5,
        directory_id: Uuid::new_v4(),
    }
}

/// Sends a raw hello and returns the server's reply.
async fn raw_handshake(addr: &str, hello: &Hello) -> (TcpStream, HelloReply) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    frame::write(&mut s, hello, HELLO_BYTES_MAX).await.unwrap();
    let reply = tokio::time::timeout(PROMPT, frame::read(&mut s, HELLO_BYTES_MAX))
        .await
        .expect("a reply in time")
        .expect("a reply frame");
    (s, reply)
}

/// True when the server closes `s` (EOF or reset) within [`PROMPT`], reading whatever it sends.
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(PROMPT, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// A frame holds one postcard value behind its length and CRC; reading gives it back, and
/// the header says what the payload is.
#[tokio::test]
async fn frame_round_trip() {
    let req = PeerRequest::Controller(ControllerRequest::Propose(MetadataCommand::DeleteTopic {
        name: "orders".into(),
        id: None,
    }));
    let buf = frame::encode(&req, 1024).unwrap();
    let len = u32::from_be_bytes(buf[0..4].try_into().unwrap()) as usize;
    assert_eq!(len, buf.len() - HEADER_BYTES);
    let crc = u32::from_be_bytes(buf[4..8].try_into().unwrap());
    assert_eq!(crc, crate::protocol::batch::crc32c(&buf[HEADER_BYTES..]));
    let back: PeerRequest = frame::read(&mut &buf[..], 1024).await.unwrap();
    match back {
        PeerRequest::Controller(ControllerRequest::Propose(MetadataCommand::DeleteTopic {
            name,
            ..
        })) => assert_eq!(name, "orders"),
        other => panic!("decoded {other:?}"),
    }
    // Two frames back to back on one stream read as two values.
    let (mut a, mut b) = tokio::io::duplex(4096);
    frame::write(&mut a, &hello(MAGIC, 1, Some("c")), 1024)
        .await
        .unwrap();
    frame::write(&mut a, &hello(MAGIC, 2, None), 1024)
        .await
        .unwrap();
    let h1: Hello = frame::read(&mut b, 1024).await.unwrap();
    let h2: Hello = frame::read(&mut b, 1024).await.unwrap();
    assert_eq!(
        (h1.protocol_version, h1.cluster_id.as_deref()),
        (1, Some("c"))
    );
    assert_eq!((h2.protocol_version, h2.cluster_id), (2, None));
}

/// Each way a frame can be bad is its own error, detected before any allocation of the
/// claimed length: bad CRC, oversized length, truncation, undecodable or trailing bytes.
#[tokio::test]
async fn bad_frames_are_errors() {
    let good = frame::encode(&hello(MAGIC, 1, None), 1024).unwrap();

    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x01;
    let r = frame::read::<_, Hello>(&mut &bad_crc[..], 1024).await;
    assert!(matches!(r, Err(FrameError::Crc { .. })), "{r:?}");

    // A length of 4 GiB is refused from the header alone (no 4 GiB buffer is made).
    let mut huge = vec![0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0];
    huge.extend_from_slice(&[0u8; 16]);
    let r = frame::read::<_, Hello>(&mut &huge[..], 1024).await;
    assert!(
        matches!(r, Err(FrameError::TooLarge { len, max: 1024 }) if len == u32::MAX as usize),
        "{r:?}"
    );

    let truncated = &good[..good.len() - 3];
    let r = frame::read::<_, Hello>(&mut &truncated[..], 1024).await;
    assert!(matches!(r, Err(FrameError::Io(_))), "{r:?}");
    let r = frame::read::<_, Hello>(&mut &good[..5], 1024).await;
    assert!(matches!(r, Err(FrameError::Io(_))), "{r:?}");
    let r = frame::read::<_, Hello>(&mut &[][..], 1024).await;
    assert!(matches!(r, Err(FrameError::Closed)), "{r:?}");

    // A well-framed payload that is not a Hello.
    let garbage = [0xFFu8; 40];
    let mut framed = (garbage.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&crate::protocol::batch::crc32c(&garbage).to_be_bytes());
    framed.extend_from_slice(&garbage);
    let r = frame::read::<_, Hello>(&mut &framed[..], 1024).await;
    assert!(matches!(r, Err(FrameError::Decode(_))), "{r:?}");

    // One value then trailing bytes inside the same frame.
    let mut payload = postcard::to_stdvec(&hello(MAGIC, 1, None)).unwrap();
    payload.push(0);
    assert!(matches!(
        frame::decode::<Hello>(&payload),
        Err(FrameError::Decode(_))
    ));

    // Encoding refuses a value over the limit.
    let big = hello(MAGIC, 1, Some(&"x".repeat(2000)));
    assert!(matches!(
        frame::encode(&big, 1024),
        Err(FrameError::TooLarge { .. })
    ));
}

/// Garbage, a bad CRC, an oversized length, a truncated frame and an undecodable request (before
/// and after the handshake) each close only their own connection: the server keeps serving a
/// connection opened before them and new ones after.
#[tokio::test]
async fn bad_bytes_close_the_connection_and_the_server_carries_on() {
    let server = start(1, Some("c1")).await;
    let (me, _image) = local(2, Some("c1"));
    let client = PeerClient::new(me, fast_config());
    // A connection opened before the bad ones, reused after them.
    assert!(client.call(&server.addr, heartbeat(2)).await.is_ok());

    let good = frame::encode(&hello(MAGIC, PROTOCOL_VERSION, None), HELLO_BYTES_MAX).unwrap();
    let mut bad_crc = good.clone();
    bad_crc[HEADER_BYTES] ^= 0x55;
    let oversized = [0x7F, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0];
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "garbage",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            false,
        ),
        ("bad crc", bad_crc, false),
        ("oversized", oversized.to_vec(), false),
        ("truncated", good[..good.len() - 2].to_vec(), false),
        ("garbage after handshake", vec![0xAB; 64], true),
        ("oversized after handshake", oversized.to_vec(), true),
    ];
    for (name, bytes, after_handshake) in cases {
        let mut s = if after_handshake {
            let (s, reply) =
                raw_handshake(&server.addr, &hello(MAGIC, PROTOCOL_VERSION, None)).await;
            assert!(
                matches!(reply, HelloReply::Accepted { node_id: 1, .. }),
                "{name}: {reply:?}"
            );
            s
        } else {
            TcpStream::connect(&server.addr).await.unwrap()
        };
        s.write_all(&bytes).await.unwrap();
        // A truncated frame ends with the sender's end of the stream.
        let _ = s.shutdown().await;
        assert!(
            closed_by_server(&mut s).await,
            "{name}: connection left open"
        );
    }
    // A well-framed request that decodes as nothing.
    let (mut s, _) = raw_handshake(&server.addr, &hello(MAGIC, PROTOCOL_VERSION, None)).await;
    let junk = [0xEEu8; 32];
    let mut framed = (junk.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&crate::protocol::batch::crc32c(&junk).to_be_bytes());
    framed.extend_from_slice(&junk);
    s.write_all(&framed).await.unwrap();
    assert!(
        closed_by_server(&mut s).await,
        "undecodable request: connection left open"
    );

    let r = client.call(&server.addr, heartbeat(2)).await.unwrap();
    assert_eq!(r, ControllerResponse::HeartbeatAck { registered: true });
    let (other, _image2) = local(3, None);
    let fresh = PeerClient::new(other, fast_config());
    let r = fresh.call(&server.addr, heartbeat(3)).await.unwrap();
    assert_eq!(r, ControllerResponse::HeartbeatAck { registered: true });
    server.stop().await;
}

/// The server refuses a hello with bad magic, an unknown protocol version, another cluster's id,
/// its own node id from another data directory, or one its peer check rejects, saying why; a peer whose cluster id is not known yet (either
/// side) is accepted.
#[tokio::test]
async fn handshake_refusals() {
    let check: Arc<dyn PeerCheck> = Arc::new(|node: NodeId, _dir: Uuid| {
        if node == 7 {
            Err("node 7's directory id is not the one the quorum knows".to_string())
        } else {
            Ok(())
        }
    });
    let server = start_with(1, Some("c1"), fast_config(), check).await;

    let refused = |reply: HelloReply| match reply {
        HelloReply::Refused { reason } => reason,
        other => panic!("accepted: {other:?}"),
    };
    let (mut s, reply) =
        raw_handshake(&server.addr, &hello(0xDEAD_BEEF, PROTOCOL_VERSION, None)).await;
    assert!(refused(reply).contains("bad magic"));
    assert!(closed_by_server(&mut s).await);

    let (mut s, reply) =
        raw_handshake(&server.addr, &hello(MAGIC, PROTOCOL_VERSION + 1, None)).await;
    let reason = refused(reply);
    assert!(
        reason.contains(&format!("version {}", PROTOCOL_VERSION + 1)),
        "{reason}"
    );
    assert!(closed_by_server(&mut s).await);

    // Through the real client: the refusal comes back as an error naming both clusters.
    let (other, _i) = local(2, Some("c2"));
    let e = PeerClient::new(other, fast_config())
        .call(&server.addr, heartbeat(2))
        .await
        .unwrap_err();
    match &e {
        NetError::Refused { reason, .. } => {
            assert!(
                reason.contains("cluster c2") && reason.contains("cluster c1"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_unreachable());

    let (seven, _i) = local(7, Some("c1"));
    let e = PeerClient::new(seven, fast_config())
        .call(&server.addr, heartbeat(7))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, NetError::Refused { reason, .. } if reason.contains("directory id")),
        "{e:?}"
    );

    let (twin, _i) = local(1, Some("c1"));
    let e = PeerClient::new(twin, fast_config())
        .call(&server.addr, heartbeat(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, NetError::Refused { reason, .. } if reason.contains("claims node id 1")),
        "{e:?}"
    );

    // Unknown cluster id on the client's side: accepted.
    let (fresh, _i) = local(4, None);
    let r = PeerClient::new(fresh, fast_config())
        .call(&server.addr, heartbeat(4))
        .await;
    assert_eq!(
        r.unwrap(),
        ControllerResponse::HeartbeatAck { registered: true }
    );
    server.stop().await;

    // Unknown on the server's side: accepted; once the server learns another id, refused, and
    // the client refuses a server that answers as another cluster too.
    let server = start(1, None).await;
    let (c2, _i) = local(2, Some("c2"));
    let client = PeerClient::new(c2, fast_config());
    assert!(client.call(&server.addr, heartbeat(2)).await.is_ok());
    server.image.send_replace(Arc::new(MetadataImage {
        cluster_id: Some("c1".into()),
        ..MetadataImage::default()
    }));
    let (c2b, _i) = local(2, Some("c2"));
    let e = PeerClient::new(c2b, fast_config())
        .call(&server.addr, heartbeat(2))
        .await
        .unwrap_err();
    assert!(matches!(e, NetError::Refused { .. }), "{e:?}");
    server.stop().await;
}

/// A client checks the server's side of the handshake: a server of another cluster (known to
/// both) is refused by the client even if the server let it in.
#[tokio::test]
async fn client_refuses_a_server_of_another_cluster() {
    // A server that accepts anything and claims cluster "c9".
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let _: Hello = frame::read(&mut s, HELLO_BYTES_MAX).await.unwrap();
        let reply = HelloReply::Accepted {
            node_id: 1,
            cluster_id: Some("c9".into()),
            directory_id: Uuid::new_v4(),
        };
        frame::write(&mut s, &reply, HELLO_BYTES_MAX).await.unwrap();
        let _ = s.read(&mut [0u8; 16]).await;
    });
    let (me, _i) = local(2, Some("c1"));
    let e = client::Connection::open(&addr, &me, &fast_config(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, NetError::Refused { reason, .. } if reason.contains("cluster c9")),
        "{e:?}"
    );
}

/// The client checks the server's directory id too: a voter whose disk was wiped is refused
/// when a healthy node connects to it, not only when it connects out.
#[tokio::test]
async fn client_refuses_a_server_its_peer_check_refuses() {
    let server = start(1, Some("c1")).await;
    let (mut me, _i) = local(2, Some("c1"));
    me.peer_check = Arc::new(|node: NodeId, _dir: Uuid| {
        Err(format!("node {node} came back with another data directory"))
    });
    let e = client::Connection::open(&server.addr, &me, &fast_config(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, NetError::Refused { reason, .. } if reason.contains("another data directory")),
        "{e:?}"
    );
    server.stop().await;
}

/// No more than `peer_connections_max` connections are served; one more is closed at once,
/// and its place is free again once a served connection ends.
#[tokio::test]
async fn connection_cap() {
    let config = TransportConfig {
        peer_connections_max: 1,
        ..fast_config()
    };
    let server = start_with(1, None, config, accept_any_peer()).await;
    let (held, _) = raw_handshake(&server.addr, &hello(MAGIC, PROTOCOL_VERSION, None)).await;
    let mut extra = TcpStream::connect(&server.addr).await.unwrap();
    assert!(closed_by_server(&mut extra).await);
    drop(held);
    let (me, _i) = local(2, None);
    let client = PeerClient::new(me, fast_config());
    let mut answered = false;
    for _ in 0..50 {
        if client.call(&server.addr, heartbeat(2)).await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered, "the freed place was not reused");
    server.stop().await;
}

/// Shutdown stops the listener and closes open connections.
#[tokio::test]
async fn shutdown_closes_connections() {
    let server = start(1, None).await;
    let addr = server.addr.clone();
    let (mut held, _) = raw_handshake(&addr, &hello(MAGIC, PROTOCOL_VERSION, None)).await;
    server.stop().await;
    assert!(closed_by_server(&mut held).await);
    assert!(
        TcpStream::connect(&addr).await.is_err(),
        "listener still open"
    );
}

/// Backoff doubles from its minimum and stops at its maximum; the defaults pass their own check.
#[test]
fn backoff_doubles_up_to_its_cap() {
    let c = TransportConfig {
        backoff_min_ms: 100,
        backoff_max_ms: 1000,
        ..TransportConfig::default()
    };
    let ms: Vec<u128> = (1..=6).map(|n| c.backoff(n).as_millis()).collect();
    assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000]);
    assert_eq!(c.backoff(u32::MAX), Duration::from_millis(1000));
    assert_eq!(TransportConfig::default().check(), Ok(()));
    assert!(
        TransportConfig {
            backoff_min_ms: 0,
            ..c.clone()
        }
        .check()
        .is_err()
    );
    assert!(
        TransportConfig {
            frame_bytes_max: 1000,
            ..c
        }
        .check()
        .is_err()
    );
}
