use super::*;

fn reg(id: i32, rack: Option<&str>) -> MetadataCommand {
    MetadataCommand::RegisterBroker(BrokerRegistration {
        node_id: id,
        incarnation: Uuid::from_u128(id as u128),
        directory_id: Uuid::from_u128(100 + id as u128),
        host: "127.0.0.1".into(),
        port: 9091 + id,
        rack: rack.map(str::to_string),
        raft_addr: format!("127.0.0.1:{}", 9191 + id),
    })
}

fn create(name: &str, partitions: i32, rf: i16) -> MetadataCommand {
    MetadataCommand::CreateTopic {
        name: name.into(),
        id: Uuid::new_v4(),
        partitions,
        replication_factor: rf,
        configs: BTreeMap::new(),
        assignment: None,
    }
}

fn cluster(racks: [Option<&str>; 3]) -> MetadataImage {
    let mut image = MetadataImage::default();
    for (i, rack) in racks.into_iter().enumerate() {
        image.apply(i as u64 + 1, &reg(i as i32 + 1, rack));
    }
    image
}

fn leader_counts(image: &MetadataImage) -> BTreeMap<i32, usize> {
    let mut n = BTreeMap::new();
    for t in image.topics.values() {
        for p in &t.partitions {
            *n.entry(p.leader).or_insert(0) += 1;
        }
    }
    n
}

#[test]
fn six_partitions_rf1_are_led_two_each() {
    let mut image = cluster([None, None, None]);
    assert!(matches!(
        image.apply(4, &create("t", 6, 1)),
        MetadataResponse::TopicCreated { .. }
    ));
    assert_eq!(
        leader_counts(&image).values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2]
    );
}

#[test]
fn leaders_stay_even_across_topics() {
    let mut image = cluster([None, None, None]);
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        image.apply(10 + i as u64, &create(name, 1, 1));
    }
    image.apply(20, &create("e", 2, 1));
    assert_eq!(
        leader_counts(&image).values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2]
    );
}

#[test]
fn rf3_spans_three_racks_with_even_leaders() {
    let mut image = cluster([Some("r1"), Some("r2"), Some("r3")]);
    image.apply(4, &create("t", 6, 3));
    let t = &image.topics["t"];
    for p in &t.partitions {
        let racks: BTreeSet<_> = p
            .replicas
            .iter()
            .map(|r| image.brokers[r].rack().map(str::to_string))
            .collect();
        assert_eq!(racks.len(), 3, "{p:?}");
        // A new partition is empty: every live replica is in sync.
        assert_eq!(p.isr, p.replicas);
        assert_eq!(p.leader, p.replicas[0]);
    }
    assert_eq!(
        leader_counts(&image).values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2]
    );
}

#[test]
fn racks_are_spread_when_brokers_outnumber_racks() {
    let mut image = MetadataImage::default();
    // Brokers 1 and 2 share r1; 3 is alone in r2.
    image.apply(1, &reg(1, Some("r1")));
    image.apply(2, &reg(2, Some("r1")));
    image.apply(3, &reg(3, Some("r2")));
    image.apply(4, &create("t", 6, 2));
    for p in &image.topics["t"].partitions {
        let racks: BTreeSet<_> = p.replicas.iter().map(|r| image.brokers[r].rack()).collect();
        assert_eq!(racks.len(), 2, "replicas {:?} share a rack", p.replicas);
    }
}

#[test]
fn replication_factor_above_live_brokers_is_refused() {
    let mut image = cluster([None, None, None]);
    let before = image.topics.clone();
    match image.apply(4, &create("t", 1, 4)) {
        MetadataResponse::Refused(r) => assert_eq!(r.code, codes::INVALID_REPLICATION_FACTOR),
        other => panic!("{other:?}"),
    }
    assert_eq!(image.topics, before);
}

#[test]
fn duplicate_topic_is_refused() {
    let mut image = cluster([None, None, None]);
    image.apply(4, &create("t", 1, 1));
    match image.apply(5, &create("t", 1, 1)) {
        MetadataResponse::Refused(r) => assert_eq!(r.code, codes::TOPIC_ALREADY_EXISTS),
        other => panic!("{other:?}"),
    }
}

#[test]
fn fenced_leader_loses_rf1_partitions_until_it_returns() {
    let mut image = cluster([None, None, None]);
    image.apply(4, &create("t", 3, 1));
    let led_by_2: Vec<usize> = image.topics["t"]
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.leader == 2)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(led_by_2.len(), 1);
    let inc = Uuid::from_u128(2);
    image.apply(
        5,
        &MetadataCommand::FenceBroker {
            node_id: 2,
            incarnation: inc,
        },
    );
    let p = &image.topics["t"].partitions[led_by_2[0]];
    assert_eq!(
        (p.leader, p.leader_epoch, p.isr.clone()),
        (NO_LEADER, 1, vec![2])
    );
    assert!(!image.is_live(2));
    // New topics avoid the fenced broker.
    image.apply(6, &create("u", 4, 1));
    assert!(image.topics["u"].partitions.iter().all(|p| p.leader != 2));
    image.apply(
        7,
        &MetadataCommand::UnfenceBroker {
            node_id: 2,
            incarnation: inc,
        },
    );
    let p = &image.topics["t"].partitions[led_by_2[0]];
    assert_eq!((p.leader, p.leader_epoch), (2, 2));
}

#[test]
fn fence_of_an_old_incarnation_is_refused() {
    let mut image = cluster([None, None, None]);
    let r = image.apply(
        4,
        &MetadataCommand::FenceBroker {
            node_id: 1,
            incarnation: Uuid::nil(),
        },
    );
    assert!(matches!(r, MetadataResponse::Refused(_)));
    assert!(image.is_live(1));
}

#[test]
fn fenced_leader_of_rf3_waits_for_its_return_when_alone_in_the_isr() {
    let mut image = cluster([None, None, None]);
    image.apply(4, &create("t", 1, 3));
    let t = image.topics["t"].clone();
    let leader = t.partitions[0].leader;
    // The followers fell behind and left the ISR.
    image.apply(
        5,
        &MetadataCommand::AlterPartition {
            topic_id: t.id,
            partition: 0,
            partition_epoch: 0,
            leader,
            replicas: t.partitions[0].replicas.clone(),
            isr: vec![leader],
        },
    );
    let incarnation = Uuid::from_u128(leader as u128);
    image.apply(
        6,
        &MetadataCommand::FenceBroker {
            node_id: leader,
            incarnation,
        },
    );
    let p = &image.topics["t"].partitions[0];
    assert_eq!(
        (p.leader, p.isr.clone()),
        (NO_LEADER, vec![leader]),
        "a follower outside the ISR was elected"
    );
    image.apply(
        7,
        &MetadataCommand::UnfenceBroker {
            node_id: leader,
            incarnation,
        },
    );
    assert_eq!(image.topics["t"].partitions[0].leader, leader);
}

#[test]
fn fenced_leader_moves_to_a_live_isr_member() {
    let mut image = cluster([None, None, None]);
    image.apply(4, &create("t", 1, 3));
    let t = image.topics["t"].clone();
    let p = &t.partitions[0];
    // Once a follower is in sync (replication, AlterPartition), it takes over.
    image.apply(
        5,
        &MetadataCommand::AlterPartition {
            topic_id: t.id,
            partition: 0,
            partition_epoch: p.partition_epoch,
            leader: p.leader,
            replicas: p.replicas.clone(),
            isr: p.replicas.clone(),
        },
    );
    let leader = p.leader;
    let incarnation = Uuid::from_u128(leader as u128);
    image.apply(
        6,
        &MetadataCommand::FenceBroker {
            node_id: leader,
            incarnation,
        },
    );
    let p = &image.topics["t"].partitions[0];
    assert_ne!(p.leader, leader);
    assert_ne!(p.leader, NO_LEADER);
    assert!(!p.isr.contains(&leader));
    assert_eq!(p.leader_epoch, 1);
}

#[test]
fn producer_id_blocks_never_overlap() {
    let mut image = cluster([None, None, None]);
    let a = image.apply(
        4,
        &MetadataCommand::AllocateProducerIds {
            node_id: 1,
            count: 1000,
        },
    );
    let b = image.apply(
        5,
        &MetadataCommand::AllocateProducerIds {
            node_id: 2,
            count: 1000,
        },
    );
    assert_eq!(
        a,
        MetadataResponse::ProducerIds {
            first: 0,
            count: 1000
        }
    );
    assert_eq!(
        b,
        MetadataResponse::ProducerIds {
            first: 1000,
            count: 1000
        }
    );
}

#[test]
fn stale_alter_partition_is_refused() {
    let mut image = cluster([None, None, None]);
    image.apply(4, &create("t", 1, 3));
    let t = image.topics["t"].clone();
    let p = &t.partitions[0];
    let alter = |epoch| MetadataCommand::AlterPartition {
        topic_id: t.id,
        partition: 0,
        partition_epoch: epoch,
        leader: p.replicas[1],
        replicas: p.replicas.clone(),
        isr: p.replicas.clone(),
    };
    assert_eq!(image.apply(5, &alter(0)), MetadataResponse::Done);
    assert!(matches!(
        image.apply(6, &alter(0)),
        MetadataResponse::Refused(_)
    ));
    assert_eq!(image.topics["t"].partitions[0].leader_epoch, 1);
}

#[test]
fn init_cluster_imports_single_node_topics_once() {
    let mut image = MetadataImage::default();
    let init = |id: &str| MetadataCommand::InitCluster {
        cluster_id: id.into(),
        node_id: 1,
        topics: vec![crate::meta::command::TopicImport {
            name: "old".into(),
            id: Uuid::from_u128(7),
            partitions: 2,
            configs: BTreeMap::new(),
        }],
        next_producer_id: 5000,
    };
    image.apply(1, &init("first"));
    image.apply(2, &init("second"));
    assert_eq!(image.cluster_id.as_deref(), Some("first"));
    assert_eq!(image.topics["old"].partitions.len(), 2);
    assert_eq!(image.topics["old"].partitions[1].leader, 1);
    assert_eq!(image.next_producer_id, 5000);
}

#[test]
fn image_round_trips_through_postcard() {
    let mut image = cluster([Some("r1"), None, Some("r3")]);
    image.apply(4, &create("t", 3, 2));
    let bytes = postcard::to_stdvec(&image).expect("encode");
    let back: MetadataImage = postcard::from_bytes(&bytes).expect("decode");
    assert_eq!(back, image);
}

// Proves no command can make every node allocate or open millions of partitions: a count past
// TOPIC_PARTITIONS_MAX is refused when applied (found by review: 2,000,000,000 partitions
// aborted the node allocating 48 GB).
#[test]
fn huge_partition_counts_are_refused_when_applied() {
    let mut image = cluster([None, None, None]);
    let refused = image.apply(4, &create("t", 2_000_000_000, 1));
    assert!(
        matches!(&refused, MetadataResponse::Refused(r) if r.code == codes::INVALID_PARTITIONS),
        "{refused:?}"
    );
    image.apply(5, &create("t", 1, 1));
    let grow = MetadataCommand::CreatePartitions {
        name: "t".into(),
        count: TOPIC_PARTITIONS_MAX + 1,
        assignment: None,
    };
    assert!(matches!(
        image.apply(6, &grow),
        MetadataResponse::Refused(_)
    ));
    assert_eq!(image.topics["t"].partitions.len(), 1);
}

// Proves a proposal retried after its first try committed gets the same answer: CreateTopic of
// the same name and id is TopicCreated again (not TOPIC_ALREADY_EXISTS), DeleteTopic of an id
// already deleted is Done (not UNKNOWN_TOPIC_OR_PARTITION), and a DeleteTopic naming an old id
// never deletes the topic now under that name.
#[test]
fn retried_proposals_answer_as_the_first_try() {
    let mut image = cluster([None, None, None]);
    let cmd = create("t", 1, 1);
    let MetadataCommand::CreateTopic { id, .. } = &cmd else {
        unreachable!()
    };
    let id = *id;
    assert_eq!(image.apply(4, &cmd), MetadataResponse::TopicCreated { id });
    assert_eq!(image.apply(5, &cmd), MetadataResponse::TopicCreated { id });
    let delete = MetadataCommand::DeleteTopic {
        name: "t".into(),
        id: Some(id),
    };
    assert_eq!(image.apply(6, &delete), MetadataResponse::Done);
    assert_eq!(image.apply(7, &delete), MetadataResponse::Done);
    assert!(image.deleted_topics.contains(&id));
    // A create retried after its topic was deleted never brings the deleted id back.
    assert!(matches!(image.apply(8, &cmd), MetadataResponse::Refused(_)));
    assert!(!image.topics.contains_key("t"));
    image.apply(8, &create("t", 1, 1));
    assert!(matches!(
        image.apply(9, &delete),
        MetadataResponse::Refused(_)
    ));
    assert!(
        image.topics.contains_key("t"),
        "the new t was deleted by the old id"
    );
}

// Proves no partition gets more replicas than the data path's fixed-capacity replica sets
// hold, by placement or by a manual assignment, however many brokers there are.
#[test]
fn replication_factor_is_capped_at_replicas_max() {
    let mut image = MetadataImage::default();
    let brokers = REPLICAS_MAX as i32 + 2;
    for id in 1..=brokers {
        image.apply(id as u64, &reg(id, None));
    }
    let at = brokers as u64 + 1;
    let refused = image.apply(at, &create("wide", 1, REPLICAS_MAX as i16 + 1));
    assert!(
        matches!(&refused, MetadataResponse::Refused(r) if r.code == codes::INVALID_REPLICATION_FACTOR),
        "{refused:?}"
    );
    let manual = MetadataCommand::CreateTopic {
        name: "manual".into(),
        id: Uuid::new_v4(),
        partitions: 1,
        replication_factor: -1,
        configs: BTreeMap::new(),
        assignment: Some(vec![(1..=brokers).collect()]),
    };
    let refused = image.apply(at + 1, &manual);
    assert!(
        matches!(&refused, MetadataResponse::Refused(r) if r.code == codes::INVALID_REPLICA_ASSIGNMENT),
        "{refused:?}"
    );
    assert!(matches!(
        image.apply(at + 2, &create("ok", 1, REPLICAS_MAX as i16)),
        MetadataResponse::TopicCreated { .. }
    ));
}
