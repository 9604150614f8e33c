"""What the replication tests (test_replication.py) and the cluster tests after them share: the
replication settings every node of those tests is told (REPLICATION_CONFIG,
BRAMBLE_REPLICATION_SETTINGS picks them), topic creation and ISR waits, Stream (a paced
idempotent acks=all confluent-kafka producer that records every delivery), reading a topic
back to its high watermarks and checking every acknowledged record in it, and a partition
leader's kill -9 in the middle of a Stream."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from cluster import Cluster, PartitionInfo
from helpers import ADMIN_TIMEOUT_S
from workload import read_to_high_watermarks

# ISR shrink after this much lag, follower long-poll, preferred-leader check, controlled shutdown.
REPLICA_LAG_MS_MAX = 2_000


REPLICATION_SETTINGS = {
    "replica_lag_ms_max": REPLICA_LAG_MS_MAX,
    "replica_fetch_wait_ms_max": 200,
    "leader_imbalance_check_interval_ms": 1_000,
    "controlled_shutdown_ms_max": 10_000,
}


# BRAMBLE_REPLICATION_SETTINGS: unset or 1, every setting; 0, none; or a comma-separated list of
# the keys to pass (for a binary that has some of them).
_CHOSEN = os.environ.get("BRAMBLE_REPLICATION_SETTINGS", "1")


def setting_on(key: str) -> bool:
    return _CHOSEN == "1" or key in _CHOSEN.split(",")


REPLICATION_CONFIG = {k: v for k, v in REPLICATION_SETTINGS.items() if setting_on(k)}


# The fixture's broker session timeout (CLUSTER_TIMING): a dead broker is fenced after this.
BROKER_SESSION_MS = 2_000


# Bound on every delivery report of a stream after its last record was queued.
FLUSH_TIMEOUT_S = 90.0


# How often a flushing producer checks whether its stream was abandoned.
ABANDON_POLL_S = 0.5


# Bound on reading a topic back from the beginning.
READ_BACK_TIMEOUT_S = 60.0


PRODUCER_CONF = {"acks": "all", "enable.idempotence": True, "linger.ms": 5}


def create_topic(bootstrap: str, name: str, partitions: int, replication: int = 3,
                 config: dict | None = None) -> float:
    """CreateTopics through confluent-kafka; returns the monotonic time of the answer."""
    # Kept referenced until its future is done: a collected client fails it with _DESTROY.
    client = AdminClient({"bootstrap.servers": bootstrap})
    futures = client.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=replication,
                  config=config or {})],
        operation_timeout=ADMIN_TIMEOUT_S, request_timeout=ADMIN_TIMEOUT_S)
    futures[name].result(timeout=ADMIN_TIMEOUT_S)
    return time.monotonic()


def isr_full(rf: int = 3):
    """A partition check: led, `rf` replicas, all of them in the ISR."""
    def check(_topic: str, _p: int, info: PartitionInfo) -> bool:
        return (info.error == 0 and info.leader >= 0 and len(info.replicas) == rf
                and sorted(info.isr) == sorted(info.replicas))
    return check


def isr_full_and_preferred(rf: int = 3):
    full = isr_full(rf)

    def check(topic: str, p: int, info: PartitionInfo) -> bool:
        return full(topic, p, info) and info.leader == info.replicas[0]
    return check


def wait_isr_full(cluster: Cluster, topics: dict[str, int], timeout_s: float,
                  preferred: bool = False, ids: list[int] | None = None) -> float:
    """Waits until every partition of `topics` has its full ISR (and, if `preferred`, its
    preferred leader) in each running node's Metadata; returns the seconds it took."""
    started = time.monotonic()
    check = isr_full_and_preferred() if preferred else isr_full()
    what = "full ISR and preferred leaders" if preferred else "full ISR"
    cluster.wait_partitions(topics, check, f"{what} of {sorted(topics)}", ids=ids,
                            timeout_s=timeout_s)
    return time.monotonic() - started


@dataclass
class Acked:
    seq: int
    partition: int
    offset: int
    at: float  # monotonic time of the delivery report


@dataclass
class Stream:
    """An idempotent acks=all confluent-kafka producer in its own thread, queueing record `seq`
    (value b"<tag><seq>", seq in 8 digits) to partition seq % partitions at `rate` records per
    second, `total` records (None: until finish()); it records every delivery report and every
    error_cb error."""
    bootstrap: str
    topic: str
    partitions: int
    total: int | None
    rate: float
    conf: dict = field(default_factory=dict)
    tag: str = ""
    queued_at: dict[int, float] = field(default_factory=dict)
    acked: dict[int, Acked] = field(default_factory=dict)
    failed: dict[int, KafkaError] = field(default_factory=dict)
    client_errors: list[KafkaError] = field(default_factory=list)
    undelivered: int = 0
    crashed: BaseException | None = None

    def __post_init__(self):
        self._stop = threading.Event()
        self._abandoned = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Stream":
        self._thread.start()
        return self

    def _on_delivery(self, seq: int):
        def callback(err, msg):
            now = time.monotonic()
            with self._lock:
                if err is None:
                    self.acked[seq] = Acked(seq, msg.partition(), msg.offset(), now)
                else:
                    self.failed[seq] = err
        return callback

    def _run(self) -> None:
        try:
            self._produce()
        except BaseException as e:  # e.g. KafkaException after a fatal error: finish() says it
            # Without its traceback, which would keep the producer (and its connections) alive.
            self.crashed = e.with_traceback(None)

    def _produce(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, **PRODUCER_CONF,
                             "error_cb": self.client_errors.append, **self.conf})
        started = time.monotonic()
        seq = 0
        while not self._stop.is_set() and (self.total is None or seq < self.total):
            self.queued_at[seq] = time.monotonic()
            try:
                producer.produce(self.topic, self.value(seq), partition=seq % self.partitions,
                                 on_delivery=self._on_delivery(seq))
            except BufferError:
                producer.poll(0.05)
                continue
            seq += 1
            wait = started + seq / self.rate - time.monotonic()
            producer.poll(max(wait, 0))
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        while (remaining := producer.flush(ABANDON_POLL_S)) and not self._abandoned.is_set() \
                and time.monotonic() < deadline:
            pass
        self.undelivered = remaining

    def value(self, seq: int) -> bytes:
        return f"{self.tag}{seq:08d}".encode()

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    def wait_acked(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.acked_count() < count:
            assert time.monotonic() < deadline, \
                f"only {self.acked_count()} of {count} records acknowledged after {timeout_s}s " \
                f"(failed: {list(self.failed.values())[:3]})"
            time.sleep(0.01)

    def finish(self, check: bool = True) -> "Stream":
        """Waits until every record is queued (an endless stream: stops queueing) and has its
        delivery report; with `check`, asserts the producer did not fail (failure())."""
        if self.total is None:
            self._stop.set()
        self._thread.join(FLUSH_TIMEOUT_S + 30)
        assert not self._thread.is_alive(), "the producer thread did not finish"
        if check:
            failure = self.failure()
            assert failure is None, failure
        return self

    def failure(self) -> str | None:
        """What went wrong with the producer itself after finish(): a fatal error (librdkafka
        raises one on an idempotence violation), a crash, records without a delivery report."""
        fatal = [e.str() for e in self.client_errors if e.fatal()]
        if self.crashed is not None or fatal:
            return (f"the producer failed: {fatal or repr(self.crashed)} ({len(self.acked)} "
                    f"acked, {len(self.failed)} failed: "
                    f"{[kafka_code(e) for e in list(self.failed.values())[:3]]})")
        if self.undelivered:
            return f"{self.undelivered} records without a delivery report"
        return None

    def abandon(self) -> None:
        """Stops queueing and waits for the thread without checking anything (cleanup after a
        failure elsewhere)."""
        self._stop.set()
        self._abandoned.set()
        self._thread.join(FLUSH_TIMEOUT_S)

    def queued(self) -> int:
        return len(self.queued_at)


def read_back(bootstrap: str, topic: str, partitions: int) -> dict[int, dict[int, bytes]]:
    """Every record of every partition from the beginning up to the high watermark each had
    when reading started: partition -> offset -> value."""
    return read_to_high_watermarks(bootstrap, topic, partitions, "replication-read-back",
                                   READ_BACK_TIMEOUT_S)[1]


def check_acked_readable(stream: Stream, got: dict[int, dict[int, bytes]]) -> list[str]:
    """Problems: an acknowledged record not at its acknowledged offset, a value twice."""
    problems = []
    for a in sorted(stream.acked.values(), key=lambda a: a.seq):
        if a.offset is None:
            # librdkafka acknowledges some records of an idempotent producer without an offset
            # (a retried batch the broker already had, or one implicitly acknowledged by a later
            # batch's success): such a record must still be in its partition, somewhere.
            if stream.value(a.seq) not in got.get(a.partition, {}).values():
                problems.append(f"record {a.seq} acknowledged (offset unknown) in partition "
                                f"{a.partition}, not there")
            continue
        value = got.get(a.partition, {}).get(a.offset)
        if value != stream.value(a.seq):
            problems.append(f"record {a.seq} acknowledged at {a.partition}@{a.offset}, "
                            f"read {value!r} there")
    counts = Counter(v for offsets in got.values() for v in offsets.values()
                     if v.startswith(stream.tag.encode()))
    problems += [f"value {v!r} appears {n} times" for v, n in counts.items() if n > 1]
    return problems


def kafka_code(err) -> str:
    return f"{err.name()}({err.code()})" if isinstance(err, KafkaError) else repr(err)


@dataclass
class Failover:
    victim: int
    survivors: list[int]
    killed: float  # time.monotonic() of the kill
    new_leader_s: float  # from the kill until every partition's leader is a survivor
    window_s: float | None  # from the kill to partition 0's first delivery of a later record


def kill_leader_of_stream(cluster: Cluster, stream: Stream, kill_after_acked: int,
                          acked_timeout_s: float, new_leader_timeout_s: float) -> Failover:
    """Once `stream` (started) has `kill_after_acked` acknowledgements, kill -9s the leader of
    its partition 0, waits for the survivors to lead every partition, and lets the stream
    finish (unchecked: see Stream.failure())."""
    topics = {stream.topic: stream.partitions}
    try:
        stream.wait_acked(kill_after_acked, acked_timeout_s)
        victim = cluster.leader(stream.topic, 0)
        cluster.kill(victim)
        killed = time.monotonic()
        queued_before_kill = stream.queued()
        survivors = [i for i in cluster.nodes if i != victim]
        cluster.wait_partitions(topics, lambda _t, _p, info: info.leader in survivors,
                                f"{stream.topic}: leaders among {survivors}", ids=survivors,
                                timeout_s=new_leader_timeout_s)
        new_leader_s = time.monotonic() - killed
        stream.finish(check=False)
    finally:
        stream.abandon()
    # Only the new leader can acknowledge a record queued after the kill.
    after = [a.at for a in stream.acked.values()
             if a.partition == 0 and a.seq >= queued_before_kill]
    return Failover(victim, survivors, killed, new_leader_s,
                    min(after) - killed if after else None)
