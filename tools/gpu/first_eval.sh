#!/usr/bin/env bash
# On the GPU machine (device tool), from the repository root, with .carry/lpeft.xz,
# .carry/glue.tar.xz (GLUE_TAR: another; SST-2 and RTE) and .carry/minilm-tok (tokenizer files): why the first evaluation pass of
# vanilla LoRA(all)'s fine-tune on the random roberta-base shape takes seconds where the later
# passes take a tenth of one. Runs the `roberta-base` profile's SST-2 vanilla fine-tune of
# pipelines/speed.ron again (--force) under each setting given, one process at a time, and prints
# each run's evaluation seconds per epoch.
#
#   tools/gpu/first_eval.sh DEADLINE_S "PRECISION [ENV=VALUE ...]" ...
#   -> $OUT/first-eval.jsonl (one line per run: setting, eval_seconds_per_epoch, stage seconds)
set -uo pipefail
deadline=$1; shift
rows=("$@")
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
W=$(mktemp -d)
start=$(date +%s)
left() { echo $(( deadline - ($(date +%s) - start) )); }
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
xz -dc .carry/lpeft.xz > "$W/lpeft" && chmod +x "$W/lpeft"
tar -C "$W" -xJf "${GLUE_TAR:-.carry/glue.tar.xz}"
# As tools/gpu/speed.sh: libtorch's and the CUDA wheels' libraries into the page cache first.
cat "$LD_LIBRARY_PATH"/*.so* > /dev/null
find "$(dirname "$(dirname "$LD_LIBRARY_PATH")")/nvidia" -name '*.so*' -type f -exec cat {} + > /dev/null 2>&1 || true
export GLUE_DIR=$W/glue
python3 bench/random_checkpoint.py --shape roberta-base --seed 1 --tokenizer .carry/minilm-tok \
  --out "$W/roberta-base-random" > "$W/checkpoint.log" 2>&1
export MODEL_DIR=$W/roberta-base-random
for row in "${rows[@]}"; do
  set -- $row
  precision=$1; shift
  [ "$(left)" -gt 40 ] || break
  sets=(--set "precision=$precision" --set ffn_multiple=8)
  env "$@" timeout "$(left)" "$W/lpeft" run pipelines/speed.ron --profile roberta-base --backend tch-cuda \
    "${sets[@]}" --only 'data-sst2*' --only 'ft-sst2-lora-all-*' --force 'ft-sst2-lora-all-*' > "$W/run.log" 2>&1 \
    || { tail -5 "$W/run.log"; continue; }
  key=$(env "$@" "$W/lpeft" plan pipelines/speed.ron --profile roberta-base --backend tch-cuda "${sets[@]}" --json \
    | python3 -c 'import json,sys;print([s["key"] for s in json.load(sys.stdin)["stages"] if s["name"].startswith("ft-sst2-lora-all")][0])')
  python3 - "$precision $*" "artifacts/objects/$key" >> "$OUT/first-eval.jsonl" <<'PY'
import json, sys
m = json.load(open(sys.argv[2] + "/manifest.json"))
print(json.dumps({"setting": sys.argv[1], "eval_seconds_per_epoch": m["figures"]["eval_seconds_per_epoch"],
                  "wall_seconds": m["wall_seconds"]}))
PY
  tail -1 "$OUT/first-eval.jsonl"
done
