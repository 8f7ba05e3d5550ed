#!/usr/bin/env bash
# Device calls for issue 8's timings with layers streamed and the allocator change
# (docs/perf.md, "Streaming layers, and the allocator"): Qwen3-8B over its full depth (about
# 7.5 min measured, not extrapolated; fits one 10-minute device call) and Qwen3-32B from 2 blocks.
# From the repository root on the GPU machine, with .devdeps carried:
#   bash tools/device/prune_depth_runs.sh 8b     # 36 of 36 blocks
#   bash tools/device/prune_depth_runs.sh 32b    # 2 of 64 blocks, extrapolated
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
bash src/cuda/standalone/device_run.sh build 2>&1 | tail -2
source tools/device_env.sh
case "${1:-8b}" in
  8b) build-gpu/spense_gpu bench-prune --synthetic qwen3-8b --layers 36 --json "$OUT/prune_h200_full.jsonl" 2> "$OUT/p8.err" | tail -6 ;;
  32b) build-gpu/spense_gpu bench-prune --synthetic qwen3-32b --layers 2 --json "$OUT/prune_h200_full.jsonl" 2> "$OUT/p32.err" | tail -6 ;;
  *) echo "usage: $0 8b|32b"; exit 2 ;;
esac
