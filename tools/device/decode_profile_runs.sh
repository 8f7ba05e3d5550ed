#!/usr/bin/env bash
# One device call: where a decode step's time goes (bench-decode --profile: an event after every
# operation of the captured step), Qwen3-32B shapes, FP8 and BF16, dense / 2:4 / Spense d=0.25 at
# batch 1 and 16. From the repository root on the GPU machine, with .devdeps carried:
#   PARTS="tests decode nopdl base gemm" bash tools/device/decode_profile_runs.sh [tag] [bench-decode flags...]
# BATCH (default 1,16): the decode batch sizes; DTYPES (default fp8,bf16): their precisions.
# PARTS (default "tests decode"): tests = the engine's and small-M kernel's GPU tests; decode = the
# profile; nopdl = the same without programmatic dependent launch; base = the commit archived in
# .devdeps/baseline.tgz (git archive), built and run on the same GPU; gemm = per-layer small-M
# kernel against cuBLASLt, M = 1 .. 64; basegemm = the same with the base build (after base). The logs are re-tarred into $OUT/logs.tgz after every step
# (the device tool returns at most 8 files, and a call cut off by its time limit keeps what ran).
# CSV names carry no device: the device is the CSV's first column.
set -uo pipefail
OUT=${OUT:-/tmp/out}
tag=${1:-profile}; shift || true
PARTS=" ${PARTS:-tests decode} "
L=/tmp/decode_logs_$tag
rm -rf "$L"
LOGS=$L TAR_TO=$OUT/logs.tgz  # lib.sh's step() writes there
source tools/device/lib.sh
has() { [[ $PARTS == *" $1 "* ]]; }
decode_args=(--synthetic qwen3-32b --compare --dtype "${DTYPES:-fp8,bf16}" --backend auto --axis out --batch "${BATCH:-1,16}" --steps 32)
if has tests; then
  step test_linear 300 ./build-gpu/test_cuda_linear --gtest_filter='CudaLinear.SmallMKernel*'
  grep -E "Failure|Expected|Which is|PASSED|FAILED" "$L/test_linear.log" | head -20
  step test_engine 240 ./build-gpu/test_cuda_engine
  grep -E "Failure|Expected|Which is|rel err|PASSED|FAILED|greedy" "$L/test_engine.log" | head -60
fi
if has decode; then
  step decode 300 ./build-gpu/spense_gpu bench-decode "${decode_args[@]}" --profile 16 \
    --csv "$OUT/decode_32b_$tag.csv" "$@"
  grep -E "^(fp8|bf16) |^    |^summary" "$L/decode.log"
fi
if has nopdl; then
  step decode_nopdl 200 ./build-gpu/spense_gpu bench-decode "${decode_args[@]}" --no-pdl \
    --csv "$OUT/decode_32b_${tag}_nopdl.csv" "$@"
  grep -E "^(fp8|bf16) " "$L/decode_nopdl.log"
fi
if has base && [[ -f .devdeps/baseline.tgz ]]; then
  rm -rf /tmp/base && mkdir -p /tmp/base && tar xzf .devdeps/baseline.tgz -C /tmp/base && ln -s "$(pwd)/.devdeps" /tmp/base/.devdeps
  (cd /tmp/base && OUT=$L/base bash src/cuda/standalone/device_run.sh build 2>&1 | tail -1)
  if [[ ${BASE_DECODE:-1} == 1 ]]; then  # BASE_DECODE=0: build the base only (for basegemm)
    step decode_base 200 /tmp/base/build-gpu/spense_gpu bench-decode "${decode_args[@]}" --csv "$OUT/decode_base_$tag.csv"
    grep -E "^(fp8|bf16) " "$L/decode_base.log"
  fi
fi
gemm_args=(--models qwen3-32b --m 1,8,16,32,64 --d 0.25 --dtypes bf16,fp8 --formats dense,2:4-gemv,spense-out-gemv)
if has gemm; then
  step gemm 150 ./build-gpu/spense_bench_gemm "${gemm_args[@]}" --csv "$OUT/gemm_32b_$tag.csv"
  grep -A40 "^summary" "$L/gemm.log"
fi
if has basegemm && [[ -x /tmp/base/build-gpu/spense_bench_gemm ]]; then
  step gemm_base 150 /tmp/base/build-gpu/spense_bench_gemm "${gemm_args[@]}" --csv "$OUT/gemm_base_$tag.csv"
  grep -A40 "^summary" "$L/gemm_base.log"
fi
