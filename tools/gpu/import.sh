#!/usr/bin/env bash
# Here: adds the fine-tune artifacts a GPU call brought back (store.tar.xz.* from
# tools/gpu/fidelity.sh) to a local store, verifying each, so `lpeft report` can make one
# table over several calls:
#   tools/gpu/import.sh DIR_WITH_PARTS [STORE]      (STORE defaults to artifacts-gpu)
#   MODEL_DIR=.carry/minilm-fp16 lpeft report pipelines/fidelity.ron --profile final \
#       --backend tch-cuda --store artifacts-gpu
# (MODEL_DIR: the keys hash the model file the GPU runs read, the fp16 copy.)
set -euo pipefail
parts=$1; store=${2:-artifacts-gpu}
mkdir -p "$store"
tmp=$(mktemp -d)
cat "$parts"/store.tar.xz.* | xz -d | tar -C "$tmp" -xf -
mkdir -p "$store/objects"
n=0
for d in "$tmp"/*/objects/*; do
  k=$(basename "$d")
  [ -e "$store/objects/$k" ] && continue
  mv "$d" "$store/objects/$k"; n=$((n+1))
done
rm -rf "$tmp"
echo "imported $n artifacts into $store"
