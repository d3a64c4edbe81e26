#!/usr/bin/env bash
# Side-by-side proxy benchmark on this machine, in one run:
#   direct to the backend, through Switchyard, through nginx
# with one worker each, keep-alive to the backend, the same backend and the
# same wrk load. Prints requests/s and p99 per round and the median ratios.
#
# Usage: tests/bench/proxy.sh [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]
# Needs: wrk and nginx (Debian: apt-get install wrk nginx-light).
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

run_rounds "$ROUNDS" direct:$BACKEND_PORT switchyard:$SY_PORT nginx:$NGINX_PORT

d=$(median "${RPS[direct]}"); s=$(median "${RPS[switchyard]}"); n=$(median "${RPS[nginx]}")
echo "median req/s: direct $d, switchyard $s, nginx $n"
awk -v s="$s" -v n="$n" -v d="$d" 'BEGIN { printf "switchyard/nginx = %.2f, switchyard/direct = %.2f\n", s/n, s/d }'
# Rounds run back to back, so each round's pair saw the same machine load:
# on a noisy machine the median of the per-round ratios is the steadier figure.
paired=$(paste <(tr ' ' '\n' <<<"${RPS[switchyard]}" | grep -v '^$') \
  <(tr ' ' '\n' <<<"${RPS[nginx]}" | grep -v '^$') | awk '{ printf "%.3f ", $1/$2 }')
echo "switchyard/nginx per round: ${paired}(median $(median "$paired"))"
