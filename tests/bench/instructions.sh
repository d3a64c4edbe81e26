#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: a figure that does
# not move with the machine's load, for comparing a data-plane change with
# the previous main when wall-clock ratios are too noisy to tell.
#
# Each Switchyard build runs under `valgrind --tool=callgrind` (one worker
# thread) twice, serving N1 and then N2 keep-alive GETs from
# `switchyard bench` (fixed-request generator, 8 connections) against the
# benchmark backend; (Ir(N2) - Ir(N1)) / (N2 - N1) leaves out start-up and
# shutdown.
#
# Usage: tests/bench/instructions.sh [N1] [N2]
#   BASELINE=path/to/an/older/switchyard adds that build to the comparison.
# Needs: valgrind (Debian: apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/../.."
N1=${1:-2000}; N2=${2:-12000}
source tests/bench/lib.sh
need valgrind
BACKEND_PORT=3193; SY_PORT=8193; SY_ADMIN=9193

build
cargo build --release -q --manifest-path plugins/Cargo.toml --target wasm32-wasip2
start_backend $BACKEND_PORT
wait_up $BACKEND_PORT
switchyard_config "$WORK/sy.toml" $SY_PORT $SY_ADMIN $BACKEND_PORT

# Total instructions of one proxy run serving N requests.
count() { # BINARY N
  local out="$WORK/callgrind.out"
  rm -f "$out"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$1" run --config "$WORK/sy.toml" \
    2>>"$WORK/valgrind.log" &
  local pid=$!
  wait_up $SY_PORT
  target/release/switchyard bench "http://127.0.0.1:$SY_PORT" \
    --plugin plugins/target/wasm32-wasip2/release/fixed_request.wasm \
    -c 8 -n "$2" --timeout 30s >/dev/null 2>&1
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

per_request() { # BINARY
  local a b
  a=$(count "$1" "$N1")
  b=$(count "$1" "$N2")
  awk -v a="$a" -v b="$b" -v n1="$N1" -v n2="$N2" 'BEGIN { printf "%.0f", (b - a) / (n2 - n1) }'
}

new=$(per_request target/release/switchyard)
echo "switchyard: $new instructions per request"
if [ -n "${BASELINE:-}" ]; then
  base=$(per_request "$BASELINE")
  echo "baseline:   $base instructions per request"
  awk -v n="$new" -v b="$base" 'BEGIN { printf "switchyard/baseline = %.3f\n", n / b }'
fi
