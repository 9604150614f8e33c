#!/usr/bin/env bash
# Builds bramble's Debian package with cargo-deb ([package.metadata.deb] in Cargo.toml).
#
#   scripts/build-deb.sh [aarch64|armv7|amd64]      (default: aarch64)
#
#   aarch64 -> bramble_<version>-1_arm64.deb  (64-bit Raspberry Pi OS)
#   armv7   -> bramble_<version>-1_armhf.deb  (32-bit Raspberry Pi OS)
#   amd64   -> bramble_<version>-1_amd64.deb
#
# One config for all: packaging/bramble.toml (`board = "auto"`); postinst sets MemoryMax from
# the detected board's profile.
#
# The Pi binaries come from scripts/build-pi.sh (which also enforces the glibc ceiling), then
# `cargo deb --no-build` packs them. Installs cargo-deb (`cargo install --locked`, a few minutes of
# compiling) only when it is missing. Not part of scripts/test.sh.
#
# The package: /usr/bin/bramble, the unit in /lib/systemd/system, sysusers.d and tmpfiles.d
# snippets, board profiles in /usr/share/bramble/boards, README in /usr/share/doc/bramble and the
# conffile /etc/bramble/bramble.toml. Install on a Pi with `sudo apt install ./bramble_*.deb`.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

# The cargo-deb release this packaging was written against.
CARGO_DEB_VERSION=3.8.0

arch=${1:-aarch64}
case "$arch" in
  aarch64 | arm64) target=aarch64-unknown-linux-gnu ;;
  armv7 | armhf) target=armv7-unknown-linux-gnueabihf ;;
  amd64 | x86_64) target=x86_64-unknown-linux-gnu ;;
  *)
    echo "usage: $0 [aarch64|armv7|amd64]" >&2
    exit 2
    ;;
esac

# Assets that other parts of the tree provide; cargo-deb's own error would not say where from.
for asset in systemd/bramble.service systemd/bramble.sysusers systemd/bramble.tmpfiles; do
  if [ ! -f "$asset" ]; then
    echo "build-deb: $asset is missing (the systemd unit, sysusers.d and tmpfiles.d snippets" \
      "packaged by [package.metadata.deb] in Cargo.toml)" >&2
    exit 1
  fi
done

if ! cargo deb --version >/dev/null 2>&1; then
  echo "build-deb: installing cargo-deb $CARGO_DEB_VERSION (cargo install --locked)"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi
echo "build-deb: $(cargo deb --version)"

case "$arch" in
  amd64 | x86_64) cargo build --release --locked --target "$target" ;;
  *) scripts/build-pi.sh "$arch" ;;
esac

# --no-strip: the release profile already strips symbols, and the host's strip cannot handle
# ARM binaries anyway.
deb=$(cargo deb --target "$target" --no-build --no-strip | tail -n1)
[ -f "$deb" ] || { echo "build-deb: cargo deb did not report a package path ($deb)" >&2; exit 1; }

echo "build-deb: package:    $deb"
echo "build-deb: size_bytes: $(stat -c %s "$deb")"
dpkg-deb --field "$deb" Package Version Architecture Depends
dpkg-deb --contents "$deb" | awk '{print "  " $1, $6}'
echo "build-deb: conffiles:  $(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles 2>/dev/null | tr '\n' ' ')"
