//! meta::network::wire: the values quorum peers exchange, each one frame (`frame.rs`): the
//! handshake ([`Hello`], [`HelloReply`]) that opens every connection, then requests and
//! responses, one in flight per connection.
//!
//! postcard is not self-describing: never reorder fields or variants; add variants at the end.
//! [`Hello`] keeps its shape in every protocol version (a peer must be able to read a newer
//! peer's hello to refuse it by version); any other change bumps [`PROTOCOL_VERSION`].

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::meta::command::{ControllerRequest, ControllerResponse};
use crate::meta::types::{NodeId, TypeConfig};

/// First field of every hello: "BRMQ", bramble metadata quorum. Tells a bramble peer from a
/// Kafka client or a port scanner that dialled `--raft-listen` by mistake.
pub const MAGIC: u32 = u32::from_be_bytes(*b"BRMQ");

/// The protocol this build speaks. A peer announcing another version is refused.
pub const PROTOCOL_VERSION: u16 = 2;

/// Largest hello or hello reply, in bytes: read before the peer is known, so it gets a small
/// budget of its own rather than `frame_bytes_max`.
pub const HELLO_BYTES_MAX: usize = 1024;

/// The first frame a client sends on every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub magic: u32,
    pub protocol_version: u16,
    /// The client's cluster id, `None` before its quorum has committed its first command.
    pub cluster_id: Option<String>,
    pub node_id: NodeId,
    /// The client's data directory id (a reflashed card has a new one).
    pub directory_id: Uuid,
}

/// The server's answer to a [`Hello`]; after `Refused` the server closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The server's own identity, so the client can refuse too (another cluster, or another
    /// node than the one it meant to reach at that address).
    Accepted {
        node_id: NodeId,
        cluster_id: Option<String>,
        /// The server's data directory id: the client checks it too, so a wiped voter is
        /// refused whichever side opens the connection.
        directory_id: Uuid,
    },
    Refused {
        reason: String,
    },
}

/// A request after the handshake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    Controller(ControllerRequest),
}

impl PeerRequest {
    /// The request's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerRequest::AppendEntries(_) => "append_entries",
            PeerRequest::Vote(_) => "vote",
            PeerRequest::InstallSnapshot(_) => "install_snapshot",
            PeerRequest::Controller(_) => "controller",
        }
    }
}

/// The answer to a [`PeerRequest`], same variant as the request.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Controller(ControllerResponse),
}

/// Why one side refuses the other's identity, or `None` to go on. Both sides run this: the
/// server on the client's [`Hello`], the client on the server's [`HelloReply::Accepted`].
/// `cluster_id`s are compared only when both are known: a node that has not yet seen its
/// quorum's first command cannot tell.
pub fn cluster_mismatch(theirs: Option<&str>, ours: Option<&str>) -> Option<String> {
    match (theirs, ours) {
        (Some(t), Some(o)) if t != o => Some(format!(
            "it belongs to cluster {t}, this node to cluster {o}"
        )),
        _ => None,
    }
}

/// The server's checks of a client's hello that need no outside knowledge: magic and version.
pub fn check_hello_shape(hello: &Hello) -> Result<(), String> {
    if hello.magic != MAGIC {
        return Err(format!(
            "bad magic {:#010x} (expected {MAGIC:#010x}): not a bramble quorum peer",
            hello.magic
        ));
    }
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(format!(
            "it speaks quorum protocol version {}, this node only version {PROTOCOL_VERSION}",
            hello.protocol_version
        ));
    }
    Ok(())
}
