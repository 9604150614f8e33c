//! protocol::timestamps: the record-level read behind ListOffsets by timestamp. Walks the records
//! of one whole v2 batch for their offsets and timestamps, decompressing a compressed batch's
//! records into a bounded buffer (the one place the broker looks inside a compressed batch).
//! The batch header itself is `protocol::batch`'s; nothing here does I/O.

use super::batch::{BatchError, BatchHeader, Compression, HEADER_BYTES, TimestampType};

use super::varint::{VARINT_BYTES_MAX, VARLONG_BYTES_MAX, read_zigzag};

/// Largest records section ListOffsets will decompress to look inside one compressed batch (the
/// node's `decompress_bytes_max` may lower it); a batch that expands further is answered at batch
/// granularity instead.
pub const RECORDS_DECOMPRESSED_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Offsets and timestamps of the records of one whole create-time batch, in order. A compressed
/// batch's records are decompressed into a buffer
/// this iterator owns, at most `records_bytes_max`; the stored batch is untouched. Bounded by the record count and by the
/// records bytes (every record consumes at least one byte).
pub struct RecordTimes<'a> {
    records: std::borrow::Cow<'a, [u8]>,
    header: BatchHeader,
    pos: usize,
    left: i32,
}

/// Record times of a whole batch; `Ok(None)` when its records cannot be read (unknown codec, or
/// compressed data that is corrupt or expands past `records_bytes_max`).
pub fn record_times(
    batch: &[u8],
    records_bytes_max: usize,
) -> Result<Option<RecordTimes<'_>>, BatchError> {
    use super::compression;
    let header = BatchHeader::parse(batch)?;
    let total = header.total_bytes();
    let batch = batch.get(..total).ok_or(BatchError::Truncated {
        need: total,
        have: batch.len(),
    })?;
    let section = &batch[HEADER_BYTES..];
    let codec = match header.compression() {
        Some(Compression::None) => {
            return Ok(Some(RecordTimes {
                records: section.into(),
                header,
                pos: 0,
                left: header.record_count,
            }));
        }
        Some(Compression::Gzip) => compression::CODEC_GZIP,
        Some(Compression::Snappy) => compression::CODEC_SNAPPY,
        Some(Compression::Lz4) => compression::CODEC_LZ4,
        Some(Compression::Zstd) => compression::CODEC_ZSTD,
        None => return Ok(None),
    };
    match compression::decompress(codec, section, records_bytes_max) {
        Ok(records) => Ok(Some(RecordTimes {
            records: records.into(),
            header,
            pos: 0,
            left: header.record_count,
        })),
        Err(e) => {
            tracing::debug!(base_offset = header.base_offset, error = %e, "records unreadable; answering at batch granularity");
            Ok(None)
        }
    }
}

impl<'a> RecordTimes<'a> {
    fn read_one(&mut self) -> Result<(i64, i64), BatchError> {
        let at = HEADER_BYTES + self.pos;
        let bad = BatchError::Record { at };
        let len = read_zigzag(&self.records, &mut self.pos, VARINT_BYTES_MAX).ok_or(bad.clone())?;
        let len = usize::try_from(len).map_err(|_| bad.clone())?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.records.len())
            .ok_or(bad.clone())?;
        let record = &self.records[self.pos..end];
        self.pos = end;
        let mut p = 1; // skip attributes
        if record.is_empty() {
            return Err(bad);
        }
        let ts_delta = read_zigzag(record, &mut p, VARLONG_BYTES_MAX).ok_or(bad.clone())?;
        let offset_delta = read_zigzag(record, &mut p, VARINT_BYTES_MAX).ok_or(bad)?;
        let timestamp = match self.header.timestamp_type() {
            TimestampType::LogAppendTime => self.header.max_timestamp,
            TimestampType::CreateTime => self.header.base_timestamp.wrapping_add(ts_delta),
        };
        Ok((
            self.header.base_offset.wrapping_add(offset_delta),
            timestamp,
        ))
    }
}

impl Iterator for RecordTimes<'_> {
    type Item = Result<(i64, i64), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left <= 0 || self.pos >= self.records.len() {
            return None;
        }
        self.left -= 1;
        let item = self.read_one();
        if item.is_err() {
            self.left = 0;
        }
        Some(item)
    }
}

/// ListOffsets by timestamp within one whole batch: `(offset, timestamp)` of the first record
/// whose timestamp is >= `timestamp_ms`, or None.
///
/// - Log-append-time batches: every record carries `max_timestamp`, so the base offset answers.
/// - Create-time batches: exact, by reading the record varints (of the decompressed records for a
///   compressed batch; this read-only lookup is the one place the broker looks inside one).
/// - Records unreadable (see [`record_times`]): batch granularity. If `base_timestamp` (the first
///   record's) qualifies, `(base_offset, base_timestamp)` is exact. Otherwise the answer is
///   `(base_offset, max_timestamp)`: the offset may be a few records early, which is the safe side
///   (a consumer seeking there misses nothing), and the timestamp is the one known to be >= target.
pub fn offset_for_timestamp(
    batch: &[u8],
    timestamp_ms: i64,
    records_bytes_max: usize,
) -> Result<Option<(i64, i64)>, BatchError> {
    offset_for_timestamp_from(batch, timestamp_ms, i64::MIN, records_bytes_max)
}

/// [`offset_for_timestamp`] among the records at or after `min_offset` only (the log start
/// offset, which DeleteRecords can raise into the middle of a batch): records below it are
/// deleted and never an answer, as Kafka's search from the log start offset.
pub fn offset_for_timestamp_from(
    batch: &[u8],
    timestamp_ms: i64,
    min_offset: i64,
    records_bytes_max: usize,
) -> Result<Option<(i64, i64)>, BatchError> {
    let h = BatchHeader::parse(batch)?;
    if h.max_timestamp < timestamp_ms || h.timestamp_type() == TimestampType::LogAppendTime {
        return Ok(header_answer_from(&h, timestamp_ms, min_offset));
    }
    let Some(mut records) = record_times(batch, records_bytes_max)? else {
        return Ok(header_answer_from(&h, timestamp_ms, min_offset));
    };
    records
        .find(|r| {
            r.as_ref()
                .map_or(true, |&(o, ts)| ts >= timestamp_ms && o >= min_offset)
        })
        .transpose()
}

/// [`header_answer`] clamped to `min_offset`: a batch straddling it answers `min_offset` with the
/// batch's max timestamp (early at worst, the safe side); a batch wholly below it answers None.
pub fn header_answer_from(
    h: &BatchHeader,
    timestamp_ms: i64,
    min_offset: i64,
) -> Option<(i64, i64)> {
    if h.last_offset() < min_offset {
        return None;
    }
    let (offset, ts) = header_answer(h, timestamp_ms)?;
    if offset >= min_offset {
        Some((offset, ts))
    } else {
        Some((min_offset, h.max_timestamp))
    }
}

/// [`offset_for_timestamp`] from the header alone: exact for log-append-time batches, batch
/// granularity otherwise (the answer when the records cannot be read, or may not be read because
/// the node's decompression budget is in use).
pub fn header_answer(h: &BatchHeader, timestamp_ms: i64) -> Option<(i64, i64)> {
    if h.max_timestamp < timestamp_ms {
        return None;
    }
    // Every record of a log-append-time batch carries max_timestamp.
    let ts =
        if h.timestamp_type() == TimestampType::LogAppendTime || h.base_timestamp < timestamp_ms {
            h.max_timestamp
        } else {
            h.base_timestamp
        };
    Some((h.base_offset, ts))
}

/// Whether answering for this batch reads its records: `None` when the header answers alone
/// (log-append time), else the records bytes a decompression may produce (0 when uncompressed).
pub fn records_needed(h: &BatchHeader, records_bytes_max: usize) -> Option<usize> {
    if h.timestamp_type() == TimestampType::LogAppendTime {
        return None;
    }
    Some(match h.compression() {
        Some(Compression::None) => 0,
        _ => records_bytes_max,
    })
}

/// The record carrying the batch's `max_timestamp`: exact when the records are readable; otherwise
/// the base offset (the earliest the record can be, so seeking there misses nothing).
pub fn max_timestamp_record(
    batch: &[u8],
    records_bytes_max: usize,
) -> Result<(i64, i64), BatchError> {
    max_timestamp_record_from(batch, i64::MIN, records_bytes_max)
}

/// [`max_timestamp_record`] among the records at or after `min_offset` (the log start offset).
/// A batch straddling it answers its first record there with the largest timestamp, or, when
/// its records are unreadable, `(min_offset, max_timestamp)`.
pub fn max_timestamp_record_from(
    batch: &[u8],
    min_offset: i64,
    records_bytes_max: usize,
) -> Result<(i64, i64), BatchError> {
    let h = BatchHeader::parse(batch)?;
    if h.base_offset < min_offset {
        return Ok(straddling_max(batch, &h, min_offset, records_bytes_max)?
            .unwrap_or((min_offset, h.max_timestamp)));
    }
    if h.timestamp_type() == TimestampType::CreateTime
        && let Some(mut records) = record_times(batch, records_bytes_max)?
    {
        let hit = records
            .find(|r| r.as_ref().map_or(true, |&(_, ts)| ts == h.max_timestamp))
            .transpose()?;
        if let Some(found) = hit {
            return Ok(found);
        }
    }
    Ok((h.base_offset, h.max_timestamp))
}

/// The first record at or after `min_offset` with the largest timestamp among those records.
fn straddling_max(
    batch: &[u8],
    h: &BatchHeader,
    min_offset: i64,
    records_bytes_max: usize,
) -> Result<Option<(i64, i64)>, BatchError> {
    if h.timestamp_type() == TimestampType::LogAppendTime {
        return Ok(Some((min_offset.max(h.base_offset), h.max_timestamp)));
    }
    let Some(records) = record_times(batch, records_bytes_max)? else {
        return Ok(None);
    };
    let mut best: Option<(i64, i64)> = None;
    for record in records {
        let (offset, ts) = record?;
        if offset >= min_offset && best.is_none_or(|(_, b)| ts > b) {
            best = Some((offset, ts));
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::test_batches::*;
    use crate::protocol::batch::{patch_base_offset, validate};

    const CAP: usize = RECORDS_DECOMPRESSED_BYTES_MAX;

    // Proves ListOffsets by timestamp is exact inside a really compressed batch, not just at its base.
    #[test]
    fn offset_for_timestamp_inside_gzip_batch() {
        let b = gzip_batch(&[100, 200, 300, 400]);
        let h = validate(&b).unwrap();
        assert_eq!(h.compression(), Some(Compression::Gzip));
        let base = h.base_offset;
        assert_eq!(
            offset_for_timestamp(&b, 250, CAP).unwrap(),
            Some((base + 2, 300))
        );
        assert_eq!(
            offset_for_timestamp(&b, 400, CAP).unwrap(),
            Some((base + 3, 400))
        );
        assert_eq!(
            offset_for_timestamp(&b, 50, CAP).unwrap(),
            Some((base, 100))
        );
        assert_eq!(offset_for_timestamp(&b, 401, CAP).unwrap(), None);
        assert_eq!(max_timestamp_record(&b, CAP).unwrap(), (base + 3, 400));
    }

    #[test]
    fn offset_for_timestamp_reads_records() {
        // Proves the record scan returns the first record at or after the target in uncompressed
        // batches, and the documented batch-granularity answer for compressed ones.
        let mut b = batch_with(&[100, 300, 200, 400], 3, 0);
        patch_base_offset(&mut b, 50);
        assert_eq!(offset_for_timestamp(&b, 50, CAP), Ok(Some((50, 100))));
        assert_eq!(offset_for_timestamp(&b, 150, CAP), Ok(Some((51, 300))));
        assert_eq!(offset_for_timestamp(&b, 300, CAP), Ok(Some((51, 300))));
        assert_eq!(offset_for_timestamp(&b, 301, CAP), Ok(Some((53, 400))));
        assert_eq!(offset_for_timestamp(&b, 401, CAP), Ok(None));
        assert_eq!(max_timestamp_record(&b, CAP), Ok((53, 400)));
        let mut z = batch_with(&[100, 300, 200], 3, 4); // zstd bits set
        patch_base_offset(&mut z, 10);
        assert_eq!(offset_for_timestamp(&z, 50, CAP), Ok(Some((10, 100))));
        assert_eq!(offset_for_timestamp(&z, 250, CAP), Ok(Some((10, 300))));
        assert_eq!(offset_for_timestamp(&z, 301, CAP), Ok(None));
        assert_eq!(max_timestamp_record(&z, CAP), Ok((10, 300)));
    }

    #[test]
    fn lookups_from_a_log_start_inside_the_batch() {
        // Offsets 50..=53; the log start at 52 deletes the first two records.
        let mut b = gzip_batch(&[100, 500, 200, 400]);
        patch_base_offset(&mut b, 50);
        let from = |ts| offset_for_timestamp_from(&b, ts, 52, CAP);
        assert_eq!(from(0), Ok(Some((52, 200))));
        assert_eq!(from(300), Ok(Some((53, 400))));
        assert_eq!(from(401), Ok(None), "only a deleted record is that late");
        assert_eq!(max_timestamp_record_from(&b, 52, CAP), Ok((53, 400)));
        // Records unreadable (a zstd flag on plain records): clamped to the start, early side.
        let mut z = batch_with(&[100, 500, 200, 400], 3, 4);
        patch_base_offset(&mut z, 50);
        assert_eq!(
            offset_for_timestamp_from(&z, 0, 52, CAP),
            Ok(Some((52, 500)))
        );
        assert_eq!(max_timestamp_record_from(&z, 52, CAP), Ok((52, 500)));
        let h = BatchHeader::parse(&z).unwrap();
        assert_eq!(
            header_answer_from(&h, 0, 54),
            None,
            "wholly below the start"
        );
    }
}
