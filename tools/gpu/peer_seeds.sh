#!/usr/bin/env bash
# On the GPU machine (device tool), from the repository root, with .carry/minilm-fp16 and
# .carry/glue.tar.xz from tools/gpu/pack.sh: more seeds of the HF peer's LoRA(all) on the
# recipe of docs/fidelity.md (issue 13: "ours within a point of the peer on every task" needs
# the peer's seed spread, not one seed). LANES run side by side; a lane is a space-separated
# list of TASK:SEED runs, one after the other. Each record keeps its train_seconds, so the cost
# of running lanes side by side can be read against the one-at-a-time runs of
# docs/results/fidelity/*/peer*.jsonl (accuracy does not depend on it: a seed fixes the run).
#
#   tools/gpu/peer_seeds.sh DEADLINE_S 'cola:2 cola:3' 'stsb:2 stsb:3 mrpc:1' ...
# Writes $OUT/peer-seeds.tar.xz: peer.jsonl, lane-N.log, nvidia-smi.log, wall.txt.
set -uo pipefail
deadline=$1; shift
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
W=$(mktemp -d); R=$W/peer-seeds; mkdir -p "$R"
start=$(date +%s)
left() { echo $(( deadline - ($(date +%s) - start) )); }
tar -C "$W" -xJf .carry/glue.tar.xz
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "$R/nvidia-smi.log" 2>&1 &
smi=$!
pids=(); lane=0
for jobs in "$@"; do
  lane=$((lane+1))
  (
    for job in $jobs; do
      task=${job%%:*}; seed=${job##*:}
      [ "$(left)" -gt 30 ] || { echo "skipped $job: deadline"; continue; }
      ep=10; [ "$task" = sst2 ] && ep=3
      echo "$(date +%T) start $job"
      timeout "$(left)" python3 bench/peers/hf_peft_glue.py --glue-dir "$W/glue" --model .carry/minilm-fp16 \
        --task "$task" --method lora-all --seed "$seed" --epochs "$ep" --out "$R/lane-$lane.jsonl"
      rc=$?
      echo "$(date +%T) end $job rc $rc"
    done
  ) > "$R/lane-$lane.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
kill $smi 2>/dev/null
cat "$R"/lane-*.jsonl > "$R/peer.jsonl" 2>/dev/null
echo "lanes $lane, wall $(( $(date +%s) - start )) s" > "$R/wall.txt"
tar -C "$W" -cJf "$OUT/peer-seeds.tar.xz" peer-seeds
cat "$R/wall.txt"; grep -h "end\|skipped" "$R"/lane-*.log
