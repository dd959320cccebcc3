#!/usr/bin/env bash
# Drive two `disagg sim` workers through the PyPI routers of vLLM and SGLang, end to end:
# vllm-router (kv_transfer_params hand-off) and sglang-router/smg (bootstrap room hand-off).
# Checks that a streamed completion ends in [DONE], a chat completion answers, and that the
# decode worker never prefilled (the hand-off was used). Loopback only; everything it starts
# is stopped by PID on exit.
#
# Usage: bench/peer-routers-smoke.sh [path/to/disagg]   (default: target/release/disagg)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DISAGG=${1:-target/release/disagg}
VENV=${VENV:-.venv-routers}
[[ -x "$DISAGG" ]] || cargo build --release -q -p disagg
if [[ ! -x "$VENV/bin/vllm-router" || ! -x "$VENV/bin/smg" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q vllm-router sglang-router
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
MODEL="$WORK/model"   # a local path, so routers that load a tokenizer only warn
mkdir -p "$MODEL"

sim() { # role protocol name; the bound address lands in $WORK/name.addr
  "$DISAGG" sim --port 0 --role "$1" --protocol "$2" --model "$MODEL" --zero-cost \
    --report-addr "$WORK/$3.addr" > "$WORK/$3.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do [[ -s "$WORK/$3.addr" ]] && break; sleep 0.05; done
}
wait_health() {
  for _ in $(seq 120); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$1/health")" == 200 ]] && return 0
    sleep 0.25
  done
  echo "router at $1 never became healthy" >&2; return 1
}
check() { # router-url decode-addr label
  local out
  out=$(curl -sN -m 20 "$1/v1/completions" -H 'content-type: application/json' \
    -d "{\"model\":\"$MODEL\",\"prompt\":\"Hello world\",\"max_tokens\":4,\"stream\":true}")
  grep -q 'data: \[DONE\]' <<<"$out" || { echo "$3: stream did not end in [DONE]: $out" >&2; return 1; }
  out=$(curl -s -m 20 "$1/v1/chat/completions" -H 'content-type: application/json' \
    -d "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":3}")
  grep -q '"completion_tokens":3' <<<"$out" || { echo "$3: chat failed: $out" >&2; return 1; }
  local prefill
  prefill=$(curl -s "http://$2/metrics" | awk '/^disagg_sim_prefill_tokens_total/ {print $2}')
  [[ "$prefill" == 0 ]] || { echo "$3: the decode worker prefilled $prefill tokens" >&2; return 1; }
  echo "ok: $3 drove a prefill and a decode disagg sim end to end"
}

sim context vllm vllm-p; sim generation vllm vllm-d
P=$(cat "$WORK/vllm-p.addr"); D=$(cat "$WORK/vllm-d.addr")
"$VENV/bin/vllm-router" --host 127.0.0.1 --port 31000 --vllm-pd-disaggregation \
  --prefill "http://$P" --decode "http://$D" --policy round_robin \
  --prometheus-host 127.0.0.1 --prometheus-port 29100 --worker-startup-check-interval 1 \
  > "$WORK/vllm-router.log" 2>&1 &
PIDS+=($!)
wait_health http://127.0.0.1:31000 && check http://127.0.0.1:31000 "$D" vllm-router

sim context sglang sg-p; sim generation sglang sg-d
P=$(cat "$WORK/sg-p.addr"); D=$(cat "$WORK/sg-d.addr")
"$VENV/bin/smg" launch --host 127.0.0.1 --port 30000 --pd-disaggregation \
  --prefill "http://$P" "${P##*:}" --decode "http://$D" --policy round_robin \
  --prometheus-host 127.0.0.1 --prometheus-port 29000 --worker-startup-check-interval 1 \
  > "$WORK/smg.log" 2>&1 &
PIDS+=($!)
wait_health http://127.0.0.1:30000 && check http://127.0.0.1:30000 "$D" sglang-router
