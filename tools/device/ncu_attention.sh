#!/usr/bin/env bash
# One device call (part): Nsight Compute on the decode attention kernel (attn_k) of bench-decode,
# Qwen3-32B shapes with 4 layers (attention does not depend on the layer count), BF16 dense, ctx
# 1024, batch 1 and 16: two launches each after the first few. From the repository root on the GPU
# machine after a build (build-gpu/), with .devdeps carried:  bash tools/device/ncu_attention.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
sec="--section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats --section MemoryWorkloadAnalysis --section SchedulerStats"
for b in ${BATCHES:-1 16}; do
  f="$OUT/ncu_attn_b$b.txt"
  $NCU --clock-control none -k regex:attn_k --launch-skip 6 --launch-count 2 $sec \
    ./build-gpu/spense_gpu bench-decode --synthetic qwen3-32b --layers 4 --dtype bf16 --format dense --batch $b \
    --ctx 1024 --steps 2 --warmup 1 --no-graph > "$f" 2>&1
  echo "== attention batch $b rc=$?"
  grep -E "attn_k<|^    Duration|DRAM Throughput|Achieved Occupancy|Registers Per|Issue Slots Busy|Eligible Warps|Warp Cycles Per Issued|Grid Size|Waves Per SM|Block Limit|Dynamic Shared" "$f" | sed -E 's/ +/ /g' | head -40
done
