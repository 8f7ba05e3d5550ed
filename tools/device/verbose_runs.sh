#!/usr/bin/env bash
# One device call (next session): the replica fix's GPU test, then each layer's own time inside
# the engine (--verbose) against the step, for axis out and mixed at batch 16 and 64 (FP8, E4M3
# cache), to find why axis in wins per layer in bench-gemm but not in the decode step.
#   tests     test_cuda_linear: the graph tests (SmallMKernelAutoInsideGraphs holds the replica case)
#   out/mixed auto back end, --dense-search 8, --verbose (per layer: back end, time alone, plan)
#   graph     mixed, auto back end choosing by graph replays (--auto-timing graph)
#   lib       library back end, mixed, --verbose
# From the repository root on the GPU machine, with .devdeps carried:
#   [DEADLINE=S] bash tools/device/verbose_runs.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
L=/tmp/verbose_logs
rm -rf "$L"
LOGS=$L TAR_TO=$OUT/logs.tgz
export BUILD_TARGETS=${BUILD_TARGETS-"test_cuda_linear spense_gpu"}
source tools/device/lib.sh
step tests "$(lim 60)" ./build-gpu/test_cuda_linear \
  --gtest_filter='CudaLinear.SmallMKernelAutoInsideGraphs:CudaLinear.GraphCaptureAndReplicas'
grep -E "Failure|Expected|Which is|PASSED|FAILED|OK \]" "$L/tests.log" | head -20
d=(./build-gpu/spense_gpu bench-decode --synthetic qwen3-32b --steps 32 --dtype fp8 --kv-cache fp8 --formats dense,spense
   --batch 16,64 --verbose)
show() { grep -E "^(fp8|bf16) .*ms/step|: (auto|ours|library)|alone" "$L/$1.log"; }
for ax in out mixed; do
  step $ax "$(lim 90)" "${d[@]}" --backend auto --dense-search 8 --axis $ax --csv "$OUT/decode_fp8_verbose_$ax.csv"
  show $ax
done
step graph "$(lim 90)" "${d[@]}" --backend auto --dense-search 8 --axis mixed --auto-timing graph \
  --csv "$OUT/decode_fp8_verbose_mixed_graph.csv"
show graph
step lib "$(lim 60)" "${d[@]}" --backend library --axis mixed --csv "$L/decode_fp8_verbose_lib_mixed.csv"
show lib
echo "total $(( $(date +%s) - T0 ))s"
