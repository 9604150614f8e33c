//! log::tests_epochs: leader epochs and divergence on real files: the acceptance scenario of a
//! leader change with divergent logs (KIP-101/KIP-279), an old leader returning with
//! unreplicated records after a restart, and the epoch cache surviving a crash that lost its
//! file's last write.

use super::tests::{config, open};
use super::tests_replica::{fill, log_bytes, replica_bytes, replicate};

#[tokio::test]
async fn divergent_logs_after_a_leader_change_converge_on_the_new_leaders_bytes() {
    // Proves acceptance item 9: A (epoch 1) has 0..10, B replicated them; A appends 10..15
    // unreplicated; B leads at epoch 2 and appends 10..13; B answers A's epoch-1 query with
    // (1, 10); A truncates to 10 and replicates B's 10..13: both logs are then identical bytes.
    let (ad, bd) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let a = open(ad.path(), config());
    let b = open(bd.path(), config());
    fill(&a, 5, 2, 1).await;
    replicate(&a, &b, 0).await;
    fill(&a, 1, 5, 1).await;
    assert_eq!((a.log_end_offset(), b.log_end_offset()), (15, 10));
    b.assign_epoch(2, b.log_end_offset()).await.expect("assign");
    fill(&b, 1, 3, 2).await;
    assert_eq!(b.epoch_entries(), vec![(1, 0), (2, 10)]);
    let (epoch, end) = b.end_offset_for_epoch(a.latest_epoch().expect("epoch"));
    assert_eq!((epoch, end), (1, 10));
    a.truncate_to(end).await.expect("truncate");
    assert_eq!((a.log_end_offset(), a.durable_end()), (10, 10));
    assert_eq!(a.epoch_entries(), vec![(1, 0)]);
    replicate(&b, &a, 10).await;
    assert_eq!(a.log_end_offset(), 13);
    assert_eq!(log_bytes(&a).await, log_bytes(&b).await);
    assert_eq!(a.epoch_entries(), b.epoch_entries());
}

#[tokio::test]
async fn a_returning_old_leader_hides_and_then_drops_its_unreplicated_records() {
    // Proves an old leader restarting with records its followers never got: its checkpointed
    // HW hides them from consumers after the restart, the new leader's epoch answer makes it
    // truncate them, and it then follows the new leader (two epochs later) to identical bytes.
    let (ad, bd) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let b = open(bd.path(), config());
    {
        let a = open(ad.path(), config());
        a.set_high_watermark_cap(0);
        fill(&a, 4, 1, 3).await;
        replicate(&a, &b, 0).await;
        a.set_high_watermark_cap(b.durable_end());
        fill(&a, 3, 1, 3).await;
        assert_eq!((a.high_watermark(), a.log_end_offset()), (4, 7));
        a.flush().await.expect("clean shutdown");
    }
    b.assign_epoch(4, 4).await.expect("assign");
    fill(&b, 1, 2, 4).await;
    b.assign_epoch(5, 6).await.expect("assign");
    fill(&b, 2, 1, 5).await;
    let a = open(ad.path(), config());
    assert_eq!((a.high_watermark(), a.log_end_offset()), (4, 7));
    assert!(
        a.read(4, 1 << 20).await.expect("read").records.is_empty(),
        "unreplicated records stay hidden after the restart"
    );
    assert_eq!(a.latest_epoch(), Some(3));
    let (epoch, end) = b.end_offset_for_epoch(3);
    assert_eq!((epoch, end), (3, 4));
    a.truncate_to(end).await.expect("truncate");
    a.set_high_watermark_cap(b.high_watermark());
    replicate(&b, &a, 4).await;
    a.set_high_watermark_cap(b.high_watermark());
    assert_eq!(log_bytes(&a).await, log_bytes(&b).await);
    assert_eq!(a.high_watermark(), 8);
    assert_eq!(a.epoch_entries(), vec![(3, 0), (4, 4), (5, 6)]);
    assert_eq!(a.end_offset_for_epoch(4), (4, 6));
}

#[tokio::test]
async fn the_epoch_cache_is_rebuilt_from_batch_headers_after_losing_its_last_write() {
    // Proves the open path: a checkpoint file that missed its newest entry (a crash lost the
    // write), or is gone or damaged, is extended from the batch headers; entries starting past
    // the log end are dropped; the file is rewritten to match.
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("leader-epoch-checkpoint");
    let old = {
        let p = open(dir.path(), config());
        fill(&p, 2, 2, 1).await;
        assert!(
            !file.exists(),
            "a leader append's entry waits for a roll or flush"
        );
        p.flush().await.expect("flush");
        let old = std::fs::read(&file).expect("epoch file");
        fill(&p, 2, 2, 3).await;
        assert_eq!(p.epoch_entries(), vec![(1, 0), (3, 4)]);
        old
    };
    std::fs::write(&file, &old).expect("lose the last write");
    {
        let p = open(dir.path(), config());
        assert_eq!(p.epoch_entries(), vec![(1, 0), (3, 4)]);
    }
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        "0\n2\n1 0\n3 4\n"
    );
    for damaged in ["garbage", ""] {
        std::fs::write(&file, damaged).expect("damage");
        let p = open(dir.path(), config());
        assert_eq!(p.epoch_entries(), vec![(1, 0), (3, 4)], "{damaged:?}");
    }
    std::fs::write(&file, "0\n3\n1 0\n3 4\n7 100\n").expect("entry past the end");
    let p = open(dir.path(), config());
    assert_eq!(p.epoch_entries(), vec![(1, 0), (3, 4)]);
    assert_eq!(p.end_offset_for_epoch(2), (1, 4));
    assert_eq!(p.end_offset_for_epoch(3), (3, 8));
}

#[tokio::test]
async fn replica_reads_and_epoch_queries_serve_a_follower_fetch_loop() {
    // Proves a follower that asks the epoch end of its own latest epoch before each fetch gets
    // the leader's LEO while the epochs agree, so it never truncates records it shares.
    let (ld, fd) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let leader = open(ld.path(), config());
    let follower = open(fd.path(), config());
    for round in 0..3 {
        fill(&leader, 2, 1, 7).await;
        if let Some(epoch) = follower.latest_epoch() {
            let (e, end) = leader.end_offset_for_epoch(epoch);
            assert_eq!((e, end), (7, leader.log_end_offset()), "round {round}");
            follower.truncate_to(end).await.expect("no-op truncate");
        }
        let from = follower.log_end_offset();
        assert!(!replica_bytes(&leader, from).await.is_empty());
        replicate(&leader, &follower, from).await;
    }
    assert_eq!(log_bytes(&follower).await, log_bytes(&leader).await);
}
