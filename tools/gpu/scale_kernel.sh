#!/usr/bin/env bash
# On the GPU machine (device tool), from the repository root, with .carry/lpeft-bench.xz and the
# stripped, xz'd test binaries .carry/{lpeft_model,mixed_precision,fused,cuda_graphs}.xz
# (`cargo test --release -p lpeft-model --features tch --lib --test mixed_precision --test
# fused --no-run`, lpeft-train's cuda_graphs with `--features lpeft-model/tch`): the CUDA tests
# (the scaling kernels against libtorch's products, bit for bit), then the estimation step with
# the masks' bf16 scaling in its kernels (the default) against libtorch's products
# (LPEFT_SCALE_KERNEL=off), beside the fine-tune step of the same shape; graphed, as the stages
# run on CUDA. ROUNDS rounds (default 2), one process per row, alternating. A row's PEFT
# (default lora-all) is lpeft-bench's --peft (light-lora: the pruned shape); MODES (default
# "finetune:on estimate:off estimate:on") are STEP:SWITCH pairs, SWITCH the kernels'
# (LPEFT_SCALE_KERNEL: off also turns off the bf16 -> f32 widening kernel of the hand-backs).
#
#   tools/gpu/scale_kernel.sh DEADLINE_S "SHAPE SEQ PRECISION [PEFT]" ...
#   -> $OUT/tests-cuda.log, $OUT/scale-kernel.jsonl
set -uo pipefail
deadline=$1; shift
rows=("$@")
source "$(dirname "$0")/carried_tests.sh"
unpack lpeft-bench lpeft_model mixed_precision fused cuda_graphs
cuda_tests --test-threads 1 -- lpeft_model mixed_precision fused cuda_graphs
one() {  # ROUND STEP SWITCH SHAPE SEQ PRECISION PEFT WIDTHS
  LPEFT_SCALE_KERNEL=$3 timeout 90 "$T/lpeft-bench" --backend tch-cuda --shape "$4" --peft "$7" \
    --seq "$5" --precision "$6" --batch 32 --graphs on --iters 30 --warmup 3 --step "$2" \
    | sed "s/^{/{\"round\":$1,\"kernel_switch\":\"$3\",/" >> "$OUT/scale-kernel.jsonl"
}
bench_rows one "finetune:on estimate:off estimate:on" "${rows[@]}"
python3 - "$OUT/scale-kernel.jsonl" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(r["round"], r["shape"], r["seq"], r["precision"], r["peft"], r["step"], r["kernel_switch"],
          r["scale_kernel"], f'{r["median_s"]*1e3:.2f} ms')
PY
