#!/usr/bin/env bash
# Response compression side by side, in one run: a 100 KB JSON document
# (bench-backend's `json` body) requested with `Accept-Encoding: gzip`
# through Switchyard and through nginx (`gzip on`), the same gzip level
# (5), one worker each:
#   - on the fly: every response compressed as it passes;
#   - from cache: Switchyard stores the gzip variant and serves it as
#     stored; nginx's proxy_cache stores the backend's identity response
#     and its gzip filter compresses every hit again (nginx cannot cache a
#     variant it compressed itself).
# Prints requests/s and p99 per round and the median ratios.
#
# Usage: tests/bench/compress.sh [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]
# Needs: wrk and nginx (Debian: apt-get install wrk nginx-light).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/lib.sh
need wrk nginx
BACKEND_PORT=3395; SY_PORT=8395; SY_CACHE_PORT=8396; NGINX_PORT=8397; NGINX_CACHE_PORT=8398
SIZE=102400

build
$PIN_LOAD target/release/bench-backend "127.0.0.1:$BACKEND_PORT" $SIZE json 2>/dev/null &
PIDS+=($!)
compression="
[compression]
enabled = true
gzip_level = 5"
switchyard_config "$WORK/fly.toml" $SY_PORT 9395 $BACKEND_PORT "$compression"
switchyard_config "$WORK/cache.toml" $SY_CACHE_PORT 9396 $BACKEND_PORT "$compression
[cache]
enabled = true"
start_switchyard "$WORK/fly.toml"
start_switchyard "$WORK/cache.toml"
gzip="gzip on; gzip_comp_level 5; gzip_types application/json; gzip_min_length 1024; gzip_proxied any; gzip_vary on;"
start_nginx $NGINX_PORT $BACKEND_PORT "$gzip"
mkdir -p "$WORK/nginx-cache" && chmod 755 "$WORK" && chmod 777 "$WORK/nginx-cache"
start_nginx $NGINX_CACHE_PORT $BACKEND_PORT \
  "$gzip proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=hot:10m max_size=100m use_temp_path=off;" \
  "proxy_cache hot; add_header X-Cache \$upstream_cache_status;"
wait_up $BACKEND_PORT $SY_PORT $SY_CACHE_PORT $NGINX_PORT $NGINX_CACHE_PORT

# Each answers gzip, decodes to the backend's document, and the caches hit.
direct=$(curl -fs "http://127.0.0.1:$BACKEND_PORT/" | sha256sum)
for port in $SY_PORT $SY_CACHE_PORT $NGINX_PORT $NGINX_CACHE_PORT; do
  curl -fs -H 'Accept-Encoding: gzip' "http://127.0.0.1:$port/" >/dev/null
  headers=$(curl -fs -D - -o "$WORK/body.gz" -H 'Accept-Encoding: gzip' "http://127.0.0.1:$port/")
  grep -qi '^content-encoding: gzip' <<<"$headers" || { echo "port $port does not compress" >&2; exit 1; }
  [ "$(gzip -dc "$WORK/body.gz" | sha256sum)" = "$direct" ] || { echo "port $port: body differs" >&2; exit 1; }
  echo "port $port: $(stat -c %s "$WORK/body.gz") gzip bytes for $SIZE"
done
curl -fsi -H 'Accept-Encoding: gzip' "http://127.0.0.1:$SY_CACHE_PORT/" | grep -qi '^cache-status: .*hit' ||
  { echo "switchyard is not caching" >&2; exit 1; }
curl -fsi -H 'Accept-Encoding: gzip' "http://127.0.0.1:$NGINX_CACHE_PORT/" | grep -qi '^x-cache: HIT' ||
  { echo "nginx is not caching" >&2; exit 1; }

WRK_HEADER="Accept-Encoding: gzip" run_rounds "$ROUNDS" \
  sy-fly:$SY_PORT nginx-fly:$NGINX_PORT sy-cache:$SY_CACHE_PORT nginx-cache:$NGINX_CACHE_PORT

for pair in "sy-fly nginx-fly on-the-fly" "sy-cache nginx-cache from-cache"; do
  read -r a b label <<<"$pair"
  s=$(median "${RPS[$a]}"); n=$(median "${RPS[$b]}")
  echo "$label median req/s: switchyard $s, nginx $n; per-round ratios: $(ratios "$a" "$b")"
  awk -v s="$s" -v n="$n" -v l="$label" 'BEGIN { printf "switchyard/nginx (%s, gzip 5, 100 KB JSON) = %.2f\n", l, s/n }'
done
