#!/usr/bin/env bash
# Install the Debian packages Spense builds and tests with (see docs/dependencies.md).
# node/npm are only installed when missing: some images ship their own npm, which
# conflicts with Debian's.
set -euo pipefail
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
pkgs=(build-essential cmake pkg-config libopenblas-dev liblapacke-dev nlohmann-json3-dev
      libcli11-dev libpcre2-dev libicu-dev libgtest-dev libdnnl-dev
      ocl-icd-opencl-dev opencl-c-headers)
command -v node >/dev/null && command -v npm >/dev/null || pkgs+=(nodejs npm)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "install_deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
