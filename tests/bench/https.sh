#!/usr/bin/env bash
# HTTPS side by side, in one run: Switchyard and nginx terminating TLS 1.3
# with the same ECDSA P-256 certificate, one worker each, keep-alive to the
# same backend, the same wrk load.
#   keep-alive:  wrk's connections stay open (nginx's keepalive_requests is
#                raised so that it does not reconnect every 1000 requests)
#   resumed:     "Connection: close": a new connection per request, which
#                wrk resumes with a session ticket (abbreviated handshake)
#   full:        the same against a second pair with resumption off
#                (session_tickets = false; nginx: ssl_session_tickets off,
#                ssl_session_cache off): a full handshake per request
# Prints requests/s per round and the median ratios.
#
# Usage: tests/bench/https.sh [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]
#   PHASES="keep-alive full" runs only those phases (default: all three).
# Needs: wrk, nginx and openssl (Debian: apt-get install wrk nginx-light openssl).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/lib.sh
need wrk nginx openssl
BACKEND_PORT=3290
SY_PORT=8290; SY_ADMIN=9290; SY_TLS=8293; NGINX_PORT=8291
SY_FULL_PORT=8294; SY_FULL_ADMIN=9294; SY_FULL_TLS=8295; NGINX_FULL_PORT=8296

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -keyout "$WORK/site.key" -out "$WORK/site.crt" -subj /CN=bench.test \
  -addext subjectAltName=DNS:bench.test,IP:127.0.0.1 2>/dev/null
chmod 644 "$WORK/site.key"

# A Switchyard with an HTTPS listener; [tls] goes before the routes (tables
# after [upstreams.app] would nest in it).
https_switchyard() { # FILE PORT ADMIN TLS_PORT SESSION_TICKETS
  switchyard_config "$1" "$2" "$3" $BACKEND_PORT
  sed -i "/^\[\[routes\]\]/i [tls]\naddress = \"127.0.0.1:$4\"\nsession_tickets = $5\ncertificates = [{ cert = \"$WORK/site.crt\", key = \"$WORK/site.key\" }]" "$1"
  start_switchyard "$1"
}
https_nginx() { # PORT EXTRA
  NGINX_LISTEN="ssl" \
  NGINX_SERVER="ssl_certificate $WORK/site.crt; ssl_certificate_key $WORK/site.key; ssl_protocols TLSv1.2 TLSv1.3; keepalive_requests 1000000; $2" \
    start_nginx "$1" $BACKEND_PORT
}

build
start_backend $BACKEND_PORT
https_switchyard "$WORK/switchyard.toml" $SY_PORT $SY_ADMIN $SY_TLS true
https_switchyard "$WORK/full.toml" $SY_FULL_PORT $SY_FULL_ADMIN $SY_FULL_TLS false
https_nginx $NGINX_PORT ""
https_nginx $NGINX_FULL_PORT "ssl_session_tickets off; ssl_session_cache off;"
wait_up $BACKEND_PORT $SY_PORT $SY_FULL_PORT
for port in $SY_TLS $SY_FULL_TLS $NGINX_PORT $NGINX_FULL_PORT; do
  for _ in $(seq 100); do curl -kfs "https://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
done

SCHEME=https
summary=()
phase() { # NAME SWITCHYARD_PORT NGINX_PORT
  [[ " ${PHASES:-keep-alive resumed full} " == *" $1 "* ]] || return 0
  unset RPS; declare -gA RPS
  echo "== $1 =="
  run_rounds "$ROUNDS" "switchyard:$2" "nginx:$3"
  local paired; paired=$(ratios switchyard nginx)
  summary+=("$1: median req/s switchyard $(median "${RPS[switchyard]}"), nginx $(median "${RPS[nginx]}"); switchyard/nginx per round ${paired}(median $(median "$paired"))")
}
phase keep-alive $SY_TLS $NGINX_PORT
WRK_HEADER="Connection: close"
phase resumed $SY_TLS $NGINX_PORT
phase full $SY_FULL_TLS $NGINX_FULL_PORT

handshakes() { # ADMIN_PORT RESUMED
  curl -fs "http://127.0.0.1:$1/metrics" |
    awk -v r="resumed=\"$2\"" '/^switchyard_tls_handshakes_total/ && index($0, r) {s += $2} END {print s + 0}'
}
printf '%s\n' "${summary[@]}"
echo "handshakes at the resuming Switchyard: $(handshakes $SY_ADMIN yes) resumed, $(handshakes $SY_ADMIN no) full"
echo "handshakes at the non-resuming one:    $(handshakes $SY_FULL_ADMIN yes) resumed, $(handshakes $SY_FULL_ADMIN no) full"
