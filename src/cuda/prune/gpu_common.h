// Shared by the GPU pruning sources: checked cuSOLVER calls, a cuBLAS handle owner, the
// device-memory high-water mark and an allocation helper that records it.
#pragma once
#include <cublas_v2.h>
#include <cusolverDn.h>

#include <cstdint>

#include "spense/cuda/check.h"
#include "spense/cuda/runtime.h"

namespace spense::cuda {

const char* cusolver_status_name(cusolverStatus_t s);

inline void check_status(cusolverStatus_t s, const char* stmt, const char* file, int line) {
  if (s != CUSOLVER_STATUS_SUCCESS) throw_status("cuSOLVER", cusolver_status_name(s), "", stmt, file, line);
}

// Records total - free device memory into the high-water mark of gpu_prune_peak_bytes().
void note_device_memory();

// A device copy of n elements of T from host memory (device_upload, runtime.h), noted in the
// high-water mark.
template <class T>
DeviceBuffer device_copy_of(const T* src, int64_t n) {
  DeviceBuffer b = device_upload(src, size_t(n) * sizeof(T));
  note_device_memory();
  return b;
}

// A device buffer of n elements of T (uninitialised), noted in the high-water mark.
template <class T>
DeviceBuffer device_alloc(int64_t n) {
  DeviceBuffer b(size_t(n > 0 ? n : 1) * sizeof(T));
  note_device_memory();
  return b;
}

// Owns a cuBLAS handle (default math: true fp32/fp64, no TF32).
class BlasHandle {
 public:
  BlasHandle();
  ~BlasHandle();
  BlasHandle(const BlasHandle&) = delete;
  BlasHandle& operator=(const BlasHandle&) = delete;
  cublasHandle_t get() const { return h_; }

 private:
  cublasHandle_t h_ = nullptr;
};

// Blocks for a grid-stride loop over n elements.
inline unsigned grid_for(int64_t n, int threads = 256) {
  const int64_t b = (n + threads - 1) / threads;
  return unsigned(b < 1 ? 1 : (b > 65535 * 16 ? 65535 * 16 : b));
}

}  // namespace spense::cuda
