#!/usr/bin/env bash
# The long run of the nemesis fault trials (issue 12, acceptance 2): a three-node cluster in
# network namespaces (tests/compat/netns.py), one seeded fault per trial (kill9, pause, partition,
# partition-clients, one-way, power-cut; round-robin), idempotent acks=all producers and a
# consumer group on a fresh RF=3 topic per trial, and the checker after each heal
# (tests/compat/trials.py). Prints one line per trial, a full report for each failure (seed,
# trial, schedule, violations, node logs), per-kind counts, and a SUMMARY line at the end;
# exits 1 if any trial failed. Needs root (ip netns, nft) and scripts/setup.sh's venv.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/trials.sh [--trials N] [--seed S] [--only-trial K] [--kinds k1,k2] [--binary PATH]
                         [--workdir DIR]

  --trials N       trials to run (default 30)
  --seed S         the seed (default: random, printed); replays a run with the same kinds
  --only-trial K   run trial K of the seed alone (a failure report prints this line)
  --kinds LIST     fault kinds, round-robin (default: all six)
  --binary PATH    the bramble binary (default: $BRAMBLE_BIN, else target/debug/bramble);
                   e.g. target/release/bramble for the long run
  --workdir DIR    nodes' data and logs (default: a new directory under /tmp)
USAGE
}

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
  esac
done

if [ ! -x .venv/bin/python ]; then
  echo "trials: no .venv: run scripts/setup.sh first" >&2
  exit 2
fi
export PYTHONDONTWRITEBYTECODE=1
exec .venv/bin/python tests/compat/trials.py "$@"
