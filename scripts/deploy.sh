#!/usr/bin/env bash
# Rolling deploy of bramble to Raspberry Pis over ssh/scp, one node at a time.
#
#   scripts/deploy.sh [options] host1 [host2 ...]
#
#   --bin PATH          binary to push [target/aarch64-unknown-linux-gnu/release/bramble,
#                       from scripts/build-pi.sh aarch64]
#   --config FILE       config to install as /etc/bramble/bramble.toml [none: keep the node's]
#   --config-dir DIR    per-node configs instead: DIR/HOST.toml for each HOST (node_id and
#                       advertise differ per node); every file must exist before anything runs
#   --user USER         ssh user [none: ~/.ssh/config or the current user]
#   --kafka-addr ADDR   address the node's broker answers on, checked from the node itself
#                       [127.0.0.1:9092: a node listening on 0.0.0.0 or loopback]
#   --wait-s N          how long a restarted node may take to be active and answer [120]
#   --dry-run           print every command, in order, and run none
#
# For each host, in the order given: copy the binary (and config) to the node's home directory,
# install them as /usr/bin/bramble (atomic rename, so a running broker is not disturbed) and
# /etc/bramble/bramble.toml with sudo, restart the `bramble` systemd service, then wait until
# `systemctl is-active bramble` and a Kafka request (`bramble status`) to its port succeed. Only
# then does the next host start, so at most one node is down at a time. The first failure stops
# the deploy, and the hosts not yet touched are named.
#
# The node needs the unit installed already (the .deb from scripts/build-deb.sh does that, or
# systemd/bramble.service by hand), and passwordless sudo for the ssh user (sudo -n: ssh runs
# without a terminal, so a password prompt could only hang).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Bound on one ssh connection attempt.
SSH_CONNECT_TIMEOUT_S=10
# Interval between two readiness checks of a restarted node.
READY_POLL_INTERVAL_S=2
# Bound on one `bramble status` readiness probe on the node.
STATUS_PROBE_TIMEOUT_S=10

bin=$repo_root/target/aarch64-unknown-linux-gnu/release/bramble
config=
config_dir=
user=
kafka_addr=127.0.0.1:9092
wait_s=120
dry_run=0
hosts=()

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

while [ "$#" -gt 0 ]; do
  case "$1" in
    --bin) bin=${2:?--bin needs a path}; shift 2 ;;
    --config) config=${2:?--config needs a file}; shift 2 ;;
    --config-dir) config_dir=${2:?--config-dir needs a directory}; shift 2 ;;
    --user) user=${2:?--user needs a name}; shift 2 ;;
    --kafka-addr) kafka_addr=${2:?--kafka-addr needs host:port}; shift 2 ;;
    --wait-s) wait_s=${2:?--wait-s needs seconds}; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage ;;
    --) shift; hosts+=("$@"); break ;;
    -*) echo "deploy: unknown option $1" >&2; usage ;;
    *) hosts+=("$1"); shift ;;
  esac
done

[ "${#hosts[@]}" -gt 0 ] || { echo "deploy: no hosts given" >&2; usage; }
case "$wait_s" in '' | *[!0-9]*) echo "deploy: --wait-s must be whole seconds" >&2; exit 2 ;; esac
# Checked even on a dry run: a plan built on a missing file is not a plan.
[ -f "$bin" ] || { echo "deploy: binary $bin not found (scripts/build-pi.sh aarch64)" >&2; exit 1; }
if [ -n "$config" ] && [ -n "$config_dir" ]; then
  echo "deploy: --config and --config-dir exclude each other" >&2
  exit 2
fi
# The config for one host: --config, DIR/HOST.toml with --config-dir, or none.
config_for() {
  if [ -n "$config_dir" ]; then echo "$config_dir/$1.toml"; else echo "$config"; fi
}
for host in "${hosts[@]}"; do
  cfg=$(config_for "$host")
  if [ -n "$cfg" ] && [ ! -f "$cfg" ]; then
    echo "deploy: config $cfg not found" >&2
    exit 1
  fi
done

ssh_opts=(-o BatchMode=yes -o ConnectTimeout="$SSH_CONNECT_TIMEOUT_S")
# Staging names in the ssh user's home directory on the node (not /tmp: no shared directory).
staged_bin=.bramble-deploy.bin
staged_config=.bramble-deploy.toml

# Prints a command as a shell would read it, then runs it unless this is a dry run.
run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  [ "$dry_run" -eq 1 ] || "$@"
}

# Runs `check` (a command line) until it succeeds or wait_s passes; a dry run prints it once.
wait_for() {
  local what=$1
  shift
  if [ "$dry_run" -eq 1 ]; then
    run "$@"
    echo "  (repeated every ${READY_POLL_INTERVAL_S}s until it succeeds, at most ${wait_s}s: $what)"
    return 0
  fi
  local deadline=$((SECONDS + wait_s))
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "deploy: $what: not true after ${wait_s}s" >&2
      return 1
    fi
    sleep "$READY_POLL_INTERVAL_S"
  done
}

# Each step is checked by hand: `set -e` does not apply inside a function called from `if`.
deploy_one() {
  local host=$1
  local dest=$host
  local cfg
  cfg=$(config_for "$host")
  [ -z "$user" ] || dest=$user@$host

  run scp -q "${ssh_opts[@]}" "$bin" "$dest:$staged_bin" || return 1
  if [ -n "$cfg" ]; then
    run scp -q "${ssh_opts[@]}" "$cfg" "$dest:$staged_config" || return 1
  fi

  local install="sudo -n install -D -m 0755 $staged_bin /usr/bin/bramble.new"
  install+=" && sudo -n mv -f /usr/bin/bramble.new /usr/bin/bramble && rm -f $staged_bin"
  if [ -n "$cfg" ]; then
    install+=" && sudo -n install -D -m 0644 $staged_config /etc/bramble/bramble.toml"
    install+=" && rm -f $staged_config"
  fi
  run ssh "${ssh_opts[@]}" "$dest" "$install" || return 1
  run ssh "${ssh_opts[@]}" "$dest" "sudo -n systemctl restart bramble" || return 1

  wait_for "$host: systemctl is-active bramble" \
    ssh "${ssh_opts[@]}" "$dest" "systemctl is-active --quiet bramble" || return 1
  wait_for "$host: broker answers on $kafka_addr" \
    ssh "${ssh_opts[@]}" "$dest" \
    "timeout $STATUS_PROBE_TIMEOUT_S /usr/bin/bramble status -b $(printf %q "$kafka_addr") >/dev/null" ||
    return 1
}

echo "deploy: $bin -> ${hosts[*]}${config:+ (config $config)}${config_dir:+ (configs $config_dir/HOST.toml)}$([ "$dry_run" -eq 1 ] && echo ' [dry run: nothing is executed]')"
done_hosts=()
for i in "${!hosts[@]}"; do
  host=${hosts[$i]}
  echo "deploy: == $host ($((i + 1))/${#hosts[@]})"
  if ! deploy_one "$host"; then
    echo "deploy: FAILED on $host; done: ${done_hosts[*]:-none}; not touched: ${hosts[*]:i+1}" >&2
    exit 1
  fi
  done_hosts+=("$host")
done
if [ "$dry_run" -eq 1 ]; then
  echo "deploy: dry run: nothing was executed"
else
  echo "deploy: done: ${done_hosts[*]}"
fi
