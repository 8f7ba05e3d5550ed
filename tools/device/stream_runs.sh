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
#     shapes 11, 13, 14 forced per layer at M = 16, 64; the small-M kernel tests; FP8 decode
#     (auto back end) at batch 1, 16, 64 with --verbose
#   PART=exp1  (the SPENSE_STREAM_EXP bits and SPENSE_STREAM_TRACE of gemv.cu; shapes 14-15)
#     the small-M kernel tests with SPENSE_STREAM_EXP=15; per-block traces of shape 13 (qkv,
#     gate_up, Spense, M = 16) with bits 0 and 15; Spense layers at M = 16, 64 with shape 13
#     and bits 0, 8, 2, 11, shape 15 and bits 11, 0, shape 14
#   PART=exp2  (on the warm machine after exp1: the build is then up to date)  [BITS=11]
#     test_cuda_engine with SPENSE_ENGINE_PDL=1 SPENSE_STREAM_EXP=$BITS; FP8 decode at batch 16,
#     64: defaults, engine PDL, engine PDL + the bits, and that with shape 15 forced (traced)
#   PART=ncu
#     shape 11 on 2:4 gate_up and down at M = 16 with its persistent blocks capped at 132, 264 and
#     none; Nsight Compute's full set on 2:4 gate_up at M = 16 and 64 (text files in $OUT)
#   PART=fix (15dcc00: the cut units' fix-up loads the whole tile at once)
#     the small-M kernel tests; shape 13 forced on every Qwen3-32B layer at M = 1, 16, 32, 64
#     (2:4 and Spense) and the libraries (dense, 2:4, Spense-out) at the same M, with the fits of
#     time against bytes (the intercept was 7.8 / 9.8 / 15.0 / 26.6 us at M = 1 / 16 / 32 / 64);
#     FP8 decode --compare at batch 1, 16, 64 (auto back end, --verbose); the engine tests
# From the repository root on the GPU machine, with .devdeps carried:
#   [DEADLINE=S] [PART=first|tiled|ab|ss|ss2|exp1|exp2|ncu|fix] bash tools/device/stream_runs.sh
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
tag=$(nvidia-smi --query-gpu=name --format=csv,noheader | grep -o 'H[0-9]*' | head -1 | tr H h)
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
  # Shapes 13 (one block per SM, 8 slots) and 14 (the deepest ring that fits) against 11 per
  # layer, the small-M kernel tests, then FP8 decode with the auto back end.
  for sh in 11 13 14; do
    step shape$sh "$(lim 45)" "${g[@]}" --layers gate_up,down,qkv,o --m 16,64 --formats 2:4-gemv,spense-out-gemv \
      --small-m-kernel tensor-cores --small-m-tc-shape $sh --csv "$OUT/gemm_h100_32b_ss2_shape$sh.csv"
    python3 tools/device/gemm_csv_table.py "$OUT/gemm_h100_32b_ss2_shape$sh.csv" | grep gemv | sed "s/^/shape $sh: /"
  done
  linear_tests 100
  step decode "$(lim 90)" "${d[@]}" --batch 1,16,64 --verbose --csv "$OUT/decode_h100_32b_ss2.csv"
  show decode 40
elif [[ $PART == fix ]]; then
  linear_tests 110
  step shape13 "$(lim 70)" "${g[@]}" --m 1,16,32,64 --formats 2:4-gemv,spense-out-gemv --small-m-kernel tensor-cores \
    --small-m-tc-shape 13 --csv "$OUT/gemm_h100_32b_fix_shape13.csv"
  step lib "$(lim 70)" "${g[@]}" --m 1,16,32,64 --formats dense,2:4,spense-out --csv "$OUT/gemm_h100_32b_fix_lib.csv"
  for f in shape13 lib; do python3 tools/device/gemm_csv_table.py "$OUT/gemm_h100_32b_fix_$f.csv"; done
  python3 tools/device/gemm_fit.py "$OUT/gemm_h100_32b_fix_shape13.csv" "$OUT/gemm_h100_32b_fix_lib.csv"
  step decode "$(lim 100)" "${d[@]}" --batch 1,16,64 --verbose --csv "$OUT/decode_h100_32b_fix.csv"
  show decode 40
  step tests_engine "$(lim 120)" ./build-gpu/test_cuda_engine
  fails tests_engine 20
elif [[ $PART == exp1 ]]; then
  SPENSE_STREAM_EXP=15 linear_tests 150
  traced() {  # LABEL SHAPE EXP: traced Spense qkv and gate_up at M = 16 and 64 (launches 1-2 of each dump shown)
    SPENSE_STREAM_TRACE=1 SPENSE_STREAM_EXP=$3 step $1 "$(lim 50)" "${g[@]}" --layers qkv,gate_up --m 16,64 \
      --formats spense-out-gemv --small-m-kernel tensor-cores --small-m-tc-shape $2 --csv "$L/$1.csv"
    grep -E "^trace .* #[12] " "$L/$1.log" | sed -E 's/ +/ /g; s/^trace /'$1' /' | cut -c1-260
    python3 tools/device/gemm_fit.py "$L/$1.csv" | sed 's/^/  /'
  }
  traced t13e0 13 0
  traced t13e15 13 15
  for v in 13:0 13:8 13:2 13:11 15:11 14:0 15:0; do
    sh=${v%%:*} e=${v#*:}
    SPENSE_STREAM_EXP=$e step s${sh}e$e "$(lim 45)" "${g[@]}" --m 16,64 --formats spense-out-gemv \
      --small-m-kernel tensor-cores --small-m-tc-shape $sh --csv "$OUT/gemm_${tag}_32b_exp_s${sh}e$e.csv"
    python3 tools/device/gemm_csv_table.py "$OUT/gemm_${tag}_32b_exp_s${sh}e$e.csv" | grep gemv | \
      awk -v t="s${sh}e$e" '{print t, $1, $5, $6}' | paste -sd' '
    python3 tools/device/gemm_fit.py "$OUT/gemm_${tag}_32b_exp_s${sh}e$e.csv" | sed 's/^/  /'
  done
elif [[ $PART == exp2 ]]; then
  B=${BITS:-11}  # the SPENSE_STREAM_EXP bits of the PDL runs (11: early launch, byte runs, head writes)
  SPENSE_ENGINE_PDL=1 SPENSE_STREAM_EXP=$B step tests_engine "$(lim 120)" ./build-gpu/test_cuda_engine
  fails tests_engine 20
  dec() {  # LABEL ENV... -- FLAGS...
    local label=$1; shift
    local envs=(); while [[ $1 != -- ]]; do envs+=("$1"); shift; done; shift
    env "${envs[@]}" timeout "$(lim 90)" "${d[@]}" --batch 16,64 --csv "$OUT/decode_${tag}_32b_$label.csv" "$@" \
      > "$L/$label.log" 2>&1
    echo "[$label] rc=$?"; show $label 12; grep -E "^trace" "$L/$label.log" | sed -E 's/ +/ /g' | cut -c1-300 | head -10
    [[ -z ${TAR_TO:-} ]] || tar czf "$TAR_TO" -C "$(dirname "$L")" "$(basename "$L")"
  }
  dec x0 X=0 --
  dec xpdl SPENSE_ENGINE_PDL=1 --
  dec xpdlb SPENSE_ENGINE_PDL=1 SPENSE_STREAM_EXP=$B --
  dec xpdlbs15 SPENSE_ENGINE_PDL=1 SPENSE_STREAM_EXP=$B SPENSE_STREAM_TRACE=1 -- --formats spense --small-m-tc-shape 15
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
