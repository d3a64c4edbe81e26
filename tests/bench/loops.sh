#!/usr/bin/env bash
# Do the alert and optimizer loops disturb the data plane? Two Switchyards
# (one worker each) in front of the same backend: one with the five example
# alert rules and optimizers evaluated every second (so a snapshot, with its
# 18 trend lines and the queue's figures, is built every second), one
# without; wrk against each in turn.
# Prints requests/s per round, the median ratio with/without and the
# per-round ratios (the steadier figure on a noisy machine), and where the
# loops-on proxy spent its CPU: the request path's thread against every
# other thread (plugin calls run on the blocking pool, the epoch ticker on
# its own thread; the snapshot itself is built on the request path's
# thread: `perf record` shows its share).
#
# Usage: tests/bench/loops.sh [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]
# Needs: wrk; the plugins built (cargo build --release --target wasm32-wasip2
# in plugins/).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/lib.sh
need wrk
BACKEND_PORT=3290; OFF_PORT=8290; ON_PORT=8291
PLUGINS="$PWD/plugins/target/wasm32-wasip2/release"
[ -f "$PLUGINS/thresholds.wasm" ] || { echo "build the plugins first" >&2; exit 2; }

build
start_backend $BACKEND_PORT
switchyard_config "$WORK/off.toml" $OFF_PORT 9290 $BACKEND_PORT
switchyard_config "$WORK/on.toml" $ON_PORT 9291 $BACKEND_PORT "
[alerts]
interval = \"1s\"
[optimizer]
interval = \"1s\"
[[plugins]]
name = \"thresholds\"
kind = \"alert-rule\"
path = \"$PLUGINS/thresholds.wasm\"
[[plugins]]
name = \"slo\"
kind = \"alert-rule\"
path = \"$PLUGINS/slo_burn_rate.wasm\"
[[plugins]]
name = \"trend\"
kind = \"alert-rule\"
path = \"$PLUGINS/trend.wasm\"
[[plugins]]
name = \"gradient-limit\"
kind = \"optimizer\"
path = \"$PLUGINS/gradient_limit.wasm\"
config = { initial_limit = 5000, max_limit = 10000 }
[[plugins]]
name = \"latency-weights\"
kind = \"optimizer\"
path = \"$PLUGINS/latency_weights.wasm\""
start_switchyard "$WORK/off.toml"
start_switchyard "$WORK/on.toml"
ON_PID=${PIDS[-1]}
wait_up $BACKEND_PORT $OFF_PORT $ON_PORT

run_rounds "$ROUNDS" off:$OFF_PORT on:$ON_PORT

off=$(median "${RPS[off]}"); on=$(median "${RPS[on]}")
echo "median req/s: loops off $off, loops on $on"
awk -v a="$on" -v b="$off" 'BEGIN { printf "on/off = %.3f\n", a/b }'
echo "on/off per-round: $(ratios on off)-> median $(median "$(ratios on off)")"

# CPU ticks (user + system) of each thread of the loops-on proxy: the
# thread that runs the most is the request path's.
for task in /proc/"$ON_PID"/task/*; do
  sed 's/^.*) //' "$task/stat" | awk '{ print $12 + $13 }'
done | sort -g | awk -v hz="$(getconf CLK_TCK)" '{ t[NR] = $1; sum += $1 } END {
  main = t[NR]; other = sum - main
  printf "loops-on proxy CPU: request path %.2f s, other threads %.2f s (%.2f%% of the total)\n",
    main / hz, other / hz, 100 * other / sum }'
