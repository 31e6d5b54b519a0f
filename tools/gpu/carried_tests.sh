# Sourced (not run) by the GPU scripts that unpack carried binaries and run the CUDA tests
# before their bench rows (tools/gpu/masks_in_islands.sh, tools/gpu/scale_kernel.sh), from the
# repository root on the GPU machine. Needs $deadline (seconds from now). Sets OUT (default
# /tmp/out), left() (seconds before the deadline), LD_LIBRARY_PATH (torch's libraries) and T (a
# folder for the binaries), and defines:
#   unpack NAME...                 .carry/NAME.xz -> $T/NAME, executable
#   cuda_tests [ARG...] -- NAME... each $T/NAME on CUDA (LPEFT_TEST_DEVICE=tch-cuda, --nocapture
#                                  and the ARGs) into $OUT/tests-cuda.log, then its summary
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
