#!/usr/bin/env bash
# Captures what a real Slurm prints in each case the parsers of `src/slurm.rs` read, one file per
# case in this directory (`*.txt`; files named `hand-made-*` are written by hand and not touched).
#
#   LOCAL_SLURM_DIR=/tmp/disagg-local-slurm bash scripts/local-slurm.sh up
#   export SLURM_CONF=/tmp/disagg-local-slurm/etc/slurm.conf
#   bash crates/disagg-launch/src/slurm/testdata/capture.sh            # ~3 minutes
#   CAPTURE_PURGED=1 bash crates/disagg-launch/src/slurm/testdata/capture.sh   # + ~11 minutes: *-purged.txt
#
# Needs an idle local Slurm (scripts/local-slurm.sh: 4 exclusive nodes, MinJobAge=600,
# ReturnToService=2, no accounting). What it changes, all undone on exit: its own jobs (cancelled
# by id), one node set DOWN to provoke NODE_FAIL (back by itself through ReturnToService=2, else
# resumed). Ids, dates and paths in the files change with every capture; after recapturing,
# update the expectations in `src/slurm/tests.rs` (the sbatch id) and review `git diff`.
#
# File format (read by `src/slurm/tests.rs`): `#` comment lines, `$ COMMAND`, `exit: CODE`, then
# `--- stdout`, the output lines, `--- stderr`, the error lines.
set -euo pipefail

OUT=$(cd "$(dirname "$0")" && pwd)
[[ -n "${SLURM_CONF:-}" ]] || { echo "capture: set SLURM_CONF (see the header)" >&2; exit 2; }
VERSION=$(sinfo --version)
TMP=$(mktemp -d)
JOBS=()
DOWNED=""

cleanup() {
  local j
  for j in "${JOBS[@]}"; do scancel "$j" 2>/dev/null || true; done
  if [[ -n "$DOWNED" ]]; then resume "$DOWNED" || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

say() { echo "capture: $*" >&2; }

# ReturnToService=2 brings a DOWN node back by itself as soon as its slurmd answers; `resume` is
# refused then ("Invalid node state specified"), so only a node still down is resumed.
resume() {
  if sinfo -h -n "$1" -o %t | grep -q down; then scontrol update nodename="$1" state=resume; fi
}

# cap NAME WHAT CMD...: run CMD, write NAME.txt. Slurm ends every line with a newline; the file
# format relies on it.
cap() {
  local name=$1 what=$2 rc=0 f
  shift 2
  "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
  for f in "$TMP/out" "$TMP/err"; do
    if [[ -s "$f" && -n "$(tail -c1 "$f")" ]]; then
      say "$name: output without a final newline"; exit 1
    fi
  done
  {
    echo "# $what"
    echo "# Captured from $VERSION (scripts/local-slurm.sh) on $(date -u +%F)."
    echo "\$ $*"
    echo "exit: $rc"
    echo "--- stdout"
    cat "$TMP/out"
    echo "--- stderr"
    cat "$TMP/err"
  } >"$OUT/$name.txt"
  say "$name.txt: exit $rc, $(head -c 100 "$TMP/out" | tr '\n' ' ')$(head -c 100 "$TMP/err" | tr '\n' ' ')"
}

# submit ARGS...: sbatch a job of ours; its id in $id.
submit() {
  id=$(sbatch --parsable --chdir="$TMP" --output="$TMP/%j.out" "$@")
  id=${id%%;*}
  JOBS+=("$id")
}

# until_job ID PATTERN [SECONDS]: wait until `scontrol show job ID -o` matches PATTERN (grep -E).
until_job() {
  local deadline=$((SECONDS + ${3:-30}))
  until scontrol show job "$1" -o 2>/dev/null | grep -Eq "$2"; do
    ((SECONDS < deadline)) || { say "job $1 never matched $2"; scontrol show job "$1" -o >&2; exit 1; }
    sleep 0.5
  done
}

printf '#!/bin/bash\nsleep "${1:-300}"\n' >"$TMP/sleep.sh"
printf '#!/bin/bash\nexit 3\n' >"$TMP/exit3.sh"
printf '#!/bin/bash\nkill -KILL $$\n' >"$TMP/killed.sh"

[[ -z "$(squeue -h -o %i)" ]] || { say "the queue is not empty; run on an idle cluster"; squeue >&2; exit 1; }

# --- submission
cap sbatch-parsable "sbatch --parsable: a job that sleeps 1 s, accepted (stdout: the job id)" \
  sbatch --parsable --chdir="$TMP" --output="$TMP/%j.out" "$TMP/sleep.sh" 1
done_id=$(cut -d';' -f1 "$TMP/out")
JOBS+=("$done_id")
cap sbatch-rejected-too-many-nodes "sbatch --parsable --nodes=5 on 4 nodes: rejected at submit (EnforcePartLimits=ALL)" \
  sbatch --parsable --nodes=5 --chdir="$TMP" --output="$TMP/%j.out" "$TMP/sleep.sh" 1
submit "$TMP/exit3.sh"; failed_id=$id
submit "$TMP/killed.sh"; killed_id=$id
submit --time=1 "$TMP/sleep.sh" 150; timeout_id=$id

# --- ended jobs
until_job "$done_id" 'JobState=COMPLETED'
until_job "$failed_id" 'JobState=FAILED'
until_job "$killed_id" 'JobState=FAILED'
cap scontrol-completed "scontrol -o: a job that exited 0" scontrol show job "$done_id" -o
cap scontrol-failed-exit-3 "scontrol -o: a job whose script exited 3" scontrol show job "$failed_id" -o
cap scontrol-failed-killed "scontrol -o: a job whose script was killed by SIGKILL" scontrol show job "$killed_id" -o
cap squeue-ended "squeue -j: a job that ended (still known to slurmctld)" squeue -h -j "$done_id" -o %i
cap sacct-no-accounting "sacct on a cluster without accounting (no slurmdbd)" \
  sacct -n -X -P -o State,ExitCode -j "$done_id"
cap scancel-ended "scancel of a job that has ended" scancel "$done_id"
cap scontrol-unknown-id "scontrol -o: a job id slurmctld never had" scontrol show job 999999 -o
cap squeue-unknown-id "squeue -j: a job id slurmctld never had" squeue -h -j 999999 -o %i
cap scancel-unknown-id "scancel: a job id slurmctld never had" scancel 999999

# --- a full cluster: the timeout job holds one node, three sleepers the others
until_job "$timeout_id" 'JobState=RUNNING'
running=()
for _ in 1 2 3; do submit "$TMP/sleep.sh" 600; running+=("$id"); done
for j in "${running[@]}"; do until_job "$j" 'JobState=RUNNING'; done
cap scontrol-running "scontrol -o: a running job" scontrol show job "${running[0]}" -o
cap squeue-running "squeue -j: a running job" squeue -h -j "${running[0]}" -o %i

submit "$TMP/sleep.sh" 10; resources_id=$id
submit "$TMP/sleep.sh" 10; priority_id=$id
until_job "$resources_id" 'Reason=Resources'
until_job "$priority_id" 'Reason=Priority'
cap scontrol-pending-resources "scontrol -o: pending, every node busy (first in line)" \
  scontrol show job "$resources_id" -o
cap scontrol-pending-priority "scontrol -o: pending behind another pending job" \
  scontrol show job "$priority_id" -o
cap squeue-pending "squeue -j: a pending job" squeue -h -j "$resources_id" -o %i

submit "$TMP/sleep.sh" 10; held_id=$id
scontrol hold "$held_id"
until_job "$held_id" 'Reason=JobHeld'
cap scontrol-pending-held-admin "scontrol -o: held by root with \`scontrol hold\`" \
  scontrol show job "$held_id" -o
scontrol release "$held_id"
scontrol uhold "$held_id"
until_job "$held_id" 'Reason=JobHeldUser'
cap scontrol-pending-held-user "scontrol -o: held with \`scontrol uhold\` (a user hold)" \
  scontrol show job "$held_id" -o

submit --begin=now+1hour "$TMP/sleep.sh" 10
until_job "$id" 'Reason=BeginTime'
cap scontrol-pending-begin-time "scontrol -o: submitted with --begin=now+1hour" scontrol show job "$id" -o

submit --dependency=afterok:"${running[0]}" "$TMP/sleep.sh" 10
until_job "$id" 'Reason=Dependency'
cap scontrol-pending-dependency "scontrol -o: waiting for --dependency=afterok on a running job" \
  scontrol show job "$id" -o

# A request no node can meet. sbatch itself rejects it here (EnforcePartLimits=ALL), but
# `scontrol update` of a held job takes it, and the released job pends for good.
submit --hold "$TMP/sleep.sh" 10; limit_id=$id
until_job "$limit_id" 'Reason=JobHeldUser'
cap scontrol-pending-submitted-held "scontrol -o: submitted with sbatch --hold" scontrol show job "$limit_id" -o
scontrol update jobid="$limit_id" NumNodes=5
scontrol release "$limit_id"
until_job "$limit_id" 'Reason=PartitionNodeLimit'
cap scontrol-pending-node-limit "scontrol -o: asks for 5 nodes of a 4-node partition (NumNodes=5 set with scontrol update)" \
  scontrol show job "$limit_id" -o

# --- controller unreachable: a copy of slurm.conf naming a port nobody listens on
mkdir -p "$TMP/etc"
sed 's/^SlurmctldPort=.*/SlurmctldPort=16999/' "$SLURM_CONF" >"$TMP/etc/slurm.conf"
cap scontrol-controller-unreachable "scontrol -o with slurmctld unreachable (slurm.conf names a closed port)" \
  env SLURM_CONF="$TMP/etc/slurm.conf" scontrol show job "${running[0]}" -o
cap squeue-controller-unreachable "squeue -j with slurmctld unreachable (slurm.conf names a closed port)" \
  env SLURM_CONF="$TMP/etc/slurm.conf" squeue -h -j "${running[0]}" -o %i

# --- node failure: set the node of a running job DOWN, then resume it
node_fail_id=${running[2]}
DOWNED=$(squeue -h -j "$node_fail_id" -o %N)
scontrol update nodename="$DOWNED" state=down reason=capture-node-fail
until_job "$node_fail_id" 'JobState=NODE_FAIL'
cap scontrol-node-fail "scontrol -o: the job's node was set DOWN while it ran" scontrol show job "$node_fail_id" -o
resume "$DOWNED"
DOWNED=""

# --- cancellation
cancel_id=${running[1]}
cap scancel-running "scancel of a running job" scancel "$cancel_id"
cap scontrol-cancelling "scontrol -o: right after scancel of a running job" scontrol show job "$cancel_id" -o
until_job "$cancel_id" 'JobState=CANCELLED'
until_job "$cancel_id" 'EndTime=[0-9]'
sleep 3
cap scontrol-cancelled "scontrol -o: a running job cancelled with scancel" scontrol show job "$cancel_id" -o
cap squeue-cancelled "squeue -j: a job cancelled a moment ago" squeue -h -j "$cancel_id" -o %i

# --- timeout: --time=1 on a job that sleeps 150 s (the limit is enforced within ~30 s of 60 s)
until_job "$timeout_id" 'JobState=TIMEOUT' 150
cap scontrol-timeout "scontrol -o: --time=1 on a job that sleeps 150 s" scontrol show job "$timeout_id" -o

for j in "${JOBS[@]}"; do scancel "$j" 2>/dev/null || true; done

# --- purge: slurmctld forgets an ended job MinJobAge (600 s) after its end
if [[ -n "${CAPTURE_PURGED:-}" ]]; then
  say "waiting for slurmctld to purge job $done_id (up to 15 minutes)"
  deadline=$((SECONDS + 900))
  while scontrol show job "$done_id" -o >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { say "job $done_id was not purged"; exit 1; }
    sleep 10
  done
  cap scontrol-purged "scontrol -o: a job that ended more than MinJobAge (600 s) ago" \
    scontrol show job "$done_id" -o
  cap sacct-purged-no-accounting "sacct for the purged job, without accounting" \
    sacct -n -X -P -o State,ExitCode -j "$done_id"
  cap scancel-purged "scancel of the purged job" scancel "$done_id"
fi
say "done"
