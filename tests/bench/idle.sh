#!/usr/bin/env bash
# Memory held by idle keep-alive client connections, side by side with
# nginx (one worker each), in one run:
#   - KB per idle connection: RSS growth while N connections, each having
#     made one request, sit idle, divided by N;
#   - RSS after close: once they are all closed, how far RSS stays above
#     where it was before they opened (two waves, to show it plateaus).
#
# Usage: tests/bench/idle.sh [CONNECTIONS] [WAVES]
#   BASELINE=path/to/an/older/switchyard adds that build.
# Needs: nginx and python3 (Debian: apt-get install nginx-light).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-4000}; WAVES=${2:-2}
set -- 10 32 1
source tests/bench/lib.sh
need nginx python3
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((N * 2 + 100)) ] || { echo "open-file limit $(ulimit -n) too low for $N connections" >&2; exit 2; }
BACKEND_PORT=3194; SY_PORT=8194; SY_ADMIN=9194; NGINX_PORT=8195; BASE_PORT=8196; BASE_ADMIN=9196

build
start_backend $BACKEND_PORT
switchyard_config "$WORK/sy.toml" $SY_PORT $SY_ADMIN $BACKEND_PORT
start_switchyard "$WORK/sy.toml"
sy_pid=${PIDS[-1]}
start_nginx $NGINX_PORT $BACKEND_PORT
targets=("switchyard:$SY_PORT")
ports=($SY_PORT $NGINX_PORT)
if [ -n "${BASELINE:-}" ]; then
  switchyard_config "$WORK/base.toml" $BASE_PORT $BASE_ADMIN $BACKEND_PORT
  start_switchyard "$WORK/base.toml" "$BASELINE"
  base_pid=${PIDS[-1]}
  targets+=("baseline:$BASE_PORT")
  ports+=($BASE_PORT)
fi
wait_up $BACKEND_PORT "${ports[@]}"
sleep 1
nginx_worker=$(pgrep -f "nginx: worker process" -P "$(cat "$WORK/nginx-$NGINX_PORT/nginx.pid")")
targets+=("nginx:$NGINX_PORT")

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# Opens N connections to PORT, one request each, then holds them until
# told to close: prints "open" when all are idle and "closed" when done.
cat > "$WORK/idle.py" <<'PY'
import asyncio, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
async def one():
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    head = await r.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await r.readexactly(length)
    return w
async def main():
    conns = []
    for i in range(0, n, 200):
        conns += await asyncio.gather(*(one() for _ in range(min(200, n - i))))
    print("open", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for w in conns:
        w.close()
    await asyncio.gather(*(w.wait_closed() for w in conns), return_exceptions=True)
    print("closed", flush=True)
asyncio.run(main())
PY

# Waits until PID's RSS stops falling (1 s apart) or 10 s pass, after
# giving idle connections time to free their buffers (Switchyard does after
# 1 s idle).
settle() {
  local last now
  sleep 2
  last=$(rss_kb "$1")
  for _ in $(seq 10); do
    sleep 1; now=$(rss_kb "$1")
    [ "$now" -ge "$last" ] && break
    last=$now
  done
}

printf '%-11s %5s %10s %12s %12s %14s\n' target wave start_kb idle_kb KB/conn after_close_kb
for target in "${targets[@]}"; do
  name=${target%%:*}; port=${target##*:}
  case $name in switchyard) pid=$sy_pid ;; baseline) pid=$base_pid ;; nginx) pid=$nginx_worker ;; esac
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/" >/dev/null; done
  settle "$pid"
  start=$(rss_kb "$pid")
  for wave in $(seq "$WAVES"); do
    coproc CLIENT { python3 "$WORK/idle.py" "$port" "$N"; }
    read -r _ <&"${CLIENT[0]}"
    settle "$pid"
    idle=$(rss_kb "$pid")
    echo >&"${CLIENT[1]}"
    read -r _ <&"${CLIENT[0]}"
    wait "$CLIENT_PID" 2>/dev/null || true
    sleep 1
    settle "$pid"
    after=$(rss_kb "$pid")
    per=$(awk -v a="$idle" -v b="$start" -v n="$N" 'BEGIN { printf "%.2f", (a - b) / n }')
    printf '%-11s %5s %10s %12s %12s %14s\n' "$name" "$wave" "$start" "$idle" "$per" "$after"
  done
  awk -v a="$after" -v b="$start" -v name="$name" \
    'BEGIN { printf "%s: RSS after close is %.1f%% above the start\n", name, 100 * (a - b) / b }'
done
