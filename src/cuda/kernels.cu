// The small kernels around the library GEMMs (see include/spense/cuda/kernels.h): per-token
// FP8 quantization (fused with the axis=in column gather), the FP8 scale epilogue (fused with
// the axis=out un-permutation), a 16-bit column gather, an in-place add, random fills and 2:4
// magnitude pruning for benchmarks. All are memory-bound: every thread moves 16 bytes of
// 16-bit data (8 elements) per access, which is why the column maps must keep runs of 8.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <type_traits>
#include <string>

#include "cuda/fp8.cuh"
#include "cuda/pdl.cuh"
#include "spense/cuda/check.h"
#include "spense/cuda/kernels.h"
#include "spense/error.h"

namespace spense::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
template <class T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half(v); }

// Load 8 consecutive 16-bit values (16 bytes) as floats.
template <class T>
__device__ __forceinline__ void load8(const T* p, float (&v)[8]) {
  uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = to_f32(e[i]);
}
__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
  float4 a = *reinterpret_cast<const float4*>(p);
  float4 b = *reinterpret_cast<const float4*>(p + 4);
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
  v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
template <class T>
__device__ __forceinline__ void store8(T* p, const float (&v)[8]) {
  uint4 raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) e[i] = from_f32<T>(v[i]);
  *reinterpret_cast<uint4*>(p) = raw;
}

__device__ __forceinline__ float block_max(float v) {
  __shared__ float warp_max[32];
  __shared__ float result;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_max[warp] = v;
  __syncthreads();
  if (warp == 0) {
    int nw = (blockDim.x + 31) / 32;
    v = lane < nw ? warp_max[lane] : 0.f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (lane == 0) result = v;
  }
  __syncthreads();
  return result;
}

// Where 8 E4M3 codes of row r, columns j .. j + 7 (j % 8 == 0) go: row-major (ld ldq), or with
// chunk_rows > 0 chunk-major, 16-byte column chunk c of every row together (see quantize_rows_e4m3).
__device__ __forceinline__ uint2* q_at(uint8_t* q, int64_t ldq, int64_t chunk_rows, int64_t r, int64_t j) {
  return reinterpret_cast<uint2*>(chunk_rows > 0 ? q + ((j >> 4) * chunk_rows + r) * 16 + (j & 15) : q + r * ldq + j);
}

// One block per row. Pass 1 finds the row's absmax, pass 2 re-reads it (from L1/L2: a row
// is at most a few tens of KB) and writes E4M3.
template <class T>
__global__ void quantize_rows_kernel(const T* __restrict__ x, int64_t ldx, int64_t rows, int64_t k,
                                     const int32_t* __restrict__ col_map, uint8_t* __restrict__ q,
                                     int64_t ldq, int64_t chunk_rows, float* __restrict__ scale) {
  griddep_launch_dependents();  // see quantize_rows_e4m3
  griddep_wait();               // launched with PDL: x (and q's last readers) come from the kernels before
  const int64_t r = blockIdx.x;
  if (r >= rows) {  // padding rows of the bucket: zeros, scale 0
    for (int64_t j = threadIdx.x * 8; j < k; j += blockDim.x * 8)
      *q_at(q, ldq, chunk_rows, r, j) = make_uint2(0u, 0u);
    if (threadIdx.x == 0) scale[r] = 0.f;
    return;
  }
  const T* xr = x + r * ldx;
  float amax = 0.f;
  for (int64_t j = threadIdx.x * 8; j < k; j += blockDim.x * 8) {
    float v[8];
    load8(xr + j, v);
#pragma unroll
    for (int i = 0; i < 8; ++i) amax = fmaxf(amax, fabsf(v[i]));
  }
  amax = block_max(amax);
  // Same arithmetic as the host reference (tests): inv = 448 / amax, scale = amax / 448.
  const float inv = amax > 0.f ? 448.f / amax : 0.f;
  if (threadIdx.x == 0) scale[r] = amax / 448.f;
  for (int64_t j = threadIdx.x * 8; j < k; j += blockDim.x * 8) {
    const int64_t src = col_map ? col_map[j] : j;
    float v[8];
    load8(xr + src, v);
    uint32_t lo = 0, hi = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) lo |= uint32_t(to_e4m3(v[i] * inv)) << (8 * i);
#pragma unroll
    for (int i = 0; i < 4; ++i) hi |= uint32_t(to_e4m3(v[4 + i] * inv)) << (8 * i);
    *q_at(q, ldq, chunk_rows, r, j) = make_uint2(lo, hi);
  }
}

// Single-pass variant for rows of at most blockDim.x * 8 * V elements: each thread keeps its
// V 16-byte vectors in registers between the absmax reduction and the quantization, so the row
// is read once (decode rows are latency-bound: one pass instead of two halves the time).
template <class T, int V>
__global__ void quantize_rows_reg_kernel(const T* __restrict__ x, int64_t ldx, int64_t rows, int64_t k,
                                         const int32_t* __restrict__ col_map, uint8_t* __restrict__ q,
                                         int64_t ldq, int64_t chunk_rows, float* __restrict__ scale) {
  griddep_launch_dependents();  // see quantize_rows_e4m3
  griddep_wait();               // launched with PDL: x (and q's last readers) come from the kernels before
  const int64_t r = blockIdx.x;
  if (r >= rows) {
    for (int64_t j = threadIdx.x * 8; j < k; j += blockDim.x * 8)
      *q_at(q, ldq, chunk_rows, r, j) = make_uint2(0u, 0u);
    if (threadIdx.x == 0) scale[r] = 0.f;
    return;
  }
  const T* xr = x + r * ldx;
  uint4 raw[V];
  float amax = 0.f;
#pragma unroll
  for (int v = 0; v < V; ++v) {
    const int64_t j = (int64_t(v) * blockDim.x + threadIdx.x) * 8;
    if (j < k) {
      raw[v] = *reinterpret_cast<const uint4*>(xr + (col_map ? col_map[j] : j));
      const T* e = reinterpret_cast<const T*>(&raw[v]);
#pragma unroll
      for (int i = 0; i < 8; ++i) amax = fmaxf(amax, fabsf(to_f32(e[i])));
    }
  }
  amax = block_max(amax);
  const float inv = amax > 0.f ? 448.f / amax : 0.f;
  if (threadIdx.x == 0) scale[r] = amax / 448.f;
#pragma unroll
  for (int v = 0; v < V; ++v) {
    const int64_t j = (int64_t(v) * blockDim.x + threadIdx.x) * 8;
    if (j < k) {
      const T* e = reinterpret_cast<const T*>(&raw[v]);
      uint32_t lo = 0, hi = 0;
#pragma unroll
      for (int i = 0; i < 4; ++i) lo |= uint32_t(to_e4m3(to_f32(e[i]) * inv)) << (8 * i);
#pragma unroll
      for (int i = 0; i < 4; ++i) hi |= uint32_t(to_e4m3(to_f32(e[4 + i]) * inv)) << (8 * i);
      *q_at(q, ldq, chunk_rows, r, j) = make_uint2(lo, hi);
    }
  }
}

template <class A, class Y>
__global__ void epilogue_kernel(const A* __restrict__ acc, const A* __restrict__ acc2, int64_t ld_acc,
                                int64_t rows, int64_t n, const float* __restrict__ cs,
                                const float* __restrict__ rs, const int32_t* __restrict__ out_map,
                                Y* __restrict__ y, int64_t ldy) {
  const int64_t nv = n / 8, total = rows * nv;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx / nv, j0 = (idx % nv) * 8;
    float v[8], c[8];
    load8(acc + r * ld_acc + j0, v);
    if (acc2) {
      float w[8];
      load8(acc2 + r * ld_acc + j0, w);
#pragma unroll
      for (int i = 0; i < 8; ++i) v[i] += w[i];
    }
    load8(cs + j0, c);
    const float rsc = rs[r];
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = v[i] * c[i] * rsc;
    const int64_t dst = out_map ? out_map[j0] : j0;
    store8(y + r * ldy + dst, v);
  }
}

__global__ void gather_cols16_kernel(const uint16_t* __restrict__ src, int64_t ld_src,
                                     uint16_t* __restrict__ dst, int64_t ld_dst, int64_t rows,
                                     int64_t cols, const int32_t* __restrict__ map) {
  const int64_t nv = cols / 8, total = rows * nv;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx / nv, j0 = (idx % nv) * 8;
    *reinterpret_cast<uint4*>(dst + r * ld_dst + j0) =
        *reinterpret_cast<const uint4*>(src + r * ld_src + map[j0]);
  }
}

template <class T>
__global__ void add_kernel(T* __restrict__ y, int64_t ldy, const T* __restrict__ t, int64_t ldt,
                           int64_t rows, int64_t cols) {
  const int64_t nv = cols / 8, total = rows * nv;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx / nv, j0 = (idx % nv) * 8;
    float a[8], b[8];
    load8(y + r * ldy + j0, a);
    load8(t + r * ldt + j0, b);
#pragma unroll
    for (int i = 0; i < 8; ++i) a[i] += b[i];
    store8(y + r * ldy + j0, a);
  }
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__global__ void fill_random_kernel(void* dst, int type, size_t count, uint64_t seed, float amp) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count;
       i += size_t(gridDim.x) * blockDim.x) {
    const uint64_t h = mix64(seed * 0x632be59bd9b4e019ull + i);
    const float u = float(h >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    const float v = (2.f * u - 1.f) * amp;
    switch (type) {
      case 0: static_cast<float*>(dst)[i] = v; break;
      case 1: static_cast<__nv_bfloat16*>(dst)[i] = __float2bfloat16(v); break;
      case 2: static_cast<__half*>(dst)[i] = __float2half(v); break;
      default: static_cast<uint8_t*>(dst)[i] = to_e4m3(v); break;
    }
  }
}

// Reads n 16-byte words through L2 (not L1). The xor keeps the loads; it never equals the key.
__global__ void read_through_l2_kernel(const uint4* __restrict__ p, size_t n, unsigned* sink) {
  unsigned acc = 0;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcg(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u && sink) *sink = acc;
}

template <class T>
__global__ void prune24_kernel(T* __restrict__ w, int64_t rows, int64_t k,
                               const uint8_t* __restrict__ row_dense,
                               const uint8_t* __restrict__ col_dense) {
  const int64_t groups_per_row = k / 4, total = rows * groups_per_row;
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < total;
       g += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = g / groups_per_row, c0 = (g % groups_per_row) * 4;
    if ((row_dense && row_dense[r]) || (col_dense && col_dense[c0])) continue;
    T* p = w + r * k + c0;
    float a[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) a[i] = fabsf(to_f32(p[i]));
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      int rank = 0;  // entries that beat entry i (ties: the lower index wins)
#pragma unroll
      for (int j = 0; j < 4; ++j) rank += (a[j] > a[i]) || (a[j] == a[i] && j < i);
      if (rank >= 2) p[i] = from_f32<T>(0.f);
    }
  }
}

int grid_for(int64_t work) {
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, 132 * 64)));
}

void require(bool ok, const char* fn, const std::string& what) {
  if (!ok) throw Error(std::string(fn) + ": " + what, 1);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

void quantize_rows_e4m3(const void* x, DType x_type, int64_t ldx, int64_t rows, int64_t rows_pad,
                        int64_t k, const int32_t* col_map, uint8_t* q, int64_t ldq, float* scale,
                        cudaStream_t stream, bool pdl, int64_t chunk_rows) {
  require(k % 8 == 0 && ldx % 8 == 0 && ldq % 8 == 0 && aligned16(x) && aligned16(q),
          "quantize_rows_e4m3", "k, ldx, ldq must be multiples of 8 and pointers 16-byte aligned");
  require(rows_pad >= rows, "quantize_rows_e4m3", "rows_pad < rows");
  require(chunk_rows == 0 || (chunk_rows >= rows_pad && k % 16 == 0), "quantize_rows_e4m3",
          "chunk-major output needs chunk_rows >= rows_pad and k a multiple of 16");
  if (rows_pad == 0) return;
  require(x_type == DType::BF16 || x_type == DType::F16, "quantize_rows_e4m3", "input must be BF16 or F16");
  // Every block lets a kernel launched after it with programmatic dependent launch start at
  // once (the small-M kernel's E4M3-token shapes then fetch their first weights while the
  // tokens are quantized; they wait for this grid before reading q, see pdl.cuh). With pdl
  // this kernel is launched so too: it may start while the kernel before it finishes (which
  // lets the E4M3-token shapes keep the weight prefetch that the engine's kernels allow a
  // projection), and waits for it before touching x or q.
  auto launch = [&](auto* xp) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(xp)>>;
    const int64_t vecs = k / 8;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(static_cast<unsigned>(rows_pad));
    cfg.stream = stream;
    cudaLaunchAttribute attr[1] = {pdl_launch_attribute()};
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
    // Up to 4 vectors (32 elements) per thread in registers: rows of up to 1024 * 32 = 32768.
    auto go = [&](auto kernel, unsigned threads) {
      cfg.blockDim = dim3(threads);
      SPENSE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, xp, ldx, rows, k, col_map, q, ldq, chunk_rows, scale));
    };
    if (vecs <= 128) go(quantize_rows_reg_kernel<T, 1>, 128);
    else if (vecs <= 1024) go(quantize_rows_reg_kernel<T, 2>, 512);
    else if (vecs <= 4096) go(quantize_rows_reg_kernel<T, 4>, 1024);
    else go(quantize_rows_kernel<T>, 512);
  };
  if (x_type == DType::BF16) launch(static_cast<const __nv_bfloat16*>(x));
  else launch(static_cast<const __half*>(x));
  SPENSE_CUDA_CHECK_LAUNCH();
}

void scale_epilogue(const void* acc, const void* acc2, DType acc_type, int64_t ld_acc, int64_t rows,
                    int64_t n, const float* col_scale, const float* row_scale,
                    const int32_t* out_map, void* y, DType y_type, int64_t ldy, cudaStream_t stream) {
  require(n % 8 == 0 && ld_acc % 8 == 0 && ldy % 8 == 0 && aligned16(acc) && aligned16(y) &&
              aligned16(col_scale),
          "scale_epilogue", "n, ld_acc, ldy must be multiples of 8 and pointers 16-byte aligned");
  const int64_t work = rows * (n / 8);
  if (work == 0) return;
  const int grid = grid_for(work);
  auto launch = [&](auto* a, auto* yy) {
    using A = std::remove_const_t<std::remove_pointer_t<decltype(a)>>;
    epilogue_kernel<<<grid, kThreads, 0, stream>>>(a, static_cast<const A*>(acc2), ld_acc, rows, n,
                                                   col_scale, row_scale, out_map, yy, ldy);
  };
  if (acc_type == DType::F32 && y_type == DType::BF16)
    launch(static_cast<const float*>(acc), static_cast<__nv_bfloat16*>(y));
  else if (acc_type == DType::F32 && y_type == DType::F16)
    launch(static_cast<const float*>(acc), static_cast<__half*>(y));
  else if (acc_type == DType::BF16 && y_type == DType::BF16)
    launch(static_cast<const __nv_bfloat16*>(acc), static_cast<__nv_bfloat16*>(y));
  else
    require(false, "scale_epilogue", "unsupported accumulator/output types");
  SPENSE_CUDA_CHECK_LAUNCH();
}

void gather_cols16(const void* src, int64_t ld_src, void* dst, int64_t ld_dst, int64_t rows,
                   int64_t cols, const int32_t* map, cudaStream_t stream) {
  require(cols % 8 == 0 && ld_src % 8 == 0 && ld_dst % 8 == 0 && aligned16(src) && aligned16(dst),
          "gather_cols16", "cols and leading dimensions must be multiples of 8");
  const int64_t work = rows * (cols / 8);
  if (work == 0) return;
  gather_cols16_kernel<<<grid_for(work), kThreads, 0, stream>>>(
      static_cast<const uint16_t*>(src), ld_src, static_cast<uint16_t*>(dst), ld_dst, rows, cols, map);
  SPENSE_CUDA_CHECK_LAUNCH();
}

void add_inplace16(void* y, int64_t ldy, const void* t, int64_t ldt, int64_t rows, int64_t cols,
                   DType type, cudaStream_t stream) {
  require(cols % 8 == 0 && ldy % 8 == 0 && ldt % 8 == 0 && aligned16(y) && aligned16(t),
          "add_inplace16", "cols and leading dimensions must be multiples of 8");
  const int64_t work = rows * (cols / 8);
  if (work == 0) return;
  if (type == DType::BF16)
    add_kernel<<<grid_for(work), kThreads, 0, stream>>>(static_cast<__nv_bfloat16*>(y), ldy,
                                                        static_cast<const __nv_bfloat16*>(t), ldt,
                                                        rows, cols);
  else if (type == DType::F16)
    add_kernel<<<grid_for(work), kThreads, 0, stream>>>(static_cast<__half*>(y), ldy,
                                                        static_cast<const __half*>(t), ldt, rows, cols);
  else
    require(false, "add_inplace16", "type must be BF16 or F16");
  SPENSE_CUDA_CHECK_LAUNCH();
}

void fill_random(void* dst, DType type, size_t count, uint64_t seed, float amp, cudaStream_t stream) {
  int t;
  switch (type) {
    case DType::F32: t = 0; break;
    case DType::BF16: t = 1; break;
    case DType::F16: t = 2; break;
    case DType::F8_E4M3: t = 3; break;
    default: require(false, "fill_random", "unsupported type"); return;
  }
  if (count == 0) return;
  fill_random_kernel<<<grid_for(static_cast<int64_t>(count)), kThreads, 0, stream>>>(dst, t, count,
                                                                                     seed, amp);
  SPENSE_CUDA_CHECK_LAUNCH();
}

void read_through_l2(const void* buf, size_t bytes, unsigned* sink, cudaStream_t stream) {
  require(reinterpret_cast<uintptr_t>(buf) % 16 == 0, "read_through_l2", "buffer must be 16-byte aligned");
  const size_t n = bytes / 16;
  if (n == 0) return;
  int dev = 0, sms = 0;
  SPENSE_CUDA_CHECK(cudaGetDevice(&dev));
  SPENSE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  read_through_l2_kernel<<<4 * sms, 512, 0, stream>>>(static_cast<const uint4*>(buf), n, sink);
  SPENSE_CUDA_CHECK_LAUNCH();
}

void prune24_16(void* w, DType type, int64_t rows, int64_t k, const uint8_t* row_dense,
                const uint8_t* col_dense, cudaStream_t stream) {
  require(k % 4 == 0, "prune24_16", "k must be a multiple of 4");
  const int64_t work = rows * (k / 4);
  if (work == 0) return;
  if (type == DType::BF16)
    prune24_kernel<<<grid_for(work), kThreads, 0, stream>>>(static_cast<__nv_bfloat16*>(w), rows, k,
                                                            row_dense, col_dense);
  else if (type == DType::F16)
    prune24_kernel<<<grid_for(work), kThreads, 0, stream>>>(static_cast<__half*>(w), rows, k,
                                                            row_dense, col_dense);
  else
    require(false, "prune24_16", "type must be BF16 or F16");
  SPENSE_CUDA_CHECK_LAUNCH();
}

}  // namespace spense::cuda
