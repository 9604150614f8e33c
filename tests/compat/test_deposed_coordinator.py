"""A deposed group coordinator must not answer OffsetFetch with offsets older than the group's
committed ones (issue 12: "committed group offsets never move backwards"). Found by the nemesis
trials (test_nemesis.py, kinds pause and one-way): a coordinator paused, or cut off from the
controller, past the broker session timeout is fenced and its `__consumer_offsets` partition
moves to another node, where the group goes on committing; the old coordinator, not knowing yet,
answers OffsetFetch from its own stale cache with no error.

The reproduction, on three nodes on 127.0.0.1 (no network namespaces needed): commit offset
OLD_OFFSET at coordinator X; open a connection to X; SIGSTOP X until another node coordinates the
group; commit NEW_OFFSET there; send an OffsetFetch on the open connection (the kernel queues
it), SIGCONT X, and read X's answer. Any answer is acceptable but an offset below NEW_OFFSET
without an error: COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE or NOT_COORDINATOR (the
client asks again elsewhere), or NEW_OFFSET. The fix: the coordinator answers only while its
lease holds (src/meta/quorum/lease.rs).

Also here: an OffsetFetch v0/v1 (no top-level error field) asked of a node that does not
coordinate the group carries the error in every requested partition, as in Kafka; it used to be
an empty answer, which an old client reads as "nothing committed"."""

from __future__ import annotations

import struct
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from cluster import find_group_coordinator
from test_cluster import GROUP_CONFIG
from replication import REPLICATION_CONFIG, create_topic
from helpers import _kstr, _recv_exact, raw_connect
from workload import (API_OFFSET_FETCH, OFFSET_FETCH_VERSION, offset_fetch_body, offset_fetch_raw,
                      parse_offset_fetch)

TOPIC, GROUP = "deposed-coordinator", "deposed-coordinator-group"
OLD_OFFSET, NEW_OFFSET = 5, 10
# The fixture's broker session timeout is 2 s: another node coordinates the group within this.
MOVE_TIMEOUT_S = 30.0
COMMIT_TIMEOUT_S = 30.0
POLL_S = 0.1
CORRELATION_ID = 7
# Kafka error codes an OffsetFetch may answer with instead of offsets.
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
NOT_HERE = (COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR)


def commit(bootstrap: str, offset: int) -> None:
    """Commits `offset` of partition 0 for GROUP (a consumer that does not join the group),
    retrying while the coordinator moves."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP,
                         "enable.auto.commit": False})
    deadline = time.monotonic() + COMMIT_TIMEOUT_S
    try:
        while True:
            try:
                tps = consumer.commit(offsets=[TopicPartition(TOPIC, 0, offset)],
                                      asynchronous=False)
                if tps and tps[0].error is None:
                    return
                failure = tps[0].error if tps else "no answer"
            except KafkaException as e:
                failure = e
            assert time.monotonic() < deadline, f"commit of {offset} failed: {failure}"
            time.sleep(POLL_S)
    finally:
        consumer.close()


def offset_fetch_frame() -> bytes:
    """A whole OffsetFetch v1 request of GROUP's partition 0 (what helpers._raw_call sends)."""
    request = struct.pack(">hhi", API_OFFSET_FETCH, OFFSET_FETCH_VERSION, CORRELATION_ID)
    request += _kstr("bramble-compat-raw") + offset_fetch_body(GROUP, TOPIC, 1)
    return struct.pack(">i", len(request)) + request


def other_coordinator(cluster, old: int) -> int:
    """Waits until a node other than `old` names a coordinator other than `old`; returns it."""
    deadline = time.monotonic() + MOVE_TIMEOUT_S
    while time.monotonic() < deadline:
        for i, node in cluster.nodes.items():
            if i == old:
                continue
            try:
                c = find_group_coordinator(node.bootstrap, GROUP)
            except (OSError, AssertionError):
                continue
            if c.error == 0 and c.node_id != old:
                return c.node_id
        time.sleep(POLL_S)
    raise AssertionError(f"the group's coordinator did not move off node {old} in "
                         f"{MOVE_TIMEOUT_S}s\n{cluster.log_tails()}")


def test_deposed_coordinator_answers_no_stale_offsets(cluster_factory):
    cluster = cluster_factory(config={**GROUP_CONFIG, **REPLICATION_CONFIG})
    create_topic(cluster.bootstrap, TOPIC, 1)
    commit(cluster.bootstrap, OLD_OFFSET)
    old = find_group_coordinator(cluster.nodes[1].bootstrap, GROUP).node_id
    sock = raw_connect(cluster.nodes[old].bootstrap)
    try:
        cluster.pause(old)
        new = other_coordinator(cluster, old)
        commit(cluster.nodes[new].bootstrap, NEW_OFFSET)
        # Queued in the kernel until X runs again: X's first request after SIGCONT.
        sock.settimeout(MOVE_TIMEOUT_S)
        sock.sendall(offset_fetch_frame())
        cluster.resume(old)
        (length,) = struct.unpack(">i", _recv_exact(sock, 4))
        offset, error = parse_offset_fetch(_recv_exact(sock, length)[4:])[0]
    finally:
        sock.close()
        cluster.resume(old)
    assert error in NOT_HERE or offset >= NEW_OFFSET, (
        f"node {old}, paused while node {new} took over the group and committed {NEW_OFFSET}, "
        f"answered OffsetFetch with offset {offset} error {error} (stale: committed offsets "
        f"went backwards)\n{cluster.log_tails()}")


def test_offset_fetch_v1_elsewhere_names_the_error_per_partition(cluster_factory):
    cluster = cluster_factory(config=GROUP_CONFIG)
    create_topic(cluster.bootstrap, TOPIC, 2)
    commit(cluster.bootstrap, OLD_OFFSET)
    coordinator = find_group_coordinator(cluster.nodes[1].bootstrap, GROUP).node_id
    other = next(i for i in cluster.nodes if i != coordinator)
    with raw_connect(cluster.nodes[other].bootstrap) as sock:
        answer = offset_fetch_raw(sock, GROUP, TOPIC, 2)
    assert sorted(answer) == [0, 1] and all(e == NOT_COORDINATOR for _, e in answer.values()), (
        f"node {other} (coordinator: node {coordinator}) answered {answer}")
