"""Idempotent producers (issue 3, acceptance 6, first half).

What the broker promises: a batch is written once per (producer id, epoch, sequence). A retry of
a batch already in the log, even after a restart, is answered with the offsets it got the first
time and adds nothing to the log; a sequence gap is refused with OUT_OF_ORDER_SEQUENCE_NUMBER.
The first test drives this byte by byte with a raw client (InitProducerId v0, Produce v3); the
second lets librdkafka (enable.idempotence) retry across a broker restart and checks that every
record is stored exactly once and in order."""

from __future__ import annotations

from helpers import (
    consume_all, create_topic, fetch_batches, idempotent_batch, init_producer_id, produce_raw,
    produce_confluent, raw_connect,
)

OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
# Records in the produce-through-restart test; before which record the broker is restarted
# cleanly (SIGTERM) and killed (SIGKILL, then started again).
RESTART_RECORDS = 4000
RESTART_AT = 1500
KILL_AT = 3000
RESTART_PARTITIONS = 3


def test_replayed_batch_gets_its_original_offsets(broker):
    """Sends the same batch (same producer id, epoch, sequence) twice, and again after a
    restart: every answer is the first base offset and the log holds one copy. A gap is refused
    and writes nothing; the next in-sequence batch continues the offsets."""
    topic = "idem-raw"
    create_topic(broker.bootstrap, topic, 1)
    with raw_connect(broker.bootstrap) as sock:
        err, pid, epoch = init_producer_id(sock)
        assert err == 0 and pid >= 0 and epoch == 0, (err, pid, epoch)
        first = idempotent_batch(pid, epoch, 0, [b"a", b"b", b"c"])
        assert produce_raw(sock, topic, 0, first) == (0, 0)
        assert produce_raw(sock, topic, 0, first) == (0, 0)
        gap = idempotent_batch(pid, epoch, 5, [b"x"])
        assert produce_raw(sock, topic, 0, gap)[0] == OUT_OF_ORDER_SEQUENCE_NUMBER
        assert produce_raw(sock, topic, 0, idempotent_batch(pid, epoch, 3, [b"d"])) == (0, 3)
        # A second InitProducerId gets a different id: ids are never handed out twice.
        assert init_producer_id(sock)[1] != pid

    broker.restart()
    with raw_connect(broker.bootstrap) as sock:
        assert produce_raw(sock, topic, 0, first) == (0, 0)
        assert init_producer_id(sock)[1] > pid, "ids must not be reused after a restart"

    err, batches = fetch_batches(broker.bootstrap, topic, 0, 0)
    assert err == 0
    assert [(b.base_offset, b.last_offset, b.producer_id, b.base_sequence) for b in batches] == [
        (0, 2, pid, 0), (3, 3, pid, 3)]


def test_confluent_idempotent_producer_through_restart(broker):
    """librdkafka with enable.idempotence produces 4000 records over 3 partitions while the
    broker is restarted (SIGTERM) and later killed (SIGKILL) and started again, each time with
    records queued and in flight. After the kill librdkafka resends what it has no answer for,
    some of which the broker had written: those must be recognised from the state rebuilt on
    open. Every delivery succeeds, and reading back finds each record exactly once, in send
    order within its partition, at dense offsets."""
    topic = "idem-restart"
    create_topic(broker.bootstrap, topic, RESTART_PARTITIONS)
    records = [{"value": b"r-%05d" % i, "partition": i % RESTART_PARTITIONS}
               for i in range(RESTART_RECORDS)]
    events = []

    def disrupt(i: int) -> None:
        if i == RESTART_AT:
            broker.restart()
            events.append("restart")
        elif i == KILL_AT:
            broker.kill()
            broker.start()
            events.append("kill")

    run = produce_confluent(broker.bootstrap, topic, records,
                            {"enable.idempotence": True, "linger.ms": 20},
                            before_send=disrupt)
    assert events == ["restart", "kill"], events
    assert not run.errors, run.errors[:5]

    got = consume_all(broker.bootstrap, topic, RESTART_PARTITIONS, RESTART_RECORDS)
    values = [m.value for m in got]
    assert len(values) == len(set(values)), "duplicates in the log"
    assert sorted(values) == sorted(r["value"] for r in records), "records missing"
    for p in range(RESTART_PARTITIONS):
        mine = [m for m in got if m.partition == p]
        assert [m.value for m in mine] == [r["value"] for r in records if r["partition"] == p]
        assert [m.offset for m in mine] == list(range(len(mine))), "gap in offsets"
