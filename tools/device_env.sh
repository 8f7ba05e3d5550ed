#!/usr/bin/env bash
# Source on the GPU machine before src/cuda/standalone/device_run.sh when the standalone build
# should include pruning on the GPU (src/cuda/prune/), which needs the CPU pruning core and
# so OpenBLAS and LAPACKE; the GPU machine has CUDA, CMake and ninja but no Debian packages.
# It unpacks the runtime packages a developer downloaded into .devdeps/debs (git-ignored;
# name .devdeps in the device tool's carry) and points the loader at them. Headers come from
# .devdeps/include (copied from the -dev packages). To prepare .devdeps on a Debian machine:
#   mkdir -p .devdeps/debs .devdeps/include
#   (cd .devdeps/debs && apt-get download libopenblas0-pthread liblapacke libtmglib3 libgfortran5)
#   cp -r /usr/include/nlohmann /usr/include/lapack*.h .devdeps/include/
#   cp /usr/include/x86_64-linux-gnu/openblas-pthread/{cblas.h,openblas_config.h} .devdeps/include/
# dpkg -x runs no maintainer scripts, so the alternatives' symlinks are made here by hand.
root=$(pwd)/.devdeps/root
lib=$root/usr/lib/x86_64-linux-gnu
if [[ ! -d $root/usr ]]; then
  for f in .devdeps/debs/*.deb; do dpkg -x "$f" "$root"; done
  ob=$lib/openblas-pthread
  ln -sf "$ob/libopenblas.so.0" "$lib/libopenblas.so"
  ln -sf "$ob/libopenblas.so.0" "$lib/libopenblas.so.0"
  ln -sf "$ob/liblapack.so.3" "$lib/liblapack.so.3"
  ln -sf "$lib/liblapacke.so.3" "$lib/liblapacke.so"
fi
export LIBRARY_PATH=$lib:${LIBRARY_PATH:-}
export LD_LIBRARY_PATH=$lib:${LD_LIBRARY_PATH:-}
export SPENSE_DEVDEPS_LIB=$lib
