//! meta::store::tests: openraft's storage conformance suite over real files, postcard
//! round-trips of every openraft type the store writes, and the record framing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::files::{LogRecord, LogRecordRef};
use super::record::{self, Parsed};
use super::*;
use crate::io::StdStorage;
use crate::meta::command::MetadataCommand;
use crate::meta::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, Vote};

/// Fresh stores over temporary directories (the guard removes the directory).
struct TempStores;

impl StoreBuilder<crate::meta::types::TypeConfig, LogStore, StateMachineStore, tempfile::TempDir>
    for TempStores
{
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, _) = tokio::sync::watch::channel(Arc::default());
        // Tiny segments, so the suite's logs span several files and purges remove some.
        let config = StoreConfig { segment_bytes: 64 };
        let (log, sm) = open_with(
            &dir.path().join("meta/raft"),
            Arc::new(StdStorage),
            tx,
            config,
        )
        .expect("open");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_conformance_suite() {
    // Proves the store meets openraft's storage contract: log state, reads, purge, truncate,
    // vote, committed re-apply, apply, snapshot build and transfer (openraft's own suite).
    Suite::test_all(TempStores).expect("openraft storage suite");
}

pub(super) fn log_id(term: u64, node: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

pub(super) fn membership(voters: &[u64]) -> Membership<u64, BasicNode> {
    let nodes: BTreeMap<u64, BasicNode> = voters
        .iter()
        .map(|&id| (id, BasicNode::new(format!("127.0.0.1:{}", 9190 + id))))
        .collect();
    let set: BTreeSet<u64> = voters.iter().copied().collect();
    Membership::new(vec![set], nodes)
}

pub(super) fn normal(term: u64, index: u64, cmd: MetadataCommand) -> Entry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
    let path = Path::new("round-trip");
    let bytes = record::frame(path, value).expect("frame");
    let got: T = record::single(path, &bytes, false).expect("decode");
    assert_eq!(&got, value);
}

#[test]
fn openraft_types_round_trip_through_postcard() {
    // Proves postcard encodes and decodes (equal values back) every openraft type the store
    // writes: none uses serde's flatten/untagged/skip_serializing_if, which postcard breaks on.
    let m = membership(&[1, 2, 3]);
    let entries = [
        Entry {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(2, 3, 2),
            payload: EntryPayload::Membership(m.clone()),
        },
        normal(
            2,
            3,
            MetadataCommand::DeleteTopic {
                name: "orders".into(),
                id: None,
            },
        ),
    ];
    for e in &entries {
        let bytes = record::frame(Path::new("e"), e).expect("frame");
        let got: Entry = record::single(Path::new("e"), &bytes, false).expect("decode");
        assert_eq!(got.log_id, e.log_id);
        assert_eq!(format!("{:?}", got.payload), format!("{:?}", e.payload));
    }
    let mut vote = Vote::new(7, 2);
    round_trip(&vote);
    vote.commit();
    round_trip(&vote);
    round_trip(&log_id(3, 2, 99));
    round_trip(&Some(log_id(3, 2, 99)));
    round_trip(&None::<LogId>);
    let stored = StoredMembership::new(Some(log_id(2, 3, 2)), m.clone());
    round_trip(&stored);
    round_trip(&SnapshotMeta {
        last_log_id: Some(log_id(2, 3, 5)),
        last_membership: stored,
        snapshot_id: "2-3-5".into(),
    });
    round_trip(&SnapshotMeta::default());
}

#[test]
fn log_record_by_reference_encodes_as_owned() {
    // Proves the borrowed form the store writes decodes as the owned LogRecord it reads.
    let entries = vec![normal(
        1,
        4,
        MetadataCommand::UnregisterBroker { node_id: 3 },
    )];
    let path = Path::new("r");
    let bytes = record::frame(path, &LogRecordRef::Entries(&entries)).expect("frame");
    match record::single::<LogRecord>(path, &bytes, false).expect("decode") {
        LogRecord::Entries(got) => assert_eq!(got[0].log_id, entries[0].log_id),
        other => panic!("got {other:?}"),
    }
    let bytes = record::frame(path, &LogRecordRef::Truncate { from: 9 }).expect("frame");
    assert!(matches!(
        record::single::<LogRecord>(path, &bytes, false),
        Ok(LogRecord::Truncate { from: 9 })
    ));
}

#[test]
fn framing_catches_damage_and_finds_later_records() {
    // Proves the byte layout (length covers version + payload, CRC over the same), that any
    // flipped byte makes the record bad, a newer version is reported as such, and the byte scan
    // finds a valid record behind garbage but nothing in zeros.
    let path = Path::new("f");
    let rec = record::frame(path, &12345u64).expect("frame");
    let len = u32::from_be_bytes(rec[0..4].try_into().expect("4")) as usize;
    assert_eq!(len, rec.len() - 8);
    assert_eq!(rec[8], FORMAT_VERSION);
    let crc = u32::from_be_bytes(rec[4..8].try_into().expect("4"));
    assert_eq!(crc, crate::protocol::batch::crc32c(&rec[8..]));
    for i in 0..rec.len() {
        let mut bad = rec.clone();
        bad[i] ^= 0x40;
        assert!(
            !matches!(record::parse(&bad, 0), Parsed::Record { .. }),
            "flip at {i}"
        );
    }
    let mut newer = rec.clone();
    newer[8] = FORMAT_VERSION + 1;
    let crc = crate::protocol::batch::crc32c(&newer[8..]);
    newer[4..8].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(
        record::parse(&newer, 0),
        Parsed::Unsupported {
            version: FORMAT_VERSION + 1
        }
    );
    let mut file = vec![0xA5; 37];
    file.extend_from_slice(&rec);
    assert_eq!(record::valid_record_after(&file, 0), Some(37));
    assert_eq!(record::valid_record_after(&[0u8; 300], 0), None);
    assert_eq!(record::valid_record_after(&rec[..rec.len() - 1], 0), None);
}
