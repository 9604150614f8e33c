#!/usr/bin/env bash
# Installs a built bramble as a systemd service on this machine (or under --prefix, for tests
# and image builds):
#   PREFIX/usr/bin/bramble                                   the binary (--bin)
#   PREFIX/usr/lib/systemd/system/bramble.service            the unit (systemd/bramble.service)
#   PREFIX/usr/lib/sysusers.d/bramble.conf                   the bramble user (systemd/bramble.sysusers)
#   PREFIX/usr/lib/tmpfiles.d/bramble.conf                   its directories (systemd/bramble.tmpfiles)
#   PREFIX/etc/systemd/system/bramble.service.d/memory.conf  MemoryMax= for the board
#   PREFIX/etc/bramble/bramble.toml                          a config naming the board (--board,
#                                                            default auto), only if absent: an
#                                                            existing config is never replaced
# Idempotent: a file whose content and mode already match is left alone and reported
# "unchanged". Without --prefix, run as root, it then applies the user and directories
# (systemd-sysusers, systemd-tmpfiles --create) and, if systemd is running, reloads it
# (systemctl daemon-reload). It never enables or starts the service.
#
# Usage: scripts/install.sh [--bin PATH] [--board NAME] [--memory-max SIZE|none] [--prefix DIR]
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

die() {
  echo "install.sh: $*" >&2
  exit 1
}

bin="$repo_root/target/release/bramble"
board=auto
memory_max=
prefix=
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=${2:?--bin needs a path}; shift 2 ;;
    --board) board=${2:?--board needs a name}; shift 2 ;;
    --memory-max) memory_max=${2:?--memory-max needs a size or none}; shift 2 ;;
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

[[ "$board" =~ ^[a-z0-9-]+$ ]] || die "--board $board: a profile name such as pi4, or auto"
[ -f "$bin" ] && [ -x "$bin" ] || die "no executable at $bin (build it: cargo build --release, or pass --bin)"
# The profile (boards/NAME.toml, built into the binary too) gives MemoryMax: its
# memory_max_bytes, which bramble checks its own budgets against at start. For auto, the
# binary detects the board here (when it can run on this machine); otherwise the unit's
# default (the Pi 4 value) stays.
if [ "$board" = auto ]; then
  if [ -z "$memory_max" ]; then
    # Detection describes the machine the binary runs on: with --prefix (an image for another
    # machine) that is the wrong one, and a binary for another architecture may not run here.
    [ -z "$prefix" ] || die "--board auto with --prefix: detection would describe this machine, not the target; pass --board NAME or --memory-max"
    profile=$("$bin" board show auto 2>/dev/null) ||
      die "cannot run $bin here to detect the board; pass --board NAME or --memory-max"
  fi
else
  if [ ! -f "$repo_root/boards/$board.toml" ]; then
    known=$(cd "$repo_root/boards" && ls -- *.toml | sed 's/\.toml$//' | paste -sd' ')
    die "no board profile boards/$board.toml (known: auto $known)"
  fi
  profile=$(cat "$repo_root/boards/$board.toml")
fi
if [ -z "$memory_max" ]; then
  memory_max=$(awk '$1 == "memory_max_bytes" && $2 == "=" { print $3; exit }' <<<"$profile")
  [ -n "$memory_max" ] || die "no memory_max_bytes in the $board profile; pass --memory-max"
fi
[[ "$memory_max" =~ ^([0-9]+[KMGT]?|[0-9]+%|infinity|none)$ ]] \
  || die "--memory-max $memory_max: expected e.g. 512M, 2G, 50%, infinity or none"

if [ -n "$prefix" ]; then
  mkdir -p "$prefix"
  prefix=$(cd "$prefix" && pwd)
fi

# One line per file: what happened to it, then its path.
report() {
  printf '%-10s %s\n' "$1" "$2"
}

# install_file SRC DEST MODE: copies SRC to DEST unless DEST already has the same bytes and mode.
install_file() {
  local src=$1 dest=$2 mode=$3
  if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then
    report unchanged "$dest"
    return
  fi
  local what=installed
  [ -e "$dest" ] && what=updated
  install -D -m "$mode" "$src" "$dest"
  report "$what" "$dest"
  changed=1
}

changed=0
install_file "$bin" "$prefix/usr/bin/bramble" 0755
install_file "$repo_root/systemd/bramble.service" "$prefix/usr/lib/systemd/system/bramble.service" 0644
install_file "$repo_root/systemd/bramble.sysusers" "$prefix/usr/lib/sysusers.d/bramble.conf" 0644
install_file "$repo_root/systemd/bramble.tmpfiles" "$prefix/usr/lib/tmpfiles.d/bramble.conf" 0644

dropin="$prefix/etc/systemd/system/bramble.service.d/memory.conf"
if [ "$memory_max" = none ]; then
  if [ -e "$dropin" ]; then
    rm -f "$dropin"
    report removed "$dropin"
    changed=1
  fi
else
  tmp=$(mktemp)
  trap 'rm -f "$tmp" "${cfg_tmp:-}"' EXIT
  printf '# Written by scripts/install.sh for board %s; rerun it to change.\n[Service]\nMemoryMax=%s\n' \
    "$board" "$memory_max" > "$tmp"
  install_file "$tmp" "$dropin" 0644
fi

config="$prefix/etc/bramble/bramble.toml"
if [ -e "$config" ]; then
  report kept "$config (an existing config is never overwritten; board $board not applied)"
else
  cfg_tmp=$(mktemp)
  trap 'rm -f "${tmp:-}" "$cfg_tmp"' EXIT
  sed "s/^board = .*/board = \"$board\"/" "$repo_root/packaging/bramble.toml" > "$cfg_tmp"
  install_file "$cfg_tmp" "$config" 0644
fi

if [ -n "$prefix" ]; then
  echo "prefix $prefix: not running systemd-sysusers, systemd-tmpfiles or systemctl"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "not root: skipped systemd-sysusers, systemd-tmpfiles and daemon-reload"
  exit 0
fi
if command -v systemd-sysusers >/dev/null 2>&1; then
  systemd-sysusers /usr/lib/sysusers.d/bramble.conf
else
  echo "no systemd-sysusers: create the bramble user and group yourself"
fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then
  systemd-tmpfiles --create /usr/lib/tmpfiles.d/bramble.conf
fi
# /run/systemd/system exists only when systemd is PID 1 (sd_booted(3)).
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  if [ "$changed" -eq 1 ]; then
    systemctl daemon-reload
    echo "systemctl daemon-reload done"
  fi
  echo "next: edit $config (listen, advertise), then: systemctl enable --now bramble"
else
  echo "systemd is not running here: skipped daemon-reload"
fi
