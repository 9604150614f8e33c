"""Damage to a sealed segment on disk, seen by a real consumer (confluent-kafka / librdkafka).

Contract under test: a Fetch that meets a corrupt stored batch (a payload byte changed, or a
length field that no longer fits the file) answers the partition with CORRUPT_MESSAGE, which
librdkafka hands to the application as an error; the consumer neither receives the damaged bytes
nor waits forever without a word (librdkafka retries KAFKA_STORAGE_ERROR silently). The records
before the damaged batch are delivered intact, and `bramble status` lists the damage."""

from __future__ import annotations

import struct
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError

from conftest import BRAMBLE_BIN
from helpers import create_topic, produce_confluent

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


@pytest.mark.parametrize("damage", ["payload", "length"])
def test_consumer_gets_an_error_at_a_corrupt_sealed_batch(broker, damage):
    topic = f"damaged-{damage}"
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


# Scrubber pause for the test broker, and the bound on it reporting the damage.
SCRUB_INTERVAL_MS = 200
SCRUB_REPORT_TIMEOUT_S = 30.0


def test_scrubber_reports_damage_no_consumer_read(broker_factory):
    """With the scrubber on, a flipped byte in a sealed segment shows in `bramble status` without
    any client reading it."""
    broker = broker_factory({"scrub_interval_ms": SCRUB_INTERVAL_MS})
    topic = "scrubbed"
    create_topic(broker.bootstrap, topic, 1, {"segment.bytes": str(SEGMENT_BYTES)})
    run = produce_confluent(broker.bootstrap, topic, [{"value": value(i)} for i in range(RECORDS)],
                            {"linger.ms": 0, "batch.size": BATCH_BYTES})
    assert not run.errors, run.errors[:3]
    broker.stop()
    sealed = sorted((broker.data_dir / f"{topic}-0").glob("*.log"))[0]
    pos, _, total = batches(sealed)[3]
    patch(sealed, pos + total - VALUE_BYTES // 2, b"\x5a")
    broker.start()

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
