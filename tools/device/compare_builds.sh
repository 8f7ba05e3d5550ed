#!/usr/bin/env bash
# One device call: the working tree and other commits (git archives) built and timed
# on the same GPU, per decode step (bench-decode --compare, ctx 1024, d = 0.25, --backend auto
# --axis out), then per layer (spense_bench_gemm, Qwen3-32B shapes, M = 1 .. 64). From the
# repository root on the GPU machine, with .devdeps carried:
#   BASES="main=.devdeps/main.tgz old=.devdeps/old.tgz" PARTS="tests gemm decode" bash tools/device/compare_builds.sh TAG
# Archives: git archive --format=tar.gz -o .devdeps/NAME.tgz COMMIT -- . ':!models' ':!bench/results' ':!tests/fixtures' ':!docs'
# The bases build in the background while the working tree's GPU tests run (tests only; nothing
# is timed until every build is done; LINEAR_FILTER: test_cuda_linear's gtest filter, default
# the small-M kernel's tests). BATCH (default 1,16) and DTYPES (default fp8,bf16): the
# decode batches and precisions; DECODE_EXTRA: more bench-decode flags (every build must know
# them, e.g. "--kv-cache fp8 --e4m3-tokens"). Output: $OUT/{gemm,decode}_TAG_NAME.csv (NAME = "new" for the
# working tree) and the logs in $OUT/logs.tgz, re-tarred after every step.
# First run 2026-12-07 on an H100 (PARTS="tests decode", two bases: 299 s; docs/perf.md, "The
# three measured"). It generalises decode_profile_runs.sh's tests / base / basegemm parts to
# several bases; those stay, since docs/perf.md quotes them as the commands of earlier runs.
set -uo pipefail
OUT=${OUT:-/tmp/out}
tag=${1:-cmp}
PARTS=" ${PARTS:-tests gemm decode} "
L=/tmp/cmp_logs_$tag
rm -rf "$L"
LOGS=$L TAR_TO=$OUT/logs.tgz
source tools/device/lib.sh
has() { [[ $PARTS == *" $1 "* ]]; }
declare -A bin=([new]=$(pwd)/build-gpu)
names=(new)
for spec in ${BASES:-}; do
  name=${spec%%=*} tgz=${spec#*=} dir=/tmp/base_$name
  rm -rf "$dir" && mkdir -p "$dir" && tar xzf "$tgz" -C "$dir" && ln -s "$(pwd)/.devdeps" "$dir/.devdeps"
  (cd "$dir" && OUT=$L/build_$name bash src/cuda/standalone/device_run.sh build > "$L/build_$name.log" 2>&1) &
  bin[$name]=$dir/build-gpu
  names+=("$name")
done
if has tests; then
  step test_linear 120 ./build-gpu/test_cuda_linear --gtest_filter="${LINEAR_FILTER:-CudaLinear.SmallMKernel*}"
  # A hung kernel (a barrier never completed) would hang every timed run of the working tree too.
  rc=$?; if (( rc == 124 || rc == 137 )); then echo "working tree's tests hung: not timed"; names=("${names[@]:1}"); fi
  grep -E "Failure|Expected|Which is|PASSED|FAILED" "$L/test_linear.log" | head -20
  step test_engine 120 ./build-gpu/test_cuda_engine
  grep -E "Failure|Expected|Which is|rel err|PASSED|FAILED|greedy" "$L/test_engine.log" | head -40
fi
wait
for n in "${names[@]}"; do [[ -x ${bin[$n]}/spense_gpu ]] || { echo "build $n failed:"; tail -20 "$L/build_$n.log"; }; done
gemm_args=(--models qwen3-32b --m 1,8,16,32,64 --d 0.25 --dtypes bf16,fp8 --formats dense,2:4-gemv,spense-out-gemv)
decode_args=(--synthetic qwen3-32b --compare --dtype "${DTYPES:-fp8,bf16}" --backend auto --axis out --batch "${BATCH:-1,16}" --steps 32
             ${DECODE_EXTRA:-})
if has decode; then
  for n in "${names[@]}"; do
    [[ -x ${bin[$n]}/spense_gpu ]] || continue
    step "decode_$n" 150 "${bin[$n]}/spense_gpu" bench-decode "${decode_args[@]}" --csv "$OUT/decode_${tag}_$n.csv"
    echo "decode $n:"; grep -E "^(fp8|bf16) " "$L/decode_$n.log"
  done
fi
if has gemm; then
  for n in "${names[@]}"; do
    [[ -x ${bin[$n]}/spense_bench_gemm ]] || continue
    step "gemm_$n" 100 "${bin[$n]}/spense_bench_gemm" "${gemm_args[@]}" --csv "$OUT/gemm_${tag}_$n.csv"
  done
fi
echo "total $(( $(date +%s) - T0 )) s"
