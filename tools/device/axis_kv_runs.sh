#!/usr/bin/env bash
# One device call: the GPU tests, then Qwen3-32B decode (synthetic weights, ctx 1024, d = 0.25,
# --backend auto) with Spense's axis out against mixed (out for q/k/v and gate/up, in for o and
# down), FP8 at batches 1, 16 and 64 with the E4M3 KV cache, BF16 at batch 16 with the BF16
# cache; the FP8 runs with the per-operation profile (where batch 64's time goes; BF16 CSVs go
# into logs.tgz, to stay within the 8 files a call returns); per layer, o and down on our kernel
# at axis in against the library's axis in and our axis out. From the repository root on the
# GPU machine, with .devdeps carried:
#   bash tools/device/axis_kv_runs.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
L=/tmp/axis_kv_logs
rm -rf "$L"
LOGS=$L TAR_TO=$OUT/logs.tgz
source tools/device/lib.sh
step test_linear 200 ./build-gpu/test_cuda_linear --gtest_filter='CudaLinear.SmallMKernel*'
grep -E "Failure|Expected|Which is|PASSED|FAILED" "$L/test_linear.log" | head -20
step test_engine 120 ./build-gpu/test_cuda_engine
grep -E "Failure|Expected|Which is|PASSED|FAILED|fp8 KV" "$L/test_engine.log" | head -20
d=(./build-gpu/spense_gpu bench-decode --synthetic qwen3-32b --backend auto --steps 32)
step fp8_mixed 220 "${d[@]}" --dtype fp8 --compare --axis mixed --batch 1,16,64 --kv-cache fp8 --profile 16 \
  --csv "$OUT/decode_fp8_mixed_kvfp8.csv"
step fp8_out 120 "${d[@]}" --dtype fp8 --formats spense --axis out --batch 1,16,64 --kv-cache fp8 --csv "$OUT/decode_fp8_out_kvfp8.csv"
step bf16_mixed 90 "${d[@]}" --dtype bf16 --formats dense,spense --axis mixed --batch 16 --csv "$L/decode_bf16_mixed.csv"
# Per layer, o and down at M = 1 / 16 / 64: the library's axis in, our kernel at axis out and in.
step gemm_in 150 ./build-gpu/spense_bench_gemm --models qwen3-32b --layers o,down --m 1,16,64 --d 0.25 \
  --dtypes fp8,bf16 --formats dense,spense-in,spense-out-gemv,spense-in-gemv --csv "$OUT/gemm_h100_32b_axis_in.csv"
grep -E "^(qwen3|#)" -v "$L/gemm_in.log" | tail -30
step bf16_out 60 "${d[@]}" --dtype bf16 --formats spense --axis out --batch 16 --csv "$L/decode_bf16_out.csv"
for f in fp8_mixed fp8_out bf16_mixed bf16_out; do echo "$f:"; grep -E "^(fp8|bf16) .*ms/step" "$L/$f.log"; done
grep -E "^    |^summary" "$L/fp8_mixed.log" | head -60  # the per-operation profile
echo "total $(( $(date +%s) - T0 )) s"
