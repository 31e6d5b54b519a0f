#!/usr/bin/env bash
# On the GPU machine (device tool), from the repository root, with .carry/liblpeft_bench.so.xz:
# where a training step's time goes (bench/profile_step.py: wall time against GPU busy time,
# kernels, launches, libtorch operators) for vanilla LoRA(all) and the pipeline's pruned `r2`
# shape, with and without GEMM padding, at the short sequences the pipeline's batches have
# and at 128, beside the HF peer; one process per run.
#
#   tools/gpu/profile.sh DEADLINE_S "SHAPE PEFT SEQ ALIGN SIDE" ...
#   -> $OUT/profile/summary.jsonl (one line per run) and $OUT/profile/*.md (tables per run)
set -uo pipefail
deadline=$1; shift
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/profile"
start=$(date +%s)
lib=$(mktemp -d)/liblpeft_bench.so
xz -dc .carry/liblpeft_bench.so.xz > "$lib"
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
for run in "$@"; do
  set -- $run
  [ $(( deadline - ($(date +%s) - start) )) -gt 30 ] || { echo "deadline: skipped $run"; continue; }
  timeout 120 python3 bench/profile_step.py --side "$5" --lib "$lib" --device cuda --shape "$1" \
    --peft "$2" --seq "$3" --ffn-align "$4" --precision fp32 --out "$OUT/profile" \
    >> "$OUT/profile/summary.jsonl" 2> >(tail -3 >&2)
done
cat "$OUT/profile/summary.jsonl"
