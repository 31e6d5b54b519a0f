#!/usr/bin/env bash
# `lpeft slurm submit` against a real single-node Slurm on this machine: installs Debian's
# slurm-wlm and munge if missing (root, Debian's mirror), starts munged, slurmctld and slurmd on
# private sockets, ports and state under a temporary directory (the node: localhost, CPUs=2, no
# GPUs), submits the smoke profile of glue.ron on RTE with one seed (flex: no job asks for a
# GPU), waits for every job, then checks that each COMPLETED, that `lpeft verify --all` passes
# and that a plan finds every stage in the store. The daemons are stopped on exit, whatever
# happens; any failure exits non-zero with the logs that explain it.
#
#   tests/slurm/run.sh [LPEFT_BINARY]      (default: target/debug/lpeft; run from anywhere)
set -euo pipefail
cd "$(dirname "$0")/../.."
LPEFT=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/debug/lpeft}")
TIMEOUT_S=${SLURM_TEST_TIMEOUT_S:-900}
[ -x "$LPEFT" ] || { echo "slurm test: no lpeft binary at $LPEFT (cargo build -p lpeft-cli)" >&2; exit 1; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    SUDO=()
    [ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)
    if ! command -v apt-get >/dev/null || { [ ${#SUDO[@]} -gt 0 ] && ! sudo -n true 2>/dev/null; }; then
        # Without root (or sudo) and apt-get nothing can be installed: say so loudly and skip,
        # rather than fail every run on such a machine. Anything else that goes wrong fails.
        echo "== slurm test SKIPPED: slurm-wlm/munge are not installed and cannot be (needs apt-get as root)" >&2
        exit 0
    fi
    echo "== installing slurm-wlm and munge"
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# Paths with a space: the jobs must quote them.
WORK=$(mktemp -d /tmp/lpeft-slurm.XXXXXX)
STORE="$WORK/shared store"
SCRIPTS="$WORK/job scripts"
export SLURM_CONF="$WORK/slurm.conf"
PIDS=()
status=1

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "$status" -ne 0 ]; then
        echo "== slurm test FAILED; logs under $WORK" >&2
        for f in "$WORK"/slurmctld.log "$WORK"/slurmd.log "$SCRIPTS"/logs/*.out; do
            [ -f "$f" ] && { echo "--- $f" >&2; tail -n 25 "$f" >&2; }
        done
    else
        rm -rf "$WORK"
    fi
}
trap 'status=$?; cleanup; exit $status' EXIT

# munge: our own key, socket and files, so a system munged (if any) is left alone.
mkdir -p "$WORK/munge"
chmod 700 "$WORK/munge"
dd if=/dev/urandom of="$WORK/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$WORK/munge/munge.key"
SOCKET="$WORK/munge/munge.socket"
munged -F --force --key-file="$WORK/munge/munge.key" --socket="$SOCKET" \
    --pid-file="$WORK/munge/munged.pid" --log-file="$WORK/munge/munged.log" \
    --seed-file="$WORK/munge/munged.seed" >"$WORK/munge/munged.out" 2>&1 &
PIDS+=($!)

PORT=$((20000 + RANDOM % 20000))
mkdir -p "$WORK/state" "$WORK/spool"
cat >"$SLURM_CONF" <<EOF
ClusterName=lpeft-test
SlurmctldHost=localhost
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=3600
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

for _ in $(seq 50); do [ -S "$SOCKET" ] && break; sleep 0.1; done
[ -S "$SOCKET" ] || { echo "munged did not start" >&2; cat "$WORK/munge/munged.log" >&2; exit 1; }
slurmctld -D -c -i >"$WORK/slurmctld.out" 2>&1 &
PIDS+=($!)
slurmd -D -N localhost >"$WORK/slurmd.out" 2>&1 &
PIDS+=($!)

echo "== waiting for the node"
for _ in $(seq 120); do
    state=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 0.5
done
[ "$state" = idle ] || { echo "the node did not come up (state: ${state:-none})" >&2; exit 1; }

echo "== lpeft slurm submit (glue.ron, smoke, RTE, seed 1)"
t0=$(date +%s)
"$LPEFT" --store "$STORE" slurm submit pipelines/glue.ron --profile smoke \
    --set 'tasks=["rte"]' --set 'seeds=[1]' --scripts "$SCRIPTS" | tee "$WORK/submit.out"
ids=$(awk '/^submitted .* as job [0-9]+$/ { print $NF }' "$WORK/submit.out")
[ -n "$ids" ] || { echo "no job was submitted" >&2; exit 1; }
grep -q -- --gres= "$SCRIPTS/submit.sh" && { echo "a flex job asked for a GPU" >&2; exit 1; }

echo "== waiting for $(echo "$ids" | wc -w) jobs"
while [ -n "$(squeue -h -o %i)" ]; do
    if [ $(( $(date +%s) - t0 )) -gt "$TIMEOUT_S" ]; then
        echo "jobs still queued after ${TIMEOUT_S}s:" >&2
        squeue >&2
        exit 1
    fi
    sleep 2
done
failed=0
for id in $ids; do
    state=$(scontrol show job "$id" | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
    name=$(scontrol show job "$id" | sed -n 's/.*JobName=\([^ ]*\).*/\1/p')
    echo "  job $id $name: $state"
    [ "$state" = COMPLETED ] || failed=1
done
[ "$failed" -eq 0 ] || { echo "some jobs did not complete" >&2; exit 1; }
echo "== jobs done in $(( $(date +%s) - t0 )) s"

"$LPEFT" --store "$STORE" verify --all
plan=$("$LPEFT" --store "$STORE" plan pipelines/glue.ron --profile smoke --set 'tasks=["rte"]' --set 'seeds=[1]')
echo "$plan" | tail -n 1
echo "$plan" | grep -q ', 0 run' || { echo "stages are missing after the jobs:" >&2; echo "$plan" >&2; exit 1; }
echo "== slurm test passed"
