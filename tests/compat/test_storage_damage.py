"""Damage to a sealed segment on disk, seen by real consumers (confluent-kafka / librdkafka and
kafka-python).

Contract under test: a Fetch that meets a corrupt stored batch (a payload byte changed, or a
length field that no longer fits the file) answers the partition with CORRUPT_MESSAGE, which
librdkafka hands to the application as an error; the consumer neither receives the damaged bytes
nor waits forever without a word (librdkafka and kafka-python both retry KAFKA_STORAGE_ERROR
silently, and both raise CORRUPT_MESSAGE to the application). The records
before the damaged batch are delivered intact, and `bramble status` lists the damage."""

from __future__ import annotations

import struct
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError
from kafka import TopicPartition
from kafka.errors import CorruptRecordError

from conftest import BRAMBLE_BIN
from helpers import create_topic, kafka_python_consumer, produce_confluent

# Enough 1 KiB records to fill more than one 1 MiB segment (the smallest segment.bytes).
RECORDS = 1_500
VALUE_BYTES = 1_000
SEGMENT_BYTES = 1_048_576
# Producer batch.size: about ten records a batch.
BATCH_BYTES = 10_000
# Bound on the consumer reaching the damaged batch and reporting it.
CONSUME_TIMEOUT_S = 30.0
# Bound on `bramble status`.
STATUS_TIMEOUT_S = 30.0
# Byte offsets inside a stored v2 batch header.
LENGTH_AT = 8
LOG_OVERHEAD = 12


def value(i: int) -> bytes:
    return (b"%06d-" % i).ljust(VALUE_BYTES, b"x")


def batches(path) -> list[tuple[int, int, int]]:
    """(position, base offset, total bytes) of every batch in a `.log` file."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos + LOG_OVERHEAD <= len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        out.append((pos, base, length + LOG_OVERHEAD))
        pos += length + LOG_OVERHEAD
    return out


def patch(path, at: int, raw: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(raw)


def consume_until_error(bootstrap: str, topic: str) -> tuple[list, KafkaError | None]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    got, error = [], None
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    try:
        while time.monotonic() < deadline and error is None:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                error = msg.error()
                continue
            got.append(msg)
    finally:
        consumer.close()
    return got, error


def damaged_topic(broker, topic: str, damage: str):
    """A topic whose first (sealed) segment has one damaged batch in its middle; returns the
    segment file, the batch's byte position and its base offset. The broker is running."""
    create_topic(broker.bootstrap, topic, 1, {"segment.bytes": str(SEGMENT_BYTES)})
    # Small batches, so the damaged one sits among others (not in the newest sealed segment's
    # tail, which recovery CRC-checks and cuts).
    run = produce_confluent(broker.bootstrap, topic, [{"value": value(i)} for i in range(RECORDS)],
                            {"linger.ms": 0, "batch.size": BATCH_BYTES})
    assert not run.errors, run.errors[:3]
    broker.stop()

    part = broker.data_dir / f"{topic}-0"
    sealed = sorted(part.glob("*.log"))[0]
    assert len(list(part.glob("*.log"))) >= 2, "the first segment is sealed"
    found = batches(sealed)
    pos, bad_base, total = found[len(found) // 2]
    if damage == "payload":
        # Inside the last record's value: the bytes still parse, only the CRC tells.
        patch(sealed, pos + total - VALUE_BYTES // 2, b"\xa5")
    else:
        patch(sealed, pos + LENGTH_AT, struct.pack(">i", 0x7FFF_0000))
    broker.start()
    return sealed, pos, bad_base


@pytest.mark.parametrize("damage", ["payload", "length"])
def test_consumer_gets_an_error_at_a_corrupt_sealed_batch(broker, damage):
    topic = f"damaged-{damage}"
    sealed, pos, bad_base = damaged_topic(broker, topic, damage)

    got, error = consume_until_error(broker.bootstrap, topic)
    assert error is not None, (
        f"no error within {CONSUME_TIMEOUT_S}s; {len(got)} records delivered")
    assert error.code() == KafkaError.INVALID_MSG, error  # CORRUPT_MESSAGE (2)
    assert [m.offset() for m in got] == list(range(bad_base)), "everything before it, in order"
    assert all(m.value() == value(m.offset()) for m in got), "no damaged bytes delivered"

    status = subprocess.run([str(BRAMBLE_BIN), "status", "-b", broker.bootstrap],
                            capture_output=True, text=True, timeout=STATUS_TIMEOUT_S, check=True)
    line = next(l for l in status.stdout.splitlines() if l.startswith("bramble.storage.damage"))
    assert f"{topic}-0: corrupt batch in {sealed.name} at byte {pos}" in line, line


def test_kafka_python_raises_corrupt_record_error(broker):
    """kafka-python raises CorruptRecordError at a batch whose length field is damaged, after the
    records before it. (A changed payload it would catch itself: it checks CRCs by default.)"""
    topic = "damaged-kafka-python"
    _, _, bad_base = damaged_topic(broker, topic, "length")
    consumer = kafka_python_consumer(broker.bootstrap)
    got = []
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        with pytest.raises(CorruptRecordError):
            deadline = time.monotonic() + CONSUME_TIMEOUT_S
            while time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=500).values():
                    got.extend(records)
    finally:
        consumer.close()
    assert [m.offset for m in got] == list(range(bad_base))
    assert all(m.value == value(m.offset) for m in got)


# Scrubber pause for the test broker, and the bound on it reporting the damage.
SCRUB_INTERVAL_MS = 200
SCRUB_REPORT_TIMEOUT_S = 30.0


def test_scrubber_reports_damage_no_consumer_read(broker_factory):
    """With the scrubber on, a flipped byte in a sealed segment shows in `bramble status` without
    any client reading it."""
    broker = broker_factory({"scrub_interval_ms": SCRUB_INTERVAL_MS})
    topic = "scrubbed"
    sealed, pos, _ = damaged_topic(broker, topic, "payload")

    deadline = time.monotonic() + SCRUB_REPORT_TIMEOUT_S
    line = ""
    while time.monotonic() < deadline:
        status = subprocess.run([str(BRAMBLE_BIN), "status", "-b", broker.bootstrap],
                                capture_output=True, text=True, timeout=STATUS_TIMEOUT_S,
                                check=True)
        line = next(l for l in status.stdout.splitlines()
                    if l.startswith("bramble.storage.damage"))
        if "corrupt batch" in line:
            break
        time.sleep(SCRUB_INTERVAL_MS / 1000)
    assert f"{topic}-0: corrupt batch in {sealed.name} at byte {pos}" in line, line
    assert "1 found" in line, line
