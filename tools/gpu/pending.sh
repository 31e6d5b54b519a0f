#!/usr/bin/env bash
# On the GPU machine (device tool, carry [".carry"] from tools/gpu/pack.sh plus .carry/lpeft-bench.xz),
# from the repository root: the GPU measurements still owed (docs/benchmarks.md, docs/fidelity.md,
# docs/cluster.md), as calls that each fit the device tool's 10-minute limit. Run them on one warm
# machine, one after the other; each writes into $OUT what its section of the docs reads.
#
#   tools/gpu/pending.sh 1   # issue 14: why the pruned r2 step is not faster in the pipeline  (~5 min)
#   tools/gpu/pending.sh 2   # issue 13: RTE on burn's elementary operations; SST-2's random cut (~9 min)
#   tools/gpu/pending.sh 3   # issue 13: the accuracy-against-pruning sweep                     (~9 min)
#   tools/gpu/pending.sh 4   # issue 20: two stages on two slots of one GPU, against one slot    (~4 min)
set -uo pipefail
case ${1:-} in 1|2|3|4) ;; *) sed -n '2,10p' "$0"; exit 2 ;; esac
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
task() { echo "--set 'tasks=[{\"name\":\"$1\",\"epochs\":$2}]' --set 'seeds=[$3]'"; }

case ${1:-} in
1)
  # The bench's pruned shape with the pipeline's irregular FFN widths, padded and not, beside
  # vanilla, at the pipeline's sequence length; then the pipeline with the widths rounded to 8.
  rows=()
  for p in bf16-mixed tf32; do
    rows+=("roberta-base lora-all 64 $p" "roberta-base light-r2 64 $p"
           "roberta-base light-r2 64 $p --ffn-widths irregular"
           "roberta-base light-r2 64 $p --ffn-widths irregular --ffn-align 1")
  done
  OUT=$OUT/bench GRAPHS=on bash tools/gpu/bench_graphs.sh 150 "${rows[@]}" > /dev/null
  OUT=$OUT/speed FFN_MULTIPLE=8 PRECISION=bf16-mixed bash tools/gpu/speed.sh roberta-base 220 sst2
  ;;
2)
  # RTE with LPEFT_FUSED=off (seeds 1-8) beside SST-2's random-importance cuts (seeds 1-3).
  (SEEDS="1 2 3 4 5 6 7 8" VARIANTS=unfused bash tools/gpu/rte_gap.sh 500 > "$OUT/rte.log" 2>&1) &
  o="--set 'cuts={random_cuts}' --only 'estimate-*' --only 'surgery-*' --only 'ft-*-light-*'"
  bash tools/gpu/fidelity.sh final 530 "$(task sst2 3 1) $o" "$(task sst2 3 2) $o" "$(task sst2 3 3) $o"
  wait
  ;;
3)
  # r2's PEFT cut at head/FFN ratios 0.2-0.6, seed 1, from fresh estimations.
  o="--set 'cuts={sweep_cuts}' --only 'estimate-*' --only 'surgery-*' --only 'ft-*-light-*'"
  bash tools/gpu/fidelity.sh final 540 "$(task cola 10 1) $o" "$(task mrpc 10 1) $o" \
    "$(task stsb 10 1) $o" "$(task rte 10 1) $o"
  ;;
4)
  # Four vanilla RTE fine-tunes: one slot on GPU 0, then two slots on it (--per-device 2), each
  # into its own store; the wall times and the RUN/RAN lines go to $OUT.
  W=$(mktemp -d); xz -dc .carry/lpeft.xz > "$W/lpeft" && chmod +x "$W/lpeft"
  tar -C "$W" -xJf .carry/glue.tar.xz
  for n in 1 2; do
    s=$(date +%s)
    GLUE_DIR=$W/glue MODEL_DIR=.carry/minilm-fp16 timeout 200 "$W/lpeft" --store "$W/store-$n" run \
      pipelines/fidelity.ron --profile final --devices tch-cuda:0 --per-device $n --jobs 4 \
      --set 'tasks=[{"name":"rte","epochs":10}]' --set 'seeds=[1,2,3,4]' \
      --only 'data-*' --only 'ft-*-lora-all-*' > "$OUT/slots-per-device-$n.log" 2>&1
    echo "per-device $n: wall $(( $(date +%s) - s )) s" | tee -a "$OUT/slots.txt"
  done
  ;;
esac
ls -la "$OUT"
