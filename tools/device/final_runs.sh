#!/usr/bin/env bash
# One device call at the end of a session: the layer tests on the final tree, then the decode
# table with the defaults a user gets (auto back end, axis out, E4M3 cache for FP8).
#   tests    test_cuda_linear (all of it; the small-M kernel tests cover the refactored helpers)
#   fp8      FP8 --compare at batch 1, 16 and 64, --verbose (per layer: back end, time alone, plan)
#   bf16     BF16 --compare at batch 1 and 16 (BF16 cache), if time is left
# From the repository root on the GPU machine, with .devdeps carried:
#   [DEADLINE=S] bash tools/device/final_runs.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
L=/tmp/final_logs
rm -rf "$L"
LOGS=$L TAR_TO=$OUT/logs.tgz
export BUILD_TARGETS=${BUILD_TARGETS-"test_cuda_linear spense_gpu"}
source tools/device/lib.sh
step tests "$(lim 150)" ./build-gpu/test_cuda_linear
grep -E "Failure|Expected|Which is|PASSED|FAILED|^\[  (FAILED|SKIPPED)" "$L/tests.log" | head -40
d=(./build-gpu/spense_gpu bench-decode --synthetic qwen3-32b --backend auto --axis out --steps 32 --compare)
show() { grep -E "^(fp8|bf16) .*ms/step|: (auto|ours|library)" "$L/$1.log"; }
step fp8 "$(lim 120)" "${d[@]}" --dtype fp8 --kv-cache fp8 --batch 1,16,64 --verbose --csv "$OUT/decode_fp8_final.csv"
show fp8
step bf16 "$(lim 90)" "${d[@]}" --dtype bf16 --batch 1,16 --csv "$OUT/decode_bf16_final.csv"
show bf16
echo "total $(( $(date +%s) - T0 )) s"
