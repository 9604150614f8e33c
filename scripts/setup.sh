#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, on Debian bookworm:
#   - kcat from Debian (1.7.1 on librdkafka 2.0.2). Deliberately the distro build: it is old and
#     strict, and it is what people on a Raspberry Pi will actually run against bramble.
#   - a Python venv at .venv/ with the pinned clients of tests/compat/requirements.txt.
#   - systemd's command-line tools (systemd-analyze, systemd-sysusers, systemd-tmpfiles).
#   - nft (Debian's nftables) and ip (iproute2) for the nemesis trials
#     (tests/compat/test_nemesis.py): network partitions are nftables rules in a node's network
#     namespace. Not fatal: without them (or without root) those trials skip with the reason.
#   - for the Pi smoke test (tests/compat/test_qemu_aarch64.py): the rustup target
#     aarch64-unknown-linux-gnu, Debian's gcc-aarch64-linux-gnu (linker and aarch64 glibc) and
#     qemu-user. Not fatal: if they cannot be installed, a line says so and that test skips.
# Idempotent: apt runs only when kcat, systemd-analyze, nft, ip or an aarch64 tool is missing,
# rustup only when the target is; pip runs only when the requirements file changed since the
# last successful install (stamp file inside the venv).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

requirements=tests/compat/requirements.txt
venv_dir=.venv
stamp="$venv_dir/.requirements.sha256"

# shellcheck source=scripts/lib/apt.sh
source scripts/lib/apt.sh

# --- kcat -----------------------------------------------------------------------------------
if ! command -v kcat >/dev/null 2>&1; then
  echo "setup: installing kcat from Debian"
  apt_install kcat
fi
echo "setup: $(kcat -V 2>&1 | grep -m1 '^Version' || echo 'kcat version unknown')"

# --- systemd's tools ------------------------------------------------------------------------
# tests/systemd.rs runs `systemd-analyze verify` on the unit; tests/install.rs applies the
# sysusers and tmpfiles snippets with `systemd-sysusers --root` and `systemd-tmpfiles --root`.
# Only the tools are needed: systemd need not be running (containers have no systemd PID 1).
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "setup: installing systemd (for systemd-analyze, systemd-sysusers, systemd-tmpfiles)"
  apt_install systemd
fi

# --- nftables and iproute2 (nemesis trials; optional) ----------------------------------------
netns_packages=()
command -v nft >/dev/null 2>&1 || netns_packages+=(nftables)
command -v ip >/dev/null 2>&1 || netns_packages+=(iproute2)
if [ "${#netns_packages[@]}" -gt 0 ]; then
  echo "setup: installing ${netns_packages[*]} from Debian (nemesis trials)"
  apt_install "${netns_packages[@]}" ||
    echo "setup: WARNING: apt-get install ${netns_packages[*]} failed; the nemesis trials will skip"
fi
if command -v nft >/dev/null 2>&1; then
  echo "setup: $(nft --version)"
fi

# --- aarch64 cross build and qemu-user (Pi smoke test; optional) -----------------------------
aarch64_target=aarch64-unknown-linux-gnu
aarch64_problems=()
if [ ! -d "$(rustc --print sysroot)/lib/rustlib/$aarch64_target" ]; then
  echo "setup: adding rustup target $aarch64_target"
  rustup target add "$aarch64_target" || aarch64_problems+=("rustup target add $aarch64_target failed")
fi
aarch64_packages=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || aarch64_packages+=(gcc-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null 2>&1 || aarch64_packages+=(qemu-user)
if [ "${#aarch64_packages[@]}" -gt 0 ]; then
  echo "setup: installing ${aarch64_packages[*]} from Debian"
  apt_install "${aarch64_packages[@]}" ||
    aarch64_problems+=("apt-get install ${aarch64_packages[*]} failed")
fi
if [ "${#aarch64_problems[@]}" -gt 0 ]; then
  echo "setup: WARNING: aarch64 toolchain incomplete (${aarch64_problems[*]});" \
    "the qemu smoke test will skip"
else
  echo "setup: aarch64: target $aarch64_target, $(aarch64-linux-gnu-gcc -dumpversion 2>/dev/null |
    sed 's/^/aarch64-linux-gnu-gcc /'), $(qemu-aarch64 --version | head -n1)"
fi

# --- Python venv ----------------------------------------------------------------------------
python_bin=${PYTHON:-python3}
if ! "$python_bin" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "setup: installing python3-venv from Debian"
  apt_install python3-venv
  python_bin=/usr/bin/python3
fi

if [ ! -x "$venv_dir/bin/python" ] || ! "$venv_dir/bin/python" -c 'import sys' >/dev/null 2>&1; then
  echo "setup: creating $venv_dir"
  rm -rf "$venv_dir"
  "$python_bin" -m venv "$venv_dir"
fi

want=$(sha256sum "$requirements" | cut -d' ' -f1)
have=$(cat "$stamp" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  echo "setup: installing $requirements into $venv_dir"
  "$venv_dir/bin/python" -m pip install --disable-pip-version-check -q -r "$requirements"
  # Prove that kafka-python can really decode every codec the suite produces with, so a missing
  # optional module shows up here and not as a confusing consumer error later.
  "$venv_dir/bin/python" - <<'PY'
from kafka.record.default_records import DefaultRecordBatchBuilder, DefaultRecordBatch
for name, codec in [("none", 0), ("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)]:
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=codec, is_transactional=False, producer_id=-1,
        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i in range(10):
        builder.append(i, timestamp=1000 + i, key=b"k", value=b"v%d" % i, headers=[])
    batch = DefaultRecordBatch(bytes(builder.build()))
    assert [r.value for r in batch] == [b"v%d" % i for i in range(10)], name
print("setup: kafka-python decodes none, gzip, snappy, lz4, zstd")
PY
  echo "$want" >"$stamp"
else
  echo "setup: $venv_dir is up to date with $requirements"
fi
