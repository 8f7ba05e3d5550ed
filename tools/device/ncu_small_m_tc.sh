#!/usr/bin/env bash
# One device call: Nsight Compute on our small-M kernel's tensor-core path (gemv_tc_k) for the
# Qwen3-32B gate_up layer (2:4) at M = 1, 16 and 64, and on the CUDA-core path at M = 1, to see
# what bounds it (memory throughput, stalls, occupancy). From the repository root on the GPU
# machine, with .devdeps carried:  bash tools/device/ncu_small_m_tc.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
bash src/cuda/standalone/device_run.sh build 2>&1 | tail -2
source tools/device_env.sh
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"
sec="--section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats --section SchedulerStats --section LaunchStats"
for m in 1 16 64; do
  for k in tensor-cores cuda-cores; do
    [[ $k == cuda-cores && $m != 1 ]] && continue
    $NCU --clock-control none -k regex:gemv --launch-skip 4 --launch-count 1 $sec \
      ./build-gpu/spense_bench_gemm --models qwen3-32b --layers gate_up --m $m --d 0.25 --dtypes bf16 \
      --small-m-kernel $k --formats 2:4-gemv --iters 3 --warmup 1 --csv "$OUT/x.csv" > "$OUT/ncu_${k}_m$m.txt" 2>&1
    echo "== $k m=$m rc=$?"
    grep -E "gemv_|Grid Size|Block Size|Registers|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Block Limit|Warp Cycles Per Issued|Issue Slot|Eligible Warps|No Eligible|L2 Hit|Dynamic Shared|Stall|Mem Busy|Max Bandwidth" "$OUT/ncu_${k}_m$m.txt" | head -40
  done
done
# the raw stall breakdown for M = 64
$NCU --clock-control none -k regex:gemv_tc --launch-skip 4 --launch-count 1 --metrics \
smsp__average_warp_latency_issue_stalled_long_scoreboard.ratio,smsp__average_warp_latency_issue_stalled_short_scoreboard.ratio,smsp__average_warp_latency_issue_stalled_barrier.ratio,smsp__average_warp_latency_issue_stalled_math_pipe_throttle.ratio,smsp__average_warp_latency_issue_stalled_mio_throttle.ratio,smsp__average_warp_latency_issue_stalled_wait.ratio,smsp__average_warp_latency_issue_stalled_lg_throttle.ratio,smsp__average_warp_latency_issue_stalled_not_selected.ratio,smsp__average_warp_latency_issue_stalled_selected.ratio,smsp__average_warp_latency_issue_stalled_dispatch_stall.ratio,smsp__average_warp_latency_issue_stalled_tex_throttle.ratio,smsp__average_warp_latency_issue_stalled_membar.ratio,smsp__average_warp_latency_issue_stalled_sleeping.ratio,smsp__average_warp_latency_issue_stalled_misc.ratio,smsp__average_warp_latency_issue_stalled_imc_miss.ratio,smsp__average_warp_latency_issue_stalled_no_instruction.ratio,smsp__average_warp_latency_issue_stalled_drain.ratio,smsp__average_warp_latency_issue_stalled_branch_resolving.ratio \
  ./build-gpu/spense_bench_gemm --models qwen3-32b --layers gate_up --m 64 --d 0.25 --dtypes bf16 \
  --small-m-kernel tensor-cores --formats 2:4-gemv --iters 3 --warmup 1 --csv "$OUT/x.csv" 2>&1 | grep -E "stalled|gemv_" | head -30
for m in 1 16 64; do grep -B2 -A3 "Grid Size" "$OUT/ncu_tensor-cores_m$m.txt" | head -8; done > /dev/null
(cd "$OUT" && tar czf /tmp/ncu.tgz ./*.txt && rm -f ./*.txt ./*.csv ./*.log && mv /tmp/ncu.tgz .)
