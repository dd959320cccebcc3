#!/usr/bin/env bash
# KV-cache-aware routing side by side, on the same simulated workers: our router with
# kv_cache_aware and with round_robin, sglang-router (smg) with cache_aware, vllm-router with
# cache_aware — each in front of 4 prefill and 4 decode `disagg sim` workers (prefix caching on,
# 32-token blocks, upstream's default cost model) speaking that router's hand-off. Two workloads:
# shared prefixes (16 groups x 2048-token prefix x 128-token suffix, 256 prompts, concurrency 16,
# 32 output tokens) and the sample Mooncake trace (48 requests, as recorded). Prompts are token
# ids, except for sglang-router, which refuses them (422): it gets the same ids as text, one word
# per id (`disagg bench --prompt-words`), which the sim counts one token per word. Fresh workers for
# every cell, so every cache starts cold. Prints one Markdown table: prefix-cache hit rate on the
# prefill workers (tokens found in the cache / prompt tokens, and the share of the ideal), TTFT
# p50/p99 and output throughput. Loopback only; everything started is stopped by PID on exit.
#
# Usage: bench/kv-routing-side-by-side.sh [path/to/disagg]
#   (default: $CARGO_TARGET_DIR/release/disagg, else target/release/disagg)
#   needs ~/.cache/disagg/engines/env.sh (scripts/real-engines.sh setup) for the peer routers;
#   without it only our router's rows are measured.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DISAGG=${1:-${CARGO_TARGET_DIR:-target}/release/disagg}
[[ -x "$DISAGG" ]] || { echo "build it first: cargo build --release -p disagg" >&2; exit 2; }
ENV_SH=${DISAGG_ENGINES_ENV:-$HOME/.cache/disagg/engines/env.sh}
# shellcheck disable=SC1090
[[ -f "$ENV_SH" ]] && source "$ENV_SH"
WORK=$(mktemp -d)
PIDS=()
stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; PIDS=(); }
trap 'stop_all; rm -rf "$WORK"' EXIT
TRACE=crates/disagg-bench/tests/data/sample-trace.jsonl
MODEL="$WORK/model"; mkdir -p "$MODEL"   # a local path: routers that look for a tokenizer only warn
N=4

sim() { # role protocol name
  "$DISAGG" sim --port 0 --role "$1" --protocol "$2" --model "$MODEL" --tokens-per-block 32 \
    --event-buffer-max-size 65536 --max-batch-size 64 --report-addr "$WORK/$3.addr" > "$WORK/$3.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 200); do [[ -s "$WORK/$3.addr" ]] && return 0; sleep 0.05; done
  echo "sim $3 did not start" >&2; return 1
}
workers() { # protocol
  for i in $(seq 0 $((N - 1))); do sim context "$1" "p$i"; sim generation "$1" "d$i"; done
}
addr() { cat "$WORK/$1.addr"; }
wait_health() {
  for _ in $(seq 240); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$1/health")" == 200 ]] && return 0
    sleep 0.25
  done
  echo "router at $1 never became healthy" >&2; return 1
}

ours() { # policy
  local cfg="$WORK/server_config.yaml"
  {
    echo "hostname: 127.0.0.1"; echo "port: 0"
    for pool in context_servers generation_servers; do
      local p=p; [[ $pool == generation_servers ]] && p=d
      echo "$pool:"; echo "  num_instances: $N"; echo "  max_batch_size: 64"
      echo "  router: {type: $1}"; echo "  urls:"
      for i in $(seq 0 $((N - 1))); do echo "  - \"$(addr "$p$i")\""; done
    done
  } > "$cfg"
  rm -f "$WORK/router.addr"
  "$DISAGG" router -c "$cfg" --report-addr "$WORK/router.addr" > "$WORK/router-$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 200); do [[ -s "$WORK/router.addr" ]] && break; sleep 0.05; done
  URL="http://$(cat "$WORK/router.addr")"
}
sglang() {
  local args=()
  for i in $(seq 0 $((N - 1))); do local a; a=$(addr "p$i"); args+=(--prefill "http://$a" "${a##*:}"); done
  for i in $(seq 0 $((N - 1))); do args+=(--decode "http://$(addr "d$i")"); done
  "$DISAGG_SGLANG_ROUTER_BIN" launch --host 127.0.0.1 --port 30100 --pd-disaggregation "${args[@]}" \
    --policy cache_aware --prometheus-host 127.0.0.1 --prometheus-port 29300 \
    --worker-startup-check-interval 1 > "$WORK/smg.log" 2>&1 &
  PIDS+=($!)
  URL=http://127.0.0.1:30100
}
vllm() {
  local args=()
  for i in $(seq 0 $((N - 1))); do args+=(--prefill "http://$(addr "p$i")"); done
  for i in $(seq 0 $((N - 1))); do args+=(--decode "http://$(addr "d$i")"); done
  "$DISAGG_VLLM_ROUTER_BIN" --host 127.0.0.1 --port 31100 --vllm-pd-disaggregation "${args[@]}" \
    --policy cache_aware --prometheus-host 127.0.0.1 --prometheus-port 29400 \
    --worker-startup-check-interval 1 > "$WORK/vllm-router.log" 2>&1 &
  PIDS+=($!)
  URL=http://127.0.0.1:31100
}

bench() { # workload out-dir [extra bench flags]
  local extra=("${@:3}")
  local w=(--dataset shared-prefix --prefix-groups 16 --prefix-len 2048 --suffix-len 128 --osl 32
           --num-prompts 256 --concurrency 16)
  [[ $1 == trace ]] && w=(--dataset mooncake --dataset-path "$TRACE" --trace-speedup 1)
  local scrape=()
  for i in $(seq 0 $((N - 1))); do scrape+=(--scrape "p$i=http://$(addr "p$i")/metrics"); done
  "$DISAGG" bench --url "$URL" --model "$MODEL" "${w[@]}" --ignore-eos --timeout 120 \
    --percentiles 50,99 --out "$2" "${scrape[@]}" "${extra[@]}" --allow-invalid > "$2.txt" 2>&1
}
hits() { # sum of a counter over the prefill workers
  local total=0
  for i in $(seq 0 $((N - 1))); do
    local v; v=$(curl -s "http://$(addr "p$i")/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {print $2}')
    total=$(python3 -c "print($total + ${v:-0})")
  done
  echo "$total"
}

# The ideal hit rate of each workload at 32-token blocks: every block some earlier prompt already
# had (the prompt less its last token, whole blocks only) is a hit.
IDEAL_PREFIX=$(python3 -c "n,g,p,s=256,16,2048,128; print(((n-g)*p)/(n*(p+s)))")
IDEAL_TRACE=$(python3 - "$TRACE" <<'EOF'
import json, sys
seen, hit, total = set(), 0, 0
for line in open(sys.argv[1]):
    e = json.loads(line); ids = e["hash_ids"]; n = e["input_length"]
    k = 0
    while k < len(ids) and tuple(ids[:k + 1]) in seen: k += 1
    hit += min(k * 512, ((n - 1) // 32) * 32); total += n
    for j in range(len(ids)): seen.add(tuple(ids[:j + 1]))
print(hit / total)
EOF
)

ROWS=()
cell() { # label protocol starter workload [extra bench flags]
  workers "$2"
  $3
  wait_health "$URL"
  local out="$WORK/out-${1// /-}-$4"
  bench "$4" "$out" "${@:5}"
  local h q rec
  h=$(hits disagg_sim_prefix_cache_hits_total); q=$(hits disagg_sim_prefix_cache_queries_total)
  rec=$(ls "$out"/*.json | head -1)
  ROWS+=("$(python3 - "$rec" "$h" "$q" "$1" "$4" "$IDEAL_PREFIX" "$IDEAL_TRACE" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); m = r["metrics"]
h, q = float(sys.argv[2]), float(sys.argv[3])
ideal = float(sys.argv[6] if sys.argv[5] == "shared-prefix" else sys.argv[7])
rate = h / q if q else 0.0
p = dict((k, v) for k, v in m["ttft_ms"]["percentiles"])
print(f"| {sys.argv[5]} | {sys.argv[4]} | {rate*100:.1f} % | {rate/ideal*100:.0f} % | "
      f"{m['ttft_ms']['median']:.1f} | {p.get(99.0, float('nan')):.1f} | {m['output_throughput']:.0f} | "
      f"{m['completed']}/{m['total_requests']} |")
EOF
)")
  stop_all
}

for workload in shared-prefix trace; do
  cell "disagg kv_cache_aware" trtllm "ours kv_cache_aware" "$workload"
  cell "disagg round_robin" trtllm "ours round_robin" "$workload"
  if [[ -x "${DISAGG_SGLANG_ROUTER_BIN:-}" ]]; then cell "sglang-router cache_aware (text prompts)" sglang sglang "$workload" --prompt-words; fi
  if [[ -x "${DISAGG_VLLM_ROUTER_BIN:-}" ]]; then cell "vllm-router cache_aware" vllm vllm "$workload"; fi
done

echo "| workload | router | prefix-cache hit rate | of ideal | TTFT p50 ms | TTFT p99 ms | out tok/s | completed |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "ideal hit rate: shared-prefix $(python3 -c "print(f'{$IDEAL_PREFIX*100:.1f} %')"), trace $(python3 -c "print(f'{$IDEAL_TRACE*100:.1f} %')")"
