"""Producers with their out-of-the-box settings.

kafka-python 3.x (like the Java client since 3.0 and franz-go) is idempotent by default
(KIP-679): it calls InitProducerId before its first Produce and gives up if the broker does not
offer it (docs/COMPAT.md). A broker that advertises a post-0.11 Produce range must
therefore implement InitProducerId, or every default kafka-python producer fails."""

from __future__ import annotations

from kafka import KafkaProducer

from helpers import consume_all, create_topic, fetch_batches

RECORDS = 500
# Bound on one send's acknowledgement.
SEND_TIMEOUT_S = 30


def test_kafka_python_default_producer_idempotent(broker):
    """kafka-python's default KafkaProducer (idempotent, acks=all) delivers 500 records at
    offsets 0..499, they read back exactly once and in order, and the stored batches carry the
    producer id and sequence numbers the broker assigned (producer id >= 0, sequences from 0)."""
    topic = "kp-default"
    create_topic(broker.bootstrap, topic, 1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    try:
        futures = [producer.send(topic, value=b"kp-%04d" % i) for i in range(RECORDS)]
        producer.flush(SEND_TIMEOUT_S)
        offsets = [f.get(timeout=SEND_TIMEOUT_S).offset for f in futures]
    finally:
        producer.close()
    assert offsets == list(range(RECORDS))

    got = consume_all(broker.bootstrap, topic, 1, RECORDS)
    assert [m.value for m in got] == [b"kp-%04d" % i for i in range(RECORDS)]
    assert [m.offset for m in got] == list(range(RECORDS))

    err, batches = fetch_batches(broker.bootstrap, topic, 0, 0)
    assert err == 0 and batches, f"raw fetch error {err}"
    assert all(b.producer_id >= 0 for b in batches), batches[:3]
    assert batches[0].base_sequence == 0, batches[0]
