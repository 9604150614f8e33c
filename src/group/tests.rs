//! group::tests: the membership state machine driven with explicit instants under tokio's paused
//! clock (joins, the leader's assignment, session expiry, rebalance timeout, static rejoin), and
//! the coordinator's error codes and persistence against a real broker in a temp dir.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use super::offsets::{Commit, Committer};
use super::*;

const SESSION: Duration = Duration::from_millis(6_000);
const REBALANCE: Duration = Duration::from_millis(10_000);

const INITIAL_DELAY: Duration = Duration::from_millis(1_000);

fn limits() -> Limits {
    Limits {
        members_per_group_max: 3,
        session_timeout_min: Duration::from_millis(1_000),
        session_timeout_max: Duration::from_millis(60_000),
        initial_rebalance_delay: Duration::ZERO,
    }
}

/// Limits whose first rebalance waits [`INITIAL_DELAY`] for more members.
fn delayed_limits() -> Limits {
    Limits {
        initial_rebalance_delay: INITIAL_DELAY,
        ..limits()
    }
}

fn join(member_id: &str, instance: Option<&str>, protocols: &[&str]) -> Join {
    Join {
        member_id: member_id.to_string(),
        instance_id: instance.map(str::to_string),
        client_id: "c".to_string(),
        client_host: "/".to_string(),
        session_timeout: SESSION,
        rebalance_timeout: REBALANCE,
        protocol_type: "consumer".to_string(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(p.to_string())))
            .collect(),
        require_known_member_id: false,
        supports_skip_assignment: false,
    }
}

/// The answer of a join step, now or once ready.
fn answer(step: JoinOutcome) -> JoinResult {
    match step {
        JoinOutcome::Step(Step::Now(r)) => r,
        JoinOutcome::Step(Step::Wait(mut rx)) => rx.try_recv().expect("join not answered yet"),
        JoinOutcome::MemberIdRequired(id) => panic!("member id required: {id}"),
    }
}

fn waiting(step: JoinOutcome) -> tokio::sync::oneshot::Receiver<JoinResult> {
    match step {
        JoinOutcome::Step(Step::Wait(rx)) => rx,
        _ => panic!("expected the join to wait"),
    }
}

fn sync_now(
    g: &mut Group,
    member: &str,
    generation: i32,
    a: Vec<(String, Bytes)>,
    now: Instant,
) -> SyncResult {
    match g.sync(member, None, generation, a, now) {
        Step::Now(r) => r,
        Step::Wait(mut rx) => rx.try_recv().expect("sync not answered yet"),
    }
}

// Proves the two-step join, protocol selection, the leader's assignment reaching a follower, a
// second member's join rebalancing the first, and the error codes of stale requests.
#[tokio::test(start_paused = true)]
async fn join_sync_rebalance_and_stale_requests() {
    let (l, t0) = (limits(), Instant::now());
    let mut g = Group::new("g");
    let required = g.join(
        Join {
            require_known_member_id: true,
            ..join("", None, &["range"])
        },
        &l,
        t0,
    );
    let JoinOutcome::MemberIdRequired(a) = required else {
        panic!("v4 join must require a member id")
    };
    let ja = answer(g.join(join(&a, None, &["range", "roundrobin"]), &l, t0)).unwrap();
    assert_eq!(
        (ja.generation, ja.leader.as_str(), ja.members.len()),
        (1, a.as_str(), 1)
    );
    assert_eq!(ja.protocol.as_deref(), Some("range"));
    let own = sync_now(
        &mut g,
        &a,
        1,
        vec![(a.clone(), Bytes::from_static(b"p0-5"))],
        t0,
    )
    .unwrap();
    assert_eq!(own.2, Bytes::from_static(b"p0-5"));
    assert_eq!(g.state, GroupState::Stable);

    // A second member: the group rebalances; the first learns it from its heartbeat.
    let t1 = t0 + Duration::from_secs(1);
    let mut rx_b = waiting(g.join(join("", None, &["roundrobin", "range"]), &l, t1));
    assert_eq!(
        g.heartbeat(&a, None, 1, t1),
        Err(ResponseError::RebalanceInProgress)
    );
    let ja = answer(g.join(join(&a, None, &["range", "roundrobin"]), &l, t1)).unwrap();
    let jb = rx_b.try_recv().unwrap().unwrap();
    assert_eq!((ja.generation, jb.generation), (2, 2));
    assert_eq!(jb.members.len(), 0, "only the leader gets the member list");
    assert_eq!(ja.members.len(), 2);
    // A follower's sync waits for the leader's.
    let Step::Wait(mut rx_sync) = g.sync(&jb.member_id, None, 2, vec![], t1) else {
        panic!("follower must wait")
    };
    assert_eq!(
        g.heartbeat(&a, None, 1, t1),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        g.heartbeat("nobody", None, 2, t1),
        Err(ResponseError::UnknownMemberId)
    );
    let assignments = vec![
        (a.clone(), Bytes::from_static(b"A")),
        (jb.member_id.clone(), Bytes::from_static(b"B")),
    ];
    sync_now(&mut g, &a, 2, assignments, t1).unwrap();
    assert_eq!(
        rx_sync.try_recv().unwrap().unwrap().2,
        Bytes::from_static(b"B")
    );
    // A member offering no common protocol is refused.
    let bad = answer(g.join(join("", None, &["sticky-only"]), &l, t1));
    assert_eq!(bad, Err(ResponseError::InconsistentGroupProtocol));
    // Session timeout out of bounds.
    let short = Join {
        session_timeout: Duration::from_millis(10),
        ..join("", None, &["range"])
    };
    assert_eq!(
        answer(g.join(short, &l, t1)),
        Err(ResponseError::InvalidSessionTimeout)
    );
}

// Proves a member that stops heartbeating is removed after its session timeout (and not before),
// the survivor is told to rejoin, and a rebalance waiting on a silent member ends at the
// rebalance timeout without it. Time moves with tokio's paused clock.
#[tokio::test(start_paused = true)]
async fn session_expiry_and_rebalance_timeout() {
    let l = delayed_limits();
    let mut g = Group::new("g");
    let t0 = Instant::now();
    let mut rx_a = waiting(g.join(join("", None, &["range"]), &l, t0));
    let mut rx_b = waiting(g.join(join("", None, &["range"]), &l, t0));
    g.tick(&l, t0);
    assert!(
        rx_a.try_recv().is_err(),
        "the first rebalance waits for the initial delay"
    );
    let t0 = t0 + INITIAL_DELAY;
    g.tick(&l, t0);
    let (ja, jb) = (
        rx_a.try_recv().unwrap().unwrap(),
        rx_b.try_recv().unwrap().unwrap(),
    );
    let leader = ja.leader.clone();
    let (a, b) = (ja.member_id, jb.member_id);
    let Step::Wait(_) = g.sync(&b, None, 1, vec![], t0) else {
        panic!()
    };
    sync_now(&mut g, &leader, 1, vec![], t0).unwrap();
    assert_eq!(g.state, GroupState::Stable);

    // The clock catches up with t0; from here only a heartbeats.
    tokio::time::advance(INITIAL_DELAY).await;
    tokio::time::advance(SESSION / 2).await;
    g.heartbeat(&a, None, 1, Instant::now()).unwrap();
    tokio::time::advance(SESSION / 2).await;
    g.tick(&l, Instant::now());
    assert_eq!(g.members.len(), 1, "b expired after its session timeout");
    assert_eq!(g.state, GroupState::PreparingRebalance);
    assert_eq!(
        g.heartbeat(&a, None, 1, Instant::now()),
        Err(ResponseError::RebalanceInProgress)
    );
    // a never rejoins: the rebalance ends at its timeout with nobody left.
    tokio::time::advance(REBALANCE).await;
    g.tick(&l, Instant::now());
    assert_eq!((g.state, g.members.len()), (GroupState::Empty, 0));
    assert_eq!(g.generation, 2);
    assert!(!g.members.contains_key(&b));
}

// Proves a static member that restarts (new JoinGroup without member id, same instance id) gets
// its assignment back in the same generation and the other member is not disturbed; the old
// member id is fenced.
#[tokio::test(start_paused = true)]
async fn static_member_rejoins_without_rebalance() {
    let l = delayed_limits();
    let mut g = Group::new("g");
    let t0 = Instant::now();
    let mut rx_a = waiting(g.join(join("", Some("i-a"), &["range"]), &l, t0));
    let mut rx_b = waiting(g.join(join("", Some("i-b"), &["range"]), &l, t0));
    g.tick(&l, t0);
    assert!(
        rx_a.try_recv().is_err(),
        "the first rebalance waits for the initial delay"
    );
    let t0 = t0 + INITIAL_DELAY;
    g.tick(&l, t0);
    let (ja, jb) = (
        rx_a.try_recv().unwrap().unwrap(),
        rx_b.try_recv().unwrap().unwrap(),
    );
    let (a, b) = (ja.member_id.clone(), jb.member_id.clone());
    assert_eq!(ja.leader, a, "first to join leads");
    let Step::Wait(_) = g.sync(&b, None, 1, vec![], t0) else {
        panic!()
    };
    let assignments = vec![
        (a.clone(), Bytes::from_static(b"A")),
        (b.clone(), Bytes::from_static(b"B")),
    ];
    sync_now(&mut g, &a, 1, assignments, t0).unwrap();

    let t1 = t0 + Duration::from_secs(2);
    let again = answer(g.join(join("", Some("i-b"), &["range"]), &l, t1)).unwrap();
    assert_eq!(again.generation, 1);
    assert_ne!(again.member_id, b);
    assert_eq!(g.state, GroupState::Stable);
    assert_eq!(
        sync_now(&mut g, &again.member_id, 1, vec![], t1).unwrap().2,
        Bytes::from_static(b"B")
    );
    assert_eq!(
        g.heartbeat(&a, None, 1, t1),
        Ok(()),
        "the other member keeps going"
    );
    assert_eq!(
        g.heartbeat(&b, Some("i-b"), 1, t1),
        Err(ResponseError::FencedInstanceId)
    );
}

// Proves a static *leader* that restarts keeps the group Stable too (Kafka's
// updateStaticMemberAndRebalance); before JoinGroup v9 its answer names the old leader id and no
// members, so it does not re-assign; it syncs as a follower and gets its stored assignment, the
// other member is not disturbed, the old id is fenced.
#[tokio::test(start_paused = true)]
async fn static_leader_rejoins_without_rebalance() {
    let l = limits();
    let t0 = Instant::now();
    let (mut g, a, b) = stable_static_pair(&l, t0);

    let t1 = t0 + Duration::from_secs(2);
    let again = answer(g.join(join("", Some("i-a"), &["range"]), &l, t1)).unwrap();
    assert_eq!(
        g.state,
        GroupState::Stable,
        "no rebalance for a static leader"
    );
    assert_eq!(again.generation, 2);
    assert_ne!(again.member_id, a);
    assert_eq!(
        again.leader, a,
        "the old leader id: the new member must not assign"
    );
    assert!(again.members.is_empty());
    assert_eq!(
        sync_now(&mut g, &again.member_id, 2, vec![], t1).unwrap().2,
        Bytes::from_static(b"A")
    );
    assert_eq!(g.heartbeat(&b, Some("i-b"), 2, t1), Ok(()));
    assert_eq!(
        g.heartbeat(&a, Some("i-a"), 2, t1),
        Err(ResponseError::FencedInstanceId)
    );
    // The restarted leader is still the leader of the next rebalance.
    assert_eq!(g.leader.as_deref(), Some(again.member_id.as_str()));
}

/// A Stable group of two static members at generation 2: `a` (instance i-a) leads and holds
/// assignment "A", `b` (i-b) holds "B".
fn stable_static_pair(l: &Limits, t0: Instant) -> (Group, String, String) {
    let mut g = Group::new("g");
    let ja = answer(g.join(join("", Some("i-a"), &["range"]), l, t0)).unwrap();
    let a = ja.member_id.clone();
    sync_now(
        &mut g,
        &a,
        1,
        vec![(a.clone(), Bytes::from_static(b"A1"))],
        t0,
    )
    .unwrap();
    let mut rx_b = waiting(g.join(join("", Some("i-b"), &["range"]), l, t0));
    let ja = answer(g.join(join(&a, Some("i-a"), &["range"]), l, t0)).unwrap();
    let jb = rx_b.try_recv().unwrap().unwrap();
    let b = jb.member_id.clone();
    assert_eq!((ja.leader.as_str(), ja.generation), (a.as_str(), 2));
    let Step::Wait(_) = g.sync(&b, None, 2, vec![], t0) else {
        panic!()
    };
    let assignments = vec![
        (a.clone(), Bytes::from_static(b"A")),
        (b.clone(), Bytes::from_static(b"B")),
    ];
    sync_now(&mut g, &a, 2, assignments, t0).unwrap();
    (g, a, b)
}

// Proves KIP-814 for JoinGroup v9+: a restarted static leader of a Stable group is answered as
// the leader (its new id), with every member and skip_assignment, so it watches metadata again
// without re-assigning; nothing rebalances and its sync returns the stored assignment. v5-v8
// keep the old-leader answer (static_leader_rejoins_without_rebalance).
#[tokio::test(start_paused = true)]
async fn static_leader_rejoins_with_skip_assignment_on_v9() {
    let l = limits();
    let t0 = Instant::now();
    let (mut g, a, b) = stable_static_pair(&l, t0);

    let t1 = t0 + Duration::from_secs(2);
    let v9 = Join {
        supports_skip_assignment: true,
        ..join("", Some("i-a"), &["range"])
    };
    let again = answer(g.join(v9, &l, t1)).unwrap();
    assert_eq!(g.state, GroupState::Stable, "no rebalance");
    assert_eq!(again.generation, 2);
    assert_eq!(again.leader, again.member_id, "it is told it leads");
    assert!(again.skip_assignment);
    let mut members: Vec<&str> = again.members.iter().map(|m| m.0.as_str()).collect();
    members.sort_unstable();
    let mut expected = vec![again.member_id.as_str(), b.as_str()];
    expected.sort_unstable();
    assert_eq!(members, expected);
    assert_eq!(
        sync_now(&mut g, &again.member_id, 2, vec![], t1).unwrap().2,
        Bytes::from_static(b"A")
    );
    assert_eq!(g.heartbeat(&b, Some("i-b"), 2, t1), Ok(()));
    assert_eq!(
        g.heartbeat(&a, Some("i-a"), 2, t1),
        Err(ResponseError::FencedInstanceId)
    );

    // A v9 static follower that restarts is still answered as a follower.
    let follower = Join {
        supports_skip_assignment: true,
        ..join("", Some("i-b"), &["range"])
    };
    let fb = answer(g.join(follower, &l, t1)).unwrap();
    assert_eq!(g.state, GroupState::Stable);
    assert_eq!(fb.leader, again.member_id);
    assert!(fb.members.is_empty() && !fb.skip_assignment);
}

fn open_broker(dir: &std::path::Path) -> Broker {
    let config = crate::config::Config {
        data_dir: dir.to_path_buf(),
        group_initial_rebalance_delay_ms: 0,
        offsets_topic_num_partitions: 3,
        ..crate::config::Config::default()
    };
    crate::broker::tests::open_with(config)
}

fn commit_of(topic: &str, partition: i32, offset: i64) -> Commit {
    Commit {
        topic: topic.into(),
        partition,
        offset,
        leader_epoch: -1,
        metadata: Some("m".into()),
    }
}

// Proves the coordinator's refusals carry Kafka's codes (group id too long, unknown member, wrong
// generation, commit to a partition that does not exist), that an unknown group's OffsetFetch is
// -1 without error, and that commits and group metadata survive a restart through
// __consumer_offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes_and_offsets_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path());
    broker
        .create_topic("t", 2, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let long = "g".repeat(GROUP_ID_BYTES_MAX + 1);
    let err = broker
        .groups
        .join(&broker, &long, join("", None, &["range"]))
        .await;
    assert_eq!(err, Err(JoinError::Error(ResponseError::InvalidGroupId)));
    let fetched = broker
        .groups
        .fetch_offsets(&broker, "never", Some(vec![("t".into(), 0)]))
        .await
        .unwrap();
    assert_eq!(fetched, vec![(("t".to_string(), 0), None)]);

    let a = broker
        .groups
        .join(&broker, "g", join("", None, &["range"]))
        .await
        .unwrap();
    let member = |generation| Committer {
        member_id: &a.member_id,
        instance_id: None,
        generation,
    };
    let r = broker
        .groups
        .commit(
            &broker,
            "g",
            member(a.generation + 1),
            vec![commit_of("t", 0, 5)],
        )
        .await;
    assert_eq!(r, vec![Err(ResponseError::IllegalGeneration)]);
    // Before the leader's sync the group is completing its rebalance.
    let r = broker
        .groups
        .commit(
            &broker,
            "g",
            member(a.generation),
            vec![commit_of("t", 0, 5)],
        )
        .await;
    assert_eq!(r, vec![Err(ResponseError::RebalanceInProgress)]);
    broker
        .groups
        .sync(&broker, "g", &a.member_id, None, a.generation, vec![])
        .await
        .unwrap();
    let stranger = Committer {
        member_id: "x",
        instance_id: None,
        generation: a.generation,
    };
    let r = broker
        .groups
        .commit(&broker, "g", stranger, vec![commit_of("t", 0, 5)])
        .await;
    assert_eq!(r, vec![Err(ResponseError::UnknownMemberId)]);
    let r = broker
        .groups
        .commit(
            &broker,
            "g",
            member(a.generation),
            vec![
                commit_of("t", 0, 5),
                commit_of("t", 9, 1),
                commit_of("nope", 0, 1),
            ],
        )
        .await;
    assert_eq!(
        r,
        vec![
            Ok(()),
            Err(ResponseError::UnknownTopicOrPartition),
            Err(ResponseError::UnknownTopicOrPartition)
        ]
    );
    let simple = Committer {
        member_id: "",
        instance_id: None,
        generation: -1,
    };
    assert_eq!(
        broker
            .groups
            .commit(&broker, "solo", simple, vec![commit_of("t", 1, 7)])
            .await,
        vec![Ok(())]
    );
    assert_eq!(
        broker.groups.delete_group(&broker, "g").await,
        Err(ResponseError::NonEmptyGroup)
    );
    assert_eq!(
        broker.groups.delete_group(&broker, "zzz").await,
        Err(ResponseError::GroupIdNotFound)
    );
    broker.shutdown().await;
    drop(broker);

    let broker = open_broker(dir.path());
    let all = broker
        .groups
        .fetch_offsets(&broker, "g", None)
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].1.as_ref().map(|v| (v.offset, v.metadata.clone())),
        Some((5, Some("m".into())))
    );
    let solo = broker
        .groups
        .fetch_offsets(&broker, "solo", None)
        .await
        .unwrap();
    assert_eq!(solo[0].1.as_ref().map(|v| v.offset), Some(7));
    // The member came back from the metadata record, in its generation.
    assert_eq!(
        broker.groups.state_of("g"),
        Some((GroupState::Stable, a.generation, 1))
    );
    broker.groups.delete_group(&broker, "solo").await.unwrap();
    broker.shutdown().await;
    drop(broker);
    let broker = open_broker(dir.path());
    assert!(
        broker
            .groups
            .fetch_offsets(&broker, "solo", None)
            .await
            .unwrap()
            .is_empty()
    );
    broker.shutdown().await;
}

// Proves offset commits of groups on different `__consumer_offsets` partitions do not wait for
// each other: with one partition's store lock held (as during a slow fsync), a commit of a group
// on another partition completes, while one on the held partition waits for it. A single
// node-wide store lock fails the first half.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_on_different_offsets_partitions_do_not_wait_for_each_other() {
    const COMMIT_WAIT: Duration = Duration::from_secs(5);
    const BLOCKED_WAIT: Duration = Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path());
    broker
        .create_topic("t", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let partitions = broker.config.offsets_topic_num_partitions;
    let names: Vec<String> = (0..50).map(|i| format!("group-{i}")).collect();
    let held = &names[0];
    let held_partition = store::partition_for(held, partitions);
    let same = names[1..]
        .iter()
        .find(|n| store::partition_for(n, partitions) == held_partition)
        .unwrap();
    let other = names[1..]
        .iter()
        .find(|n| store::partition_for(n, partitions) != held_partition)
        .unwrap();
    let simple = || Committer {
        member_id: "",
        instance_id: None,
        generation: -1,
    };
    let commit = |group: &str| {
        let broker = &broker;
        let group = group.to_string();
        async move {
            broker
                .groups
                .commit(broker, &group, simple(), vec![commit_of("t", 0, 1)])
                .await
        }
    };
    // Creates __consumer_offsets and loads the coordinator before the lock is taken.
    assert_eq!(commit(held).await, vec![Ok(())]);
    let guard = broker.groups.store_locks.lock(&broker, held).await;
    let done = tokio::time::timeout(COMMIT_WAIT, commit(other)).await;
    assert_eq!(
        done.expect("a commit on another partition waited for the held lock"),
        vec![Ok(())]
    );
    let blocked = tokio::time::timeout(BLOCKED_WAIT, commit(same)).await;
    assert!(
        blocked.is_err(),
        "a commit on the held partition went ahead"
    );
    drop(guard);
    assert_eq!(commit(same).await, vec![Ok(())]);
    broker.shutdown().await;
}
