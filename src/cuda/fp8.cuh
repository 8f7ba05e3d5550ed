// E4M3 conversions shared by the CUDA kernels (activation quantization, our small-M kernel, the
// decode engine's KV cache).
#pragma once
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace spense::cuda {

// float -> E4M3 code, round to nearest even, saturated at +-448 (NaN stays NaN).
__device__ __forceinline__ uint8_t to_e4m3(float v) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

// Two E4M3 codes (low byte = first) -> two floats, exactly.
__device__ __forceinline__ float2 e4m3x2(uint16_t v) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(v), __NV_E4M3);
  return __half22float2(*reinterpret_cast<const __half2*>(&h));
}

// Two E4M3 codes (the low 16 bits of v, low byte = first) -> an FP16 pair (first in the low half),
// exactly: one cvt on sm_89 and newer.
__device__ __forceinline__ uint32_t e4m3x2_f16x2(uint32_t v) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(v & 0xffffu), __NV_E4M3);
  return uint32_t(h.x) | uint32_t(h.y) << 16;
}

}  // namespace spense::cuda
