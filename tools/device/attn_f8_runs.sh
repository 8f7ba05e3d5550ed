#!/usr/bin/env bash
# One device call: the E4M3-cache attention kernel attn_f8_k (warp steps, FP16 tensor cores).
#   tests      test_cuda_engine (AttentionMatchesDoubleReference runs attn_f8_k on its E4M3 cases)
#   c256       FP8 --compare at batch 16 and 64, E4M3 cache, 256 keys per split, --axis out,
#              per-operation profile (CSV and _profile.csv come back as files)
#   legacy     the same for dense with SPENSE_ATTN_F8_LEGACY=1 (the BF16-tile kernel), profile
#   c64/c512   FP8 dense and Spense at other split sizes (in logs.tgz)
#   bf16       BF16 weights, dense and Spense at batch 16: E4M3 cache (c256), then BF16 cache
# (First run 2026-12-07 with fe75a8f brought back; the kernel is on main since. docs/perf.md.)
# From the repository root on the GPU machine, with .devdeps carried:
#   [DEADLINE=S] bash tools/device/attn_f8_runs.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
L=/tmp/attn_f8_logs
rm -rf "$L"
LOGS=$L TAR_TO=$OUT/logs.tgz
export BUILD_TARGETS=${BUILD_TARGETS-"test_cuda_engine spense_gpu"}
source tools/device/lib.sh
step tests "$(lim 150)" ./build-gpu/test_cuda_engine
grep -E "Failure|Expected|Which is|PASSED|FAILED|OK \]|^attention .*E4M3" "$L/tests.log" | head -60
d=(./build-gpu/spense_gpu bench-decode --synthetic qwen3-32b --backend auto --axis out --steps 32)
f8=("${d[@]}" --dtype fp8 --kv-cache fp8)
show() { grep -E "^(fp8|bf16) .*ms/step|^    " "$L/$1.log"; }
step c256 "$(lim 120)" "${f8[@]}" --compare --batch 16,64 --kv-chunk 256 --profile 8 --csv "$OUT/decode_fp8_attnf8_c256.csv"
show c256
step legacy "$(lim 60)" env SPENSE_ATTN_F8_LEGACY=1 "${f8[@]}" --formats dense --batch 16,64 --kv-chunk 256 --profile 8 \
  --csv "$L/decode_fp8_legacy_c256.csv"
show legacy
for c in 64 512; do
  step c$c "$(lim 60)" "${f8[@]}" --formats dense,spense --batch 16,64 --kv-chunk $c --csv "$L/decode_fp8_attnf8_c$c.csv"
  show c$c
done
step bf16_f8kv "$(lim 60)" "${d[@]}" --dtype bf16 --kv-cache fp8 --formats dense,spense --batch 16 --kv-chunk 256 \
  --csv "$L/decode_bf16_kvfp8_b16.csv"
show bf16_f8kv
step bf16 "$(lim 60)" "${d[@]}" --dtype bf16 --formats dense,spense --batch 16 --csv "$L/decode_bf16_b16.csv"
show bf16
echo "total $(( $(date +%s) - T0 )) s"
