//! client::consumer: reads a topic's partitions from given offsets with Fetch, counting records
//! from the v2 batch headers (no record decoding: the benchmark needs counts and bytes, and the
//! headers are CRC-checked by `protocol::batch` on the way). Used by `bench::consume`.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};

use super::{Client, ClientError};
use crate::protocol::batch::{self, BatchError};

/// Fetch v12: flexible encoding, topics by name (v13 switches to topic ids).
pub const FETCH_VERSION: i16 = 12;
/// How long the broker may hold a fetch that has no data yet (long poll).
pub const FETCH_WAIT_MS_MAX: i32 = 500;
/// Caps on one response and on one partition's share of it (Kafka's consumer defaults).
pub const FETCH_BYTES_MAX: i32 = 50 * 1024 * 1024;
pub const PARTITION_FETCH_BYTES_MAX: i32 = 1024 * 1024;
/// A consumer is not a replica.
const CONSUMER_REPLICA_ID: i32 = -1;

/// What one fetch brought: whole records past the requested offsets, and their batch bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    pub records: u64,
    pub batch_bytes: u64,
}

/// A consumer's Fetch of `topic` from per-partition offsets (index = partition), outside any
/// fetch session. Also what tests send to the broker.
pub fn fetch_request(
    topic: TopicName,
    offsets: &[i64],
    partition_max_bytes: i32,
    max_bytes: i32,
    max_wait_ms: i32,
    min_bytes: i32,
) -> FetchRequest {
    let partitions = offsets
        .iter()
        .enumerate()
        .map(|(p, &offset)| {
            FetchPartition::default()
                .with_partition(p as i32)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(partition_max_bytes)
        })
        .collect();
    FetchRequest::default()
        .with_replica_id(BrokerId(CONSUMER_REPLICA_ID))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic)
                .with_partitions(partitions),
        ])
}

/// Reads `topic` from per-partition offsets (index = partition), advancing them.
pub struct Consumer {
    client: Client,
    topic: TopicName,
    offsets: Vec<i64>,
}

impl Consumer {
    pub fn new(client: Client, topic: TopicName, offsets: Vec<i64>) -> Consumer {
        Consumer {
            client,
            topic,
            offsets,
        }
    }

    pub fn offsets(&self) -> &[i64] {
        &self.offsets
    }

    /// One Fetch of every partition at its current offset.
    pub async fn fetch(&mut self) -> Result<Fetched, ClientError> {
        let request = fetch_request(
            self.topic.clone(),
            &self.offsets,
            PARTITION_FETCH_BYTES_MAX,
            FETCH_BYTES_MAX,
            FETCH_WAIT_MS_MAX,
            1,
        );
        let response = self.client.call(&request, FETCH_VERSION).await?;
        if let Some(e) = ResponseError::try_from_code(response.error_code) {
            return Err(ClientError::Broker(format!("fetch failed: {e:?}")));
        }
        let mut fetched = Fetched::default();
        for topic in &response.responses {
            for p in &topic.partitions {
                if let Some(e) = ResponseError::try_from_code(p.error_code) {
                    return Err(ClientError::Broker(format!(
                        "fetch of partition {} failed: {e:?}",
                        p.partition_index
                    )));
                }
                let offset = usize::try_from(p.partition_index)
                    .ok()
                    .and_then(|i| self.offsets.get_mut(i))
                    .ok_or_else(|| {
                        ClientError::Broker("fetch answered an unknown partition".into())
                    })?;
                let records = p.records.as_deref().unwrap_or_default();
                let got = count_records(records, offset)?;
                fetched.records += got.records;
                fetched.batch_bytes += got.batch_bytes;
            }
        }
        Ok(fetched)
    }
}

/// Counts the records at or past `*offset` in the whole batches of `records` and moves `*offset`
/// past the last one. A partial batch at the end (the response's size cap cut it) is not an error:
/// the next fetch starts at it.
pub fn count_records(records: &[u8], offset: &mut i64) -> Result<Fetched, ClientError> {
    let mut fetched = Fetched::default();
    for item in batch::iter_batches(records) {
        let (h, range) = match item {
            Ok(b) => b,
            Err(BatchError::Truncated { .. }) => break,
            Err(e) => return Err(ClientError::Broker(format!("fetched a bad batch: {e}"))),
        };
        let next = h.last_offset() + 1;
        if next <= *offset {
            continue;
        }
        fetched.records += (next - h.base_offset.max(*offset)) as u64;
        fetched.batch_bytes += range.len() as u64;
        *offset = next;
    }
    Ok(fetched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::producer::encode_batch;
    use bytes::{Bytes, BytesMut};

    #[test]
    fn counts_whole_batches_past_the_offset_and_stops_at_a_partial_one() {
        // Three batches of 5 records at offsets 0, 5, 10, then half of a fourth: from offset 7 the
        // count is 3 (7..10) + 5, the offset lands on 15, and the partial tail is left for later.
        let value = Bytes::from_static(b"v");
        let mut all = BytesMut::new();
        for base in [0i64, 5, 10, 15] {
            let mut b = BytesMut::from(&encode_batch(&value, 5, 0).unwrap()[..]);
            batch::patch_base_offset(&mut b, base);
            all.extend_from_slice(&b);
        }
        let whole = all.len() * 3 / 4;
        let mut offset = 7;
        let got = count_records(&all[..whole + 10], &mut offset).unwrap();
        assert_eq!(got.records, 8);
        assert_eq!(offset, 15);
        assert_eq!(got.batch_bytes as usize, whole / 3 * 2);
    }
}
