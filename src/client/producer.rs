//! client::producer: builds v2 record batches client-side (uncompressed, kafka-protocol's
//! `RecordBatchEncoder`) and sends them over one pipelined connection: up to `in_flight_max`
//! Produce requests outstanding, acknowledged oldest first (a broker answers in order). The
//! benchmark (`bench::produce`) drives it; the broker never sees anything but bytes.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, Record,
    RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::{Client, ClientError};

/// Produce v9: flexible encoding, topics by name (v13 switches to topic ids). Kafka 4.0 brokers,
/// bramble among them, serve 3–12.
pub const PRODUCE_VERSION: i16 = 9;
/// How long the broker may wait for acks=all before answering REQUEST_TIMED_OUT.
pub const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// Bytes of a v2 batch before its first record (base offset .. record count).
pub const BATCH_HEADER_BYTES: usize = 61;
/// Most records one batch may hold (keeps a batch's bookkeeping bounded whatever `batch_bytes`).
pub const BATCH_RECORDS_MAX: usize = 1 << 20;

/// Bytes of a zig-zag varint holding `v`.
fn varint_bytes(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// Encoded size of one record as [`encode_batch`] writes it: length varint, attributes, timestamp
/// delta 0, `offset_delta`, null key, the value, no headers.
pub fn record_bytes(offset_delta: usize, value_len: usize) -> usize {
    let body = 1 // attributes
        + varint_bytes(0) // timestamp delta: one timestamp per batch
        + varint_bytes(offset_delta as i64)
        + varint_bytes(-1) // null key
        + varint_bytes(value_len as i64)
        + value_len
        + varint_bytes(0); // header count
    varint_bytes(body as i64) + body
}

/// How many records of `value_len` bytes fit in a batch of at most `batch_bytes` (at least one:
/// a record larger than the batch goes alone, as Kafka's producer does), and the batch's size.
pub fn records_per_batch(batch_bytes: usize, value_len: usize) -> (usize, usize) {
    let mut total = BATCH_HEADER_BYTES + record_bytes(0, value_len);
    let mut count = 1;
    while count < BATCH_RECORDS_MAX {
        let next = record_bytes(count, value_len);
        if total + next > batch_bytes {
            break;
        }
        total += next;
        count += 1;
    }
    (count, total)
}

/// Who a batch is from: an idempotent producer's id, epoch and first sequence, or
/// [`Stamp::NONE`] (no producer id, as a non-idempotent producer sends).
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl Stamp {
    pub const NONE: Stamp = Stamp {
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
        base_sequence: NO_SEQUENCE,
    };
}

/// One uncompressed v2 batch of `count` records, each with a null key and `value`, base offset 0
/// (the broker assigns offsets), no producer id, all stamped `timestamp_ms`.
pub fn encode_batch(value: &Bytes, count: usize, timestamp_ms: i64) -> Result<Bytes, ClientError> {
    assert!(
        (1..=BATCH_RECORDS_MAX).contains(&count),
        "batch of {count} records"
    );
    encode_values(
        std::iter::repeat_n(value.clone(), count),
        Stamp::NONE,
        timestamp_ms,
    )
}

/// One uncompressed v2 batch of records with null keys and `values`, base offset 0, from
/// `stamp`, all stamped `timestamp_ms`.
pub fn encode_values(
    values: impl IntoIterator<Item = Bytes>,
    stamp: Stamp,
    timestamp_ms: i64,
) -> Result<Bytes, ClientError> {
    let records: Vec<Record> = values
        .into_iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: stamp.producer_id,
            producer_epoch: stamp.producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch wherever offset - sequence changes; a sequence
            // that follows the offset keeps one batch whose base sequence is the stamp's
            // (NO_SEQUENCE, -1, without a producer id).
            // Sequences wrap past i32::MAX to 0, as Kafka's do (NO_SEQUENCE + i stays -1, 0, 1…).
            sequence: ((i64::from(stamp.base_sequence) + i as i64) % (i64::from(i32::MAX) + 1))
                as i32,
            timestamp: timestamp_ms,
            key: None,
            value: Some(value),
            headers: IndexMap::new(),
        })
        .collect();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options)
        .map_err(|e| ClientError::Encode(e.to_string()))?;
    Ok(buf.freeze())
}

/// One connection producing with up to `in_flight_max` requests outstanding. Each request carries
/// one batch for one partition; `T` is the caller's token, handed back with the batch's ack.
pub struct Producer<T> {
    client: Client,
    acks: i16,
    in_flight_max: usize,
    in_flight: VecDeque<(i32, T)>,
}

/// What an acknowledged batch got: the caller's token and the batch's base offset (-1 for
/// acks=0, which gets no response).
pub struct Ack<T> {
    pub token: T,
    pub base_offset: i64,
}

impl<T> Producer<T> {
    pub async fn connect(addr: &str, acks: i16, in_flight_max: usize) -> Result<Self, ClientError> {
        assert!(in_flight_max >= 1, "in_flight_max must be at least 1");
        Ok(Producer {
            client: Client::connect(addr).await?,
            acks,
            in_flight_max,
            in_flight: VecDeque::with_capacity(in_flight_max),
        })
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn is_full(&self) -> bool {
        self.in_flight.len() >= self.in_flight_max
    }

    /// Sends `batch` to `topic`/`partition`. With acks=0 there is no response, so the batch
    /// counts as acknowledged once written to the socket: its [`Ack`] is returned at once.
    pub async fn send(
        &mut self,
        topic: &TopicName,
        partition: i32,
        batch: Bytes,
        token: T,
    ) -> Result<Option<Ack<T>>, ClientError> {
        assert!(
            !self.is_full(),
            "send with {} in flight",
            self.in_flight_max
        );
        let request = ProduceRequest::default()
            .with_acks(self.acks)
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(topic.clone())
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(batch)),
                    ]),
            ]);
        let correlation_id = self.client.send(&request, PRODUCE_VERSION).await?;
        if self.acks == 0 {
            return Ok(Some(Ack {
                token,
                base_offset: -1,
            }));
        }
        self.in_flight.push_back((correlation_id, token));
        Ok(None)
    }

    /// Waits for the oldest outstanding request's response; None if nothing is in flight. A
    /// partition error ends the run: a benchmark does not retry.
    pub async fn next_ack(&mut self) -> Result<Option<Ack<T>>, ClientError> {
        let Some((correlation_id, token)) = self.in_flight.pop_front() else {
            return Ok(None);
        };
        let response = self
            .client
            .receive::<ProduceRequest>(correlation_id, PRODUCE_VERSION)
            .await?;
        let partition = response
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .ok_or_else(|| ClientError::Broker("produce response names no partition".into()))?;
        if let Some(e) = ResponseError::try_from_code(partition.error_code) {
            let detail = partition.error_message.as_ref().map(StrBytes::as_str);
            return Err(ClientError::Broker(format!(
                "produce failed: {e:?} (error {}) {}",
                partition.error_code,
                detail.unwrap_or_default()
            )));
        }
        Ok(Some(Ack {
            token,
            base_offset: partition.base_offset,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch;

    #[test]
    fn built_batches_validate_and_match_their_planned_size() {
        // Proves the client's batches are ones the broker accepts (the same `validate` the produce
        // path runs) and that `records_per_batch` predicts their exact size within `batch_bytes`.
        for (batch_bytes, value_len) in [(16_384, 100), (1_000, 0), (50, 10), (1 << 20, 1000)] {
            let (count, planned) = records_per_batch(batch_bytes, value_len);
            let value = Bytes::from(vec![7u8; value_len]);
            let built = encode_batch(&value, count, 1_700_000_000_000).unwrap();
            assert_eq!(built.len(), planned, "{batch_bytes}/{value_len}");
            assert!(count == 1 || built.len() <= batch_bytes);
            let h = batch::validate(&built).expect("valid batch");
            assert_eq!(h.record_count as usize, count);
            assert_eq!(h.base_offset, 0);
            assert_eq!((h.producer_id, h.base_sequence), (-1, -1));
            if count > 1 {
                let (more, _) =
                    records_per_batch(batch_bytes + record_bytes(count, value_len), value_len);
                assert_eq!(more, count + 1, "one more record fits with its bytes added");
            }
        }
    }

    #[test]
    fn varints_size_like_kafka() {
        assert_eq!(varint_bytes(0), 1);
        assert_eq!(varint_bytes(-1), 1);
        assert_eq!(varint_bytes(63), 1);
        assert_eq!(varint_bytes(64), 2);
        assert_eq!(varint_bytes(-65), 2);
        assert_eq!(varint_bytes(8191), 2);
        assert_eq!(varint_bytes(8192), 3);
    }
}
