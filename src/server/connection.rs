//! server::connection: one client connection. Reads a frame (i32 length, checked against
//! `frame_bytes_max` before anything is allocated), hands it to `api::dispatch`, writes the
//! answer. Requests on one connection are served in order, one at a time, as Kafka does. A
//! malformed frame closes this connection with a log line; other clients are not affected.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::api;
use crate::broker::Broker;
use crate::protocol::frame;

pub async fn serve(
    broker: Arc<Broker>,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    tracing::debug!(%peer, "connection opened");
    loop {
        let mut prefix = [0u8; 4];
        // Only an idle connection (between requests) is cut by shutdown.
        let read = tokio::select! {
            r = stream.read_exact(&mut prefix) => r,
            _ = stop.changed() => break,
        };
        if let Err(e) = read {
            if e.kind() != std::io::ErrorKind::UnexpectedEof {
                tracing::debug!(%peer, error = %e, "read failed");
            }
            break;
        }
        let len = match frame::body_len(prefix, broker.config.frame_bytes_max) {
            Ok(len) => len,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "refusing frame; closing connection");
                break;
            }
        };
        let mut body = BytesMut::zeroed(len);
        if let Err(e) = stream.read_exact(&mut body).await {
            tracing::warn!(%peer, error = %e, expected_bytes = len, "truncated frame; closing connection");
            break;
        }
        match api::dispatch(&broker, body.freeze()).await {
            Ok(Some(response)) => {
                if let Err(e) = stream.write_all(&response).await {
                    tracing::debug!(%peer, error = %e, "write failed");
                    break;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%peer, error = %e, "bad request; closing connection");
                break;
            }
        }
    }
    tracing::debug!(%peer, "connection closed");
}
