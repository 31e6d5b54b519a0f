#!/usr/bin/env bash
# On the GPU machine (device tool), from the repository root, with .carry/lpeft-bench.xz: the
# training step with CUDA graphs on and off (`lpeft-bench --graphs`), one process per row,
# alternating, for vanilla LoRA(all) and the pruned shapes, at the rows' sequence lengths.
#
#   tools/gpu/bench_graphs.sh DEADLINE_S "SHAPE PEFT SEQ PRECISION" ...
#   PRECISION: fp32 | tf32 | bf16-mixed | bf16-pure (lpeft-bench --precision); anything after
#   it goes to lpeft-bench as is ("roberta-base light-r2 64 bf16-mixed --ffn-widths irregular")
#   -> $OUT/bench-graphs.jsonl (one JSON line per run, with "precision" and "graphs")
set -uo pipefail
deadline=$1; shift
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
start=$(date +%s)
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
B=$(mktemp -d)/lpeft-bench
xz -dc .carry/lpeft-bench.xz > "$B" && chmod +x "$B"
for row in "$@"; do
  set -- $row
  for graphs in ${GRAPHS:-off on}; do
    [ $(( deadline - ($(date +%s) - start) )) -gt 20 ] || break 2
    timeout 90 "$B" --backend tch-cuda --shape "$1" \
      --peft "$2" --seq "$3" --precision "$4" --graphs "$graphs" --iters 20 --warmup 3 "${@:5}" \
      | sed "s/^{/{\"graphs\":\"$graphs\",/" >> "$OUT/bench-graphs.jsonl"
  done
done
cat "$OUT/bench-graphs.jsonl"
