"""Topic metadata lost or damaged on disk (`meta/topics/<name>.toml`) must never cost the topic's
records: the node recovers the topic from its partition directories (their `partition.metadata`
holds the topic id) and a client that auto-creates the name afterwards writes to the same topic,
with every acknowledged record still readable."""

from __future__ import annotations

import pytest

from confluent_kafka.admin import AdminClient, ConfigResource

from helpers import ADMIN_TIMEOUT_S, by_partition, consume_all, create_topic, produce_confluent

TOPIC = "precious"
PARTITIONS = 2
RECORDS = 2_000
AFTER = 10


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_lost_topic_metadata_keeps_every_record(broker, damage):
    """confluent-kafka acknowledges RECORDS; with the broker stopped the topic's metadata file is
    deleted or overwritten with garbage; after a restart a producer (auto-create on) writes AFTER
    more to the same name, and kafka-python reads back all of them, in order per partition. The
    topic's configs come back too (DescribeConfigs): retention decides whether its records live."""
    create_topic(broker.bootstrap, TOPIC, PARTITIONS, {"retention.ms": "-1"})
    first = [{"key": str(i % 7).encode(), "value": f"v{i}".encode()} for i in range(RECORDS)]
    run = produce_confluent(broker.bootstrap, TOPIC, first)
    assert not run.errors, run.errors[:3]
    assert broker.stop() == 0

    meta = broker.data_dir / "meta" / "topics" / f"{TOPIC}.toml"
    if damage == "missing":
        meta.unlink()
    else:
        meta.write_bytes(b"\x00\xffnot toml [[[")
    broker.start()

    later = [{"value": f"after{i}".encode()} for i in range(AFTER)]
    run = produce_confluent(broker.bootstrap, TOPIC, later)
    assert not run.errors, run.errors[:3]

    got = consume_all(broker.bootstrap, TOPIC, PARTITIONS, RECORDS + AFTER)
    values = sorted(m.value for m in got)
    assert values == sorted([r["value"] for r in first] + [r["value"] for r in later])
    for records in by_partition(got).values():
        offsets = [m.offset for m in records]
        assert offsets == list(range(len(offsets))), "gap or reorder within a partition"
    log = broker.log_tail(400)
    assert "RECOVERED topic metadata" in log
    resource = ConfigResource("TOPIC", TOPIC)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    configs = admin.describe_configs([resource], request_timeout=ADMIN_TIMEOUT_S)[resource].result(
        timeout=ADMIN_TIMEOUT_S)
    assert configs["retention.ms"].value == "-1", "topic configs lost in recovery"
    assert not configs["retention.ms"].is_default
    if damage == "corrupt":
        aside = meta.with_name(f"{TOPIC}.toml.corrupt")
        assert aside.read_bytes() == b"\x00\xffnot toml [[["


def test_deleted_topic_stays_deleted(broker):
    """DeleteTopics (confluent-kafka's AdminClient) then CreateTopics of the same name gives an
    empty topic, across a restart too, and no partition directory of the old topic remains."""
    create_topic(broker.bootstrap, TOPIC, PARTITIONS)
    run = produce_confluent(broker.bootstrap, TOPIC, [{"value": b"old"}] * 5)
    assert not run.errors
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_topics([TOPIC], request_timeout=ADMIN_TIMEOUT_S)[TOPIC].result(
        timeout=ADMIN_TIMEOUT_S)
    assert not [d for d in broker.data_dir.iterdir() if d.name.startswith(f"{TOPIC}-")]

    create_topic(broker.bootstrap, TOPIC, 1)
    broker.restart()
    run = produce_confluent(broker.bootstrap, TOPIC, [{"value": b"new"}])
    assert not run.errors
    assert [m.value for m in consume_all(broker.bootstrap, TOPIC, 1, 1)] == [b"new"]


def test_longest_topic_name_can_be_deleted(broker):
    """A topic with the longest name Kafka allows (249 characters) and 12 partitions: created,
    written, deleted with confluent-kafka's AdminClient (each deletion directory name must fit the
    file system's 255-byte limit), the node restarts, and the name is reusable and empty."""
    name = "L" * 249
    create_topic(broker.bootstrap, name, 12)
    run = produce_confluent(broker.bootstrap, name, [{"key": str(i).encode(), "value": b"old"}
                                                      for i in range(48)])
    assert not run.errors, run.errors[:3]
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_topics([name], request_timeout=ADMIN_TIMEOUT_S)[name].result(
        timeout=ADMIN_TIMEOUT_S)
    assert not [d for d in broker.data_dir.iterdir() if d.name.startswith("LLLL")]

    broker.restart()
    create_topic(broker.bootstrap, name, 1)
    run = produce_confluent(broker.bootstrap, name, [{"value": b"new"}])
    assert not run.errors
    assert [m.value for m in consume_all(broker.bootstrap, name, 1, 1)] == [b"new"]
