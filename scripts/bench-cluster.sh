#!/usr/bin/env bash
# The cluster benchmark (issue 12) in one command: starts a local three-node cluster
# (scripts/cluster.sh, in a fresh directory, on its own ports), then scripts/bench_cluster.py
# measures, in the same run: RF=1 vs RF=3 acks=all throughput and latency (`bramble bench
# produce`, at each partition's leader), the unavailability window after kill -9 of a
# partition's leader (time from the kill to the first acknowledged acks=all record sent after
# it; median and max over --trials), and controller failover (kill -9 of the controller until a
# survivor's Metadata names a new one). The killed node restarts, and the cluster heals (three
# brokers, one controller, full ISRs, every voter with the whole metadata log) before each trial. Prints a summary table; the cluster is
# stopped and its directory removed at the end (--keep keeps it, with the nodes' logs).
#
#   scripts/bench-cluster.sh [--binary PATH] [--trials 20] [--controller-trials N]
#       [--messages 3000000] [--record-size 100] [--producers 4] [--config FILE] [--keep]
#
# Without --binary it builds and uses the release binary (cargo build --release). --config gives
# every node one TOML file (e.g. shorter broker_session_timeout_ms: the leader-kill window is
# mostly the time to fence the dead broker, 9 s by default). Ports: Kafka from
# $BRAMBLE_CLUSTER_KAFKA_PORT (29092), Raft from $BRAMBLE_CLUSTER_RAFT_PORT (29192), three each.
# Needs the project's venv (.venv, confluent-kafka: scripts/setup.sh).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

# Not scripts/cluster.sh's 9092/9192: a developer's own cluster may be running there.
export BRAMBLE_CLUSTER_KAFKA_PORT=${BRAMBLE_CLUSTER_KAFKA_PORT:-29092}
export BRAMBLE_CLUSTER_RAFT_PORT=${BRAMBLE_CLUSTER_RAFT_PORT:-29192}
PYTHON=$repo_root/.venv/bin/python

die() { echo "bench-cluster.sh: $*" >&2; exit 1; }

binary=""
config=""
keep=0
py_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) [ $# -ge 2 ] || die "--binary needs a value"; binary=$2; shift 2 ;;
    --config) [ $# -ge 2 ] || die "--config needs a value"; config=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --trials | --controller-trials | --messages | --record-size | --producers)
      [ $# -ge 2 ] || die "$1 needs a value"; py_args+=("$1" "$2"); shift 2 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (--help)" ;;
  esac
done

[ -x "$PYTHON" ] || die "no $PYTHON: run scripts/setup.sh (it makes the venv with confluent-kafka)"
if [ -z "$binary" ]; then
  cargo build --release --quiet
  binary=$repo_root/target/release/bramble
fi
[ -x "$binary" ] || die "$binary is not an executable"

for offset in 0 1 2; do
  for port in $((BRAMBLE_CLUSTER_KAFKA_PORT + offset)) $((BRAMBLE_CLUSTER_RAFT_PORT + offset)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port $port is in use (set BRAMBLE_CLUSTER_KAFKA_PORT / BRAMBLE_CLUSTER_RAFT_PORT)"
    fi
  done
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/bench-cluster.XXXXXX")
cleanup() {
  scripts/cluster.sh stop --dir "$dir" >/dev/null 2>&1 || true
  if [ "$keep" = 1 ]; then
    echo "kept: $dir (node logs: $dir/node-{1,2,3}.log)"
  else
    rm -rf "$dir"
  fi
}
trap cleanup EXIT

start_args=(start --dir "$dir" --binary "$binary")
[ -z "$config" ] || start_args+=(--config "$config")
scripts/cluster.sh "${start_args[@]}" >/dev/null
echo "binary: $binary${config:+, config: $config}; cluster in $dir"
"$PYTHON" scripts/bench_cluster.py --dir "$dir" --binary "$binary" ${py_args[@]+"${py_args[@]}"}
