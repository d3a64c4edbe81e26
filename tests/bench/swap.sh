#!/usr/bin/env bash
# How long from a plugin's new file landing to the new version serving, for
# the Rust, Python and JavaScript example alert rules (`switchyard plugin
# new`). A proxy with a compile cache of its own loads version A (so the
# cache holds A's functions, as it would in production); version B (A with
# its bound edited) is renamed over it, and the time is read from the
# proxy's own log: the timestamp of its "swapped in" line (written as the
# new version is stored) less the moment of the rename. (Polling the admin
# API every 10 ms instead cost a core's worth of process spawns, which the
# compile, spread over the cores, then waited for.) Two ways, each in its
# own proxy:
#   winch-first  the default (`baseline_first = true`): B serves from a
#                Winch build; also timed: until its Cranelift build serves
#                (`compiler` turns `cranelift`);
#   cranelift    `baseline_first = false`: B serves once Cranelift compiled
#                it (reusing A's functions from the cache).
# Prints each swap's time and the medians, and each example's size, its
# load time with an empty cache (`plugin test`'s load_ms) and its evaluate
# call time with each compiler.
#
# Usage: tests/bench/swap.sh [ROUNDS]
# Needs: componentize-py and componentize-js (tests/install-deps.sh installs
# them under ~/.cache/switchyard), the wasm32-wasip2 target.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
export PATH="$HOME/.cache/switchyard/py-venv/bin:$PATH"
command -v componentize-py >/dev/null || { echo "missing componentize-py: run tests/install-deps.sh" >&2; exit 2; }
JS_MODULES="$HOME/.cache/switchyard/js/node_modules"
[ -d "$JS_MODULES/@bytecodealliance/componentize-js" ] || { echo "missing componentize-js: run tests/install-deps.sh" >&2; exit 2; }
cargo build --release -q -p switchyard --bin switchyard
SY=$PWD/target/release/switchyard

# Two versions of each language's example: B's bound differs from A's.
build_rule() { # LANG DIR OUT
  if [ "$1" = rust ]; then
    (cd "$2" && CARGO_TARGET_DIR="$WORK/target" cargo build -q --release --target wasm32-wasip2)
    cp "$WORK/target/wasm32-wasip2/release/rule.wasm" "$3"
  elif [ "$1" = js ]; then
    [ -e "$2/node_modules" ] || ln -s "$JS_MODULES" "$2/node_modules"
    (cd "$2" && npm run -s build >/dev/null) && cp "$2/rule.wasm" "$3"
  else
    (cd "$2" && sh build.sh >/dev/null) && cp "$2/rule.wasm" "$3"
  fi
}
build_versions() { # LANG SOURCE FROM TO
  local dir="$WORK/$1/rule"
  "$SY" plugin new --kind alert-rule --lang "$1" "$dir" >/dev/null
  build_rule "$1" "$dir" "$WORK/$1/a.wasm"
  sed -i "s|$3|$4|" "$dir/$2"
  build_rule "$1" "$dir" "$WORK/$1/b.wasm"
}
build_versions rust src/lib.rs "as f64;" "as f64 * 2.0;"
build_versions python app.py 'float(CONFIG\["max_p99_ms"\])' 'float(CONFIG["max_p99_ms"]) * 2'
build_versions js app.js 'const bound = config.max_p99_ms;' 'const bound = config.max_p99_ms * 2;'

now_ms() { date +%s%3N; }
plugins() { curl -fs "http://127.0.0.1:$1/admin/plugins" | tr -d ' \n'; }
swaps() { plugins "$1" | grep -o '"swaps":[0-9]*' | head -1 | cut -d: -f2; }
# Milliseconds since the epoch at which LOG first said WHAT (waits for it,
# looking every 200 ms, up to 120 s).
logged_at() { # LOG WHAT
  local line
  for _ in $(seq 600); do
    line=$(grep -m1 "$2" "$1" || true)
    [ -n "$line" ] && { date -d "${line%% *}" +%s%3N; return; }
    sleep 0.2
  done
  echo "\"$2\" not logged within 120 s; the proxy said:" >&2; cat "$1" >&2; exit 1
}

declare -A TIMES
port=9400
for lang in rust python js; do
  size=$(stat -c %s "$WORK/$lang/a.wasm")
  printf '%-7s size %.1f MB\n' "$lang" "$(awk -v s="$size" 'BEGIN{print s/1e6}')"
  for compiler in cranelift winch; do
    # A compile cache of its own (under TMPDIR), so the load is a cold compile.
    mkdir -p "$WORK/$lang/tmp-$compiler"
    report=$(TMPDIR="$WORK/$lang/tmp-$compiler" "$SY" plugin test "$WORK/$lang/a.wasm" \
      --compiler "$compiler" --input "$WORK/$lang/rule/input.json")
    load=$(grep -o '"load_ms": [0-9.]*' <<<"$report" | awk '{print $2}')
    eval_us=$(tr -d '\n ' <<<"$report" | grep -o '"call":"evaluate","us":[0-9.]*' | cut -d: -f3)
    printf '%-7s %-9s load (cold compile) %7.0f ms, evaluate %6.0f us\n' "$lang" "$compiler" "$load" "$eval_us"
  done
  for round in $(seq "$ROUNDS"); do
  for mode in winch-first cranelift; do
    port=$((port + 2))
    dir="$WORK/$lang/run$round-$mode"; mkdir -p "$dir"
    cp "$WORK/$lang/a.wasm" "$dir/live.wasm"
    baseline_first=$([ "$mode" = winch-first ] && echo true || echo false)
    cat > "$dir/s.toml" <<CONF
[log]
level = "info"
[listen]
address = "127.0.0.1:$port"
[admin]
address = "127.0.0.1:$((port + 1))"
[[routes]]
upstream = "app"
[upstreams.app]
backends = [{ address = "127.0.0.1:9" }]
[plugin_runtime]
debounce = "100ms"
baseline_first = $baseline_first
cache_dir = "$dir/cache"
[[plugins]]
name = "rule"
kind = "alert-rule"
path = "$dir/live.wasm"
CONF
    "$SY" run --config "$dir/s.toml" 2>"$dir/proxy.log" &
    PIDS+=($!)
    for _ in $(seq 600); do [ -n "$(swaps $((port + 1)) 2>/dev/null)" ] && break; sleep 0.1; done
    sleep 2 # the start's own compile cache writes settle
    cp "$WORK/$lang/b.wasm" "$dir/incoming"
    start=$(now_ms)
    mv "$dir/incoming" "$dir/live.wasm"
    # Assigned on its own so that set -e stops the script if it was never logged.
    at=$(logged_at "$dir/proxy.log" "swapped in version")
    took=$(( at - start ))
    TIMES[$lang-$mode]="${TIMES[$lang-$mode]:-} $took"
    line="$lang round $round, $mode: new version serving $took ms after the file landed"
    if [ "$mode" = winch-first ]; then
      at=$(logged_at "$dir/proxy.log" "now runs its optimised build")
      opt=$(( at - start ))
      TIMES[$lang-optimised]="${TIMES[$lang-optimised]:-} $opt"
      line="$line, its Cranelift build serving after $opt ms"
    fi
    echo "$line"
    kill "${PIDS[-1]}"
  done
  done
done
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for lang in rust python js; do
  echo "$lang median (ms, debounce 100 ms included): winch-first $(median "${TIMES[$lang-winch-first]}") (${TIMES[$lang-winch-first]# }), its Cranelift build $(median "${TIMES[$lang-optimised]}"); cranelift $(median "${TIMES[$lang-cranelift]}") (${TIMES[$lang-cranelift]# })"
done
