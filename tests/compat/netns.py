"""A cluster whose nodes each run in their own network namespace, so a test can cut the network
between them (issue 12): the nemesis's partitions are nftables rules inside a node's namespace.

Layout: a bridge `bramblebr0` (BRIDGE_ADDRESS, 10.77.0.254/24) in the root namespace, where the
clients and the harness run; node i in namespace `bramble-n<i>` with one end of a veth pair
(`eth0` inside, `bramblev<i>` on the bridge) at 10.77.0.<i>. Every node listens on the same Kafka
and Raft ports (NODE_KAFKA_PORT, NODE_RAFT_PORT) at its own address and advertises it. A node
runs as `ip netns exec bramble-n<i> bramble serve ...`: ip execs the binary, so the process the
test holds is the broker itself and signals reach it directly.

Faults (class `Firewall`): one nftables table (NFT_TABLE) per namespace, with an input and an
output chain; `drop_from` and `drop_to` add rules that drop packets silently (a peer sees
timeouts, never a refusal), `heal` deletes the table. Nothing is added to the root namespace's
firewall.

Only one namespace cluster can exist on a machine at a time: `NetnsCluster.setup()` takes an
exclusive lock (LOCK_PATH) for its lifetime, then removes what a previous run left (its
namespaces, whose leftover processes it kills by pid, the bridge), then builds the network;
`teardown()` stops the nodes and removes it all. `netns_unavailable()` says why namespaces
cannot be made here (not root, no `ip` or `nft`), for a test to skip with.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from cluster import Cluster, ClusterError, ClusterNode

BRIDGE = "bramblebr0"
SUBNET_PREFIX = "10.77.0"
BRIDGE_ADDRESS = f"{SUBNET_PREFIX}.254"
PREFIX_LEN = 24
NAMESPACE_PREFIX = "bramble-n"
HOST_VETH_PREFIX = "bramblev"
NODE_IFACE = "eth0"
NODE_KAFKA_PORT = 9092
NODE_RAFT_PORT = 9192
NFT_TABLE = "bramble_nemesis"
LOCK_PATH = Path("/run/lock/bramble-netns.lock")
# Bound on waiting for another run's namespace cluster to go away (it holds the lock).
LOCK_TIMEOUT_S = 600.0
LOCK_POLL_S = 0.5
# Bound on one `ip` or `nft` command.
COMMAND_TIMEOUT_S = 10.0
# Bound on a leftover process dying after SIGKILL.
LEFTOVER_KILL_TIMEOUT_S = 5.0


class NetnsError(ClusterError):
    pass


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs one command, raising NetnsError with its output if it fails and `check`."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if check and proc.returncode != 0:
        raise NetnsError(f"`{' '.join(cmd)}` failed ({proc.returncode}): "
                         f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def netns_unavailable() -> str | None:
    """Why a namespace cluster cannot be built here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns, veth, nft); run as root"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (Debian {package}; scripts/setup.sh installs it)"
    return None


def namespace(node_id: int) -> str:
    return f"{NAMESPACE_PREFIX}{node_id}"


def node_address(node_id: int) -> str:
    return f"{SUBNET_PREFIX}.{node_id}"


class Firewall:
    """nftables rules in one node's namespace: silent drops, removed all at once by heal()."""

    def __init__(self, node_id: int):
        self.ns = namespace(node_id)
        self.rules: list[str] = []

    def _nft(self, *args: str) -> None:
        run("ip", "netns", "exec", self.ns, "nft", *args)

    def _ensure_table(self) -> None:
        if self.rules:
            return
        self._nft("add", "table", "inet", NFT_TABLE)
        for chain, hook in (("in", "input"), ("out", "output")):
            self._nft("add", "chain", "inet", NFT_TABLE, chain,
                      f"{{ type filter hook {hook} priority 0; policy accept; }}")

    def _add(self, chain: str, rule: str) -> None:
        self._ensure_table()
        self._nft("add", "rule", "inet", NFT_TABLE, chain, *rule.split())
        self.rules.append(f"{chain}: {rule}")

    def drop_from(self, address: str) -> None:
        """Packets arriving from `address` are dropped."""
        self._add("in", f"ip saddr {address} drop")

    def drop_to(self, address: str) -> None:
        """Packets this node sends to `address` are dropped."""
        self._add("out", f"ip daddr {address} drop")

    def heal(self) -> None:
        """Removes every rule (the whole table). A delete that fails raises (the rules are
        then kept, and the next trial must not run on a network believed healed)."""
        if self.rules:
            self._nft("delete", "table", "inet", NFT_TABLE)
        self.rules = []


class NetnsNode(ClusterNode):
    """A cluster node in namespace bramble-n<id>, at 10.77.0.<id>."""

    def __init__(self, cluster, node_id, workdir, rack, config, learner=False, args=None):
        super().__init__(cluster, node_id, workdir, rack, config, learner, args)
        self.host = node_address(node_id)
        self.command_prefix = ["ip", "netns", "exec", namespace(node_id)]
        self.firewall = Firewall(node_id)


class NetnsCluster(Cluster):
    """A Cluster (tests/compat/cluster.py) of NetnsNodes; setup() before the first start,
    teardown() at the end (also after a failure)."""

    node_class = NetnsNode

    def __init__(self, workdir: Path, size: int = 3, config: dict | None = None,
                 env: dict[str, str] | None = None):
        super().__init__(workdir, size, config=config)
        for node in self.nodes.values():
            node.env.update(env or {})
        self._lock_file = None

    def _assign_ports(self) -> None:
        for node in self.nodes.values():
            node.port, node.raft_port = NODE_KAFKA_PORT, NODE_RAFT_PORT

    # -- the network --

    def setup(self) -> "NetnsCluster":
        """Takes the machine's namespace-cluster lock, removes leftovers, builds the bridge and
        one namespace per node."""
        self._lock()
        cleanup_leftovers()
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{BRIDGE_ADDRESS}/{PREFIX_LEN}", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        for i in self.nodes:
            ns, veth = namespace(i), f"{HOST_VETH_PREFIX}{i}"
            run("ip", "netns", "add", ns)
            run("ip", "link", "add", veth, "type", "veth", "peer", "name", NODE_IFACE,
                "netns", ns)
            run("ip", "link", "set", veth, "master", BRIDGE, "up")
            run("ip", "-n", ns, "addr", "add", f"{node_address(i)}/{PREFIX_LEN}", "dev", NODE_IFACE)
            run("ip", "-n", ns, "link", "set", NODE_IFACE, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
        return self

    def _lock(self) -> None:
        """Takes the lock (waiting up to LOCK_TIMEOUT_S); `_lock_file` is set only once it is
        held, so a run that never got it tears nothing down (the namespaces are another run's)."""
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        lock_file = open(LOCK_PATH, "w")
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock_file = lock_file
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    lock_file.close()
                    raise NetnsError(f"another namespace cluster held {LOCK_PATH} for "
                                     f"{LOCK_TIMEOUT_S}s") from None
                time.sleep(LOCK_POLL_S)
            except BaseException:
                # Interrupted (a test timeout, Ctrl-C) while waiting: not ours to tear down.
                lock_file.close()
                raise

    def teardown(self) -> list[str]:
        """Heals every firewall, stops the nodes (SIGTERM; a paused one is continued first),
        removes the namespaces and the bridge, releases the lock. Returns what went wrong
        stopping the nodes (an exit code other than 0). Without the lock (setup never got it)
        there is nothing of this run's to remove, and the namespaces are another run's."""
        if self._lock_file is None:
            return []
        problems = []
        for i, node in self.nodes.items():
            try:
                node.firewall.heal()
            except Exception as e:  # noqa: BLE001 - a teardown reports and goes on
                problems.append(f"node {i}: healing its firewall: {e}".splitlines()[0])
        for i, node in self.nodes.items():
            if node.is_running():
                try:
                    code = node.stop()
                    if code != 0:
                        problems.append(f"node {i} exited {code} on SIGTERM")
                except Exception as e:  # noqa: BLE001 - a teardown reports and goes on
                    problems.append(f"node {i}: {e}".splitlines()[0])
                    if node.is_running():
                        node.kill()
        cleanup_leftovers()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        return problems

    # -- faults --

    def isolate(self, node_id: int) -> None:
        """Cuts `node_id` off from every other node, both directions (clients still reach it)."""
        fw = self.nodes[node_id].firewall
        for j in self.nodes:
            if j != node_id:
                fw.drop_from(node_address(j))
                fw.drop_to(node_address(j))

    def isolate_from_clients(self, node_id: int) -> None:
        """Cuts `node_id` off from the clients' address (the bridge), both directions; it still
        talks to its peers."""
        fw = self.nodes[node_id].firewall
        fw.drop_from(BRIDGE_ADDRESS)
        fw.drop_to(BRIDGE_ADDRESS)

    def drop_one_way(self, src: int, dst: int) -> None:
        """Packets from `src` to `dst` are dropped (on arrival at dst); dst to src still flow."""
        self.nodes[dst].firewall.drop_from(node_address(src))

    def heal_network(self) -> None:
        for node in self.nodes.values():
            node.firewall.heal()


def cleanup_leftovers() -> None:
    """Removes what a previous run left: processes in our namespaces (SIGKILL by pid), the
    namespaces, host-side veths and the bridge. Called with the lock held."""
    listed = run("ip", "netns", "list", check=False).stdout
    for ns in re.findall(rf"^({re.escape(NAMESPACE_PREFIX)}\d+)\b", listed, re.M):
        pids = run("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        deadline = time.monotonic() + LEFTOVER_KILL_TIMEOUT_S
        while run("ip", "netns", "pids", ns, check=False).stdout.split() and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        run("ip", "netns", "del", ns, check=False)
    links = run("ip", "-o", "link", "show", check=False).stdout
    for veth in re.findall(rf"^\d+: ({re.escape(HOST_VETH_PREFIX)}\d+)[@:]", links, re.M):
        run("ip", "link", "del", veth, check=False)
    if re.search(rf"^\d+: {re.escape(BRIDGE)}[@:]", links, re.M):
        run("ip", "link", "del", BRIDGE, check=False)

