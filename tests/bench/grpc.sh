#!/usr/bin/env bash
# gRPC unary calls per second, side by side in one run: straight to the
# backend, through Switchyard (`protocol = "h2"`) and through nginx
# `grpc_pass`, one worker each, the same closed-loop tonic client
# (CONCURRENCY calls at a time over 4 HTTP/2 connections). nginx's
# keepalive_requests are raised on both sides so that it does not close
# connections every 1,000 calls (which fails calls in flight).
# Prints calls/s per round and the median per-round ratios.
#
# Usage: tests/bench/grpc.sh [DURATION_SECONDS] [CONCURRENCY] [ROUNDS]
# Needs: nginx (Debian: apt-get install nginx-light).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/lib.sh
need nginx
BACKEND_PORT=3390; SY_PORT=8390; SY_ADMIN=9390; NGINX_PORT=8391

cargo build --release -q -p switchyard -p switchyard-tests --bin switchyard --bin proto-bench
$PIN_LOAD target/release/proto-bench grpc-serve "127.0.0.1:$BACKEND_PORT" &
PIDS+=($!)
switchyard_config "$WORK/switchyard.toml" $SY_PORT $SY_ADMIN $BACKEND_PORT 'protocol = "h2"'
start_switchyard "$WORK/switchyard.toml"
start_nginx_with grpc <<CONF
  upstream grpc_backend { server 127.0.0.1:$BACKEND_PORT; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGINX_PORT http2;
    http2_max_concurrent_streams 1000;
    keepalive_requests 1000000;
    location / { grpc_pass grpc://grpc_backend; }
  }
CONF
sleep 1

grpc_measure() { $PIN_LOAD target/release/proto-bench grpc-load "http://127.0.0.1:$1" "$CONNS" "$DURATION"; }
MEASURE=grpc_measure three_way calls/s "$BACKEND_PORT" "$SY_PORT" "$NGINX_PORT"
