// Warp and block reductions shared by the CUDA kernels (decode engine, GPU pruning). The
// xor butterfly leaves the result in every lane, so every thread of the block gets it.
#pragma once
#include <cmath>

namespace spense::cuda {

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024), returned to every thread.
template <class T>
__device__ T block_sum(T v) {
  __shared__ T part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // part may still be read from a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  const T t = lane < nw ? part[lane] : T(0);
  return warp_sum(t);
}

// Max over the block (blockDim.x a multiple of 32, at most 1024), returned to every thread.
__device__ inline float block_max(float v) {
  __shared__ float part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  return warp_max(lane < nw ? part[lane] : -INFINITY);
}

}  // namespace spense::cuda
