#!/usr/bin/env bash
# Is `switchyard bench` as fast as wrk? Both with one thread, closed model,
# the same number of keep-alive connections and a fixed GET against the same
# single-threaded backend, rounds interleaved; the load generator runs on one
# core, the backend on the other. Prints requests/s per round and the median
# ratio switchyard/wrk.
#
# Usage: tests/bench/loadgen.sh [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]
# Needs: wrk; the plugins built (cargo build --release --target wasm32-wasip2
# in plugins/).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/lib.sh
need wrk
BACKEND_PORT=3295
PLUGIN="$PWD/plugins/target/wasm32-wasip2/release/fixed_request.wasm"
[ -f "$PLUGIN" ] || { echo "build the plugins first" >&2; exit 2; }

build
start_backend $BACKEND_PORT
wait_up $BACKEND_PORT

declare -A RATES
printf '%-12s %5s %12s %10s\n' tool round req/s p99
for round in $(seq "$ROUNDS"); do
  read -r rps p99 < <(PIN_LOAD="$PIN_PROXY" measure $BACKEND_PORT)
  RATES[wrk]="${RATES[wrk]:-} $rps"
  printf '%-12s %5s %12s %10s\n' wrk "$round" "$rps" "$p99"
  $PIN_PROXY target/release/switchyard bench "http://127.0.0.1:$BACKEND_PORT/" \
    --plugin "$PLUGIN" --concurrency "$CONNS" --duration "${DURATION}s" --threads 1 \
    --quiet --csv "$WORK/bench.csv" >/dev/null
  read -r rps p99 < <(awk -F, '$1=="all" {printf "%.2f %.2fms\n", $6, $10}' "$WORK/bench.csv")
  RATES[switchyard]="${RATES[switchyard]:-} $rps"
  printf '%-12s %5s %12s %10s\n' switchyard "$round" "$rps" "$p99"
done
echo
wrk_rps=$(median "${RATES[wrk]}"); sy_rps=$(median "${RATES[switchyard]}")
echo "median req/s: wrk $wrk_rps, switchyard bench $sy_rps"
awk -v a="$sy_rps" -v b="$wrk_rps" 'BEGIN { printf "switchyard/wrk = %.3f\n", a/b }'
