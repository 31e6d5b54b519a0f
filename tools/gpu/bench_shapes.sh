#!/usr/bin/env bash
# On the GPU machine (device tool), from the repository root, with .carry/lpeft-bench.xz: the
# training step of vanilla LoRA(all) and of the Light-PEFT-pruned shape (`--peft light-lora`) on
# the roberta-base and roberta-large shapes, TF32 and bf16, one process each, alternating; the
# pruned shape also with GEMM padding off (`--ffn-align 1`: FFN widths and LoRA ranks as they
# are) in both precisions, to show what the padding does; and the pipeline's r2 shape
# (`--peft light-r2`: every module at rank 2), with and without padding.
#
#   tools/gpu/bench_shapes.sh DEADLINE_S   -> $OUT/bench-shapes.jsonl (one JSON line per run)
set -uo pipefail
deadline=$1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
start=$(date +%s)
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
B=$(mktemp -d)/lpeft-bench
xz -dc .carry/lpeft-bench.xz > "$B" && chmod +x "$B"
for shape in roberta-base roberta-large; do
  for prec in tf32 bf16; do
    ours=$prec; [ "$prec" = bf16 ] && ours=bf16-pure
    for run in "lora-all auto" "light-lora auto" "light-lora 1" "light-r2 auto" "light-r2 1"; do
      set -- $run
      [ $(( deadline - ($(date +%s) - start) )) -gt 20 ] || break 3
      timeout 60 "$B" --backend tch-cuda --shape "$shape" \
        --peft "$1" --precision "$ours" --ffn-align "$2" --iters 10 --warmup 3 \
        >> "$OUT/bench-shapes.jsonl"
    done
  done
done
cat "$OUT/bench-shapes.jsonl"
