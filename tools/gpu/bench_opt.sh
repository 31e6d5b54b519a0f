#!/usr/bin/env bash
# On the GPU machine (device tool), from the repository root, with .carry/lpeft-bench.xz (the tch
# build of lpeft-bench, stripped and xz'd): the OPT rows of bench/gpu_bench.py, ours beside the
# HF PEFT peer (transformers' OPTForSequenceClassification / OPTForCausalLM built on the GPU in
# bf16), one process per row and side: opt-1.3b then opt-6.7b, sequence classification and the
# causal-LM step, vanilla LoRA(all) and the Light-PEFT-pruned shape (light-lora), every tensor
# in bf16 (bf16-pure), batch 16, sequence 256, the median of 10 steps after 3.
#
#   tools/gpu/bench_opt.sh DEADLINE_S [SHAPE ...]   (default shapes: opt-1.3b opt-6.7b)
#   PEFT="lora-all light-lora" PRECISION=bf16-pure TASKS="seq-cls causal-lm" to change the rows
#   -> $OUT/opt-bench.jsonl (one JSON line per run and phase, peak_mib from nvidia-smi),
#      $OUT/opt-bench.md (the table), $OUT/opt-bench.log (every command's output)
# No run starts once DEADLINE_S less the longest run so far has passed; a run stops after 150 s.
set -uo pipefail
deadline=$1; shift
shapes=${*:-opt-1.3b opt-6.7b}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
B=$(mktemp -d)/lpeft-bench
xz -dc .carry/lpeft-bench.xz > "$B" && chmod +x "$B"
W=$(mktemp -d)
# shellcheck disable=SC2086
PYTHONUNBUFFERED=1 python3 bench/gpu_bench.py --bench "$B" --out "$W" --shapes $shapes \
  --tasks ${TASKS:-seq-cls causal-lm} --peft ${PEFT:-lora-all light-lora} \
  --precision ${PRECISION:-bf16-pure} --batch 16 --seq 256 --iters 10 --warmup 3 \
  --deadline-s "$deadline" --timeout-s 150
for f in jsonl md log; do cp "$W/bench.$f" "$OUT/opt-bench.$f" 2>/dev/null; done
cat "$OUT/opt-bench.md" 2>/dev/null
