//! log::records: the cleaner's bounded view inside a stored v2 batch (used only by
//! `log::compaction`; the produce and fetch paths never look past the 61-byte header). It reads
//! each record's offset, timestamp, key and whether the value is null, and re-encodes a batch
//! that lost records.
//!
//! Byte table of one record in the records section (varints are zigzag, as in the protocol):
//!
//! ```text
//! field            type     notes
//! length           varint   bytes of the record after this field
//! attributes       i8       unused (0)
//! timestamp_delta  varlong  from the batch's base_timestamp
//! offset_delta     varint   from the batch's base_offset
//! key_length       varint   -1 = null key
//! key              bytes
//! value_length     varint   -1 = null value (a tombstone)
//! value            bytes
//! headers          ...      copied, never parsed
//! ```
//!
//! Every read is bounded by the record's own length, which is bounded by the section; garbage
//! gives `None`, never a panic. A compressed section is decompressed read-only with
//! `protocol::compression::decompress`, capped at `RECORDS_DECOMPRESSED_BYTES_MAX`.

use std::borrow::Cow;

use crate::protocol::batch::{
    self, ATTRIBUTES_AT, BATCH_LENGTH_AT, BatchHeader, CRC_AT, Compression, HEADER_BYTES,
    LOG_OVERHEAD_BYTES, MAX_TIMESTAMP_AT, RECORD_COUNT_AT, TimestampType,
};
use crate::protocol::compression;
use crate::protocol::timestamps;
use crate::protocol::varint::{VARINT_BYTES_MAX, VARLONG_BYTES_MAX, read_zigzag};

/// Low three bits of the attributes: the codec. A rewritten batch is uncompressed.
const CODEC_MASK: i16 = 0x07;

/// One record of a batch, borrowed from its records section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: i64,
    pub timestamp: i64,
    /// None for a null key.
    pub key: Option<&'a [u8]>,
    /// A null value: a tombstone for its key.
    pub tombstone: bool,
    /// The whole record, length prefix included, as stored (copied verbatim on rewrite).
    pub bytes: &'a [u8],
}

/// A length-prefixed field (-1 = null) at `*pos` of `body`, advancing past it.
fn nullable<'a>(body: &'a [u8], pos: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = read_zigzag(body, pos, VARINT_BYTES_MAX)?;
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let end = pos.checked_add(len).filter(|&e| e <= body.len())?;
    let field = &body[*pos..end];
    *pos = end;
    Some(Some(field))
}

/// Parses the record at `*pos` of `section`, advancing past it; None when it is malformed.
pub fn parse_record<'a>(
    section: &'a [u8],
    pos: &mut usize,
    header: &BatchHeader,
) -> Option<Record<'a>> {
    let start = *pos;
    let len = usize::try_from(read_zigzag(section, pos, VARINT_BYTES_MAX)?).ok()?;
    let end = pos.checked_add(len).filter(|&e| e <= section.len())?;
    let body = &section[*pos..end];
    *pos = end;
    let mut p = 1; // attributes
    if body.is_empty() {
        return None;
    }
    let timestamp_delta = read_zigzag(body, &mut p, VARLONG_BYTES_MAX)?;
    let offset_delta = read_zigzag(body, &mut p, VARINT_BYTES_MAX)?;
    let key = nullable(body, &mut p)?;
    let value = nullable(body, &mut p)?;
    let timestamp = match header.timestamp_type() {
        TimestampType::LogAppendTime => header.max_timestamp,
        TimestampType::CreateTime => header.base_timestamp.wrapping_add(timestamp_delta),
    };
    Some(Record {
        offset: header.base_offset.wrapping_add(offset_delta),
        timestamp,
        key,
        tombstone: value.is_none(),
        bytes: &section[start..end],
    })
}

/// The records section of a whole batch, decompressed (bounded) when needed; None when it
/// cannot be read (unknown codec, corrupt or oversized compressed data).
pub fn section<'a>(batch: &'a [u8], header: &BatchHeader) -> Option<Cow<'a, [u8]>> {
    let section = batch.get(HEADER_BYTES..header.total_bytes())?;
    let codec = match header.compression()? {
        Compression::None => return Some(Cow::Borrowed(section)),
        Compression::Gzip => compression::CODEC_GZIP,
        Compression::Snappy => compression::CODEC_SNAPPY,
        Compression::Lz4 => compression::CODEC_LZ4,
        Compression::Zstd => compression::CODEC_ZSTD,
    };
    compression::decompress(codec, section, timestamps::RECORDS_DECOMPRESSED_BYTES_MAX)
        .ok()
        .map(Cow::Owned)
}

/// Every record of `section`: exactly `header.record_count` records filling it, or None.
/// Bounded by the record count and the section bytes (each record takes at least two bytes).
pub fn parse_all<'a>(section: &'a [u8], header: &BatchHeader) -> Option<Vec<Record<'a>>> {
    let count = usize::try_from(header.record_count).ok()?;
    // A record takes at least 2 bytes, so a larger count is a lie: refuse before allocating.
    if count > section.len() / 2 {
        return None;
    }
    let mut records = Vec::with_capacity(count);
    let mut pos = 0;
    for _ in 0..count {
        records.push(parse_record(section, &mut pos, header)?);
    }
    (pos == section.len()).then_some(records)
}

/// Re-encodes a batch that keeps only `kept` (a non-empty subset of its records, in order) as an
/// uncompressed v2 batch. Kafka's cleaner does the same: base offset, last offset delta, base
/// timestamp, producer id/epoch and base sequence stay, so the batch still spans its original
/// offsets and every kept record's offset and timestamp deltas are unchanged (the records are
/// copied byte for byte). Recomputed: batch length, codec bits (none), record count, max
/// timestamp (create time) and the CRC-32C.
pub fn rewrite(original: &[u8], header: &BatchHeader, kept: &[Record<'_>]) -> Option<Vec<u8>> {
    let head = original.get(..HEADER_BYTES)?;
    let records_bytes: usize = kept.iter().map(|r| r.bytes.len()).sum();
    let total = HEADER_BYTES + records_bytes;
    let batch_length = i32::try_from(total - LOG_OVERHEAD_BYTES).ok()?;
    let record_count = i32::try_from(kept.len()).ok().filter(|&n| n > 0)?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(head);
    kept.iter().for_each(|r| out.extend_from_slice(r.bytes));
    let attributes = header.attributes & !CODEC_MASK;
    let max_timestamp = match header.timestamp_type() {
        TimestampType::LogAppendTime => header.max_timestamp,
        TimestampType::CreateTime => kept.iter().map(|r| r.timestamp).max()?,
    };
    put(&mut out, BATCH_LENGTH_AT, &batch_length.to_be_bytes());
    put(&mut out, ATTRIBUTES_AT, &attributes.to_be_bytes());
    put(&mut out, MAX_TIMESTAMP_AT, &max_timestamp.to_be_bytes());
    put(&mut out, RECORD_COUNT_AT, &record_count.to_be_bytes());
    let crc = batch::crc32c(&out[ATTRIBUTES_AT..]);
    put(&mut out, CRC_AT, &crc.to_be_bytes());
    Some(out)
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(field) = out.get_mut(at..at + bytes.len()) {
        field.copy_from_slice(bytes);
    }
}
