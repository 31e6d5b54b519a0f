#!/usr/bin/env bash
# On the GPU machine (device tool), from the repository root, with .carry/lpeft-bench.xz and the
# stripped, xz'd test binaries .carry/{lpeft_model,mixed_precision,fused,cuda_graphs}.xz (as for
# tools/gpu/scale_kernel.sh): the CUDA tests (the add-norm kernels against the formulas in f64,
# bf16-mixed against fp32 and against libtorch's add-norm operations), then the graphed training
# step of each row with the add-norm kernels (`--norm-kernel on`, as the stages run bf16-mixed)
# and without (`off`: libtorch's operations), ROUNDS rounds (default 2), one process per run,
# alternating. A row is "SHAPE SEQ PRECISION [PEFT [FFN_WIDTHS]]" (PEFT default lora-all;
# light-lora: the pruned shape; FFN_WIDTHS lpeft-bench's --ffn-widths, default uniform);
# MODES (default "finetune:on finetune:off") are STEP:SWITCH pairs.
#
#   tools/gpu/norm_kernel.sh DEADLINE_S "SHAPE SEQ PRECISION [PEFT [FFN_WIDTHS]]" ...
#   -> $OUT/tests-cuda.log, $OUT/norm-kernel.jsonl
set -uo pipefail
deadline=$1; shift
rows=("$@")
source "$(dirname "$0")/carried_tests.sh"
unpack lpeft-bench lpeft_model mixed_precision fused cuda_graphs
cuda_tests --test-threads 1 -- lpeft_model mixed_precision fused cuda_graphs
one() {  # ROUND STEP SWITCH SHAPE SEQ PRECISION PEFT WIDTHS
  timeout 90 "$T/lpeft-bench" --backend tch-cuda --shape "$4" --peft "$7" --ffn-widths "$8" \
    --seq "$5" --precision "$6" --batch 32 --graphs on --iters 30 --warmup 3 --step "$2" \
    --norm-kernel "$3" | sed "s/^{/{\"round\":$1,/" >> "$OUT/norm-kernel.jsonl"
}
bench_rows one "finetune:on finetune:off" "${rows[@]}"
python3 - "$OUT/norm-kernel.jsonl" <<'PY'
import json, sys
from collections import defaultdict
med = defaultdict(list)
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(r["round"], r["shape"], r["seq"], r["precision"], r["peft"], r["ffn_widths"], r["step"], "norm",
          r["norm_kernel"], r["scale_kernel"], f'{r["median_s"]*1e3:.2f} ms')
    med[(r["shape"], r["seq"], r["precision"], r["step"], r["norm_kernel"], r["peft"], r["ffn_widths"])].append(r["median_s"])
print("pruned over vanilla (best round of each; LoRA(all) at its own widths):")
for (shape, seq, prec, step, norm, peft, widths), v in sorted(med.items()):
    if peft != "light-lora":
        continue
    vanilla = [m for k, m in med.items() if k[:5] == (shape, seq, prec, step, norm) and k[5] == "lora-all"]
    if vanilla:
        print(f"  {shape} {seq} {prec} {step} norm {norm}, pruned widths {widths}: {min(vanilla[0])/min(v):.3f}x")
PY
