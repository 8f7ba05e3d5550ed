// Programmatic dependent launch (sm_90+). A kernel launched with
// cudaLaunchAttributeProgrammaticStreamSerialization may start while the kernel before it in the
// stream is still running, once every block of that kernel has called griddep_launch_dependents()
// (or exited); it must call griddep_wait() before it reads that kernel's output or writes
// anything the earlier kernel reads. What it may do before: read data no kernel writes (weights).
// On older GPUs, or without the attribute, both are no-ops.
#pragma once

#include <cuda_runtime.h>

namespace spense::cuda {

__device__ __forceinline__ void griddep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void griddep_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
// The launch attribute (cudaLaunchKernelEx) that lets a kernel start early as above.
inline cudaLaunchAttribute pdl_launch_attribute() {
  cudaLaunchAttribute a = {};
  a.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  a.val.programmaticStreamSerializationAllowed = 1;
  return a;
}
// Brings the 128-byte line holding p toward L2 (no register is written, nothing waits on it).
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p));
}

}  // namespace spense::cuda
