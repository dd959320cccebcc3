#!/usr/bin/env bash
# Regenerates the pictures of the docs from real runs on the simulated engine:
#   docs/img/report.png  the report of `disagg run examples/local-sim.yaml`: verdict, summary
#                        table, latency and throughput charts (the page down to its charts)
#   docs/img/pareto.png  the page of `disagg sweep examples/sweep-sim.yaml`: the SLA answer and
#                        the frontier chart (tok/s per GPU versus tok/s per user), full width
#
# Usage: scripts/screenshots.sh            (builds the debug binary first)
#        DISAGG=path/to/disagg scripts/screenshots.sh
# Needs headless Chromium, as CI installs it: apt-get install chromium fonts-dejavu-core.
# Takes 2-5 minutes (the sweep is 8 points x 3 concurrencies); every step has a time bound, and
# whatever the script starts is stopped by its PID when the script ends, however it ends.
# The work directory is fixed (${TMPDIR:-/tmp}/disagg-screenshots, emptied first) so the paths
# the pages print are the same on every run; fresh XDG directories keep the results store out.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
WIDTH=1200

pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
}
trap stop_all EXIT

# bounded SECONDS CMD...: run CMD, SIGTERM after SECONDS, SIGKILL 10 s later.
bounded() {
  local limit=$1 rc=0
  shift
  timeout --kill-after=10 "$limit" "$@" &
  pids+=($!)
  wait "$!" || rc=$?
  ((rc != 124)) || echo "error: timed out after ${limit} s: $*" >&2
  return "$rc"
}

browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[[ -n "$browser" ]] || {
  echo "error: no headless Chromium on PATH (apt-get install chromium fonts-dejavu-core)" >&2
  exit 1
}
if [[ -z "${DISAGG:-}" ]]; then
  bounded 1800 cargo build --locked -p disagg --bin disagg
  DISAGG="${CARGO_TARGET_DIR:-$REPO/target}/debug/disagg"
fi
DISAGG=$(realpath "$DISAGG")

WORK="${TMPDIR:-/tmp}/disagg-screenshots"
rm -rf "$WORK"
mkdir -p "$WORK/xdg/config" "$WORK/xdg/data"
cp -r "$REPO/examples" "$WORK/examples"
cd "$WORK"
export XDG_CONFIG_HOME="$WORK/xdg/config" XDG_DATA_HOME="$WORK/xdg/data" NO_COLOR=1
unset DISAGG_DB DISAGG_CLUSTERS DISAGG_PRE_MERGE

# chrome_args: what every Chromium call shares (no sandbox: CI and containers run as root).
chrome_args=(--headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1
  --virtual-time-budget=3000 --user-data-dir="$WORK/chromium")

# shoot PAGE.html OUT.png CSS: render PAGE with CSS added, WIDTH px wide and exactly as tall as
# what the CSS leaves of it.
shoot() {
  local page=$1 png=$2 css=$3 shown height
  shown="$WORK/${page%.html}.shot.html"
  # The page measures itself once loaded; --dump-dom shows the measure.
  sed "0,/<\/head>/s##<style>${css}</style><script>addEventListener('load',()=>{document.body.dataset.height=document.documentElement.scrollHeight})</script></head>#" \
    "$page" >"$shown"
  bounded 60 "$browser" "${chrome_args[@]}" --window-size="$WIDTH,800" --dump-dom \
    "file://$shown" >"$WORK/dom.html" 2>>"$WORK/chromium.log"
  height=$(grep -o 'data-height="[0-9]*"' "$WORK/dom.html" | grep -o '[0-9]*' || true)
  [[ -n "$height" ]] || {
    echo "error: Chromium did not lay out $shown" >&2
    exit 1
  }
  bounded 60 "$browser" "${chrome_args[@]}" --window-size="$WIDTH,$height" \
    --screenshot="$WORK/shot.png" "file://$shown" 2>>"$WORK/chromium.log"
  mv "$WORK/shot.png" "$REPO/$png"
  echo "$png: ${WIDTH}x$height, $(($(stat -c %s "$REPO/$png") / 1024)) KB"
}

mkdir -p "$REPO/docs/img"

echo "== disagg run examples/local-sim.yaml"
bounded 300 "$DISAGG" run examples/local-sim.yaml --out runs/local-sim >run.log 2>&1 ||
  { tail -20 run.log >&2; exit 1; }
bounded 60 "$DISAGG" report runs/local-sim --no-store --out report.html
# Without the (empty, since --no-store) regression check, and down to the latency and
# throughput charts: everything after the first chart grid hidden.
sed -i 's#<h2>Regression check</h2><p>No check was run[^<]*</p>##' report.html
shoot report.html docs/img/report.png '.charts~*{display:none}'

echo "== disagg sweep examples/sweep-sim.yaml"
bounded 1200 "$DISAGG" sweep examples/sweep-sim.yaml --out sweep >sweep.log 2>&1 ||
  { tail -20 sweep.log >&2; exit 1; }
# The answer and the frontier chart (its legend of long point names beside the plot), larger.
shoot sweep/report.html docs/img/pareto.png \
  '.charts~*{display:none}.charts{display:block}.chart svg{width:100%;height:auto}'
