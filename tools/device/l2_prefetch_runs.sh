#!/usr/bin/env bash
# One device call: the engine's GPU tests, then decode steps (Qwen3-32B shapes, FP8 and BF16,
# dense / 2:4 / Spense d=0.25, batch 1 and 16) with the next projection's weights prefetched into
# L2 under the latency-bound kernels (bench-decode --l2-prefetch MB), at several budgets, and one
# profile. From the repository root on the GPU machine, with .devdeps carried:
#   bash tools/device/l2_prefetch_runs.sh [tag] [MB list, default "0 16 32 48"]
set -uo pipefail
OUT=${OUT:-/tmp/out}
tag=${1:-l2}
budgets=${2:-0 16 32 48}
L=/tmp/l2_logs_$tag
rm -rf "$L"
LOGS=$L TAR_TO=$OUT/logs.tgz
source tools/device/lib.sh
step test_engine 240 ./build-gpu/test_cuda_engine
grep -E "Failure|Expected|Which is|l2 prefetch|PASSED|FAILED" "$L/test_engine.log" | head -40
step test_linear 240 ./build-gpu/test_cuda_linear
grep -E "Failure|Expected|Which is|PASSED|FAILED" "$L/test_linear.log" | head -20
args=(--synthetic qwen3-32b --compare --dtype fp8,bf16 --backend auto --axis out --batch 1,16 --steps 32)
for mb in $budgets; do
  step "decode_$mb" 120 ./build-gpu/spense_gpu bench-decode "${args[@]}" --l2-prefetch "$mb" \
    --csv "$OUT/decode_32b_${tag}_$mb.csv"
  grep -E "^(fp8|bf16) " "$L/decode_$mb.log"
done
if [[ -n "${EVICT_LAST:-}" ]]; then
  step decode_el 120 ./build-gpu/spense_gpu bench-decode "${args[@]}" --l2-prefetch "$EVICT_LAST" --l2-evict-last \
    --csv "$OUT/decode_32b_${tag}_${EVICT_LAST}el.csv"
  grep -E "^(fp8|bf16) " "$L/decode_el.log"
fi
if [[ -n "${PROFILE:-}" ]]; then
  step profile 150 ./build-gpu/spense_gpu bench-decode "${args[@]}" --l2-prefetch "$PROFILE" --profile 16 \
    --csv "$OUT/decode_32b_${tag}_${PROFILE}_prof.csv"
  grep -E "^    " "$L/profile.log"
fi
