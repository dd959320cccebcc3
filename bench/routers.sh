#!/usr/bin/env bash
# Side-by-side router benchmark: disagg router, vllm-router and sglang-router (smg), each in
# front of two `disagg sim` workers (zero-cost model) speaking its protocol. Installs the peers
# from PyPI in a venv (.venv-routers), then runs `cargo bench -p disagg --bench routers`.
# Loopback only; bounded in requests; every process it starts is stopped by the benchmark.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${VENV:-.venv-routers}
if [[ ! -x "$VENV/bin/vllm-router" || ! -x "$VENV/bin/smg" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q vllm-router sglang-router
fi
"$VENV/bin/pip" list 2>/dev/null | grep -iE '^(vllm-router|sglang-router) ' || true
VLLM_ROUTER="$(realpath "$VENV/bin/vllm-router")" SMG="$(realpath "$VENV/bin/smg")" \
  cargo bench -q -p disagg --bench routers "$@"
