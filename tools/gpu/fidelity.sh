#!/usr/bin/env bash
# On the GPU machine (device tool), from the repository root, with .carry/ from tools/gpu/pack.sh:
# runs pipelines/fidelity.ron for a profile as one `lpeft run` process per group, side by side
# (the store's locks make a shared store safe), optionally the HF peer beside them, then the
# report, and packs the fine-tune artifacts so one report over several calls can be made here
# (tools/gpu/import.sh).
#
#   tools/gpu/fidelity.sh PROFILE DEADLINE_S 'GROUP1' 'GROUP2' ... [-- PEER_TASK...]
#   a GROUP is extra `lpeft run` arguments, e.g. "--set 'tasks=[{\"name\":\"cola\",\"epochs\":10}]' --set 'seeds=[1]'"
# Writes into $OUT (the device tool brings back at most 8 files): logs.tar.xz (run-*.log,
# peer.jsonl, peer.log, nvidia-smi.log, report/) and store.tar.xz.* (parts of 15 MiB, at most 7).
set -uo pipefail
profile=$1; deadline=$2; shift 2
backend=${BACKEND:-tch-cuda}
groups=(); peer=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; peer=("$@"); break; fi
  groups+=("$1"); shift
done
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
W=$(mktemp -d); mkdir -p "$W/logs"
start=$(date +%s)
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
export GLUE_DIR=$W/glue MODEL_DIR=.carry/minilm-fp16
xz -dc .carry/lpeft.xz > "$W/lpeft" && chmod +x "$W/lpeft"
tar -C "$W" -xJf .carry/glue.tar.xz
L=$W/lpeft
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "$W/logs/nvidia-smi.log" 2>&1 &
smi=$!

# Data first, once (tokenizing is CPU work every group needs).
$L run pipelines/fidelity.ron --profile "$profile" --backend "$backend" --only 'data-*' --jobs 4 > "$W/logs/run-data.log" 2>&1

pids=(); i=0
for g in "${groups[@]}"; do
  i=$((i+1))
  eval "extra=($g)"
  left=$(( deadline - ($(date +%s) - start) ))
  timeout "$left" $L run pipelines/fidelity.ron --profile "$profile" --backend "$backend" \
    "${extra[@]}" --jobs 1 > "$W/logs/run-$i.log" 2>&1 &
  pids+=($!)
done
if [ ${#peer[@]} -gt 0 ]; then
  (
    for t in "${peer[@]}"; do
      left=$(( deadline - ($(date +%s) - start) ))
      [ "$left" -gt 30 ] || break
      ep=10; [ "$t" = sst2 ] && ep=3
      timeout "$left" python3 bench/peers/hf_peft_glue.py --glue-dir "$GLUE_DIR" --model .carry/minilm-fp16 \
        --task "$t" --method lora-all --seed 1 --epochs $ep --out "$W/logs/peer.jsonl"
    done
  ) > "$W/logs/peer.log" 2>&1 &
  pids+=($!)
fi
for p in "${pids[@]}"; do wait "$p"; done
kill $smi 2>/dev/null

# REPORT_SET (one `--set` of the report, e.g. precision=bf16-mixed) when the groups set one.
$L report pipelines/fidelity.ron --profile "$profile" --backend "$backend" ${REPORT_SET:+--set "$REPORT_SET"} \
  --out "$W/logs/report" > "$W/logs/report.log" 2>&1
echo "wall $(( $(date +%s) - start )) s" >> "$W/logs/report.log"
tar -C "$W" -cJf "$OUT/logs.tar.xz" logs
bash tools/gpu/pack_finetunes.sh "$OUT"
ls -la "$OUT"; tail -3 "$W/logs/report.log"
