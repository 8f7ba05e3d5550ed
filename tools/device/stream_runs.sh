#!/usr/bin/env bash
# Device calls for the small-M kernel's streamed E4M3 shapes (10-11: persistent blocks fed by
# the TMA, E4M3 x E4M3 on wgmma; gemv.cu), one part per call:
#   PART=first (default)
#     tests    test_cuda_linear's small-M kernel and graph tests (shapes 10-11 forced, capped
#              grids, graph replays)
#     gemm     bench-gemm, Qwen3-32B, FP8, M = 1, 16, 32, 64, --e4m3-tokens: cuBLASLt dense,
#              cuSPARSELt 2:4, the library Spense-out hybrid, our kernel (AUTO over shapes 0-11)
#     shape10, shape11   our kernel with one streamed shape forced, M = 16, 64
#     decode   FP8 --compare dense,spense at batch 1, 16, 64 (E4M3 cache, --e4m3-tokens, --verbose)
#   PART=tiled (needs the tiled storage, LinearOptions::small_m_tiled, measured and taken out by
#              d0fda96: git revert d0fda96 first)
#     tests    as in first, SmallMKernelTiledWeights included
#     gemm     bench-gemm as in first, with --tiled-weights (2:4 and Spense layers: shapes 10-11 only)
#              (between the decode pairs below)
#     tiled1/off1, then gemm, then tiled2/off2/rows   FP8 --compare dense,spense at batch 1, 16, 64:
#              --tiled-weights, the default (no E4M3 tokens), again, then --e4m3-tokens (row-major)
#   PART=ab
#     on/off   FP8 dense and Spense at batch 1, 16, 64 with --e4m3-tokens and --no-e4m3-tokens,
#              twice in turn (PAIRS=N: N times)
#     tests    (with TESTS=1) then test_cuda_engine, and test_cuda_linear's small-M kernel and graph tests
#   PART=ncu
#     Nsight Compute on gate_up at M = 16: streamed shapes 10 and 11 (DRAM throughput, stalls)
# From the repository root on the GPU machine, with .devdeps carried:
#   [DEADLINE=S] [PART=first|tiled|ab|ncu] bash tools/device/stream_runs.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
PART=${PART:-first}
L=/tmp/stream_logs_$PART
rm -rf "$L"
LOGS=$L TAR_TO=$OUT/logs_$PART.tgz
export BUILD_TARGETS=${BUILD_TARGETS-"test_cuda_linear test_cuda_engine spense_gpu spense_bench_gemm"}
source tools/device/lib.sh
fails() { grep -E "Failure|Expected|Which is|rel_err|PASSED|FAILED|^\[  (FAILED|SKIPPED)" "$L/$1.log" | head -${2:-40}; }
# test_cuda_linear's small-M kernel and graph tests, within SECONDS, and their failures
linear_tests() {
  step tests "$(lim $1)" ./build-gpu/test_cuda_linear --gtest_filter='CudaLinear.SmallMKernel*:CudaLinear.GraphCapture*'
  fails tests
}
g=(./build-gpu/spense_bench_gemm --e4m3-tokens --models qwen3-32b --dtypes fp8 --d 0.25)
d=(./build-gpu/spense_gpu bench-decode --synthetic qwen3-32b --backend auto --axis out --steps 32 --formats dense,spense
   --dtype fp8 --kv-cache fp8)
show() { grep -E "^(fp8|bf16) .*ms/step|: (auto|ours|library)|streamed" "$L/$1.log" | grep -v " alone " | head -${2:-60}; }
if [[ $PART == first ]]; then
  linear_tests 170
  step gemm "$(lim 110)" "${g[@]}" --m 1,16,32,64 --formats dense,2:4,spense-out,2:4-gemv,spense-out-gemv \
    --csv "$OUT/gemm_h100_32b_stream.csv"
  python3 tools/device/gemm_csv_table.py "$OUT/gemm_h100_32b_stream.csv"
  for sh in 10 11; do
    step shape$sh "$(lim 50)" "${g[@]}" --m 16,64 --formats 2:4-gemv,spense-out-gemv --small-m-kernel tensor-cores \
      --small-m-tc-shape $sh --csv "$OUT/gemm_h100_32b_stream_shape$sh.csv"
    python3 tools/device/gemm_csv_table.py "$OUT/gemm_h100_32b_stream_shape$sh.csv"
  done
  step decode "$(lim 110)" "${d[@]}" --batch 1,16,64 --e4m3-tokens --verbose --csv "$OUT/decode_h100_32b_stream.csv"
  show decode 80
elif [[ $PART == tiled ]]; then
  linear_tests 170
  dec() {
    step ${1%%:*} "$(lim 80)" "${d[@]}" --batch 1,16,64 ${1#*:} --csv "$OUT/decode_h100_32b_${1%%:*}.csv"
    show ${1%%:*} 12
  }
  dec tiled1:--tiled-weights
  dec off1:
  step gemm "$(lim 110)" "${g[@]}" --tiled-weights --m 1,16,32,64 --formats dense,2:4,spense-out,2:4-gemv,spense-out-gemv \
    --csv "$OUT/gemm_h100_32b_tiled_stream.csv"
  python3 tools/device/gemm_csv_table.py "$OUT/gemm_h100_32b_tiled_stream.csv"
  for r in tiled2:--tiled-weights off2: rows:--e4m3-tokens; do dec $r; done
elif [[ $PART == ab ]]; then
  for r in $(seq ${PAIRS:-2}); do
    step on$r "$(lim 80)" "${d[@]}" --batch 1,16,64 --e4m3-tokens --csv "$OUT/decode_h100_32b_stream_ab_on$r.csv"
    show on$r
    step off$r "$(lim 80)" "${d[@]}" --batch 1,16,64 --no-e4m3-tokens --csv "$OUT/decode_h100_32b_stream_ab_off$r.csv"
    show off$r
  done
  if [[ -n ${TESTS:-} ]]; then
    step tests_engine "$(lim 120)" ./build-gpu/test_cuda_engine
    fails tests_engine
    linear_tests 120
  fi
elif [[ $PART == ncu ]]; then
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  sec="--section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats --section MemoryWorkloadAnalysis"
  keys="Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Eligible Warps|Warp Cycles Per Issued|Grid Size|Block Size|Stall"
  for sh in 10 11; do
    step ncu_shape$sh "$(lim 60)" $NCU --clock-control none -k regex:"gemv_stream" --launch-count 2 $sec \
      "${g[@]}" --layers gate_up --m 16 --iters 3 --warmup 1 --formats spense-out-gemv --small-m-kernel tensor-cores \
      --small-m-tc-shape $sh --csv "$L/x.csv"
    grep -E "gemv_stream_k<|$keys" "$L/ncu_shape$sh.log" | sed -E 's/ +/ /g' | head -40
  done
fi
echo "total $(( $(date +%s) - T0 )) s"
