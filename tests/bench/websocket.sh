#!/usr/bin/env bash
# WebSocket echo messages per second, side by side in one run: straight to
# a tokio-tungstenite echo backend, through Switchyard and through nginx,
# one worker each; CONNECTIONS clients each send a 64-byte message and wait
# for its echo, in a loop.
# Prints messages/s per round and the median per-round ratios.
#
# Usage: tests/bench/websocket.sh [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]
# Needs: nginx (Debian: apt-get install nginx-light).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/lib.sh
need nginx
BACKEND_PORT=3391; SY_PORT=8392; SY_ADMIN=9392; NGINX_PORT=8393

cargo build --release -q -p switchyard -p switchyard-tests --bin switchyard --bin proto-bench
$PIN_LOAD target/release/proto-bench ws-serve "127.0.0.1:$BACKEND_PORT" &
PIDS+=($!)
switchyard_config "$WORK/switchyard.toml" $SY_PORT $SY_ADMIN $BACKEND_PORT
start_switchyard "$WORK/switchyard.toml"
start_nginx_with ws <<CONF
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://127.0.0.1:$BACKEND_PORT;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 1h;
    }
  }
CONF
sleep 1

ws_measure() { $PIN_LOAD target/release/proto-bench ws-load "ws://127.0.0.1:$1/" "$CONNS" "$DURATION"; }
MEASURE=ws_measure three_way msgs/s "$BACKEND_PORT" "$SY_PORT" "$NGINX_PORT"
