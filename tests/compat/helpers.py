"""Client-side helpers shared by the compatibility tests: topic admin and produce through
confluent-kafka (librdkafka), read-back through kafka-python, and a tiny raw Fetch v4 client that
reports record-batch boundaries (which neither client exposes)."""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, TopicPartition

# Bound on one admin call (create/delete topic, metadata).
ADMIN_TIMEOUT_S = 30.0
# Bound on waiting for all delivery reports of one produce run.
FLUSH_TIMEOUT_S = 120.0
# kafka-python: stop iterating after this long without a new record.
CONSUMER_IDLE_TIMEOUT_MS = 15_000
# Bound on one whole read-back, however many records arrive.
CONSUME_TIMEOUT_S = 180.0
# Bound on a raw request/response round trip.
RAW_REQUEST_TIMEOUT_S = 10.0
# Largest response the raw Fetch client accepts.
RAW_RESPONSE_BYTES_MAX = 64 * 1024 * 1024


def create_topic(bootstrap: str, name: str, partitions: int, config: dict | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=ADMIN_TIMEOUT_S, request_timeout=ADMIN_TIMEOUT_S)
    futures[name].result(timeout=ADMIN_TIMEOUT_S)
    wait_for_topic(bootstrap, name, partitions)


def wait_for_topic(bootstrap: str, name: str, partitions: int) -> None:
    """Metadata must show the topic with all partitions led by a broker."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + ADMIN_TIMEOUT_S
    last = None
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=ADMIN_TIMEOUT_S)
        last = md.topics.get(name)
        if (last is not None and last.error is None and len(last.partitions) == partitions
                and all(p.leader >= 0 for p in last.partitions.values())):
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {name} not ready with {partitions} partitions: {last!r}")


def topic_partition_counts(bootstrap: str) -> dict[str, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(timeout=ADMIN_TIMEOUT_S)
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


@dataclass
class Delivery:
    index: int
    error: object
    partition: int
    offset: int


@dataclass
class ProduceRun:
    deliveries: dict[int, Delivery] = field(default_factory=dict)

    def on_delivery(self, index):
        def callback(err, msg):
            self.deliveries[index] = Delivery(
                index, err, msg.partition(), msg.offset() if err is None else -1)
        return callback

    @property
    def errors(self) -> list[Delivery]:
        return [d for d in self.deliveries.values() if d.error is not None]

    @property
    def acked(self) -> list[Delivery]:
        return [d for d in self.deliveries.values() if d.error is None]


def produce_confluent(bootstrap: str, topic: str, records: list[dict],
                      conf: dict | None = None, before_send=None) -> ProduceRun:
    """Produces records (dicts with value and optional key, headers, timestamp, partition) and
    waits for every delivery report. `before_send(i)`, if given, runs before record i is queued
    (a test can restart the broker mid-run)."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         **(conf or {})})
    run = ProduceRun()
    for i, rec in enumerate(records):
        if before_send is not None:
            before_send(i)
        kwargs = {k: rec[k] for k in ("key", "headers", "timestamp", "partition") if k in rec}
        while True:
            try:
                producer.produce(topic, rec["value"], on_delivery=run.on_delivery(i), **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(FLUSH_TIMEOUT_S)
    assert remaining == 0, f"{remaining} records undelivered after {FLUSH_TIMEOUT_S}s"
    assert len(run.deliveries) == len(records)
    return run


def kafka_python_consumer(bootstrap: str, **conf) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", consumer_timeout_ms=CONSUMER_IDLE_TIMEOUT_MS, **conf)


def consume_all(bootstrap: str, topic: str, partitions: int, expected: int) -> list:
    """Reads every partition from the beginning with kafka-python (no group) until `expected`
    records arrived, the topic went idle, or CONSUME_TIMEOUT_S passed. Returns ConsumerRecords
    in arrival order (ordered by offset within a partition)."""
    consumer = kafka_python_consumer(bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        records = []
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        for msg in consumer:
            records.append(msg)
            if len(records) >= expected or time.monotonic() > deadline:
                break
        return records
    finally:
        consumer.close()


def by_partition(records) -> dict[int, list]:
    out: dict[int, list] = {}
    for r in records:
        out.setdefault(r.partition, []).append(r)
    return out


# --- raw Fetch v4 ---------------------------------------------------------------------------

@dataclass
class BatchInfo:
    base_offset: int
    last_offset: int
    max_timestamp: int
    codec: int
    producer_id: int
    base_sequence: int


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def _kstr(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def fetch_batches(bootstrap: str, topic: str, partition: int, offset: int,
                  max_bytes: int = 1 << 20) -> tuple[int, list[BatchInfo]]:
    """Fetch v4 from `offset`; returns (error_code, batch headers) of the returned records."""
    host, port = bootstrap.rsplit(":", 1)
    corr_id = 7
    body = struct.pack(">iiiib", -1, 100, 1, max_bytes, 0)  # replica, wait, min, max, isolation
    body += struct.pack(">i", 1) + _kstr(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, max_bytes)
    request = struct.pack(">hhi", 1, 4, corr_id) + _kstr("bramble-compat-raw") + body
    with socket.create_connection((host, int(port)), RAW_REQUEST_TIMEOUT_S) as sock:
        sock.settimeout(RAW_REQUEST_TIMEOUT_S)
        sock.sendall(struct.pack(">i", len(request)) + request)
        (length,) = struct.unpack(">i", _recv_exact(sock, 4))
        assert 0 < length <= RAW_RESPONSE_BYTES_MAX, f"bad response length {length}"
        resp = _recv_exact(sock, length)
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from(fmt, resp, pos)
        pos += struct.calcsize(fmt)
        return vals

    (got_corr,) = take(">i")
    assert got_corr == corr_id
    take(">i")  # throttle_time_ms
    (n_topics,) = take(">i")
    assert n_topics == 1, n_topics
    (name_len,) = take(">h")
    pos += name_len
    (n_parts,) = take(">i")
    assert n_parts == 1, n_parts
    _p, error_code, _hw, _lso, n_aborted = take(">ihqqi")
    if n_aborted > 0:
        pos += 16 * n_aborted
    (records_len,) = take(">i")
    records = resp[pos:pos + max(records_len, 0)]
    batches = []
    rpos = 0
    while rpos + 61 <= len(records):
        base_offset, batch_len = struct.unpack_from(">qi", records, rpos)
        if rpos + 12 + batch_len > len(records):
            break  # truncated trailing batch: legal, clients drop it
        attributes, last_delta, _base_ts, max_ts, producer_id, _epoch, base_seq = (
            struct.unpack_from(">hiqqqhi", records, rpos + 21))
        batches.append(BatchInfo(base_offset, base_offset + last_delta, max_ts, attributes & 7,
                                 producer_id, base_seq))
        rpos += 12 + batch_len
    return error_code, batches


# --- raw InitProducerId v0 / Produce v3 (idempotence tests) ----------------------------------

API_PRODUCE = 0
API_INIT_PRODUCER_ID = 22


def _raw_call(sock: socket.socket, api_key: int, version: int, corr_id: int, body: bytes) -> bytes:
    """One request/response on an open connection (request header v1, response header v0);
    returns the response body after the correlation id."""
    request = struct.pack(">hhi", api_key, version, corr_id) + _kstr("bramble-compat-raw") + body
    sock.sendall(struct.pack(">i", len(request)) + request)
    (length,) = struct.unpack(">i", _recv_exact(sock, 4))
    assert 4 <= length <= RAW_RESPONSE_BYTES_MAX, f"bad response length {length}"
    resp = _recv_exact(sock, length)
    (got_corr,) = struct.unpack_from(">i", resp, 0)
    assert got_corr == corr_id, (got_corr, corr_id)
    return resp[4:]


def raw_connect(bootstrap: str) -> socket.socket:
    host, port = bootstrap.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), RAW_REQUEST_TIMEOUT_S)
    sock.settimeout(RAW_REQUEST_TIMEOUT_S)
    return sock


def init_producer_id(sock: socket.socket) -> tuple[int, int, int]:
    """InitProducerId v0 without a transactional id; returns (error_code, producer_id, epoch)."""
    body = struct.pack(">hi", -1, 60_000)  # null transactional id, transaction timeout
    resp = _raw_call(sock, API_INIT_PRODUCER_ID, 0, 11, body)
    _throttle, error_code, producer_id, epoch = struct.unpack_from(">ihqh", resp, 0)
    return error_code, producer_id, epoch


def idempotent_batch(producer_id: int, epoch: int, base_sequence: int, values: list[bytes]) -> bytes:
    """One uncompressed v2 batch carrying the producer's id, epoch and first sequence."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False, producer_id=producer_id,
        producer_epoch=epoch, base_sequence=base_sequence, batch_size=1 << 20)
    now_ms = int(time.time() * 1000)
    for i, value in enumerate(values):
        builder.append(i, timestamp=now_ms, key=None, value=value, headers=[])
    return bytes(builder.build())


def produce_raw(sock: socket.socket, topic: str, partition: int, records: bytes,
                timeout_ms: int = 30_000) -> tuple[int, int]:
    """Produce v3, acks=all, one partition; returns (error_code, base_offset)."""
    body = struct.pack(">hhi", -1, -1, timeout_ms)  # null transactional id, acks, timeout
    body += struct.pack(">i", 1) + _kstr(topic)
    body += struct.pack(">i", 1) + struct.pack(">ii", partition, len(records)) + records
    resp = _raw_call(sock, API_PRODUCE, 3, 12, body)
    (n_topics,) = struct.unpack_from(">i", resp, 0)
    assert n_topics == 1, n_topics
    (name_len,) = struct.unpack_from(">h", resp, 4)
    pos = 6 + name_len
    (n_parts,) = struct.unpack_from(">i", resp, pos)
    assert n_parts == 1, n_parts
    _p, error_code, base_offset, _append_time = struct.unpack_from(">ihqq", resp, pos + 4)
    return error_code, base_offset
