#!/usr/bin/env bash
# Side-by-side proxy benchmark on this machine, in one run:
#   direct to the backend, through Switchyard, through nginx
# with one worker each, keep-alive to the backend, the same backend and the
# same wrk load. Prints requests/s and p99 per round and the median ratios.
#
# Usage: tests/bench/proxy.sh [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]
# Needs: wrk and nginx (Debian: apt-get install wrk nginx-light).
# BASELINE=path/to/an/older/switchyard adds that build as a fourth target,
# on the same config, to compare a change against the previous main.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/lib.sh
need wrk nginx
BACKEND_PORT=3190; SY_PORT=8190; SY_ADMIN=9190; NGINX_PORT=8191

build
start_backend $BACKEND_PORT
switchyard_config "$WORK/switchyard.toml" $SY_PORT $SY_ADMIN $BACKEND_PORT
start_switchyard "$WORK/switchyard.toml"

start_nginx $NGINX_PORT $BACKEND_PORT
wait_up $BACKEND_PORT $SY_PORT $NGINX_PORT
targets=(direct:$BACKEND_PORT switchyard:$SY_PORT nginx:$NGINX_PORT)
if [ -n "${BASELINE:-}" ]; then
  BASE_PORT=8192; BASE_ADMIN=9192
  switchyard_config "$WORK/baseline.toml" $BASE_PORT $BASE_ADMIN $BACKEND_PORT
  start_switchyard "$WORK/baseline.toml" "$BASELINE"
  wait_up $BASE_PORT
  targets+=(baseline:$BASE_PORT)
fi

run_rounds "$ROUNDS" "${targets[@]}"

d=$(median "${RPS[direct]}"); s=$(median "${RPS[switchyard]}"); n=$(median "${RPS[nginx]}")
echo "median req/s: direct $d, switchyard $s, nginx $n"
awk -v s="$s" -v n="$n" -v d="$d" 'BEGIN { printf "switchyard/nginx = %.2f, switchyard/direct = %.2f\n", s/n, s/d }'
paired=$(ratios switchyard nginx)
echo "switchyard/nginx per round: ${paired}(median $(median "$paired"))"
if [ -n "${BASELINE:-}" ]; then
  paired=$(ratios switchyard baseline)
  echo "median req/s: baseline $(median "${RPS[baseline]}")"
  echo "switchyard/baseline per round: ${paired}(median $(median "$paired"))"
fi
