#!/usr/bin/env bash
# One device call: configure + build the standalone GPU parts (runtime, decode engine, their
# tests, spense_bench_gemm, spense_gpu), then run what MODE asks, logs to $OUT. From the
# repository root on the GPU machine (carry .devdeps: nlohmann/json.hpp for the engine):
#   bash src/cuda/standalone/device_run.sh test            GPU tests (linear layers + engine)
#   bash src/cuda/standalone/device_run.sh engine-test     engine tests only
#   bash src/cuda/standalone/device_run.sh bench [flags]   spense_bench_gemm flags...
#   bash src/cuda/standalone/device_run.sh decode [flags]  spense_gpu bench-decode flags...
#   bash src/cuda/standalone/device_run.sh prune-test      GPU pruning tests
#   bash src/cuda/standalone/device_run.sh prune [flags]   spense_gpu bench-prune flags...
#   bash src/cuda/standalone/device_run.sh build           build only
# BUILD_TARGETS="a b" builds only those targets (shorter calls).
# Pruning on the GPU is built when .devdeps/debs holds OpenBLAS and LAPACKE (tools/device_env.sh).
set -uo pipefail
CSL=${CUSPARSELT_ROOT:-/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cusparselt}
OUT=${OUT:-/tmp/spense_out}
mkdir -p "$OUT"
[[ -d .devdeps/debs ]] && source tools/device_env.sh
mode=${1:-test}
shift || true
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > "$OUT/gpu.txt" 2>&1
cmake -S src/cuda/standalone -B build-gpu -G Ninja -DCUSPARSELT_ROOT="$CSL" -DCMAKE_CUDA_ARCHITECTURES=90a \
  > "$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; exit 1; }
t0=$(date +%s)
cmake --build build-gpu -j16 ${BUILD_TARGETS:+--target $BUILD_TARGETS} > "$OUT/build.log" 2>&1 || { grep -E "error|Error" -A4 "$OUT/build.log" | head -120; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
rc=0
run_test() {  # name
  local t0; t0=$(date +%s)
  ./build-gpu/$1 --gtest_brief=0 > "$OUT/$1.log" 2>&1 || rc=1
  grep -E "Failure|error:|Expected|Which is|value of|rel err|greedy|PASSED|FAILED|SKIPPED|tests ran|^\[[a-z]" "$OUT/$1.log" | head -80
  echo "$1: $(( $(date +%s) - t0 )) s (rc=$rc)"
}
case "$mode" in
  build) ;;
  test) run_test test_cuda_engine; run_test test_cuda_linear; [[ -x build-gpu/test_cuda_prune ]] && run_test test_cuda_prune ;;
  engine-test) run_test test_cuda_engine ;;
  prune-test) run_test test_cuda_prune ;;
  prune) ./build-gpu/spense_gpu bench-prune "$@" > "$OUT/prune.log" 2>&1 || rc=1; tail -60 "$OUT/prune.log" ;;
  bench) ./build-gpu/spense_bench_gemm "$@" > "$OUT/bench.log" 2>&1 || rc=1; grep -v "^qwen3" "$OUT/bench.log" | tail -60 ;;
  decode) ./build-gpu/spense_gpu bench-decode "$@" > "$OUT/decode.log" 2>&1 || rc=1; tail -60 "$OUT/decode.log" ;;
  *) echo "unknown mode $mode"; exit 2 ;;
esac
exit $rc
