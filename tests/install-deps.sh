#!/usr/bin/env bash
# Installs what the test suite needs beyond a Rust toolchain: the Debian
# packages its end-to-end tests start for real (redis-server, pebble as the
# ACME CA, curl as the HTTPS client, chromium as the dashboard's browser,
# prometheus for promtool, which checks the shipped rules).
# Does nothing when they are present; needs root (or sudo) and apt-get
# otherwise.
set -euo pipefail

packages=(ca-certificates chromium curl pebble prometheus redis-server)
missing=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: the tests need these Debian packages: ${missing[*]}" >&2
  echo "       this machine has no apt-get; install their equivalents, then run the tests again" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || {
    echo "error: installing ${missing[*]} needs root; run this as root or install sudo" >&2
    exit 1
  }
  sudo=(sudo)
fi
echo "installing the test suite's packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q "${missing[@]}"
