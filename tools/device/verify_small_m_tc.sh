#!/usr/bin/env bash
# One device call to check the tensor-core path of our small-M kernel (src/cuda/gemv.cu,
# LinearOptions::small_m_tensor_cores), written when no GPU was available: the mma.sp metadata
# probe, the kernel's GPU test, then its speed on the Qwen3-32B layers and in the decode engine.
# From the repository root on the GPU machine, with .devdeps carried:
#   bash tools/device/verify_small_m_tc.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvcc -arch=sm_90a -o /tmp/mma_probe tools/device/mma_sp_probe.cu && /tmp/mma_probe   # expect variant A: rel err ~1e-7
bash src/cuda/standalone/device_run.sh build 2>&1 | tail -3
source tools/device_env.sh
./build-gpu/test_cuda_linear --gtest_filter=*SmallM* > "$OUT/smallm.log" 2>&1
echo "SmallM test rc=$?"; grep -E "Failure|Which is|OK \]|FAILED|PASSED" "$OUT/smallm.log" | head -12
./build-gpu/spense_bench_gemm --models qwen3-32b --m 1,2,3,4,8,16,32,64 --d 0.25 --dtypes bf16 --tensor-cores \
  --formats dense,2:4,dense-gemv,2:4-gemv,spense-out-gemv --csv "$OUT/gemm_h200_tc.csv" > "$OUT/bench.log" 2>&1
echo "bench-gemm rc=$?"
python3 - "$OUT/gemm_h200_tc.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for lay in ["qkv", "o", "gate_up", "down"]:
    for f in ["dense", "2:4", "dense-gemv", "2:4-gemv", "spense-out-gemv"]:
        r = [x for x in rows if x["layer"] == lay and x["format"] == f]
        print(lay, f, " ".join("%s:%.1fus/%.2fx" % (x["m"], float(x["us"]), float(x["speedup_vs_dense"])) for x in r))
PY
./build-gpu/spense_gpu bench-decode --synthetic qwen3-32b --compare --dtype bf16 --backend auto --axis out \
  --batch 1,2,4,8,16,32,64 --steps 32 --tensor-cores --csv "$OUT/decode_h200_32b_tc.csv" > "$OUT/decode.log" 2>&1
echo "bench-decode rc=$?"; tail -30 "$OUT/decode.log"
