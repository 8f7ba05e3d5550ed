// spense_bench_gemm: the standalone form of `spense bench-gemm` (same code:
// src/cuda/bench_gemm.cpp), for GPU machines that build only the GPU runtime
// (src/cuda/standalone/CMakeLists.txt). Exit codes: 0 ok, 2 bad flags, 1 device failure.
#include <cstdio>
#include <exception>

#include "spense/cuda/bench.h"
#include "spense/error.h"

int main(int argc, char** argv) {
  spense::cuda::BenchGemmOptions opts;
  try {
    if (!spense::cuda::parse_bench_gemm_args(argc, argv, &opts)) {
      std::fputs(spense::cuda::bench_gemm_usage().c_str(), stdout);
      return 0;
    }
    spense::cuda::run_bench_gemm(opts);
  } catch (const spense::Error& e) {
    std::fprintf(stderr, "spense_bench_gemm: error: %s\n", e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "spense_bench_gemm: internal error: %s\n", e.what());
    return 1;
  }
  return 0;
}
