//! log::tests_producers: idempotent producer state through `Partition::append` on real files:
//! retries answered with their original offsets and not written, sequence gaps and stale epochs
//! refused with nothing written, and the state rebuilt from the log when a partition reopens.

use bytes::Bytes;

use super::tests::{config, open, read_all};
use super::*;
use crate::protocol::batch::test_batches::{batch, refresh_crc};
use crate::protocol::batch::{BASE_SEQUENCE_AT, PRODUCER_EPOCH_AT, PRODUCER_ID_AT};

/// One batch of `n` records from producer `pid` at `epoch`, first sequence `seq`.
pub(super) fn idem(n: usize, pid: i64, epoch: i16, seq: i32) -> Bytes {
    let mut b = batch(n, 1000, 10);
    b[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&pid.to_be_bytes());
    b[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&epoch.to_be_bytes());
    b[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&seq.to_be_bytes());
    refresh_crc(&mut b);
    Bytes::from(b)
}

/// (base offset, last offset) an append got, or panics.
pub(super) async fn ok(p: &Partition, records: Bytes) -> (i64, i64) {
    let a = p.append(records, 0).await.expect("append");
    (a.base_offset, a.last_offset)
}

/// The original offsets a duplicate was answered with, or panics.
pub(super) async fn dup(p: &Partition, records: Bytes) -> (i64, i64) {
    match p.append(records, 0).await {
        Err(LogError::DuplicateSequence { original, .. }) => {
            (original.base_offset, original.last_offset)
        }
        other => panic!("expected a duplicate, got {other:?}"),
    }
}

#[tokio::test]
async fn retried_batch_gets_its_original_offsets_and_is_not_written() {
    // Proves a batch sent again (same producer, epoch, sequences) is answered with the offsets of
    // its first append, whichever of the last five batches it is, and adds no byte to the log.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = open(dir.path(), config());
    assert_eq!(ok(&p, idem(3, 7, 0, 0)).await, (0, 2));
    assert_eq!(ok(&p, b_plain()).await, (3, 3));
    assert_eq!(ok(&p, idem(2, 7, 0, 3)).await, (4, 5));
    let (end, size) = (p.log_end_offset(), p.size_bytes());
    assert_eq!(dup(&p, idem(3, 7, 0, 0)).await, (0, 2));
    assert_eq!(dup(&p, idem(2, 7, 0, 3)).await, (4, 5));
    assert_eq!((p.log_end_offset(), p.size_bytes()), (end, size));
    assert_eq!(read_all(&p).await, [(0, 2), (3, 3), (4, 5)]);
    // Two batches of one producer in one request are checked in order, as if appended one by one.
    let two = Bytes::from([idem(1, 7, 0, 5), idem(1, 7, 0, 6)].concat());
    assert_eq!(ok(&p, two).await, (6, 7));
    assert_eq!(dup(&p, idem(1, 7, 0, 6)).await, (7, 7));
}

/// A batch without a producer id (a non-idempotent producer): never checked.
fn b_plain() -> Bytes {
    Bytes::from(batch(1, 1000, 10))
}

#[tokio::test]
async fn sequence_gap_is_refused_and_writes_nothing() {
    // Proves a base sequence that skips ahead is OutOfOrderSequence naming the expected one, and
    // that a request whose second batch has a gap writes neither batch nor changes the state.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = open(dir.path(), config());
    ok(&p, idem(3, 7, 0, 0)).await;
    let size = p.size_bytes();
    assert!(matches!(
        p.append(idem(1, 7, 0, 5), 0).await,
        Err(LogError::OutOfOrderSequence {
            producer_id: 7,
            sequence: 5,
            expected: 3,
            ..
        })
    ));
    let mixed = Bytes::from([idem(1, 7, 0, 3), idem(1, 7, 0, 9)].concat());
    assert!(matches!(
        p.append(mixed, 0).await,
        Err(LogError::OutOfOrderSequence { sequence: 9, .. })
    ));
    assert_eq!((p.log_end_offset(), p.size_bytes()), (3, size));
    assert_eq!(ok(&p, idem(1, 7, 0, 3)).await, (3, 3));
}

#[tokio::test]
async fn epochs_fence_old_producers_and_restart_sequences() {
    // Proves a stale epoch is InvalidProducerEpoch, a newer epoch is accepted only from sequence
    // 0 (and then fences the old one), and an unknown producer may start at any sequence (Kafka's
    // behaviour since 2.5, for state lost to retention).
    let dir = tempfile::tempdir().expect("tempdir");
    let p = open(dir.path(), config());
    ok(&p, idem(2, 7, 3, 0)).await;
    assert!(matches!(
        p.append(idem(1, 7, 2, 2), 0).await,
        Err(LogError::InvalidProducerEpoch {
            producer_id: 7,
            epoch: 2,
            current: 3
        })
    ));
    assert!(matches!(
        p.append(idem(1, 7, 4, 2), 0).await,
        Err(LogError::OutOfOrderSequence { expected: 0, .. })
    ));
    assert_eq!(ok(&p, idem(1, 7, 4, 0)).await, (2, 2));
    assert!(matches!(
        p.append(idem(1, 7, 3, 2), 0).await,
        Err(LogError::InvalidProducerEpoch { current: 4, .. })
    ));
    assert_eq!(ok(&p, idem(1, 8, 0, 42)).await, (3, 3));
    assert_eq!(ok(&p, idem(1, 8, 0, 43)).await, (4, 4));
}

#[tokio::test]
async fn sequences_wrap_from_i32_max_to_zero() {
    // Proves a batch whose sequences pass i32::MAX (MAX-1, MAX, 0) ends at the wrapped sequence
    // 0 and the next batch must continue from 1.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = open(dir.path(), config());
    ok(&p, idem(3, 7, 0, i32::MAX - 1)).await;
    assert_eq!(dup(&p, idem(3, 7, 0, i32::MAX - 1)).await, (0, 2));
    assert!(matches!(
        p.append(idem(1, 7, 0, 0), 0).await,
        Err(LogError::OutOfOrderSequence { expected: 1, .. })
    ));
    assert_eq!(ok(&p, idem(1, 7, 0, 1)).await, (3, 3));
}

#[tokio::test]
async fn state_is_rebuilt_on_reopen_across_segments() {
    // Proves the state survives a restart: after reopening (state rebuilt from batch headers,
    // over several segments), a replay is still a duplicate with its original offsets, a gap is
    // still refused, a stale epoch still fenced, and the next sequence is accepted.
    let dir = tempfile::tempdir().expect("tempdir");
    let small = LogConfig {
        segment_bytes_max: 300,
        ..config()
    };
    {
        let p = open(dir.path(), small.clone());
        for i in 0..6 {
            ok(&p, idem(2, 7, 1, 2 * i)).await;
            ok(&p, idem(1, 9, 0, i)).await;
        }
        assert!(
            p.shared.lock().segments.len() > 2,
            "segments must have rolled"
        );
    }
    let p = open(dir.path(), small);
    assert_eq!(dup(&p, idem(2, 7, 1, 10)).await, (15, 16));
    assert_eq!(dup(&p, idem(1, 9, 0, 5)).await, (17, 17));
    assert!(matches!(
        p.append(idem(1, 9, 0, 7), 0).await,
        Err(LogError::OutOfOrderSequence { expected: 6, .. })
    ));
    assert!(matches!(
        p.append(idem(1, 7, 0, 12), 0).await,
        Err(LogError::InvalidProducerEpoch { current: 1, .. })
    ));
    assert_eq!(ok(&p, idem(1, 7, 1, 12)).await, (18, 18));
    assert_eq!(p.log_end_offset(), 19);
}

#[test]
fn forgets_least_recent_producers_past_the_cap() {
    // Proves the per-partition producer map stays within PRODUCERS_MAX, evicting the producer
    // whose last batch is oldest.
    let mut producers = producers::Producers::default();
    for pid in 0..(producers::PRODUCERS_MAX as i64 + 3) {
        let raw = idem(1, pid, 0, 0);
        let batches = batch::split(&raw).expect("split");
        match producers.check(&batches, pid).expect("check") {
            producers::Checked::Append { updates } => producers.commit(updates),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(producers.len(), producers::PRODUCERS_MAX);
    assert!(producers.entry(0).is_none() && producers.entry(2).is_none());
    assert!(producers.entry(3).is_some());
}
