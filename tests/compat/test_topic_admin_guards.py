"""Admin requests Kafka refuses: growing or deleting an internal topic (`__consumer_offsets`),
and CreatePartitions with a manual replica assignment that does not fit the cluster
(INVALID_REPLICA_ASSIGNMENT), as real clients' admin APIs send them."""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions
from kafka.admin import KafkaAdminClient
from kafka.errors import InvalidReplicationAssignmentError

from helpers import ADMIN_TIMEOUT_S, create_topic, produce_confluent, topic_partition_counts

OFFSETS_TOPIC = "__consumer_offsets"
# Bound on a consumer's commit round trip (coordinator lookup included).
COMMIT_TIMEOUT_S = 30.0


def _commit_offset(bootstrap: str, group: str, topic: str, offset: int) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


def _committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=COMMIT_TIMEOUT_S)
        return tp.offset
    finally:
        consumer.close()


def _error_of(future) -> KafkaError:
    try:
        future.result(timeout=ADMIN_TIMEOUT_S)
    except Exception as e:  # librdkafka raises KafkaException wrapping the KafkaError
        return e.args[0]
    raise AssertionError("the broker accepted the request")


def test_internal_topic_cannot_be_grown_or_deleted(broker):
    """confluent-kafka's AdminClient can neither add partitions to nor delete
    `__consumer_offsets` (INVALID_REQUEST); the group's committed offset survives both."""
    create_topic(broker.bootstrap, "orders", 1)
    produce_confluent(broker.bootstrap, "orders", [{"value": b"v"}] * 3)
    _commit_offset(broker.bootstrap, "g", "orders", 2)
    before = topic_partition_counts(broker.bootstrap)[OFFSETS_TOPIC]

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    grow = admin.create_partitions([NewPartitions(OFFSETS_TOPIC, before + 1)],
                                   request_timeout=ADMIN_TIMEOUT_S)
    assert _error_of(grow[OFFSETS_TOPIC]).code() == KafkaError.INVALID_REQUEST
    delete = admin.delete_topics([OFFSETS_TOPIC], request_timeout=ADMIN_TIMEOUT_S)
    assert _error_of(delete[OFFSETS_TOPIC]).code() == KafkaError.INVALID_REQUEST

    assert topic_partition_counts(broker.bootstrap)[OFFSETS_TOPIC] == before
    assert _committed(broker.bootstrap, "g", "orders") == 2


def test_create_partitions_checks_manual_assignment(broker):
    """A manual assignment must give one replica list per new partition, of the topic's
    replication factor, naming known brokers once each; anything else is
    INVALID_REPLICA_ASSIGNMENT and adds nothing. A fitting one is applied."""
    create_topic(broker.bootstrap, "grow", 1)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap,
                             request_timeout_ms=int(ADMIN_TIMEOUT_S * 1000))
    try:
        bad = {
            "too few assignments": [[1]],
            "unknown broker": [[1], [7]],
            "duplicate broker": [[1], [1, 1]],
            "too many replicas": [[1], [1, 7]],
        }
        for why, assignment in bad.items():
            try:
                admin.create_partitions({"grow": {"count": 3, "assignments": assignment}})
            except InvalidReplicationAssignmentError:
                pass
            else:
                raise AssertionError(f"{why}: {assignment} accepted")
            assert topic_partition_counts(broker.bootstrap)["grow"] == 1, why
        admin.create_partitions({"grow": {"count": 3, "assignments": [[1], [1]]}})
    finally:
        admin.close()
    assert topic_partition_counts(broker.bootstrap)["grow"] == 3

    # librdkafka's admin API sends its replica_assignment the same way.
    confluent = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = confluent.create_partitions(
        [NewPartitions("grow", 4, replica_assignment=[[9]])], request_timeout=ADMIN_TIMEOUT_S)
    assert _error_of(futures["grow"]).code() == KafkaError.INVALID_REPLICA_ASSIGNMENT
    assert topic_partition_counts(broker.bootstrap)["grow"] == 3
