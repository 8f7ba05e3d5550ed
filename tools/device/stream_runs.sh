#!/usr/bin/env bash
# Device calls for the small-M kernel's streamed E4M3 shapes (10-11: persistent blocks fed by
# the TMA, E4M3 x E4M3 on wgmma; gemv_stream.cu), one part per call:
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
#   PART=ss
#     shapes 11, 12, 10, 13 forced: 2:4 and Spense gate_up, down, qkv at M = 16, 64; the small-M
#     kernel tests; one on/off decode pair; test_cuda_engine
#   PART=ss2
#     shapes 11, 12, 13 forced per layer at M = 16, 64; the small-M kernel tests; FP8 decode
#     (auto back end, shapes 12-13 timed too) at batch 1, 16, 64 with --verbose
#   PART=ncu
#     shape 11 on 2:4 gate_up and down at M = 16 with its persistent blocks capped at 132, 264 and
#     none; Nsight Compute's full set on 2:4 gate_up at M = 16 and 64 (text files in $OUT)
#   PART=fix (15dcc00: the cut units' fix-up loads the whole tile at once)
#     the small-M kernel tests; shape 13 forced on every Qwen3-32B layer at M = 1, 16, 32, 64
#     (2:4 and Spense) and the libraries (dense, 2:4, Spense-out) at the same M, with the fits of
#     time against bytes (the intercept was 7.8 / 9.8 / 15.0 / 26.6 us at M = 1 / 16 / 32 / 64);
#     FP8 decode --compare at batch 1, 16, 64 (auto back end, --verbose); the engine tests
# From the repository root on the GPU machine, with .devdeps carried:
#   [DEADLINE=S] [PART=first|tiled|ab|ss|ss2|ncu|fix] bash tools/device/stream_runs.sh
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
elif [[ $PART == ss ]]; then
  # Shapes 12-13 (the streamed shapes with the weights read by the wgmmas from shared memory,
  # run only when forced) against 11 and 10 per layer, then the GPU tests, then one decode A/B
  # pair of the E4M3-token default and the engine tests.
  for sh in 11 12 10 13; do
    step shape$sh "$(lim 45)" "${g[@]}" --layers gate_up,down,qkv --m 16,64 --formats 2:4-gemv,spense-out-gemv \
      --small-m-kernel tensor-cores --small-m-tc-shape $sh --csv "$OUT/gemm_h100_32b_ss_shape$sh.csv"
    python3 tools/device/gemm_csv_table.py "$OUT/gemm_h100_32b_ss_shape$sh.csv" | grep gemv | sed "s/^/shape $sh: /"
  done
  linear_tests 150
  step on1 "$(lim 80)" "${d[@]}" --batch 1,16,64 --e4m3-tokens --csv "$OUT/decode_h100_32b_ss_on1.csv"
  show on1
  step off1 "$(lim 80)" "${d[@]}" --batch 1,16,64 --no-e4m3-tokens --csv "$OUT/decode_h100_32b_ss_off1.csv"
  show off1
  step tests_engine "$(lim 120)" ./build-gpu/test_cuda_engine
  fails tests_engine 20
elif [[ $PART == ss2 ]]; then
  # Shape 13 (12 with 8 slots, one block per SM) against 11 and 12 per layer, the small-M kernel
  # tests, then FP8 decode with the auto back end timing shapes 12-13 too.
  for sh in 11 12 13; do
    step shape$sh "$(lim 45)" "${g[@]}" --layers gate_up,down,qkv,o --m 16,64 --formats 2:4-gemv,spense-out-gemv \
      --small-m-kernel tensor-cores --small-m-tc-shape $sh --csv "$OUT/gemm_h100_32b_ss2_shape$sh.csv"
    python3 tools/device/gemm_csv_table.py "$OUT/gemm_h100_32b_ss2_shape$sh.csv" | grep gemv | sed "s/^/shape $sh: /"
  done
  linear_tests 100
  step decode "$(lim 90)" "${d[@]}" --batch 1,16,64 --verbose --csv "$OUT/decode_h100_32b_ss2.csv"
  show decode 40
elif [[ $PART == fix ]]; then
  tag=$(nvidia-smi --query-gpu=name --format=csv,noheader | grep -o 'H[0-9]*' | head -1 | tr H h)
  linear_tests 110
  step shape13 "$(lim 70)" "${g[@]}" --m 1,16,32,64 --formats 2:4-gemv,spense-out-gemv --small-m-kernel tensor-cores \
    --small-m-tc-shape 13 --csv "$OUT/gemm_${tag}_32b_fix_shape13.csv"
  step lib "$(lim 70)" "${g[@]}" --m 1,16,32,64 --formats dense,2:4,spense-out --csv "$OUT/gemm_${tag}_32b_fix_lib.csv"
  for f in shape13 lib; do python3 tools/device/gemm_csv_table.py "$OUT/gemm_${tag}_32b_fix_$f.csv"; done
  python3 tools/device/gemm_fit.py "$OUT/gemm_${tag}_32b_fix_shape13.csv" "$OUT/gemm_${tag}_32b_fix_lib.csv"
  step decode "$(lim 100)" "${d[@]}" --batch 1,16,64 --verbose --csv "$OUT/decode_${tag}_32b_fix.csv"
  show decode 40
  step tests_engine "$(lim 120)" ./build-gpu/test_cuda_engine
  fails tests_engine 20
elif [[ $PART == ncu ]]; then
  # Shape 11 forced, 2:4 layers at M = 16: timing with the persistent blocks capped (does more
  # concurrency stream faster?), then one launch each at M = 16 and 64 under Nsight Compute's
  # full set (details and the raw stall metrics come back as text files in $OUT).
  for b in 132 264 0; do
    step blocks$b "$(lim 40)" "${g[@]}" --layers gate_up,down --m 16 --formats 2:4-gemv --small-m-kernel tensor-cores \
      --small-m-tc-shape 11 --small-m-stream-blocks $b --csv "$L/b$b.csv"
    python3 tools/device/gemm_csv_table.py "$L/b$b.csv" | grep gemv | sed "s/^/blocks $b: /"
  done
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  keys="Duration|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|Achieved Occupancy|Registers Per|Eligible Warps|Warp Cycles Per Issued|Grid Size|Block Size|Block Limit|Hit Rate"
  for m in 16 64; do
    f=$OUT/ncu_shape11_m$m
    step ncu_m$m "$(lim 90)" $NCU --clock-control none -k regex:"gemv_stream" --launch-count 1 --set full -f -o "$f" \
      "${g[@]}" --layers gate_up --m $m --iters 3 --warmup 1 --formats 2:4-gemv --small-m-kernel tensor-cores \
      --small-m-tc-shape 11 --csv "$L/x.csv"
    $NCU -i "$f.ncu-rep" --page details > "$f.txt" 2>&1
    $NCU -i "$f.ncu-rep" --page raw > "$f.raw.txt" 2>&1
    rm -f "$f.ncu-rep"
    grep -E "$keys" "$f.txt" | sed -E 's/ +/ /g' | head -24
    grep -E "issue_stalled_[a-z_]+_per_warp_active.pct " "$f.raw.txt" | awk '$NF+0 > 2 {print $1, $NF}' | sed 's/smsp__average_warps_issue_stalled_//'
  done
fi
echo "total $(( $(date +%s) - T0 )) s"
