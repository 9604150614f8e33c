# Sourced by scripts that install Debian packages they need (setup.sh, build-pi.sh):
# `apt_install PKG...` runs apt-get update once per script run, then installs, as root directly
# or through sudo when there is one.
# shellcheck shell=bash

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  as_root=()
fi

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    apt_updated=1
  fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}
