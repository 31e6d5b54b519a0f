#!/usr/bin/env bash
# Timing of the frame itself: a no-op rerun of a pipeline (must stay well under 1 s) and
# first-time hashing of the data. Usage: tests/bench.sh [path/to/lpeft]
set -euo pipefail
LPEFT=${1:-target/debug/lpeft}
store=$(mktemp -d)
trap 'rm -rf "$store"' EXIT
export LPEFT_STORE=$store

# Milliseconds a command takes.
t() { local s e; s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N); echo $(((e - s) / 1000000)); }

echo "demo pipeline (builtin stages over GLUE train/dev files)"
echo "  first run (hash + copy + digest): $(t "$LPEFT" -q run pipelines/demo.ron --jobs 2) ms"
echo "  no-op rerun:                       $(t "$LPEFT" -q run pipelines/demo.ron) ms"
echo "  plan after changing one variable:  $(t "$LPEFT" -q plan pipelines/demo.ron --set rounds=2) ms"
echo "  verify --all (re-read every byte): $(t "$LPEFT" -q verify --all) ms"
echo "glue pipeline, smoke profile, data stages only"
echo "  first run:   $(t "$LPEFT" -q run pipelines/glue.ron --profile smoke --only 'data-*' --jobs 2) ms"
echo "  no-op rerun: $(t "$LPEFT" -q run pipelines/glue.ron --profile smoke --only 'data-*') ms"
echo "  plan of all 18 stages: $(t "$LPEFT" -q plan pipelines/glue.ron --profile smoke) ms"
