// The decoder's non-GEMM kernels (engine_kernels.h). All are memory- or latency-bound and
// small next to the weight GEMMs at decode sizes; they are written plainly, one block per
// row (or per row x head x KV chunk for attention), with fp32 arithmetic throughout.
#include <cuda_bf16.h>

#include <algorithm>
#include <cfloat>
#include <string>

#include "cuda/reduce.cuh"
#include "engine/gpu/engine_kernels.h"
#include "spense/cuda/check.h"
#include "spense/error.h"

namespace spense::cuda::engine {
namespace {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float ldb(const uint16_t* p) { return __bfloat162float(*reinterpret_cast<const bf16*>(p)); }
__device__ __forceinline__ uint16_t stb(float v) {
  bf16 b = __float2bfloat16(v);
  return *reinterpret_cast<uint16_t*>(&b);
}

__device__ __forceinline__ void unpack8(uint4 u, float (&f)[8]) {
  const bf16* e = reinterpret_cast<const bf16*>(&u);
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = __bfloat162float(e[i]);
}

int blocks_for(size_t n, int threads) {
  size_t b = (n + threads - 1) / threads;
  return static_cast<int>(b < 65535 * 8 ? (b ? b : 1) : 65535 * 8);
}

// ---------------------------------------------------------------------------------------
__global__ void embed_k(const int32_t* ids, const uint16_t* E, int64_t vocab, int64_t H, float* h) {
  const int64_t r = blockIdx.x;
  int64_t id = ids[r];
  id = id < 0 ? 0 : (id >= vocab ? vocab - 1 : id);
  const uint16_t* src = E + id * H;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) h[r * H + i] = ldb(src + i);
}

__global__ void residual_rmsnorm_k(float* h, const uint16_t* delta, const float* bias, const float* w, float eps,
                                   uint16_t* out, int64_t H) {
  const int64_t r = blockIdx.x;
  float* hr = h + r * H;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    float x = hr[i];
    if (delta) {
      x += ldb(delta + r * H + i) + (bias ? bias[i] : 0.f);
      hr[i] = x;
    }
    ss += x * x;
  }
  ss = block_sum(ss);
  const float inv = rsqrtf(ss / static_cast<float>(H) + eps);
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) out[r * H + i] = stb(hr[i] * inv * w[i]);
}

// One warp per head job: q heads (norm + rope -> q_out), k heads (norm + rope -> cache), v heads (-> cache).
__global__ void qkv_rope_cache_k(QkvView in, const float* bias, const float* q_norm, const float* k_norm, float eps,
                                 const float* inv_freq, const int32_t* row_slot, const int32_t* row_pos, int NH,
                                 int NKV, int D, float* q_out, uint16_t* k_cache, uint16_t* v_cache, int64_t max_ctx) {
  const int64_t r = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  const int64_t slot = row_slot ? row_slot[r] : r;
  const int64_t pos = row_pos[r];
  const int half = D / 2;
  for (int j = blockIdx.y * nw + warp; j < NH + 2 * NKV; j += gridDim.y * nw) {
    const uint16_t* src;
    const float* b = nullptr;
    const float* nrm = nullptr;
    int64_t cache_off = 0;
    if (j < NH) {
      src = in.q + r * in.ldq + int64_t(j) * D;
      if (bias) b = bias + int64_t(j) * D;
      nrm = q_norm;
    } else if (j < NH + NKV) {
      const int kh = j - NH;
      src = in.k + r * in.ldk + int64_t(kh) * D;
      if (bias) b = bias + int64_t(NH + kh) * D;
      nrm = k_norm;
      cache_off = ((slot * NKV + kh) * max_ctx + pos) * D;
    } else {
      const int vh = j - NH - NKV;
      src = in.v + r * in.ldv + int64_t(vh) * D;
      if (bias) b = bias + int64_t(NH + NKV + vh) * D;
      cache_off = ((slot * NKV + vh) * max_ctx + pos) * D;
      for (int i = lane; i < D; i += 32) v_cache[cache_off + i] = stb(ldb(src + i) + (b ? b[i] : 0.f));
      continue;
    }
    float inv = 1.f;
    if (nrm) {
      float ss = 0.f;
      for (int i = lane; i < D; i += 32) {
        const float x = ldb(src + i) + (b ? b[i] : 0.f);
        ss += x * x;
      }
      ss = warp_sum(ss);
      inv = rsqrtf(ss / static_cast<float>(D) + eps);
    }
    for (int i = lane; i < half; i += 32) {
      float a = ldb(src + i) + (b ? b[i] : 0.f);
      float c = ldb(src + i + half) + (b ? b[i + half] : 0.f);
      if (nrm) {
        a = a * inv * nrm[i];
        c = c * inv * nrm[i + half];
      }
      const float f = static_cast<float>(pos) * inv_freq[i];
      const float cs = cosf(f), sn = sinf(f);
      const float oa = a * cs - c * sn, oc = c * cs + a * sn;
      if (j < NH) {
        float* dst = q_out + r * int64_t(NH) * D + int64_t(j) * D;
        dst[i] = oa;
        dst[i + half] = oc;
      } else {
        k_cache[cache_off + i] = stb(oa);
        k_cache[cache_off + i + half] = stb(oc);
      }
    }
  }
}

constexpr int kMaxGroup = 16;
constexpr int kAttnThreads = 128;

// Block (split s, kv head kh, row r): softmax partials of the G query heads of kh over keys
// [s*chunk, min((s+1)*chunk, len)). Writes m (max score), l (sum of exp) and o (unnormalised
// weighted values) per (row, q head, split).
template <int D>
__global__ void __launch_bounds__(kAttnThreads) attn_partial_k(const float* q, const uint16_t* kc, const uint16_t* vc,
                                                               const int32_t* row_slot, const int32_t* row_pos, int NH,
                                                               int NKV, int64_t max_ctx, int chunk, int splits,
                                                               float scale, float* part_o, float* part_ml) {
  const int s = blockIdx.x, kh = blockIdx.y;
  const int64_t r = blockIdx.z;
  const int G = NH / NKV;
  const int64_t slot = row_slot ? row_slot[r] : r;
  const int64_t len = int64_t(row_pos[r]) + 1;
  const int64_t j0 = int64_t(s) * chunk;
  const int tid = threadIdx.x;
  auto part = [&](int g) { return (r * NH + int64_t(kh) * G + g) * splits + s; };
  if (j0 >= len) {
    for (int g = tid; g < G; g += blockDim.x) {
      part_ml[2 * part(g)] = -FLT_MAX;
      part_ml[2 * part(g) + 1] = 0.f;
    }
    return;
  }
  const int n = static_cast<int>(len - j0 < chunk ? len - j0 : chunk);
  extern __shared__ float sm[];
  float* qs = sm;           // [G][D]
  float* sc = sm + G * D;   // [G][chunk]
  const float* qr = q + r * int64_t(NH) * D + int64_t(kh) * G * D;
  for (int i = tid; i < G * D; i += blockDim.x) qs[i] = qr[i] * scale;
  __syncthreads();

  const size_t base = (size_t(slot) * NKV + kh) * size_t(max_ctx) * D + size_t(j0) * D;
  const uint4* kb = reinterpret_cast<const uint4*>(kc + base);
  for (int t = tid; t < n; t += blockDim.x) {
    float acc[kMaxGroup];
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) acc[g] = 0.f;
#pragma unroll 4
    for (int c = 0; c < D / 8; ++c) {
      float kf[8];
      unpack8(kb[size_t(t) * (D / 8) + c], kf);
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) {
        if (g < G) {
          const float* qg = qs + g * D + c * 8;
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[g] += qg[e] * kf[e];
        }
      }
    }
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g)
      if (g < G) sc[g * chunk + t] = acc[g];
  }
  __syncthreads();

  const int lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
  for (int g = warp; g < G; g += nw) {
    float m = -FLT_MAX;
    for (int t = lane; t < n; t += 32) m = fmaxf(m, sc[g * chunk + t]);
    m = warp_max(m);
    float l = 0.f;
    for (int t = lane; t < n; t += 32) {
      const float p = __expf(sc[g * chunk + t] - m);
      sc[g * chunk + t] = p;
      l += p;
    }
    l = warp_sum(l);
    if (lane == 0) {
      part_ml[2 * part(g)] = m;
      part_ml[2 * part(g) + 1] = l;
    }
  }
  __syncthreads();

  const uint4* vb = reinterpret_cast<const uint4*>(vc + base);
  for (int task = tid; task < G * (D / 8); task += blockDim.x) {
    const int g = task / (D / 8), c = task % (D / 8);
    float o[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const float* p = sc + g * chunk;
    for (int t = 0; t < n; ++t) {
      float vf[8];
      unpack8(vb[size_t(t) * (D / 8) + c], vf);
      const float pt = p[t];
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] += pt * vf[e];
    }
    float* dst = part_o + part(g) * D + c * 8;
#pragma unroll
    for (int e = 0; e < 8; ++e) dst[e] = o[e];
  }
}

// Block (q head h, row r), thread d: combine the valid splits of (r, h).
__global__ void attn_combine_k(const float* part_o, const float* part_ml, const int32_t* row_pos, int NH, int D,
                               int chunk, int splits, uint16_t* out) {
  const int h = blockIdx.x;
  const int64_t r = blockIdx.y;
  const int d = threadIdx.x;
  if (d >= D) return;
  const int64_t len = int64_t(row_pos[r]) + 1;
  const int ns = static_cast<int>((len + chunk - 1) / chunk);
  const int64_t p0 = (r * NH + h) * splits;
  float M = -FLT_MAX;
  for (int s = 0; s < ns; ++s) M = fmaxf(M, part_ml[2 * (p0 + s)]);
  float num = 0.f, den = 0.f;
  for (int s = 0; s < ns; ++s) {
    const float w = __expf(part_ml[2 * (p0 + s)] - M);
    den += w * part_ml[2 * (p0 + s) + 1];
    num += w * part_o[(p0 + s) * D + d];
  }
  out[r * int64_t(NH) * D + int64_t(h) * D + d] = stb(num / den);
}

__global__ void silu_mul_k(const uint16_t* gate, int64_t ldg, const uint16_t* up, int64_t ldu, int64_t rows,
                           int64_t I, uint16_t* act) {
  const size_t n = size_t(rows) * I;
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x) {
    const int64_t r = int64_t(e / I), i = int64_t(e % I);
    const float g = ldb(gate + r * ldg + i), u = ldb(up + r * ldu + i);
    act[e] = stb(g / (1.f + __expf(-g)) * u);
  }
}

__global__ void argmax_k(const float* logits, int64_t V, int32_t* out) {
  const int64_t r = blockIdx.x;
  const float* x = logits + r * V;
  float best = -FLT_MAX;
  int64_t bi = 0;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
    if (x[j] > best) { best = x[j]; bi = j; }  // strided scan: the first max in this thread's share
  __shared__ float sv[32];
  __shared__ int64_t si[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
  }
  if (lane == 0) { sv[warp] = best; si[warp] = bi; }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < nw; ++w)
      if (sv[w] > best || (sv[w] == best && si[w] < bi)) { best = sv[w]; bi = si[w]; }
    out[r] = static_cast<int32_t>(bi);
  }
}

__global__ void advance_k(int32_t* lens, int64_t rows) {
  const int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (r < rows) lens[r] += 1;
}

}  // namespace

void embed_rows(const int32_t* ids, const bf16_t* E, int64_t vocab, int64_t H, int64_t rows, float* h,
                cudaStream_t s) {
  if (rows <= 0) return;
  embed_k<<<static_cast<unsigned>(rows), 256, 0, s>>>(ids, E, vocab, H, h);
  SPENSE_CUDA_CHECK_LAUNCH();
}

void residual_rmsnorm(float* h, const bf16_t* delta, const float* bias, const float* w, float eps, bf16_t* out,
                      int64_t rows, int64_t H, cudaStream_t s) {
  if (rows <= 0) return;
  // About 4 elements per thread: at batch 1 the row is the whole launch, so go wide.
  const int threads = static_cast<int>(std::min<int64_t>(1024, std::max<int64_t>(32, (H / 4 + 31) / 32 * 32)));
  residual_rmsnorm_k<<<static_cast<unsigned>(rows), threads, 0, s>>>(h, delta, bias, w, eps, out, H);
  SPENSE_CUDA_CHECK_LAUNCH();
}

void qkv_rope_cache(QkvView in, const float* bias, const float* q_norm, const float* k_norm, float eps,
                    const float* inv_freq, const int32_t* row_slot, const int32_t* row_pos, int64_t rows,
                    int64_t NH, int64_t NKV, int64_t D, float* q_out, bf16_t* k_cache, bf16_t* v_cache,
                    int64_t max_ctx, cudaStream_t s) {
  if (rows <= 0) return;
  // One warp per head job, 4 per block, so that a single decode row still spreads over many SMs.
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>((NH + 2 * NKV + 3) / 4));
  qkv_rope_cache_k<<<grid, 128, 0, s>>>(in, bias, q_norm, k_norm, eps, inv_freq, row_slot,
                                                               row_pos, int(NH), int(NKV), int(D), q_out, k_cache,
                                                               v_cache, max_ctx);
  SPENSE_CUDA_CHECK_LAUNCH();
}

size_t attention_workspace_floats(int64_t rows, int64_t NH, int64_t D, int64_t max_ctx, int64_t chunk) {
  const int64_t splits = (max_ctx + chunk - 1) / chunk;
  return static_cast<size_t>(rows * NH * splits * (D + 2));
}

namespace {
template <int D>
void launch_attn(const float* q, const bf16_t* kc, const bf16_t* vc, const int32_t* row_slot, const int32_t* row_pos,
                 int64_t rows, int NH, int NKV, int64_t max_ctx, int chunk, int splits, float* part_o,
                 float* part_ml, cudaStream_t s) {
  const int G = NH / NKV;
  const size_t smem = sizeof(float) * size_t(G) * (D + chunk);
  static bool raised = false;  // beyond 48 KB the dynamic shared-memory limit must be raised (once per D)
  if (smem > 48 * 1024 && !raised) {
    SPENSE_CUDA_CHECK(cudaFuncSetAttribute(attn_partial_k<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, 96 * 1024));
    raised = true;
  }
  dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(NKV), static_cast<unsigned>(rows));
  attn_partial_k<D><<<grid, kAttnThreads, smem, s>>>(q, kc, vc, row_slot, row_pos, NH, NKV, max_ctx, chunk, splits,
                                                     1.f / sqrtf(float(D)), part_o, part_ml);
  SPENSE_CUDA_CHECK_LAUNCH();
}
}  // namespace

void attention(const float* q, const bf16_t* k_cache, const bf16_t* v_cache, const int32_t* row_slot,
               const int32_t* row_pos, int64_t rows, int64_t NH, int64_t NKV, int64_t D, int64_t max_ctx,
               int64_t chunk, float* workspace, bf16_t* out, cudaStream_t s) {
  if (rows <= 0) return;
  if (NKV <= 0 || NH % NKV != 0 || NH / NKV > kMaxGroup)
    throw Error("attention: " + std::to_string(NH) + " query heads over " + std::to_string(NKV) +
                " KV heads is not supported (at most " + std::to_string(kMaxGroup) + " query heads per KV head)");
  if (chunk <= 0 || sizeof(float) * size_t(NH / NKV) * (D + chunk) > 96 * 1024)
    throw Error("attention: KV chunk of " + std::to_string(chunk) + " keys does not fit in shared memory", 1);
  const int splits = static_cast<int>((max_ctx + chunk - 1) / chunk);
  float* part_o = workspace;
  float* part_ml = workspace + size_t(rows) * NH * splits * D;
  const int nh = int(NH), nkv = int(NKV), ch = int(chunk);
  switch (D) {
    case 16: launch_attn<16>(q, k_cache, v_cache, row_slot, row_pos, rows, nh, nkv, max_ctx, ch, splits, part_o, part_ml, s); break;
    case 32: launch_attn<32>(q, k_cache, v_cache, row_slot, row_pos, rows, nh, nkv, max_ctx, ch, splits, part_o, part_ml, s); break;
    case 64: launch_attn<64>(q, k_cache, v_cache, row_slot, row_pos, rows, nh, nkv, max_ctx, ch, splits, part_o, part_ml, s); break;
    case 128: launch_attn<128>(q, k_cache, v_cache, row_slot, row_pos, rows, nh, nkv, max_ctx, ch, splits, part_o, part_ml, s); break;
    case 256: launch_attn<256>(q, k_cache, v_cache, row_slot, row_pos, rows, nh, nkv, max_ctx, ch, splits, part_o, part_ml, s); break;
    default: throw Error("attention: head_dim " + std::to_string(D) + " is not supported (16, 32, 64, 128 or 256)");
  }
  dim3 grid(static_cast<unsigned>(NH), static_cast<unsigned>(rows));
  const int threads = D < 32 ? 32 : int(D);
  attn_combine_k<<<grid, threads, 0, s>>>(part_o, part_ml, row_pos, nh, int(D), ch, splits, out);
  SPENSE_CUDA_CHECK_LAUNCH();
}

void silu_mul(const bf16_t* gate, int64_t ldg, const bf16_t* up, int64_t ldu, int64_t rows, int64_t I, bf16_t* act,
              cudaStream_t s) {
  if (rows <= 0) return;
  silu_mul_k<<<blocks_for(size_t(rows) * I, 256), 256, 0, s>>>(gate, ldg, up, ldu, rows, I, act);
  SPENSE_CUDA_CHECK_LAUNCH();
}

void argmax_rows(const float* logits, int64_t V, int64_t rows, int32_t* out, cudaStream_t s) {
  if (rows <= 0) return;
  argmax_k<<<static_cast<unsigned>(rows), 1024, 0, s>>>(logits, V, out);
  SPENSE_CUDA_CHECK_LAUNCH();
}

void advance(int32_t* lens, int64_t rows, cudaStream_t s) {
  if (rows <= 0) return;
  advance_k<<<static_cast<unsigned>((rows + 127) / 128), 128, 0, s>>>(lens, rows);
  SPENSE_CUDA_CHECK_LAUNCH();
}

}  // namespace spense::cuda::engine
