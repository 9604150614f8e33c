"""Produce with confluent-kafka (librdkafka 2.16) in every compression codec, read back with
kafka-python 3.0.12.

The broker stores batches as produced and never decompresses them, so this proves the bytes
librdkafka wrote reach a different client intact: keys, values, headers, timestamps, partition
placement, and dense offsets that match the delivery reports. It also checks the offset APIs
(ListOffsets earliest/latest/by-timestamp) through both clients."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as CTopicPartition
from kafka import TopicPartition

from helpers import (ADMIN_TIMEOUT_S, by_partition, consume_all, create_topic, fetch_batches,
                     kafka_python_consumer, produce_confluent)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
# Record batch attributes bits 0-2.
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
PARTITIONS = 3
RECORDS = 6_000
DISTINCT_KEYS = 300


def make_records(codec: str, base_ts: int) -> list[dict]:
    return [
        {
            "key": f"key-{i % DISTINCT_KEYS:03d}".encode(),
            # Repetitive enough to compress, distinct per record.
            "value": f"{codec}|record {i:05d}|".encode() + b"payload " * (i % 13),
            "headers": [("idx", str(i).encode()), ("codec", codec.encode()), ("empty", b"")],
            "timestamp": base_ts + i,
        }
        for i in range(RECORDS)
    ]


@pytest.fixture(scope="module")
def base_ts() -> int:
    # Recent, so no retention setting can consider these records expired; 1 ms apart.
    return int(time.time() * 1000) - 60_000


def exact_offset_for_time(part_records, target_ts):
    """Kafka's ListOffsets answer: the first offset whose timestamp >= target, else None."""
    for r in part_records:
        if r.timestamp >= target_ts:
            return r.offset
    return None


@pytest.mark.parametrize("codec", CODECS)
def test_codec_roundtrip_confluent_to_kafka_python(broker, codec, base_ts):
    """6,000 keyed records with headers and explicit timestamps, produced with acks=all and
    compression.type=<codec> to a 3-partition topic, are read back by kafka-python exactly:
    same key/value/headers/timestamp, every key on one partition, offsets dense from 0 in each
    partition and equal to the offsets the delivery reports gave; earliest/latest offsets agree
    in both clients; offsets_for_times answers as Kafka does (batch granularity tolerated for
    compressed batches, see test_offsets_for_times_compressed_exact)."""
    topic = f"codec-{codec}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    records = make_records(codec, base_ts)

    run = produce_confluent(broker.bootstrap, topic, records, {"compression.type": codec})
    assert not run.errors, f"{len(run.errors)} delivery errors, first: {run.errors[0].error}"

    got = consume_all(broker.bootstrap, topic, PARTITIONS, RECORDS)
    assert len(got) == RECORDS, f"read {len(got)} of {RECORDS} records"

    # Every record, field by field, and its position matches its delivery report.
    key_partitions: dict[bytes, set[int]] = {}
    seen = set()
    for msg in got:
        headers = dict(msg.headers)
        i = int(headers["idx"])
        assert i not in seen, f"record {i} delivered twice"
        seen.add(i)
        want = records[i]
        assert msg.key == want["key"]
        assert msg.value == want["value"]
        assert msg.headers == [(k, v) for k, v in want["headers"]]
        assert msg.timestamp == want["timestamp"]
        assert msg.timestamp_type == 0, "CreateTime expected"
        d = run.deliveries[i]
        assert (msg.partition, msg.offset) == (d.partition, d.offset), f"record {i}"
        key_partitions.setdefault(msg.key, set()).add(msg.partition)
    assert all(len(p) == 1 for p in key_partitions.values()), "a key spread over partitions"

    parts = by_partition(got)
    assert sorted(parts) == list(range(PARTITIONS)), "some partition got no records"
    for p, recs in parts.items():
        assert [r.offset for r in recs] == list(range(len(recs))), f"partition {p} not dense"
        # Records of one key keep produce order within their partition.
        last_idx: dict[bytes, int] = {}
        for r in recs:
            i = int(dict(r.headers)["idx"])
            assert last_idx.get(r.key, -1) < i, f"key {r.key} out of order on partition {p}"
            last_idx[r.key] = i

    check_stored_codec(broker.bootstrap, topic, codec, PARTITIONS)
    counts = {p: len(recs) for p, recs in parts.items()}
    check_watermarks(broker.bootstrap, topic, counts)
    check_offsets_for_times(broker.bootstrap, topic, codec, parts, exact=(codec == "none"))


def check_stored_codec(bootstrap, topic, codec, partitions):
    """The broker kept the producer's compression: batches are stored and served as produced.
    librdkafka sends a batch uncompressed when compression would not shrink it (a one-record
    batch, say), so each partition must hold at least one batch in the codec and every other
    batch must be uncompressed — a broker that recompressed or decompressed would fail either."""
    for p in range(partitions):
        err, batches = fetch_batches(bootstrap, topic, p, 0)
        assert err == 0 and batches, f"raw fetch of partition {p}: error {err}"
        codecs = [b.codec for b in batches]
        assert CODEC_IDS[codec] in codecs, f"partition {p}: no batch uses {codec}: {codecs}"
        assert set(codecs) <= {CODEC_IDS[codec], CODEC_IDS["none"]}, f"partition {p}: {codecs}"


def check_watermarks(bootstrap, topic, counts):
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer = kafka_python_consumer(bootstrap)
    try:
        assert consumer.beginning_offsets(tps) == {tp: 0 for tp in tps}
        assert consumer.end_offsets(tps) == {tp: counts[tp.partition] for tp in tps}
    finally:
        consumer.close()

    # group.id is required by the Python binding; no group operation is made.
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bramble-compat-watermarks",
                  "enable.auto.commit": False})
    try:
        for p in range(PARTITIONS):
            lo, hi = c.get_watermark_offsets(CTopicPartition(topic, p), timeout=ADMIN_TIMEOUT_S)
            assert (lo, hi) == (0, counts[p]), f"partition {p}"
    finally:
        c.close()


def time_targets(part_recs, all_timestamps):
    """Per partition: before everything, each partition's own first/middle/last timestamp,
    timestamps that fell on other partitions (so the answer is the next record here), and past
    the end."""
    own = [r.timestamp for r in part_recs]
    others = sorted(set(all_timestamps) - set(own))
    picks = [own[0], own[len(own) // 2], own[-1]]
    picks += [others[k] for k in (0, len(others) // 3, 2 * len(others) // 3, -1)] if others else []
    return [0] + picks + [own[-1] + 1]


def check_offsets_for_times(bootstrap, topic, codec, parts, exact: bool):
    all_ts = [r.timestamp for recs in parts.values() for r in recs]
    consumer = kafka_python_consumer(bootstrap)
    try:
        for p, recs in parts.items():
            tp = TopicPartition(topic, p)
            for target in time_targets(recs, all_ts):
                want = exact_offset_for_time(recs, target)
                answer = consumer.offsets_for_times({tp: target})[tp]
                got = None if answer is None else answer.offset
                where = f"{codec} partition {p} target ts {target}"
                if want is None or exact:
                    assert got == want, f"{where}: got {got}, Kafka answers {want}"
                    if want is not None:
                        assert answer.timestamp == recs[want].timestamp, where
                    continue
                # Compressed: the broker may answer with the batch that holds the answer.
                assert got is not None and got <= want, f"{where}: got {got}, exact {want}"
                err, batches = fetch_batches(bootstrap, topic, p, got)
                assert err == 0 and batches, f"{where}: fetch at {got} gave error {err}"
                first = batches[0]
                assert first.base_offset <= got <= want <= first.last_offset, (
                    f"{where}: answer {got} is not in the batch holding {want}: {first}")
    finally:
        consumer.close()


EXACT_XFAIL_REASON = (
    "bramble never decompresses batches, so ListOffsets by timestamp may answer with the "
    "base offset of the batch holding the record; Kafka decompresses and answers the exact "
    "record")


@pytest.mark.parametrize("codec", [c for c in CODECS if c != "none"])
def test_offsets_for_times_compressed_exact(broker, codec, base_ts):
    """Kafka's exact offsets_for_times answer (first record with ts >= target) inside compressed
    batches. Produce and read-back must work; only the exactness itself is an expected failure
    on bramble (xfail at that point, so any other failure still fails the test)."""
    topic = f"codec-exact-{codec}"
    create_topic(broker.bootstrap, topic, 1)
    records = [{"value": b"v%d|" % i + b"payload " * 20, "timestamp": base_ts + i}
               for i in range(2_000)]
    run = produce_confluent(broker.bootstrap, topic, records,
                            {"compression.type": codec, "linger.ms": 50})
    assert not run.errors
    got = consume_all(broker.bootstrap, topic, 1, len(records))
    assert len(got) == len(records)
    try:
        check_offsets_for_times(broker.bootstrap, topic, codec, {0: got}, exact=True)
    except AssertionError as e:
        pytest.xfail(f"{EXACT_XFAIL_REASON}: {str(e).splitlines()[0]}")
