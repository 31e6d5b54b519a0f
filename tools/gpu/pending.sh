#!/usr/bin/env bash
# On the GPU machine (device tool, carry [".carry"] from tools/gpu/pack.sh plus .carry/lpeft-bench.xz),
# from the repository root: the GPU measurements still owed (docs/benchmarks.md, docs/fidelity.md,
# docs/cluster.md), as calls that each fit the device tool's 10-minute limit. Run them on one warm
# machine, one after the other; each writes into $OUT what its section of the docs reads.
#
#   tools/gpu/pending.sh 1   # issue 14: the pruned shape's FFN widths (ran in session 10)       (~3 min)
#   tools/gpu/pending.sh 2   # issue 13: SST-2's random cut (ran in session 11: 4 min)        (~9 min)
#   tools/gpu/pending.sh 3   # issue 13: the accuracy-against-pruning sweep (ran in session 11) (~9 min)
#   tools/gpu/pending.sh 4   # issue 20: two stages on two slots of one GPU (ran in session 10) (~2 min)
#   tools/gpu/pending.sh 5   # issues 16, 14: OPT rows not reached in session 10, and the pruned
#                            #   OPT shape with FFN widths of a multiple of 8 (ours only; ran in session 11: 4 min)
# 1, 5: carry .carry/lpeft-bench.xz; 2-4: tools/gpu/pack.sh's carry. The report at the end of 2
# and 3 is fidelity.sh's over the default cuts; docs/fidelity.md has the report over the cuts run.
set -uo pipefail
case ${1:-} in 1|2|3|4|5) ;; *) sed -n '2,14p' "$0"; exit 2 ;; esac
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
  # SST-2's random-importance cuts (seeds 1-3). RTE on LPEFT_FUSED=off ran in session 10
  # (docs/results/fidelity/rte-gap/call-3: SEEDS="1 2 3 4 5 6 7 8" VARIANTS=unfused rte_gap.sh).
  o="--set 'cuts={random_cuts}' --only 'estimate-*' --only 'surgery-*' --only 'ft-*-light-*'"
  bash tools/gpu/fidelity.sh final 530 "$(task sst2 3 1) $o" "$(task sst2 3 2) $o" "$(task sst2 3 3) $o"
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
5)
  # The OPT rows that session 10's call did not reach (both sides), then our pruned opt-1.3b
  # shape with FFN widths 5462 (padded to 5464 in the nodes) against 5464 kept (ffn_multiple 8).
  OUT=$OUT/opt bash tools/gpu/bench_opt.sh 330 opt-6.7b > /dev/null 2>&1
  rows=()
  for t in seq-cls causal-lm; do
    for w in uniform multiple8; do
      rows+=("opt-1.3b light-lora 256 bf16-pure --batch 16 --task $t --ffn-widths $w")
    done
  done
  OUT=$OUT/widths GRAPHS=off bash tools/gpu/bench_graphs.sh 150 "${rows[@]}" > /dev/null
  ;;
esac
ls -la "$OUT"
