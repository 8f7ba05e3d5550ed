// SPENSE_CUDA_CHECK: every CUDA runtime, cuBLASLt and cuSPARSELt call goes through it. A
// failure throws spense::Error (exit code 1: an internal or device failure, not bad input)
// naming the status, the statement and file:line, e.g.
//   CUDA error cudaErrorMemoryAllocation (out of memory) in cudaMalloc(&p, bytes) at src/cuda/runtime.cpp:40
// The macro dispatches on the status type through check_status() overloads; the overload for
// cusparseStatus_t lives in src/cuda/sparselt/ (only built with cuSPARSELt).
// SPENSE_CUDA_CHECK_LAUNCH() checks the last error after a kernel launch.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <string>

#include "spense/error.h"

namespace spense::cuda {

[[noreturn]] void throw_status(const char* lib, const char* name, const char* detail,
                               const char* stmt, const char* file, int line);

inline void check_status(cudaError_t s, const char* stmt, const char* file, int line) {
  if (s != cudaSuccess) {
    (void)cudaGetLastError();  // clear a sticky-free error so later calls are not blamed
    throw_status("CUDA", cudaGetErrorName(s), cudaGetErrorString(s), stmt, file, line);
  }
}

inline void check_status(cublasStatus_t s, const char* stmt, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw_status("cuBLASLt", cublasLtGetStatusName(s), cublasLtGetStatusString(s), stmt, file, line);
}

}  // namespace spense::cuda

#define SPENSE_CUDA_CHECK(stmt) ::spense::cuda::check_status((stmt), #stmt, __FILE__, __LINE__)
#define SPENSE_CUDA_CHECK_LAUNCH() \
  ::spense::cuda::check_status(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
