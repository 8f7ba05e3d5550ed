#!/usr/bin/env bash
# Configure (once) and build into build/. SPENSE_CUDA is auto-detected (nvcc); pass extra
# CMake flags as arguments, e.g. scripts/build.sh -DSPENSE_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f build/CMakeCache.txt ]] || cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j"$(nproc)"
