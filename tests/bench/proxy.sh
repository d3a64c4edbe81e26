#!/usr/bin/env bash
# Side-by-side proxy benchmark on this machine, in one run:
#   direct to the backend, through Switchyard, through nginx
# with one worker each, keep-alive to the backend, the same backend and the
# same wrk load. Prints requests/s and p99 per target and the ratios.
#
# Usage: tests/bench/proxy.sh [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]
# Needs: wrk and nginx (Debian: apt-get install wrk nginx-light).
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${1:-10}
CONNS=${2:-32}
ROUNDS=${3:-3}
BACKEND_PORT=3190
SY_PORT=8190
SY_ADMIN=9190
NGINX_PORT=8191

for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install wrk nginx-light" >&2; exit 2; }
done

cargo build --release -q -p switchyard -p switchyard-tests --bin switchyard --bin bench-backend
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

# CPU 0: load generator and backend; CPU 1: the proxy under test.
PIN_PROXY="taskset -c 1"
PIN_LOAD="taskset -c 0"
[ "$(nproc)" -ge 2 ] || { PIN_PROXY=""; PIN_LOAD=""; }

$PIN_LOAD target/release/bench-backend 127.0.0.1:$BACKEND_PORT 64 2>/dev/null &
PIDS+=($!)

cat > "$WORK/switchyard.toml" <<CONF
[runtime]
worker_threads = 1
[log]
level = "warn"
[listen]
address = "127.0.0.1:$SY_PORT"
[admin]
address = "127.0.0.1:$SY_ADMIN"
[[routes]]
upstream = "app"
[upstreams.app]
strategy = "round_robin"
backends = [{ address = "127.0.0.1:$BACKEND_PORT" }]
CONF
$PIN_PROXY target/release/switchyard run --config "$WORK/switchyard.toml" 2>"$WORK/switchyard.log" &
PIDS+=($!)

mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
CONF
$PIN_PROXY nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
PIDS+=($!)

for port in $BACKEND_PORT $SY_PORT $NGINX_PORT; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
done

# wrk prints "Requests/sec: N" and, with --latency, "99% X".
measure() {
  local out rps p99
  out=$($PIN_LOAD wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$1/" 2>&1)
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  echo "$rps $p99"
}

declare -A RPS
printf '%-12s %5s %12s %10s\n' target round req/s p99
for round in $(seq "$ROUNDS"); do
  for target in direct:$BACKEND_PORT switchyard:$SY_PORT nginx:$NGINX_PORT; do
    name=${target%%:*}; port=${target##*:}
    read -r rps p99 < <(measure "$port")
    RPS[$name]="${RPS[$name]:-} $rps"
    printf '%-12s %5s %12s %10s\n' "$name" "$round" "$rps" "$p99"
  done
done

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
d=$(median "${RPS[direct]}"); s=$(median "${RPS[switchyard]}"); n=$(median "${RPS[nginx]}")
echo
echo "median req/s: direct $d, switchyard $s, nginx $n"
awk -v s="$s" -v n="$n" -v d="$d" 'BEGIN { printf "switchyard/nginx = %.2f, switchyard/direct = %.2f\n", s/n, s/d }'
