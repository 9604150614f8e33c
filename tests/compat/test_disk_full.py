"""A full disk that is freed again, seen by real clients (confluent-kafka), with the data dir on
a small tmpfs (mounting needs root; without it the test skips and says why).

Contract under test: while the disk is full, produce fails (KAFKA_STORAGE_ERROR) and
CreateTopics refuses to create partitions that cannot be written; once space is freed, produce
succeeds again without a restart, offsets continue after the last acknowledged record, and every
acknowledged record reads back in order."""

from __future__ import annotations

import errno
import subprocess

import pytest
from confluent_kafka import KafkaError, KafkaException

from helpers import consume_all, create_topic, produce_confluent

TMPFS_BYTES = 16 * 1024 * 1024
FILL_BLOCK_BYTES = 64 * 1024
RECORDS = 200
# While the disk is full a record fails after this long (librdkafka retries storage errors).
FULL_MESSAGE_TIMEOUT_MS = 3_000
# Once space is back, records have this long to get through (one re-check a second).
RESUMED_MESSAGE_TIMEOUT_MS = 30_000
MOUNT_TIMEOUT_S = 10.0


@pytest.fixture
def tmpfs_broker(broker_factory):
    broker = broker_factory(start=False)
    broker.data_dir.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(broker.data_dir)],
        capture_output=True, text=True, timeout=MOUNT_TIMEOUT_S)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the data dir: {mounted.stderr.strip()}")
    try:
        yield broker.start()
    finally:
        # Lazy: the broker is stopped by broker_factory's teardown, after this one.
        subprocess.run(["umount", "-l", str(broker.data_dir)], timeout=MOUNT_TIMEOUT_S)


def fill(path) -> None:
    """Writes a ballast file until the filesystem refuses more."""
    block = b"\xee" * FILL_BLOCK_BYTES
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    with open(path, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e


def values(tag: str) -> list[dict]:
    return [{"value": b"%s-%05d" % (tag.encode(), i)} for i in range(RECORDS)]


def test_produce_resumes_after_a_full_disk_is_freed(tmpfs_broker):
    broker = tmpfs_broker
    topic = "fills"
    create_topic(broker.bootstrap, topic, 1)
    before = produce_confluent(broker.bootstrap, topic, values("before"))
    assert not before.errors, before.errors[:3]

    ballast = broker.data_dir / "ballast"
    fill(ballast)
    full = produce_confluent(broker.bootstrap, topic, values("full"),
                             {"message.timeout.ms": FULL_MESSAGE_TIMEOUT_MS})
    assert full.errors, "produce to a full disk must fail"
    with pytest.raises(KafkaException) as refused:
        create_topic(broker.bootstrap, "born-full", 1)
    assert refused.value.args[0].code() == KafkaError.KAFKA_STORAGE_ERROR, refused.value

    ballast.unlink()
    after = produce_confluent(broker.bootstrap, topic, values("after"),
                              {"message.timeout.ms": RESUMED_MESSAGE_TIMEOUT_MS})
    assert not after.errors, after.errors[:3]

    acked = sorted((d.offset, run_values[d.index]["value"])
                   for run, run_values in ((before, values("before")), (full, values("full")),
                                           (after, values("after")))
                   for d in run.acked)
    assert [o for o, _ in acked] == list(range(len(acked))), "dense offsets, no reuse"
    got = consume_all(broker.bootstrap, topic, 1, len(acked))
    assert [(m.offset, m.value) for m in got] == acked
