# Sourced (not run) by the GPU scripts that unpack carried binaries and run the CUDA tests
# before their bench rows (tools/gpu/masks_in_islands.sh, tools/gpu/scale_kernel.sh), from the
# repository root on the GPU machine. Needs $deadline (seconds from now). Sets OUT (default
# /tmp/out), left() (seconds before the deadline), LD_LIBRARY_PATH (torch's libraries) and T (a
# folder for the binaries), and defines:
#   unpack NAME...                 .carry/NAME.xz -> $T/NAME, executable
#   cuda_tests [ARG...] -- NAME... each $T/NAME on CUDA (LPEFT_TEST_DEVICE=tch-cuda, --nocapture
#                                  and the ARGs) into $OUT/tests-cuda.log, then its summary
#   bench_rows FN DEFAULT_MODES ROW...
#                                  ROUNDS rounds (default 2) of `FN ROUND STEP SWITCH SHAPE SEQ
#                                  PRECISION PEFT WIDTHS` for each row ("SHAPE SEQ PRECISION
#                                  [PEFT [WIDTHS]]", defaults lora-all, uniform) and each STEP:SWITCH
#                                  of MODES (else DEFAULT_MODES), while the deadline allows
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
start=$(date +%s)
left() { echo $(( deadline - ($(date +%s) - start) )); }
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
T=$(mktemp -d)
unpack() {
  for b in "$@"; do xz -dc ".carry/$b.xz" > "$T/$b" && chmod +x "$T/$b"; done
}
cuda_tests() {
  local args=()
  while [ "$1" != -- ]; do args+=("$1"); shift; done
  shift
  for t in "$@"; do
    ( LPEFT_TEST_DEVICE=tch-cuda timeout 120 "$T/$t" --nocapture "${args[@]}"; echo "$t rc=$?" ) \
      >> "$OUT/tests-cuda.log" 2>&1
  done
  grep -E 'rc=|test result' "$OUT/tests-cuda.log"
}
bench_rows() {
  local fn=$1 modes=$2 round row mode
  shift 2
  local rows=("$@")
  for round in $(seq "${ROUNDS:-2}"); do
    for row in "${rows[@]}"; do
      set -- $row
      for mode in ${MODES:-$modes}; do
        [ "$(left)" -gt 25 ] || return 0
        "$fn" "$round" "${mode%%:*}" "${mode#*:}" "$1" "$2" "$3" "${4:-lora-all}" "${5:-uniform}"
      done
    done
  done
}
