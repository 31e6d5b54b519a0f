#!/usr/bin/env bash
# On the GPU machine (device tool), from the repository root, with .carry/ holding lpeft.xz
# (tch build), minilm-fp16/ and superglue.tar.xz (the five task folders of ../shared/data/superglue):
# pipelines/superglue.ron's full profile (official train/val files, 800 estimation steps, 10
# epochs) for vanilla LoRA(all), Light-PEFT LoRA at the reference ratios and at `r2`, the seeds given.
#
#   tools/gpu/superglue.sh DEADLINE_S SEED...      e.g. tools/gpu/superglue.sh 540 1 2
# One `lpeft run` per seed, so a deadline cuts whole seeds.
# Writes into $OUT logs.tar.xz (run.log, nvidia-smi.log) and store.tar.xz.* (the fine-tune
# artifacts, for tools/gpu/import.sh here; then `lpeft report`, as docs/superglue.md says).
set -uo pipefail
deadline=$1; shift; seeds=("$@")
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
W=$(mktemp -d); mkdir -p "$W/logs"
start=$(date +%s)
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
export MODEL_DIR=.carry/minilm-fp16 SUPERGLUE_DIR=$W/superglue
xz -dc .carry/lpeft.xz > "$W/lpeft" && chmod +x "$W/lpeft"
tar -C "$W" -xJf .carry/superglue.tar.xz
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "$W/logs/nvidia-smi.log" 2>&1 &
smi=$!
for s in "${seeds[@]}"; do
  left=$(( deadline - ($(date +%s) - start) ))
  timeout "$left" "$W/lpeft" run pipelines/superglue.ron --profile full --backend tch-cuda \
    --set "seeds=[$s]" --only 'data-*' --only 'estimate-*-lora-*' --only 'surgery-*-lora-*' \
    --only 'ft-*-lora-all-*' --only 'ft-*-light-lora-*' --jobs 1 >> "$W/logs/run.log" 2>&1
  echo "seed $s: run exit $? at $(( $(date +%s) - start )) s" >> "$W/logs/run.log"
done
kill $smi 2>/dev/null
tar -C "$W" -cJf "$OUT/logs.tar.xz" logs
bash tools/gpu/pack_finetunes.sh "$OUT"
ls -la "$OUT"; grep -c RAN "$W/logs/run.log"; tail -4 "$W/logs/run.log"
