//! client: a small Kafka client — one connection per [`Client`], requests answered in order. The
//! CLI's admin commands ([`admin`]) and the benchmark ([`producer`], [`consumer`]) use it. It
//! speaks the same codecs as the server (`protocol::codec`).

pub mod admin;
pub mod cluster;
pub mod consumer;
pub mod producer;
pub mod replica_lag;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::protocol::{Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocol::codec::{self, CodecError};

/// Largest response the client will read.
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// How long connecting and each request may take.
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("i/o error talking to the broker: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0} ms")]
    Timeout(u64),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("response of {0} bytes is out of range")]
    BadLength(i32),
    #[error("response correlation id {got} does not match request {want}")]
    Correlation { want: i32, got: i32 },
    #[error("{0}")]
    Broker(String),
    #[error("cannot encode a record batch: {0}")]
    Encode(String),
}

/// The `-b/--bootstrap-server` argument of the CLI's client commands.
#[derive(clap::Args)]
pub struct Bootstrap {
    /// Broker to talk to.
    #[arg(
        short = 'b',
        long = "bootstrap-server",
        default_value = "localhost:9092"
    )]
    pub bootstrap_server: String,
}

/// Opens a TCP connection to `addr` (host:port, resolved; each address tried in turn), bound to
/// the local IP `source` when given (port chosen by the kernel).
pub async fn connect_from(
    addr: &str,
    source: Option<std::net::IpAddr>,
) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(addr).await;
    };
    let mut last = None;
    for target in tokio::net::lookup_host(addr).await? {
        if target.is_ipv4() != source.is_ipv4() {
            continue;
        }
        let socket = if source.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(std::net::SocketAddr::new(source, 0))?;
        match socket.connect(target).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{addr} has no address of the family of {source}"),
        )
    }))
}

pub struct Client {
    stream: TcpStream,
    correlation_id: i32,
    client_id: StrBytes,
    /// Longest response frame read (`RESPONSE_BYTES_MAX` unless set).
    response_bytes_max: usize,
}

impl Client {
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        Client::connect_from(addr, None).await
    }

    /// Connects to `addr` from the local IP `source` (`peer_source_ip`), or from the kernel's
    /// choice when `None`.
    pub async fn connect_from(
        addr: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<Client, ClientError> {
        let connect = connect_from(addr, source);
        let stream = tokio::time::timeout(Duration::from_millis(REQUEST_TIMEOUT_MS), connect)
            .await
            .map_err(|_| ClientError::Timeout(REQUEST_TIMEOUT_MS))?
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(Client {
            stream,
            correlation_id: 0,
            client_id: StrBytes::from_static_str("bramble-cli"),
            response_bytes_max: RESPONSE_BYTES_MAX,
        })
    }

    /// The client id sent with every request (brokers log it; "bramble-cli" by default).
    pub fn with_client_id(mut self, client_id: &str) -> Client {
        self.client_id = StrBytes::from_string(client_id.to_string());
        self
    }

    /// The longest response frame this client reads (at most `RESPONSE_BYTES_MAX`); a longer
    /// one fails the call (and the connection must be dropped).
    pub fn with_response_bytes_max(mut self, bytes: usize) -> Client {
        self.response_bytes_max = bytes.min(RESPONSE_BYTES_MAX);
        self
    }

    /// Sends `request` at `version` and waits for its response.
    pub async fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let correlation_id = self.send(request, version).await?;
        self.receive::<R>(correlation_id, version).await
    }

    /// Sends `request` without waiting for its response and returns its correlation id. A broker
    /// answers one connection's requests in order, so a pipelining caller (the benchmark's
    /// producer) sends several and then [`Client::receive`]s them oldest first.
    pub async fn send<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<i32, ClientError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let frame = codec::encode_request(&header, request, std::any::type_name::<R>())?;
        tokio::time::timeout(
            Duration::from_millis(REQUEST_TIMEOUT_MS),
            self.stream.write_all(&frame),
        )
        .await
        .map_err(|_| ClientError::Timeout(REQUEST_TIMEOUT_MS))??;
        Ok(self.correlation_id)
    }

    /// Reads the next response, which must answer the request sent with `correlation_id`.
    pub async fn receive<R: Request>(
        &mut self,
        correlation_id: i32,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let mut body =
            tokio::time::timeout(Duration::from_millis(REQUEST_TIMEOUT_MS), self.read_frame())
                .await
                .map_err(|_| ClientError::Timeout(REQUEST_TIMEOUT_MS))??;
        let (got, response) =
            codec::decode_response::<R::Response>(&mut body, version, "response")?;
        if got != correlation_id {
            return Err(ClientError::Correlation {
                want: correlation_id,
                got,
            });
        }
        Ok(response)
    }

    async fn read_frame(&mut self) -> Result<Bytes, ClientError> {
        let len = self.stream.read_i32().await?;
        let size = usize::try_from(len)
            .ok()
            .filter(|l| *l <= self.response_bytes_max)
            .ok_or(ClientError::BadLength(len))?;
        let mut body = BytesMut::zeroed(size);
        self.stream.read_exact(&mut body).await?;
        Ok(body.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `peer_source_ip`: a connection made with a source IP arrives from that IP (the loopback
    /// network answers all of 127/8), and one without it from the kernel's choice.
    #[tokio::test]
    async fn connect_from_binds_the_source_ip() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let source: std::net::IpAddr = "127.0.0.42".parse().unwrap();
        let _kept = connect_from(&addr, Some(source)).await.unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), source);
        let _plain = connect_from(&addr, None).await.unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.1");
    }
}
