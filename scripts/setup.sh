#!/usr/bin/env bash
# One command on a fresh Debian machine: install dependencies, build, run the example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/fetch_refs.sh
bash scripts/build.sh
bash scripts/example.sh
