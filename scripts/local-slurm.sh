#!/usr/bin/env bash
# A real Slurm on this one Debian machine: munged, slurmctld and one slurmd per fake node
# (n1..nN, each with G fake GPUs), all files under one directory, started without systemd and
# stopped only through the PIDs recorded at start.
#
# Two network layouts (LOCAL_SLURM_NET):
#   netns     (default) every node in its own network namespace with its own address on a bridge
#             this script creates (LOCAL_SLURM_SUBNET.0/24, default 10.213.77.0/24, used only inside
#             this machine): node nK is .(10+K), slurmctld and the submitting host sit on the
#             bridge at .1. slurmd of nK runs inside nK's namespace, so every task srun starts
#             there does too: a server bound to 127.0.0.1 on one node is unreachable from another,
#             as on a real cluster.
#   loopback  every node on 127.0.0.1 (machines where namespaces cannot be created).
#
#   scripts/local-slurm.sh up       # install the packages if needed, start, write env.sh and the `local` cluster profile
#   scripts/local-slurm.sh status   # daemons and nodes
#   scripts/local-slurm.sh down     # cancel every job, stop our daemons, undo /etc/hosts
#   scripts/local-slurm.sh start-node NODE   # start NODE's slurmd again as `up` does (after a
#                                            # fault test killed it; nothing if it runs)
#
# Settings (environment): LOCAL_SLURM_DIR (default /tmp/disagg-local-slurm), LOCAL_SLURM_NODES (4),
# LOCAL_SLURM_GPUS (4 per node), LOCAL_SLURM_CPUS (8 per node), LOCAL_SLURM_CTLD_PORT (16817),
# LOCAL_SLURM_NODE_PORT_BASE (17000), LOCAL_SLURM_NET (netns), LOCAL_SLURM_SUBNET (10.213.77),
# LOCAL_SLURM_NETNAME (dslurm: the bridge dslurm0, namespaces dslurm-nK, links dslurm-vK),
# LOCAL_SLURM_PROFILE (local: the disagg cluster profile written), LOCAL_SLURM_NODE_PREFIX (n).
# Needs root (the daemons run as root, /etc/hosts is edited, namespaces and links are created;
# `down` removes exactly the ones recorded in $LOCAL_SLURM_DIR/net.list and nothing else).
# After `up`:  source "$LOCAL_SLURM_DIR/env.sh"   (sets SLURM_CONF)
#              disagg submit FILE --cluster local
set -euo pipefail

DIR=${LOCAL_SLURM_DIR:-/tmp/disagg-local-slurm}
NODES=${LOCAL_SLURM_NODES:-4}
GPUS=${LOCAL_SLURM_GPUS:-4}
CPUS=${LOCAL_SLURM_CPUS:-8}
CTLD_PORT=${LOCAL_SLURM_CTLD_PORT:-16817}
NODE_PORT_BASE=${LOCAL_SLURM_NODE_PORT_BASE:-17000}
NET=${LOCAL_SLURM_NET:-netns}
SUBNET=${LOCAL_SLURM_SUBNET:-10.213.77}
NETNAME=${LOCAL_SLURM_NETNAME:-dslurm}
BRIDGE=${NETNAME}0
PROFILE=${LOCAL_SLURM_PROFILE:-local}
PREFIX=${LOCAL_SLURM_NODE_PREFIX:-n}

die() { echo "local-slurm: $*" >&2; exit 1; }
say() { echo "local-slurm: $*" >&2; }

[[ "$DIR" == /* ]] || die "LOCAL_SLURM_DIR must be an absolute path, got '$DIR'"
[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "LOCAL_SLURM_NODES must be a positive integer, got '$NODES'"
[[ "$GPUS" =~ ^[0-9]+$ ]] || die "LOCAL_SLURM_GPUS must be a non-negative integer, got '$GPUS'"
[[ "$CPUS" =~ ^[1-9][0-9]*$ ]] || die "LOCAL_SLURM_CPUS must be a positive integer, got '$CPUS'"
[[ "$NETNAME" =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "LOCAL_SLURM_NETNAME must be 1-8 lowercase letters/digits, got '$NETNAME'"
[[ "$PREFIX" =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "LOCAL_SLURM_NODE_PREFIX must be 1-8 lowercase letters/digits, got '$PREFIX'"
[[ "$PROFILE" =~ ^[A-Za-z0-9_-]+$ ]] || die "LOCAL_SLURM_PROFILE must be a plain name, got '$PROFILE'"
[[ "$NET" == netns || "$NET" == loopback ]] || die "LOCAL_SLURM_NET must be netns or loopback, got '$NET'"
[[ "$SUBNET" =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "LOCAL_SLURM_SUBNET must be the first three octets of a /24 (e.g. 10.213.77), got '$SUBNET'"
((NODES <= 200)) || die "LOCAL_SLURM_NODES must be at most 200, got '$NODES'"

NODE_NAMES=()
for ((i = 1; i <= NODES; i++)); do NODE_NAMES+=("$PREFIX$i"); done
HOSTS_TAG="# local-slurm:$DIR"
export SLURM_CONF="$DIR/etc/slurm.conf"

need_root() { [[ $(id -u) == 0 ]] || die "run as root (the daemons run as SlurmUser=root and /etc/hosts gets the node names)"; }

install_packages() {
  local pkgs=(munge slurmctld slurmd slurm-client) missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  say "installing ${missing[*]}"
  local apt=(apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300)
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >/dev/null; then
    apt-get update -qq -o DPkg::Lock::Timeout=300 >/dev/null
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >/dev/null
  fi
}

# A recorded PID is ours while it is alive and its command line names our directory.
ours() {
  local pid=$1 cmd
  [[ -r /proc/$pid/cmdline ]] || return 1
  cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline")
  [[ -n "$cmd" && "$cmd" == *"$DIR/"* ]]
}

record_pid() { # name pidfile
  local name=$1 file=$2 t
  for ((t = 0; t < 100; t++)); do
    if [[ -s "$file" ]]; then
      cp "$file" "$DIR/pids/$name.pid"
      return 0
    fi
    sleep 0.1
  done
  die "$name did not write $file within 10 s; see $DIR/log/"
}

write_config() {
  mkdir -p "$DIR"/{etc,munge,dev,state/ctld,state/d,run,pids,log}
  chmod 755 "$DIR" "$DIR/munge"
  local gres_type="" gres_node=""
  if ((GPUS > 0)); then
    gres_type="GresTypes=gpu"
    gres_node="Gres=gpu:$GPUS"
  fi
  {
    cat <<EOF
# Written by scripts/local-slurm.sh — a local multi-node Slurm on one machine.
ClusterName=localslurm
SlurmctldHost=localhost($(ctld_addr))
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$DIR/etc/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=0
EnforcePartLimits=ALL
KillWait=2
InactiveLimit=0
MinJobAge=600
MailProg=/bin/true
SlurmdTimeout=300
$gres_type
EOF
    local i
    for ((i = 1; i <= NODES; i++)); do
      echo "NodeName=$PREFIX$i NodeHostname=$(node_hostname "$PREFIX$i") NodeAddr=$(node_addr "$i") Port=$((NODE_PORT_BASE + i)) CPUs=$CPUS RealMemory=8000 $gres_node State=UNKNOWN"
    done
    echo "PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=EXCLUSIVE"
    echo "PartitionName=shared Nodes=ALL Default=NO MaxTime=INFINITE State=UP OverSubscribe=NO"
  } > "$DIR/etc/slurm.conf.new"
  : > "$DIR/etc/plugstack.conf"
  if ((GPUS > 0)); then
    local n
    for ((n = 0; n < GPUS; n++)); do
      [[ -e "$DIR/dev/nvidia$n" ]] || mknod -m 666 "$DIR/dev/nvidia$n" c 1 3 2>/dev/null || true
    done
    if [[ -c "$DIR/dev/nvidia0" ]]; then
      echo "AutoDetect=off
NodeName=$PREFIX[1-$NODES] Name=gpu File=$DIR/dev/nvidia[0-$((GPUS - 1))]" > "$DIR/etc/gres.conf"
    else
      echo "AutoDetect=off
NodeName=$PREFIX[1-$NODES] Name=gpu Count=$GPUS" > "$DIR/etc/gres.conf"
    fi
  fi
  echo "export SLURM_CONF=$DIR/etc/slurm.conf" > "$DIR/env.sh"
  echo "$NET" > "$DIR/etc/net.layout.new"
}

# Addresses of the layout.
ctld_addr() { if [[ $NET == netns ]]; then echo "$SUBNET.1"; else echo 127.0.0.1; fi; }
node_addr() { if [[ $NET == netns ]]; then echo "$SUBNET.$((10 + $1))"; else echo 127.0.0.1; fi; }
node_hostname() { if [[ $NET == netns ]]; then echo "$1"; else echo localhost; fi; }

# The namespaced network: a bridge with the controller's address, and per node a namespace
# whose veth end carries the node's address. Every name made is recorded before it is made, so
# `down` removes exactly these (and a half-made network too).
net_up() {
  [[ $NET == netns ]] || return 0
  command -v ip >/dev/null || die "LOCAL_SLURM_NET=netns needs ip (apt-get install iproute2), or use LOCAL_SLURM_NET=loopback"
  : > "$DIR/net.list"
  echo "link $BRIDGE" >> "$DIR/net.list"
  ip link add "$BRIDGE" type bridge 2>/dev/null \
    || die "cannot create bridge $BRIDGE (it exists, or no permission to create links): use LOCAL_SLURM_NET=loopback, or remove it"
  ip addr add "$SUBNET.1/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  local i ns veth
  for ((i = 1; i <= NODES; i++)); do
    ns="$NETNAME-n$i" veth="$NETNAME-v$i"
    echo "netns $ns" >> "$DIR/net.list"
    ip netns add "$ns" 2>/dev/null \
      || die "cannot create network namespace $ns (it exists, or namespaces are not allowed here): use LOCAL_SLURM_NET=loopback"
    echo "link $veth" >> "$DIR/net.list"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "$BRIDGE"
    ip link set "$veth" up
    ip -n "$ns" addr add "$(node_addr "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
  done
}

# Remove every namespace and link recorded by net_up, by name, and nothing else.
net_down() {
  [[ -f "$DIR/net.list" ]] || return 0
  local kind name
  while read -r kind name; do
    case $kind in
      link) ip link del "$name" 2>/dev/null || true ;;
      netns) ip netns del "$name" 2>/dev/null || true ;;
    esac
  done < <(tac "$DIR/net.list")
  rm -f "$DIR/net.list"
}

# Run a node's daemon where the node lives.
in_node() { # node-index command...
  local i=$1
  shift
  # nsenter enters the network namespace only (ip netns exec would also remount /sys, where
  # slurmd looks for cgroups).
  if [[ $NET == netns ]]; then nsenter --net="/var/run/netns/$NETNAME-n$i" "$@"; else "$@"; fi
}

hosts_add() {
  hosts_remove
  # Rewrite in place: /etc/hosts may be a bind mount.
  if [[ $NET == netns ]]; then
    local i
    for ((i = 1; i <= NODES; i++)); do echo "$(node_addr "$i") $PREFIX$i $HOSTS_TAG" >> /etc/hosts; done
  else
    echo "127.0.0.1 ${NODE_NAMES[*]} $HOSTS_TAG" >> /etc/hosts
  fi
}

hosts_remove() {
  if grep -qF "$HOSTS_TAG" /etc/hosts 2>/dev/null; then
    local kept
    kept=$(grep -vF "$HOSTS_TAG" /etc/hosts)
    printf '%s\n' "$kept" > /etc/hosts
  fi
}

# The `local` cluster profile for disagg, in its own file of the clusters.d directory.
write_profile() {
  local base=${XDG_CONFIG_HOME:-$HOME/.config}
  mkdir -p "$base/disagg/clusters.d"
  cat > "$base/disagg/clusters.d/$PROFILE.yaml" <<EOF
# Written by scripts/local-slurm.sh up ($DIR); removed by down.
clusters:
  $PROFILE:
    partition: local
    gpus_per_node: $GPUS
    gres_gpus: false
    slurm_conf: $DIR/etc/slurm.conf
EOF
  say "cluster profile '$PROFILE' written to $base/disagg/clusters.d/$PROFILE.yaml"
}

remove_profile() {
  local f=${XDG_CONFIG_HOME:-$HOME/.config}/disagg/clusters.d/$PROFILE.yaml
  if [[ -f "$f" ]] && grep -qF "($DIR)" "$f"; then rm -f "$f"; fi
}

healthy() {
  [[ -f "$DIR/etc/slurm.conf" ]] || return 1
  local f
  for f in "$DIR"/pids/*.pid; do
    [[ -e "$f" ]] || return 1
    ours "$(cat "$f")" || return 1
  done
  local states
  states=$(sinfo -h -N -p local -o '%t' 2>/dev/null) || return 1
  [[ -n "$states" ]] && ! grep -qvE '^(idle|alloc|mix|comp)$' <<< "$states"
}

up() {
  need_root
  install_packages
  if [[ -f "$DIR/etc/slurm.conf" ]]; then
    write_config
    if cmp -s "$DIR/etc/slurm.conf" "$DIR/etc/slurm.conf.new" \
      && cmp -s "$DIR/etc/net.layout" "$DIR/etc/net.layout.new" && healthy; then
      rm -f "$DIR/etc/slurm.conf.new" "$DIR/etc/net.layout.new"
      write_profile
      say "already up ($NODES nodes, $NET layout) — source $DIR/env.sh"
      return 0
    fi
    down
  fi
  write_config
  mv "$DIR/etc/slurm.conf.new" "$DIR/etc/slurm.conf"
  mv "$DIR/etc/net.layout.new" "$DIR/etc/net.layout"
  rm -rf "$DIR"/state/ctld/* "$DIR"/state/d/* "$DIR"/run/* "$DIR"/pids/* "$DIR"/log/*
  net_up
  hosts_add
  # munge, on its own socket and key.
  if [[ ! -s "$DIR/munge/munge.key" ]]; then
    mungekey --create --keyfile="$DIR/munge/munge.key" 2>/dev/null \
      || head -c 1024 /dev/urandom > "$DIR/munge/munge.key"
  fi
  chmod 600 "$DIR/munge/munge.key"
  munged --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/run/munged.pid" --seed-file="$DIR/munge/munge.seed" \
    --log-file="$DIR/log/munged.log" --force
  record_pid munged "$DIR/run/munged.pid"
  munge -S "$DIR/munge/munge.socket" -n | unmunge -S "$DIR/munge/munge.socket" >/dev/null \
    || die "munge does not work; see $DIR/log/munged.log"
  slurmctld -f "$DIR/etc/slurm.conf"
  record_pid slurmctld "$DIR/run/slurmctld.pid"
  local t
  for ((t = 0; t < 100; t++)); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
  scontrol ping >/dev/null 2>&1 || die "slurmctld does not answer; see $DIR/log/slurmctld.log"
  local i
  for ((i = 1; i <= NODES; i++)); do
    in_node "$i" slurmd -f "$DIR/etc/slurm.conf" -N "$PREFIX$i"
    record_pid "slurmd-$PREFIX$i" "$DIR/run/slurmd-$PREFIX$i.pid"
  done
  for ((t = 0; t < 300; t++)); do
    if [[ $(sinfo -h -N -p local -t idle -o '%N' 2>/dev/null | wc -l) -ge $NODES ]]; then
      write_profile
      say "up: $NODES nodes x $GPUS GPUs, $NET layout ($(layout_line)), in $DIR — source $DIR/env.sh"
      return 0
    fi
    sleep 0.1
  done
  sinfo -N -l >&2 || true
  tail -n 20 "$DIR/log/slurmctld.log" >&2 || true
  die "the nodes did not become idle within 30 s"
}

stop_pid() { # name
  local f="$DIR/pids/$1.pid" pid t
  [[ -f "$f" ]] || return 0
  pid=$(cat "$f")
  if ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((t = 0; t < 200; t++)); do ours "$pid" || break; sleep 0.1; done
    if ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$f"
}

down() {
  need_root
  if [[ -f "$DIR/etc/slurm.conf" ]] && scontrol ping >/dev/null 2>&1; then
    local jobs t
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [[ -n "$jobs" ]]; then
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for ((t = 0; t < 100; t++)); do [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break; sleep 0.1; done
    fi
  fi
  local f name
  for f in "$DIR"/pids/slurmd-*.pid; do
    [[ -e "$f" ]] || continue
    name=$(basename "$f" .pid)
    stop_pid "$name"
  done
  stop_pid slurmctld
  stop_pid munged
  hosts_remove
  net_down
  remove_profile
  say "down"
}

# Start one node's slurmd again, exactly as `up` starts it: a fault test kills a node daemon by
# its recorded PID and gives the node back through here, so the cluster stays whole for others.
start_node() { # node-name
  need_root
  local name=${1:-} i f t
  if ! [[ "$name" =~ ^$PREFIX([1-9][0-9]*)$ ]] || ((BASH_REMATCH[1] > NODES)); then
    die "start-node needs one of ${NODE_NAMES[*]}, got '$name'"
  fi
  i=${BASH_REMATCH[1]}
  [[ -f "$DIR/etc/slurm.conf" ]] || die "not up (no $DIR/etc/slurm.conf)"
  NET=$(cat "$DIR/etc/net.layout")
  f="$DIR/pids/slurmd-$name.pid"
  if [[ -f "$f" ]] && ours "$(cat "$f")"; then
    say "slurmd of $name runs (pid $(cat "$f"))"
    return 0
  fi
  # A killed slurmd leaves its PID file: record_pid must wait for the new one.
  rm -f "$DIR/run/slurmd-$name.pid" "$f"
  in_node "$i" slurmd -f "$DIR/etc/slurm.conf" -N "$name"
  record_pid "slurmd-$name" "$DIR/run/slurmd-$name.pid"
  # Responding again: no `*` (not responding) after its state.
  for ((t = 0; t < 300; t++)); do
    if [[ $(sinfo -h -N -n "$name" -o '%t' 2>/dev/null | head -n 1) =~ ^[a-z]+$ ]]; then
      say "slurmd of $name started (pid $(cat "$f"))"
      return 0
    fi
    sleep 0.1
  done
  die "$name does not respond within 30 s after its slurmd started; see $DIR/log/slurmd-$name.log"
}

# The addresses, in one line.
layout_line() {
  local i out="slurmctld $(ctld_addr)"
  for ((i = 1; i <= NODES; i++)); do out+=", $PREFIX$i $(node_addr "$i")"; done
  echo "$out"
}

status() {
  local f name pid
  [[ -f "$DIR/etc/net.layout" ]] && NET=$(cat "$DIR/etc/net.layout")
  echo "layout: $NET ($(layout_line))"
  for f in "$DIR"/pids/*.pid; do
    [[ -e "$f" ]] || { echo "not running (no PIDs recorded in $DIR/pids)"; return 1; }
    name=$(basename "$f" .pid)
    pid=$(cat "$f")
    if ours "$pid"; then echo "$name: pid $pid running"; else echo "$name: pid $pid GONE"; fi
  done
  sinfo -N -p local -o '%N %t %G' 2>/dev/null || echo "sinfo: no answer"
  healthy
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  start-node) start_node "${2:-}" ;;
  *) echo "usage: $0 up|down|status|start-node NODE" >&2; exit 2 ;;
esac
