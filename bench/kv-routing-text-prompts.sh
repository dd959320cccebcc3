#!/usr/bin/env bash
# Our kv_cache_aware router on text prompts: the same shared-prefix workload as
# kv-routing-side-by-side.sh (16 groups x 2048-token prefix x 128-token suffix, 256 prompts,
# concurrency 16, 32 output tokens) sent as token ids, as text (`disagg bench --prompt-words`, one
# word per id) with `disagg router --tokenizer sim`, and as text with no tokenizer — each in front
# of 4 prefill and 4 decode `disagg sim` workers started fresh. Prints per row the prefill
# workers' prefix-cache hit rate (and the share of the ideal), TTFT p50, output throughput, the
# router's `disagg_router_untokenized_requests_total` and how many times its log warned.
# Usage: bench/kv-routing-text-prompts.sh [path/to/disagg]. Loopback only; everything started is
# stopped by PID on exit.
set -euo pipefail
DISAGG=${1:-${CARGO_TARGET_DIR:-target}/release/disagg}; WORK=$(mktemp -d); PIDS=()
stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; PIDS=(); }
trap 'stop_all; rm -rf "$WORK"' EXIT
N=4
sim() { "$DISAGG" sim --port 0 --role "$1" --model sim --tokens-per-block 32 --event-buffer-max-size 65536 --max-batch-size 64 --report-addr "$WORK/$2.addr" > "$WORK/$2.log" 2>&1 & PIDS+=($!)
  for _ in $(seq 200); do [[ -s "$WORK/$2.addr" ]] && return 0; sleep 0.05; done; return 1; }
addr() { cat "$WORK/$1.addr"; }
for label in "ids" "text --tokenizer sim" "text, no tokenizer"; do
  rm -f "$WORK"/*.addr
  for i in $(seq 0 $((N - 1))); do sim context "p$i"; sim generation "d$i"; done
  cfg="$WORK/server_config.yaml"
  { echo "hostname: 127.0.0.1"; echo "port: 0"
    for pool in context_servers generation_servers; do p=p; [[ $pool == generation_servers ]] && p=d
      echo "$pool:"; echo "  num_instances: $N"; echo "  max_batch_size: 64"; echo "  router: {type: kv_cache_aware}"; echo "  urls:"
      for i in $(seq 0 $((N - 1))); do echo "  - \"$(addr "$p$i")\""; done; done; } > "$cfg"
  targs=(); words=()
  [[ $label == "text --tokenizer sim" ]] && targs=(--tokenizer sim)
  [[ $label != ids ]] && words=(--prompt-words)
  "$DISAGG" router -c "$cfg" "${targs[@]}" --report-addr "$WORK/router.addr" > "$WORK/router.log" 2>&1 & PIDS+=($!)
  for _ in $(seq 200); do [[ -s "$WORK/router.addr" ]] && break; sleep 0.05; done
  URL="http://$(cat "$WORK/router.addr")"
  for _ in $(seq 240); do [[ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health")" == 200 ]] && break; sleep 0.25; done
  "$DISAGG" bench --url "$URL" --model sim --dataset shared-prefix --prefix-groups 16 --prefix-len 2048 --suffix-len 128 --osl 32 \
     --num-prompts 256 --concurrency 16 --ignore-eos --timeout 120 --percentiles 50,99 "${words[@]}" --out "$WORK/out" > "$WORK/bench.txt" 2>&1 || true
  h=0; q=0
  for i in $(seq 0 $((N - 1))); do
    m=$(curl -s "http://$(addr "p$i")/metrics")
    h=$(python3 -c "print($h + $(echo "$m" | awk '$1 ~ "^disagg_sim_prefix_cache_hits_total" {print $2}'))")
    q=$(python3 -c "print($q + $(echo "$m" | awk '$1 ~ "^disagg_sim_prefix_cache_queries_total" {print $2}'))")
  done
  un=$(curl -s "$URL/metrics" | awk '$1=="disagg_router_untokenized_requests_total"{print $2}')
  warn=$(grep -c 'routed by load alone' "$WORK/router.log" || true)
  python3 - "$label" "$h" "$q" "$un" "$warn" "$WORK/out/con16.json" <<'PY'
import json,sys
l,h,q,un,warn,rec=sys.argv[1:]; r=json.load(open(rec)); m=r["metrics"]
ideal=((256-16)*2048)/(256*(2048+128))
rate=float(h)/float(q)
print(f"{l:24s} hit {rate*100:.1f} % ({rate/ideal*100:.0f} % of ideal)  TTFT p50 {m['ttft_ms']['median']:.1f} ms  out tok/s {m['output_throughput']:.0f}  completed {m['completed']}/256  untokenized {un}  warnings {warn}")
PY
  stop_all
done
