#!/usr/bin/env bash
# Device calls for GPU pruning with BF16 calibration forwards (--forward-dtype bf16 on the GPU,
# issue 8; docs/perf.md "BF16 forwards on the GPU"). From the repository root on the GPU machine,
# with .devdeps carried (tools/device_env.sh). Builds only what it runs.
#   bash tools/device/prune_bf16_runs.sh check   # GPU tests; 8B 3 blocks f32 / bf16; 32B 2 blocks bf16
#   bash tools/device/prune_bf16_runs.sh 8b      # Qwen3-8B, 36 of 36 blocks, bf16 forwards (measured, not extrapolated)
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
CSL=${CUSPARSELT_ROOT:-/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cusparselt}
source tools/device_env.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
t0=$(date +%s)
cmake -S src/cuda/standalone -B build-gpu -G Ninja -DCUSPARSELT_ROOT="$CSL" -DCMAKE_CUDA_ARCHITECTURES=90a \
  > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
targets=(spense_gpu)
[[ ${1:-check} == check ]] && targets+=(test_cuda_prune test_cuda_engine test_cuda_linear)
cmake --build build-gpu -j16 --target "${targets[@]}" > "$OUT/build.log" 2>&1 ||
  { grep -E "error" -A4 "$OUT/build.log" | head -60; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
bp() {  # label, flags...
  local label=$1; shift
  build-gpu/spense_gpu bench-prune "$@" --json "$OUT/prune.jsonl" > "$OUT/$label.log" 2>&1
  echo "[$label rc=$?] $(grep -E '^total|^peak' "$OUT/$label.log" | tr '\n' ' ')"
}
case "${1:-check}" in
  check)
    for t in test_cuda_prune test_cuda_linear test_cuda_engine; do
      t1=$(date +%s)
      build-gpu/$t > "$OUT/$t.log" 2>&1; rc=$?
      grep -E "Failure|Expected|Which is|bf16 Hessians|mask entries|perplexity|PASSED|FAILED" "$OUT/$t.log" | head -40
      echo "$t rc=$rc $(( $(date +%s) - t1 )) s"
    done
    bp p8_f32 --synthetic qwen3-8b --layers 3
    bp p8_bf16 --synthetic qwen3-8b --layers 3 --forward-dtype bf16
    bp p32_bf16 --synthetic qwen3-32b --layers 2 --forward-dtype bf16
    ;;
  8b) bp p8_full_bf16 --synthetic qwen3-8b --layers 36 --forward-dtype bf16 ;;
  *) echo "usage: $0 check|8b"; exit 2 ;;
esac
