#!/usr/bin/env bash
# Cross-builds a release bramble for a Raspberry Pi without Docker: plain cargo plus Debian's cross
# gcc as the linker (the linkers are set in .cargo/config.toml).
#
#   scripts/build-pi.sh [aarch64|armv7] [extra cargo build args...]     (default: aarch64)
#
#   aarch64: Pi 3/4/5, Zero 2 W, CM4 on a 64-bit OS   -> aarch64-unknown-linux-gnu (io_uring built)
#   armv7:   the same boards on a 32-bit OS            -> armv7-unknown-linux-gnueabihf (std backend
#            only: the io_uring backend is built for 64-bit Linux only, see Cargo.toml)
#
# Installs what is missing, and only that: the rustup target, and Debian's cross gcc (apt; sudo
# when not root). Then prints the binary's path, size in bytes and the highest GLIBC_x.y symbol
# version it needs, and fails if that is newer than GLIBC_MAX (2.36, Raspberry Pi OS Bookworm's
# glibc: a binary needing more would not start there). Debian bookworm's cross toolchains link
# against glibc 2.36, so a build on bookworm passes.
#
# With Docker, `cross build --release --target ...` (Cross.toml) is the alternative.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

# The newest glibc the binary may need: Raspberry Pi OS Bookworm ships glibc 2.36.
GLIBC_MAX=${BRAMBLE_GLIBC_MAX:-2.36}

arch=${1:-aarch64}
if [ "$#" -gt 0 ]; then shift; fi
case "$arch" in
  aarch64 | arm64)
    target=aarch64-unknown-linux-gnu
    triple=aarch64-linux-gnu
    gcc_package=gcc-aarch64-linux-gnu
    ;;
  armv7 | armhf)
    target=armv7-unknown-linux-gnueabihf
    triple=arm-linux-gnueabihf
    gcc_package=gcc-arm-linux-gnueabihf
    ;;
  *)
    echo "usage: $0 [aarch64|armv7] [extra cargo build args...]" >&2
    exit 2
    ;;
esac

# shellcheck source=scripts/lib/apt.sh
source "$repo_root/scripts/lib/apt.sh"

# --- prerequisites (each only when missing) -------------------------------------------------
if ! rustup target list --installed | grep -qx "$target"; then
  echo "build-pi: adding rustup target $target"
  rustup target add "$target"
fi

if ! command -v "$triple-gcc" >/dev/null 2>&1; then
  echo "build-pi: installing $gcc_package from Debian"
  apt_install "$gcc_package"
fi

# --- build ----------------------------------------------------------------------------------
echo "build-pi: cargo build --release --target $target $*"
cargo build --release --locked --target "$target" "$@"

bin=$repo_root/target/$target/release/bramble
[ -x "$bin" ] || { echo "build-pi: $bin was not produced" >&2; exit 1; }

# --- report and glibc ceiling ---------------------------------------------------------------
# readelf reads any ELF whatever the host; prefer the cross binutils' one (installed with gcc).
readelf_bin=$(command -v "$triple-readelf" || command -v readelf)
# `|| true`: with pipefail, a binary without GLIBC versions would end the script here, before
# the message below that says so.
glibc_needed=$("$readelf_bin" -V --wide "$bin" | { grep -o 'GLIBC_[0-9][0-9.]*' || true; } |
  sed 's/^GLIBC_//' | sort -uV | tail -n1)
size_bytes=$(stat -c %s "$bin")

echo "build-pi: binary:      $bin"
echo "build-pi: target:      $target"
echo "build-pi: size_bytes:  $size_bytes"
echo "build-pi: glibc_max:   GLIBC_${glibc_needed:-none} (ceiling GLIBC_$GLIBC_MAX)"

if [ -z "$glibc_needed" ]; then
  echo "build-pi: no GLIBC symbol versions found in $bin: not a glibc binary?" >&2
  exit 1
fi
highest=$(printf '%s\n%s\n' "$glibc_needed" "$GLIBC_MAX" | sort -V | tail -n1)
if [ "$highest" != "$GLIBC_MAX" ]; then
  echo "build-pi: FAIL: $bin needs GLIBC_$glibc_needed, newer than the ceiling GLIBC_$GLIBC_MAX" \
    "(Raspberry Pi OS Bookworm has 2.36); it would not start on such a system" >&2
  exit 1
fi
echo "build-pi: ok: GLIBC_$glibc_needed <= GLIBC_$GLIBC_MAX"
