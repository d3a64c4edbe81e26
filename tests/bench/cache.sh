#!/usr/bin/env bash
# The cache hit path side by side, in one run: a small cacheable response
# (the backend sends `Cache-Control: public, max-age=60`) served from
# Switchyard's cache and from nginx's proxy_cache, one worker each, after a
# warm-up request; the plain proxy path of each for reference. Prints
# requests/s and p99 per round and the median ratios.
#
# Usage: tests/bench/cache.sh [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]
# Needs: wrk and nginx (Debian: apt-get install wrk nginx-light).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/lib.sh
need wrk nginx
BACKEND_PORT=3390; SY_PORT=8390; NGINX_PORT=8391

build
start_backend $BACKEND_PORT
switchyard_config "$WORK/switchyard.toml" $SY_PORT 9390 $BACKEND_PORT "
[cache]
enabled = true"
start_switchyard "$WORK/switchyard.toml"
# nginx's worker may run as an unprivileged user: let it write its cache.
mkdir -p "$WORK/nginx-cache" && chmod 755 "$WORK" && chmod 777 "$WORK/nginx-cache"
start_nginx $NGINX_PORT $BACKEND_PORT \
  "proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=hot:10m max_size=100m use_temp_path=off;" \
  "proxy_cache hot; add_header X-Cache \$upstream_cache_status;"
wait_up $BACKEND_PORT $SY_PORT $NGINX_PORT
for port in $SY_PORT $NGINX_PORT; do curl -fs "http://127.0.0.1:$port/" >/dev/null; done
curl -fsi "http://127.0.0.1:$SY_PORT/" | grep -i '^cache-status' || { echo "switchyard is not caching" >&2; exit 1; }
curl -fsi "http://127.0.0.1:$NGINX_PORT/" | grep -i '^x-cache: HIT' || { echo "nginx is not caching" >&2; exit 1; }

run_rounds "$ROUNDS" switchyard-hit:$SY_PORT nginx-hit:$NGINX_PORT

s=$(median "${RPS[switchyard-hit]}"); n=$(median "${RPS[nginx-hit]}")
echo "median req/s from cache: switchyard $s, nginx $n; per-round ratios: $(ratios switchyard-hit nginx-hit)"
awk -v s="$s" -v n="$n" 'BEGIN { printf "switchyard/nginx (cache hits) = %.2f\n", s/n }'
