#!/usr/bin/env bash
# What a rate limit costs on the request path, in one run: the same
# Switchyard config without a limit, with a local limit, and with a limit
# shared through a local redis-server, each keyed by client IP and set so
# high that nothing is refused (every request does the full check). One
# worker each; prints requests/s and p99 per round and the ratios to the
# unlimited proxy.
#
# Usage: tests/bench/ratelimit.sh [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]
# Needs: wrk and redis-server (Debian: apt-get install wrk redis-server).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/lib.sh
need wrk redis-server redis-cli
BACKEND_PORT=3400; REDIS_PORT=6400
NONE_PORT=8400; LOCAL_PORT=8401; SHARED_PORT=8402

build
start_backend $BACKEND_PORT
$PIN_LOAD redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
PIDS+=($!)
limit() { # NAME [REDIS_URL]
  printf '[[rate_limits]]\nname = "%s"\nkey = ["client_ip"]\nrate = 100000000\n' "$1"
  [ -n "${2:-}" ] && printf 'redis_url = "%s"\nredis_timeout = "1s"\n' "$2"
  return 0
}
switchyard_config "$WORK/none.toml" $NONE_PORT 9400 $BACKEND_PORT
switchyard_config "$WORK/local.toml" $LOCAL_PORT 9401 $BACKEND_PORT "$(limit local)"
switchyard_config "$WORK/shared.toml" $SHARED_PORT 9402 $BACKEND_PORT \
  "$(limit shared "redis://127.0.0.1:$REDIS_PORT/")"
for c in none local shared; do start_switchyard "$WORK/$c.toml"; done
wait_up $BACKEND_PORT $NONE_PORT $LOCAL_PORT $SHARED_PORT
for port in $NONE_PORT $LOCAL_PORT $SHARED_PORT; do curl -fs "http://127.0.0.1:$port/" >/dev/null; done
redis-cli -p $REDIS_PORT --scan --pattern 'switchyard:rl:*' | grep -q . ||
  { echo "the shared limit is not using Redis" >&2; exit 1; }

run_rounds "$ROUNDS" none:$NONE_PORT local:$LOCAL_PORT shared:$SHARED_PORT

for name in local shared; do
  echo "$name/none per round: $(ratios "$name" none) (median of req/s: $(median "${RPS[$name]}") vs $(median "${RPS[none]}"))"
done
grep -i "unavailable" "$WORK/switchyard.log" && { echo "Redis errors during the run" >&2; exit 1; }
exit 0
