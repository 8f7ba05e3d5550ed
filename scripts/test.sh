#!/usr/bin/env bash
# The test command: build, fetch the npm reference data, run every CPU test (label unit).
# GPU tests (label cuda) run on a GPU machine with: ctest --test-dir build -L cuda
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch_refs.sh
bash scripts/build.sh
ctest --test-dir build -L unit --output-on-failure -j"$(nproc)"
