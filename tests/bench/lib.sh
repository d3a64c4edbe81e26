# Shared by the benchmark scripts: build, start, measure with wrk, medians.
# Sourced, not run, from the repository root; reads the script's arguments
# [DURATION_SECONDS] [CONNECTIONS] [ROUNDS] and makes a scratch directory.

DURATION=${1:-10}; CONNS=${2:-32}; ROUNDS=${3:-3}
WORK=$(mktemp -d)

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

# CPU 0: load generator and backend; CPU 1: the proxy under test.
PIN_PROXY="taskset -c 1"
PIN_LOAD="taskset -c 0"
[ "$(nproc)" -ge 2 ] || { PIN_PROXY=""; PIN_LOAD=""; }

need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "missing $tool (Debian: apt-get install $tool)" >&2; exit 2; }
  done
}

build() {
  cargo build --release -q -p switchyard -p switchyard-tests --bin switchyard --bin bench-backend
}

start_backend() { # PORT
  $PIN_LOAD target/release/bench-backend "127.0.0.1:$1" 64 2>/dev/null &
  PIDS+=($!)
}

wait_up() { # PORT...
  for port in "$@"; do
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
  done
}

# A Switchyard config with one worker and one backend; extra TOML appended.
switchyard_config() { # FILE PORT ADMIN_PORT BACKEND_PORT [EXTRA]
  cat > "$1" <<CONF
[runtime]
worker_threads = 1
[log]
level = "warn"
[listen]
address = "127.0.0.1:$2"
[admin]
address = "127.0.0.1:$3"
[[routes]]
upstream = "app"
[upstreams.app]
strategy = "round_robin"
backends = [{ address = "127.0.0.1:$4" }]
${5:-}
CONF
}

start_switchyard() { # CONFIG [BINARY]
  $PIN_PROXY "${2:-target/release/switchyard}" run --config "$1" 2>>"$WORK/switchyard.log" &
  PIDS+=($!)
}

# nginx with one worker and keep-alive to the backend, like Switchyard's
# benchmark config; EXTRA_HTTP and EXTRA_LOCATION are added to the http block
# and the location.
start_nginx() { # PORT BACKEND_PORT [EXTRA_HTTP] [EXTRA_LOCATION]
  local dir="$WORK/nginx-$1"
  mkdir -p "$dir"
  cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$2; keepalive 64; }
  ${3:-}
  server {
    listen 127.0.0.1:$1 ${NGINX_LISTEN:-};
    ${NGINX_SERVER:-}
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      ${4:-}
    }
  }
}
CONF
  $PIN_PROXY nginx -p "$dir" -c "$dir/nginx.conf" &
  PIDS+=($!)
}

# nginx on a config of our own: the http block's content comes from
# stdin (upstreams and servers), around it the same settings as above.
start_nginx_with() { # NAME
  local dir="$WORK/nginx-$1"
  mkdir -p "$dir"
  { printf 'worker_processes 1;\ndaemon off;\npid %s/nginx.pid;\nerror_log %s/error.log warn;\n' "$dir" "$dir"
    printf 'events { worker_connections 4096; }\nhttp {\n  access_log off;\n'
    cat
    printf '}\n'; } > "$dir/nginx.conf"
  $PIN_PROXY nginx -p "$dir" -c "$dir/nginx.conf" &
  PIDS+=($!)
}

# Prints "REQ_PER_S P99" for one wrk run against PORT; SCHEME (default
# http) and WRK_HEADER (one request header, such as "Connection: close")
# apply.
measure() {
  local out
  out=$($PIN_LOAD wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency ${WRK_HEADER:+-H "$WRK_HEADER"} "${SCHEME:-http}://127.0.0.1:$1/" 2>&1)
  echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '$1=="99%" {print $2}' <<<"$out")"
}

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Runs ROUNDS rounds of wrk against each NAME:PORT in turn, printing a line
# per run and collecting the req/s per name in the associative array RPS.
# Even rounds take the targets in reverse order, so that no target always
# runs in the same position (right after another one, say).
declare -A RPS
run_rounds() { # ROUNDS NAME:PORT...
  local rounds=$1; shift
  local forward=("$@") reverse=() i
  for ((i = $# - 1; i >= 0; i--)); do reverse+=("${forward[$i]}"); done
  printf '%-12s %5s %12s %10s\n' target round "${RATE_LABEL:-req/s}" "${SECOND_LABEL:-p99}"
  for round in $(seq "$rounds"); do
    local order=("${forward[@]}")
    ((round % 2 == 0)) && order=("${reverse[@]}")
    for target in "${order[@]}"; do
      local name=${target%%:*} port=${target##*:} rps p99
      read -r rps p99 < <(${MEASURE:-measure} "$port")
      RPS[$name]="${RPS[$name]:-} $rps"
      printf '%-12s %5s %12s %10s\n' "$name" "$round" "$rps" "$p99"
    done
  done
  echo
}

# Per-round ratios of NAME_A's req/s to NAME_B's, space-separated. Rounds run
# back to back, so each pair saw the same machine load: on a noisy machine
# the median of these is the steadier figure.
ratios() { # NAME_A NAME_B
  paste <(tr ' ' '\n' <<<"${RPS[$1]}" | grep -v '^$') <(tr ' ' '\n' <<<"${RPS[$2]}" | grep -v '^$') |
    awk '{ printf "%.3f ", $1/$2 }'
}

# Rounds against direct:PORT, switchyard:PORT and nginx:PORT with MEASURE,
# then the medians and the per-round ratios of Switchyard to each.
three_way() { # UNIT DIRECT_PORT SWITCHYARD_PORT NGINX_PORT
  RATE_LABEL=$1 SECOND_LABEL=errors \
    run_rounds "$ROUNDS" "direct:$2" "switchyard:$3" "nginx:$4"
  for name in direct switchyard nginx; do
    echo "$name median $1: $(median "${RPS[$name]}")"
  done
  for other in direct nginx; do
    echo "switchyard/$other per-round: $(ratios switchyard $other)-> median $(median "$(ratios switchyard $other)")"
  done
}
