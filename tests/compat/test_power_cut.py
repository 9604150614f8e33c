"""Power-cut mode of one real node (BRAMBLE_TEST_POWER_CUT=1, src/io/power_cut.rs), observed
through real clients.

Contract under test: SIGUSR2 cuts every file the node wrote back to its last sync (and undoes
unsynced creations, renames and removals), logs one `power cut: ...` line and exits 86 at once; a
restart on the same data dir is the power coming back. Records acknowledged under the default
flush policy (fsync before the ack) all survive at their offsets; records a topic with
`bramble.fsync.on.ack=false` acknowledged but nothing synced since are gone, which proves the cut
really cuts, and the node serves again from its durable end."""

from __future__ import annotations

import re

from kafka import TopicPartition

from conftest import POWER_CUT_ENV, POWER_CUT_EXIT_CODE
from helpers import by_partition, consume_all, create_topic, kafka_python_consumer, produce_confluent

DURABLE_PARTITIONS = 2
DURABLE_RECORDS = 3_000
LAZY_SYNCED = 400
LAZY_UNSYNCED = 600
LAZY_AFTER = 100
# Long enough that the periodic sync of fsync_on_ack=false logs never runs during the test.
FLUSH_MS_MAX = 3_600_000
POWER_CUT_LINE = re.compile(r"power cut: (\d+) files .*\((\d+) unsynced bytes dropped")


def power_mode_broker(broker_factory, config: dict | None = None):
    """A started broker in power-cut mode."""
    broker = broker_factory(config, start=False)
    broker.env[POWER_CUT_ENV] = "1"
    return broker.start()


def cut_and_restart(broker) -> tuple[int, int]:
    """Cuts the power, checks the exit code and the log line, and starts the node again on the
    same data dir. Returns (files cut, bytes dropped) from the log line."""
    code = broker.power_cut()
    assert code == POWER_CUT_EXIT_CODE, f"exit code {code}\n{broker.log_tail()}"
    lines = POWER_CUT_LINE.findall(broker.log_path.read_text(errors="replace"))
    assert len(lines) == 1, f"one power cut line expected, got {lines}\n{broker.log_tail()}"
    broker.start()
    return int(lines[0][0]), int(lines[0][1])


def log_end(bootstrap: str, topic: str, partition: int) -> int:
    consumer = kafka_python_consumer(bootstrap)
    try:
        tp = TopicPartition(topic, partition)
        return consumer.end_offsets([tp])[tp]
    finally:
        consumer.close()


def values(n: int, tag: str) -> list[dict]:
    return [{"value": b"%s-%d" % (tag.encode(), i), "partition": 0} for i in range(n)]


def test_acknowledged_records_survive_a_power_cut(broker_factory):
    """acks=all records produced under the default flush policy (every ack after fsync) are all
    read back after SIGUSR2 and a restart, each at the partition and offset its delivery report
    named, and each partition is dense from 0."""
    broker = power_mode_broker(broker_factory)
    topic = "durable"
    create_topic(broker.bootstrap, topic, DURABLE_PARTITIONS)
    records = [{"value": b"d-%d" % i, "partition": i % DURABLE_PARTITIONS}
               for i in range(DURABLE_RECORDS)]
    run = produce_confluent(broker.bootstrap, topic, records)
    assert not run.errors, run.errors[:3]

    cut_and_restart(broker)

    got = consume_all(broker.bootstrap, topic, DURABLE_PARTITIONS, DURABLE_RECORDS)
    at = {(m.partition, m.offset): m.value for m in got}
    lost = [(d.partition, d.offset, records[d.index]["value"]) for d in run.acked
            if at.get((d.partition, d.offset)) != records[d.index]["value"]]
    assert not lost, f"{len(lost)} acknowledged records lost or moved, first {lost[:5]}"
    for p, recs in by_partition(got).items():
        assert [m.offset for m in recs] == list(range(len(recs))), f"partition {p} not dense"


def test_unsynced_acknowledged_records_are_cut(broker_factory):
    """With bramble.fsync.on.ack=false, records synced by a clean restart survive the cut while
    records acknowledged after it (readable before the cut, never synced) are gone; the node
    restarts cleanly, and new records continue from the durable end."""
    broker = power_mode_broker(broker_factory, {"flush_ms_max": FLUSH_MS_MAX})
    topic = "lazy"
    create_topic(broker.bootstrap, topic, 1, {"bramble.fsync.on.ack": "false"})
    synced = values(LAZY_SYNCED, "synced")
    assert not produce_confluent(broker.bootstrap, topic, synced).errors
    broker.restart()  # a clean stop syncs every log
    unsynced = values(LAZY_UNSYNCED, "unsynced")
    run = produce_confluent(broker.bootstrap, topic, unsynced)
    assert not run.errors, run.errors[:3]
    assert log_end(broker.bootstrap, topic, 0) == LAZY_SYNCED + LAZY_UNSYNCED

    files, dropped = cut_and_restart(broker)
    assert files >= 1 and dropped > 0, f"the cut dropped nothing: {files} files, {dropped} bytes"

    got = consume_all(broker.bootstrap, topic, 1, LAZY_SYNCED + LAZY_UNSYNCED)
    assert [m.value for m in got] == [r["value"] for r in synced], (
        f"expected exactly the {LAZY_SYNCED} synced records, got {len(got)}")
    assert [m.offset for m in got] == list(range(LAZY_SYNCED))
    assert log_end(broker.bootstrap, topic, 0) == LAZY_SYNCED
    after = produce_confluent(broker.bootstrap, topic, values(LAZY_AFTER, "after"))
    assert not after.errors, after.errors[:3]
    offsets = sorted(d.offset for d in after.deliveries.values())
    assert offsets == list(range(LAZY_SYNCED, LAZY_SYNCED + LAZY_AFTER))
