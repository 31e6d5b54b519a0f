#!/usr/bin/env bash
# What one all-reduce of a fine-tune's gradient costs on libtorch CUDA (docs/cluster.md,
# "Data-parallel training inside one fine-tune"): the LoRA(all) trainable sets of roberta-base
# and OPT-1.3b, 50M floats and OPT-1.3b's full gradient, across the peers in DEVICES (default:
# two peers on one GPU), through burn's collective API, burn's to_device and the host
# (lpeft-allreduce's modes).
#
# Here, once: the tch release build of lpeft-allreduce, stripped and xz'd into .carry/:
#   tools/gpu/collective.sh pack [BINARY]     # BINARY: target/tch/release/lpeft-allreduce
# There (device tool, carry [".carry/lpeft-allreduce.xz"]), from the repository root:
#   tools/gpu/collective.sh [DEADLINE_S]      # default 500
#   DEVICES=tch-cuda:0,tch-cuda:1 tools/gpu/collective.sh   # two GPUs (kind nvidia-h200-x2)
#   ROWS="SET ITERS BUDGET_S;..." to change the rows (default below)
#   -> $OUT/collective.jsonl (one JSON line per set and mode), $OUT/collective.log, $OUT/gpu.txt
set -uo pipefail
cd "$(dirname "$0")/../.."
if [ "${1:-}" = pack ]; then
  bin=${2:-target/tch/release/lpeft-allreduce}
  mkdir -p .carry
  strip -o .carry/lpeft-allreduce "$bin" && xz -T2 -6 -f .carry/lpeft-allreduce
  du -h .carry/lpeft-allreduce.xz
  exit
fi
deadline=${1:-500}
devices=${DEVICES:-tch-cuda:0,tch-cuda:0}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
start=$(date +%s)
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
B=$(mktemp -d)/lpeft-allreduce
xz -dc .carry/lpeft-allreduce.xz > "$B" && chmod +x "$B"
{ nvidia-smi --query-gpu=index,name,memory.total,pcie.link.gen.max,pcie.link.width.max --format=csv
  nvidia-smi topo -m; } > "$OUT/gpu.txt" 2>&1
# One process per set, so that a hang (a peer stuck at a barrier) costs only its own row.
IFS=";" read -ra rows <<< "${ROWS:-lora-all 20 30;opt-1.3b-lora-all 20 30;full:50M 10 60;opt-1.3b 5 120}"
for row in "${rows[@]}"; do
  set -- $row
  left=$(( deadline - ($(date +%s) - start) ))
  [ "$left" -gt 30 ] || break
  timeout $(( left < 240 ? left : 240 )) "$B" --devices "$devices" --sets "$1" \
    --modes burn,to-device,host --iters "$2" --warmup 2 --budget-s "$3" \
    >> "$OUT/collective.jsonl" 2>> "$OUT/collective.log"
  echo "$1: exit $?" >> "$OUT/collective.log"
done
cat "$OUT/collective.jsonl"
