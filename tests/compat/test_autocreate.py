"""Topic auto-creation (`auto_create_topics`, `num_partitions`) as producers see it.

Many client test suites and tools assume Kafka's auto.create.topics.enable=true, so it is on by
default; a node configured with it off must answer UNKNOWN_TOPIC_OR_PARTITION instead.
kafka-python's producers here opt out of idempotence so that these tests depend on auto-creation
only (test_producers.py covers kafka-python's idempotent default)."""

from __future__ import annotations

from confluent_kafka import KafkaError, Producer
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from helpers import consume_all, topic_partition_counts, wait_for_topic

# Bound on one kafka-python send, including the metadata wait for a new topic.
SEND_TIMEOUT_S = 30
# With auto-creation off, how long kafka-python waits for metadata before giving up.
UNKNOWN_TOPIC_MAX_BLOCK_MS = 5_000
# librdkafka fails records for a topic the broker calls unknown after this long.
UNKNOWN_TOPIC_PROPAGATION_MS = 2_000
UNKNOWN_TOPIC_FLUSH_TIMEOUT_S = 30


def test_autocreate_on_by_default_kafka_python(broker):
    """kafka-python producing to a topic nobody created succeeds (offset 0); the topic then
    exists with the default single partition and holds the record."""
    topic = "auto-created"
    assert topic not in topic_partition_counts(broker.bootstrap)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                             enable_idempotence=False)
    try:
        meta = producer.send(topic, key=b"k", value=b"hello").get(timeout=SEND_TIMEOUT_S)
    finally:
        producer.close()
    assert (meta.topic, meta.partition, meta.offset) == (topic, 0, 0)
    assert topic_partition_counts(broker.bootstrap).get(topic) == 1
    got = consume_all(broker.bootstrap, topic, 1, 1)
    assert [(m.key, m.value) for m in got] == [(b"k", b"hello")]


def test_autocreate_uses_num_partitions(broker_factory):
    """With `num_partitions = 4` in the config file, an auto-created topic gets 4 partitions."""
    broker = broker_factory({"num_partitions": 4})
    topic = "auto-created-4"
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                             enable_idempotence=False)
    try:
        producer.send(topic, value=b"x").get(timeout=SEND_TIMEOUT_S)
    finally:
        producer.close()
    wait_for_topic(broker.bootstrap, topic, 4)


def test_autocreate_off_rejects_unknown_topic(broker_factory):
    """With `auto_create_topics = false`, producing to an unknown topic fails in both clients
    (librdkafka: unknown topic; kafka-python: no metadata for it) and the topic is not
    created."""
    broker = broker_factory({"auto_create_topics": False})
    topic = "never-created"

    errors = []
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                         "topic.metadata.propagation.max.ms": UNKNOWN_TOPIC_PROPAGATION_MS,
                         "message.timeout.ms": UNKNOWN_TOPIC_PROPAGATION_MS * 5})
    producer.produce(topic, b"x", on_delivery=lambda err, msg: errors.append(err))
    assert producer.flush(UNKNOWN_TOPIC_FLUSH_TIMEOUT_S) == 0
    assert len(errors) == 1 and errors[0] is not None, "produce to unknown topic succeeded"
    assert errors[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), (
        f"expected unknown topic, got {errors[0]}")

    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=False,
                       max_block_ms=UNKNOWN_TOPIC_MAX_BLOCK_MS)
    try:
        try:
            kp.send(topic, value=b"x").get(timeout=SEND_TIMEOUT_S)
        except KafkaTimeoutError:
            pass  # kafka-python's way of saying "no such topic"
        else:
            raise AssertionError("kafka-python produced to an unknown topic")
    finally:
        kp.close()

    assert topic not in topic_partition_counts(broker.bootstrap)
