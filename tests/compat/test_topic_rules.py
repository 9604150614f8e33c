"""Produce-time topic rules seen by real clients (issue 9, items 11 and 12).

- A compacted topic refuses records without a key: the producer's delivery report carries
  INVALID_RECORD (Kafka's LogValidator rule), for uncompressed and compressed batches alike, while
  keyed records are accepted.
- `message.timestamp.type=LogAppendTime` (topic config, or the node's `message_timestamp_type`)
  makes the broker stamp each batch: the delivery report and the consumer both see the broker's
  clock, not the producer's timestamp, and ListOffsets by time finds the records by append time.
"""

from __future__ import annotations

import time

import pytest

from confluent_kafka import (TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, Consumer,
                             KafkaError, KafkaException, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic

from kafka import KafkaProducer
from kafka.errors import InvalidRecordError

from cluster import create_topic_raw
from helpers import ADMIN_TIMEOUT_S, create_topic, produce_confluent

# A producer timestamp far in the past: 2001-09-09T01:46:40Z.
OLD_TIMESTAMP_MS = 1_000_000_000_000
# How far the broker's stamp may be from the test's clock (same machine; slow debug build).
CLOCK_SLACK_MS = 60_000
# Bound on one delivery attempt: INVALID_RECORD is final, so the report comes at once.
MESSAGE_TIMEOUT_MS = 20_000
# Bound on reading records back.
CONSUME_TIMEOUT_S = 30.0
# Bound on one ListOffsets call.
LIST_OFFSETS_TIMEOUT_S = 30.0


def produce(bootstrap, topic, records, **conf):
    return produce_confluent(bootstrap, topic, records,
                             conf={"message.timeout.ms": MESSAGE_TIMEOUT_MS, **conf})


def read_back(bootstrap: str, topic: str, expected: int) -> list:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "rules-reader",
                  "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        out = []
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while len(out) < expected and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(msg)
        return out
    finally:
        c.close()


def offset_for_time(bootstrap: str, topic: str, timestamp_ms: int) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "rules-times"})
    try:
        [tp] = c.offsets_for_times([TopicPartition(topic, 0, timestamp_ms)],
                                   timeout=LIST_OFFSETS_TIMEOUT_S)
        return tp.offset
    finally:
        c.close()


def test_compacted_topic_refuses_records_without_key(broker):
    create_topic(broker.bootstrap, "keys", 1, {"cleanup.policy": "compact"})
    for codec in ("none", "gzip", "lz4", "snappy", "zstd"):
        conf = {"compression.type": codec}
        keyed = produce(broker.bootstrap, "keys", [{"key": b"k", "value": b"v" * 200}], **conf)
        assert not keyed.errors, (codec, keyed.errors)
        unkeyed = produce(broker.bootstrap, "keys",
                          [{"value": b"no key " * 40}, {"value": b"none either " * 20}], **conf)
        codes = [d.error.code() for d in unkeyed.deliveries.values()]
        assert codes == [KafkaError.INVALID_RECORD] * 2, (codec, unkeyed.deliveries)
    # kafka-python (its own Produce encoder) gets the same answer.
    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", retries=0)
    try:
        with pytest.raises(InvalidRecordError):
            kp.send("keys", b"no key").get(timeout=MESSAGE_TIMEOUT_MS / 1000)
        kp.send("keys", b"v", key=b"k").get(timeout=MESSAGE_TIMEOUT_MS / 1000)
    finally:
        kp.close()
    # A topic that is not compacted takes records without a key.
    create_topic(broker.bootstrap, "plain", 1)
    assert not produce(broker.bootstrap, "plain", [{"value": b"v"}]).errors
    # Only the keyed records are in the log.
    got = read_back(broker.bootstrap, "keys", 6)
    assert [m.key() for m in got] == [b"k"] * 6


def produce_old_timestamp(bootstrap: str, topic: str) -> tuple:
    """Produces one record stamped OLD_TIMESTAMP_MS; returns the delivery report's timestamp
    (librdkafka takes it from the response's log_append_time_ms when that is not -1)."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                  "message.timeout.ms": MESSAGE_TIMEOUT_MS})
    reports = []
    p.produce(topic, b"v", key=b"k", timestamp=OLD_TIMESTAMP_MS,
              on_delivery=lambda err, msg: reports.append((err, msg.timestamp())))
    assert p.flush(MESSAGE_TIMEOUT_MS / 1000) == 0
    [(err, ts)] = reports
    assert err is None, err
    return ts


def check_append_time(bootstrap: str, topic: str) -> None:
    before = int(time.time() * 1000)
    kind, ts = produce_old_timestamp(bootstrap, topic)
    assert kind == TIMESTAMP_LOG_APPEND_TIME, (kind, ts)
    assert before - CLOCK_SLACK_MS <= ts <= before + CLOCK_SLACK_MS, (before, ts)
    [msg] = read_back(bootstrap, topic, 1)
    kind, ts = msg.timestamp()
    assert kind == TIMESTAMP_LOG_APPEND_TIME, msg.timestamp()
    assert before - CLOCK_SLACK_MS <= ts <= before + CLOCK_SLACK_MS, (before, ts)
    # The time index holds the append time: a time after the producer's (old) timestamp but
    # before the append still finds the record.
    assert offset_for_time(bootstrap, topic, before - CLOCK_SLACK_MS) == 0


def test_log_append_time_topic_config(broker):
    create_topic(broker.bootstrap, "stamped", 1, {"message.timestamp.type": "LogAppendTime"})
    check_append_time(broker.bootstrap, "stamped")
    # CreateTime (the default) keeps the producer's timestamp.
    create_topic(broker.bootstrap, "created", 1)
    assert produce_old_timestamp(broker.bootstrap, "created") == (TIMESTAMP_CREATE_TIME,
                                                                   OLD_TIMESTAMP_MS)
    [msg] = read_back(broker.bootstrap, "created", 1)
    assert msg.timestamp() == (TIMESTAMP_CREATE_TIME, OLD_TIMESTAMP_MS)


def test_log_append_time_node_default(broker_factory):
    b = broker_factory(config={"message_timestamp_type": "LogAppendTime"})
    create_topic(b.bootstrap, "node-stamped", 1)
    check_append_time(b.bootstrap, "node-stamped")


def describe(bootstrap: str, resource: ConfigResource) -> dict:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.describe_configs([resource], request_timeout=ADMIN_TIMEOUT_S)
    return futures[resource].result(timeout=ADMIN_TIMEOUT_S)


def test_describe_configs_reports_the_node_timestamp_type(broker_factory):
    """DescribeConfigs reports the timestamp type produce applies: the node's setting for the
    broker (static) and as the default of a topic without an override."""
    b = broker_factory(config={"message_timestamp_type": "LogAppendTime"})
    create_topic(b.bootstrap, "node-default", 1)
    broker = describe(b.bootstrap, ConfigResource("BROKER", "1"))
    entry = broker["log.message.timestamp.type"]
    assert entry.value == "LogAppendTime"
    assert entry.source == ConfigSource.STATIC_BROKER_CONFIG.value
    topic = describe(b.bootstrap, ConfigResource("TOPIC", "node-default"))
    entry = topic["message.timestamp.type"]
    assert entry.value == "LogAppendTime"
    assert entry.source == ConfigSource.DEFAULT_CONFIG.value


def test_partition_counts_past_the_nodes_budget_are_refused(broker_factory):
    """CreateTopics for more partitions than the node's `partitions_max` (50 here, through
    confluent-kafka), or than any topic may have (2,000,000,000, a raw request: confluent-kafka
    refuses it itself), is refused with INVALID_PARTITIONS before anything is committed: the node
    keeps serving and a topic within the budget is still created (found by review: the huge count
    aborted the node)."""
    broker = broker_factory({"partitions_max": 50})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([NewTopic("big", 60, 1)], request_timeout=ADMIN_TIMEOUT_S)
    with pytest.raises(KafkaException) as refused:
        futures["big"].result(timeout=ADMIN_TIMEOUT_S)
    assert refused.value.args[0].code() == KafkaError.INVALID_PARTITIONS, refused.value
    error, message = create_topic_raw(broker.bootstrap, "huge", 2_000_000_000, 1, 5_000)
    assert error == KafkaError.INVALID_PARTITIONS, (error, message)
    create_topic(broker.bootstrap, "small", 10)
    assert broker.is_running()
    assert not {"big", "huge"} & set(admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics)
