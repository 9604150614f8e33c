"""kcat (Debian bookworm: kcat 1.7.1 on librdkafka 2.0.2) against bramble.

This old librdkafka is strict about ApiVersions and Metadata encodings (see
docs/COMPAT.md), so "kcat works at all" is itself a compatibility check."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import NODE_ID
from helpers import create_topic, produce_confluent

# Bound on one kcat invocation.
KCAT_TIMEOUT_S = 120
KCAT = shutil.which("kcat")

pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat not installed: run scripts/setup.sh")


def kcat(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([KCAT, *args], input=stdin, capture_output=True,
                          timeout=KCAT_TIMEOUT_S)


def test_kcat_metadata_lists_broker_and_topics(broker):
    """`kcat -L` gets through ApiVersions and Metadata and shows node 1 at exactly the address we
    gave `--listen` (clients connect to the advertised address), plus both topics with their
    partition counts, each partition led by node 1 with replicas and ISR [1]."""
    create_topic(broker.bootstrap, "kcat-meta-a", 1)
    create_topic(broker.bootstrap, "kcat-meta-b", 3)

    res = kcat("-b", broker.bootstrap, "-L", "-J", "-m", "30")
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    md = json.loads(res.stdout)

    assert md["brokers"] == [{"id": NODE_ID, "name": broker.bootstrap}], md["brokers"]
    topics = {t["topic"]: t for t in md["topics"]}
    for name, count in (("kcat-meta-a", 1), ("kcat-meta-b", 3)):
        assert name in topics, f"{name} missing from {sorted(topics)}"
        t = topics[name]
        assert "error" not in t, t
        parts = sorted(t["partitions"], key=lambda p: p["partition"])
        assert [p["partition"] for p in parts] == list(range(count))
        for p in parts:
            assert "error" not in p, p
            assert p["leader"] == NODE_ID, p
            assert [r["id"] for r in p["replicas"]] == [NODE_ID], p
            assert [r["id"] for r in p["isrs"]] == [NODE_ID], p

    # The plain-text listing too: it is what people read.
    res = kcat("-b", broker.bootstrap, "-L", "-m", "30")
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    text = res.stdout.decode()
    assert f"broker {NODE_ID} at {broker.bootstrap}" in text, text
    assert 'topic "kcat-meta-b" with 3 partitions' in text, text


def test_kcat_produce_then_consume_10000_lines_in_order(broker):
    """10,000 distinct lines produced with `kcat -P` (acks=all, librdkafka batching) come back
    from `kcat -C -o beginning -e` exactly, in order, on a single-partition topic."""
    topic = "kcat-lines"
    create_topic(broker.bootstrap, topic, 1)
    lines = [f"line-{i:05d}-{'x' * (i % 37)}" for i in range(10_000)]

    res = kcat("-b", broker.bootstrap, "-P", "-t", topic, "-X", "acks=all",
               stdin=("\n".join(lines) + "\n").encode())
    stderr = res.stderr.decode(errors="replace")
    assert res.returncode == 0, stderr
    assert "failed" not in stderr.lower(), stderr

    res = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q")
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    got = res.stdout.decode().splitlines()
    assert len(got) == len(lines)
    first_diff = next((i for i, (a, b) in enumerate(zip(got, lines)) if a != b), None)
    assert first_diff is None, f"line {first_diff}: got {got[first_diff]!r}, want {lines[first_diff]!r}"

    # Offsets and the partition as kcat reports them: dense from 0.
    res = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
               "-f", "%p %o %s\n")
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    triples = [line.split(" ", 2) for line in res.stdout.decode().splitlines()]
    assert [(int(p), int(o)) for p, o, _ in triples] == [(0, i) for i in range(len(lines))]


KCAT_CODEC_RECORDS = 1_000


def test_kcat_consumes_batches_of_every_codec(broker):
    """Debian's kcat (librdkafka 2.0.2) reads batches that confluent-kafka (librdkafka 2.16)
    produced with each codec: the broker serves compressed batches as stored, and the old
    client decompresses gzip, snappy, lz4 and zstd from them. Values come back in order."""
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        topic = f"kcat-codec-{codec}"
        create_topic(broker.bootstrap, topic, 1)
        values = [f"{codec} {i:04d} ".encode() + b"payload " * 10
                  for i in range(KCAT_CODEC_RECORDS)]
        run = produce_confluent(broker.bootstrap, topic, [{"value": v} for v in values],
                                {"compression.type": codec})
        assert not run.errors, f"{codec}: {run.errors[0].error}"
        res = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q")
        assert res.returncode == 0, f"{codec}: {res.stderr.decode(errors='replace')}"
        got = res.stdout.splitlines()
        assert got == values, f"{codec}: got {len(got)} records, first {got[:1]}"
