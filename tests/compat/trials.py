"""Randomized fault trials against a three-node cluster in network namespaces (issue 12,
acceptance 1 and 2): `TrialHarness` runs trials one after another on one cluster, each on a
fresh RF=3 topic (TOPIC_PARTITIONS partitions, min.insync.replicas=2) and a fresh consumer
group, and `main()` is the long run behind scripts/trials.sh.

One trial: the group's members and an OffsetFetch watcher start, then PRODUCERS idempotent
acks=all producers (tests/compat/workload.py); the nemesis (tests/compat/nemesis.py) injects the
trial's fault at its moment and heals it; the load goes on for POST_FAULT_LOAD_S after the heal
(at least LOAD_S in all); the producers flush; the cluster must heal within HEAL_BOUND_S of the
heal (one controller every node names, every partition of every topic with its full ISR on every
node); the members drain what is left (at most DRAIN_S) and stop; a fresh consumer reads every
partition; the checker (tests/compat/checker.py) compares, and in every partition a record
queued after the heal must have been acknowledged (the cluster takes writes again), the final
read must have no gap below the high watermark; the topic is deleted (every trial runs on a
cluster of the same size). A failing trial's report has the
seed, the trial number, the schedule, the first MAX_VIOLATIONS_SHOWN violations, the command
that replays it, and every node's log tail.

Replay one trial: `scripts/trials.sh --seed S --only-trial K` (the same fault: kind, moment,
duration, target role; the node the role resolves to depends on the cluster at that moment).
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from checker import (check_acked, check_offsets, check_reads, delivery_counts, failed_errors)
from cluster import ClusterError, NodeMetadata
from conftest import POWER_CUT_ENV
from nemesis import KINDS, Fault, Nemesis, plan
from netns import NetnsCluster
from replication import REPLICATION_SETTINGS
from workload import (CLIENT_LOG_LEVEL, GroupMember, OffsetWatcher, ProducerRun, high_watermarks,
                      read_all)

# What every node is told: fast group joins, few offsets partitions, and every replication
# setting of tests/compat/replication.py (ISR shrink after 2 s, preferred leaders back soon).
NODE_CONFIG = {
    "group_initial_rebalance_delay_ms": 500,
    "offsets_topic_num_partitions": 3,
    **REPLICATION_SETTINGS,
}
TOPIC_PARTITIONS = 3
REPLICATION = 3
TOPIC_CONFIG = {"min.insync.replicas": "2"}
PRODUCERS = 3
MEMBERS = 2
RATE_PER_PRODUCER = 100.0  # records per second
# Load of a trial: at least LOAD_S, and POST_FAULT_LOAD_S past the heal.
LOAD_S = 5.0
POST_FAULT_LOAD_S = 1.0
# The cluster heals (one controller, full ISRs everywhere) within this after the fault's heal.
HEAL_BOUND_S = 30.0
# Before a trial: its topic is created and has its full ISR within this.
TOPIC_READY_TIMEOUT_S = 30.0
ADMIN_TIMEOUT_S = 30.0
# After the producers: the members read to the end for at most this.
DRAIN_S = 10.0
DRAIN_POLL_S = 0.1
# Bound on the nemesis thread after its planned heal (a restart can take a while).
NEMESIS_JOIN_SLACK_S = 60.0
MAX_VIOLATIONS_SHOWN = 20
LOG_TAIL_LINES = 40
SEED_ENV = "BRAMBLE_NEMESIS_SEED"


@dataclass
class TrialResult:
    seed: int
    trial: int
    fault: Fault
    counts: Counter = field(default_factory=Counter)
    verified: int = 0
    reads: int = 0
    offsets_seen: int = 0
    heal_s: float | None = None
    wall_s: float = 0.0
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations and self.fault.error is None

    def line(self) -> str:
        c = self.counts
        heal = f"{self.heal_s:.1f}s" if self.heal_s is not None else "-"
        return (f"trial {self.trial} {self.fault.kind:<17} {'ok' if self.ok else 'FAILED':<6} "
                f"acked {c['acked']} (no offset {c['acked_without_offset']}) failed "
                f"{c['failed']} verified {self.verified} reads {self.reads} offsets "
                f"{self.offsets_seen} heal {heal} wall {self.wall_s:.1f}s | "
                f"{self.fault.describe()}")


@functools.lru_cache(maxsize=4)
def binary_has_power_cut(binary: Path) -> bool:
    """Whether the binary knows BRAMBLE_TEST_POWER_CUT (the power-cut mode of issue 12); read
    once per binary (a debug build is ~200 MB)."""
    try:
        return POWER_CUT_ENV.encode() in binary.read_bytes()
    except OSError:
        return False


class TrialHarness:
    """One namespace cluster for many trials. start() before, close() after (also on failure)."""

    def __init__(self, workdir: Path, binary: Path | None = None, power_cut: bool = True):
        env = {POWER_CUT_ENV: "1"} if power_cut else {}
        self.cluster = NetnsCluster(workdir, config=NODE_CONFIG, env=env)
        if binary is not None:
            for node in self.cluster.nodes.values():
                node.binary = binary

    def start(self) -> "TrialHarness":
        self.cluster.setup()
        self.cluster.start_all()
        return self

    def close(self) -> list[str]:
        return self.cluster.teardown()

    # -- one trial --

    def run_trial(self, seed: int, trial: int, kinds: tuple[str, ...]) -> TrialResult:
        started = time.monotonic()
        fault = plan(seed, trial, kinds, TOPIC_PARTITIONS)
        result = TrialResult(seed, trial, fault)
        topic, group = f"nemesis-{seed}-{trial}", f"nemesis-{seed}-{trial}-group"
        try:
            self._trial(result, topic, group)
        except Exception as e:  # noqa: BLE001 - any failure is reported with the trial
            first = (str(e).splitlines() or [""])[0]
            result.violations.append(f"HARNESS: {type(e).__name__}: {first}")
        if fault.error:
            result.violations.append(f"NEMESIS: {fault.error}")
        result.wall_s = time.monotonic() - started
        return result

    def _trial(self, result: TrialResult, topic: str, group: str) -> None:
        self._create_topic(topic)
        try:
            self._load_and_check(result, topic, group)
        finally:
            self._delete_topic(result, topic)

    def _load_and_check(self, result: TrialResult, topic: str, group: str) -> None:
        fault = result.fault
        bootstrap = self.cluster.bootstrap
        members = [GroupMember(bootstrap, topic, group, i).start() for i in range(MEMBERS)]
        watcher = OffsetWatcher(bootstrap, topic, group, TOPIC_PARTITIONS,
                                {i: n.bootstrap for i, n in self.cluster.nodes.items()}).start()
        try:
            t0 = time.monotonic()
            producers = [ProducerRun(bootstrap, topic, TOPIC_PARTITIONS, result.trial, i,
                                     RATE_PER_PRODUCER).start() for i in range(PRODUCERS)]
            nemesis = Nemesis(self.cluster, fault, topic, group, t0).start()
            try:
                load_end = t0 + max(LOAD_S, fault.at_s + fault.duration_s + POST_FAULT_LOAD_S)
                time.sleep(max(load_end - time.monotonic(), 0))
                nemesis.join(max(t0 + fault.at_s + fault.duration_s - time.monotonic(), 0)
                             + NEMESIS_JOIN_SLACK_S)
                # A heal that took longer than planned (a restart): still POST_FAULT_LOAD_S of
                # load after it, which the liveness check needs.
                if fault.healed_at is not None:
                    time.sleep(max(fault.healed_at + POST_FAULT_LOAD_S - time.monotonic(), 0))
            finally:
                # The heal as the producers saw it (a nemesis that outlived its join may set
                # it later, after the load).
                healed_at = fault.healed_at
                for p in producers:
                    p.request_stop()
            try:
                # While the producers flush: the heal is timed from the fault's heal.
                result.violations += fault.violations
                result.heal_s = self._wait_healed(result, healed_at or time.monotonic())
            finally:
                for p in producers:
                    p.join()
            self._drain(members, topic)
        finally:
            for m in members:
                m.stop()
            watcher.stop()
        log = read_all(self.cluster.bootstrap, topic, TOPIC_PARTITIONS)
        self._check(result, producers, members, watcher, log, t0)
        self._check_liveness(result, producers, members, healed_at)

    def _create_topic(self, topic: str) -> None:
        client = AdminClient({"bootstrap.servers": self.cluster.bootstrap,
                              "log_level": CLIENT_LOG_LEVEL})
        futures = client.create_topics(
            [NewTopic(topic, num_partitions=TOPIC_PARTITIONS, replication_factor=REPLICATION,
                      config=TOPIC_CONFIG)],
            operation_timeout=ADMIN_TIMEOUT_S, request_timeout=ADMIN_TIMEOUT_S)
        futures[topic].result(timeout=ADMIN_TIMEOUT_S)
        self.cluster.wait_partitions({topic: TOPIC_PARTITIONS}, _isr_full,
                                     f"full ISR of the new topic {topic}",
                                     timeout_s=TOPIC_READY_TIMEOUT_S)

    def _delete_topic(self, result: TrialResult, topic: str) -> None:
        """Deletes the checked trial's topic, so every trial runs on a cluster of the same size
        (kept, 500 trials' topics made each heal wait on the ISR changes of 1,500 partitions).
        A deletion the cluster does not finish, gone from every node's Metadata, within
        ADMIN_TIMEOUT_S is a violation."""
        client = AdminClient({"bootstrap.servers": self.cluster.bootstrap,
                              "log_level": CLIENT_LOG_LEVEL})
        ids = sorted(self.cluster.nodes)
        try:
            futures = client.delete_topics([topic], operation_timeout=ADMIN_TIMEOUT_S,
                                           request_timeout=ADMIN_TIMEOUT_S)
            futures[topic].result(timeout=ADMIN_TIMEOUT_S)
            self.cluster.wait_until(
                ids, lambda mds: all(topic not in m.topics for m in mds.values()) or None,
                ADMIN_TIMEOUT_S, f"{topic} gone from every node")
        except Exception as e:  # noqa: BLE001 - a deletion that fails is the broker's
            first = (str(e).splitlines() or [""])[0]
            result.violations.append(f"DELETE: the trial's topic {topic}: {first}")

    def _wait_healed(self, result: TrialResult, healed_at: float) -> float | None:
        """Check (a): one controller named by every node, every partition's ISR full on every
        node, within HEAL_BOUND_S of the heal. Returns the seconds from the heal."""
        ids = sorted(self.cluster.nodes)
        if self.cluster.running() != ids:
            result.violations.append(f"HEAL: nodes {set(ids) - set(self.cluster.running())} are "
                                     f"not running after the heal")
            return None
        try:
            self.cluster.wait_until(ids, _healed(ids),
                                    max(healed_at + HEAL_BOUND_S - time.monotonic(), 0.1),
                                    "one controller and every ISR full")
        except ClusterError as e:
            result.violations.append(
                f"HEAL: not healed within {HEAL_BOUND_S}s of the fault's heal: "
                f"{str(e).split(chr(10) + '-----')[0]}")
            return None
        return time.monotonic() - healed_at

    def _drain(self, members: list[GroupMember], topic: str) -> None:
        """Lets the members read up to the end of every partition (bounded by DRAIN_S)."""
        ends = _high_watermarks(self.cluster, topic)
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline:
            read: dict[int, int] = {}
            for m in members:
                for p, pos in m.positions_read().items():
                    read[p] = max(read.get(p, 0), pos)
            if all(read.get(p, 0) >= end for p, end in ends.items()):
                return
            time.sleep(DRAIN_POLL_S)

    def _check_liveness(self, result: TrialResult, producers: list[ProducerRun],
                        members: list[GroupMember], healed_at: float | None) -> None:
        """The cluster takes writes again after the heal: in every partition, a record queued
        after the fault's heal was acknowledged (the load runs on for POST_FAULT_LOAD_S after
        it). And the group side had something to check: reads, and committed offsets seen."""
        if healed_at is None:
            return  # the fault never healed: reported by the nemesis
        acked_after = {d.partition for p in producers for d in p.deliveries.values()
                       if d.error is None and d.seq < len(p.queued_at)
                       and p.queued_at[d.seq] >= healed_at}
        missing = sorted(set(range(TOPIC_PARTITIONS)) - acked_after)
        if missing:
            result.violations.append(f"LIVENESS: no record queued after the heal was "
                                     f"acknowledged in partitions {missing}")
        commits = sum(len(m.commits) for m in members)
        if result.reads == 0 or commits == 0:
            result.violations.append(f"LIVENESS: the group read {result.reads} records and "
                                     f"committed {commits} offsets")

    def _check(self, result, producers, members, watcher, log, t0) -> None:
        result.counts = delivery_counts(producers)
        if result.counts["acked"] == 0:
            result.violations.append("LIVENESS: no record was acknowledged in the whole trial")
        for p in producers:
            if p.fatal or p.crashed or p.undelivered:
                result.violations.append(
                    f"PRODUCER: producer {p.index}: fatal {p.fatal[:3]} crashed {p.crashed} "
                    f"undelivered {p.undelivered}")
        for who in [*members, watcher]:
            if who.crashed:
                result.violations.append(f"CLIENT crashed: {who.crashed}")
        if watcher.malformed:
            result.violations.append(f"OFFSETS: malformed OffsetFetch answers: "
                                     f"{watcher.malformed[:3]}")
        for p, end in log.ends.items():
            # These topics keep every record (no retention, no compaction): from offset 0 on.
            missing = sorted(set(range(end)) - set(log.records[p]))
            if missing:
                result.violations.append(f"GAP: partition {p} read back without offsets "
                                         f"{missing[:10]} below its high watermark {end}")
        acked = check_acked(producers, log, result.trial)
        reads = [r for m in members for r in m.reads]
        seen = [s for m in members for s in m.commits] + watcher.seen
        result.violations += acked + check_reads(reads, log) + check_offsets(seen, t0)
        lost = sum(1 for v in acked if v.startswith(("LOST", "MOVED")))
        result.verified = result.counts["acked"] - lost
        result.reads, result.offsets_seen = len(reads), len(seen)
        errors = failed_errors(producers)
        if errors:
            result.notes.append(f"failed deliveries: {dict(errors)}")
        # What the clients were told along the way (retriable errors, mostly): for a report.
        for m in members:
            if m.consume_errors or m.commit_errors:
                result.notes.append(
                    f"member {m.index}: {len(m.consume_errors)} consume errors "
                    f"{Counter(m.consume_errors).most_common(3)}, {len(m.commit_errors)} commit "
                    f"errors {Counter(m.commit_errors).most_common(3)}")
        if watcher.errors:
            result.notes.append(f"offset watcher: {len(watcher.errors)} errors "
                                f"{Counter(watcher.errors).most_common(3)}")

    # -- reports --

    def report(self, result: TrialResult, kinds: tuple[str, ...]) -> str:
        """What a failure prints: replay line, schedule, violations, log tails."""
        shown = result.violations[:MAX_VIOLATIONS_SHOWN]
        more = len(result.violations) - len(shown)
        return "\n".join([
            f"TRIAL FAILED: seed {result.seed} trial {result.trial}",
            f"replay: scripts/trials.sh --seed {result.seed} --only-trial {result.trial} "
            f"--kinds {','.join(kinds)}",
            f"schedule: {result.fault.describe()}",
            f"result: {result.line()}",
            *result.notes,
            f"violations ({len(result.violations)}):",
            *[f"  {v}" for v in shown],
            *([f"  ... and {more} more"] if more > 0 else []),
            self.cluster.log_tails(LOG_TAIL_LINES),
        ])


def _isr_full(_topic: str, _p: int, info) -> bool:
    return (info.error == 0 and info.leader >= 0 and len(info.replicas) == REPLICATION
            and sorted(info.isr) == sorted(info.replicas))


def _healed(ids: list[int]):
    def done(mds: dict[int, NodeMetadata]):
        controllers = {m.controller for m in mds.values()}
        if len(controllers) != 1 or next(iter(controllers)) not in ids:
            return None
        for m in mds.values():
            if sorted(m.brokers) != ids:
                return None
            for t in m.topics.values():
                for info in t.partitions.values():
                    if info.error != 0 or info.leader < 0 or \
                            sorted(info.isr) != sorted(info.replicas):
                        return None
        return True
    return done


def _high_watermarks(cluster: NetnsCluster, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": f"{topic}-hw",
                         "log_level": CLIENT_LOG_LEVEL})
    try:
        return high_watermarks(consumer, topic, TOPIC_PARTITIONS)
    finally:
        consumer.close()


# --- the long run (scripts/trials.sh) --------------------------------------------------------

def summarize(results: list[TrialResult], wall_s: float) -> list[str]:
    per_kind: Counter = Counter(r.fault.kind for r in results)
    failed = [r for r in results if not r.ok]
    acked = sum(r.counts["acked"] for r in results)
    verified = sum(r.verified for r in results)
    classes: Counter = Counter()
    for r in results:
        classes.update({v.split(":")[0] for v in r.violations})
    lines = [f"per kind: {dict(sorted(per_kind.items()))}",
             f"failed trials per violation class: {dict(sorted(classes.items()))}"]
    lines += [f"FAILED: seed {r.seed} trial {r.trial} {r.fault.kind}: "
              f"{r.violations[0] if r.violations else ''}" for r in failed]
    lines.append(f"SUMMARY: {len(results)} trials, {len(failed)} failed, {acked} records acked, "
                 f"{verified} verified, "
                 f"{sum(r.counts['failed'] for r in results)} deliveries failed (not acked), "
                 f"{sum(r.reads for r in results)} group reads checked, wall {wall_s:.0f}s")
    return lines


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--only-trial", type=int, default=None, help="run just this trial number")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--binary", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.seed is not None:
        seed = args.seed
    elif os.environ.get(SEED_ENV):
        seed = int(os.environ[SEED_ENV])
    else:
        seed = random.randrange(1 << 31)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        print(f"unknown kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
        return 2
    binary = (args.binary or Path(os.environ.get("BRAMBLE_BIN", "target/debug/bramble"))).resolve()
    power_cut = binary_has_power_cut(binary)
    if "power-cut" in kinds and not power_cut:
        print(f"{binary} has no power-cut mode ({POWER_CUT_ENV}): leave out power-cut")
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bramble-trials-"))
    numbers = [args.only_trial] if args.only_trial is not None else list(range(args.trials))
    print(f"trials: seed {seed} ({SEED_ENV}), {len(numbers)} trials of {','.join(kinds)}, "
          f"binary {binary}, workdir {workdir}", flush=True)
    harness = TrialHarness(workdir, binary, power_cut)
    results: list[TrialResult] = []
    started = time.monotonic()
    try:
        harness.start()
        for n in numbers:
            r = harness.run_trial(seed, n, kinds)
            results.append(r)
            print(r.line(), flush=True)
            if not r.ok:
                print(harness.report(r, kinds), flush=True)
    finally:
        problems = harness.close()
        for line in problems:
            print(f"teardown: {line}")
        for line in summarize(results, time.monotonic() - started):
            print(line, flush=True)
    return 0 if all(r.ok for r in results) and not problems else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
