#!/usr/bin/env bash
# Worker churn: disagg router in front of 1 context + 2 generation `disagg sim`s under open-loop
# load; generation worker 1 is killed (SIGKILL) and started again on its port every PERIOD
# seconds. The numbers that matter: failed requests against the streams in flight on the
# victim at each kill (the router's disagg_router_worker_in_flight, read just before it), how
# long the victim stays in the rotation after a kill, and that it takes requests again once
# back. Figures go to docs/RELIABILITY.md; the bounded version is the `churn` test.
#
# Usage: bench/churn.sh [minutes]          (default 5)
# Env: PERIOD (20 s), DOWN (2 s: how long the victim stays dead), RATE (20 requests/s),
# STEP_MS (20: the sims' step, so a 32-token stream lasts ~0.7 s), OUT.
# Loopback only; every process it starts is stopped by PID on exit; bounded by [minutes].
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MIN=${1:-5}
PERIOD=${PERIOD:-20}
DOWN=${DOWN:-2}
RATE=${RATE:-20}
STEP_MS=${STEP_MS:-20}
OUT=${OUT:-$(mktemp -d /tmp/disagg-churn.XXXXXX)}
mkdir -p "$OUT"
cargo build --release -q -p disagg
DISAGG="${CARGO_TARGET_DIR:-target}/release/disagg"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
export DISAGG_SIM_HANDOFF_KEY=churn

sim() { # name role port: start a sim, wait for its address; its pid in SIM_PID
  rm -f "$OUT/$1.addr"
  "$DISAGG" sim --port "$3" --report-addr "$OUT/$1.addr" --role "$2" --model sim --zero-cost \
    --decode-step-base-ms "$STEP_MS" >> "$OUT/$1.log" 2>&1 &
  SIM_PID=$!
  PIDS+=("$SIM_PID")
  for _ in $(seq 200); do [[ -s "$OUT/$1.addr" ]] && return; sleep 0.05; done
  echo "$1 did not start" >&2; exit 1
}
sim ctx0 context 0
sim gen0 generation 0
sim gen1 generation 0
VICTIM=$SIM_PID
G1=$(cat "$OUT/gen1.addr")
cat > "$OUT/server_config.yaml" <<EOF
hostname: 127.0.0.1
port: 0
context_servers: {num_instances: 1, urls: ["$(cat "$OUT/ctx0.addr")"]}
generation_servers: {num_instances: 2, urls: ["$(cat "$OUT/gen0.addr")", "$G1"]}
EOF
"$DISAGG" router -c "$OUT/server_config.yaml" --report-addr "$OUT/router.addr" > "$OUT/router.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do [[ -s "$OUT/router.addr" ]] && break; sleep 0.05; done
ROUTER=$(cat "$OUT/router.addr")
for _ in $(seq 200); do curl -sf "http://$ROUTER/health" >/dev/null && break; sleep 0.05; done
metric() { # name: the router's value of it for the victim
  curl -s "http://$ROUTER/metrics" | awk -v n="$1" -v w="worker=\"$G1\"" 'index($0, n) == 1 && index($0, w) {print $NF}'
}

"$DISAGG" bench --url "http://$ROUTER" --model sim --request-rate "$RATE" --burstiness 1000 \
  --num-prompts $((RATE * MIN * 60)) --isl 16 --osl 32 --ignore-eos --allow-invalid --timeout 60 \
  --max-duration $((MIN * 60 + 60)) --out "$OUT/bench" > "$OUT/bench.log" 2>&1 &
BENCH=$!
PIDS+=("$BENCH")
echo "kill_s,in_flight_on_victim,out_of_rotation_ms" > "$OUT/kills.csv"
START=$SECONDS
while (( SECONDS - START + PERIOD < MIN * 60 )); do
  sleep "$PERIOD"
  inflight=$(metric disagg_router_worker_in_flight)
  kill -9 "$VICTIM"
  t0=$(date +%s%N)
  while [[ "$(metric disagg_router_worker_healthy)" != 0 ]]; do sleep 0.01; done
  gone_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "$((SECONDS - START)),$inflight,$gone_ms" >> "$OUT/kills.csv"
  sleep "$DOWN"
  sim gen1 generation "${G1##*:}"
  VICTIM=$SIM_PID
done
wait "$BENCH" || true
python3 - "$OUT" "$(metric disagg_router_worker_requests_total)" <<'PY'
import csv, glob, json, sys
out, victim_requests = sys.argv[1], sys.argv[2]
kills = list(csv.DictReader(open(f"{out}/kills.csv")))
rec = json.load(open(glob.glob(f"{out}/bench/*.json")[0]))
m = rec["metrics"]
in_flight = sum(float(k["in_flight_on_victim"]) for k in kills)
gone = sorted(int(k["out_of_rotation_ms"]) for k in kills)
print(f"kills: {len(kills)}; streams in flight on the victim at its kills: {in_flight:.0f}")
print(f"requests: {m['completed'] + m['failed']} sent, {m['completed']} completed, {m['failed']} failed")
print(f"out of the rotation after a kill: median {gone[len(gone) // 2]} ms, max {gone[-1]} ms")
print(f"legs the victim took over the run (it rejoined after every restart): {victim_requests}")
PY
