#!/usr/bin/env bash
# On the GPU machine (device tool), from the repository root, with .carry/ from tools/gpu/pack.sh
# plus .carry/lpeft-bench.xz and .carry/mixed_precision.xz (the stripped, xz'd test binary of
# `cargo test --release -p lpeft-model --features tch --test mixed_precision --no-run`):
# the stages' `precision: bf16-mixed` (issue 14 item 2) in one call.
#  1. tests/mixed_precision.rs on CUDA (bf16-mixed against fp32 through the CUDA kernels);
#  2. lpeft-bench, graphed training step, TF32 and bf16-mixed, vanilla LoRA(all) and the
#     Light-PEFT-pruned shape, roberta-base and roberta-large, with peak memory; then the HF
#     peer's autocast rows of the same shapes (bench/gpu_bench.py pairs bf16-mixed with them);
#  3. accuracy: vanilla LoRA(all) on STS-B and MRPC under bf16-mixed, seeds 1-3, side by side
#     (tools/gpu/fidelity.sh; compare with docs/fidelity.md's fp32 runs of the same keys' recipe).
#
#   tools/gpu/precision.sh [DEADLINE_S]      -> $OUT/precision.tar.xz
set -uo pipefail
deadline=${1:-540}
OUT=${OUT:-/tmp/out}; R=$OUT/precision; mkdir -p "$R"
start=$(date +%s)
left() { echo $(( deadline - ($(date +%s) - start) )); }
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
T=$(mktemp -d)
xz -dc .carry/mixed_precision.xz > "$T/mixed" && chmod +x "$T/mixed"
xz -dc .carry/lpeft-bench.xz > "$T/lpeft-bench" && chmod +x "$T/lpeft-bench"
( LPEFT_TEST_DEVICE=tch-cuda timeout 90 "$T/mixed" --nocapture; echo "rc=$?" ) > "$R/test-mixed-cuda.log" 2>&1
tail -3 "$R/test-mixed-cuda.log"
timeout 200 python3 bench/gpu_bench.py --bench "$T/lpeft-bench" --out "$R/ours" --only ours --graphs on \
  --shapes roberta-base roberta-large --peft lora-all light-lora --precision tf32 bf16-mixed \
  --iters 20 --warmup 3 > "$R/ours.log" 2>&1
echo "bench, ours: $(( $(date +%s) - start )) s"
timeout 150 python3 bench/gpu_bench.py --bench "$T/lpeft-bench" --out "$R/peer" --only peer \
  --shapes roberta-base roberta-large --peft lora-all light-lora --precision bf16-mixed \
  --iters 20 --warmup 3 > "$R/peer.log" 2>&1
echo "bench, peer: $(( $(date +%s) - start )) s"
g(){ echo "--set 'tasks=[{\"name\":\"$1\",\"epochs\":10}]' --set 'seeds=[$2]' --set precision=bf16-mixed --only 'ft-*-lora-all-*'"; }
OUT=$R/accuracy REPORT_SET=precision=bf16-mixed bash tools/gpu/fidelity.sh final "$(left)" "$(g stsb 1)" "$(g stsb 2)" "$(g stsb 3)" \
  "$(g mrpc 1)" "$(g mrpc 2)" "$(g mrpc 3)" > "$R/accuracy.log" 2>&1
echo "all: $(( $(date +%s) - start )) s"
tar -C "$OUT" -cJf "$OUT/precision.tar.xz" precision && rm -rf "$R" && ls -la "$OUT"
