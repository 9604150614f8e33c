"""An idempotent producer's retry of a batch the leader already has is answered for acks=all only
once the in-sync replicas have it, as a first attempt is (issue 12; found by the nemesis trials,
tests/compat/test_nemesis.py seed 101 trial 24: acknowledged records lost).

What went wrong: the leader answered a duplicate (same producer id, epoch and sequences) with
the batch's original offsets at once, without the acks=all wait. A first attempt that timed out
because an ISR member lagged, retried by librdkafka, was then acknowledged although only the
leader had it; when that leader died the lagging replica was elected and the records were gone.
In the trial the leader had been killed and restarted, and led again for half a second on its
stale metadata while the client retried.

The reproduction, three nodes on 127.0.0.1 with a replica lag bound and a broker session long
enough that the ISR neither shrinks nor loses a fenced broker during the test: SIGSTOP one follower; a raw idempotent batch with acks=all and
a short timeout times out (REQUEST_TIMED_OUT); the same batch again must time out too, not be
acknowledged; once the follower runs again, the same batch is acknowledged at offset 0 (it was
never lost, only not yet replicated)."""

from __future__ import annotations

from cluster import PartitionInfo
from helpers import idempotent_batch, init_producer_id, produce_raw, raw_connect
from replication import REPLICATION_CONFIG, create_topic, wait_isr_full

TOPIC = "duplicate-acks-all"
# How much longer than a produce's own timeout the socket waits for its answer.
SOCKET_SLACK_S = 5
# Long enough that the stopped follower stays in the ISR (not dropped for lag, not fenced) for
# the whole test.
REPLICA_LAG_MS_MAX = 120_000
BROKER_SESSION_TIMEOUT_MS = 120_000
# The produce timeout of the attempts that must time out, and the bound on the last one.
SHORT_TIMEOUT_MS = 1_000
LONG_TIMEOUT_MS = 30_000
ISR_FULL_TIMEOUT_S = 30.0
REQUEST_TIMED_OUT = 7


def test_retried_batch_waits_for_the_isr(cluster_factory):
    cluster = cluster_factory(config={**REPLICATION_CONFIG,
                                      "replica_lag_ms_max": REPLICA_LAG_MS_MAX,
                                      "broker_session_timeout_ms": BROKER_SESSION_TIMEOUT_MS})
    create_topic(cluster.bootstrap, TOPIC, 1, config={"min.insync.replicas": "2"})
    wait_isr_full(cluster, {TOPIC: 1}, ISR_FULL_TIMEOUT_S)
    info: PartitionInfo = cluster.metadata(1).topics[TOPIC].partitions[0]
    leader = info.leader
    follower = next(r for r in info.replicas if r != leader)
    with raw_connect(cluster.nodes[leader].bootstrap) as sock:
        error, producer_id, epoch = init_producer_id(sock)
        assert error == 0, error
        batch = idempotent_batch(producer_id, epoch, 0, [b"only-the-leader-has-me"])
        cluster.pause(follower)
        try:
            first = produce_raw(sock, TOPIC, 0, batch, SHORT_TIMEOUT_MS)
            retry = produce_raw(sock, TOPIC, 0, batch, SHORT_TIMEOUT_MS)
        finally:
            cluster.resume(follower)
        # The socket waits past the broker's own bound, so a slow answer fails the assertion.
        sock.settimeout(LONG_TIMEOUT_MS / 1000 + SOCKET_SLACK_S)
        last = produce_raw(sock, TOPIC, 0, batch, LONG_TIMEOUT_MS)
    assert first[0] == REQUEST_TIMED_OUT, f"first attempt with node {follower} stopped: {first}"
    assert retry[0] == REQUEST_TIMED_OUT, (
        f"the retry was answered {retry} (error, offset) while in-sync replica {follower} was "
        f"stopped and could not have the batch: an acks=all acknowledgement that a failover can "
        f"lose\n{cluster.log_tails()}")
    assert last == (0, 0), f"after node {follower} continued: {last}"
