#!/usr/bin/env bash
# One device call: Nsight Compute on our small-M kernel's tensor-core path (gemv_tc_k) for the
# Qwen3-32B gate_up layer (2:4, tensor cores forced) at M = 1, 16, 32 and 64: the first launches
# (the candidates make_gemv_linear times: each block shape at each K split; grid z = split),
# plus the kernels' register and local-memory use (cuobjdump). From the repository root on the
# GPU machine, with .devdeps carried:
#   [MS="16 64"] [DTYPES="bf16 fp8"] [LAUNCHES=10] [LAYER=qkv] [FORMAT=spense-out-gemv] bash tools/device/ncu_small_m_tc.sh
# (LAYER, FORMAT: bench-gemm's --layers and --formats; the streamed shapes' gemv_stream_k is
# profiled too where the build has it.)
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
bash src/cuda/standalone/device_run.sh build 2>&1 | tail -2
source tools/device_env.sh
obj=$(find build-gpu -name "gemv_tc_*.cu.o")
for o in $obj; do cuobjdump --dump-resource-usage "$o" 2>&1; done | grep -A1 "gemv_tc_k" | grep -oE "TcCfgILi[0-9]+ELi[0-9]+ELi[0-9]+ELi[0-9]+|REG:[0-9]+|STACK:[0-9]+|LOCAL:[0-9]+" | paste -sd' ' | sed 's/TcCfg/\n/g'
echo
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
sec="--section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis"
for dt in ${DTYPES:-bf16}; do
for m in ${MS:-1 16 32 64}; do
  f="$OUT/ncu_${dt}_m$m.txt"
  $NCU --clock-control none -k regex:"gemv_(tc|stream)" --launch-count ${LAUNCHES:-10} $sec \
    ./build-gpu/spense_bench_gemm --models qwen3-32b --layers ${LAYER:-gate_up} --m $m --d 0.25 --dtypes $dt \
    --small-m-kernel tensor-cores --formats ${FORMAT:-2:4-gemv} --iters 3 --warmup 1 --csv "$OUT/x.csv" > "$f" 2>&1
  echo "== $dt m=$m rc=$?"
  grep -E "gemv_(tc|stream)_k<|^    Duration|DRAM Throughput|Achieved Occupancy|Registers Per|Issue Slots Busy|Executed Ipc Active|Eligible Warps|Warp Cycles Per Issued|L1/TEX Hit|Mem Pipes Busy|Shared Memory  " "$f" \
    | sed -E 's/void \(anonymous namespace\)::|void <unnamed>::|\(Weights.*\) \(/ (/; s/ +/ /g' | paste -sd' ' | sed -E 's/ (gemv_(tc|stream)_k)/\n\1/g'
  echo
done
done
(cd "$OUT" && tar czf /tmp/ncu.tgz ./*.txt && rm -f ./*.txt ./*.csv ./*.log && mv /tmp/ncu.tgz .)
