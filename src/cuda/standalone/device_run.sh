#!/usr/bin/env bash
# One device call: configure + build the standalone GPU runtime, then run the GPU tests
# and/or the benchmark, logs to $OUT. Usage (from the repository root on the GPU machine):
#   bash src/cuda/standalone/device_run.sh test|bench|all [spense_bench_gemm flags...]
set -uo pipefail
CSL=${CUSPARSELT_ROOT:-/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cusparselt}
OUT=${OUT:-/tmp/spense_out}
mkdir -p "$OUT"
mode=${1:-all}
shift || true
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > "$OUT/gpu.txt" 2>&1
cmake -S src/cuda/standalone -B build-gpu -G Ninja -DCUSPARSELT_ROOT="$CSL" -DCMAKE_CUDA_ARCHITECTURES=90a \
  > "$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; exit 1; }
t0=$(date +%s)
cmake --build build-gpu -j16 > "$OUT/build.log" 2>&1 || { grep -E "error|Error" -A4 "$OUT/build.log" | head -120; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
rc=0
if [ "$mode" = test ] || [ "$mode" = all ]; then
  t0=$(date +%s)
  ./build-gpu/test_cuda_linear --gtest_brief=1 > "$OUT/test.log" 2>&1 || rc=1
  grep -E "Failure|error|Expected|Which is|value of|PASSED|FAILED|SKIPPED|tests ran" "$OUT/test.log" | head -60
  echo "tests: $(( $(date +%s) - t0 )) s (rc=$rc)"
fi
if [ "$mode" = bench ] || [ "$mode" = all ]; then
  ./build-gpu/spense_bench_gemm "$@" > "$OUT/bench.log" 2>&1 || rc=1
  grep -v "^qwen3" "$OUT/bench.log" | tail -60
fi
exit $rc
