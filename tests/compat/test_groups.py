"""Consumer groups with real clients (issue 4 acceptance): confluent-kafka members in separate
processes rebalance as members join and die, committed offsets survive a broker restart,
kafka-python and kcat consume as group members and commit, a static member restarts without
disturbing the others, and `bramble group describe` reports members and lag.

Members run with a 6 s session timeout and the broker with a 500 ms initial rebalance delay, so
the whole file takes well under two minutes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from kafka import KafkaConsumer

from conftest import BRAMBLE_BIN
from helpers import create_topic, produce_confluent

MEMBER_SCRIPT = Path(__file__).with_name("group_member.py")
SESSION_MS = 6_000
GROUP_CONFIG = {"group_initial_rebalance_delay_ms": 500}
# Bound on a rebalance settling (join, sync, assignment callbacks).
SETTLE_TIMEOUT_S = 30.0
# A killed member's partitions must move within its session timeout plus one rebalance.
MOVE_SLACK_S = 5.0
# Bound on every produced record being seen by the group.
CONSUME_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.1
MEMBER_STOP_TIMEOUT_S = 20.0
# How long a resumed consumer is watched for records it should not get again.
EXTRA_RECORD_WAIT_S = 3.0


class Member:
    """A group_member.py process and the events it logged."""

    def __init__(self, tmp: Path, name: str, bootstrap: str, topic: str, group: str,
                 instance: str | None = None):
        self.out = tmp / f"{name}.log"
        self.args = [sys.executable, str(MEMBER_SCRIPT), bootstrap, topic, group,
                     str(self.out), str(SESSION_MS)] + ([instance] if instance else [])
        self.proc = subprocess.Popen(self.args)

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines() if self.out.exists() else []

    def assignment(self) -> set[int] | None:
        """Current partitions (None until the first assignment)."""
        current = None
        for line in self.lines():
            if line.startswith("A"):
                parts = line[2:].strip()
                current = {int(p) for p in parts.split(",")} if parts else set()
            elif line == "R":
                current = set()
        return current

    def seen(self) -> set[tuple[int, int]]:
        return {(int(p), int(o)) for _, p, o in
                (line.split() for line in self.lines() if line.startswith("M"))}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=MEMBER_STOP_TIMEOUT_S)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=MEMBER_STOP_TIMEOUT_S)


def wait_for_partitioning(members: list[Member], partitions: int) -> dict[int, set[int]]:
    """Waits until the members' current assignments cover every partition exactly once and each
    member has at least one (when there are enough partitions)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    last = None
    while time.monotonic() < deadline:
        last = {i: m.assignment() for i, m in enumerate(members)}
        if all(a is not None for a in last.values()):
            every = [p for a in last.values() for p in a]
            if sorted(every) == list(range(partitions)) and all(last.values()):
                return last
        time.sleep(POLL_INTERVAL_S)
    raise AssertionError(f"assignments never settled: {last}")


def produce_spread(bootstrap: str, topic: str, partitions: int, per_partition: int, tag: str):
    records = [{"value": f"{tag}-{p}-{i}".encode(), "partition": p}
               for i in range(per_partition) for p in range(partitions)]
    run = produce_confluent(bootstrap, topic, records)
    assert not run.errors, run.errors[:3]


def test_three_members_rebalance_on_join_and_kill(broker_factory, tmp_path):
    broker = broker_factory(GROUP_CONFIG)
    topic, group, partitions = "g-orders", "g-three", 6
    create_topic(broker.bootstrap, topic, partitions)
    produce_spread(broker.bootstrap, topic, partitions, 50, "a")
    members = [Member(tmp_path, f"m{i}", broker.bootstrap, topic, group) for i in range(3)]
    try:
        wait_for_partitioning(members, partitions)
        members.append(Member(tmp_path, "m3", broker.bootstrap, topic, group))
        after_join = wait_for_partitioning(members, partitions)
        assert after_join[3], "the fourth member got partitions"
        produce_spread(broker.bootstrap, topic, partitions, 50, "b")

        victim = members.pop(0)
        orphaned = victim.assignment()
        killed_at = time.monotonic()
        victim.kill()
        wait_for_partitioning(members, partitions)
        moved_s = time.monotonic() - killed_at
        assert moved_s < SESSION_MS / 1000 + MOVE_SLACK_S, f"partitions {orphaned} moved after {moved_s:.1f}s"
        produce_spread(broker.bootstrap, topic, partitions, 50, "c")

        expected = {(p, o) for p in range(partitions) for o in range(150)}
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        seen: set = set()
        while time.monotonic() < deadline:
            seen = victim.seen().union(*(m.seen() for m in members))
            if expected <= seen:
                break
            time.sleep(POLL_INTERVAL_S)
        missing = sorted(expected - seen)
        assert not missing, f"{len(missing)} records never consumed, e.g. {missing[:5]}"
    finally:
        for m in members:
            m.stop()


def confluent_consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "session.timeout.ms": SESSION_MS, "auto.offset.reset": "earliest",
                     "enable.auto.commit": False})


def consume_n(consumer: Consumer, n: int, timeout_s: float = CONSUME_TIMEOUT_S) -> list:
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            got.append(msg)
    return got


def test_committed_offsets_survive_broker_restart(broker_factory):
    broker = broker_factory(GROUP_CONFIG)
    topic, group = "g-resume", "g-resume-group"
    create_topic(broker.bootstrap, topic, 2)
    produce_spread(broker.bootstrap, topic, 2, 50, "r")
    c = confluent_consumer(broker.bootstrap, group)
    c.subscribe([topic])
    first = consume_n(c, 60)
    assert len(first) == 60
    c.commit(asynchronous=False)
    committed = {tp.partition: tp.offset for tp in
                 c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)}
    c.close()
    read = {}
    for m in first:
        read[m.partition()] = max(read.get(m.partition(), -1), m.offset())
    assert committed == {p: read.get(p, -1) + 1 for p in (0, 1)}

    broker.restart()
    c = confluent_consumer(broker.bootstrap, group)
    c.subscribe([topic])
    rest = consume_n(c, 40)
    extra = consume_n(c, 1, timeout_s=EXTRA_RECORD_WAIT_S) if len(rest) == 40 else []
    c.close()
    assert extra == [], "a committed record was read again"

    got = sorted((m.partition(), m.offset()) for m in rest)
    want = sorted((p, o) for p in (0, 1) for o in range(committed[p], 50))
    assert got == want, "resumed exactly at the committed offsets"


def test_kafka_python_and_kcat_group_members_commit(broker_factory):
    broker = broker_factory(GROUP_CONFIG)
    topic = "g-clients"
    create_topic(broker.bootstrap, topic, 3)
    produce_spread(broker.bootstrap, topic, 3, 10, "k")

    kp = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id="g-kafka-python",
                       auto_offset_reset="earliest", enable_auto_commit=False,
                       session_timeout_ms=SESSION_MS, consumer_timeout_ms=10_000)
    got = []
    for msg in kp:
        got.append(msg)
        if len(got) == 30:
            break
    kp.commit()
    kp.close()
    assert len(got) == 30

    kcat = subprocess.run(["kcat", "-b", broker.bootstrap, "-G", "g-kcat", topic, "-o", "beginning",
                           "-e", "-q", "-X", f"session.timeout.ms={SESSION_MS}"],
                          capture_output=True, timeout=60)
    assert kcat.returncode == 0, kcat.stderr
    assert len(kcat.stdout.decode().split()) == 30

    for group in ("g-kafka-python", "g-kcat"):
        out = subprocess.run([str(BRAMBLE_BIN), "group", "describe", group, "-b", broker.bootstrap],
                             capture_output=True, timeout=30, text=True)
        assert out.returncode == 0, out.stderr
        rows = [line.split("\t") for line in out.stdout.splitlines() if line.startswith(topic)]
        assert sorted((r[1], r[2], r[4]) for r in rows) == [(str(p), "10", "0") for p in range(3)], out.stdout
    listed = subprocess.run([str(BRAMBLE_BIN), "group", "list", "-b", broker.bootstrap],
                            capture_output=True, timeout=30, text=True).stdout
    assert "g-kafka-python\tEmpty" in listed and "g-kcat\tEmpty" in listed


def test_static_member_restart_keeps_partitions(broker_factory, tmp_path):
    broker = broker_factory(GROUP_CONFIG)
    topic, group, partitions = "g-static", "g-static-group", 4
    create_topic(broker.bootstrap, topic, partitions)
    # a joins first so it leads; b (a follower) restarts here, the leader in the test below.
    a = Member(tmp_path, "sa", broker.bootstrap, topic, group, instance="static-a")
    wait_for_partitioning([a], partitions)
    b = Member(tmp_path, "sb", broker.bootstrap, topic, group, instance="static-b")
    b2 = None
    try:
        before = wait_for_partitioning([a, b], partitions)
        a_lines = len(a.lines())
        b.kill()
        b2 = Member(tmp_path, "sb2", broker.bootstrap, topic, group, instance="static-b")
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while b2.assignment() is None and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
        assert b2.assignment() == before[1], "the restarted static member got its partitions back"
        time.sleep(1.0)
        assert "static member rejoined without a rebalance" in broker.log_tail(200)
        assert a.lines()[a_lines:] == [] or all(line.startswith("M") for line in a.lines()[a_lines:]), \
            f"the other member was revoked: {a.lines()[a_lines:]}"
        out = subprocess.run([str(BRAMBLE_BIN), "group", "describe", group, "-b", broker.bootstrap],
                             capture_output=True, timeout=30, text=True)
        assert "Members: 2" in out.stdout and "static-a" in out.stdout and "static-b" in out.stdout, out.stdout
    finally:
        for m in (a, b, b2):
            if m is not None:
                m.stop()


def restart_static(member: Member, how: str, tmp_path: Path, name: str, bootstrap: str,
                   topic: str, group: str, instance: str) -> Member:
    """Ends a static member (kill -9, or a clean close, which sends no LeaveGroup for a static
    member) and starts its replacement with the same group.instance.id."""
    if how == "kill":
        member.kill()
    else:
        member.stop()
    return Member(tmp_path, name, bootstrap, topic, group, instance=instance)


@pytest.mark.parametrize("who", ["leader", "follower"])
@pytest.mark.parametrize("how", ["kill", "close"])
def test_static_member_restart_no_rebalance(broker_factory, tmp_path, how, who):
    """A restarted static member, the group's leader or not, killed or closed, gets its
    partitions back and the other member sees no rebalance (Kafka keeps the group Stable; to a
    restarted leader it answers the old leader id, so the new member does not assign)."""
    broker = broker_factory(GROUP_CONFIG)
    topic, group, partitions = "g-static-restart", "g-static-restart-group", 4
    create_topic(broker.bootstrap, topic, partitions)
    # The first member to join leads.
    a = Member(tmp_path, "ra", broker.bootstrap, topic, group, instance="restart-a")
    wait_for_partitioning([a], partitions)
    b = Member(tmp_path, "rb", broker.bootstrap, topic, group, instance="restart-b")
    members = [a, b]
    restarted = None
    try:
        before = wait_for_partitioning(members, partitions)
        i = 0 if who == "leader" else 1
        other = members[1 - i]
        other_lines = len(other.lines())
        restarted = restart_static(members[i], how, tmp_path, "restarted", broker.bootstrap,
                                   topic, group, f"restart-{'ab'[i]}")
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while restarted.assignment() is None and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
        assert restarted.assignment() == before[i], "the restarted member got its partitions back"
        # Longer than a heartbeat interval: a rebalance would have reached the other by now.
        time.sleep(2.0)
        extra = [line for line in other.lines()[other_lines:] if not line.startswith("M")]
        assert extra == [], f"the other member saw a rebalance: {extra}"
        assert restarted.assignment() == before[i] and other.assignment() == before[1 - i]
    finally:
        for m in (a, b, restarted):
            if m is not None:
                m.stop()
