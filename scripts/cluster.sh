#!/usr/bin/env bash
# A local three-node bramble cluster on 127.0.0.1 in one command (issue 10): three voters on
# Kafka ports 9092-9094 and Raft ports 9192-9194, racks r1-r3, node N's data in DIR/node-N, its
# log in DIR/node-N.log and its pid in DIR/node-N.pid. The binary, config file and ports of the
# first `start` are kept in DIR/cluster.env, so later commands act on the same cluster (a later
# `start --binary/--config` replaces them).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/cluster.sh COMMAND [--dir DIR]

  start [--binary PATH] [--config FILE]
              start the three voters (those not already running), wait until each answers
              and the cluster reports its status, then print the bootstrap string
  status      which nodes run, then `bramble cluster status` from a running one
              (exit 0 when all three run, 1 otherwise)
  stop        SIGTERM every node and wait for each to exit
  kill N      SIGKILL node N (a crash: nothing flushed)
  restart N   SIGTERM node N if it runs, then start it again on the same data

options:
  --dir DIR        where data, logs, pids and the recorded settings live
                   (default: $BRAMBLE_CLUSTER_DIR or ./bramble-cluster)
  --binary PATH    the bramble binary (default: $BRAMBLE_BIN, else target/release/bramble,
                   else target/debug/bramble, else bramble on PATH)
  --config FILE    a TOML file every node reads (e.g. timeouts); flags given here override it

environment: BRAMBLE_CLUSTER_KAFKA_PORT (first Kafka port, 9092), BRAMBLE_CLUSTER_RAFT_PORT
(first Raft port, 9192).

example:
  cargo build --release && scripts/cluster.sh start
  kcat -b 127.0.0.1:9092 -L
  scripts/cluster.sh kill 1; scripts/cluster.sh status; scripts/cluster.sh restart 1
  scripts/cluster.sh stop
EOF
}

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOST=127.0.0.1
NODES=(1 2 3)
# How long one node may take to accept on its Kafka port (a debug build on a slow board).
START_TIMEOUT_S=30
# How long the cluster may take, after all three accept, to elect a controller and answer status.
FORM_TIMEOUT_S=30
# How long SIGTERM may take to end one node; SIGKILL must end it at once.
STOP_TIMEOUT_S=20
KILL_TIMEOUT_S=10
POLL_S=0.1
# Log lines shown when a node fails to start.
LOG_TAIL_LINES=30

die() { echo "cluster.sh: $*" >&2; exit 1; }

command=${1:-}
[ -n "$command" ] || { usage >&2; exit 2; }
shift
case "$command" in -h | --help | help) usage; exit 0 ;; esac

node_arg=""
case "$command" in
  kill | restart)
    node_arg=${1:-}
    [[ "$node_arg" =~ ^[123]$ ]] || { echo "cluster.sh: $command needs a node number 1-3" >&2; usage >&2; exit 2; }
    shift ;;
  start | stop | status) ;;
  *) echo "cluster.sh: unknown command '$command'" >&2; usage >&2; exit 2 ;;
esac

dir=${BRAMBLE_CLUSTER_DIR:-./bramble-cluster}
binary=""
config=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) [ $# -ge 2 ] || die "--dir needs a value"; dir=$2; shift 2 ;;
    --binary) [ $# -ge 2 ] || die "--binary needs a value"; binary=$2; shift 2 ;;
    --config) [ $# -ge 2 ] || die "--config needs a value"; config=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "cluster.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
if [ "$command" != start ] && { [ -n "$binary" ] || [ -n "$config" ]; }; then
  die "--binary and --config belong to start (later commands reuse what start recorded)"
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
state=$dir/cluster.env

# --- settings: chosen by the first `start`, recorded, reused by every later command ---
binary_flag=$binary
config_flag=$config
binary="" config="" kafka_port="" raft_port=""
if [ -f "$state" ]; then
  # shellcheck source=/dev/null
  . "$state"
fi
[ -z "$binary_flag" ] || binary=$binary_flag
[ -z "$config_flag" ] || config=$config_flag
if [ -z "$binary" ]; then
  if [ -n "${BRAMBLE_BIN:-}" ]; then binary=$BRAMBLE_BIN
  elif [ -x "$repo_root/target/release/bramble" ]; then binary=$repo_root/target/release/bramble
  elif [ -x "$repo_root/target/debug/bramble" ]; then binary=$repo_root/target/debug/bramble
  elif command -v bramble >/dev/null 2>&1; then binary=$(command -v bramble)
  else die "no bramble binary: build one (cargo build --release) or pass --binary PATH"
  fi
fi
[ -x "$binary" ] || die "$binary is not an executable"
binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
if [ -n "$config" ]; then
  [ -f "$config" ] || die "$config does not exist"
  config=$(cd "$(dirname "$config")" && pwd)/$(basename "$config")
fi
kafka_port=${kafka_port:-${BRAMBLE_CLUSTER_KAFKA_PORT:-9092}}
raft_port=${raft_port:-${BRAMBLE_CLUSTER_RAFT_PORT:-9192}}
if [ "$command" = start ]; then
  printf 'binary=%q\nconfig=%q\nkafka_port=%q\nraft_port=%q\n' \
    "$binary" "$config" "$kafka_port" "$raft_port" >"$state"
fi

kafka_address() { echo "$HOST:$((kafka_port + $1 - 1))"; }
raft_address() { echo "$HOST:$((raft_port + $1 - 1))"; }
voters() {
  local n out=""
  for n in "${NODES[@]}"; do out+="${out:+,}$n@$(raft_address "$n")"; done
  echo "$out"
}
bootstrap() {
  local n out=""
  for n in "${NODES[@]}"; do out+="${out:+,}$(kafka_address "$n")"; done
  echo "$out"
}

# The pid of node N if it runs (a recorded pid whose command line is this node's, so a pid
# reused by another process is never signalled); empty otherwise.
node_pid() {
  local pidfile=$dir/node-$1.pid pid
  [ -f "$pidfile" ] || return 0
  pid=$(<"$pidfile")
  if [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--data-dir $dir/node-$1 "; then
    echo "$pid"
  fi
}

# Whether a process runs: a zombie (exited, its new parent not yet reaping it) does not.
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

accepts() { (exec 3<>"/dev/tcp/$HOST/${1##*:}") 2>/dev/null; }

log_tail() { tail -n "$LOG_TAIL_LINES" "$dir/node-$1.log" 2>/dev/null | sed 's/^/    /' >&2 || true; }

start_node() {
  local n=$1 pid
  pid=$(node_pid "$n")
  if [ -n "$pid" ]; then
    echo "node $n already running (pid $pid)"
    return 0
  fi
  mkdir -p "$dir/node-$n"
  local args=(serve --node-id "$n" --data-dir "$dir/node-$n"
    --listen "$(kafka_address "$n")" --advertise "$(kafka_address "$n")"
    --raft-listen "$(raft_address "$n")" --voters "$(voters)" --rack "r$n")
  [ -z "$config" ] || args+=(--config "$config")
  printf '\n===== %s: %s %s\n' "$(date -u +%FT%TZ)" "$binary" "${args[*]}" >>"$dir/node-$n.log"
  nohup "$binary" "${args[@]}" >>"$dir/node-$n.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/node-$n.pid"
  local deadline=$((SECONDS + START_TIMEOUT_S))
  until accepts "$(kafka_address "$n")"; do
    if ! alive "$pid"; then
      echo "cluster.sh: node $n exited during start-up; the end of $dir/node-$n.log:" >&2
      log_tail "$n"
      rm -f "$dir/node-$n.pid"
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "cluster.sh: node $n (pid $pid) did not accept on $(kafka_address "$n") within ${START_TIMEOUT_S}s; the end of its log:" >&2
      log_tail "$n"
      return 1
    fi
    sleep "$POLL_S"
  done
  echo "node $n running (pid $pid) at $(kafka_address "$n"), raft $(raft_address "$n"), rack r$n"
}

# Signals node N and waits for it to exit; returns 1 if it outlived the timeout.
signal_node() {
  local n=$1 signal=$2 timeout_s=$3 pid
  pid=$(node_pid "$n")
  if [ -z "$pid" ]; then
    echo "node $n not running"
    rm -f "$dir/node-$n.pid"
    return 0
  fi
  kill "-$signal" "$pid"
  local deadline=$((SECONDS + timeout_s))
  while alive "$pid"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "cluster.sh: node $n (pid $pid) still running ${timeout_s}s after SIG$signal" >&2
      return 1
    fi
    sleep "$POLL_S"
  done
  rm -f "$dir/node-$n.pid"
  echo "node $n stopped (SIG$signal)"
}

cluster_status() {
  "$binary" cluster status -b "$1"
}

# Whether node 1 reports every node as a registered, unfenced broker.
all_registered() {
  local json unfenced
  json=$("$binary" cluster status --json -b "$(kafka_address 1)" 2>/dev/null) || return 1
  unfenced=$(grep -o '"fenced":false' <<<"$json" | wc -l)
  [ "$unfenced" -ge "${#NODES[@]}" ]
}

case "$command" in
  start)
    for n in "${NODES[@]}"; do start_node "$n"; done
    deadline=$((SECONDS + FORM_TIMEOUT_S))
    # Formed = every node registered and unfenced, so an RF=3 topic can be created at once.
    until out=$(cluster_status "$(kafka_address 1)" 2>&1) && all_registered; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "cluster.sh: the nodes run but \`bramble cluster status\` does not show all ${#NODES[@]} registered and unfenced after ${FORM_TIMEOUT_S}s:" >&2
        echo "$out" | sed 's/^/    /' >&2
        echo "logs: $dir/node-{1,2,3}.log" >&2
        exit 1
      fi
      sleep "$POLL_S"
    done
    echo "$out"
    echo
    echo "logs: $dir/node-{1,2,3}.log"
    echo "bootstrap: $(bootstrap)"
    ;;
  stop)
    failed=0
    for n in "${NODES[@]}"; do signal_node "$n" TERM "$STOP_TIMEOUT_S" || failed=1; done
    exit "$failed"
    ;;
  kill)
    signal_node "$node_arg" KILL "$KILL_TIMEOUT_S"
    ;;
  restart)
    signal_node "$node_arg" TERM "$STOP_TIMEOUT_S"
    start_node "$node_arg"
    ;;
  status)
    running=()
    for n in "${NODES[@]}"; do
      pid=$(node_pid "$n")
      if [ -n "$pid" ]; then
        running+=("$n")
        echo "node $n: running (pid $pid) at $(kafka_address "$n"), raft $(raft_address "$n"), rack r$n"
      else
        echo "node $n: stopped (log $dir/node-$n.log)"
      fi
    done
    if [ "${#running[@]}" -gt 0 ]; then
      echo
      cluster_status "$(kafka_address "${running[0]}")" || echo "(\`bramble cluster status\` failed: no quorum yet?)"
      echo
      echo "bootstrap: $(bootstrap)"
    fi
    [ "${#running[@]}" -eq "${#NODES[@]}" ]
    ;;
esac
