//! meta::image elections: new partitions' ISR, fencing and controlled shutdown moving leadership
//! only to eligible ISR members, ISR joins refused for stopping brokers, ElectLeaders (preferred
//! and unclean) with Kafka's codes, the controller's queries, the change trace, and images of the
//! layout before `shutting_down` still decoding. Each test applies commands to an image of three
//! brokers and checks the partitions.

use super::*;
use crate::meta::command::Election;

fn reg_as(id: i32, incarnation: u128) -> MetadataCommand {
    MetadataCommand::RegisterBroker(BrokerRegistration {
        node_id: id,
        incarnation: Uuid::from_u128(incarnation),
        directory_id: Uuid::from_u128(100 + id as u128),
        host: "127.0.0.1".into(),
        port: 9091 + id,
        rack: None,
        raft_addr: format!("127.0.0.1:{}", 9191 + id),
    })
}

/// Brokers 1..=3 (incarnation = id) and topic `t` with the given replica lists.
fn cluster_with(assignment: &[&[i32]]) -> (MetadataImage, Uuid) {
    let mut image = MetadataImage::default();
    for id in 1..=3 {
        image.apply(id as u64, &reg_as(id, id as u128));
    }
    let id = Uuid::from_u128(0x7);
    let r = image.apply(
        4,
        &MetadataCommand::CreateTopic {
            name: "t".into(),
            id,
            partitions: assignment.len() as i32,
            replication_factor: -1,
            configs: BTreeMap::new(),
            assignment: Some(assignment.iter().map(|a| a.to_vec()).collect()),
        },
    );
    assert_eq!(r, MetadataResponse::TopicCreated { id });
    (image, id)
}

fn part(image: &MetadataImage, p: usize) -> &PartitionImage {
    &image.topics["t"].partitions[p]
}

fn fence(node_id: i32) -> MetadataCommand {
    fence_as(node_id, node_id as u128)
}

fn fence_as(node_id: i32, incarnation: u128) -> MetadataCommand {
    MetadataCommand::FenceBroker {
        node_id,
        incarnation: Uuid::from_u128(incarnation),
    }
}

fn stop(node_id: i32) -> MetadataCommand {
    stop_as(node_id, node_id as u128)
}

fn stop_as(node_id: i32, incarnation: u128) -> MetadataCommand {
    MetadataCommand::ControlledShutdown {
        node_id,
        incarnation: Uuid::from_u128(incarnation),
    }
}

fn elect(election: Election, partitions: Option<Vec<(Uuid, i32)>>) -> MetadataCommand {
    MetadataCommand::ElectLeaders {
        election,
        partitions,
    }
}

fn codes_of(r: MetadataResponse) -> Vec<(i32, i16)> {
    match r {
        MetadataResponse::Elected(v) => v.iter().map(|e| (e.partition, e.code)).collect(),
        other => panic!("{other:?}"),
    }
}

/// Sets partition `p`'s ISR to `isr`, keeping its leader (a leader's AlterPartition).
fn shrink(image: &mut MetadataImage, index: u64, id: Uuid, p: usize, isr: &[i32]) {
    let leader = part(image, p).leader;
    alter(image, index, id, p, leader, isr);
}

/// A leader's AlterPartition of partition `p`, which must be accepted.
fn alter(image: &mut MetadataImage, index: u64, id: Uuid, p: usize, leader: i32, isr: &[i32]) {
    let cur = part(image, p).clone();
    let r = image.apply(
        index,
        &MetadataCommand::AlterPartition {
            topic_id: id,
            partition: p as i32,
            partition_epoch: cur.partition_epoch,
            leader,
            replicas: cur.replicas,
            isr: isr.to_vec(),
        },
    );
    assert_eq!(r, MetadataResponse::Done);
}

// Proves a new partition starts with every eligible replica in sync (led by the first), a fenced
// replica left out, and none eligible leaves it leaderless waiting for its first replica.
#[test]
fn new_partitions_put_every_eligible_replica_in_the_isr() {
    let (mut image, _) = cluster_with(&[&[1, 2, 3]]);
    assert_eq!(
        (part(&image, 0).leader, part(&image, 0).isr.clone()),
        (1, vec![1, 2, 3])
    );
    image.apply(5, &fence(1));
    image.apply(6, &stop(2));
    image.apply(
        7,
        &MetadataCommand::CreatePartitions {
            name: "t".into(),
            count: 3,
            assignment: Some(vec![vec![1, 2, 3], vec![1, 2, 1]]),
        },
    );
    // The second list names 1 twice: refused, nothing added.
    assert_eq!(image.topics["t"].partitions.len(), 1);
    image.apply(
        8,
        &MetadataCommand::CreatePartitions {
            name: "t".into(),
            count: 2,
            assignment: Some(vec![vec![1, 2, 3]]),
        },
    );
    assert_eq!(
        (part(&image, 1).leader, part(&image, 1).isr.clone()),
        (3, vec![3]),
        "fenced 1 and stopping 2 are not in sync"
    );
    image.apply(9, &fence(3));
    image.apply(
        10,
        &MetadataCommand::CreatePartitions {
            name: "t".into(),
            count: 3,
            assignment: Some(vec![vec![3, 1, 2]]),
        },
    );
    assert_eq!(
        (part(&image, 2).leader, part(&image, 2).isr.clone()),
        (NO_LEADER, vec![3])
    );
}

// Proves a controlled shutdown moves each partition the broker leads to another eligible ISR
// member (leader epoch bumped), takes it out of every ISR with other members, keeps the
// partitions it alone can lead, is idempotent, and is refused for another incarnation.
#[test]
fn controlled_shutdown_moves_leadership_to_eligible_isr_members() {
    let (mut image, id) = cluster_with(&[&[1, 2, 3], &[2, 1, 3], &[1, 2, 3]]);
    shrink(&mut image, 5, id, 2, &[1]);
    let r = image.apply(
        6,
        &MetadataCommand::ControlledShutdown {
            node_id: 1,
            incarnation: Uuid::nil(),
        },
    );
    assert!(matches!(r, MetadataResponse::Refused(ref r) if r.code == codes::STALE_BROKER_EPOCH));
    assert!(image.shutting_down.is_empty());
    assert_eq!(image.movable_leaderships(1), 1);

    let mut trace = Vec::new();
    assert_eq!(
        image.apply_traced(7, &stop(1), &mut trace),
        MetadataResponse::Done
    );
    assert!(image.shutting_down.contains(&1));
    let p0 = part(&image, 0);
    assert_eq!(
        (p0.leader, p0.leader_epoch, p0.isr.clone()),
        (2, 1, vec![2, 3])
    );
    let p1 = part(&image, 1);
    assert_eq!(
        (p1.leader, p1.leader_epoch, p1.isr.clone()),
        (2, 0, vec![2, 3])
    );
    let p2 = part(&image, 2);
    assert_eq!(
        (p2.leader, p2.isr.clone()),
        (1, vec![1]),
        "only 1 can lead it"
    );
    assert_eq!(image.movable_leaderships(1), 0);
    assert_eq!(trace.len(), 2);
    assert!(trace.iter().all(|c| c.reason == Reason::ControlledShutdown));
    assert_eq!(trace[0].what(), "controlled shutdown");

    let before = image.topics.clone();
    let mut again = Vec::new();
    image.apply_traced(8, &stop(1), &mut again);
    assert_eq!(image.topics, before, "a second stop changes nothing");
    assert!(again.is_empty());
}

// Proves a stopping broker is never elected by a fence, never placed, cannot be taken back into
// an ISR (INELIGIBLE_REPLICA), keeps its mark when its own incarnation registers again, and loses
// it when a restart (new incarnation) registers.
#[test]
fn a_stopping_broker_is_not_elected_placed_or_readmitted_until_it_restarts() {
    let (mut image, id) = cluster_with(&[&[3, 1, 2]]);
    image.apply(5, &stop(1));
    image.apply(6, &fence(3));
    assert_eq!(part(&image, 0).leader, 2, "2 leads, not the stopping 1");
    match image.place(3, 3) {
        Err(MetadataResponse::Refused(r)) => assert_eq!(r.code, codes::INVALID_REPLICATION_FACTOR),
        other => panic!("placed on a stopping broker: {other:?}"),
    }
    let cur = part(&image, 0).clone();
    assert_eq!(cur.isr, vec![2]);
    let readmit = MetadataCommand::AlterPartition {
        topic_id: id,
        partition: 0,
        partition_epoch: cur.partition_epoch,
        leader: 2,
        replicas: cur.replicas.clone(),
        isr: vec![2, 1],
    };
    assert!(matches!(
        image.apply(7, &readmit),
        MetadataResponse::Refused(r) if r.code == codes::INELIGIBLE_REPLICA
    ));
    image.apply(8, &reg_as(1, 1));
    assert!(
        image.shutting_down.contains(&1),
        "same incarnation: still stopping"
    );
    image.apply(9, &reg_as(1, 11));
    assert!(image.shutting_down.is_empty());
    assert_eq!(image.apply(10, &readmit), MetadataResponse::Done);
}

// Proves preferred elections answer Kafka's codes: NONE when the in-sync, eligible preferred
// replica takes over (epoch bumped), ELECTION_NOT_NEEDED when it leads, PREFERRED_LEADER_NOT_
// AVAILABLE when it is out of the ISR, fenced or stopping, UNKNOWN_TOPIC_OR_PARTITION for what
// does not exist; for all partitions, the not-needed ones are left out.
#[test]
fn preferred_election_codes() {
    let (mut image, id) = cluster_with(&[&[1, 2, 3], &[2, 3, 1], &[3, 1, 2]]);
    // 1 stops (2 takes partition 0) and restarts; replication brings it back into the ISR.
    image.apply(5, &stop(1));
    image.apply(6, &reg_as(1, 11));
    assert!(
        image.preferred_imbalance().is_empty(),
        "1 is not in sync yet"
    );
    shrink(&mut image, 6, id, 0, &[2, 3, 1]);
    assert_eq!(image.preferred_imbalance(), vec![(id, 0)]);
    let all =
        |image: &mut MetadataImage, i| codes_of(image.apply(i, &elect(Election::Preferred, None)));
    assert_eq!(all(&mut image, 7), vec![(0, codes::NONE)]);
    assert_eq!(
        (part(&image, 0).leader, part(&image, 0).leader_epoch),
        (1, 2)
    );
    assert!(image.preferred_imbalance().is_empty());
    assert_eq!(all(&mut image, 8), vec![], "nothing needed: nothing listed");

    shrink(&mut image, 9, id, 0, &[1, 3]);
    image.apply(10, &stop_as(1, 11));
    // 0: led by 3, preferred 1 is stopping; 1: led by 2; 2: led by 3.
    let named = elect(
        Election::Preferred,
        Some(vec![(id, 0), (id, 1), (id, 7), (Uuid::nil(), 0)]),
    );
    assert_eq!(
        codes_of(image.apply(11, &named)),
        vec![
            (0, codes::PREFERRED_LEADER_NOT_AVAILABLE),
            (1, codes::ELECTION_NOT_NEEDED),
            (7, codes::UNKNOWN_TOPIC_OR_PARTITION),
            (0, codes::UNKNOWN_TOPIC_OR_PARTITION),
        ]
    );
    image.apply(12, &reg_as(1, 12));
    // 1 alone in sync and fenced: the partition waits for it, and it cannot be elected.
    alter(&mut image, 13, id, 0, 1, &[1]);
    image.apply(13, &fence_as(1, 12));
    assert_eq!(part(&image, 0).leader, NO_LEADER);
    assert_eq!(
        codes_of(image.apply(14, &elect(Election::Preferred, Some(vec![(id, 0)])))),
        vec![(0, codes::PREFERRED_LEADER_NOT_AVAILABLE)],
        "fenced"
    );
}

// Proves an unclean election happens only where no live ISR member exists: a live leader needs
// none, a returning ISR member is elected cleanly, else the first eligible replica leads with an
// ISR of itself (epoch bumped, traced as unclean), and with no eligible replica nothing changes.
#[test]
fn unclean_election_only_without_a_live_isr_member() {
    let (mut image, id) = cluster_with(&[&[1, 2, 3], &[2, 3, 1]]);
    shrink(&mut image, 5, id, 0, &[1]);
    let unclean = |p: i32| elect(Election::Unclean, Some(vec![(id, p)]));
    assert_eq!(
        codes_of(image.apply(6, &unclean(0))),
        vec![(0, codes::ELECTION_NOT_NEEDED)]
    );
    image.apply(7, &fence(1));
    assert_eq!(part(&image, 0).leader, NO_LEADER);
    assert_eq!(image.unclean_candidates(), vec![("t", id, 0)]);
    let mut trace = Vec::new();
    let r = image.apply_traced(8, &unclean(0), &mut trace);
    assert_eq!(codes_of(r), vec![(0, codes::NONE)]);
    let p = part(&image, 0);
    assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (2, vec![2], 2));
    assert_eq!(trace.len(), 1);
    assert_eq!(
        (trace[0].reason, trace[0].isr_before.clone()),
        (Reason::Unclean, vec![1])
    );
    assert!(image.unclean_candidates().is_empty());

    // Partition 1 loses its whole ISR; its ISR member 2 returns: elected cleanly.
    shrink(&mut image, 9, id, 1, &[2]);
    image.apply(10, &fence(2));
    image.apply(11, &fence(3));
    assert_eq!(part(&image, 1).leader, NO_LEADER);
    assert_eq!(
        codes_of(image.apply(12, &unclean(1))),
        vec![(1, codes::ELIGIBLE_LEADERS_NOT_AVAILABLE)],
        "1 is fenced, 2 and 3 too: nobody can lead"
    );
    image.apply(13, &reg_as(2, 22));
    // Registering elected 2 (its ISR member) already.
    assert_eq!(part(&image, 1).leader, 2);
    assert_eq!(
        codes_of(image.apply(14, &unclean(1))),
        vec![(1, codes::ELECTION_NOT_NEEDED)]
    );
}

// Proves a partition whose only ISR member is a stopping (but live) leader is never a candidate
// for an unclean election: its data is still served.
#[test]
fn a_stopping_sole_leader_is_not_replaced_uncleanly() {
    let (mut image, id) = cluster_with(&[&[1, 2, 3]]);
    shrink(&mut image, 5, id, 0, &[1]);
    image.apply(6, &stop(1));
    assert_eq!(part(&image, 0).leader, 1);
    assert!(image.unclean_candidates().is_empty());
    assert_eq!(
        codes_of(image.apply(7, &elect(Election::Unclean, Some(vec![(id, 0)])))),
        vec![(0, codes::ELECTION_NOT_NEEDED)]
    );
}

// Proves fencing traces each election and ISR change with its reason, and an AlterPartition's
// trace says shrink or expand.
#[test]
fn changes_are_traced_with_their_reason() {
    let (mut image, id) = cluster_with(&[&[1, 2, 3]]);
    let mut trace = Vec::new();
    image.apply_traced(5, &fence(1), &mut trace);
    assert_eq!(trace.len(), 1);
    let c = &trace[0];
    assert_eq!(
        (
            c.reason,
            c.leader_before,
            c.leader,
            c.leader_epoch,
            c.isr.clone()
        ),
        (Reason::Fenced, 1, 2, 1, vec![2, 3])
    );
    trace.clear();
    let cur = part(&image, 0).clone();
    image.apply_traced(
        6,
        &MetadataCommand::AlterPartition {
            topic_id: id,
            partition: 0,
            partition_epoch: cur.partition_epoch,
            leader: 2,
            replicas: cur.replicas,
            isr: vec![2],
        },
        &mut trace,
    );
    assert_eq!(trace[0].what(), "ISR shrink");
}

// Proves an image written before `shutting_down` existed (its bytes end where the field would
// start) still decodes, with no broker stopping, and that trailing garbage is still refused.
#[test]
fn images_of_the_previous_layout_still_decode() {
    let (mut image, _) = cluster_with(&[&[1, 2, 3]]);
    let bytes = postcard::to_stdvec(&image).unwrap();
    // An empty set is one byte (its length, 0): without it, the bytes are the old layout's.
    let old = &bytes[..bytes.len() - 1];
    assert_eq!(decode_image(old).unwrap(), image);
    assert_eq!(decode_image(&bytes).unwrap(), image);
    image.apply(5, &stop(2));
    let new = postcard::to_stdvec(&image).unwrap();
    assert_eq!(
        decode_image(&new).unwrap().shutting_down,
        BTreeSet::from([2])
    );
    let mut longer = new.clone();
    longer.push(0);
    assert!(decode_image(&longer).is_err());
}
