//! protocol::records: the two produce-time rules that look at a v2 batch beyond its header, both
//! applied by `api::produce` to one already validated batch before it is appended:
//!
//! - [`null_key_records`]: which records carry a null key (a compacted topic refuses them, as
//!   Kafka's LogValidator does). Streams the records section, decompressing on the fly when the
//!   batch is compressed, so memory stays constant whatever the batch expands to.
//! - [`stamp_log_append_time`]: `message.timestamp.type=LogAppendTime`: sets the timestamp-type
//!   attribute and the max timestamp to the broker's clock and recomputes the CRC-32C (which covers
//!   attributes..end). Record bytes are untouched: readers take every record's timestamp from the
//!   batch's max timestamp when the type is LogAppendTime.
//!
//! Record layout (zigzag varints): length, attributes (i8), timestamp delta (varlong), offset
//! delta (varint), key length (varint, -1 = null), key, value length, value, headers.

use std::io::{self, Read};

use super::batch::{
    self, ATTRIBUTES_AT, BatchHeader, CRC_AT, Compression, HEADER_BYTES, MAX_TIMESTAMP_AT,
};
use super::compression;

use super::varint::{VARINT_BYTES_MAX, VARLONG_BYTES_MAX};
/// Attribute bit 3: the batch's timestamps are the broker's append time.
const LOG_APPEND_TIME_BIT: i16 = 0x08;

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("cannot decompress records: {0}")]
    Decompress(#[from] compression::DecompressError),
    #[error("records section expands past {0} bytes")]
    TooLarge(usize),
    #[error("malformed record {index}: {reason}")]
    Malformed { index: usize, reason: &'static str },
}

/// Indexes (within the batch) of the records whose key is null, at most `indexes_max` of them;
/// `Ok(empty)` when every record has a key. `batch` is one whole batch that passed
/// `batch::validate`. `budget` is how many bytes of records the caller still lets this read: a
/// compressed batch that expands further is refused, and the bytes read (decompressed, or the
/// plain section) are taken off it, so a caller checking many batches bounds their total work.
/// Never more records are read than the section holds: the header's record count is a bound,
/// not a promise. Memory stays constant except for snappy, whose block decodes whole into a
/// buffer of at most `snappy_bytes_max`.
pub fn null_key_records(
    batch: &[u8],
    h: &BatchHeader,
    budget: &mut usize,
    snappy_bytes_max: usize,
    indexes_max: usize,
) -> Result<Vec<usize>, RecordsError> {
    let section = batch.get(HEADER_BYTES..h.total_bytes()).unwrap_or_default();
    let count = usize::try_from(h.record_count).unwrap_or(0);
    let cap = *budget;
    // Walks `decoder` under the budget, then charges what came out of it.
    let decoded = |decoder: &mut dyn Read| {
        let mut reader = bounded(decoder, cap as u64);
        let walked = walk(&mut reader, count, indexes_max);
        (
            walked,
            usize::try_from(cap as u64 - reader.left).unwrap_or(cap),
        )
    };
    let charge = |budget: &mut usize, (walked, used): (Result<_, _>, usize)| {
        *budget -= used.min(*budget);
        walked
    };
    match h.compression() {
        None | Some(Compression::None) => {
            // Nothing to expand: the section is already in the request, so it always fits.
            *budget = budget.saturating_sub(section.len());
            walk(section, count, indexes_max)
        }
        Some(Compression::Gzip) => {
            charge(budget, decoded(&mut flate2::read::GzDecoder::new(section)))
        }
        Some(Compression::Lz4) => charge(
            budget,
            decoded(&mut lz4_flex::frame::FrameDecoder::new(section)),
        ),
        Some(Compression::Zstd) => {
            let mut decoder = ruzstd::decoding::StreamingDecoder::new(section).map_err(|e| {
                compression::DecompressError::Corrupt(format!("zstd frame header: {e}"))
            })?;
            charge(budget, decoded(&mut decoder))
        }
        // Snappy is block-based: one block decodes whole (bounded by the same cap).
        Some(Compression::Snappy) => {
            let bytes_max = snappy_bytes_max.min(cap);
            let raw = compression::decompress(compression::CODEC_SNAPPY, section, bytes_max)
                .map_err(|e| {
                    // A refused block was decoded no further than the cap.
                    *budget -= bytes_max.min(*budget);
                    match e {
                        compression::DecompressError::TooLarge(n) => RecordsError::TooLarge(n),
                        e => RecordsError::Decompress(e),
                    }
                })?;
            *budget -= raw.len().min(*budget);
            walk(raw.as_slice(), count, indexes_max)
        }
    }
    .map_err(|e| match e {
        WalkError::Io(e) if e.kind() == io::ErrorKind::FileTooLarge => RecordsError::TooLarge(cap),
        WalkError::Io(e) => {
            RecordsError::Decompress(compression::DecompressError::Corrupt(e.to_string()))
        }
        WalkError::Malformed { index, reason } => RecordsError::Malformed { index, reason },
    })
}

/// A reader that fails with `FileTooLarge` once more than `limit` bytes came out of it.
fn bounded<R: Read>(inner: R, limit: u64) -> Bounded<R> {
    Bounded { inner, left: limit }
}

struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One more byte would pass the cap: look for it without keeping it.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(io::ErrorKind::FileTooLarge, "over the cap")),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

enum WalkError {
    Io(io::Error),
    Malformed { index: usize, reason: &'static str },
}

/// A reader that counts the bytes taken from it.
struct Counted<R> {
    inner: R,
    taken: u64,
    /// Whether a read failed because the decompressed bytes passed their cap: the walk then
    /// reports that (TooLarge), not the malformed field the cap happened to cut.
    over_cap: bool,
}

impl<R: Read> Counted<R> {
    fn byte(&mut self) -> io::Result<Option<u8>> {
        let mut b = [0u8; 1];
        loop {
            match self.inner.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    self.taken += 1;
                    return Ok(Some(b[0]));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.over_cap |= e.kind() == io::ErrorKind::FileTooLarge;
                    return Err(e);
                }
            }
        }
    }

    /// A zigzag varint of at most `bytes_max` bytes; None at a clean end of input before it.
    fn zigzag(&mut self, bytes_max: usize) -> Result<Option<i64>, &'static str> {
        let mut value: u64 = 0;
        for i in 0..bytes_max {
            let Some(b) = self.byte().map_err(|_| "unreadable varint")? else {
                return if i == 0 {
                    Ok(None)
                } else {
                    Err("truncated varint")
                };
            };
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(Some(((value >> 1) as i64) ^ -((value & 1) as i64)));
            }
        }
        Err("varint too long")
    }

    /// Consumes exactly `n` bytes.
    fn skip(&mut self, n: u64) -> io::Result<bool> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        self.taken += copied;
        Ok(copied == n)
    }
}

/// Walks at most `count` records of `section`, stopping at its end; collects null-key indexes.
fn walk(section: impl Read, count: usize, indexes_max: usize) -> Result<Vec<usize>, WalkError> {
    let mut r = Counted {
        inner: section,
        taken: 0,
        over_cap: false,
    };
    let walked = walk_records(&mut r, count, indexes_max);
    if r.over_cap {
        return Err(WalkError::Io(io::ErrorKind::FileTooLarge.into()));
    }
    walked
}

fn walk_records<R: Read>(
    r: &mut Counted<R>,
    count: usize,
    indexes_max: usize,
) -> Result<Vec<usize>, WalkError> {
    let mut nulls = Vec::new();
    for index in 0..count {
        let malformed = |reason| WalkError::Malformed { index, reason };
        let field = |r: &mut Counted<_>, max| match r.zigzag(max) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(malformed("record cut short")),
            Err(reason) => Err(malformed(reason)),
        };
        let length = match r.zigzag(VARINT_BYTES_MAX) {
            Ok(Some(len)) => u64::try_from(len).map_err(|_| malformed("negative length"))?,
            Ok(None) => break, // the section ended: `batch::validate` judged the count
            Err(reason) => return Err(malformed(reason)),
        };
        let start = r.taken;
        r.byte()
            .map_err(WalkError::Io)?
            .ok_or(malformed("record cut short"))?; // attributes
        field(r, VARLONG_BYTES_MAX)?; // timestamp delta
        field(r, VARINT_BYTES_MAX)?; // offset delta
        let key_length = field(r, VARINT_BYTES_MAX)?;
        if key_length < 0 && nulls.len() < indexes_max {
            nulls.push(index);
        }
        let rest = length
            .checked_sub(r.taken - start)
            .ok_or(malformed("fields overrun the record length"))?;
        if !r.skip(rest).map_err(WalkError::Io)? {
            return Err(malformed("record cut short"));
        }
    }
    Ok(nulls)
}

/// Marks the batch at the start of `buf` (one whole, validated batch) as LogAppendTime with
/// `now_ms` as its max timestamp, and recomputes its CRC. Records are not rewritten.
pub fn stamp_log_append_time(buf: &mut [u8], now_ms: i64) {
    let Ok(h) = BatchHeader::parse(buf) else {
        return;
    };
    let total = h.total_bytes();
    if buf.len() < total {
        return;
    }
    let attributes = h.attributes | LOG_APPEND_TIME_BIT;
    buf[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    buf[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = batch::crc32c(&buf[ATTRIBUTES_AT..total]);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::batch::TimestampType;
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression as Codec, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType as KpTimestampType,
    };

    fn encode(keys: &[Option<&[u8]>], codec: Codec) -> Vec<u8> {
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: KpTimestampType::Creation,
                offset: i as i64,
                // offset - sequence constant keeps one batch (as group::store does).
                sequence: -1 + i as i32,
                timestamp: 1_000_000_000_000 + i as i64,
                key: key.map(bytes::Bytes::copy_from_slice),
                value: Some(bytes::Bytes::from(vec![b'v'; 300])),
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Codec::None,
        };
        RecordBatchEncoder::encode(&mut buf, records.iter(), &options).unwrap();
        recompress(buf.to_vec(), codec)
    }

    /// Re-packs an uncompressed batch with its records section compressed by `codec` (the
    /// kafka-protocol crate's codecs are not built in).
    pub(crate) fn recompress(plain: Vec<u8>, codec: Codec) -> Vec<u8> {
        use std::io::Write;
        let section = &plain[HEADER_BYTES..];
        let (id, packed): (i16, Vec<u8>) = match codec {
            Codec::None => return plain,
            Codec::Gzip => {
                let mut w =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                w.write_all(section).unwrap();
                (1, w.finish().unwrap())
            }
            Codec::Snappy => (2, snap::raw::Encoder::new().compress_vec(section).unwrap()),
            Codec::Lz4 => {
                let mut w = lz4_flex::frame::FrameEncoder::new(Vec::new());
                w.write_all(section).unwrap();
                (3, w.finish().unwrap())
            }
            Codec::Zstd => (
                4,
                ruzstd::encoding::compress_to_vec(
                    section,
                    ruzstd::encoding::CompressionLevel::Fastest,
                ),
            ),
        };
        let mut b = plain[..HEADER_BYTES].to_vec();
        b.extend(packed);
        let len = (b.len() - batch::LOG_OVERHEAD_BYTES) as i32;
        b[batch::BATCH_LENGTH_AT..batch::BATCH_LENGTH_AT + 4].copy_from_slice(&len.to_be_bytes());
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&id.to_be_bytes());
        let crc = batch::crc32c(&b[ATTRIBUTES_AT..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    // Proves null keys are found at their record index in uncompressed and every compressed
    // codec the encoder writes, and that a batch with keys everywhere passes.
    #[test]
    fn null_keys_are_found_in_every_codec() {
        let keys: [Option<&[u8]>; 4] = [Some(b"a"), None, Some(b""), None];
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let b = encode(&keys, codec);
            let h = batch::validate(&b).unwrap();
            assert_eq!(
                null_key_records(&b, &h, &mut (1 << 20), 1 << 20, 100).unwrap(),
                vec![1, 3],
                "{codec:?}"
            );
            let all = encode(&[Some(b"k"), Some(b"k2")], codec);
            let h = batch::validate(&all).unwrap();
            assert!(
                null_key_records(&all, &h, &mut (1 << 20), 1 << 20, 100)
                    .unwrap()
                    .is_empty()
            );
        }
    }

    // Proves the walk is bounded: a compressed batch expanding past the cap is refused, a lying
    // record count never reads past the section, and the index list is capped.
    #[test]
    fn walk_is_bounded() {
        let keys = vec![None; 50];
        let b = encode(&keys, Codec::Gzip);
        let h = batch::validate(&b).unwrap();
        let mut small = 1000;
        assert!(matches!(
            null_key_records(&b, &h, &mut small, 1000, 100),
            Err(RecordsError::TooLarge(1000))
        ));
        assert_eq!(small, 0, "a refused batch spends the whole budget it read");
        let mut budget = 1 << 20;
        assert_eq!(
            null_key_records(&b, &h, &mut budget, 1 << 20, 3).unwrap(),
            vec![0, 1, 2]
        );
        let plain = encode(&keys, Codec::None).len() - HEADER_BYTES;
        assert_eq!((1 << 20) - budget, plain, "charged what was decompressed");
        let mut lying = h;
        lying.record_count = i32::MAX;
        assert_eq!(
            null_key_records(&b, &lying, &mut (1 << 20), 1 << 20, usize::MAX)
                .unwrap()
                .len(),
            50
        );
        // Garbage records section: an error or a short list, never a panic.
        let mut junk = encode(&[Some(b"k")], Codec::None);
        for byte in junk[HEADER_BYTES..].iter_mut() {
            *byte = 0xff;
        }
        let h = BatchHeader::parse(&junk).unwrap();
        assert!(null_key_records(&junk, &h, &mut (1 << 20), 1 << 20, 10).is_err());
    }

    // Proves stamping sets the type bit and max timestamp, keeps the batch valid (CRC
    // recomputed) and makes a decoder report the append time for every record.
    #[test]
    fn stamp_sets_type_time_and_crc() {
        let mut lz4 = encode(&[Some(b"a"), Some(b"b")], Codec::Lz4);
        stamp_log_append_time(&mut lz4, 1_700_000_000_123);
        let h = batch::validate(&lz4).expect("crc recomputed");
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        let mut b = encode(&[Some(b"a"), Some(b"b")], Codec::None);
        stamp_log_append_time(&mut b, 1_700_000_000_123);
        let h = batch::validate(&b).expect("crc recomputed");
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(h.max_timestamp, 1_700_000_000_123);
        let mut bytes = bytes::Bytes::from(b);
        let sets = RecordBatchDecoder::decode_all(&mut bytes).unwrap();
        for r in sets.iter().flat_map(|s| s.records.iter()) {
            assert_eq!(r.timestamp_type, KpTimestampType::LogAppend);
        }
    }
}
