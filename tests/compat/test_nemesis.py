"""Randomized fault trials in CI (issue 12, acceptance 1): NEMESIS_TRIALS trials on one
three-node cluster in network namespaces, round-robin over the fault kinds (kill9, pause,
partition, partition-clients, one-way, power-cut), each fault's moment, duration and target
drawn from the seed (tests/compat/trials.py, nemesis.py). Each trial is one test: real clients
(idempotent acks=all confluent-kafka producers, a consumer group committing offsets) run through
the fault, and it fails if any acknowledged record is lost, moved or duplicated, any value is
twice in the log, a producer's records are out of order, a record a consumer read later
vanished, a committed offset moved backwards, or the cluster did not heal (one controller, full
ISRs) within HEAL_BOUND_S. A failure prints the seed, the trial, the schedule, the violations and
the nodes' logs, and the line that replays it (scripts/trials.sh --seed S --only-trial K).

The seed is BRAMBLE_NEMESIS_SEED, or random and printed; BRAMBLE_NEMESIS_TRIALS sets the number
of trials, BRAMBLE_NEMESIS_KINDS (comma-separated) the kinds. The first tests prove the checker
itself on made-up histories: each check fails on the violation it exists for.

Needs root (ip netns, veth, nft): without it the trials skip with the reason.
"""

from __future__ import annotations

import os
import random

import pytest

from checker import check_acked, check_offsets, check_reads
from conftest import BRAMBLE_BIN
from nemesis import KINDS, plan
from netns import netns_unavailable
from trials import (SEED_ENV, TOPIC_PARTITIONS, TrialHarness, TrialResult, binary_has_power_cut,
                    summarize)
from workload import NO_OFFSET, Delivery, FinalLog, OffsetSeen, ProducerRun, Read

# Six per kind by default: 36 trials of about 10 s each on a debug build.
NEMESIS_TRIALS = int(os.environ.get("BRAMBLE_NEMESIS_TRIALS", str(6 * len(KINDS))))
NEMESIS_KINDS = tuple(os.environ.get("BRAMBLE_NEMESIS_KINDS", ",".join(KINDS)).split(","))
SEED = int(os.environ.get(SEED_ENV) or random.randrange(1 << 31))

RESULTS: list[TrialResult] = []


def say(capsys, line: str) -> None:
    with capsys.disabled():
        print(f"\n[nemesis] {line}")


# --- the checker on made-up histories --------------------------------------------------------

def _producer(trial: int, index: int, sent: int, acked: dict[int, tuple[int, int | None]],
              failed: tuple[int, ...] = ()) -> ProducerRun:
    """A ProducerRun that never ran: `sent` values, delivery reports seq -> (partition,
    offset) for the acked ones and errors for `failed`."""
    prod = ProducerRun("unused:0", "t", 3, trial, index, 1.0)
    prod.sent = [prod.value(s) for s in range(sent)]
    for seq, (p, offset) in acked.items():
        prod.deliveries[seq] = Delivery(index, seq, p, offset, None)
    for seq in failed:
        prod.deliveries[seq] = Delivery(index, seq, 0, None, "Local: Message timed out")
    return prod


def test_checker_accepts_a_clean_history():
    """Every acked record once at its offset, one failed record absent, one acked without an
    offset present once in its partition: no violation."""
    prod = _producer(1, 0, 4, {0: (0, 0), 1: (1, 0), 3: (0, 1)}, failed=(2,))
    prod.deliveries[3] = Delivery(0, 3, 0, None, None)
    log = FinalLog({0: 2, 1: 1}, {0: {0: prod.value(0), 1: prod.value(3)}, 1: {0: prod.value(1)}})
    assert check_acked([prod], log, 1) == []
    assert check_reads([Read(0, 0, 1, prod.value(3))], log) == []


def test_checker_finds_lost_duplicated_moved_and_reordered_records():
    prod = _producer(1, 0, 4, {0: (0, 0), 1: (0, 1), 2: (0, 2), 3: (1, 0)})
    log = FinalLog({0: 3, 1: 2}, {
        0: {0: prod.value(1), 1: prod.value(0), 2: prod.value(1)},  # 1 twice, 0 and 1 swapped
        1: {0: "t9-p0-000000", 1: prod.value(0)},  # a stranger; 0 again; 2 and 3 lost
    })
    found = "\n".join(check_acked([prod], log, 1))
    for want in ("LOST: acked t1-p0-000002", "LOST: acked t1-p0-000003",
                 "MOVED: acked t1-p0-000000", "value t1-p0-000001 appears 2 times",
                 "value t1-p0-000000 appears 2 times", "'t9-p0-000000' at [(1, 0)] was never sent",
                 "ORDER: t1-p0-000001"):
        assert want in found, f"{want!r} not in:\n{found}"


def test_checker_finds_a_read_that_vanished():
    log = FinalLog({0: 1}, {0: {0: "t1-p0-000000"}})
    found = check_reads([Read(1, 0, 0, "t1-p0-000000"), Read(1, 0, 1, "t1-p0-000001")], log)
    assert len(found) == 1 and "READ VANISHED" in found[0] and "0@1" in found[0], found


def test_checker_finds_committed_offsets_moving_backwards():
    ok = [OffsetSeen("commit", "m0", 0, 10, 1.0, 2.0), OffsetSeen("fetch", "w", 0, 5, 1.5, 2.5),
          OffsetSeen("fetch", "w", 0, 10, 3.0, 3.1), OffsetSeen("commit", "m1", 0, 12, 4.0, 4.2)]
    assert check_offsets(ok, 0.0) == [], "overlapping calls may see either value"
    back = ok + [OffsetSeen("fetch", "w", 0, 11, 5.0, 5.1)]
    found = check_offsets(back, 0.0)
    assert len(found) == 1 and "showed 12" in found[0] and "showed 11" in found[0], found
    gone = ok + [OffsetSeen("fetch", "w", 0, NO_OFFSET, 6.0, 6.1)]
    assert len(check_offsets(gone, 0.0)) == 1


# --- the trials ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    h = TrialHarness(tmp_path_factory.mktemp("nemesis"), BRAMBLE_BIN,
                     power_cut=binary_has_power_cut(BRAMBLE_BIN))
    try:
        h.start()
        yield h
    finally:
        problems = h.close()
    assert not problems, f"stopping the namespace cluster: {problems}"


@pytest.mark.parametrize("trial", range(NEMESIS_TRIALS))
def test_trial(harness, trial, capsys):
    kind = NEMESIS_KINDS[trial % len(NEMESIS_KINDS)]
    if kind == "power-cut" and not binary_has_power_cut(BRAMBLE_BIN):
        pytest.fail(f"{BRAMBLE_BIN} has no power-cut mode (BRAMBLE_TEST_POWER_CUT); "
                    f"BRAMBLE_NEMESIS_KINDS leaves the kind out")
    if trial == 0:
        say(capsys, f"seed {SEED} ({SEED_ENV}), {NEMESIS_TRIALS} trials of "
                    f"{','.join(NEMESIS_KINDS)}")
    # Said before the trial runs: a trial a test timeout kills still names its fault.
    fault = plan(SEED, trial, NEMESIS_KINDS, TOPIC_PARTITIONS)
    print(f"trial {trial}: {fault.kind}; replay: scripts/trials.sh --seed {SEED} --only-trial "
          f"{trial} --kinds {','.join(NEMESIS_KINDS)}", flush=True)
    result = harness.run_trial(SEED, trial, NEMESIS_KINDS)
    RESULTS.append(result)
    say(capsys, result.line())
    if not result.ok:
        pytest.fail(harness.report(result, NEMESIS_KINDS), pytrace=False)


def test_summary(capsys):
    """Figures of the run, and over all its trials every acknowledged record was verified."""
    if not RESULTS:
        pytest.skip("no trial ran")
    for line in summarize(RESULTS, sum(r.wall_s for r in RESULTS)):
        say(capsys, line)
    acked = sum(r.counts["acked"] for r in RESULTS)
    verified = sum(r.verified for r in RESULTS)
    assert acked > 0 and verified == acked, f"{verified} of {acked} acknowledged records verified"
