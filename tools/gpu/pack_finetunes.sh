#!/usr/bin/env bash
# On the GPU machine, from the repository root: the store's fine-tune artifacts (results and
# trained tensors; surgery holds whole pruned backbones, so it stays behind) as xz parts of
# 15 MiB, DIR/store.tar.xz.*, which tools/gpu/import.sh adds to a store here.
#
#   tools/gpu/pack_finetunes.sh DIR
set -uo pipefail
dir=$1
keys=$(for f in artifacts/objects/*/manifest.json; do
  grep -q '"kind": *"finetune"' "$f" && dirname "$f"; done)
[ -n "$keys" ] && tar -cf - $keys | xz -T4 -6 | split -b 15M - "$dir/store.tar.xz."
exit 0
