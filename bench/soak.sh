#!/usr/bin/env bash
# Soak: constant load for a long time, and whether anything creeps. The numbers that matter:
# RSS and open file descriptors of every process (sampled every 10 s; growth after warm-up
# should stay under 5 %), failed requests (should be 0), and TTFT/E2EL percentiles of the last
# 5 minutes against the first 5 (within 5 %). Figures go to docs/RELIABILITY.md.
#
# Usage: bench/soak.sh [minutes]            (default 30)
#   MODE=router (default): disagg router in front of 2 context + 2 generation `disagg sim`s,
#                          open-loop load of RATE requests/s (default 8)
#   MODE=sim:              one `disagg sim` alone under STREAMS concurrent streams (default 2000)
# Env: ISL (256), OSL (32), RATE, STREAMS, OUT (a directory for the samples and records).
# Loopback only; every process it starts is stopped by PID on exit; bounded by [minutes].
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MIN=${1:-30}
MODE=${MODE:-router}
ISL=${ISL:-256}
OSL=${OSL:-32}
RATE=${RATE:-8}
STREAMS=${STREAMS:-2000}
OUT=${OUT:-$(mktemp -d /tmp/disagg-soak.XXXXXX)}
mkdir -p "$OUT"
cargo build --release -q -p disagg
DISAGG="${CARGO_TARGET_DIR:-target}/release/disagg"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
export DISAGG_SIM_HANDOFF_KEY=soak

sim() { # name role [flags...]: start a sim, wait for its address
  local name=$1 role=$2; shift 2
  "$DISAGG" sim --port 0 --report-addr "$OUT/$name.addr" --role "$role" --model sim "$@" \
    > "$OUT/$name.log" 2>&1 &
  PIDS+=($!)
  NAMES+=("$name")
  for _ in $(seq 200); do [[ -s "$OUT/$name.addr" ]] && return; sleep 0.05; done
  echo "$name did not start" >&2; exit 1
}
NAMES=()
if [[ $MODE == router ]]; then
  sim ctx0 context; sim ctx1 context; sim gen0 generation; sim gen1 generation
  cat > "$OUT/server_config.yaml" <<EOF
hostname: 127.0.0.1
port: 0
context_servers:
  num_instances: 2
  urls: ["$(cat "$OUT/ctx0.addr")", "$(cat "$OUT/ctx1.addr")"]
generation_servers:
  num_instances: 2
  urls: ["$(cat "$OUT/gen0.addr")", "$(cat "$OUT/gen1.addr")"]
EOF
  "$DISAGG" router -c "$OUT/server_config.yaml" --report-addr "$OUT/router.addr" > "$OUT/router.log" 2>&1 &
  PIDS+=($!)
  NAMES+=(router)
  for _ in $(seq 200); do [[ -s "$OUT/router.addr" ]] && break; sleep 0.05; done
  for _ in $(seq 200); do curl -sf "http://$(cat "$OUT/router.addr")/health" >/dev/null && break; sleep 0.05; done
  URL="http://$(cat "$OUT/router.addr")"
  LOAD=(--request-rate "$RATE" --num-prompts $((RATE * MIN * 60)))
else
  sim sim both --max-batch-size "$STREAMS"
  URL="http://$(cat "$OUT/sim.addr")"
  # Enough prompts for the whole time; the deadline ends the run.
  LOAD=(--concurrency "$STREAMS" --num-prompts $((STREAMS * 1000)))
fi

# One line per process every 10 s: seconds since start, name, RSS (kB), open fds.
sample() {
  local t0=$SECONDS
  while true; do
    for i in "${!NAMES[@]}"; do
      local p=${PIDS[$i]} rss fds
      rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
      fds=$(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
      echo "$((SECONDS - t0)),${NAMES[$i]},$rss,$fds"
    done
    sleep 10
  done
}
echo "t_s,process,rss_kb,fds" > "$OUT/samples.csv"
sample >> "$OUT/samples.csv" &
SAMPLER=$!
PIDS+=("$SAMPLER")

echo "soak: $MODE for $MIN min against $URL; samples and records in $OUT" >&2
set +e
"$DISAGG" bench --url "$URL" --model sim "${LOAD[@]}" --isl "$ISL" --osl "$OSL" --ignore-eos \
  --max-duration $((MIN * 60)) --timeout 120 --save-timelines --allow-invalid --out "$OUT/bench" \
  > "$OUT/bench.log" 2>&1
set -e
kill "$SAMPLER" 2>/dev/null || true

python3 - "$OUT" "$MIN" <<'PY'
import csv, glob, json, sys
out, minutes = sys.argv[1], int(sys.argv[2])
rows = list(csv.DictReader(open(f"{out}/samples.csv")))
warm = 300 if minutes >= 15 else 60  # after warm-up: from 5 min on (1 min for short runs)
print(f"process   RSS after warm-up -> end (MB)   growth   fds after warm-up -> end")
for name in dict.fromkeys(r["process"] for r in rows):
    s = [r for r in rows if r["process"] == name and int(r["t_s"]) >= warm]
    if len(s) < 2:
        continue
    a, b = s[0], s[-1]
    ra, rb = int(a["rss_kb"]) / 1024, int(b["rss_kb"]) / 1024
    peak = max(int(r["rss_kb"]) for r in s) / 1024
    print(f"{name:8}  {ra:8.1f} -> {rb:8.1f} (peak {peak:.1f})   {100 * (rb - ra) / ra:+6.1f} %   {a['fds']} -> {b['fds']}")
rec = json.load(open(glob.glob(f"{out}/bench/*.json")[0]))
tl = rec["timelines"]
d = lambda x: x["secs"] + x["nanos"] / 1e9
done = [t for t in tl if t["error"] is None and t["chunks"]]
failed = [t for t in tl if t["error"] is not None and "deadline" not in t["error"]]
print(f"requests: {len(tl)} sent, {len(done)} completed, {len(failed)} failed "
      f"(requests cut by the run's own deadline are not failures: {len(tl) - len(done) - len(failed)})")
for e in sorted({t["error"] for t in failed})[:5]:
    print("  error:", e)
def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    f = int(k)
    return xs[f] + (xs[min(f + 1, len(xs) - 1)] - xs[f]) * (k - f)
end = max(d(t["intended"]) for t in done)
w = min(300, end / 6)
first = [t for t in done if d(t["intended"]) < w]
last = [t for t in done if d(t["intended"]) >= end - w]
print(f"window {w:.0f} s       first       last      diff")
for label, f in [("TTFT", lambda t: d(t["chunks"][0]["at"]) - d(t["intended"])),
                 ("E2EL", lambda t: d(t["chunks"][-1]["at"]) - d(t["intended"]))]:
    for p in (50, 99):
        a, b = 1000 * pct([f(t) for t in first], p), 1000 * pct([f(t) for t in last], p)
        print(f"{label} p{p:<3}     {a:8.2f}ms {b:8.2f}ms {100 * (b - a) / a:+7.1f} %")
PY
