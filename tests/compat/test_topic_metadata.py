"""Topic metadata lost or damaged on disk must never cost the topic's records. A node keeps its
topics in the metadata quorum's log (`meta/raft/`); each partition directory also holds the topic
id and a copy of the topic's configs (`partition.metadata`). With the quorum's store lost, the node
recovers the topics from their partition directories and imports them into a new quorum; with the
store damaged in the middle, it refuses to start and names the file (never a silent loss), and
starts again once the operator moves the damaged store aside. A client that auto-creates the name
afterwards writes to the same topic, with every acknowledged record still readable."""

from __future__ import annotations

import shutil

import pytest

from confluent_kafka.admin import AdminClient, ConfigResource

from conftest import BrokerError
from helpers import ADMIN_TIMEOUT_S, by_partition, consume_all, create_topic, produce_confluent

TOPIC = "precious"
PARTITIONS = 2
RECORDS = 2_000
AFTER = 10
# How long a node refusing its damaged metadata store may take to exit.
REFUSAL_EXIT_TIMEOUT_S = 30


def damage_middle(raft: "Path") -> "Path":
    """Flips a byte inside the first record of the quorum's oldest log segment (later records
    follow it): damage in the middle, not a torn tail."""
    segment = sorted(raft.glob("log-*.bin"))[0]
    data = bytearray(segment.read_bytes())
    assert len(data) > 64, f"{segment} too short to damage in the middle"
    data[12] ^= 0xFF
    segment.write_bytes(bytes(data))
    return segment


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_lost_topic_metadata_keeps_every_record(broker, damage):
    """confluent-kafka acknowledges RECORDS; with the broker stopped the quorum's store is deleted,
    or damaged in the middle (the node must then refuse to start, naming the file, until the
    store is moved aside); after a restart a producer (auto-create on) writes AFTER more to the
    same name, and kafka-python reads back all of them, in order per partition. The topic's
    configs come back too (DescribeConfigs): retention decides whether its records live."""
    create_topic(broker.bootstrap, TOPIC, PARTITIONS, {"retention.ms": "-1"})
    first = [{"key": str(i % 7).encode(), "value": f"v{i}".encode()} for i in range(RECORDS)]
    run = produce_confluent(broker.bootstrap, TOPIC, first)
    assert not run.errors, run.errors[:3]
    assert broker.stop() == 0

    raft = broker.data_dir / "meta" / "raft"
    if damage == "missing":
        shutil.rmtree(raft)
    else:
        segment = damage_middle(raft)
        try:
            broker.start()  # the port may answer before the store is opened and refused
        except BrokerError:
            pass
        code = broker.proc.wait(REFUSAL_EXIT_TIMEOUT_S)
        assert code != 0, "a node with a damaged metadata log must refuse to start"
        assert segment.name in broker.log_tail(400), broker.log_tail(40)
        # The operator keeps the damaged store for inspection and lets the node rebuild it.
        raft.rename(raft.with_name("raft.damaged"))
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
