#!/usr/bin/env bash
# Device calls for the small-M kernel's E4M3-token block shapes (6-9: E4M3 weights x E4M3 tokens
# on Hopper's wgmma), one part per call. The decode and bench-gemm runs pass --e4m3-tokens, the
# default when they ran (off since the A/B part measured them slower in the step):
#   PART=layers (default)
#     tests    test_cuda_linear, all of it (the replica fix of 7b9f604 included)
#     gemm     bench-gemm, Qwen3-32B, FP8, M = 1, 16, 32, 64: cuBLASLt dense, cuSPARSELt 2:4, the
#              library Spense-out hybrid, and our kernel (AUTO: every shape timed, the E4M3-token
#              ones included; the plan column names the winner)
#   PART=decode
#     decode   FP8 --compare at batch 1, 16, 64 (auto back end, axis out, E4M3 cache, --verbose)
#   PART=axis (after axis=in layers took E4M3 tokens too)
#     tests    test_cuda_linear's small-M kernel and graph tests
#     gemm     bench-gemm FP8, M = 16, 64: library and our kernel on both axes
#     out/mixed  FP8 --compare dense,spense at batch 16, 64, --verbose, axis out then mixed
#     graph    mixed again, the auto back end timing its candidates as graphs
#     ncu_*    Nsight Compute on gate_up at M = 16: our shapes 7 and 8, cuSPARSELt's 2:4 kernel
#   PART=tests
#     linear, engine   test_cuda_linear's small-M kernel and graph tests, test_cuda_engine
#   PART=ab
#     on/off   FP8 dense and Spense at batch 1 and 16, with and without the E4M3-token shapes
#              (--e4m3-tokens; the call ran with the flag's opposite, --no-e4m3-tokens, when they
#              were on by default), twice in turn (the first pair --verbose)
#   PART=final
#     tests, engine   test_cuda_linear and test_cuda_engine, all of them
#     gemm     bench-gemm FP8 M = 1-64 (our kernel's shapes 6-9 among the candidates)
#     fp8, bf16  decode --compare: FP8 (E4M3 cache) at batch 1, 16, 64; BF16 at batch 1, 16
# From the repository root on the GPU machine, with .devdeps carried:
#   [DEADLINE=S] [PART=layers|decode|axis|tests|ab|final] bash tools/device/e4m3_tokens_runs.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
PART=${PART:-layers}
L=/tmp/e4m3_logs_$PART
rm -rf "$L"
LOGS=$L TAR_TO=$OUT/logs_$PART.tgz
export BUILD_TARGETS=${BUILD_TARGETS-"test_cuda_linear test_cuda_engine spense_gpu spense_bench_gemm"}
source tools/device/lib.sh
if [[ $PART == layers ]]; then
  step tests "$(lim 170)" ./build-gpu/test_cuda_linear
  grep -E "Failure|Expected|Which is|rel_err|PASSED|FAILED|^\[  (FAILED|SKIPPED)" "$L/tests.log" | head -40
  step gemm "$(lim 150)" ./build-gpu/spense_bench_gemm --e4m3-tokens --models qwen3-32b --dtypes fp8 --m 1,16,32,64 --d 0.25 \
    --formats dense,2:4,spense-out,2:4-gemv,spense-out-gemv --csv "$OUT/gemm_h100_32b_e4m3tok.csv"
  python3 tools/device/gemm_csv_table.py "$OUT/gemm_h100_32b_e4m3tok.csv" 2>/dev/null || \
    cut -d, -f3,7,12,13,18,21 "$OUT/gemm_h100_32b_e4m3tok.csv"
elif [[ $PART == axis ]]; then
  step tests "$(lim 120)" ./build-gpu/test_cuda_linear --gtest_filter='CudaLinear.SmallMKernel*:CudaLinear.GraphCapture*'
  grep -E "Failure|Expected|Which is|rel_err|PASSED|FAILED|^\[  (FAILED|SKIPPED)" "$L/tests.log" | head -40
  step gemm "$(lim 90)" ./build-gpu/spense_bench_gemm --e4m3-tokens --models qwen3-32b --dtypes fp8 --m 16,64 --d 0.25 \
    --formats dense,2:4,spense-out,spense-in,spense-out-gemv,spense-in-gemv --csv "$OUT/gemm_h100_32b_e4m3tok_axis.csv"
  python3 tools/device/gemm_csv_table.py "$OUT/gemm_h100_32b_e4m3tok_axis.csv"
  d=(./build-gpu/spense_gpu bench-decode --synthetic qwen3-32b --backend auto --steps 32 --compare --formats dense,spense
     --dtype fp8 --kv-cache fp8 --batch 16,64 --verbose --e4m3-tokens)
  show() { grep -E "^(fp8|bf16) .*ms/step|: (auto|ours|library)" "$L/$1.log"; }
  for ax in out mixed; do
    step $ax "$(lim 90)" "${d[@]}" --axis $ax --csv "$OUT/decode_h100_32b_e4m3tok_$ax.csv"
    show $ax
  done
  step graph "$(lim 90)" "${d[@]}" --axis mixed --auto-timing graph --csv "$L/decode_h100_32b_e4m3tok_mixed_graph.csv"
  show graph
  # Nsight Compute: our kernel's E4M3-token shapes 7 and 8 (each K split the timing tries) and
  # cuSPARSELt's 2:4 kernel on gate_up at M = 16: DRAM throughput, duration, stalls.
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  sec="--section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats --section MemoryWorkloadAnalysis"
  keys="Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Eligible Warps|Warp Cycles Per Issued|Grid Size|Block Size|Stall"
  b=(./build-gpu/spense_bench_gemm --e4m3-tokens --models qwen3-32b --layers gate_up --m 16 --d 0.25 --dtypes fp8 --iters 3 --warmup 1)
  for sh in 7 8; do
    step ncu_shape$sh "$(lim 60)" $NCU --clock-control none -k regex:"gemv_tc" --launch-count 4 $sec \
      "${b[@]}" --formats spense-out-gemv --small-m-kernel tensor-cores --small-m-tc-shape $sh --csv "$L/x.csv"
    grep -E "gemv_tc_k<|$keys" "$L/ncu_shape$sh.log" | sed -E 's/ +/ /g' | head -60
  done
  step ncu_sparselt "$(lim 60)" $NCU --clock-control none -k regex:"sparse|sm90" --launch-count 2 $sec \
    "${b[@]}" --formats 2:4 --no-sparse-search --csv "$L/x.csv"
  grep -E "^  [a-zA-Z_].*\(|$keys" "$L/ncu_sparselt.log" | sed -E 's/ +/ /g' | head -40
elif [[ $PART == final ]]; then
  step tests "$(lim 150)" ./build-gpu/test_cuda_linear
  grep -E "Failure|Expected|Which is|rel_err|PASSED|FAILED|^\[  (FAILED|SKIPPED)" "$L/tests.log" | head -30
  step engine "$(lim 120)" ./build-gpu/test_cuda_engine
  grep -E "Failure|Expected|Which is|rel err|PASSED|FAILED|^\[  (FAILED|SKIPPED)" "$L/engine.log" | head -30
  step gemm "$(lim 90)" ./build-gpu/spense_bench_gemm --e4m3-tokens --models qwen3-32b --dtypes fp8 --m 1,16,32,64 --d 0.25 \
    --formats dense,2:4,spense-out,2:4-gemv,spense-out-gemv --csv "$OUT/gemm_h100_32b_e4m3tok_final.csv"
  python3 tools/device/gemm_csv_table.py "$OUT/gemm_h100_32b_e4m3tok_final.csv"
  d=(./build-gpu/spense_gpu bench-decode --synthetic qwen3-32b --backend auto --axis out --steps 32 --compare --e4m3-tokens)
  show() { grep -E "^(fp8|bf16) .*ms/step" "$L/$1.log"; }
  step fp8 "$(lim 90)" "${d[@]}" --dtype fp8 --kv-cache fp8 --batch 1,16,64 --csv "$OUT/decode_h100_32b_e4m3tok_final_fp8.csv"
  show fp8
  step bf16 "$(lim 90)" "${d[@]}" --dtype bf16 --batch 1,16 --csv "$OUT/decode_h100_32b_e4m3tok_final_bf16.csv"
  show bf16
elif [[ $PART == tests ]]; then
  step linear "$(lim 120)" ./build-gpu/test_cuda_linear --gtest_filter='CudaLinear.SmallMKernel*:CudaLinear.GraphCapture*'
  grep -E "Failure|Expected|Which is|PASSED|FAILED|^\[  (FAILED|SKIPPED)" "$L/linear.log" | head -30
  step engine "$(lim 90)" ./build-gpu/test_cuda_engine
  grep -E "Failure|Expected|Which is|PASSED|FAILED|^\[  (FAILED|SKIPPED)" "$L/engine.log" | head -30
elif [[ $PART == ab ]]; then
  d=(./build-gpu/spense_gpu bench-decode --synthetic qwen3-32b --backend auto --axis out --steps 32
     --formats dense,spense --dtype fp8 --kv-cache fp8 --batch 1,16)
  show() { grep -E "^(fp8|bf16) .*ms/step|: (auto|ours|library)" "$L/$1.log" | grep -v " alone "; }
  for r in 1 2; do
    v=(); [[ $r == 1 ]] && v=(--verbose)
    step on$r "$(lim 80)" "${d[@]}" "${v[@]}" --e4m3-tokens --csv "$OUT/decode_h100_32b_e4m3tok_ab_on$r.csv"
    show on$r
    step off$r "$(lim 80)" "${d[@]}" "${v[@]}" --csv "$OUT/decode_h100_32b_e4m3tok_ab_off$r.csv"
    show off$r
  done
else
  d=(./build-gpu/spense_gpu bench-decode --synthetic qwen3-32b --backend auto --axis out --steps 32 --compare --e4m3-tokens)
  step decode "$(lim 200)" "${d[@]}" --dtype fp8 --kv-cache fp8 --batch 1,16,64 --verbose \
    --csv "$OUT/decode_h100_32b_e4m3tok.csv"
  grep -E "^(fp8|bf16) .*ms/step|: (auto|ours|library)|E4M3 tokens" "$L/decode.log" | head -80
fi
echo "total $(( $(date +%s) - T0 )) s"
