#!/usr/bin/env bash
# On the GPU machine (device tool), from the repository root, with .carry/lpeft-bench.xz and the
# stripped, xz'd test binaries .carry/{mixed_precision,fused,cuda_graphs}.xz (`cargo test
# --release -p lpeft-model --features tch --no-run`, and lpeft-train's cuda_graphs with
# `--features lpeft-model/tch`): the estimation step with the head and neuron masks applied
# inside the projection islands (`--masks-in-islands on`, the stages' default) against the
# product between islands (`off`), beside the fine-tune step of the same shape; graphed, as the
# stages run on CUDA. ROUNDS rounds (default 2), one process per row, alternating.
#
#   tools/gpu/masks_in_islands.sh DEADLINE_S "SHAPE SEQ PRECISION" ...
#   -> $OUT/tests-cuda.log, $OUT/masks-in-islands.jsonl
set -uo pipefail
deadline=$1; shift
rows=("$@")
source "$(dirname "$0")/carried_tests.sh"
unpack lpeft-bench mixed_precision fused cuda_graphs
cuda_tests -- mixed_precision fused cuda_graphs
for round in $(seq "${ROUNDS:-2}"); do
  for row in "${rows[@]}"; do
    set -- $row
    for mode in "--step finetune" "--step estimate --masks-in-islands off" "--step estimate --masks-in-islands on"; do
      [ "$(left)" -gt 25 ] || break 3
      timeout 90 "$T/lpeft-bench" --backend tch-cuda --shape "$1" --peft lora-all --seq "$2" \
        --precision "$3" --batch 32 --graphs on --iters 30 --warmup 3 $mode "${@:4}" \
        | sed "s/^{/{\"round\":$round,/" >> "$OUT/masks-in-islands.jsonl"
    done
  done
done
python3 - "$OUT/masks-in-islands.jsonl" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(r["round"], r["shape"], r["seq"], r["precision"], r["step"], r.get("masks_in_islands"), f'{r["median_s"]*1e3:.2f} ms')
PY
