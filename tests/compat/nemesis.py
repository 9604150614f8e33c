"""The nemesis of the fault trials (issue 12): one fault per trial, planned from the seed, injected
into a namespace cluster (tests/compat/netns.py) at its moment and then healed.

Kinds (KINDS):
- `kill9`: SIGKILL of a node, restarted after `duration_s`;
- `pause`: SIGSTOP of a node for `duration_s` (1-6 s: sometimes past the broker session timeout,
  so the node is fenced while it sleeps), then SIGCONT;
- `partition`: a node cut off from its peers, both directions (clients still reach it);
- `partition-clients`: a node cut off from the clients' address, still talking to its peers;
- `one-way`: packets from node A to node B dropped, B to A delivered;
- `power-cut`: SIGUSR2 to every node (all started with BRAMBLE_TEST_POWER_CUT=1), back to back:
  each cuts its files back to what it had synced and exits with POWER_CUT_EXIT_CODE; all are
  restarted after `duration_s`.

`plan(seed, trial, kinds, partitions)` draws everything random about a trial's fault from
random.Random(f"{seed}:{trial}") (so one trial replays alone with the same seed): its kind is
kinds[trial % len(kinds)] (round-robin), then its moment, its duration, and the role of its
target: the controller, the coordinator of the trial's group, the leader of one partition, or
any node. The role is resolved to a node id when the fault is injected (what the cluster looks
like then is not up to the seed); both are in the schedule a failure prints.
"""

from __future__ import annotations

import random
import re
import signal
import threading
import time
from dataclasses import dataclass, field

from cluster import find_group_coordinator
from conftest import POWER_CUT_ENV, POWER_CUT_EXIT_CODE
from netns import NetnsCluster

KINDS = ("kill9", "pause", "partition", "partition-clients", "one-way", "power-cut")
ROLES = ("controller", "coordinator", "leader", "any")
# A fault starts this long into the trial's load (seconds, uniform).
FAULT_AT_S = (0.5, 2.5)
# How long each kind lasts until it is healed (seconds, uniform): the restart delay of kill9 and
# power-cut, the pause, the partition.
DURATION_S = {
    "kill9": (0.5, 4.0),
    "pause": (1.0, 6.0),
    "partition": (1.0, 6.0),
    "partition-clients": (1.0, 6.0),
    "one-way": (1.0, 6.0),
    "power-cut": (0.2, 2.0),
}
# Bound on a signalled node exiting.
EXIT_TIMEOUT_S = 10.0
# Log lines searched for a cut node's "power cut: ..." line (what it cut, for the schedule).
POWER_CUT_LOG_LINES = 20


@dataclass
class Fault:
    kind: str
    role: str
    partition: int  # the partition whose leader is the target when role is "leader"
    any_node: int  # the target when role is "any"
    other_pick: int  # one-way: which of the two other nodes is B (0 or 1)
    at_s: float
    duration_s: float
    # Filled in when it runs: the nodes, and times from the trial's start.
    target: int | None = None
    other: int | None = None
    injected_s: float | None = None
    healed_s: float | None = None
    healed_at: float | None = None  # monotonic
    notes: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    error: str | None = None

    def describe(self) -> str:
        role = self.role + (f" of partition {self.partition}" if self.role == "leader" else "")
        where = f"node {self.target}" + (f" -> node {self.other}" if self.other else "")
        if self.kind == "power-cut":
            where, role = "every node", "all at once"
        when = (f"injected at +{self.injected_s:.2f}s, healed at +{self.healed_s:.2f}s"
                if self.injected_s is not None and self.healed_s is not None
                else f"planned at +{self.at_s:.2f}s for {self.duration_s:.2f}s")
        extra = f"; {'; '.join(self.notes)}" if self.notes else ""
        err = f"; NEMESIS ERROR {self.error}" if self.error else ""
        return f"{self.kind} of {where} ({role}): {when}{extra}{err}"


def plan(seed: int, trial: int, kinds: tuple[str, ...], partitions: int, size: int = 3) -> Fault:
    rng = random.Random(f"{seed}:{trial}")
    kind = kinds[trial % len(kinds)]
    return Fault(kind=kind, role=rng.choice(ROLES), partition=rng.randrange(partitions),
                 any_node=rng.randint(1, size), other_pick=rng.randrange(2),
                 at_s=rng.uniform(*FAULT_AT_S), duration_s=rng.uniform(*DURATION_S[kind]))


class Nemesis:
    """Runs one Fault against `cluster` in a thread: waits for its moment (from t0), injects,
    waits its duration, heals. Anything unexpected lands in fault.error (a harness failure),
    anything the broker did wrong (a power-cut exit code) in fault.violations."""

    def __init__(self, cluster: NetnsCluster, fault: Fault, topic: str, group: str, t0: float):
        self.cluster, self.fault, self.topic, self.group, self.t0 = \
            cluster, fault, topic, group, t0
        self._thread = threading.Thread(target=self._run, daemon=True, name="nemesis")

    def start(self) -> "Nemesis":
        self._thread.start()
        return self

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self.fault.error = self.fault.error or f"the nemesis did not finish in {timeout_s}s"

    def _now(self) -> float:
        return time.monotonic() - self.t0

    def _run(self) -> None:
        f = self.fault
        try:
            time.sleep(max(self.t0 + f.at_s - time.monotonic(), 0))
            self._resolve()
            f.injected_s = self._now()
            heal = self._inject()
            time.sleep(max(self.t0 + f.injected_s + f.duration_s - time.monotonic(), 0))
            heal()
        except Exception as e:  # noqa: BLE001 - reported with the trial
            f.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            self._heal_everything()
        f.healed_s = self._now()
        f.healed_at = time.monotonic()

    # -- targets --

    def _resolve(self) -> None:
        f = self.fault
        ids = sorted(self.cluster.nodes)
        target = None
        try:
            if f.role == "controller":
                target = self._ask(lambda md: md.controller)
            elif f.role == "coordinator":
                target = self._ask_coordinator()
            elif f.role == "leader":
                target = self._ask(lambda md: md.topics[self.topic].partitions[f.partition].leader)
        except (KeyError, OSError, AssertionError) as e:
            f.notes.append(f"could not resolve the {f.role} ({e!r}): took node {f.any_node}")
        if target not in ids:
            target = f.any_node
        f.target = target
        if f.kind == "one-way":
            f.other = [i for i in ids if i != target][f.other_pick]

    def _ask(self, pick) -> int:
        last: Exception | None = None
        for i in self.cluster.running():
            try:
                return pick(self.cluster.metadata(i))
            except (OSError, KeyError, AssertionError) as e:
                last = e
        raise AssertionError(f"no node answered Metadata: {last!r}")

    def _ask_coordinator(self) -> int:
        for i in self.cluster.running():
            try:
                c = find_group_coordinator(self.cluster.nodes[i].bootstrap, self.group)
            except (OSError, AssertionError):
                continue
            if c.error == 0:
                return c.node_id
        raise AssertionError("no node named the group's coordinator")

    # -- faults --

    def _inject(self):
        f, c = self.fault, self.cluster
        if f.kind == "kill9":
            c.kill(f.target)
            return lambda: c.start(f.target)
        if f.kind == "pause":
            c.pause(f.target)
            return lambda: c.resume(f.target)
        if f.kind == "partition":
            c.isolate(f.target)
            return c.heal_network
        if f.kind == "partition-clients":
            c.isolate_from_clients(f.target)
            return c.heal_network
        if f.kind == "one-way":
            c.drop_one_way(f.target, f.other)
            return c.heal_network
        if f.kind == "power-cut":
            self._power_cut()
            return lambda: c.start_all(wait=False)
        raise ValueError(f"unknown fault kind {f.kind}")

    def _power_cut(self) -> None:
        nodes = [n for n in self.cluster.nodes.values() if n.is_running()]
        missing = [n.node_id for n in nodes if n.env.get(POWER_CUT_ENV) != "1"]
        if missing:
            raise AssertionError(f"nodes {missing} were not started in power-cut mode")
        for n in nodes:  # back to back: the same instant, as near as signals get
            n.proc.send_signal(signal.SIGUSR2)
        for n in nodes:
            try:
                code = n.proc.wait(EXIT_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: reported below
                n.kill()
                code = None
            n.paused = False
            cut = [line for line in n.log_tail(POWER_CUT_LOG_LINES).splitlines()
                   if "power cut:" in line]
            m = re.search(r"(\d+) files cut.*?(\d+) unsynced bytes dropped", cut[-1]) \
                if cut else None
            if m:
                self.fault.notes.append(f"node {n.node_id} cut {m[1]} files, {m[2]} B")
            if code != POWER_CUT_EXIT_CODE:
                self.fault.violations.append(
                    f"POWER CUT: node {n.node_id} exited with {code} on SIGUSR2, not "
                    f"{POWER_CUT_EXIT_CODE}")

    def _heal_everything(self) -> None:
        """After a nemesis error: no rules, nobody paused, every node running."""
        c = self.cluster
        try:
            c.heal_network()
            for i, n in c.nodes.items():
                if n.paused:
                    c.resume(i)
            c.start_all(wait=False)
        except Exception as e:  # noqa: BLE001
            self.fault.notes.append(f"healing after the error failed: {e!r}")
