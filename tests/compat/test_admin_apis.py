"""Admin APIs that real clients call (issue 9, items 14 and 15): DeleteRecords, the legacy
AlterConfigs, DescribeLogDirs, AlterReplicaLogDirs, DescribeTopicPartitions, IncrementalAlterConfigs'
APPEND/SUBTRACT and dynamic broker configs, DescribeConfigs' full listing, and authorized
operations, each through kafka-python's KafkaAdminClient and/or confluent-kafka's AdminClient.
Before these existed the broker closed the connection on the unknown API keys."""

from __future__ import annotations

import os

import pytest
from confluent_kafka import KafkaException, Producer, TopicPartition as CkTopicPartition
from confluent_kafka import TopicCollection
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, OffsetSpec)
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource as KpConfigResource, ConfigResourceType
from kafka.errors import OffsetOutOfRangeError

from helpers import ADMIN_TIMEOUT_S, CONSUMER_IDLE_TIMEOUT_MS, FLUSH_TIMEOUT_S, create_topic

RECORDS = 10
# Kafka's AclOperation bit set for a topic and for the cluster with no authorizer.
TOPIC_OPERATIONS_ALL = {"READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE",
                        "DESCRIBE_CONFIGS", "ALTER_CONFIGS"}
CLUSTER_OPERATIONS_ALL = {"CREATE", "ALTER", "DESCRIBE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS",
                          "ALTER_CONFIGS", "IDEMPOTENT_WRITE"}


def produce(bootstrap: str, topic: str, count: int, partition: int = 0) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(count):
        producer.produce(topic, f"v{i}".encode(), partition=partition)
    assert producer.flush(FLUSH_TIMEOUT_S) == 0


def kp_admin(broker) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap,
                            request_timeout_ms=int(ADMIN_TIMEOUT_S * 1000))


def ck_admin(broker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def earliest(broker, topic: str, partition: int = 0) -> int:
    tp = CkTopicPartition(topic, partition)
    admin = ck_admin(broker)  # held until the answer is in: a dropped client cancels it
    futures = admin.list_offsets({tp: OffsetSpec.earliest()}, request_timeout=ADMIN_TIMEOUT_S)
    return futures[tp].result(timeout=ADMIN_TIMEOUT_S).offset


def read_offsets(broker, topic: str) -> list[int]:
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False,
                             consumer_timeout_ms=CONSUMER_IDLE_TIMEOUT_MS // 5)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        return [m.offset for m in consumer]
    finally:
        consumer.close()


def test_delete_records_survives_restart(broker):
    """kafka-python deletes below offset 4, confluent-kafka up to the high watermark (-1);
    reads, ListOffsets earliest and a restart all see the new log start; past the high watermark
    is OFFSET_OUT_OF_RANGE."""
    create_topic(broker.bootstrap, "dr", 1)
    produce(broker.bootstrap, "dr", RECORDS)
    admin = kp_admin(broker)
    try:
        result = admin.delete_records({TopicPartition("dr", 0): 4})
        assert result[TopicPartition("dr", 0)]["low_watermark"] == 4
        with pytest.raises(OffsetOutOfRangeError):
            admin.delete_records({TopicPartition("dr", 0): RECORDS + 1})
    finally:
        admin.close()
    assert earliest(broker, "dr") == 4
    assert read_offsets(broker, "dr") == list(range(4, RECORDS))

    broker.restart()
    assert earliest(broker, "dr") == 4
    tp = CkTopicPartition("dr", 0, -1)  # -1: up to the high watermark
    admin = ck_admin(broker)
    futures = admin.delete_records([tp], request_timeout=ADMIN_TIMEOUT_S)
    deleted = futures[tp].result(timeout=ADMIN_TIMEOUT_S)
    assert deleted.low_watermark == RECORDS
    assert earliest(broker, "dr") == RECORDS


def describe_topic_configs(broker, topic: str) -> dict:
    resource = ConfigResource("TOPIC", topic)
    admin = ck_admin(broker)
    futures = admin.describe_configs([resource], request_timeout=ADMIN_TIMEOUT_S)
    return futures[resource].result(timeout=ADMIN_TIMEOUT_S)


def test_offsets_for_times_start_at_the_log_start(broker):
    """After DeleteRecords, ListOffsets by timestamp (kafka-python's offsets_for_times) answers
    the log start offset, not a deleted record's, and a consumer seeking there reads on."""
    create_topic(broker.bootstrap, "drt", 1)
    produce(broker.bootstrap, "drt", RECORDS)
    admin = kp_admin(broker)
    try:
        admin.delete_records({TopicPartition("drt", 0): 7})
    finally:
        admin.close()
    tp = TopicPartition("drt", 0)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=CONSUMER_IDLE_TIMEOUT_MS // 5)
    try:
        found = consumer.offsets_for_times({tp: 0})[tp]
        assert found is not None and found.offset == 7, found
        consumer.assign([tp])
        consumer.seek(tp, found.offset)
        assert [m.offset for m in consumer] == list(range(7, RECORDS))
    finally:
        consumer.close()


def test_legacy_alter_configs_replaces_the_whole_set(broker):
    """kafka-python's AlterConfigs (incremental=False) sets a topic config; validate_only changes
    nothing."""
    create_topic(broker.bootstrap, "ac", 1, {"segment.ms": "3600000"})
    admin = kp_admin(broker)
    try:
        resource = KpConfigResource(ConfigResourceType.TOPIC, "ac",
                                    configs={"retention.ms": "60000"})
        admin.alter_configs([resource], incremental=False, validate_only=True)
        assert describe_topic_configs(broker, "ac")["retention.ms"].value == "604800000"
        admin.alter_configs([resource], incremental=False)
    finally:
        admin.close()
    configs = describe_topic_configs(broker, "ac")
    assert configs["retention.ms"].value == "60000"
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    # kafka-python re-sends the topic's other overrides (it knows AlterConfigs replaces the set);
    # tests/admin_apis.rs checks the replacement itself with a raw request.
    assert configs["segment.ms"].value == "3600000"


def test_describe_configs_lists_kafka_configs(broker):
    """DescribeConfigs lists Kafka's topic configs (compression.type at its default) and broker
    settings (advertised.listeners static and read-only)."""
    create_topic(broker.bootstrap, "dc", 1, {"retention.ms": "1000"})
    configs = describe_topic_configs(broker, "dc")
    assert configs["compression.type"].value == "producer"
    assert configs["compression.type"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    for name in ("min.insync.replicas", "message.timestamp.type", "segment.index.bytes"):
        assert name in configs, name
    resource = ConfigResource("BROKER", "1")
    admin = ck_admin(broker)
    futures = admin.describe_configs([resource], request_timeout=ADMIN_TIMEOUT_S)
    broker_configs = futures[resource].result(timeout=ADMIN_TIMEOUT_S)
    listeners = broker_configs["advertised.listeners"]
    assert listeners.value == f"PLAINTEXT://{broker.bootstrap}"
    assert listeners.is_read_only
    assert listeners.source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert "compression.type" in broker_configs


def incremental(broker, resource_type: str, name: str, *entries: ConfigEntry):
    resource = ConfigResource(resource_type, name, incremental_configs=list(entries))
    admin = ck_admin(broker)
    futures = admin.incremental_alter_configs([resource], request_timeout=ADMIN_TIMEOUT_S)
    return futures[resource].result(timeout=ADMIN_TIMEOUT_S)


def test_incremental_append_and_subtract_on_list_configs(broker):
    """confluent-kafka: APPEND adds to cleanup.policy's current (default) value, SUBTRACT
    removes; APPEND on a config that is not a list is INVALID_REQUEST."""
    create_topic(broker.bootstrap, "ia", 1)
    append = AlterConfigOpType.APPEND
    incremental(broker, "TOPIC", "ia", ConfigEntry("cleanup.policy", "compact",
                                                   incremental_operation=append))
    policy = describe_topic_configs(broker, "ia")["cleanup.policy"].value
    assert sorted(policy.split(",")) == ["compact", "delete"]
    incremental(broker, "TOPIC", "ia", ConfigEntry("cleanup.policy", "delete",
                                                   incremental_operation=AlterConfigOpType.SUBTRACT))
    assert describe_topic_configs(broker, "ia")["cleanup.policy"].value == "compact"
    with pytest.raises(KafkaException) as refused:
        incremental(broker, "TOPIC", "ia", ConfigEntry("retention.ms", "5",
                                                       incremental_operation=append))
    assert refused.value.args[0].name() == "INVALID_REQUEST"


def test_dynamic_broker_configs(broker):
    """log.retention.ms changes at run time (and survives a restart); a static setting is
    refused with Kafka's INVALID_REQUEST "Cannot update these configs dynamically"."""
    set_op = AlterConfigOpType.SET
    incremental(broker, "BROKER", "1", ConfigEntry("log.retention.ms", "3600000",
                                                   incremental_operation=set_op))
    create_topic(broker.bootstrap, "dyn", 1)
    retention = describe_topic_configs(broker, "dyn")["retention.ms"]
    assert retention.value == "3600000"
    assert retention.source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
    with pytest.raises(KafkaException) as refused:
        incremental(broker, "BROKER", "1", ConfigEntry("num.partitions", "3",
                                                       incremental_operation=set_op))
    assert refused.value.args[0].name() == "INVALID_REQUEST"
    assert "Cannot update these configs dynamically" in refused.value.args[0].str()
    broker.restart()
    assert describe_topic_configs(broker, "dyn")["retention.ms"].value == "3600000"


def test_log_dirs(broker):
    """kafka-python: DescribeLogDirs names the data dir with each partition's size and the file
    system's space; AlterReplicaLogDirs to that dir succeeds, to another is LOG_DIR_NOT_FOUND."""
    create_topic(broker.bootstrap, "ld", 2)
    produce(broker.bootstrap, "ld", RECORDS)
    data_dir = os.path.realpath(broker.data_dir)
    admin = kp_admin(broker)
    try:
        [node] = admin.describe_log_dirs()
        [log_dir] = node["log_dirs"]
        assert log_dir["log_dir"] == data_dir
        assert log_dir["total_bytes"] > 0 and 0 <= log_dir["usable_bytes"] <= log_dir["total_bytes"]
        [topic] = [t for t in log_dir["topics"] if t["name"] == "ld"]
        sizes = {p["partition_index"]: p["partition_size"] for p in topic["partitions"]}
        assert sizes[0] > 0 and sizes[1] == 0
        moved = admin.alter_replica_log_dirs({("ld", 0, 1): data_dir,
                                              ("ld", 1, 1): data_dir + "-elsewhere"})
        errors = {k.partition: v.__name__ for k, v in moved.items()}
        assert errors == {0: "NoError", 1: "LogDirNotFoundError"}
    finally:
        admin.close()


def test_describe_topic_partitions_pages(broker):
    """kafka-python's DescribeTopicPartitions with a limit of 2 walks a 5-partition topic and a
    1-partition topic in pages, following next_cursor."""
    create_topic(broker.bootstrap, "pa", 5)
    create_topic(broker.bootstrap, "pb", 1)
    admin = kp_admin(broker)
    seen, cursor, pages = [], None, 0
    try:
        while True:
            page = admin.describe_topic_partitions(["pb", "pa"], response_partition_limit=2,
                                                   cursor=cursor)
            pages += 1
            for t in page["topics"]:
                assert t["error_code"] == 0
                seen += [(t["name"], p["partition_index"]) for p in t["partitions"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert pages < 10, "pagination does not end"
    finally:
        admin.close()
    assert seen == [("pa", i) for i in range(5)] + [("pb", 0)]
    assert pages == 3


def test_authorized_operations_confluent(broker):
    """confluent-kafka's describe_cluster / describe_topics with include_authorized_operations:
    with no authorizer every operation is allowed."""
    create_topic(broker.bootstrap, "ops", 1)
    admin = ck_admin(broker)
    cluster = admin.describe_cluster(include_authorized_operations=True,
                                     request_timeout=ADMIN_TIMEOUT_S).result(timeout=ADMIN_TIMEOUT_S)
    assert {op.name for op in cluster.authorized_operations} == CLUSTER_OPERATIONS_ALL
    futures = admin.describe_topics(TopicCollection(["ops"]), include_authorized_operations=True,
                                    request_timeout=ADMIN_TIMEOUT_S)
    topic = futures["ops"].result(timeout=ADMIN_TIMEOUT_S)
    assert {op.name for op in topic.authorized_operations} == TOPIC_OPERATIONS_ALL
    assert len(topic.partitions) == 1
