#!/usr/bin/env bash
# One device call: the GPU tests (our small-M kernel on axis=in layers, the pipelined attention
# splits), then Qwen3-32B decode (synthetic weights, ctx 1024, d = 0.25, --backend auto, E4M3 KV
# cache unless BF16):
#   fp8_c64    FP8 --compare, --axis mixed (out for q/k/v and gate/up, in for o and down; our
#              kernel may now take the axis-in layers), batch 16 and 64, 64 keys per attention
#              block (one tile, as before), per-operation profile
#   fp8_c256   FP8 dense and Spense, mixed, 256 keys per block (4 pipelined tiles), profile
#   fp8_out    FP8 Spense at axis out, 256 keys per block (against fp8_c256's mixed)
#   fp8_b1     FP8 --compare at batch 1, mixed; fp8_b1_out: Spense at axis out
#   bf16_b16   BF16 dense and Spense, mixed, batch 16, BF16 cache
#   gemm_in    per layer, o and down at M = 1 / 16 / 64: the library's axis in, our kernel at
#              axis out and at axis in
# The first two runs' CSVs (and their _profile.csv) come back as files; the rest are in logs.tgz,
# to stay within the 8 files a call returns. It needs the two kernels that main took back out
# (`git revert 4d60563`: the small-M kernel on axis=in layers, spense-in-gemv, and the pipelined
# attention splits; tests SmallMKernelAxisIn*, the pipelined AttentionMatchesDoubleReference
# cases). From the repository root on the GPU machine, with .devdeps carried:
#   [DEADLINE=S] bash tools/device/axis_kv_runs.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
L=/tmp/axis_kv_logs
rm -rf "$L"
LOGS=$L TAR_TO=$OUT/logs.tgz
source tools/device/lib.sh
# With DEADLINE=S (seconds the call may run, counted from its start) each step's limit is cut to
# what is left, so that a step ends (and its log is packed) before the call is stopped.
step test_linear "$(lim 150)" ./build-gpu/test_cuda_linear --gtest_filter='CudaLinear.SmallMKernel*'
grep -E "Failure|Expected|Which is|PASSED|FAILED|OK \]" "$L/test_linear.log" | head -24
step test_engine "$(lim 150)" ./build-gpu/test_cuda_engine
grep -E "Failure|Expected|Which is|PASSED|FAILED|OK \]|spense-in" "$L/test_engine.log" | head -40
d=(./build-gpu/spense_gpu bench-decode --synthetic qwen3-32b --backend auto --steps 32)
f8=("${d[@]}" --dtype fp8 --kv-cache fp8)
show() { grep -E "^(fp8|bf16) .*ms/step|^    " "$L/$1.log"; }
step fp8_c256 "$(lim 110)" "${f8[@]}" --formats dense,spense --axis mixed --batch 16,64 --kv-chunk 256 --profile 8 \
  --csv "$OUT/decode_fp8_mixed_c256.csv"
show fp8_c256
step fp8_c64 "$(lim 150)" "${f8[@]}" --compare --axis mixed --batch 16,64 --kv-chunk 64 --profile 8 --csv "$OUT/decode_fp8_mixed_c64.csv"
show fp8_c64
step fp8_out "$(lim 60)" "${f8[@]}" --formats spense --axis out --batch 16,64 --kv-chunk 256 --csv "$L/decode_fp8_out_c256.csv"
show fp8_out
step fp8_b1 "$(lim 60)" "${f8[@]}" --compare --axis mixed --batch 1 --csv "$L/decode_fp8_mixed_b1.csv"
show fp8_b1
step fp8_b1_out "$(lim 30)" "${f8[@]}" --formats spense --axis out --batch 1 --csv "$L/decode_fp8_out_b1.csv"
show fp8_b1_out
step bf16_b16 "$(lim 60)" "${d[@]}" --dtype bf16 --formats dense,spense --axis mixed --batch 16 --csv "$L/decode_bf16_mixed_b16.csv"
show bf16_b16
step gemm_in "$(lim 100)" ./build-gpu/spense_bench_gemm --models qwen3-32b --layers o,down --m 1,16,64 --d 0.25 \
  --dtypes fp8,bf16 --formats dense,spense-in,spense-out-gemv,spense-in-gemv --csv "$L/gemm_h100_32b_axis_in.csv"
grep -E "^(qwen3|#)" -v "$L/gemm_in.log" | tail -24
echo "total $(( $(date +%s) - T0 )) s"
