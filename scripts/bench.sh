#!/usr/bin/env bash
# Produce benchmark against a fresh release-build node: starts target/release/bramble on a free
# port with a temporary data dir, runs scripts/bench_produce.py (confluent-kafka, one producer),
# then prints the broker's idle RSS, RSS after the run, peak RSS, and bytes the broker asked the
# disk to write (/proc/PID/io write_bytes) per byte of record payload produced.
#
#   scripts/bench.sh [--records N] [--record-size B] [--acks all|1|0] [--io-backend auto|uring|std]
#
# --io-backend is passed to `bramble serve`; BRAMBLE_SERVE_ARGS adds any other serve flags.
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
scripts/setup.sh >/dev/null
cargo build --release --quiet

records=200000
record_size=100
serve_args=()
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --records) records=$2; args+=("$1" "$2"); shift 2 ;;
    --record-size) record_size=$2; args+=("$1" "$2"); shift 2 ;;
    --io-backend) serve_args+=("$1" "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
# shellcheck disable=SC2206 # word splitting of the extra flags is intended
serve_args+=(${BRAMBLE_SERVE_ARGS:-})

dir=$(mktemp -d)
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/bramble serve --listen "127.0.0.1:$port" --data-dir "$dir/data" ${serve_args[@]+"${serve_args[@]}"} 2>"$dir/broker.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q listening "$dir/broker.log" && break; sleep 0.1; done
sleep 1
rss() { awk -v k="$1:" '$1==k {print $2" "$3}' "/proc/$pid/status"; }
echo "binary: $(stat -c %s target/release/bramble) bytes (target/release/bramble)"
echo "io:     $(grep -o 'io_backend=[^ ]*' "$dir/broker.log" | head -1)"
echo "idle:   VmRSS $(rss VmRSS)"
written_before=$(awk '$1=="write_bytes:" {print $2}' "/proc/$pid/io")
.venv/bin/python scripts/bench_produce.py "127.0.0.1:$port" "${args[@]}"
written_after=$(awk '$1=="write_bytes:" {print $2}' "/proc/$pid/io")
echo "after:  VmRSS $(rss VmRSS), peak VmHWM $(rss VmHWM)"
.venv/bin/python - "$written_before" "$written_after" "$records" "$record_size" <<'PY'
import sys
before, after, n, size = map(int, sys.argv[1:])
payload = n * size
print(f"disk:   {after - before} bytes written for {payload} payload bytes "
      f"= {(after - before) / payload:.2f} x (batch, record headers and index included)")
PY
