#!/usr/bin/env bash
# Device calls for the small-M kernel's E4M3-token block shapes (6-7: E4M3 weights x E4M3 tokens
# on Hopper's wgmma), in two parts so that each fits one call:
#   PART=layers (default)
#     meta     which arrangement of the 8-bit 2:4 metadata wgmma reads (gemv.cu, meta_frag_e4m3):
#              SmallMKernelFp8EveryCodeExact under SPENSE_E4M3_META=0, 1, 2; the first that
#              passes is used for the rest of the call (and printed: hard-code it after)
#     tests    test_cuda_linear, all of it (the replica fix of 7b9f604 included)
#     gemm     bench-gemm, Qwen3-32B, FP8, M = 1, 16, 32, 64: cuBLASLt dense, cuSPARSELt 2:4, the
#              library Spense-out hybrid, and our kernel (AUTO: every shape timed, the E4M3-token
#              ones included; the plan column names the winner)
#   PART=decode
#     decode   FP8 --compare at batch 1, 16, 64 (auto back end, axis out, E4M3 cache, --verbose)
# From the repository root on the GPU machine, with .devdeps carried:
#   [DEADLINE=S] [PART=layers|decode] [E4M3_META=v] bash tools/device/e4m3_tokens_runs.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
PART=${PART:-layers}
L=/tmp/e4m3_logs_$PART
rm -rf "$L"
LOGS=$L TAR_TO=$OUT/logs_$PART.tgz
export BUILD_TARGETS=${BUILD_TARGETS-"test_cuda_linear spense_gpu spense_bench_gemm"}
source tools/device/lib.sh
if [[ $PART == layers ]]; then
  meta=""
  for v in 0 1 2; do
    SPENSE_E4M3_META=$v step meta$v "$(lim 40)" ./build-gpu/test_cuda_linear \
      --gtest_filter='CudaLinear.SmallMKernelFp8EveryCodeExact'
    rc=$?
    grep -E "Failure|got|FAILED|PASSED" "$L/meta$v.log" | head -6
    if [[ $rc -eq 0 && -z $meta ]]; then meta=$v; break; fi
  done
  echo "E4M3 metadata arrangement that passes: ${meta:-none}"
  export SPENSE_E4M3_META=${meta:-0}
  step tests "$(lim 170)" ./build-gpu/test_cuda_linear
  grep -E "Failure|Expected|Which is|rel_err|PASSED|FAILED|^\[  (FAILED|SKIPPED)" "$L/tests.log" | head -40
  step gemm "$(lim 150)" ./build-gpu/spense_bench_gemm --models qwen3-32b --dtypes fp8 --m 1,16,32,64 --d 0.25 \
    --formats dense,2:4,spense-out,2:4-gemv,spense-out-gemv --csv "$OUT/gemm_h100_32b_e4m3tok.csv"
  python3 tools/device/gemm_csv_table.py "$OUT/gemm_h100_32b_e4m3tok.csv" 2>/dev/null || \
    cut -d, -f3,7,12,13,18,21 "$OUT/gemm_h100_32b_e4m3tok.csv"
else
  export SPENSE_E4M3_META=${E4M3_META:-0}
  d=(./build-gpu/spense_gpu bench-decode --synthetic qwen3-32b --backend auto --axis out --steps 32 --compare)
  step decode "$(lim 200)" "${d[@]}" --dtype fp8 --kv-cache fp8 --batch 1,16,64 --verbose \
    --csv "$OUT/decode_h100_32b_e4m3tok.csv"
  grep -E "^(fp8|bf16) .*ms/step|: (auto|ours|library)|E4M3 tokens" "$L/decode.log" | head -80
fi
echo "total $(( $(date +%s) - T0 )) s"
