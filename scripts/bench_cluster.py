"""The failover half of scripts/bench-cluster.sh, and its summary table.

Usage (bench-cluster.sh runs it; the cluster is already up under DIR, started by
scripts/cluster.sh):

    .venv/bin/python scripts/bench_cluster.py --dir DIR --binary BRAMBLE [--trials 20]
        [--controller-trials N] [--messages 3000000] [--record-size 100] [--producers 4]

Against the running three-node cluster it measures:
- **throughput and latency**: `bramble bench produce --json` into a one-partition topic of RF=1
  (acks=all), then RF=3 (acks=all, then acks=1), each sent to the partition's leader (the bench
  client does not route by leader), once the RF=3 ISR is full;
and, over trials:
- the **unavailability window** after a leader's kill -9: an idempotent acks=all confluent-kafka
  producer sends one record every PROBE_INTERVAL_S to partition 0 of an RF=3 topic; the leader of
  partition 0 is killed (SIGKILL to its pid); the window is the time from the kill to the first
  delivery report of a record queued after the kill (only a new leader can acknowledge one);
- **controller failover**: kill -9 of the controller, then the time until a survivor's own
  Metadata (a raw request to that node, tests/compat/cluster.py) names a controller among the
  survivors.
Between trials the killed node restarts (`scripts/cluster.sh restart N`) and the script waits
until every node lists all three brokers, one controller, and a full ISR on every partition, and
every voter has the whole metadata log.
Every record acknowledged in a trial is read back at its offset afterwards; a lost one fails the
run. Then it prints one table of all the figures. Exits 1 if a run or trial failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "compat"))
from cluster import metadata  # noqa: E402  (the raw Metadata v2 request of the test fixture)

HOST = "127.0.0.1"
NODES = (1, 2, 3)
TOPIC = "bench-failover"
# The throughput runs: (row name, topic, replication factor, acks).
PRODUCE_RUNS = [
    ("RF=1 acks=all", "bench-rf1", 1, "all"),
    ("RF=3 acks=all", "bench-rf3", 3, "all"),
    ("RF=3 acks=1", "bench-rf3", 3, "1"),
]
# Records of the unmeasured run before each measured one.
WARMUP_MESSAGES = 20_000
# Bound on one `bramble bench produce` run.
PRODUCE_TIMEOUT_S = 600
# One record to partition 0 this often while a leader dies (the window's resolution).
PROBE_INTERVAL_S = 0.01
# Deliveries seen before the kill, so the producer is connected and steady.
PROBE_WARMUP_RECORDS = 50
# Bound on the probe producer reaching its warm-up, and on it delivering again after a kill.
PROBE_READY_TIMEOUT_S = 30.0
UNAVAILABLE_TIMEOUT_S = 120.0
# Bound on the final flush of a probe producer and on reading its records back.
FLUSH_TIMEOUT_S = 60.0
READ_BACK_TIMEOUT_S = 60.0
# Bound on the cluster healing between trials (three brokers, one controller, full ISRs), and on
# survivors naming a new controller.
HEAL_TIMEOUT_S = 120.0
CONTROLLER_TIMEOUT_S = 60.0
# Interval between Metadata polls (the controller failover's resolution).
POLL_S = 0.02
# Bound on one `bramble cluster status` answer.
STATUS_TIMEOUT_S = 30
# Bound on a killed process disappearing.
KILL_TIMEOUT_S = 10.0
ADMIN_TIMEOUT_S = 30.0
# librdkafka's own log (connection refused while a node is down, ...) is noise here: critical only.
QUIET_LOG_LEVEL = 2
PROBE_CONF = {"acks": "all", "enable.idempotence": True, "linger.ms": 0,
              "log_level": QUIET_LOG_LEVEL}


class TrialFailed(Exception):
    pass


# --- the cluster under DIR ----------------------------------------------------------------------

@dataclass
class LocalCluster:
    """The cluster scripts/cluster.sh runs under `dir` (ports from its cluster.env); `binary`
    answers `cluster status`."""
    dir: Path
    binary: str
    kafka_port: int = 0

    def __post_init__(self):
        env = dict(line.split("=", 1) for line in (self.dir / "cluster.env").read_text().split()
                   if "=" in line)
        self.kafka_port = int(env["kafka_port"])

    def address(self, node: int) -> str:
        return f"{HOST}:{self.kafka_port + node - 1}"

    @property
    def bootstrap(self) -> str:
        return ",".join(self.address(n) for n in NODES)

    def pid(self, node: int) -> int:
        return int((self.dir / f"node-{node}.pid").read_text().strip())

    def kill(self, node: int) -> float:
        """SIGKILL to node's pid; returns the monotonic time it was sent (waits for the exit)."""
        pid = self.pid(node)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        deadline = killed + KILL_TIMEOUT_S
        while Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
            if time.monotonic() > deadline:
                raise TrialFailed(f"node {node} (pid {pid}) outlived SIGKILL")
            time.sleep(POLL_S)
        return killed

    def restart(self, node: int) -> None:
        subprocess.run([str(REPO_ROOT / "scripts" / "cluster.sh"), "restart", str(node),
                        "--dir", str(self.dir)], check=True, stdout=subprocess.DEVNULL)

    def quorum_lags(self, controller: int) -> dict[int, int | None]:
        """Each voter's metadata-log lag as the controller reports it (DescribeQuorum through
        `bramble cluster status --json`); {} if it did not answer."""
        res = subprocess.run([self.binary, "cluster", "status", "--json", "-b",
                              self.address(controller)], capture_output=True, text=True,
                             timeout=STATUS_TIMEOUT_S)
        if res.returncode != 0:
            return {}
        try:
            nodes = json.loads(res.stdout)["nodes"]
        except (ValueError, KeyError):
            return {}
        return {n["node_id"]: n.get("lag") for n in nodes if n.get("role") == "voter"}

    def ask(self, nodes) -> dict:
        """Each node's own Metadata (an exception for a node that did not answer)."""
        out = {}
        for n in nodes:
            try:
                out[n] = metadata(self.address(n))
            except (OSError, AssertionError, ValueError) as e:
                out[n] = e
        return out


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def healed(mds: dict) -> bool:
    """Every node answers, lists all three brokers, names one controller among them, and every
    partition of every topic it shows is led with a full ISR."""
    if any(isinstance(m, Exception) for m in mds.values()):
        return False
    if len({m.controller for m in mds.values()} - {-1}) != 1 or \
            any(m.controller not in NODES for m in mds.values()):
        return False
    for m in mds.values():
        if sorted(m.brokers) != list(NODES):
            return False
        for t in m.topics.values():
            for p in t.partitions.values():
                if p.leader < 0 or sorted(p.isr) != sorted(p.replicas):
                    return False
    return True


def wait_healed(cluster: LocalCluster) -> dict:
    """Waits until healed() holds and every voter has the whole metadata log (lag 0 at the
    controller): a voter just restarted may name the controller before it has the controller's
    last entries, and killing the controller then measures a slower election (the survivor with
    the shorter log stands first, is refused, and the other stands a timeout later)."""
    deadline = time.monotonic() + HEAL_TIMEOUT_S
    lags: dict[int, int | None] = {}
    while True:
        mds = cluster.ask(NODES)
        if healed(mds):
            lags = cluster.quorum_lags(mds[1].controller)
            if sorted(lags) == list(NODES) and all(lag == 0 for lag in lags.values()):
                return mds
        if time.monotonic() > deadline:
            raise TrialFailed(f"not healed within {HEAL_TIMEOUT_S}s: {_describe(mds)}; "
                              f"metadata log lag per voter {lags}")
        time.sleep(POLL_S)


def _describe(mds: dict) -> str:
    return "; ".join(f"node {n}: {m.summary() if not isinstance(m, Exception) else repr(m)}"
                     for n, m in mds.items())


# --- a probe producer ---------------------------------------------------------------------------

@dataclass
class Probe:
    """An idempotent acks=all producer in its own thread: one record every PROBE_INTERVAL_S to
    partition 0, recording when each was queued and acknowledged (and where)."""
    bootstrap: str
    tag: str
    queued: dict[int, float] = field(default_factory=dict)
    acked: dict[int, tuple[float, int]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    undelivered: int = 0

    def __post_init__(self):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def value(self, seq: int) -> bytes:
        return f"{self.tag}-{seq:08d}".encode()

    def _run(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, **PROBE_CONF})
        seq = 0
        while not self._stop.is_set():
            self.queued[seq] = time.monotonic()
            producer.produce(TOPIC, self.value(seq), partition=0, on_delivery=self._report(seq))
            seq += 1
            producer.poll(PROBE_INTERVAL_S)
        self.undelivered = producer.flush(FLUSH_TIMEOUT_S)

    def _report(self, seq: int):
        def callback(err, msg):
            now = time.monotonic()
            with self._lock:
                if err is None:
                    self.acked[seq] = (now, msg.offset())
                else:
                    self.failed[seq] = str(err)
        return callback

    def wait(self, done, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if done():
                    return
            if time.monotonic() > deadline:
                raise TrialFailed(f"{what} not within {timeout_s}s (failed: "
                                  f"{list(self.failed.values())[:3]})")
            time.sleep(POLL_S)

    def finish(self) -> None:
        self._stop.set()
        self._thread.join(FLUSH_TIMEOUT_S + 10)


def check_read_back(cluster: LocalCluster, probe: Probe) -> None:
    """Every acknowledged record of the probe is at its acknowledged offset of partition 0 (read
    from the probe's first acknowledged offset to the end)."""
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "bench-read-back",
                         "enable.auto.commit": False, "log_level": QUIET_LOG_LEVEL})
    try:
        tp = TopicPartition(TOPIC, 0)
        end = consumer.get_watermark_offsets(tp, timeout=ADMIN_TIMEOUT_S, cached=False)[1]
        first = min((o for _, o in probe.acked.values() if o is not None and o >= 0), default=end)
        consumer.assign([TopicPartition(TOPIC, 0, first if first < end else OFFSET_BEGINNING)])
        got: dict[int, bytes] = {}
        deadline = time.monotonic() + READ_BACK_TIMEOUT_S
        while (not got or max(got) + 1 < end) and end > first:
            if time.monotonic() > deadline:
                raise TrialFailed(f"read back {len(got)} records of {first}..{end}")
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                got[msg.offset()] = msg.value()
    finally:
        consumer.close()
    # librdkafka acknowledges some idempotent records without an offset (a retried batch the
    # leader already had): those must be in the partition somewhere.
    values = set(got.values())
    lost = [(seq, off) for seq, (_, off) in probe.acked.items()
            if (got.get(off) != probe.value(seq) if off is not None and off >= 0
                else probe.value(seq) not in values)]
    if lost:
        raise TrialFailed(f"{len(lost)} acknowledged records not at their offsets: {lost[:5]}")


# --- the trials ---------------------------------------------------------------------------------

def leader_trial(cluster: LocalCluster, trial: int) -> tuple[float, bool]:
    """Kill -9 of the leader of TOPIC-0 under a probe producer; returns the window (s) and
    whether the victim was the controller too (then a new controller must be elected first)."""
    mds = wait_healed(cluster)
    victim = mds[1].topics[TOPIC].partitions[0].leader
    was_controller = victim == mds[1].controller
    probe = Probe(cluster.bootstrap, f"t{trial}")
    try:
        probe.wait(lambda: len(probe.acked) >= PROBE_WARMUP_RECORDS, PROBE_READY_TIMEOUT_S,
                   "probe warm-up")
        killed = cluster.kill(victim)
        after = len(probe.queued)  # records queued from here on went out after the kill

        def delivered_after() -> bool:
            return any(seq >= after for seq in probe.acked)
        probe.wait(delivered_after, UNAVAILABLE_TIMEOUT_S, f"a delivery after killing {victim}")
    finally:
        probe.finish()
    window = min(at for seq, (at, _) in probe.acked.items() if seq >= after) - killed
    if probe.failed or probe.undelivered:
        raise TrialFailed(f"trial {trial}: {len(probe.failed)} deliveries failed "
                          f"({list(probe.failed.values())[:3]}), {probe.undelivered} undelivered")
    check_read_back(cluster, probe)
    print(f"leader trial {trial}: killed node {victim}"
          f"{' (the controller)' if was_controller else ''}, unavailable {window:.2f}s, "
          f"{len(probe.acked)} records acknowledged and read back", flush=True)
    cluster.restart(victim)
    return window, was_controller


def controller_trial(cluster: LocalCluster, trial: int) -> float:
    """Kill -9 of the controller; returns the time until a survivor names another one (s)."""
    old = wait_healed(cluster)[1].controller
    survivors = [n for n in NODES if n != old]
    killed = cluster.kill(old)
    deadline = killed + CONTROLLER_TIMEOUT_S
    while True:
        mds = cluster.ask(survivors)
        named = {m.controller for m in mds.values() if not isinstance(m, Exception)}
        if named & set(survivors):
            took = time.monotonic() - killed
            break
        if time.monotonic() > deadline:
            raise TrialFailed(f"no new controller within {CONTROLLER_TIMEOUT_S}s: "
                              f"{_describe(mds)}")
        time.sleep(POLL_S)
    print(f"controller trial {trial}: killed node {old}, node {sorted(named & set(survivors))} "
          f"named controller after {took:.2f}s", flush=True)
    cluster.restart(old)
    return took


def create_topic(cluster: LocalCluster, name: str, replication: int) -> None:
    """One partition; a topic already there (a rerun on the same cluster) is fine."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    future = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=replication)],
                                 operation_timeout=ADMIN_TIMEOUT_S)[name]
    try:
        future.result(timeout=ADMIN_TIMEOUT_S)
    except KafkaException as e:
        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def produce_run(cluster: LocalCluster, binary: str, topic: str, acks: str, args) -> dict:
    """`bramble bench produce --json` at the leader of topic-0, after a short unmeasured
    warm-up run (the first acks=all records to a new RF=3 partition wait for its followers'
    first fetches: several hundred ms); the measured run's report."""
    leader = wait_healed(cluster)[1].topics[topic].partitions[0].leader

    def run(messages: int) -> dict:
        cmd = [binary, "bench", "produce", "-b", cluster.address(leader), "--topic", topic,
               "--messages", str(messages), "--record-size", str(args.record_size),
               "--producers", str(args.producers), "--acks", acks, "--json"]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                             timeout=PRODUCE_TIMEOUT_S).stdout
        return json.loads(out.strip().splitlines()[-1])

    run(WARMUP_MESSAGES)
    report = run(args.messages)
    print(f"produce {topic} acks={acks} at node {leader}: {report['records_per_s']:,.0f} "
          f"records/s, p99 {report['latency_ms']['p99']:.2f} ms", flush=True)
    return report


# --- the summary --------------------------------------------------------------------------------

def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"median {statistics.median(values):.2f} s, max {max(values):.2f} s (n={len(values)})"


def summary(produce: dict[str, dict], windows: list[tuple[float, bool]],
            elections: list[float]) -> str:
    rows = ["", "== bramble cluster benchmark (3 nodes, 127.0.0.1) ==",
            f"{'run':<28} {'records/s':>12} {'MB/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'p99.9 ms':>9}"]
    for name, r in produce.items():
        lat = r["latency_ms"]
        rows.append(f"{name:<28} {r['records_per_s']:>12,.0f} {r['mb_per_s']:>8.1f} "
                    f"{lat['p50']:>8.2f} {lat['p99']:>8.2f} {lat['p999']:>9.2f}")
    label = 40
    rows.append(f"{'leader kill -9 -> acks=all produce':<{label}} "
                f"{spread([w for w, _ in windows])}")
    rows.append(f"{'  leader was not the controller':<{label}} "
                f"{spread([w for w, c in windows if not c])}")
    rows.append(f"{'  leader was the controller too':<{label}} "
                f"{spread([w for w, c in windows if c])}")
    rows.append(f"{'controller kill -9 -> new controller':<{label}} {spread(elections)}")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--binary", required=True)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--controller-trials", type=int, default=None,
                   help="controller kills (default: --trials)")
    p.add_argument("--messages", type=int, default=3_000_000)
    p.add_argument("--record-size", type=int, default=100)
    p.add_argument("--producers", type=int, default=4)
    args = p.parse_args()
    cluster = LocalCluster(args.dir.resolve(), args.binary)
    produce: dict[str, dict] = {}
    windows: list[tuple[float, bool]] = []
    elections: list[float] = []
    try:
        wait_healed(cluster)  # every broker registered: RF=3 placement needs all three
        for _, topic, rf, _ in PRODUCE_RUNS:
            create_topic(cluster, topic, rf)
        create_topic(cluster, TOPIC, 3)
        for name, topic, _, acks in PRODUCE_RUNS:
            produce[name] = produce_run(cluster, args.binary, topic, acks, args)
        for trial in range(args.trials):
            windows.append(leader_trial(cluster, trial))
        ctrl = args.trials if args.controller_trials is None else args.controller_trials
        for trial in range(ctrl):
            elections.append(controller_trial(cluster, trial))
        wait_healed(cluster)
    except (TrialFailed, subprocess.SubprocessError, KafkaException) as e:
        print(f"bench_cluster.py: FAILED: {e}", file=sys.stderr)
        print(summary(produce, windows, elections))
        return 1
    print(summary(produce, windows, elections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
