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
import threading
import time

from confluent_kafka import Producer
from kafka import TopicPartition

from conftest import POWER_CUT_ENV, POWER_CUT_EXIT_CODE
from helpers import by_partition, consume_all, create_topic, kafka_python_consumer, produce_confluent

DURABLE_PARTITIONS = 2
# The cut comes once this many records are acknowledged, with more in flight.
CUT_AFTER_ACKS = 3_000
# Bound on the stream: past it the producer only waits for delivery reports.
STREAM_RECORDS_MAX = 50_000
# Records handed to the producer between two polls.
STREAM_POLL_EVERY = 250
# Bound on waiting for CUT_AFTER_ACKS acknowledgements.
STREAM_ACK_WAIT_S = 120.0
# After the cut, unacknowledged records must fail within this (message.timeout.ms).
STREAM_MESSAGE_TIMEOUT_MS = 5_000
STREAM_FLUSH_TIMEOUT_S = 60.0
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


def stream_and_cut(broker, topic: str) -> tuple[dict[bytes, tuple[int, int]], int]:
    """Streams records (acks=all) over DURABLE_PARTITIONS and cuts the power once CUT_AFTER_ACKS
    are acknowledged, while more are in flight. Returns {value: (partition, offset)} of every
    acknowledged record and how many were produced before the cut."""
    acked: dict[bytes, tuple[int, int]] = {}
    failed: list[bytes] = []

    def on_delivery(err, msg):
        if err is None:
            acked[msg.value()] = (msg.partition(), msg.offset())
        else:
            failed.append(msg.value())

    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 2,
                         "message.timeout.ms": STREAM_MESSAGE_TIMEOUT_MS})
    stop = threading.Event()
    sent = 0

    def stream():
        """Produces until told to stop (at most STREAM_RECORDS_MAX), then only polls, which is
        where delivery reports arrive."""
        nonlocal sent
        while not stop.is_set():
            if sent >= STREAM_RECORDS_MAX:
                producer.poll(0.01)
                continue
            try:
                producer.produce(topic, b"d-%06d" % sent, partition=sent % DURABLE_PARTITIONS,
                                 on_delivery=on_delivery)
                sent += 1
            except BufferError:
                producer.poll(0.001)
            if sent % STREAM_POLL_EVERY == 0:
                producer.poll(0)

    streamer = threading.Thread(target=stream, name="power-cut-producer")
    streamer.start()
    deadline = time.monotonic() + STREAM_ACK_WAIT_S
    while len(acked) < CUT_AFTER_ACKS and time.monotonic() < deadline:
        time.sleep(0.001)
    acked_at_cut = len(acked)
    code = broker.power_cut()
    sent_at_cut = sent
    stop.set()
    streamer.join(STREAM_FLUSH_TIMEOUT_S)
    assert not streamer.is_alive()
    assert code == POWER_CUT_EXIT_CODE, f"exit code {code}\n{broker.log_tail()}"
    assert acked_at_cut >= CUT_AFTER_ACKS, f"only {acked_at_cut} acks before the cut"
    remaining = producer.flush(STREAM_FLUSH_TIMEOUT_S)
    assert remaining == 0, f"{remaining} records neither acked nor failed"
    print(f"{sent_at_cut} records produced before the cut, {acked_at_cut} acked by then, "
          f"{len(acked)} acked in all, {len(failed)} failed")
    return acked, sent_at_cut


def test_acknowledged_records_survive_a_power_cut(broker_factory):
    """A producer streams acks=all records under the default flush policy (every ack after
    fsync); the power is cut mid-stream. After a restart every acknowledged record is at the
    partition and offset its delivery report named, and each partition is dense from 0 (records
    in flight at the cut may or may not be there). With bramble.fsync.on.ack=false on the topic
    this test fails (checked by hand: thousands of acknowledged records lost)."""
    broker = power_mode_broker(broker_factory)
    topic = "durable"
    create_topic(broker.bootstrap, topic, DURABLE_PARTITIONS)
    acked, sent_at_cut = stream_and_cut(broker, topic)
    assert len(acked) < sent_at_cut, "every record was acknowledged: the cut came after the stream"

    broker.start()
    assert len(POWER_CUT_LINE.findall(broker.log_path.read_text(errors="replace"))) == 1

    ends = {p: log_end(broker.bootstrap, topic, p) for p in range(DURABLE_PARTITIONS)}
    got = consume_all(broker.bootstrap, topic, DURABLE_PARTITIONS, sum(ends.values()))
    at = {(m.partition, m.offset): m.value for m in got}
    lost = [(v, where) for v, where in acked.items() if at.get(where) != v]
    assert not lost, f"{len(lost)} acknowledged records lost or moved, first {lost[:5]}"
    for p, recs in by_partition(got).items():
        assert [m.offset for m in recs] == list(range(ends[p])), f"partition {p} not dense"


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
