#!/usr/bin/env bash
# One device call for our small-M kernel's tensor-core path (src/cuda/gemv_tc.cuh): every GPU test
# (the kernel's paths, and the engine, which now picks them by timing), then its speed on the
# Qwen3-32B layers per path, and in the decode engine. From the repository root on the GPU
# machine, with .devdeps carried:
#   bash tools/device/verify_small_m_tc.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
bash src/cuda/standalone/device_run.sh build 2>&1 | tail -3; [[ ${PIPESTATUS[0]} -eq 0 ]] || exit 1  # no stale binaries
bash src/cuda/standalone/device_run.sh test 2>&1 | grep -vE "^\[ *(RUN|OK) |rel err" | tail -40; grep -B3 -A12 "Failure" "$OUT"/test_cuda_*.log | head -60
source tools/device_env.sh
for k in tensor-cores auto; do
  ./build-gpu/spense_bench_gemm --models qwen3-32b --m 1,2,3,4,8,16,32,64 --d 0.25 --dtypes bf16 --small-m-kernel $k \
    --formats dense,dense-gemv,2:4-gemv,spense-out-gemv --csv "$OUT/gemm_h200_$k.csv" > "$OUT/bench_$k.log" 2>&1
  echo "bench-gemm $k rc=$?"
done
python3 - "$OUT" <<'PY'
import csv, sys
for k in ["tensor-cores", "auto"]:
    rows = list(csv.DictReader(open(f"{sys.argv[1]}/gemm_h200_{k}.csv")))
    for lay in ["qkv", "o", "gate_up", "down"]:
        for f in ["dense", "dense-gemv", "2:4-gemv", "spense-out-gemv"]:
            if f == "dense" and k != "auto": continue
            r = [x for x in rows if x["layer"] == lay and x["format"] == f]
            print(k[:6], lay, f, " ".join("%s:%.1f/%.2fx" % (x["m"], float(x["us"]), float(x["speedup_vs_dense"])) for x in r))
PY
./build-gpu/spense_gpu bench-decode --synthetic qwen3-32b --compare --dtype bf16 --backend auto --axis out \
  --batch 1,2,4,8,16,32,64 --steps 32 --csv "$OUT/decode_h200_32b_tc.csv" > "$OUT/decode.log" 2>&1
echo "bench-decode rc=$?"; grep -A8 "^summary" "$OUT/decode.log"
# The device tool returns at most a few files: pack them.
(cd "$OUT" && tar czf /tmp/verify_logs.tgz ./*.log ./*.csv ./*.txt 2>/dev/null && rm -f ./*.log ./*.csv ./*.txt && mv /tmp/verify_logs.tgz .)
