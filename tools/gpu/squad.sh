#!/usr/bin/env bash
# On the GPU machine (device tool), from the repository root, with .carry/ holding lpeft.xz
# (tch build), minilm-fp16/ and squad-split.tar.xz (tools/squad_split.py's output for part a:
# 20 articles to train, 4 to dev): pipelines/squad/squad.ron's gpu profile (vanilla LoRA(all)
# and Light-PEFT LoRA, the seeds given), then the official evaluation logic
# (tools/reference/squad_v1_eval.py) on every fine-tune's best/predictions.json.
#
#   tools/gpu/squad.sh DEADLINE_S SEEDS_JSON      e.g. tools/gpu/squad.sh 400 '[1,2,3]'
# Writes $OUT/squad.tar.xz: logs, plan.json, the stages' manifests, results and predictions,
# and official.jsonl (one line per fine-tune: key, EM, F1 by the official logic).
set -uo pipefail
deadline=$1; seeds=$2
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
W=$(mktemp -d); mkdir -p "$W/squad"
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
export MODEL_DIR=.carry/minilm-fp16 SQUAD_DIR=$W/squad-split
xz -dc .carry/lpeft.xz > "$W/lpeft" && chmod +x "$W/lpeft"
tar -C "$W" -xJf .carry/squad-split.tar.xz
L=$W/lpeft
args=(pipelines/squad/squad.ron --profile gpu --backend tch-cuda --set "seeds=$seeds")
timeout "$deadline" $L run "${args[@]}" > "$W/squad/run.log" 2>&1
echo "run exit $?" >> "$W/squad/run.log"
$L plan "${args[@]}" --json > "$W/squad/plan.json"
for k in $(python3 -c 'import json,sys;print(" ".join(s["key"] for s in json.load(open(sys.argv[1]))["stages"]))' "$W/squad/plan.json"); do
  d=artifacts/objects/$k
  [ -d "$d" ] || continue
  mkdir -p "$W/squad/objects/$k"
  cp "$d"/manifest.json "$W/squad/objects/$k/"
  for f in result.json curve.json estimate.json best/predictions.json; do
    [ -f "$d/$f" ] && cp "$d/$f" "$W/squad/objects/$k/"
  done
  if [ -f "$d/best/predictions.json" ]; then
    python3 tools/reference/squad_v1_eval.py "$SQUAD_DIR/dev-v1.1.json" "$d/best/predictions.json" \
      | sed "s/^{/{\"key\":\"$k\",/" >> "$W/squad/official.jsonl"
  fi
done
tar -C "$W" -cJf "$OUT/squad.tar.xz" squad
tail -20 "$W/squad/run.log"; cat "$W/squad/official.jsonl"
