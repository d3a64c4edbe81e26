#!/usr/bin/env bash
# Installs what the test suite needs beyond a Rust toolchain: the Debian
# packages its end-to-end tests start for real (redis-server, pebble as the
# ACME CA, curl as the HTTPS client, chromium as the dashboard's browser,
# prometheus for promtool, which checks the shipped rules), and
# componentize-py (from PyPI, into a virtual environment of its own at
# ~/.cache/switchyard/py-venv), which builds the Python plugin projects, and
# componentize-js (from npm, into ~/.cache/switchyard/js, with Node.js and
# npm from Debian when the machine has none), which builds the JavaScript
# ones.
# Does nothing when they are present; needs root (or sudo) and apt-get
# otherwise.
set -euo pipefail

packages=(ca-certificates chromium curl pebble prometheus python3 python3-venv redis-server)
missing=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)

# The componentize-py release `switchyard plugin new --lang python` names.
COMPONENTIZE_PY=0.25.1
VENV="$HOME/.cache/switchyard/py-venv"
install_componentize_py() {
  [ -x "$VENV/bin/componentize-py" ] &&
    "$VENV/bin/componentize-py" --version 2>/dev/null | grep -q " $COMPONENTIZE_PY\$" && return 0
  echo "installing componentize-py $COMPONENTIZE_PY into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "componentize-py==$COMPONENTIZE_PY"
}

# The componentize-js release `switchyard plugin new --lang js` names.
COMPONENTIZE_JS=0.23.0
JS_DIR="$HOME/.cache/switchyard/js"
install_componentize_js() {
  grep -q "\"version\": \"$COMPONENTIZE_JS\"" \
    "$JS_DIR/node_modules/@bytecodealliance/componentize-js/package.json" 2>/dev/null && return 0
  echo "installing componentize-js $COMPONENTIZE_JS into $JS_DIR" >&2
  mkdir -p "$JS_DIR"
  [ -f "$JS_DIR/package.json" ] || echo '{"private": true}' >"$JS_DIR/package.json"
  (cd "$JS_DIR" && npm install -q --no-audit --no-fund "@bytecodealliance/componentize-js@$COMPONENTIZE_JS")
}

if [ ${#missing[@]} -eq 0 ]; then
  install_componentize_py
  install_componentize_js
  exit 0
fi

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
install_componentize_py
install_componentize_js
