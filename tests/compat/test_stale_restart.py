"""A node that restarts with a stale metadata image takes no partition role until its image has
caught up with the controller's (issue 12; found by the nemesis trials and the cluster
simulation). Node X leads a partition, is paused past its session (the controller fences it and
moves the leadership to another ISR member), then every node dies; X comes back first, alone,
with an image that still names it leader. It must not accept records for that partition (an
acks=1 write it took would be cut when the real leader returns); once the others are back it
catches up, rejoins the ISR and the partition takes writes again."""

from __future__ import annotations

import time

from confluent_kafka import Producer

from replication import (BROKER_SESSION_MS, REPLICATION_CONFIG, create_topic,
                              wait_isr_full)

TOPIC = "stale-leader"
ISR_FULL_S = 30.0
# The survivors name a new leader within this of the pause (fencing, then the election).
MOVE_TIMEOUT_S = BROKER_SESSION_MS / 1000 + 10.0
# Longer than a lone node's wait for a quorum before it serves (READY_WAIT_MS_MAX, 5 s).
STALE_PRODUCE_TIMEOUT_MS = 9_000
FLUSH_SLACK_S = 10.0


def produce_one(bootstrap: str, acks: str, timeout_ms: int) -> str | None:
    """Sends one record to partition 0; None when acknowledged, else the error."""
    outcome: list[str | None] = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": acks,
                         "message.timeout.ms": timeout_ms, "enable.idempotence": False})
    producer.produce(TOPIC, value=b"written-to-a-stale-leader?", partition=0,
                     on_delivery=lambda err, _msg: outcome.append(None if err is None else str(err)))
    producer.flush(timeout_ms / 1000 + FLUSH_SLACK_S)
    assert outcome, "no delivery report"
    return outcome[0]


def test_restarted_node_with_stale_image_takes_no_leadership(cluster_factory):
    cluster = cluster_factory(config=REPLICATION_CONFIG)
    create_topic(cluster.bootstrap, TOPIC, 1)
    wait_isr_full(cluster, {TOPIC: 1}, ISR_FULL_S)
    stale = cluster.leader(TOPIC, 0)
    others = [i for i in cluster.nodes if i != stale]
    cluster.pause(stale)
    cluster.wait_partitions({TOPIC: 1}, lambda _t, _p, info: info.leader in others,
                            f"{TOPIC}: a leader among {others}", ids=others,
                            timeout_s=MOVE_TIMEOUT_S)
    for i in cluster.nodes:
        cluster.kill(i)
    cluster.start(stale)
    started = time.monotonic()
    error = produce_one(cluster.nodes[stale].bootstrap, "1", STALE_PRODUCE_TIMEOUT_MS)
    assert error is not None, (
        f"node {stale}, replaced as leader while paused, restarted alone and acknowledged an "
        f"acks=1 record {time.monotonic() - started:.1f}s later from its stale image\n"
        f"{cluster.log_tails()}")
    for i in others:
        cluster.start(i)
    wait_isr_full(cluster, {TOPIC: 1}, ISR_FULL_S)
    assert produce_one(cluster.bootstrap, "all", 20_000) is None
