#!/usr/bin/env bash
# On the GPU machine (device tool), from the repository root, with .carry/lpeft-bench.xz and
# .carry/liblpeft_bench.so.xz (tch builds of lpeft-bench and of its library as a cdylib):
# where an estimation step's time goes (issue 14: it costs 1.4-2.9x a fine-tune step in the
# pipeline). Three parts, each under its own deadline:
#   1. the steady-state step of both stages on one shape, graphed as in the pipeline
#      (`lpeft-bench --graphs on --step finetune|estimate`, median of 20 steps after 3), so the
#      stage's per-capture cost is out of the comparison;
#   2. both steps under PyTorch's profiler, not graphed: kernels, GPU busy time and libtorch
#      operators per step (bench/profile_step.py);
#   3. the plain (not graphed) step of both, for the per-operation host cost.
#
#   tools/gpu/estimation_step.sh [SHAPE ...]     (default: minilm roberta-base)
#   SEQ=64 BATCH=32 PRECISIONS="fp32 bf16-mixed" to change the rows
#   -> $OUT/bench-graphs.jsonl (parts 1 and 3), $OUT/profile/*.md and summary.jsonl (part 2)
set -uo pipefail
shapes=${*:-minilm roberta-base}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/profile"
seq=${SEQ:-64}; batch=${BATCH:-32}
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
lib=$(mktemp -d)/liblpeft_bench.so
xz -dc .carry/liblpeft_bench.so.xz > "$lib"
rows=()
for s in $shapes; do
  for p in ${PRECISIONS:-fp32 bf16-mixed}; do
    for step in finetune estimate; do
      rows+=("$s lora-all $seq $p --batch $batch --step $step")
    done
  done
done
OUT=$OUT GRAPHS=on bash tools/gpu/bench_graphs.sh 240 "${rows[@]}" > /dev/null
for s in $shapes; do
  for step in finetune estimate; do
    timeout 90 python3 bench/profile_step.py --side ours --lib "$lib" --device cuda --shape "$s" \
      --peft lora-all --precision bf16-mixed --batch "$batch" --seq "$seq" --step "$step" \
      --out "$OUT/profile" >> "$OUT/profile/summary.jsonl" 2>> "$OUT/profile/profile.log"
  done
done
rows=()
for s in $shapes; do
  for step in finetune estimate; do rows+=("$s lora-all $seq bf16-mixed --batch $batch --step $step"); done
done
OUT=$OUT GRAPHS=off bash tools/gpu/bench_graphs.sh 90 "${rows[@]}" > /dev/null
python3 - "$OUT/bench-graphs.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {(r["shape"], r["precision"], r["graphs"], r.get("step")): r["median_s"] for r in rows}
print("| shape | precision | graphs | fine-tune step ms | estimation step ms | estimation / fine-tune |")
print("|---|---|---|---|---|---|")
for (shape, prec, graphs, step), t in sorted(by.items()):
    if step != "estimate" or (shape, prec, graphs, "finetune") not in by:
        continue
    f = by[(shape, prec, graphs, "finetune")]
    print(f"| {shape} | {prec} | {graphs} | {f*1e3:.2f} | {t*1e3:.2f} | {t/f:.2f} |")
PY
ls -la "$OUT" "$OUT/profile"
