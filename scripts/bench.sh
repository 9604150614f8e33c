#!/usr/bin/env bash
# Produce benchmark against a fresh release-build node, then the disk probe at the same write size:
# starts target/release/bramble on a free port with a temporary data dir, runs
# `bramble bench produce --broker-pid PID` (records/s, MB/s, latency, the broker's peak RSS, CPU
# seconds, fsyncs and write amplification), then `bramble bench disk` in the same filesystem with
# --chunk-bytes set to the bytes the broker wrote per fsync, so the produce figure can be read as
# a fraction of the disk's own ceiling.
#
#   scripts/bench.sh [bramble bench produce flags…], e.g. --messages 1000000 --producers 8
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
cargo build --release --quiet
bin=target/release/bramble

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" 2>"$dir/broker.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q listening "$dir/broker.log" && break; sleep 0.1; done

echo "binary: $(stat -c %s "$bin") bytes ($bin)"
"$bin" bench produce -b "127.0.0.1:$port" --broker-pid "$pid" "$@" | tee "$dir/produce.txt"
chunk=$(awk '/disk bytes per fsync/ {printf "%d", $NF}' "$dir/produce.txt")
case "$chunk" in '' | 0) chunk=16384 ;; esac
"$bin" bench disk --dir "$dir" --chunk-bytes "$chunk" --total-bytes 128MiB
