"""The replica fetcher's long poll does not hold back a partition it just started to follow
(issue 12, found by scripts/bench-cluster.sh): a follower already long-polling a leader for other
partitions used to wait for that poll's answer (up to `replica_fetch_wait_ms_max`) before it
fetched a new partition from the same leader, so a new RF=3 partition's first acks=all records,
and a failed-over partition's, waited for it. With a 10 s long poll and a producer that gives up
after MESSAGE_TIMEOUT_MS, the records are delivered only if the fetcher starts the new partition
at once."""

from __future__ import annotations

from replication import REPLICATION_CONFIG, Stream, create_topic, wait_isr_full

# Far longer than the producer waits: a poll that is not cut short fails the test.
LONG_POLL_MS = 10_000  # the setting's maximum
MESSAGE_TIMEOUT_MS = 3_000
ISR_FULL_S = 15.0
# Above the long poll, as the setting requires.
REPLICA_LAG_MS = 30_000
RECORDS = 60
RATE_PER_S = 200


def test_new_partition_is_fetched_without_waiting_for_a_long_poll(cluster_factory):
    config = dict(REPLICATION_CONFIG, replica_fetch_wait_ms_max=LONG_POLL_MS,
                  replica_lag_ms_max=REPLICA_LAG_MS)
    cluster = cluster_factory(config=config)
    # Every node leads one partition of this topic and follows the other two: each follower
    # now long-polls each leader, and no record arrives to end those polls.
    create_topic(cluster.bootstrap, "idle", 3)
    wait_isr_full(cluster, {"idle": 3}, ISR_FULL_S)
    create_topic(cluster.bootstrap, "fresh", 3)
    wait_isr_full(cluster, {"fresh": 3}, ISR_FULL_S)
    stream = Stream(cluster.bootstrap, "fresh", 3, RECORDS, RATE_PER_S,
                    conf={"message.timeout.ms": MESSAGE_TIMEOUT_MS}).start().finish(check=False)
    assert not stream.failed, (
        f"{len(stream.failed)} of {RECORDS} acks=all records failed (first: "
        f"{next(iter(stream.failed.values()))}): the followers did not fetch the new partitions "
        f"while long-polling their leaders")
    assert len(stream.acked) == RECORDS, stream.failure()
