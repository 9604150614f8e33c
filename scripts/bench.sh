#!/usr/bin/env bash
# Produce benchmark against a fresh release-build node, then the disk probe at the same write size:
# starts target/release/bramble on a free port with a temporary data dir, runs
# `bramble bench produce --broker-pid PID` (records/s, MB/s, latency, the broker's peak RSS, CPU
# seconds, fsyncs and write amplification), then `bramble bench disk` in the same filesystem with
# --chunk-bytes set to the bytes the broker wrote per fsync, so the produce figure can be read as
# a fraction of the disk's own ceiling.
#
#   scripts/bench.sh [--io-backend auto|uring|std] [bramble bench produce flags…]
#   e.g. scripts/bench.sh --messages 1000000 --record-size 100 --acks all --producers 8
#
# --io-backend is passed to `bramble serve`; BRAMBLE_SERVE_ARGS adds any other serve flags
# (e.g. BRAMBLE_SERVE_ARGS="--board pi4").
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
cargo build --release --quiet
bin=target/release/bramble

serve_args=()
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --io-backend) serve_args+=("$1" "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
# shellcheck disable=SC2206 # word splitting of the extra flags is intended
serve_args+=(${BRAMBLE_SERVE_ARGS:-})

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" ${serve_args[@]+"${serve_args[@]}"} 2>"$dir/broker.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q listening "$dir/broker.log" && break; sleep 0.1; done
sleep 0.5

echo "binary: $(stat -c %s "$bin") bytes ($bin)"
echo "io:     $(grep -o 'io_backend=[^ ]*' "$dir/broker.log" | head -1)"
echo "idle:   VmRSS $(awk '$1=="VmRSS:" {print $2" "$3}' "/proc/$pid/status")"
"$bin" bench produce -b "127.0.0.1:$port" --broker-pid "$pid" ${args[@]+"${args[@]}"} | tee "$dir/produce.txt"
chunk=$(awk '/disk bytes per fsync/ {printf "%d", $NF}' "$dir/produce.txt")
case "$chunk" in '' | 0) chunk=16384 ;; esac
"$bin" bench disk --dir "$dir" --chunk-bytes "$chunk" --total-bytes 128MiB
