//! protocol::compression: bounded decompression of a v2 batch's records section. The broker stores
//! and serves batches compressed; the only reader of record contents is ListOffsets by timestamp,
//! which must find the first record at or after a time inside a compressed batch. Output is capped
//! at `bytes_max` so a hostile batch (a "zip bomb") cannot make the broker allocate without bound.

use std::io::Read;

/// Kafka's codec ids (batch attributes bits 0-2).
pub const CODEC_NONE: u8 = 0;
pub const CODEC_GZIP: u8 = 1;
pub const CODEC_SNAPPY: u8 = 2;
pub const CODEC_LZ4: u8 = 3;
pub const CODEC_ZSTD: u8 = 4;

/// The Java client's snappy framing (xerial): magic, then version and compatible version (i32 each),
/// then blocks of an i32 length and a raw snappy block.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
    #[error("decompressed records exceed {0} bytes")]
    TooLarge(usize),
    #[error("corrupt compressed data: {0}")]
    Corrupt(String),
}

/// Decompresses `payload` (the records section of a batch) written with `codec`.
pub fn decompress(codec: u8, payload: &[u8], bytes_max: usize) -> Result<Vec<u8>, DecompressError> {
    match codec {
        CODEC_NONE => bounded(payload, bytes_max),
        CODEC_GZIP => bounded(flate2::read::GzDecoder::new(payload), bytes_max),
        CODEC_SNAPPY => snappy(payload, bytes_max),
        CODEC_LZ4 => bounded(lz4_flex::frame::FrameDecoder::new(payload), bytes_max),
        CODEC_ZSTD => {
            let decoder = ruzstd::decoding::StreamingDecoder::new(payload)
                .map_err(|e| DecompressError::Corrupt(e.to_string()))?;
            bounded(decoder, bytes_max)
        }
        other => Err(DecompressError::UnknownCodec(other)),
    }
}

/// Reads at most `bytes_max` bytes; one more means the input was too large.
fn bounded(reader: impl Read, bytes_max: usize) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    reader
        .take(bytes_max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecompressError::Corrupt(e.to_string()))?;
    if out.len() > bytes_max {
        return Err(DecompressError::TooLarge(bytes_max));
    }
    Ok(out)
}

fn snappy(payload: &[u8], bytes_max: usize) -> Result<Vec<u8>, DecompressError> {
    let corrupt = |e: snap::Error| DecompressError::Corrupt(e.to_string());
    if !payload.starts_with(XERIAL_MAGIC) {
        return snappy_block(payload, bytes_max, Vec::new()).map_err(corrupt);
    }
    let mut rest = payload
        .get(XERIAL_HEADER_BYTES..)
        .ok_or_else(|| DecompressError::Corrupt("short xerial header".into()))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_at_checked(4)
            .ok_or_else(|| DecompressError::Corrupt("short xerial block length".into()))?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let (block, tail) = tail
            .split_at_checked(len)
            .ok_or_else(|| DecompressError::Corrupt("short xerial block".into()))?;
        out = snappy_block(block, bytes_max, out).map_err(corrupt)?;
        rest = tail;
    }
    Ok(out)
}

/// Appends one raw snappy block to `out`, checking its declared length against the cap first.
fn snappy_block(block: &[u8], bytes_max: usize, mut out: Vec<u8>) -> Result<Vec<u8>, snap::Error> {
    let len = snap::raw::decompress_len(block)?;
    let Some(end) = out.len().checked_add(len).filter(|&end| end <= bytes_max) else {
        return Err(snap::Error::TooBig {
            given: len as u64,
            max: bytes_max as u64,
        });
    };
    let start = out.len();
    out.resize(end, 0);
    snap::raw::Decoder::new().decompress(block, &mut out[start..])?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TEXT: &[u8] = b"bramble bramble bramble bramble bramble bramble bramble bramble";

    // Proves each codec round-trips and that output past the cap is refused, not allocated.
    #[test]
    fn every_codec_round_trips_and_is_bounded() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(TEXT).unwrap();
        let gz = gz.finish().unwrap();
        let raw_snappy = snap::raw::Encoder::new().compress_vec(TEXT).unwrap();
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        xerial.extend_from_slice(&(raw_snappy.len() as u32).to_be_bytes());
        xerial.extend_from_slice(&raw_snappy);
        let mut lz4 = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz4.write_all(TEXT).unwrap();
        let lz4 = lz4.finish().unwrap();
        let zstd =
            ruzstd::encoding::compress_to_vec(TEXT, ruzstd::encoding::CompressionLevel::Fastest);
        for (codec, data) in [
            (CODEC_GZIP, &gz),
            (CODEC_SNAPPY, &raw_snappy),
            (CODEC_SNAPPY, &xerial),
            (CODEC_LZ4, &lz4),
            (CODEC_ZSTD, &zstd),
        ] {
            assert_eq!(
                decompress(codec, data, 1024).unwrap(),
                TEXT,
                "codec {codec}"
            );
            assert!(
                matches!(
                    decompress(codec, data, 10),
                    Err(DecompressError::TooLarge(10)) | Err(DecompressError::Corrupt(_))
                ),
                "codec {codec}"
            );
        }
        assert!(decompress(7, TEXT, 1024).is_err());
    }

    // Proves garbage input is an error for every codec, never a panic.
    #[test]
    fn garbage_is_an_error() {
        let junk: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for codec in [CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD] {
            for end in [0, 1, 5, 17, 200] {
                let _ = decompress(codec, &junk[..end], 1 << 20);
            }
        }
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
        assert!(decompress(CODEC_SNAPPY, &xerial, 1 << 20).is_err());
    }
}
