"""Retention and compaction seen by real clients (issue 3, acceptance 5).

Each test runs a broker with a fast retention/cleaner schedule, produces with confluent-kafka
(librdkafka), waits for the background task to act, then checks the data directory (deleted or
rewritten segment files) and reads the topic from the beginning with kcat (librdkafka 2.0.2,
which must also cope with the offset gaps compaction leaves)."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from helpers import create_topic, produce_confluent

KCAT = shutil.which("kcat")
# Bound on one kcat read-back.
KCAT_TIMEOUT_S = 120
# Bound on waiting for retention or the cleaner to act.
CLEANUP_WAIT_S = 60.0
# Broker schedule: retention and the cleaner every this many ms.
CHECK_MS = 200

pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat not installed: run scripts/setup.sh")


def read_all(bootstrap: str, topic: str) -> list[tuple[int, str, str | None]]:
    """(offset, key, value or None for a tombstone) of partition 0 from the beginning."""
    res = subprocess.run(
        [KCAT, "-C", "-b", bootstrap, "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q",
         "-f", "%o|%k|%S|%s\n"],
        capture_output=True, timeout=KCAT_TIMEOUT_S)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    out = []
    for line in res.stdout.decode().splitlines():
        offset, key, length, value = line.split("|", 3)
        out.append((int(offset), key, None if int(length) < 0 else value))
    return out


def segment_files(broker, topic: str) -> list[str]:
    return sorted(p.name for p in (broker.data_dir / f"{topic}-0").glob("*.log"))


def watermarks(bootstrap: str, topic: str) -> tuple[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "wm"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
    finally:
        c.close()


def wait_for(what: str, check) -> None:
    deadline = time.monotonic() + CLEANUP_WAIT_S
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {CLEANUP_WAIT_S}s waiting for {what}")


def test_retention_deletes_segments_and_readers_see_the_rest(broker_factory):
    """A 1 MiB-segment topic with retention.bytes=2 MiB gets ~6 MiB: retention deletes the oldest
    segment files from disk, the earliest offset moves to the first surviving segment, and kcat
    reading from the beginning gets exactly the records from there to the end, in order."""
    broker = broker_factory({"retention_check_ms": CHECK_MS})
    topic = "retained"
    create_topic(broker.bootstrap, topic, 1, {"segment.bytes": "1048576",
                                              "retention.bytes": "2097152"})
    count, size = 600, 10_000
    produce_confluent(broker.bootstrap, topic,
                      [{"key": str(i).encode(), "value": b"%08d" % i + b"x" * size}
                       for i in range(count)])
    wait_for("retention to bring the partition under retention.bytes",
             lambda: len(segment_files(broker, topic)) <= 4)

    low, high = watermarks(broker.bootstrap, topic)
    assert high == count
    files = segment_files(broker, topic)
    assert low > 0 and f"{0:020}.log" not in files, "the oldest segment file is gone from disk"
    assert files[0] == f"{low:020}.log", (low, files)
    on_disk = sum((broker.data_dir / f"{topic}-0" / f).stat().st_size for f in files)
    assert on_disk <= 2 * 1048576 + 1048576, on_disk

    got = read_all(broker.bootstrap, topic)
    assert [o for o, _, _ in got] == list(range(low, count))
    assert all(k == str(o) and v.startswith("%08d" % o) for o, k, v in got)


def test_compaction_keeps_latest_value_per_key(broker_factory):
    """50 keys x 20 versions (~4 MiB, 1 MiB segments, segment.ms=1000 so the rest is sealed
    soon), then tombstones for 10 keys, to a cleanup.policy=compact topic. After the cleaner
    runs, kcat from the beginning sees exactly one record per key, the latest, at the offset it
    was produced at (tombstones included), and the log files shrank; once delete.retention.ms
    has passed, the tombstoned keys are gone too."""
    broker = broker_factory({"retention_check_ms": CHECK_MS, "compaction_check_ms": CHECK_MS})
    topic = "compacted"
    create_topic(broker.bootstrap, topic, 1, {
        "cleanup.policy": "compact", "segment.bytes": "1048576", "segment.ms": "1000",
        "delete.retention.ms": "6000"})
    keys, versions, pad = 50, 20, 4000
    records = [{"key": f"k{k}".encode(), "value": f"k{k}-v{v}-".encode() + b"p" * pad}
               for v in range(versions) for k in range(keys)]
    records += [{"key": f"k{k}".encode(), "value": None} for k in range(10)]
    run = produce_confluent(broker.bootstrap, topic, records)
    offset_of = {}
    for d in run.acked:
        offset_of[records[d.index]["key"].decode()] = d.offset
    produced_bytes = sum(p.stat().st_size for p in (broker.data_dir / f"{topic}-0").glob("*.log"))

    def one_per_key():
        got = read_all(broker.bootstrap, topic)
        return len(got) == keys and len({k for _, k, _ in got}) == keys

    wait_for("the cleaner to leave one record per key", one_per_key)
    got = read_all(broker.bootstrap, topic)
    for offset, key, value in got:
        k = int(key[1:])
        assert offset == offset_of[key], (key, offset)
        if k < 10:
            assert value is None, f"{key} should read as a tombstone"
        else:
            assert value is not None and value.startswith(f"{key}-v{versions - 1}-"), key
    after_bytes = sum(p.stat().st_size for p in (broker.data_dir / f"{topic}-0").glob("*.log"))
    assert after_bytes < produced_bytes / 5, (produced_bytes, after_bytes)
    assert not list((broker.data_dir / f"{topic}-0").glob("*.cleaned"))
    assert not list((broker.data_dir / f"{topic}-0").glob("*.swap"))

    wait_for("tombstones to go after delete.retention.ms",
             lambda: len(read_all(broker.bootstrap, topic)) == keys - 10)
    got = read_all(broker.bootstrap, topic)
    assert sorted(k for _, k, _ in got) == sorted(f"k{k}" for k in range(10, keys))
    assert all(v.startswith(f"{k}-v{versions - 1}-") for _, k, v in got)
