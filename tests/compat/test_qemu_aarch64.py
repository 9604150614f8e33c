"""The aarch64 build, run under qemu-user on the x86-64 test machine, is a working broker for real
clients, keeps its records across a clean restart, and takes the std disk backend by itself.

This is the Pi smoke test: the binary is the one a Pi would run (built by
scripts/test.sh with `cargo build --target aarch64-unknown-linux-gnu`, path in
$BRAMBLE_AARCH64_BIN), started as `qemu-aarch64 -L /usr/aarch64-linux-gnu bramble serve` with the
compat harness (free port, temp data dir, SIGTERM). qemu-user does not emulate io_uring, so the
startup probe really fails with ENOSYS: no BRAMBLE_IO_URING_PROBE_FAIL here, the fallback and
its log line are the genuine ones. Clients run on the host: confluent-kafka produces, kcat
produces and reads back.

The second test is the Pi binary as a cluster (issue 12 acceptance 3): three aarch64 nodes, each
under its own qemu-aarch64, form a metadata quorum on 127.0.0.1 (tests/compat/cluster.py's
Cluster, its nodes pointed at the emulated binary), take RF=3 records from an idempotent acks=all
confluent-kafka producer, lose the leader of a partition to kill -9 mid-stream, and every
acknowledged record is read back at its acknowledged offset from the survivors.

It skips, saying why, only when the aarch64 toolchain could not be installed (scripts/test.sh
passes the reason in $BRAMBLE_AARCH64_SKIP), or when run outside scripts/test.sh without
$BRAMBLE_AARCH64_BIN."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from cluster import Cluster
from conftest import Broker, finish_broker
from helpers import create_topic, produce_confluent
from replication import (Stream, check_acked_readable, isr_full, kafka_code,
                              kill_leader_of_stream, read_back)

# qemu-user runs an unoptimised aarch64 build instruction by instruction: far slower than native,
# and slower still on a loaded 2-core CI box. Bounds are generous, and named.
QEMU_STARTUP_TIMEOUT_S = 180.0
QEMU_SHUTDOWN_TIMEOUT_S = 90.0
# Bound on one kcat invocation against the emulated broker.
KCAT_TIMEOUT_S = 180
# Bound on one admin call against the emulated broker.
ADMIN_TIMEOUT_S = 60
# The port accepts connections (it is bound first) before the disk writer has started and the
# startup line is logged: how long to wait for that line, and how often to look.
STARTUP_LOG_TIMEOUT_S = 60.0
STARTUP_LOG_POLL_S = 0.1

SYSROOT = Path(os.environ.get("BRAMBLE_AARCH64_SYSROOT", "/usr/aarch64-linux-gnu"))
QEMU = shutil.which("qemu-aarch64")
KCAT = shutil.which("kcat")
AARCH64_BIN = os.environ.get("BRAMBLE_AARCH64_BIN")
# ELF e_machine of AArch64.
EM_AARCH64 = 183

# The three-node test (a cluster under emulation is slow on every path: elections, heartbeats,
# fsync-paced acks=all). Raft and liveness timing several times the fast test cluster's
# (cluster.CLUSTER_TIMING), so a loaded 2-core box does not flap elections or ISRs; config keys.
QEMU_CLUSTER_CONFIG = {
    "raft_heartbeat_ms": 250,
    "raft_election_timeout_min_ms": 1_500,
    "raft_election_timeout_max_ms": 3_000,
    "broker_heartbeat_ms": 500,
    "broker_session_timeout_ms": 6_000,
    "replica_lag_ms_max": 10_000,
    "replica_fetch_wait_ms_max": 200,
}
# Bound on three emulated voters agreeing on the brokers and one controller.
QEMU_FORM_TIMEOUT_S = 120.0
# Bound on an RF=3 topic's ISR being full on every node after its creation.
QEMU_ISR_FULL_TIMEOUT_S = 60.0
# Bound on the survivors naming new leaders for the killed node's partitions: fencing after
# broker_session_timeout_ms, then one election, under emulation.
QEMU_NEW_LEADER_TIMEOUT_S = 60.0
# Bound on CreateTopics against the emulated cluster.
QEMU_ADMIN_TIMEOUT_S = 120.0
CLUSTER_TOPIC = "pi-cluster"
CLUSTER_PARTITIONS = 2
# The produce stream: records, pace (records/s), and when the leader of partition 0 dies (after
# this many were acknowledged).
CLUSTER_RECORDS = 2_000
CLUSTER_RATE_PER_S = 200
CLUSTER_KILL_AFTER_ACKED = 600

TOPIC = "pi-smoke"
PARTITIONS = 2
FIRST_RECORDS = 300
KCAT_RECORDS = 50
SECOND_RECORDS = 200

FALLBACK_LINE = "io_uring unavailable, falling back to the std backend: ENOSYS"
STARTUP_BACKEND_FIELD = 'io_backend="std"'


def _skip_reason() -> str | None:
    if os.environ.get("BRAMBLE_AARCH64_SKIP"):
        return os.environ["BRAMBLE_AARCH64_SKIP"]
    if not AARCH64_BIN:
        return ("BRAMBLE_AARCH64_BIN is not set: scripts/test.sh builds the aarch64 binary and "
                "sets it (by hand: cargo build --target aarch64-unknown-linux-gnu)")
    if QEMU is None:
        return "qemu-aarch64 not found (Debian package qemu-user; scripts/setup.sh installs it)"
    if not (SYSROOT / "lib" / "ld-linux-aarch64.so.1").exists():
        return (f"no aarch64 glibc under {SYSROOT} (Debian libc6-arm64-cross, which comes with "
                "gcc-aarch64-linux-gnu; scripts/setup.sh installs it)")
    if KCAT is None:
        return "kcat not installed: run scripts/setup.sh"
    return None


SKIP_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


class QemuBroker(Broker):
    """`qemu-aarch64 -L SYSROOT $BRAMBLE_AARCH64_BIN serve ...`; SIGTERM reaches the guest, and
    qemu exits with the guest's exit code."""

    binary = Path(AARCH64_BIN or "/nonexistent")
    command_prefix = [str(QEMU), "-L", str(SYSROOT)]
    startup_timeout_s = QEMU_STARTUP_TIMEOUT_S
    shutdown_timeout_s = QEMU_SHUTDOWN_TIMEOUT_S


def check_aarch64_binary() -> None:
    """$BRAMBLE_AARCH64_BIN exists and is an aarch64 ELF executable."""
    assert QemuBroker.binary.is_file(), f"BRAMBLE_AARCH64_BIN={AARCH64_BIN} does not exist"
    with open(QemuBroker.binary, "rb") as f:
        header = f.read(20)
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == EM_AARCH64, (
        f"{AARCH64_BIN} is not an aarch64 ELF binary")


@pytest.fixture
def qemu_broker(request, tmp_path, monkeypatch):
    # The fallback must be qemu's real ENOSYS, not the forced one of the std-backend test stage.
    monkeypatch.delenv("BRAMBLE_IO_URING_PROBE_FAIL", raising=False)
    check_aarch64_binary()
    workdir = tmp_path / "qemu-broker"
    workdir.mkdir()
    broker = QemuBroker(workdir)
    yield broker
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    problems = finish_broker(broker, failed)
    assert not problems, "bramble under qemu: " + "\n".join(problems)


def kcat(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run([KCAT, *args], input=stdin, capture_output=True, timeout=KCAT_TIMEOUT_S)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return res


def read_all(broker: Broker) -> dict[int, list[tuple[int, bytes]]]:
    """Every record of TOPIC, read with kcat from the beginning: partition -> [(offset, value)]."""
    res = kcat("-b", broker.bootstrap, "-C", "-t", TOPIC, "-o", "beginning", "-e", "-q",
               "-f", "%p\t%o\t%s\n")
    out: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(PARTITIONS)}
    for line in res.stdout.splitlines():
        p, o, value = line.split(b"\t", 2)
        out[int(p)].append((int(o), value))
    for recs in out.values():
        recs.sort()
    return out


def wait_for_startup_lines(broker: Broker, starts: int) -> str:
    """The broker log once it holds `starts` startup lines (one per start so far)."""
    deadline = time.monotonic() + STARTUP_LOG_TIMEOUT_S
    while True:
        log = broker.log_path.read_text(errors="replace")
        if log.count(STARTUP_BACKEND_FIELD) >= starts or time.monotonic() > deadline:
            return log
        time.sleep(STARTUP_LOG_POLL_S)


def io_backend_of(broker: Broker) -> str:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(ConfigResource.Type.BROKER, "1")
    configs = admin.describe_configs([resource])[resource].result(ADMIN_TIMEOUT_S)
    return configs["bramble.io.backend"].value


def test_aarch64_under_qemu_serves_restarts_and_falls_back_to_std(qemu_broker):
    """Records produced by confluent-kafka (acks=all, 2 partitions) and kcat are read back by kcat
    at dense offsets; after SIGTERM (exit 0) and a restart on the same data dir every record is
    still there at the same offset, and new produces continue each partition's offsets. Both
    starts log the ENOSYS fallback and `io_backend="std"`, and DescribeConfigs says std."""
    broker = qemu_broker.start()
    log = wait_for_startup_lines(broker, 1)
    assert STARTUP_BACKEND_FIELD in log, log
    assert FALLBACK_LINE in log, log
    assert io_backend_of(broker) == "std"

    create_topic(broker.bootstrap, TOPIC, PARTITIONS)
    first = [{"key": b"k%d" % i, "value": b"first-%d" % i, "partition": i % PARTITIONS}
             for i in range(FIRST_RECORDS)]
    run = produce_confluent(broker.bootstrap, TOPIC, first)
    assert not run.errors, run.errors[:3]
    expected: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    for rec in first:
        expected[rec["partition"]].append(rec["value"])

    lines = [b"kcat-%d" % i for i in range(KCAT_RECORDS)]
    kcat("-b", broker.bootstrap, "-P", "-t", TOPIC, "-p", "0", "-X", "acks=all",
         stdin=b"\n".join(lines) + b"\n")
    expected[0] += lines

    def check(got: dict[int, list[tuple[int, bytes]]]) -> None:
        for p in range(PARTITIONS):
            assert [o for o, _ in got[p]] == list(range(len(expected[p]))), f"partition {p}"
            assert sorted(v for _, v in got[p]) == sorted(expected[p]), f"partition {p}"
            # Within one producer, order is kept: the confluent records come first, in order.
            confluent = [v for _, v in got[p] if v.startswith(b"first-")]
            assert confluent == [v for v in expected[p] if v.startswith(b"first-")]

    before = read_all(broker)
    check(before)

    code = broker.stop()
    assert code == 0, f"SIGTERM exit code {code}\n{broker.log_tail()}"
    broker.start()
    log = wait_for_startup_lines(broker, 2)
    assert log.count(STARTUP_BACKEND_FIELD) == 2, broker.log_tail()
    assert log.count(FALLBACK_LINE) == 2, broker.log_tail()

    after = read_all(broker)
    assert after == before, "records changed across the restart"

    second = [{"value": b"second-%d" % i, "partition": i % PARTITIONS}
              for i in range(SECOND_RECORDS)]
    run = produce_confluent(broker.bootstrap, TOPIC, second)
    assert not run.errors, run.errors[:3]
    for p in range(PARTITIONS):
        offsets = sorted(d.offset for d in run.acked if d.partition == p)
        start = len(expected[p])
        assert offsets == list(range(start, start + len(offsets))), f"partition {p}: {offsets[:5]}"
    for rec in second:
        expected[rec["partition"]].append(rec["value"])
    check(read_all(broker))


# --- three aarch64 nodes (issue 12 acceptance 3) ---------------------------------------------

def start_qemu_cluster(cluster_factory) -> Cluster:
    """Three voters, each `qemu-aarch64 -L SYSROOT $BRAMBLE_AARCH64_BIN serve ...`, started and
    agreed on one controller. Cluster builds conftest Brokers: each node's binary, command prefix
    and start-up/shutdown bounds (class attributes there) are set to QemuBroker's."""
    check_aarch64_binary()
    cluster = cluster_factory(config=QEMU_CLUSTER_CONFIG, start=False)
    for node in cluster.nodes.values():
        node.binary = QemuBroker.binary
        node.command_prefix = QemuBroker.command_prefix
        node.startup_timeout_s = QemuBroker.startup_timeout_s
        node.shutdown_timeout_s = QemuBroker.shutdown_timeout_s
    cluster.start_all(wait=False)
    cluster.wait_formed(timeout_s=QEMU_FORM_TIMEOUT_S)
    return cluster


def create_rf3_topic(bootstrap: str, name: str, partitions: int) -> None:
    client = AdminClient({"bootstrap.servers": bootstrap})
    futures = client.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=3)],
        operation_timeout=QEMU_ADMIN_TIMEOUT_S, request_timeout=QEMU_ADMIN_TIMEOUT_S)
    futures[name].result(timeout=QEMU_ADMIN_TIMEOUT_S)


def test_three_aarch64_nodes_lose_the_leader_and_keep_every_acknowledged_record(
        cluster_factory, monkeypatch, capsys):
    """Three aarch64 nodes under qemu-user form a quorum (each on the std backend, by qemu's real
    ENOSYS); an RF=3 topic gets a full ISR of 3 everywhere; an idempotent acks=all
    confluent-kafka producer writes CLUSTER_RECORDS records (unique values) at a steady pace; after
    CLUSTER_KILL_AFTER_ACKED acknowledgements the leader of partition 0 is killed (-9). The
    survivors name new leaders among themselves, the producer delivers to partition 0 again (a
    record queued after the kill), no delivery fails, and read back from the survivors every
    acknowledged record is at its acknowledged offset with no value twice."""
    monkeypatch.delenv("BRAMBLE_IO_URING_PROBE_FAIL", raising=False)
    started = time.monotonic()
    cluster = start_qemu_cluster(cluster_factory)
    formed_s = time.monotonic() - started
    for i, node in cluster.nodes.items():
        log = wait_for_startup_lines(node, 1)
        assert STARTUP_BACKEND_FIELD in log and FALLBACK_LINE in log, f"node {i}: {log[-2000:]}"

    create_rf3_topic(cluster.bootstrap, CLUSTER_TOPIC, CLUSTER_PARTITIONS)
    topics = {CLUSTER_TOPIC: CLUSTER_PARTITIONS}
    cluster.wait_partitions(topics, isr_full(), f"{CLUSTER_TOPIC}: full ISR",
                            timeout_s=QEMU_ISR_FULL_TIMEOUT_S)

    stream = Stream(cluster.bootstrap, CLUSTER_TOPIC, CLUSTER_PARTITIONS, CLUSTER_RECORDS,
                    CLUSTER_RATE_PER_S).start()
    f = kill_leader_of_stream(cluster, stream, CLUSTER_KILL_AFTER_ACKED, QEMU_ADMIN_TIMEOUT_S,
                              QEMU_NEW_LEADER_TIMEOUT_S)
    survivors_bootstrap = ",".join(cluster.nodes[i].bootstrap for i in f.survivors)
    got = read_back(survivors_bootstrap, CLUSTER_TOPIC, CLUSTER_PARTITIONS)
    problems = [stream.failure()] if stream.failure() else []
    if f.window_s is None:
        problems.append("no record queued after the kill was delivered to partition 0")
    problems += check_acked_readable(stream, got)
    problems += [f"record {seq} failed: {kafka_code(e)}"
                 for seq, e in sorted(stream.failed.items())[:10]]
    window = f"{f.window_s:.2f}s" if f.window_s is not None else "never"
    with capsys.disabled():
        print(f"\n[qemu] aarch64 x3: formed in {formed_s:.1f}s; killed node {f.victim} (leader "
              f"of partition 0) after {CLUSTER_KILL_AFTER_ACKED} acks; new leaders in "
              f"{f.new_leader_s:.1f}s, partition 0 unavailable {window}; {len(stream.acked)} "
              f"acked, {len(stream.failed)} failed, {sum(map(len, got.values()))} read back; "
              f"{time.monotonic() - started:.0f}s in all")
    assert not problems, f"{len(problems)} problems: {problems[:10]}"
