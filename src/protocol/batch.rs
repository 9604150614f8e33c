//! protocol::batch: the 61-byte header of a Kafka v2 record batch, read and checked without
//! decoding records (batches are stored as produced; never decompressed). No I/O.
//!
//! Byte table of a v2 record batch (all integers big-endian). Offsets below are the `*_AT`
//! constants, each built from the previous one:
//!
//! ```text
//! offset size field                    notes
//!      0    8 base_offset              patched by the broker on append (outside the CRC)
//!      8    4 batch_length             bytes after this field: total size = batch_length + 12
//!     12    4 partition_leader_epoch   patched by the broker on append (outside the CRC)
//!     16    1 magic                    2
//!     17    4 crc                      CRC-32C (Castagnoli) of bytes 21..end
//!     21    2 attributes               bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control
//!     23    4 last_offset_delta        record_count - 1 as producers write it
//!     27    8 base_timestamp           timestamp of the first record
//!     35    8 max_timestamp            largest record timestamp (or the log-append time)
//!     43    8 producer_id
//!     51    2 producer_epoch
//!     53    4 base_sequence
//!     57    4 record_count
//!     61    - records                  (compressed as a whole when the codec is not none)
//! ```
//!
//! A record (uncompressed batches only) is: length varint, attributes i8, timestamp_delta varlong,
//! offset_delta varint, key, value, headers. Only the first four fields are ever read (by
//! `protocol::timestamps`), to check the record count here and to answer ListOffsets by
//! timestamp; every read is bounded by the batch bytes.

use std::ops::Range;

use super::varint::{VARINT_BYTES_MAX, read_zigzag};

pub const BASE_OFFSET_AT: usize = 0;
pub const BATCH_LENGTH_AT: usize = BASE_OFFSET_AT + 8;
pub const LEADER_EPOCH_AT: usize = BATCH_LENGTH_AT + 4;
pub const MAGIC_AT: usize = LEADER_EPOCH_AT + 4;
pub const CRC_AT: usize = MAGIC_AT + 1;
pub const ATTRIBUTES_AT: usize = CRC_AT + 4;
pub const LAST_OFFSET_DELTA_AT: usize = ATTRIBUTES_AT + 2;
pub const BASE_TIMESTAMP_AT: usize = LAST_OFFSET_DELTA_AT + 4;
pub const MAX_TIMESTAMP_AT: usize = BASE_TIMESTAMP_AT + 8;
pub const PRODUCER_ID_AT: usize = MAX_TIMESTAMP_AT + 8;
pub const PRODUCER_EPOCH_AT: usize = PRODUCER_ID_AT + 8;
pub const BASE_SEQUENCE_AT: usize = PRODUCER_EPOCH_AT + 2;
pub const RECORD_COUNT_AT: usize = BASE_SEQUENCE_AT + 4;
/// Size of the fixed v2 header; records start here.
pub const HEADER_BYTES: usize = RECORD_COUNT_AT + 4;
/// Bytes before the part that `batch_length` counts (base_offset + batch_length).
pub const LOG_OVERHEAD_BYTES: usize = LEADER_EPOCH_AT;
/// Smallest legal `batch_length` (a header with no record bytes).
pub const BATCH_LENGTH_MIN: i32 = (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
pub const MAGIC_V2: i8 = 2;
/// Records a compressed batch may claim per byte of its records section. The record count
/// decides how many offsets a batch takes, and the produce path never decompresses to count, so
/// this bounds the lie. An uncompressed record is at least 7 bytes and each carries its own
/// offset delta, which keeps real codecs (gzip tops out near 1000:1 on any input, lz4 near
/// 255:1) far below 1024 records per compressed byte.
pub const RECORDS_PER_COMPRESSED_BYTE_MAX: i64 = 1024;

const CODEC_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// CRC-32C (Castagnoli), the checksum of v2 batches. The `crc32c` crate picks the CPU's CRC
/// instructions at run time (SSE4.2, ARMv8 CRC) and falls back to a table where they are missing.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Incremental CRC-32C, for checking a batch read from disk in bounded pieces.
pub struct Crc32c(u32);

impl Crc32c {
    pub fn new() -> Crc32c {
        Crc32c(0)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0 = crc32c::crc32c_append(self.0, bytes);
    }

    pub fn finish(self) -> u32 {
        self.0
    }
}

impl Default for Crc32c {
    fn default() -> Self {
        Crc32c::new()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("unsupported magic {0}, expected 2")]
    Magic(i8),
    #[error("batch length {0} is invalid")]
    Length(i32),
    #[error("crc-32c mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("record count {0} is invalid")]
    RecordCount(i32),
    #[error("record count {record_count} does not match the {found} records in the batch")]
    RecordsMismatch { record_count: i32, found: i64 },
    #[error("record count {record_count} is implausible for {records_bytes} compressed bytes")]
    CompressedRecordCount {
        record_count: i32,
        records_bytes: usize,
    },
    #[error("last offset delta {last_offset_delta} does not match record count {record_count}")]
    OffsetDelta {
        last_offset_delta: i32,
        record_count: i32,
    },
    /// One append's batches claim more offsets than a segment's u32 relative offsets can hold.
    #[error(
        "{offsets} offsets in one append exceed a segment's {} relative offsets",
        u32::MAX
    )]
    OffsetsOverflow { offsets: i64 },
    #[error("unknown compression codec {0}")]
    Codec(u8),
    #[error("malformed record at byte {at} of the batch")]
    Record { at: usize },
    #[error("no record batches")]
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// The fixed fields of one v2 batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    // Callers check `buf.len() >= HEADER_BYTES` first; `get` keeps this panic-free regardless.
    if let Some(src) = buf.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

impl BatchHeader {
    /// Reads the header fields of the batch at the start of `buf`. Checks only what is needed to
    /// trust the length: at least 61 bytes, magic 2 and `batch_length >= 49`. No CRC check.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_BYTES {
            return Err(BatchError::Truncated {
                need: HEADER_BYTES,
                have: buf.len(),
            });
        }
        let h = BatchHeader {
            base_offset: i64::from_be_bytes(be(buf, BASE_OFFSET_AT)),
            batch_length: i32::from_be_bytes(be(buf, BATCH_LENGTH_AT)),
            partition_leader_epoch: i32::from_be_bytes(be(buf, LEADER_EPOCH_AT)),
            magic: i8::from_be_bytes(be(buf, MAGIC_AT)),
            crc: u32::from_be_bytes(be(buf, CRC_AT)),
            attributes: i16::from_be_bytes(be(buf, ATTRIBUTES_AT)),
            last_offset_delta: i32::from_be_bytes(be(buf, LAST_OFFSET_DELTA_AT)),
            base_timestamp: i64::from_be_bytes(be(buf, BASE_TIMESTAMP_AT)),
            max_timestamp: i64::from_be_bytes(be(buf, MAX_TIMESTAMP_AT)),
            producer_id: i64::from_be_bytes(be(buf, PRODUCER_ID_AT)),
            producer_epoch: i16::from_be_bytes(be(buf, PRODUCER_EPOCH_AT)),
            base_sequence: i32::from_be_bytes(be(buf, BASE_SEQUENCE_AT)),
            record_count: i32::from_be_bytes(be(buf, RECORD_COUNT_AT)),
        };
        if h.magic != MAGIC_V2 {
            return Err(BatchError::Magic(h.magic));
        }
        if h.batch_length < BATCH_LENGTH_MIN {
            return Err(BatchError::Length(h.batch_length));
        }
        Ok(h)
    }

    /// Whole size of the batch in bytes, header included.
    pub fn total_bytes(&self) -> usize {
        // batch_length >= BATCH_LENGTH_MIN > 0 after parse, so the cast is lossless.
        self.batch_length.max(0) as usize + LOG_OVERHEAD_BYTES
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// The codec; None for an unknown one (`validate` rejects those).
    pub fn compression(&self) -> Option<Compression> {
        match self.attributes & CODEC_MASK {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// Checks one whole batch (`buf` must be exactly one batch): magic 2, `batch_length` equal to
/// `buf.len() - 12`, CRC-32C over attributes..end, `record_count >= 1`,
/// `last_offset_delta == record_count - 1`, codec 0..=4, and a record count that is true: exactly
/// that many records filling the records section (uncompressed), or at most
/// [`RECORDS_PER_COMPRESSED_BYTE_MAX`] per records byte (compressed).
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(buf)?;
    let total = h.total_bytes();
    if total > buf.len() {
        return Err(BatchError::Truncated {
            need: total,
            have: buf.len(),
        });
    }
    if total != buf.len() {
        return Err(BatchError::Length(h.batch_length));
    }
    check_header(&h)?;
    let computed = crc32c(&buf[ATTRIBUTES_AT..total]);
    if computed != h.crc {
        return Err(BatchError::Crc {
            stored: h.crc,
            computed,
        });
    }
    if h.compression() == Some(Compression::None) {
        check_records(buf, &h)?;
    }
    Ok(h)
}

/// Walks the record lengths of an uncompressed batch: exactly `record_count` records must fill
/// the records section, so the offsets the batch takes are the records it holds. Only each
/// record's length varint is read (this runs for every produced record; the fields inside are the
/// client's and are read only by ListOffsets). Bounded by the section bytes (every record consumes
/// at least two).
fn check_records(batch: &[u8], h: &BatchHeader) -> Result<(), BatchError> {
    let section = batch.get(HEADER_BYTES..).unwrap_or_default();
    let mut pos = 0usize;
    let mut found: i64 = 0;
    while found < i64::from(h.record_count) && pos < section.len() {
        let bad = BatchError::Record {
            at: HEADER_BYTES + pos,
        };
        let len = read_zigzag(section, &mut pos, VARINT_BYTES_MAX).ok_or(bad.clone())?;
        // A record holds at least its attributes byte.
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0)
            .ok_or(bad.clone())?;
        pos = pos
            .checked_add(len)
            .filter(|&e| e <= section.len())
            .ok_or(bad)?;
        found += 1;
    }
    if found != i64::from(h.record_count) || pos != section.len() {
        return Err(BatchError::RecordsMismatch {
            record_count: h.record_count,
            found,
        });
    }
    Ok(())
}

/// The checks of [`validate`] that need only the header (record count, last offset delta, codec,
/// the compressed record count bound), for callers that verify the CRC themselves (recovery
/// streams it with [`Crc32c`]; the records were walked when the batch was produced).
pub fn check_header(h: &BatchHeader) -> Result<(), BatchError> {
    if h.record_count < 1 {
        return Err(BatchError::RecordCount(h.record_count));
    }
    if i64::from(h.last_offset_delta) != i64::from(h.record_count) - 1 {
        return Err(BatchError::OffsetDelta {
            last_offset_delta: h.last_offset_delta,
            record_count: h.record_count,
        });
    }
    match h.compression() {
        None => return Err(BatchError::Codec((h.attributes & CODEC_MASK) as u8)),
        Some(Compression::None) => {}
        Some(_) => {
            let records_bytes = h.total_bytes().saturating_sub(HEADER_BYTES);
            let max = RECORDS_PER_COMPRESSED_BYTE_MAX.saturating_mul(records_bytes as i64);
            if i64::from(h.record_count) > max {
                return Err(BatchError::CompressedRecordCount {
                    record_count: h.record_count,
                    records_bytes,
                });
            }
        }
    }
    Ok(())
}

/// [`check_header`] for a batch read back from a sealed segment, where the cleaner
/// (`log::compaction`) may have removed records: an uncompressed batch may then hold fewer
/// records than its offset range (Kafka keeps a cleaned batch's last offset delta).
pub fn check_stored_header(h: &BatchHeader) -> Result<(), BatchError> {
    let compacted = h.compression() == Some(Compression::None)
        && h.record_count >= 1
        && i64::from(h.last_offset_delta) > i64::from(h.record_count) - 1;
    if compacted {
        return Ok(());
    }
    check_header(h)
}

/// Iterates the batches of a concatenation, validating each; yields an error (then stops) at
/// the first invalid or partial batch.
pub struct Batches<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

/// Iterator over the whole, validated batches of `buf` with their byte ranges.
pub fn iter_batches(buf: &[u8]) -> Batches<'_> {
    Batches {
        buf,
        pos: 0,
        failed: false,
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<(BatchHeader, Range<usize>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let result = BatchHeader::parse(rest).and_then(|h| {
            let total = h.total_bytes();
            let whole = rest.get(..total).ok_or(BatchError::Truncated {
                need: total,
                have: rest.len(),
            })?;
            validate(whole)
        });
        match result {
            Ok(h) => {
                let range = self.pos..self.pos + h.total_bytes();
                self.pos = range.end;
                Some(Ok((h, range)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Splits a concatenation of whole batches, validating every one. Errors on an empty input, any
/// invalid batch and a trailing partial batch. The Vec is bounded by `buf.len() / 61`.
pub fn split(buf: &[u8]) -> Result<Vec<(BatchHeader, Range<usize>)>, BatchError> {
    if buf.is_empty() {
        return Err(BatchError::Empty);
    }
    iter_batches(buf).collect()
}

/// Sets the base offset of the batch at the start of `buf` (outside the CRC). No-op on a buffer
/// too short to hold the field.
pub fn patch_base_offset(buf: &mut [u8], base_offset: i64) {
    if let Some(field) = buf.get_mut(BASE_OFFSET_AT..BASE_OFFSET_AT + 8) {
        field.copy_from_slice(&base_offset.to_be_bytes());
    }
}

/// Sets the partition leader epoch of the batch at the start of `buf` (outside the CRC).
pub fn patch_leader_epoch(buf: &mut [u8], epoch: i32) {
    if let Some(field) = buf.get_mut(LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4) {
        field.copy_from_slice(&epoch.to_be_bytes());
    }
}

/// Builders of valid v2 batches for tests across the crate (the broker never builds batches).
#[cfg(test)]
pub(crate) mod test_batches {
    use super::*;

    /// One record's key and value (None: null), as `keyed` takes them.
    pub(crate) type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    fn put_zigzag(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn put_nullable(out: &mut Vec<u8>, field: Option<&[u8]>) {
        match field {
            None => put_zigzag(out, -1),
            Some(f) => {
                put_zigzag(out, f.len() as i64);
                out.extend_from_slice(f);
            }
        }
    }

    /// One record: attributes 0, the given timestamp and offset deltas, key and value (None:
    /// null), no headers.
    fn record_kv(
        ts_delta: i64,
        offset_delta: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut body = vec![0u8];
        put_zigzag(&mut body, ts_delta);
        put_zigzag(&mut body, offset_delta);
        put_nullable(&mut body, key);
        put_nullable(&mut body, value);
        put_zigzag(&mut body, 0); // no headers
        let mut out = Vec::new();
        put_zigzag(&mut out, body.len() as i64);
        out.extend_from_slice(&body);
        out
    }

    /// One record without a key.
    fn record(ts_delta: i64, offset_delta: i64, value: &[u8]) -> Vec<u8> {
        record_kv(ts_delta, offset_delta, None, Some(value))
    }

    /// A valid batch with one record per timestamp (base offset 0), values of `value_bytes` bytes.
    /// `attributes` lets a test set codec bits (records are then left as they are: a "compressed"
    /// batch whose bytes the broker never looks into).
    pub(crate) fn batch_with(timestamps: &[i64], value_bytes: usize, attributes: i16) -> Vec<u8> {
        let base_ts = timestamps.first().copied().unwrap_or(0);
        let mut records = Vec::new();
        for (i, ts) in timestamps.iter().enumerate() {
            records.extend(record(ts - base_ts, i as i64, &vec![b'v'; value_bytes]));
        }
        assemble(&records, timestamps, attributes)
    }

    /// Header (base offset 0, no producer) + `records`, one per timestamp, CRC filled in.
    fn assemble(records: &[u8], timestamps: &[i64], attributes: i16) -> Vec<u8> {
        let base_ts = timestamps.first().copied().unwrap_or(0);
        let max_ts = timestamps.iter().copied().max().unwrap_or(0);
        let mut b = Vec::with_capacity(HEADER_BYTES + records.len());
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(
            &((HEADER_BYTES - LOG_OVERHEAD_BYTES + records.len()) as i32).to_be_bytes(),
        );
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(MAGIC_V2 as u8);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&attributes.to_be_bytes());
        b.extend_from_slice(&((timestamps.len() as i32) - 1).to_be_bytes());
        b.extend_from_slice(&base_ts.to_be_bytes());
        b.extend_from_slice(&max_ts.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&(timestamps.len() as i32).to_be_bytes());
        b.extend_from_slice(records);
        refresh_crc(&mut b);
        b
    }

    /// An uncompressed batch of (key, value) records (None: a null key or a tombstone), record
    /// `i` at timestamp `ts0 + i`.
    pub(crate) fn keyed(records: &[KeyValue<'_>], ts0: i64) -> Vec<u8> {
        let timestamps: Vec<i64> = (0..records.len() as i64).map(|i| ts0 + i).collect();
        let mut body = Vec::new();
        for (i, (key, value)) in records.iter().enumerate() {
            body.extend(record_kv(i as i64, i as i64, *key, *value));
        }
        assemble(&body, &timestamps, 0)
    }

    /// `b` as an idempotent producer sends it: producer id, epoch and base sequence set, CRC
    /// refreshed (all three fields are inside the CRC range).
    pub(crate) fn with_producer(
        mut b: Vec<u8>,
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
    ) -> Vec<u8> {
        b[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
        b[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&epoch.to_be_bytes());
        b[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&base_sequence.to_be_bytes());
        refresh_crc(&mut b);
        b
    }

    /// Recomputes the CRC after a test edited bytes inside the CRC range.
    pub(crate) fn refresh_crc(b: &mut [u8]) {
        let crc = crc32c(&b[ATTRIBUTES_AT..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }

    /// Re-packs an uncompressed test batch with its records gzip-compressed (codec 1).
    pub(crate) fn gzip_batch(timestamps: &[i64]) -> Vec<u8> {
        use std::io::Write;
        let plain = batch_with(timestamps, 10, 0);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain[HEADER_BYTES..]).unwrap();
        let mut b = plain[..HEADER_BYTES].to_vec();
        b.extend(gz.finish().unwrap());
        let len = (b.len() - LOG_OVERHEAD_BYTES) as i32;
        b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&len.to_be_bytes());
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&1i16.to_be_bytes());
        refresh_crc(&mut b);
        b
    }

    /// `n` records with consecutive timestamps from `ts0`, uncompressed.
    pub(crate) fn batch(n: usize, ts0: i64, value_bytes: usize) -> Vec<u8> {
        let ts: Vec<i64> = (0..n as i64).map(|i| ts0 + i).collect();
        batch_with(&ts, value_bytes, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::test_batches::*;
    use super::*;
    use crate::protocol::timestamps::{
        RECORDS_DECOMPRESSED_BYTES_MAX, max_timestamp_record, offset_for_timestamp, record_times,
    };

    #[test]
    fn offsets_are_built_from_the_previous_constant() {
        // Proves the named offsets match the v2 wire format (a typo would shift every field).
        assert_eq!(
            (
                BATCH_LENGTH_AT,
                LEADER_EPOCH_AT,
                MAGIC_AT,
                CRC_AT,
                ATTRIBUTES_AT
            ),
            (8, 12, 16, 17, 21)
        );
        assert_eq!(
            (LAST_OFFSET_DELTA_AT, BASE_TIMESTAMP_AT, MAX_TIMESTAMP_AT),
            (23, 27, 35)
        );
        assert_eq!(
            (
                PRODUCER_ID_AT,
                PRODUCER_EPOCH_AT,
                BASE_SEQUENCE_AT,
                RECORD_COUNT_AT
            ),
            (43, 51, 53, 57)
        );
        assert_eq!(HEADER_BYTES, 61);
        assert_eq!(BATCH_LENGTH_MIN, 49);
    }

    #[test]
    fn valid_batch_parses_with_every_field() {
        // Proves a hand-built batch with a correct CRC-32C validates and its fields read back.
        let b = batch(3, 1000, 5);
        let h = validate(&b).expect("valid batch");
        assert_eq!(h.magic, 2);
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.base_timestamp, 1000);
        assert_eq!(h.max_timestamp, 1002);
        assert_eq!(h.total_bytes(), b.len());
        assert_eq!(h.compression(), Some(Compression::None));
        assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
        assert!(!h.is_transactional() && !h.is_control());
        assert_eq!(crc32c(b"123456789"), 0xe306_9283, "castagnoli check value");
        let mut streamed = Crc32c::new();
        b[ATTRIBUTES_AT..]
            .chunks(7)
            .for_each(|c| streamed.update(c));
        assert_eq!(streamed.finish(), h.crc);
    }

    #[test]
    fn every_single_byte_corruption_in_crc_range_is_detected() {
        // Proves flipping any bit pattern of any byte covered by the CRC (attributes..end) fails validation.
        let b = batch(4, 1, 7);
        for at in ATTRIBUTES_AT..b.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut c = b.clone();
                c[at] ^= flip;
                assert!(
                    validate(&c).is_err(),
                    "corruption at byte {at} with {flip:#x} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_rejected_without_panic() {
        // Proves each prefix shorter than the batch is an error from validate, split and record_times.
        let b = batch(3, 1, 4);
        for len in 0..b.len() {
            assert!(
                validate(&b[..len]).is_err(),
                "prefix of {len} bytes accepted"
            );
            assert!(
                split(&b[..len]).is_err(),
                "split accepted a prefix of {len} bytes"
            );
            let _ = record_times(&b[..len], RECORDS_DECOMPRESSED_BYTES_MAX)
                .map(|r| r.map(|it| it.count()));
            let _ = offset_for_timestamp(&b[..len], 0, RECORDS_DECOMPRESSED_BYTES_MAX);
        }
    }

    #[test]
    fn header_checks_reject_bad_fields() {
        // Proves magic, record count, last offset delta, codec and length mismatches are each refused.
        let b = batch(2, 1, 1);
        let mut m = b.clone();
        m[MAGIC_AT] = 1;
        assert_eq!(validate(&m), Err(BatchError::Magic(1)));
        let mut d = b.clone();
        d[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&5i32.to_be_bytes());
        refresh_crc(&mut d);
        assert!(matches!(validate(&d), Err(BatchError::OffsetDelta { .. })));
        let mut c = b.clone();
        c[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&0i32.to_be_bytes());
        refresh_crc(&mut c);
        assert_eq!(validate(&c), Err(BatchError::RecordCount(0)));
        let bad_codec = batch_with(&[1, 2], 1, 5);
        assert_eq!(validate(&bad_codec), Err(BatchError::Codec(5)));
        let mut longer = b.clone();
        longer.push(0);
        assert!(matches!(validate(&longer), Err(BatchError::Length(_))));
        let mut short_len = b.clone();
        short_len[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&48i32.to_be_bytes());
        assert_eq!(validate(&short_len), Err(BatchError::Length(48)));
    }

    /// `b` with its record count and last offset delta set to `count` and the CRC refreshed.
    fn claim_records(mut b: Vec<u8>, count: i32) -> Vec<u8> {
        b[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&count.to_be_bytes());
        b[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&(count - 1).to_be_bytes());
        refresh_crc(&mut b);
        b
    }

    #[test]
    fn record_count_must_be_true() {
        // Proves a batch cannot claim more (or fewer) records than it holds: a 69-byte batch
        // claiming 2^31-1 records is refused, uncompressed by walking its records, compressed by
        // the records-per-byte bound; valid multi-record batches of both kinds still pass.
        let one = batch(1, 1, 1);
        assert_eq!(one.len(), 69);
        assert!(matches!(
            validate(&claim_records(one.clone(), i32::MAX)),
            Err(BatchError::RecordsMismatch { found: 1, .. })
        ));
        let three = batch(3, 1, 4);
        assert_eq!(validate(&three).map(|h| h.record_count), Ok(3));
        for wrong in [2, 4] {
            assert!(
                matches!(
                    validate(&claim_records(three.clone(), wrong)),
                    Err(BatchError::RecordsMismatch { found, .. }) if found == i64::from(wrong.min(3))
                ),
                "claimed {wrong} of 3 records"
            );
        }
        let mut trailing = three.clone();
        trailing.push(0);
        let len = (trailing.len() - LOG_OVERHEAD_BYTES) as i32;
        trailing[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&len.to_be_bytes());
        refresh_crc(&mut trailing);
        assert!(validate(&trailing).is_err(), "bytes after the last record");
        let lz4 = batch_with(&[1], 0, 3);
        assert!(matches!(
            validate(&claim_records(lz4.clone(), i32::MAX)),
            Err(BatchError::CompressedRecordCount { .. })
        ));
        let records_bytes = (lz4.len() - HEADER_BYTES) as i64;
        let most = (RECORDS_PER_COMPRESSED_BYTE_MAX * records_bytes) as i32;
        assert!(validate(&claim_records(lz4.clone(), most)).is_ok());
        assert!(validate(&claim_records(lz4, most + 1)).is_err());
        assert!(validate(&gzip_batch(&[1, 2, 3, 4])).is_ok());
    }

    #[test]
    fn split_and_patch() {
        // Proves split finds each batch's range, a trailing partial batch is refused, and patching
        // base offset and leader epoch leaves the CRC valid.
        let (a, b) = (batch(2, 10, 3), batch(5, 20, 1));
        let mut all = [a.clone(), b.clone()].concat();
        let parts = split(&all).expect("two batches");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].1, 0..a.len());
        assert_eq!(parts[1].1, a.len()..a.len() + b.len());
        assert!(matches!(
            split(&all[..all.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        assert_eq!(split(&[]), Err(BatchError::Empty));
        let second = parts[1].1.clone();
        patch_base_offset(&mut all[second.clone()], 42);
        patch_leader_epoch(&mut all[second.clone()], 7);
        let h = validate(&all[second]).expect("patch stays outside the crc");
        assert_eq!(
            (h.base_offset, h.partition_leader_epoch, h.last_offset()),
            (42, 7, 46)
        );
        patch_base_offset(&mut [0u8; 3], 1); // too short: no panic
    }

    #[test]
    fn random_bytes_never_panic() {
        // Proves the parsers survive arbitrary input, including valid headers with random bodies.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let valid = batch(3, 5, 2);
        for round in 0..3000 {
            let len = (next() % 200) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 && buf.len() >= HEADER_BYTES {
                buf[..HEADER_BYTES].copy_from_slice(&valid[..HEADER_BYTES]);
                let bl = (buf.len() - LOG_OVERHEAD_BYTES) as i32;
                buf[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&bl.to_be_bytes());
                if round % 4 == 0 {
                    refresh_crc(&mut buf);
                }
            }
            let _ = validate(&buf);
            let _ = split(&buf);
            let _ =
                record_times(&buf, RECORDS_DECOMPRESSED_BYTES_MAX).map(|r| r.map(|it| it.count()));
            let _ =
                offset_for_timestamp(&buf, (next() % 10) as i64, RECORDS_DECOMPRESSED_BYTES_MAX);
            let _ = max_timestamp_record(&buf, RECORDS_DECOMPRESSED_BYTES_MAX);
        }
    }
}
