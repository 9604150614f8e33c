//! meta::network::frame: how every message between quorum peers is cut into frames on the TCP
//! stream. The transport's only byte-level code; everything above it is postcard values.
//!
//! Byte table of one frame (big-endian):
//!
//! ```text
//! offset size   field
//!      0    4   length   bytes of payload (never above the reader's limit)
//!      4    4   crc      CRC-32C of the payload
//!      8    len payload  one postcard-encoded value
//! ```
//!
//! The length is checked against the reader's limit before anything is allocated, so a peer
//! cannot make a node reserve memory it did not budget for; the CRC catches a corrupted stream
//! (a bad NIC, a broken middlebox) before postcard sees the bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::batch::crc32c;

/// Bytes before the payload: length and CRC.
pub const HEADER_BYTES: usize = 8;

/// Why a frame could not be read or written. Every variant ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    #[error("i/o error")]
    Io(#[source] std::io::Error),
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame crc mismatch: header says {expected:#010x}, payload has {actual:#010x}")]
    Crc { expected: u32, actual: u32 },
    #[error("frame payload does not decode")]
    Decode(#[source] postcard::Error),
    #[error("value does not encode")]
    Encode(#[source] postcard::Error),
}

impl FrameError {
    fn io(e: std::io::Error) -> FrameError {
        FrameError::Io(e)
    }
}

/// Encodes `value` into one frame (header and payload), refusing a payload over `max` bytes.
pub fn encode<T: Serialize>(value: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; HEADER_BYTES];
    buf = postcard::to_extend(value, buf).map_err(FrameError::Encode)?;
    let len = buf.len() - HEADER_BYTES;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let len32 = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max })?;
    let crc = crc32c(&buf[HEADER_BYTES..]);
    buf[0..4].copy_from_slice(&len32.to_be_bytes());
    buf[4..8].copy_from_slice(&crc.to_be_bytes());
    Ok(buf)
}

/// Writes `value` as one frame and flushes it.
pub async fn write<W, T>(w: &mut W, value: &T, max: usize) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let buf = encode(value, max)?;
    w.write_all(&buf).await.map_err(FrameError::io)?;
    w.flush().await.map_err(FrameError::io)
}

/// Reads one frame's payload, at most `max` bytes. EOF before the first header byte is
/// [`FrameError::Closed`]; EOF inside a frame is an I/O error (truncated frame).
pub async fn read_payload<R>(r: &mut R, max: usize) -> Result<Vec<u8>, FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; HEADER_BYTES];
    let first = r.read(&mut header).await.map_err(FrameError::io)?;
    if first == 0 {
        return Err(FrameError::Closed);
    }
    r.read_exact(&mut header[first..])
        .await
        .map_err(FrameError::io)?;
    let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
    let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
    let expected = u32::from_be_bytes([c0, c1, c2, c3]);
    // Checked before allocating: the length is the peer's word, not ours.
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.map_err(FrameError::io)?;
    let actual = crc32c(&payload);
    if actual != expected {
        return Err(FrameError::Crc { expected, actual });
    }
    Ok(payload)
}

/// Reads one frame and decodes its payload as a `T`. Trailing bytes after the value are refused:
/// a frame holds exactly one value.
pub async fn read<R, T>(r: &mut R, max: usize) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let payload = read_payload(r, max).await?;
    decode(&payload)
}

/// Decodes one frame payload as a `T`, refusing trailing bytes.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (value, rest) = postcard::take_from_bytes(payload).map_err(FrameError::Decode)?;
    if !rest.is_empty() {
        return Err(FrameError::Decode(postcard::Error::DeserializeBadEncoding));
    }
    Ok(value)
}
