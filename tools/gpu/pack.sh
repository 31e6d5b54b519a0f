#!/usr/bin/env bash
# Packs what a GPU call needs into .carry/ (git-ignored; name it in the device tool's `carry`):
# the tch build of lpeft (stripped, xz), all-MiniLM-L6-v2 as fp16 safetensors (lpeft and
# transformers upcast it on load), and the GLUE files of the tasks (xz tar). A call carries
# at most 64 MiB; this comes to about 52.
#
#   tools/gpu/pack.sh [BINARY] [TASK_DIRS...]
#   BINARY defaults to target/tch/release/lpeft; TASK_DIRS to CoLA SST-2 MRPC STS-B RTE.
# Needs python3 with torch and safetensors (the torch venv of `make test-tch` has both).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/tch/release/lpeft}
shift || true
tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || tasks=(CoLA SST-2 MRPC STS-B RTE)
glue=${GLUE_DIR:-../shared/data/glue}
model=${MODEL_DIR:-../shared/models/all-MiniLM-L6-v2}
py=${PYTHON:-python3}

mkdir -p .carry
strip -o .carry/lpeft "$bin"
xz -T2 -6 -f .carry/lpeft

# The same bytes here and there: artifact keys hash the model file, so a report made here
# over artifacts made there resolves the same keys when MODEL_DIR=.carry/minilm-fp16.
if [ ! -f .carry/minilm-fp16/model.safetensors ]; then
  mkdir -p .carry/minilm-fp16
  cp "$model"/{config.json,tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.txt} .carry/minilm-fp16/
  "$py" - "$model/model.safetensors" .carry/minilm-fp16/model.safetensors <<'PY'
import sys
from safetensors.torch import load_file, save_file
import torch
t = load_file(sys.argv[1])
save_file({k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in t.items()}, sys.argv[2], metadata={"format": "pt"})
PY
fi

rm -rf .carry/glue && mkdir -p .carry/glue
for t in "${tasks[@]}"; do cp -r "$glue/$t" .carry/glue/; done
tar -C .carry -cJf .carry/glue.tar.xz glue
rm -rf .carry/glue
du -ch .carry/lpeft.xz .carry/minilm-fp16 .carry/glue.tar.xz | tail -1
