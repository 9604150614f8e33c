"""The load of one nemesis trial (issue 12), driven by real clients in threads, recording every
observation the checker (tests/compat/checker.py) needs:

- `ProducerRun`: one idempotent acks=all confluent-kafka producer sending unique values
  `t<trial>-p<producer>-<seq>` round-robin over the partitions at a steady rate; every delivery
  report (acked: partition and offset; failed: the error) and every client error.
- `GroupMember`: one member of the trial's consumer group (confluent-kafka, subscribe); every
  record it reads (partition, offset, value) and every commit that succeeded (synchronous commits
  after each batch it read), with the time interval of the commit call.
- `OffsetWatcher`: a client of the same group id that never joins it, asking the coordinator for
  the group's committed offsets (OffsetFetch through `committed()`) every OFFSET_POLL_S; and
  asking every node directly (raw OffsetFetch v1) at the same pace: whatever a node answers
  without an error is an answer a client could get, and the report names the node.
- `read_all`: a fresh consumer reading every partition from offset 0 to its high watermark.

Times are time.monotonic(); the trial turns them into seconds from its start.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)

from helpers import _kstr, _raw_call

# librdkafka's own log lines (stderr): critical only; the errors the checker needs come through
# error_cb, delivery reports and exceptions.
CLIENT_LOG_LEVEL = 2
# The producers: acks=all, idempotent; a short request timeout so a request stuck at a cut-off
# leader is retried elsewhere soon (the broker holds acks=all for at most this), and a message
# timeout above any fault plus recovery.
PRODUCER_CONF = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "request.timeout.ms": 5_000,
    "message.timeout.ms": 40_000,
    "socket.timeout.ms": 10_000,
    "topic.metadata.refresh.interval.ms": 1_000,
    "log_level": CLIENT_LOG_LEVEL,
}
# Bound on every delivery report after the last record was queued (above message.timeout.ms).
FLUSH_TIMEOUT_S = 60.0
FLUSH_STEP_S = 0.5
# The group members: a 6 s session (the broker's default minimum), manual commits.
CONSUMER_CONF = {
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 6_000,
    "heartbeat.interval.ms": 1_000,
    "topic.metadata.refresh.interval.ms": 1_000,
    "socket.timeout.ms": 10_000,
    "log_level": CLIENT_LOG_LEVEL,
}
# BRAMBLE_NEMESIS_MEMBER_DEBUG=cgrp,fetch (librdkafka debug contexts) logs the group members'
# protocol to stderr, for replaying one trial.
if os.environ.get("BRAMBLE_NEMESIS_MEMBER_DEBUG"):
    CONSUMER_CONF.update(debug=os.environ["BRAMBLE_NEMESIS_MEMBER_DEBUG"], log_level=7)
CONSUME_BATCH = 200
CONSUME_WAIT_S = 0.2
# OffsetFetch polling of the watcher, and the bound on one OffsetFetch.
OFFSET_POLL_S = 0.3
OFFSET_FETCH_TIMEOUT_S = 3.0
# Bound on a thread ending once told to stop (a consumer close may wait for its coordinator).
JOIN_TIMEOUT_S = 30.0
# Bound on reading every partition back after the trial, and on asking for its watermarks.
READ_ALL_TIMEOUT_S = 60.0
WATERMARK_TIMEOUT_S = 15.0
WATERMARK_RETRY_S = 0.2
# librdkafka's OFFSET_INVALID: no committed offset.
NO_OFFSET = -1001
API_OFFSET_FETCH = 9
OFFSET_FETCH_VERSION = 1
RAW_CORRELATION_ID = 91


@dataclass
class Delivery:
    producer: int
    seq: int
    partition: int
    offset: int | None  # None when acked without an offset (librdkafka after a failover)
    error: str | None  # None when acked


class Worker:
    """A client in its own daemon thread: `_work()` runs until `_stop` is set; whatever it raises
    lands in `crashed` (reported by the checker), as does a thread that outlives its join."""

    JOIN_S = JOIN_TIMEOUT_S

    def __init__(self, name: str):
        self.crashed: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)

    def start(self):
        self._thread.start()
        return self

    def request_stop(self) -> None:
        self._stop.set()

    def join(self) -> None:
        """Waits for the thread after request_stop()."""
        self._thread.join(self.JOIN_S)
        if self._thread.is_alive():
            self.crashed = f"the {self._thread.name} thread did not finish"

    def stop(self) -> None:
        self.request_stop()
        self.join()

    def _run(self) -> None:
        try:
            self._work()
        except Exception as e:  # noqa: BLE001 - reported by the checker
            self.crashed = repr(e)

    def _work(self) -> None:
        raise NotImplementedError


class ProducerRun(Worker):
    """Producer `index` of trial `trial`, in its own thread until stop(). request_stop() ends
    the queueing; the thread then waits for every delivery report (bounded)."""

    JOIN_S = FLUSH_TIMEOUT_S + JOIN_TIMEOUT_S

    def __init__(self, bootstrap: str, topic: str, partitions: int, trial: int, index: int,
                 rate: float):
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.trial, self.index, self.rate = trial, index, rate
        super().__init__(f"producer-{trial}-{index}")
        self.sent: list[str] = []  # values in send order
        self.queued_at: list[float] = []  # monotonic time each was queued, in send order
        self._sent_set: set[str] = set()
        self.deliveries: dict[int, Delivery] = {}
        self.client_errors: list[str] = []
        self.fatal: list[str] = []
        self.undelivered = 0
        self._lock = threading.Lock()

    def value(self, seq: int) -> str:
        return f"t{self.trial}-p{self.index}-{seq:06d}"

    def sent_set(self) -> set[str]:
        """The values sent (call after stop())."""
        if len(self._sent_set) != len(self.sent):
            self._sent_set = set(self.sent)
        return self._sent_set

    def _on_error(self, err: KafkaError) -> None:
        with self._lock:
            self.client_errors.append(err.str())
            if err.fatal():
                self.fatal.append(err.str())

    def _on_delivery(self, seq: int, partition: int):
        def callback(err, msg):
            with self._lock:
                if err is None:
                    # librdkafka may acknowledge an idempotent record without an offset after a
                    # failover: None (or -1001) then.
                    offset = msg.offset()
                    known = offset if offset is not None and offset >= 0 else None
                    self.deliveries[seq] = Delivery(self.index, seq, msg.partition(), known, None)
                else:
                    self.deliveries[seq] = Delivery(self.index, seq, partition, None, err.str())
        return callback

    def _work(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, **PRODUCER_CONF,
                             "error_cb": self._on_error})
        started = time.monotonic()
        seq = 0
        while not self._stop.is_set():
            partition = seq % self.partitions
            try:
                producer.produce(self.topic, self.value(seq).encode(), partition=partition,
                                 on_delivery=self._on_delivery(seq, partition))
            except BufferError:
                producer.poll(0.05)
                continue
            self.sent.append(self.value(seq))
            self.queued_at.append(time.monotonic())
            seq += 1
            producer.poll(max(started + seq / self.rate - time.monotonic(), 0))
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        remaining = producer.flush(FLUSH_STEP_S)
        while remaining and time.monotonic() < deadline:
            remaining = producer.flush(FLUSH_STEP_S)
        self.undelivered = remaining


@dataclass
class Read:
    member: int
    partition: int
    offset: int
    value: str


@dataclass
class OffsetSeen:
    """A committed offset of one partition as seen by a successful commit (`how` "commit") or an
    OffsetFetch (`how` "fetch"), in effect at some moment between start and end."""
    how: str
    who: str
    partition: int
    offset: int
    start: float
    end: float


class GroupMember(Worker):
    """Member `index` of `group`, reading `topic` and committing after each batch."""

    def __init__(self, bootstrap: str, topic: str, group: str, index: int):
        self.bootstrap, self.topic, self.group, self.index = bootstrap, topic, group, index
        super().__init__(f"member-{group}-{index}")
        self.reads: list[Read] = []
        self.commits: list[OffsetSeen] = []
        self.commit_errors: list[str] = []
        self.consume_errors: list[str] = []

    def positions_read(self) -> dict[int, int]:
        """partition -> next offset after the highest one this member read."""
        out: dict[int, int] = {}
        for r in list(self.reads):
            out[r.partition] = max(out.get(r.partition, 0), r.offset + 1)
        return out

    def _work(self) -> None:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                             **CONSUMER_CONF})
        try:
            consumer.subscribe([self.topic])
            while not self._stop.is_set():
                self._step(consumer)
        finally:
            consumer.close()

    def _step(self, consumer: Consumer) -> None:
        got = False
        for msg in consumer.consume(CONSUME_BATCH, CONSUME_WAIT_S):
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    self.consume_errors.append(msg.error().str())
                continue
            got = True
            self.reads.append(Read(self.index, msg.partition(), msg.offset(),
                                   msg.value().decode(errors="replace")))
        if not got:
            return
        start = time.monotonic()
        try:
            committed = consumer.commit(asynchronous=False)
        except KafkaException as e:
            self.commit_errors.append(str(e))
            return
        end = time.monotonic()
        for tp in committed or []:
            if tp.error is None and tp.offset >= 0:
                self.commits.append(OffsetSeen("commit", f"member{self.index}", tp.partition,
                                               tp.offset, start, end))


class OffsetWatcher(Worker):
    """Asks for `group`'s committed offsets of `topic` every OFFSET_POLL_S until stop()."""

    def __init__(self, bootstrap: str, topic: str, group: str, partitions: int,
                 nodes: dict[int, str] | None = None):
        self.bootstrap, self.topic, self.group, self.partitions = \
            bootstrap, topic, group, partitions
        super().__init__(f"watch-{group}")
        self.nodes = dict(nodes or {})  # node id -> address, asked directly
        self.seen: list[OffsetSeen] = []
        self.errors: list[str] = []
        self.malformed: list[str] = []  # OffsetFetch answers that did not parse

    def _work(self) -> None:
        """Polls until stopped, then once more."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                             "enable.auto.commit": False, "log_level": CLIENT_LOG_LEVEL})
        try:
            while not self._stop.wait(OFFSET_POLL_S):
                self.fetch(consumer)
                self.fetch_each_node()
            self.fetch(consumer)
            self.fetch_each_node()
        finally:
            consumer.close()

    def fetch(self, consumer: Consumer) -> None:
        start = time.monotonic()
        try:
            tps = consumer.committed([TopicPartition(self.topic, p)
                                      for p in range(self.partitions)],
                                     timeout=OFFSET_FETCH_TIMEOUT_S)
        except KafkaException as e:
            self.errors.append(str(e))
            return
        end = time.monotonic()
        for tp in tps:
            if tp.error is None:
                offset = tp.offset if tp.offset >= 0 else NO_OFFSET
                self.seen.append(OffsetSeen("fetch", "watcher", tp.partition, offset, start, end))


    def fetch_each_node(self) -> None:
        """Raw OffsetFetch v1 to every node; records the partitions each answers without error."""
        for node_id, address in self.nodes.items():
            start = time.monotonic()
            try:
                host, port = address.rsplit(":", 1)
                with socket.create_connection((host, int(port)), OFFSET_FETCH_TIMEOUT_S) as sock:
                    sock.settimeout(OFFSET_FETCH_TIMEOUT_S)
                    answer = offset_fetch_raw(sock, self.group, self.topic, self.partitions)
            except OSError:
                continue  # the node is down or cut off: no observation
            except (AssertionError, struct.error) as e:
                self.malformed.append(f"node {node_id}: {e!r}")
                continue
            end = time.monotonic()
            if sorted(answer) != list(range(self.partitions)):
                self.malformed.append(f"node {node_id}: answered partitions {sorted(answer)}")
            for p, (offset, error) in answer.items():
                if error == 0:
                    self.seen.append(OffsetSeen("fetch", f"node {node_id} (raw)", p,
                                                offset if offset >= 0 else NO_OFFSET, start, end))


def offset_fetch_raw(sock, group: str, topic: str, partitions: int) -> dict[int, tuple[int, int]]:
    """OffsetFetch v1 of one topic's partitions: partition -> (offset, error code)."""
    resp = _raw_call(sock, API_OFFSET_FETCH, OFFSET_FETCH_VERSION, RAW_CORRELATION_ID,
                     offset_fetch_body(group, topic, partitions))
    return parse_offset_fetch(resp)


def offset_fetch_body(group: str, topic: str, partitions: int) -> bytes:
    """The body of an OffsetFetch v1 request for partitions 0..partitions-1 of `topic`."""
    body = _kstr(group) + struct.pack(">i", 1) + _kstr(topic) + struct.pack(">i", partitions)
    return body + b"".join(struct.pack(">i", p) for p in range(partitions))


def parse_offset_fetch(resp: bytes) -> dict[int, tuple[int, int]]:
    """An OffsetFetch v1 response body (after the correlation id) of one topic:
    partition -> (offset, error code)."""
    (topics,) = struct.unpack_from(">i", resp, 0)
    assert topics == 1, f"OffsetFetch answered {topics} topics"
    pos, out = 4, {}
    (name_len,) = struct.unpack_from(">h", resp, pos)
    pos += 2 + name_len
    (count,) = struct.unpack_from(">i", resp, pos)
    pos += 4
    for _ in range(count):
        p, offset, meta_len = struct.unpack_from(">iqh", resp, pos)
        pos += 14 + max(meta_len, 0)
        (error,) = struct.unpack_from(">h", resp, pos)
        pos += 2
        out[p] = (offset, error)
    return out


@dataclass
class FinalLog:
    """Every partition's records from offset 0 to its high watermark."""
    ends: dict[int, int]
    records: dict[int, dict[int, str]] = field(default_factory=dict)


def high_watermarks(consumer: Consumer, topic: str, partitions: int) -> dict[int, int]:
    """Each partition's high watermark, asked of its leader. A leader just elected answers
    OFFSET_NOT_AVAILABLE until its high watermark caught up (Kafka's KIP-207), and one moving
    answers NOT_LEADER: retried until WATERMARK_TIMEOUT_S."""
    deadline = time.monotonic() + WATERMARK_TIMEOUT_S
    ends: dict[int, int] = {}
    while True:
        try:
            for p in range(partitions):
                if p not in ends:
                    ends[p] = consumer.get_watermark_offsets(
                        TopicPartition(topic, p), timeout=WATERMARK_TIMEOUT_S, cached=False)[1]
            return ends
        except KafkaException as e:
            assert time.monotonic() < deadline, \
                f"no high watermark of {topic} within {WATERMARK_TIMEOUT_S}s: {e}"
            time.sleep(WATERMARK_RETRY_S)


def read_all(bootstrap: str, topic: str, partitions: int) -> FinalLog:
    """Reads every partition from the beginning to the high watermark it had when reading
    started (a fresh consumer, no group commits). Raises AssertionError if it cannot in time."""
    ends, records = read_to_high_watermarks(bootstrap, topic, partitions, f"{topic}-final-read")
    return FinalLog(ends, {p: {o: v.decode(errors="replace") for o, v in got.items()}
                           for p, got in records.items()})


def read_to_high_watermarks(bootstrap: str, topic: str, partitions: int, group: str,
                            timeout_s: float = READ_ALL_TIMEOUT_S
                            ) -> tuple[dict[int, int], dict[int, dict[int, bytes]]]:
    """Every record of every partition from offset 0 up to the high watermark each had when
    reading started (a consumer of `group` that commits nothing): (partition -> high watermark,
    partition -> offset -> value). Raises AssertionError if it cannot within `timeout_s`."""
    # From the earliest offset whatever happens: a reset to the end would skip records unseen.
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "auto.offset.reset": "earliest", "log_level": CLIENT_LOG_LEVEL})
    try:
        ends = high_watermarks(consumer, topic, partitions)
        got: dict[int, dict[int, bytes]] = {p: {} for p in range(partitions)}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + timeout_s
        while len(done) < partitions:
            assert time.monotonic() < deadline, (
                f"read {({p: len(v) for p, v in got.items()})} records of {topic} of high "
                f"watermarks {ends} in {timeout_s}s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            p = msg.partition()
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF and msg.offset() >= ends[p]:
                    done.add(p)
                continue
            got[p][msg.offset()] = msg.value()
            if msg.offset() + 1 >= ends[p]:
                done.add(p)
        return ends, got
    finally:
        consumer.close()
