#!/usr/bin/env bash
# One device call for the small-M kernel's tensor-core path with E4M3 weights (src/cuda/gemv_tc.cuh:
# widened to BF16 in registers) and copy_to_device's multi-threaded staging: the GPU tests of
# both, the per-layer speed on the Qwen3-32B shapes (tensor cores against CUDA cores and the
# libraries), the FP8 decode engine, and the upload rates. From the repository root on the GPU
# machine, with .devdeps carried:
#   bash tools/device/fp8_tc_runs.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
LOGS=$OUT
source tools/device/lib.sh
step test_linear 240 ./build-gpu/test_cuda_linear --gtest_filter='CudaLinear.SmallMKernel*:CudaLinear.CopyToDevice*'
grep -E "Failure|Expected|Which is|PASSED|FAILED|^\[  " "$OUT/test_linear.log" | grep -v "RUN\|OK \]" | head -30
step test_engine 120 ./build-gpu/test_cuda_engine
grep -E "Failure|PASSED|FAILED" "$OUT/test_engine.log" | head -10
step gemm_tc 150 ./build-gpu/spense_bench_gemm --models qwen3-32b --m 1,2,4,8,16,32,64 --d 0.25 --dtypes fp8 \
  --small-m-kernel tensor-cores --formats dense,2:4,dense-gemv,2:4-gemv,spense-out-gemv --csv "$OUT/gemm_h100_fp8_tc.csv"
step gemm_cc 90 ./build-gpu/spense_bench_gemm --models qwen3-32b --m 1,2,4,8 --d 0.25 --dtypes fp8 \
  --small-m-kernel cuda-cores --formats dense,dense-gemv,2:4-gemv,spense-out-gemv --csv "$OUT/gemm_h100_fp8_cc.csv"
python3 - "$OUT" <<'PY'
import csv, os, sys
for k in ["tc", "cc"]:
    f = f"{sys.argv[1]}/gemm_h100_fp8_{k}.csv"
    if not os.path.exists(f): continue
    rows = list(csv.DictReader(open(f)))
    for lay in ["qkv", "o", "gate_up", "down"]:
        for fm in ["dense", "2:4", "dense-gemv", "2:4-gemv", "spense-out-gemv"]:
            r = [x for x in rows if x["layer"] == lay and x["format"] == fm]
            if r: print(k, lay, fm, " ".join("%s:%.1f/%.2fx" % (x["m"], float(x["us"]), float(x["speedup_vs_dense"])) for x in r))
PY
left=$(( 380 - ($(date +%s) - T0) ))
echo "seconds left for decode: $left"
if (( left > 60 )); then
  step decode $(( left - 30 )) ./build-gpu/spense_gpu bench-decode --synthetic qwen3-32b --compare --dtype bf16,fp8 --backend auto \
    --axis out --batch 1,2,4,8,16,32,64 --steps 32 --csv "$OUT/decode_h100_32b_tc.csv"
  grep -A12 "^summary" "$OUT/decode.log" || tail -20 "$OUT/decode.log"
fi
if (( 420 - ($(date +%s) - T0) > 25 )); then
  step upload 25 ./build-gpu/spense_gpu bench-prune --synthetic qwen3-0.6b --layers 1
  grep "host-to-device" "$OUT/upload.log"
fi
