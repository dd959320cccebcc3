#!/usr/bin/env bash
# Smoke test of the engines that scripts/real-engines.sh set up: one aggregated vLLM server on a
# free loopback port, /health, one /v1/completions request of max_tokens 8 with ignore_eos, a
# check that 8 tokens came back, then the server's whole process tree stopped (SIGTERM, then
# SIGKILL by PID for anything left) and checked gone. Prints the timings.
#
#   scripts/real-engines/smoke.sh        # after scripts/real-engines.sh setup
#
# Settings: DISAGG_ENGINES_DIR (as for real-engines.sh), SMOKE_HEALTH_TIMEOUT (300 s),
# SMOKE_KEEP_LOG (1 keeps the server log; it is printed on failure either way).
set -euo pipefail

DIR=${DISAGG_ENGINES_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/disagg/engines}
HEALTH_TIMEOUT=${SMOKE_HEALTH_TIMEOUT:-300}

die() { echo "smoke: $*" >&2; exit 1; }
say() { echo "smoke: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[[ -f "$DIR/env.sh" ]] || die "no $DIR/env.sh: run scripts/real-engines.sh setup first"
# shellcheck source=/dev/null
source "$DIR/env.sh"
[[ -x "$DISAGG_VLLM_BIN" && -d "$DISAGG_VLLM_MODEL" ]] || die "env.sh names a missing vllm or model: run scripts/real-engines.sh setup"

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
WORK=$(mktemp -d /tmp/real-engines-smoke.XXXXXX)
LOG=$WORK/vllm.log
SERVER_PID=""

# Every process below a PID, deepest last (read from /proc, so nothing outside the tree is named).
descendants() {
  local kid
  # shellcheck disable=SC2013 # the children files are space-separated PIDs
  for kid in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    echo "$kid"
    descendants "$kid"
  done
}

# PIDs still alive in the server's session (setsid made the server its leader).
session_pids() {
  [[ -n "$SERVER_PID" ]] || return 0
  ps -e -o pid=,sid= | awk -v s="$SERVER_PID" '$2 == s { print $1 }'
}

stop_server() {
  [[ -n "$SERVER_PID" ]] || return 0
  local tree t left p t0
  t0=$(now)
  tree=$( { echo "$SERVER_PID"; descendants "$SERVER_PID"; session_pids; } | sort -un)
  say "stopping the server: SIGTERM to $SERVER_PID (tree: $(echo "$tree" | tr '\n' ' '))"
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for ((t = 0; t < 300; t++)); do
    left=""
    for p in $tree $(session_pids); do [[ -d /proc/$p ]] && left+="$p "; done
    [[ -z "$left" ]] && break
    sleep 0.1
  done
  if [[ -n "$left" ]]; then
    say "still alive after 30 s: $left— SIGKILL to each"
    for p in $left; do kill -KILL "$p" 2>/dev/null || true; done
    sleep 1
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  left=""
  for p in $tree $(session_pids); do [[ -d /proc/$p ]] && left+="$p "; done
  [[ -z "$left" ]] || die "processes of the server are still alive: $left"
  say "server tree gone in $(since "$t0") s"
  SERVER_PID=""
}

on_exit() {
  local rc=$?
  stop_server || rc=1
  if ((rc != 0)) && [[ -f "$LOG" ]]; then
    say "server log (last 40 lines of $LOG):"
    tail -n 40 "$LOG" | sed 's/^/  | /' >&2
  fi
  [[ "${SMOKE_KEEP_LOG:-0}" == 1 || $rc != 0 ]] || rm -rf "$WORK"
  exit "$rc"
}
trap on_exit EXIT

cmd=("$DISAGG_VLLM_BIN" serve "$DISAGG_VLLM_MODEL" --served-model-name tiny-qwen3 --max-model-len 2048
  --dtype float32 --enforce-eager --host 127.0.0.1 --port "$PORT")
say "starting: VLLM_CPU_OMP_THREADS_BIND=auto ${cmd[*]}"
T0=$(now)
VLLM_CPU_OMP_THREADS_BIND=auto setsid "${cmd[@]}" > "$LOG" 2>&1 < /dev/null &
SERVER_PID=$!

for ((t = 0; ; t++)); do
  [[ -d /proc/$SERVER_PID ]] || die "the server exited before it was healthy"
  curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/health" && break
  ((t < HEALTH_TIMEOUT * 2)) || die "not healthy after $HEALTH_TIMEOUT s"
  sleep 0.5
done
HEALTH_S=$(since "$T0")
say "healthy after $HEALTH_S s (pid $SERVER_PID, port $PORT)"

body='{"model":"tiny-qwen3","prompt":"Hello, my name is","max_tokens":8,"ignore_eos":true,"temperature":0}'
out=$(curl -sf --max-time 120 -w '\n%{time_total}' "http://127.0.0.1:$PORT/v1/completions" \
  -H 'content-type: application/json' -d "$body") || die "the completion request failed"
latency=$(tail -n 1 <<< "$out")
json=$(sed '$d' <<< "$out")
tokens=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["usage"]["completion_tokens"])' "$json")
text=$(python3 -c 'import json, sys; print(repr(json.loads(sys.argv[1])["choices"][0]["text"]))' "$json")
[[ "$tokens" == 8 ]] || die "asked for 8 tokens, got $tokens: $json"
say "completion: 8 tokens in ${latency} s: $text"

stop_server
echo "smoke: ok  health_s=$HEALTH_S  request_s=$latency  completion_tokens=$tokens"
