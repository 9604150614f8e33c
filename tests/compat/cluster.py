"""A cluster of `bramble serve` processes on 127.0.0.1 for the multi-node tests (issue 10), and
raw requests that ask one chosen node (a client library would ask whichever broker it likes).

A `Cluster` owns N nodes (ids 1..N), each a conftest `Broker` with its own Kafka port, Raft port,
data dir and log under tmp_path, all picked before the first start because every node's
`--voters` names every Raft address. Nodes keep their ports across stop/start/kill, so a test can
crash a voter and bring it back on the same log. The wait helpers poll each running node's own
Metadata (a raw request on a connection to that node) until the cluster agrees, and raise with
what each node last said and every node's log tail.

The timing settings that make elections and fencing fast enough for a test run live in
CLUSTER_TIMING (one place: if the server names a key differently, change it here). A test that
needs settings a node may not know yet passes them itself (`config`, or `args` for command-line
flags), so the other tests keep running against a binary without them.
"""

from __future__ import annotations

import signal
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import HOST, Broker, BrokerError, _toml_value
from helpers import RAW_REQUEST_TIMEOUT_S, _kstr, _raw_call, raw_connect

# Raft and broker-liveness timing for tests: short enough that a failover takes about a second on
# a debug build, long enough that a loaded 2-core box does not flap elections. Config file keys.
CLUSTER_TIMING = {
    "raft_heartbeat_ms": 100,
    "raft_election_timeout_min_ms": 500,
    "raft_election_timeout_max_ms": 1_000,
    "broker_heartbeat_ms": 250,
    "broker_session_timeout_ms": 2_000,
}
DEFAULT_SIZE = 3
# Bound on a fresh or restarted cluster agreeing: every node shows every broker and one controller.
FORM_TIMEOUT_S = 30.0
# Bound on a survivor seeing a new controller after the old one died.
FAILOVER_TIMEOUT_S = 15.0
# Bound on a committed topic appearing in every node's Metadata.
PROPAGATION_TIMEOUT_S = 10.0
# Interval between Metadata polls of the wait helpers (fine enough to time a failover).
POLL_INTERVAL_S = 0.02
# A port picked by binding :0 may be taken before the node binds it: pick all again this often.
CLUSTER_PORT_PICK_ATTEMPTS = 3

API_METADATA = 3
API_FIND_COORDINATOR = 10
API_CREATE_TOPICS = 19
# Metadata v2: brokers with racks, the cluster id, the controller id; no flexible encoding.
METADATA_VERSION = 2
CREATE_TOPICS_VERSION = 2
FIND_COORDINATOR_VERSION = 1


# --- raw requests to one node ----------------------------------------------------------------

class _Reader:
    """Reads big-endian Kafka primitives from a response body."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, fmt: str):
        vals = struct.unpack_from(">" + fmt, self.data, self.pos)
        self.pos += struct.calcsize(">" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def string(self) -> str | None:
        n = self.take("h")
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def int32s(self) -> list[int]:
        n = self.take("i")
        return [self.take("i") for _ in range(max(n, 0))]


@dataclass
class PartitionInfo:
    error: int
    leader: int
    replicas: list[int]
    isr: list[int]


@dataclass
class TopicInfo:
    error: int
    internal: bool
    partitions: dict[int, PartitionInfo]


# A failure message's summary of one node's Metadata: topics listed one by one up to this many,
# and this many of the partitions short of a leader or a full ISR.
SUMMARY_TOPICS_MAX = 20
SUMMARY_UNHEALTHY_MAX = 8


@dataclass
class NodeMetadata:
    """One node's answer to Metadata v2 for all topics."""
    brokers: dict[int, tuple[str, str | None]]  # node id -> ("host:port", rack)
    cluster_id: str | None
    controller: int
    topics: dict[str, TopicInfo] = field(default_factory=dict)

    def summary(self) -> str:
        """What a failure message shows: brokers, controller, topics with partition counts (or
        only their number, past SUMMARY_TOPICS_MAX), and the first SUMMARY_UNHEALTHY_MAX
        partitions without a leader or with an ISR short of their replicas."""
        topics: object = {n: len(t.partitions) for n, t in sorted(self.topics.items())}
        if len(self.topics) > SUMMARY_TOPICS_MAX:
            topics = f"{len(self.topics)} topics"
        unhealthy = [f"{n}/{p} error {i.error} leader {i.leader} isr {i.isr} of {i.replicas}"
                     for n, t in sorted(self.topics.items())
                     for p, i in sorted(t.partitions.items())
                     if i.error != 0 or i.leader < 0 or sorted(i.isr) != sorted(i.replicas)]
        shown = "; ".join(unhealthy[:SUMMARY_UNHEALTHY_MAX])
        more = f" (+{len(unhealthy) - SUMMARY_UNHEALTHY_MAX} more)" \
            if len(unhealthy) > SUMMARY_UNHEALTHY_MAX else ""
        return (f"brokers={self.brokers} cluster_id={self.cluster_id} "
                f"controller={self.controller} topics={topics} "
                f"unhealthy partitions: {len(unhealthy)}{': ' + shown if shown else ''}{more}")

    def placement(self, topic: str) -> dict[int, tuple[int, list[int]]]:
        """partition -> (leader, replicas) of one topic."""
        return {p: (info.leader, info.replicas)
                for p, info in sorted(self.topics[topic].partitions.items())}


def metadata(bootstrap: str) -> NodeMetadata:
    """Metadata v2 (all topics) from exactly the node at `bootstrap`."""
    with raw_connect(bootstrap) as sock:
        body = _raw_call(sock, API_METADATA, METADATA_VERSION, 21, struct.pack(">i", -1))
    r = _Reader(body)
    brokers = {}
    for _ in range(r.take("i")):
        node_id, host, port, rack = r.take("i"), r.string(), r.take("i"), r.string()
        brokers[node_id] = (f"{host}:{port}", rack)
    cluster_id = r.string()
    controller = r.take("i")
    topics = {}
    for _ in range(r.take("i")):
        error, name, internal = r.take("h"), r.string(), bool(r.take("b"))
        partitions = {}
        for _ in range(r.take("i")):
            p_error, index, leader = r.take("h"), r.take("i"), r.take("i")
            partitions[index] = PartitionInfo(p_error, leader, r.int32s(), r.int32s())
        topics[name] = TopicInfo(error, internal, partitions)
    return NodeMetadata(brokers, cluster_id, controller, topics)


def create_topic_raw(bootstrap: str, name: str, partitions: int, replication: int,
                     timeout_ms: int) -> tuple[int, str | None]:
    """CreateTopics v2 sent to exactly the node at `bootstrap` (librdkafka would send it to the
    controller it knows); returns (error_code, error_message) of the topic."""
    body = struct.pack(">i", 1) + _kstr(name) + struct.pack(">ihii", partitions, replication, 0, 0)
    body += struct.pack(">ib", timeout_ms, 0)
    with raw_connect(bootstrap) as sock:
        # The node may hold the request up to timeout_ms before it answers.
        sock.settimeout(timeout_ms / 1000 + RAW_REQUEST_TIMEOUT_S)
        resp = _raw_call(sock, API_CREATE_TOPICS, CREATE_TOPICS_VERSION, 22, body)
    r = _Reader(resp)
    r.take("i")  # throttle_time_ms
    n = r.take("i")
    assert n == 1, f"CreateTopics answered {n} topics"
    got_name, error, message = r.string(), r.take("h"), r.string()
    assert got_name == name, (got_name, name)
    return error, message


@dataclass
class Coordinator:
    error: int
    node_id: int
    address: str


def find_group_coordinator(bootstrap: str, group: str) -> Coordinator:
    """FindCoordinator v1 (key type group) asked of exactly the node at `bootstrap`."""
    with raw_connect(bootstrap) as sock:
        resp = _raw_call(sock, API_FIND_COORDINATOR, FIND_COORDINATOR_VERSION, 23,
                         _kstr(group) + struct.pack(">b", 0))
    r = _Reader(resp)
    r.take("i")  # throttle_time_ms
    error = r.take("h")
    r.string()  # error_message
    node_id, host, port = r.take("i"), r.string(), r.take("i")
    return Coordinator(error, node_id, f"{host}:{port}")


def group_partition(group: str, partitions: int) -> int:
    """Kafka's (and bramble's, group::store::partition_for) `__consumer_offsets` partition of a
    group: abs(Java String.hashCode(group)) mod the partition count."""
    h = 0
    units = group.encode("utf-16-le")
    for unit in struct.unpack(f"<{len(units) // 2}H", units):
        h = (h * 31 + unit) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    return (0 if h == -(1 << 31) else abs(h)) % max(partitions, 1)


# --- the cluster -----------------------------------------------------------------------------

def _free_ports(n: int) -> list[int]:
    """n distinct free ports (all bound at once, so none repeats)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ClusterNode(Broker):
    """One voter: a Broker whose ports are fixed by its cluster and whose command line carries
    the cluster flags of issue 10's contract (none when `cluster_flags` is off: a plain
    `bramble serve`, which must still be a cluster of one)."""

    def __init__(self, cluster: "Cluster", node_id: int, workdir: Path, rack: str | None,
                 config: dict, learner: bool = False, args: list[str] | None = None):
        # The rack goes in the TOML file (key `rack`, as old as racks in bramble); the launcher,
        # scripts/cluster.sh, passes the `--rack` flag.
        super().__init__(workdir, {**config, **({"rack": rack} if rack is not None else {})})
        self.cluster = cluster
        self.node_id = node_id
        self.rack = rack
        self.learner = learner
        self.args = list(args or [])
        self.raft_port: int | None = None
        # SIGSTOPped by the test (pause) and not continued yet.
        self.paused = False

    def _pick_port(self) -> None:
        assert self.port is not None, "the cluster picks its nodes' ports"

    @property
    def raft_address(self) -> str:
        return f"{self.host}:{self.raft_port}"

    def _command(self) -> list[str]:
        cmd = [
            *self.command_prefix, str(self.binary), "serve",
            "--node-id", str(self.node_id),
            "--data-dir", str(self.data_dir),
            "--listen", self.bootstrap,
            "--advertise", self.bootstrap,
        ]
        if self.cluster.cluster_flags and self.learner:
            # A broker-only node joins through the first voter.
            cmd += ["--raft-listen", self.raft_address, "--join", self.cluster.nodes[1].raft_address]
        elif self.cluster.cluster_flags:
            cmd += ["--raft-listen", self.raft_address, "--voters", self.cluster.voters]
        if self.config:
            config_path = self.workdir / "bramble.toml"
            config_path.write_text(
                "".join(f"{k} = {_toml_value(v)}\n" for k, v in self.config.items()))
            cmd += ["--config", str(config_path)]
        return cmd + self.args

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing (a stalled board)."""
        assert self.is_running(), "node is not running"
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after pause()."""
        if self.paused and self.is_running():
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> int:
        # A stopped process would hold SIGTERM pending until the shutdown timeout: continue it.
        self.resume()
        return super().stop()


class ClusterError(AssertionError):
    pass


class Cluster:
    """N voters on 127.0.0.1, then `learners` broker-only nodes that `--join` through node 1.
    `racks` gives node i the rack racks[i-1]; `config` is TOML shared by every node
    (CLUSTER_TIMING is added unless `cluster_flags` is off). A subclass may give its nodes
    another class (`node_class`) and other ports (`_assign_ports`)."""

    node_class = ClusterNode

    def __init__(self, workdir: Path, size: int = DEFAULT_SIZE, racks: list[str] | None = None,
                 config: dict | None = None, cluster_flags: bool = True, learners: int = 0,
                 args: list[str] | None = None):
        assert racks is None or len(racks) == size
        self.cluster_flags = cluster_flags
        shared = {**(CLUSTER_TIMING if cluster_flags else {}), **(config or {})}
        self.nodes: dict[int, ClusterNode] = {}
        for i in range(1, size + 1):
            node_dir = workdir / f"node{i}"
            node_dir.mkdir(parents=True)
            self.nodes[i] = self.node_class(self, i, node_dir, racks[i - 1] if racks else None,
                                            dict(shared), args=args)
        for i in range(size + 1, size + learners + 1):
            node_dir = workdir / f"node{i}"
            node_dir.mkdir(parents=True)
            self.nodes[i] = self.node_class(self, i, node_dir, None, dict(shared), learner=True,
                                            args=args)
        self._assign_ports()

    def _assign_ports(self) -> None:
        ports = _free_ports(2 * len(self.nodes))
        for i, node in enumerate(self.nodes.values()):
            node.port, node.raft_port = ports[2 * i], ports[2 * i + 1]

    # -- addresses --

    @property
    def voters(self) -> str:
        """`--voters`: id@raft-host:port of every node."""
        return ",".join(f"{i}@{n.raft_address}" for i, n in self.nodes.items() if not n.learner)

    @property
    def bootstrap(self) -> str:
        """Every node's Kafka address, comma-separated."""
        return ",".join(n.bootstrap for n in self.nodes.values())

    def running(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.is_running()]

    # -- processes --

    def start_all(self, wait: bool = True) -> "Cluster":
        """Starts every stopped node (each returns once its Kafka port accepts: a node binds it
        before it has a quorum); then, if `wait`, waits until the cluster agrees."""
        first = all(n.starts == 0 for n in self.nodes.values())
        for attempt in range(CLUSTER_PORT_PICK_ATTEMPTS if first else 1):
            try:
                for node in self.nodes.values():
                    if not node.is_running():
                        node.start()
                break
            except BrokerError as e:
                in_use = any("in use" in n.log_tail(20).lower() for n in self.nodes.values())
                if not (first and in_use) or attempt + 1 == CLUSTER_PORT_PICK_ATTEMPTS:
                    first_line = str(e).splitlines()[0]
                    raise ClusterError(f"{first_line}\n{self.log_tails()}") from e
                for node in self.nodes.values():
                    if node.is_running():
                        node.kill()
                self._assign_ports()
        if wait:
            self.wait_formed()
        return self

    def stop_all(self) -> None:
        """SIGTERM every running node; each must exit 0."""
        for i in self.running():
            self.stop(i)

    def start(self, node_id: int) -> ClusterNode:
        return self.nodes[node_id].start()

    def stop(self, node_id: int) -> None:
        node = self.nodes[node_id]
        code = node.stop()
        if code != 0:
            raise ClusterError(f"node {node_id} exited {code} on SIGTERM\n{self.log_tails()}")

    def kill(self, node_id: int) -> None:
        self.nodes[node_id].kill()

    def pause(self, node_id: int) -> None:
        self.nodes[node_id].pause()

    def resume(self, node_id: int) -> None:
        self.nodes[node_id].resume()

    def restart(self, node_id: int) -> ClusterNode:
        self.stop(node_id)
        return self.start(node_id)

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(f"----- node {i} log tail ({n.log_path}) -----\n{n.log_tail(lines)}"
                         for i, n in self.nodes.items())

    # -- what the nodes say --

    def metadata(self, node_id: int) -> NodeMetadata:
        return metadata(self.nodes[node_id].bootstrap)

    def wait_until(self, ids: list[int], done, timeout_s: float, what: str):
        """Polls Metadata of `ids` until done({id: NodeMetadata}) is truthy; returns its value."""
        deadline = time.monotonic() + timeout_s
        last: dict[int, object] = {}
        while True:
            for i in ids:
                try:
                    last[i] = self.metadata(i)
                except (OSError, AssertionError, struct.error) as e:
                    last[i] = e
            if all(isinstance(m, NodeMetadata) for m in last.values()):
                result = done(last)
                if result:
                    return result
            if time.monotonic() > deadline:
                said = "\n".join(
                    f"node {i}: {m.summary() if isinstance(m, NodeMetadata) else repr(m)}"
                    for i, m in last.items())
                raise ClusterError(
                    f"{what} not reached within {timeout_s}s; each node last said:\n{said}\n"
                    f"{self.log_tails()}")
            time.sleep(POLL_INTERVAL_S)

    def wait_formed(self, ids: list[int] | None = None, timeout_s: float = FORM_TIMEOUT_S) -> int:
        """Waits until each node of `ids` (default: the running ones) lists exactly those
        brokers at their own addresses and names one and the same controller among them;
        returns the controller id."""
        ids = ids or self.running()
        want = {i: self.nodes[i].bootstrap for i in ids}

        def agreed(mds):
            controllers = {m.controller for m in mds.values()}
            if len(controllers) != 1 or next(iter(controllers)) not in ids:
                return None
            if any({b: addr for b, (addr, _) in m.brokers.items()} != want for m in mds.values()):
                return None
            return next(iter(controllers))

        return self.wait_until(ids, agreed, timeout_s,
                               f"nodes {ids} agreeing on brokers and controller")

    def controller(self) -> int:
        """The controller every running node agrees on."""
        return self.wait_formed()

    def wait_new_controller(self, survivors: list[int], old: int,
                            timeout_s: float = FAILOVER_TIMEOUT_S) -> int:
        """Waits until any survivor names a controller other than `old` (and among the
        survivors); returns it."""

        def elected(mds):
            new = {m.controller for m in mds.values()} & set(survivors)
            return next(iter(new)) if new else None

        return self.wait_until(survivors, elected, timeout_s, f"a controller other than {old}")

    def wait_topic(self, name: str, partitions: int, ids: list[int] | None = None,
                   timeout_s: float = PROPAGATION_TIMEOUT_S) -> dict[int, NodeMetadata]:
        """Waits until each node of `ids` (default: running) shows `name` with all its partitions
        led; returns their Metadata."""
        ids = ids or self.running()

        def visible(mds):
            for m in mds.values():
                t = m.topics.get(name)
                if t is None or t.error != 0 or sorted(t.partitions) != list(range(partitions)):
                    return None
                if any(p.leader < 0 for p in t.partitions.values()):
                    return None
            return mds

        return self.wait_until(ids, visible, timeout_s, f"topic {name} on nodes {ids}")

    def wait_partitions(self, topics: dict[str, int], check, what: str,
                        ids: list[int] | None = None,
                        timeout_s: float = PROPAGATION_TIMEOUT_S) -> dict[int, NodeMetadata]:
        """Waits until each node of `ids` (default: running) shows every topic of `topics`
        (name -> partition count) with all its partitions, and check(topic, index, PartitionInfo)
        holds for each of them; returns their Metadata. A failure names the partitions that did
        not pass on each node."""
        ids = ids or self.running()
        failing: dict[int, list] = {}

        def passed(mds):
            failing.clear()
            for i, m in mds.items():
                for name, count in topics.items():
                    t = m.topics.get(name)
                    if t is None or t.error != 0 or sorted(t.partitions) != list(range(count)):
                        failing.setdefault(i, []).append((name, "missing"))
                        continue
                    failing.setdefault(i, []).extend(
                        (name, p, info) for p, info in sorted(t.partitions.items())
                        if not check(name, p, info))
            return mds if not any(failing.values()) else None

        try:
            return self.wait_until(ids, passed, timeout_s, what)
        except ClusterError as e:
            shown = {i: f[:12] for i, f in failing.items()}
            raise ClusterError(f"{what}: partitions failing on each node: {shown}\n{e}") from None

    def leader(self, topic: str, partition: int, ids: list[int] | None = None) -> int:
        """The leader of one partition as the nodes of `ids` (default: running) agree on it."""
        def agreed(mds):
            leaders = {m.topics[topic].partitions[partition].leader
                       for m in mds.values() if topic in m.topics}
            return leaders.pop() if len(leaders) == 1 and min(leaders) >= 0 else None

        return self.wait_until(ids or self.running(), agreed, PROPAGATION_TIMEOUT_S,
                               f"one leader of {topic}-{partition}")


class ClusterFactory:
    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.clusters: list[Cluster] = []

    def __call__(self, size: int = DEFAULT_SIZE, racks: list[str] | None = None,
                 config: dict | None = None, cluster_flags: bool = True,
                 start: bool = True, learners: int = 0, args: list[str] | None = None) -> Cluster:
        workdir = self.tmp_path / f"cluster{len(self.clusters)}"
        cluster = Cluster(workdir, size, racks, config, cluster_flags, learners, args)
        self.clusters.append(cluster)
        return cluster.start_all() if start else cluster
