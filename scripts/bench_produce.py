"""Single-producer throughput with a real client (confluent-kafka / librdkafka).

Usage: .venv/bin/python scripts/bench_produce.py BOOTSTRAP [--records N] [--record-size B] [--acks all]
Prints one line: records/s, MB/s and delivery latency percentiles (produce() call to delivery
report). A benchmark, not a test: it asserts nothing about speed, only that every record was
delivered. `bramble bench` (issue 3) will replace it with the crate's own client."""

from __future__ import annotations

import argparse
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

# Bound on the final flush; a healthy local broker needs a fraction of this.
FLUSH_TIMEOUT_S = 300


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("bootstrap")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--record-size", type=int, default=100)
    p.add_argument("--acks", default="all")
    p.add_argument("--topic", default="bench")
    p.add_argument("--linger-ms", type=int, default=5)
    args = p.parse_args()

    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    admin.create_topics([NewTopic(args.topic, 1, 1)])[args.topic].result(30)

    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": args.acks,
        "linger.ms": args.linger_ms,
        "queue.buffering.max.messages": 1_000_000,
        "enable.idempotence": False,
    })
    latencies: list[float] = []
    errors: list[str] = []
    payload = b"x" * args.record_size

    def delivered(err, msg, sent=None):
        if err is not None:
            errors.append(str(err))

    start = time.perf_counter()
    for i in range(args.records):
        sent = time.perf_counter()
        while True:
            try:
                producer.produce(args.topic, payload,
                                 on_delivery=lambda err, msg, sent=sent: (
                                     latencies.append(time.perf_counter() - sent), delivered(err, msg)))
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    left = producer.flush(FLUSH_TIMEOUT_S)
    elapsed = time.perf_counter() - start
    if left or errors or len(latencies) != args.records:
        print(f"FAILED: {left} undelivered, {len(errors)} errors {errors[:3]}", file=sys.stderr)
        return 1
    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    mb = args.records * args.record_size / elapsed / 1e6
    print(f"records={args.records} size={args.record_size}B acks={args.acks} "
          f"records/s={args.records / elapsed:,.0f} MB/s={mb:.1f} "
          f"latency_ms p50={pct(0.5):.1f} p99={pct(0.99):.1f} max={latencies[-1] * 1000:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
