"""Memory discipline under the Raspberry Pi Zero 2 W profile (512 MB RAM): 64 confluent-kafka
producers and 64 confluent-kafka consumers work against one node at the same time, every record
produced is consumed by each consumer of its partition, and the broker's peak RSS (VmHWM, read
from /proc) stays under the profile's memory_max_bytes, the MemoryMax its systemd unit gets.
The peak is a measurement of this run, not a timing: the assertion is the board's budget.

Run with `-s` to see the figures: `.venv/bin/python -m pytest tests/compat/test_memory.py -s`.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from conftest import BRAMBLE_BIN
from helpers import create_topic

BOARD = "pi-zero-2w"
PRODUCERS = 64
CONSUMERS = 64
PARTITIONS = 8
RECORDS_PER_PRODUCER = 1000
RECORD_BYTES = 1000
# Each partition gets the records of PRODUCERS / PARTITIONS producers.
RECORDS_PER_PARTITION = PRODUCERS // PARTITIONS * RECORDS_PER_PRODUCER
# Bounds on the whole run, below pytest's per-test timeout (scripts/test.sh: 240 s) so a slow run
# fails here with the counts; a healthy debug build needs a small fraction of them.
PRODUCE_TIMEOUT_S = 120.0
CONSUME_TIMEOUT_S = 180.0
POLL_S = 0.5
# Client-side queue per consumer: librdkafka's default (64 MiB) times 64 would be the test's
# own memory problem, not the broker's.
CONSUMER_QUEUE_KBYTES = 2048


def board_memory_max_bytes() -> int:
    out = subprocess.run([str(BRAMBLE_BIN), "board", "show", BOARD], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    for line in out.splitlines():
        if line.startswith("memory_max_bytes = "):
            return int(line.split("=", 1)[1])
    raise AssertionError(f"no memory_max_bytes in `bramble board show {BOARD}`:\n{out}")


def proc_status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing from /proc/{pid}/status")


def open_connections(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += fd.readlink().name.startswith("socket:")
        except OSError:
            # Closed between the listing and the read: not open any more.
            continue
    return count


def produce(bootstrap: str, topic: str, index: int, errors: list) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "enable.idempotence": True})
    failed = []
    partition = index % PARTITIONS
    for seq in range(RECORDS_PER_PRODUCER):
        key = f"{index}:{seq}".encode()
        value = key.ljust(RECORD_BYTES, b"x")
        while True:
            try:
                producer.produce(topic, value=value, key=key, partition=partition,
                                 on_delivery=lambda err, _m: err and failed.append(err))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(PRODUCE_TIMEOUT_S)
    if left or failed:
        errors.append(f"producer {index}: {left} undelivered, errors {failed[:3]}")


def consume(bootstrap: str, topic: str, index: int, seen: dict, errors: list) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"mem-{index}",
                         "enable.auto.commit": False,
                         "queued.max.messages.kbytes": CONSUMER_QUEUE_KBYTES})
    partition = index % PARTITIONS
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    keys = set()
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    try:
        while len(keys) < RECORDS_PER_PARTITION and time.monotonic() < deadline:
            for msg in consumer.consume(500, POLL_S):
                if msg.error():
                    errors.append(f"consumer {index}: {msg.error()}")
                    return
                keys.add(msg.key())
    finally:
        consumer.close()
    seen[index] = keys


def test_pi_zero_2w_profile_64_producers_64_consumers_stay_under_budget(broker_factory):
    budget = board_memory_max_bytes()
    broker = broker_factory({"board": BOARD})
    pid = broker.proc.pid
    idle_kib = proc_status_kib(pid, "VmRSS")
    topic = "memory-load"
    create_topic(broker.bootstrap, topic, PARTITIONS)

    errors: list = []
    seen: dict = {}
    threads = [threading.Thread(target=consume, args=(broker.bootstrap, topic, i, seen, errors))
               for i in range(CONSUMERS)]
    threads += [threading.Thread(target=produce, args=(broker.bootstrap, topic, i, errors))
                for i in range(PRODUCERS)]
    for t in threads:
        t.start()
    peak_connections = 0
    while any(t.is_alive() for t in threads):
        peak_connections = max(peak_connections, open_connections(pid))
        time.sleep(POLL_S)
    for t in threads:
        t.join()

    hwm_kib = proc_status_kib(pid, "VmHWM")
    rss_kib = proc_status_kib(pid, "VmRSS")
    print(f"\n{BOARD}: idle VmRSS {idle_kib} KiB; with {PRODUCERS} producers and {CONSUMERS} "
          f"consumers peak VmHWM {hwm_kib} KiB, VmRSS after {rss_kib} KiB; "
          f"budget {budget // 1024} KiB; peak sockets {peak_connections}")
    assert not errors, errors[:5]
    for partition in range(PARTITIONS):
        expected = {f"{i}:{s}".encode() for i in range(partition, PRODUCERS, PARTITIONS)
                    for s in range(RECORDS_PER_PRODUCER)}
        for index in range(partition, CONSUMERS, PARTITIONS):
            got = seen.get(index, set())
            assert got == expected, (f"consumer {index} of partition {partition}: "
                                     f"{len(expected - got)} missing, {len(got - expected)} extra")
    assert hwm_kib * 1024 < budget, f"peak RSS {hwm_kib} KiB over the {BOARD} budget"
    assert broker.stop() == 0
