#!/usr/bin/env bash
# One device call: why `--axis mixed` (o and down on axis in) does not beat `--axis out` in the
# decode step although the layer benchmark (which times 8 cuBLASLt candidates per shape) has axis
# in faster on o and down at M = 16 and 64, and whether the engine gains from the same search.
#   gemm          spense_bench_gemm, o and down, FP8, M 16/64: dense, spense-out, spense-in
#   out / mixed   FP8 decode, E4M3 cache, batch 16 and 64, library back end, per-operation profile
#   out_s8 / mixed_s8   auto back end, --dense-search 8 (dense and Spense)
#   mixed1        mixed, library, the two GEMMs of a library hybrid on one stream
# From the repository root on the GPU machine, with .devdeps carried:
#   [DEADLINE=S] bash tools/device/axis_probe_runs.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
L=/tmp/axis_probe_logs
rm -rf "$L"
LOGS=$L TAR_TO=$OUT/logs.tgz
export BUILD_TARGETS=${BUILD_TARGETS-"spense_gpu spense_bench_gemm"}
source tools/device/lib.sh
step gemm "$(lim 90)" ./build-gpu/spense_bench_gemm --models qwen3-32b --layers o,down --m 16,64 --dtypes fp8 --d 0.25 \
  --formats dense,spense-out,spense-in --csv "$OUT/gemm_fp8_o_down.csv"
grep -vE "^\[|^$" "$L/gemm.log" | tail -14
d=(./build-gpu/spense_gpu bench-decode --synthetic qwen3-32b --steps 32 --dtype fp8 --kv-cache fp8
   --formats dense,spense --batch 16,64)
show() { grep -E "^(fp8|bf16) .*ms/step|^    " "$L/$1.log"; }
for ax in out mixed; do
  step $ax "$(lim 80)" "${d[@]}" --backend library --axis $ax --profile 8 --csv "$OUT/decode_fp8_lib_$ax.csv"
  show $ax
done
for ax in out mixed; do
  step ${ax}_s8 "$(lim 80)" "${d[@]}" --backend auto --axis $ax --dense-search 8 --csv "$OUT/decode_fp8_s8_$ax.csv"
  show ${ax}_s8
done
step mixed1 "$(lim 60)" "${d[@]}" --backend library --axis mixed --hybrid-streams 1 --csv "$L/decode_fp8_lib_mixed1.csv"
show mixed1
echo "total $(( $(date +%s) - T0 )) s"
