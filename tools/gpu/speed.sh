#!/usr/bin/env bash
# On the GPU machine (device tool), from the repository root, with .carry/ from tools/gpu/pack.sh:
# the whole-pipeline benchmark of pipelines/speed.ron for one profile. After an untimed warm-up
# fine-tune (a scratch store, 256 examples), per task, one process
# at a time: vanilla LoRA(all)'s fine-tune; Light-PEFT's estimate + surgeries (one per cut of
# speed.ron's `cuts`); each cut's fine-tune (its own process, so that its device-memory peak is
# its own and not the estimation's cached blocks); then the HF PEFT peer's vanilla fine-tune of
# the same recipe for the tasks after `--`, while the deadline allows. Ends with bench/pipeline_speed.py's table.
#
#   tools/gpu/speed.sh PROFILE DEADLINE_S TASK... [-- PEER_TASK...]
#   PROFILE roberta-base* first writes a random-weight checkpoint (bench/random_checkpoint.py;
#   TOKENIZER_DIR: where its tokenizer files are, default .carry/minilm-fp16).
#   CUTS="r2 ref" (the default): the cuts timed, by name (speed.ron's `cuts`).
#   FFN_MULTIPLE=8: the surgery keeps a multiple of 8 FFN neurons per layer (default 1).
#   PRECISION=fp32|tf32|bf16-mixed (default fp32): the stages' `precision`; the peer runs the
#   same (--tf32, or --bf16: autocast over fp32 weights).
# Writes $OUT/speed-PROFILE.tar.xz: logs, plan.json, the stages' manifests and results, records.jsonl.
set -uo pipefail
profile=$1; deadline=$2; shift 2
backend=${BACKEND:-tch-cuda}
tasks=(); peer=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; peer=("$@"); break; fi
  tasks+=("$1"); shift
done
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
W=$(mktemp -d); mkdir -p "$W/speed"
start=$(date +%s)
left() { echo $(( deadline - ($(date +%s) - start) )); }
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
export GLUE_DIR=$W/glue MODEL_DIR=.carry/minilm-fp16
xz -dc .carry/lpeft.xz > "$W/lpeft" && chmod +x "$W/lpeft"
tar -C "$W" -xJf .carry/glue.tar.xz
L=$W/lpeft
# libtorch's libraries, and the CUDA libraries of the torch wheel's `nvidia-*` packages
# (cuBLAS, cuDNN, ...), into the page cache before anything is timed: otherwise the first stage
# (vanilla's fine-tune) reads from disk the kernels it is the first to use and pays seconds the
# later stages do not.
nvidia_libs=$(python3 -c 'import os,torch;print(os.path.join(os.path.dirname(os.path.dirname(torch.__file__)),"nvidia"))')
cat "$LD_LIBRARY_PATH"/*.so* "$L" > /dev/null
find "$nvidia_libs" -name '*.so*' -type f -exec cat {} + > /dev/null 2>&1 || true
limit=()
if [[ "$profile" == roberta-base* ]]; then
  python3 bench/random_checkpoint.py --shape roberta-base --seed 1 --tokenizer "${TOKENIZER_DIR:-.carry/minilm-fp16}" \
    --out "$W/roberta-base-random" > "$W/speed/checkpoint.log" 2>&1
  export MODEL_DIR=$W/roberta-base-random
  # The peer reads the same examples as the profile (roberta-base: the first 8,000).
  [ "$profile" = roberta-base ] && limit=(--limit 8000)
fi
precision=${PRECISION:-fp32}
peer_precision=()
[ "$precision" = tf32 ] && peer_precision=(--tf32)
[ "$precision" = bf16-mixed ] && peer_precision=(--bf16)
sets=(--set "precision=$precision" --set "ffn_multiple=${FFN_MULTIPLE:-1}")
run() { timeout "$(left)" $L run pipelines/speed.ron --profile "$profile" --backend "$backend" \
  "${sets[@]}" "$@"; }

run --only 'data-*' --jobs 4 > "$W/speed/run-data.log" 2>&1
# One throwaway vanilla fine-tune of the first task on 256 examples, into a scratch store,
# before anything is timed: on a fresh machine the CUDA driver compiles (and caches in
# ~/.nv/ComputeCache) kernels the first process is the first to use, which cost vanilla's
# first bf16-mixed evaluation pass about 3.5 s that no later stage paid
# (docs/benchmarks.md, session 15; tools/gpu/first_eval.sh). Its estimation likewise compiles
# the masks' scaling kernels once for this machine (NVRTC, cached in ~/.cache/lpeft/kernels;
# session 16), which no timed estimation then waits for.
run --store "$W/warm-up-store" --set max_examples=256 --only "data-${tasks[0]}*" \
  --only "ft-${tasks[0]}-lora-all-*" --only "estimate-${tasks[0]}-*" > "$W/speed/run-warm-up.log" 2>&1
ls -l "${LPEFT_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lpeft/kernels}" >> "$W/speed/run-warm-up.log" 2>&1
for t in "${tasks[@]}"; do
  run --only "ft-$t-lora-all-*" > "$W/speed/run-$t-vanilla.log" 2>&1
  run --only "estimate-$t-*" --only "surgery-$t-*" > "$W/speed/run-$t-estimate.log" 2>&1
  for c in ${CUTS:-r2 ref}; do
    run --only "ft-$t-light-$c-*" > "$W/speed/run-$t-light-$c.log" 2>&1
  done
done
for t in "${peer[@]}"; do
  [ "$(left)" -gt 40 ] || break
  # The profiles' epochs: SST-2 3, the others 10 (the reference's recipe, `*-paper`: all 10).
  ep=10; [ "$t" = sst2 ] && [[ "$profile" != *-paper ]] && ep=3
  timeout "$(left)" python3 bench/peers/hf_peft_glue.py --glue-dir "$GLUE_DIR" --model "$MODEL_DIR" \
    --task "$t" --method lora-all --seed 1 --epochs $ep "${limit[@]}" "${peer_precision[@]}" --out "$W/speed/peer.jsonl" \
    >> "$W/speed/peer.log" 2>&1
done

$L plan pipelines/speed.ron --profile "$profile" --backend "$backend" "${sets[@]}" --json > "$W/speed/plan.json"
python3 bench/pipeline_speed.py --plan "$W/speed/plan.json" --store artifacts \
  --peer "$W/speed/peer.jsonl" --label "$profile" --out "$W/speed/records.jsonl" \
  > "$W/speed/table.md" 2>&1
nvidia-smi --query-gpu=name,driver_version --format=csv > "$W/speed/gpu.txt" 2>&1
echo "wall $(( $(date +%s) - start )) s" >> "$W/speed/table.md"
# The stages' own records (no tensors): enough to remake the table here.
for k in $(python3 -c 'import json,sys;print(" ".join(s["key"] for s in json.load(open(sys.argv[1]))["stages"]))' "$W/speed/plan.json"); do
  d=artifacts/objects/$k
  [ -d "$d" ] || continue
  mkdir -p "$W/speed/objects/$k"
  cp "$d"/manifest.json "$W/speed/objects/$k/"
  for f in result.json curve.json estimate.json; do [ -f "$d/$f" ] && cp "$d/$f" "$W/speed/objects/$k/"; done
done
tar -C "$W" -cJf "$OUT/speed-$profile.tar.xz" speed
cat "$W/speed/table.md"
