// The decoder's non-GEMM kernels (engine_kernels.h). All are memory- or latency-bound and
// small next to the weight GEMMs at decode sizes; they are written plainly, one block per
// row (or per row x head x KV chunk for attention), with fp32 arithmetic throughout.
#include <cuda_bf16.h>

#include <algorithm>
#include <cfloat>
#include <cstdlib>
#include <string>

#include "cuda/async_copy.cuh"
#include "cuda/fp8.cuh"
#include "cuda/mma.cuh"
#include "cuda/pdl.cuh"
#include "cuda/reduce.cuh"
#include "engine/gpu/attn_f8_layout.h"
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

// A KV-cache element: BF16 bits, or E4M3 (F8) with no scale, saturated at +-448 (vLLM's
// "fp8_e4m3" cache with its default scale of 1). E4M3 values are exact in BF16, so the attention
// tiles in shared memory are BF16 either way.
template <bool F8>
__device__ __forceinline__ void put_kv(void* cache, size_t i, float v) {
  if constexpr (F8) static_cast<uint8_t*>(cache)[i] = to_e4m3(v);
  else static_cast<uint16_t*>(cache)[i] = stb(v);
}
// 8 E4M3 codes (little-endian in u) -> 8 BF16 values (exact: E4M3 -> float -> BF16).
__device__ __forceinline__ uint4 e4m3x8_to_bf16x8(uint2 u) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t word = i < 2 ? u.x : u.y;
    const float2 f = e4m3x2(static_cast<uint16_t>(word >> (16 * (i & 1))));
    const __nv_bfloat162 b = __floats2bfloat162_rn(f.x, f.y);
    w[i] = *reinterpret_cast<const uint32_t*>(&b);
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
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
  griddep_launch_dependents();  // the next kernel (a projection) may start fetching its weights
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

// The same with H % 4 == 0, each thread holding V float4s of the row in registers: one round
// of loads, no second read of h (at batch 1 the row is the whole launch, so latency is the cost).
template <int V>
__global__ void residual_rmsnorm_vec_k(float* h, const uint16_t* delta, const float* bias, const float* w, float eps,
                                       uint16_t* out, int64_t H) {
  griddep_launch_dependents();  // the next kernel (a projection) may start fetching its weights
  const int64_t r = blockIdx.x;
  const int n4 = static_cast<int>(H / 4);
  float4* hr = reinterpret_cast<float4*>(h + r * H);
  float4 x[V];
  float ss = 0.f;
#pragma unroll
  for (int v = 0; v < V; ++v) {
    const int i = threadIdx.x + v * blockDim.x;
    if (i < n4) {
      x[v] = hr[i];
      if (delta) {
        const uint2 d = reinterpret_cast<const uint2*>(delta + r * H)[i];
        const float4 b = bias ? reinterpret_cast<const float4*>(bias)[i] : make_float4(0.f, 0.f, 0.f, 0.f);
        x[v].x += __uint_as_float(d.x << 16) + b.x;
        x[v].y += __uint_as_float(d.x & 0xffff0000u) + b.y;
        x[v].z += __uint_as_float(d.y << 16) + b.z;
        x[v].w += __uint_as_float(d.y & 0xffff0000u) + b.w;
        hr[i] = x[v];
      }
      ss += x[v].x * x[v].x + x[v].y * x[v].y + x[v].z * x[v].z + x[v].w * x[v].w;
    }
  }
  ss = block_sum(ss);
  const float inv = rsqrtf(ss / static_cast<float>(H) + eps);
#pragma unroll
  for (int v = 0; v < V; ++v) {
    const int i = threadIdx.x + v * blockDim.x;
    if (i < n4) {
      const float4 wv = reinterpret_cast<const float4*>(w)[i];
      uint2 o;
      o.x = uint32_t(stb(x[v].x * inv * wv.x)) | (uint32_t(stb(x[v].y * inv * wv.y)) << 16);
      o.y = uint32_t(stb(x[v].z * inv * wv.z)) | (uint32_t(stb(x[v].w * inv * wv.w)) << 16);
      reinterpret_cast<uint2*>(out + r * H)[i] = o;
    }
  }
}

// One warp, one head: x = src + b (D values; b nullable), RMS-normed with nrm when nrm is given,
// rotated by RoPE at pos (HF rotate_half); put(i, value) receives every output element.
template <class Put>
__device__ __forceinline__ void norm_rope_head(const uint16_t* src, const float* b, const float* nrm, float eps,
                                               const float* inv_freq, int64_t pos, int D, int lane, Put put) {
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
  const int half = D / 2;
  for (int i = lane; i < half; i += 32) {
    float a = ldb(src + i) + (b ? b[i] : 0.f);
    float c = ldb(src + i + half) + (b ? b[i + half] : 0.f);
    if (nrm) {
      a = a * inv * nrm[i];
      c = c * inv * nrm[i + half];
    }
    const float f = static_cast<float>(pos) * inv_freq[i];
    const float cs = cosf(f), sn = sinf(f);
    put(i, a * cs - c * sn);
    put(i + half, c * cs + a * sn);
  }
}

// One warp per head job: q heads (norm + rope -> q_out), k heads (norm + rope -> cache), v heads (-> cache).
template <bool F8>
__global__ void qkv_rope_cache_k(QkvView in, const float* bias, const float* q_norm, const float* k_norm, float eps,
                                 const float* inv_freq, const int32_t* row_slot, const int32_t* row_pos, int NH,
                                 int NKV, int D, float* q_out, void* k_cache, void* v_cache, int64_t max_ctx) {
  const int64_t r = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  const int64_t slot = row_slot ? row_slot[r] : r;
  const int64_t pos = row_pos[r];
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
      for (int i = lane; i < D; i += 32) put_kv<F8>(v_cache, cache_off + i, ldb(src + i) + (b ? b[i] : 0.f));
      continue;
    }
    if (j < NH) {
      float* dst = q_out + r * int64_t(NH) * D + int64_t(j) * D;
      norm_rope_head(src, b, nrm, eps, inv_freq, pos, D, lane, [&](int i, float v) { dst[i] = v; });
    } else {
      norm_rope_head(src, b, nrm, eps, inv_freq, pos, D, lane,
                     [&](int i, float v) { put_kv<F8>(k_cache, cache_off + i, v); });
    }
  }
}

constexpr int kMaxGroup = 16;
constexpr int kAttnThreads = 128;
constexpr int kAttnTile = 64;     // keys per shared-memory tile: one thread per (key, half of the heads)
constexpr int kAttnMaxSplits = 32; // splits per row at most (the last block combines them serially)
constexpr int kPPitch = kAttnTile + 4;  // floats per head row of probabilities (two heads per warp: distinct banks)
static_assert(kAttnThreads == 2 * kAttnTile, "the score phase maps two threads to each key of a tile");

// Tensor-core attention (TC): the group's query heads are the N = 8 side of mma.m16n8k16, so it
// takes groups of up to kTcHeads heads (padded with zero queries) and D a multiple of 16.
constexpr int kTcHeads = 8;
constexpr int kPbPitch = kAttnTile + 8;  // bf16 probabilities per head row (144 bytes: ldmatrix without conflicts)

// Shared memory of attn_k: the tile's keys (rows padded by 16 bytes, so that the threads of a
// quarter warp, one key each, read distinct banks) and values (TC: padded as the keys, for
// ldmatrix), the scaled queries (fp32 rows padded by 4 floats; TC: 8 BF16 rows padded as the
// keys, high parts then low parts), the tile's probabilities (TC: also as BF16 high and low
// parts), and per head the running max, sum and this tile's rescale.
// Pipelined blocks (several tiles per split) add, after all of that (16-byte aligned), a second
// key / value tile, or for E4M3 caches two staging tiles of raw codes (cp.async lands them there;
// each is widened into the one BF16 tile when its turn comes).
template <int D, bool TC = false>
struct AttnSmem {
  static constexpr int kKPitch = D + 8;  // bf16
  static constexpr int kVPitch = TC ? kKPitch : D;
  static constexpr int kQPitch = D + 4;  // floats
  static constexpr int kTasks = (kMaxGroup * (D / 8) + kAttnThreads - 1) / kAttnThreads;  // (head, 8 dims) per thread
  static constexpr int kStage8 = 2 * kAttnTile * D;  // bytes of one E4M3 staging tile (keys, then values)
  __host__ __device__ static size_t base_bytes(int G) {
    const size_t heads = TC ? kTcHeads : size_t(G);
    const size_t q = TC ? 2 * 2 * heads * kKPitch : sizeof(float) * heads * kQPitch;
    const size_t b = 2 * size_t(kAttnTile) * (kKPitch + kVPitch) + q + sizeof(float) * heads * (kPPitch + 3) +
                     (TC ? 2 * 2 * heads * kPbPitch : 0);
    return (b + 15) / 16 * 16;
  }
  static size_t bytes(int G, bool pipe, bool f8) {
    const size_t extra = !pipe ? 0 : f8 ? 2 * size_t(kStage8) : 2 * size_t(kAttnTile) * (kKPitch + kVPitch);
    return base_bytes(G) + extra;
  }
};

// v split into BF16 high and low parts, v ~ hi + lo to about 16 bits of mantissa: the tensor-core
// attention multiplies the BF16 keys and values by both parts of the queries and probabilities,
// so that it keeps (nearly) fp32 inputs, as the CUDA-core path does. With the queries and
// probabilities rounded to BF16 alone (FlashAttention's choice) the evaluation model's greedy
// tokens left the fp32 CPU reference's within 32 steps (tests/cuda/test_cuda_engine.cpp, H200).
__device__ __forceinline__ void split_bf16(float v, uint16_t& hi, uint16_t& lo) {
  hi = stb(v);
  lo = stb(v - __uint_as_float(uint32_t(hi) << 16));
}

// The end of a block whose split is not its row's only one (its unnormalised output already in
// part_o): its per-head (max, sum) go to part_ml, and the block that finishes last for its (row,
// kv head) (a counter per pair, reset by that block) combines the ns splits into out.
template <int D>
__device__ void combine_splits(int G, int ns, int splits, int s, int64_t q0, int64_t pair, const float* m_run,
                               const float* l_run, float* part_o, float* part_ml, int* counters, uint16_t* out) {
  constexpr int C8 = D / 8;
  const int tid = threadIdx.x, nt = blockDim.x;
  for (int g = tid; g < G; g += nt) {
    part_ml[2 * ((q0 + g) * splits + s)] = m_run[g];
    part_ml[2 * ((q0 + g) * splits + s) + 1] = l_run[g];
  }
  __threadfence();  // this split's partials are visible device-wide before it is counted
  __syncthreads();
  __shared__ int is_last;
  if (tid == 0) {
    int* cnt = counters + pair;
    is_last = atomicAdd(cnt, 1) == ns - 1;
    if (is_last) *cnt = 0;  // every split of the pair has counted: ready for the next launch
  }
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  for (int task = tid; task < G * C8; task += nt) {
    const int g = task / C8, c = task % C8;
    const int64_t p0 = (q0 + g) * splits;
    float M = -FLT_MAX;
    for (int k = 0; k < ns; ++k) M = fmaxf(M, __ldcg(part_ml + 2 * (p0 + k)));
    float num[8] = {0, 0, 0, 0, 0, 0, 0, 0}, den = 0.f;
#pragma unroll 4
    for (int k = 0; k < ns; ++k) {
      const float w = __expf(__ldcg(part_ml + 2 * (p0 + k)) - M);
      den += w * __ldcg(part_ml + 2 * (p0 + k) + 1);
      const float4* src = reinterpret_cast<const float4*>(part_o + (p0 + k) * D + c * 8);
      const float4 a = __ldcg(src), b = __ldcg(src + 1);
      num[0] += w * a.x; num[1] += w * a.y; num[2] += w * a.z; num[3] += w * a.w;
      num[4] += w * b.x; num[5] += w * b.y; num[6] += w * b.z; num[7] += w * b.w;
    }
    const float inv = 1.f / den;
    uint16_t* dst = out + (q0 + g) * D + c * 8;
#pragma unroll
    for (int e = 0; e < 8; ++e) dst[e] = stb(num[e] * inv);
  }
}

// Block (split s, kv head kh, row r): the G query heads of kh over keys [s*chunk, min((s+1)*chunk,
// len)), in tiles of kAttnTile keys with an online softmax (cp.async tile loads; scores, softmax
// and the value sum from shared memory). A row with one split writes its output directly; else
// each split leaves (max, sum, unnormalised output) in the workspace and the block that finishes
// last for (r, kh) (a counter per (r, kh), reset by that block) combines them: one launch per layer.
// TC: scores and value sums on the tensor cores (mma.sync m16n8k16, queries and probabilities
// as BF16 high + low parts, fp32 accumulation), keys x heads = (16 x 16) x (16 x 8) per warp and k-step, and
// dims x heads = V^T (ldmatrix.trans) x P^T: the CUDA-core version spends most of its time issuing
// the FMAs and bf16 conversions (Nsight Compute, H100: 77 us per layer at batch 16 with DRAM 28%
// busy; docs/perf.md).
// F8: the caches hold E4M3 codes, widened to BF16 on their way into shared memory (plain loads
// instead of cp.async, since each 8-byte load becomes a 16-byte store; PIPE: cp.async into a
// staging tile, widened in shared memory).
// PIPE (splits of several tiles): the next tile's copies are issued before this tile's
// arithmetic, into the other buffer, so that each block keeps a tile in flight while it computes.
template <int D, bool TC, bool F8, bool PIPE>
__global__ void __launch_bounds__(kAttnThreads) attn_k(const float* q, const void* kc, const void* vc,
                                                       const int32_t* row_slot, const int32_t* row_pos, int NH, int NKV,
                                                       int64_t max_ctx, int chunk, int splits, float scale,
                                                       float* part_o, float* part_ml, int* counters, uint16_t* out,
                                                       DecodeRope rope) {
  griddep_launch_dependents();  // the next kernel (a projection) may start fetching its weights
  using S = AttnSmem<D, TC>;
  constexpr int C8 = D / 8;  // 8-element chunks of a head vector
  static_assert(!TC || D % 16 == 0, "the tensor-core path takes 16-dim k-steps");
  const int s = blockIdx.x, kh = blockIdx.y;
  const int64_t r = blockIdx.z;
  const int G = NH / NKV;
  const int64_t slot = row_slot ? row_slot[r] : r;
  const int64_t len = int64_t(row_pos[r]) + 1;
  const int64_t j0 = int64_t(s) * chunk;
  if (j0 >= len) return;  // beyond this row's keys: not counted by the combine below
  const int64_t j1 = len < j0 + chunk ? len : j0 + chunk;
  // Splits holding keys (capped by the grid's, should a position exceed the cache: the counter
  // below must reach ns - 1, or it is never reset).
  const int ns = static_cast<int>(min(int64_t(splits), (len + chunk - 1) / chunk));
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  extern __shared__ __align__(16) uint8_t attn_smem[];
  const int HS = TC ? kTcHeads : G;                         // head rows in shared memory
  uint16_t* const ks0 = reinterpret_cast<uint16_t*>(attn_smem);  // [tile][kKPitch]
  uint16_t* const vs0 = ks0 + kAttnTile * S::kKPitch;              // [tile][kVPitch]
  uint8_t* const extra = attn_smem + S::base_bytes(G);             // PIPE: the second buffer / staging tiles
  uint16_t* ks = ks0;  // the tile being computed on
  uint16_t* vs = vs0;
  uint16_t* qb = vs0 + kAttnTile * S::kVPitch;              // TC: [8][kKPitch] BF16 queries, high parts
  uint16_t* qlo = qb + kTcHeads * S::kKPitch;               // TC: and low parts
  float* qs = reinterpret_cast<float*>(qb + (TC ? 2 * kTcHeads * S::kKPitch : 0));  // !TC: [G][kQPitch]
  float* ps = qs + (TC ? 0 : G * S::kQPitch);               // [HS][kPPitch]
  float* m_run = ps + HS * kPPitch;
  float* l_run = m_run + HS;
  float* alpha = l_run + HS;
  uint16_t* pb = reinterpret_cast<uint16_t*>(alpha + HS);   // TC: [8][kPbPitch] BF16 probabilities, high parts
  uint16_t* plo = pb + kTcHeads * kPbPitch;                 // TC: and low parts

  const size_t head = (size_t(slot) * NKV + kh) * size_t(max_ctx) * D;
  const int64_t pos = len - 1;
  if (rope.k_cache && pos < j1) {  // fused decode: this split holds the row's new key; write it first
    const size_t at = head + size_t(pos) * D;
    const float* bias = rope.bias;
    if (warp == 0) {
      norm_rope_head(rope.in.k + r * rope.in.ldk + int64_t(kh) * D, bias ? bias + int64_t(NH + kh) * D : nullptr,
                     rope.k_norm, rope.eps, rope.inv_freq, pos, D, lane,
                     [&](int i, float v) { put_kv<F8>(rope.k_cache, at + i, v); });
    } else if (warp == 1) {
      const uint16_t* src = rope.in.v + r * rope.in.ldv + int64_t(kh) * D;
      const float* b = bias ? bias + int64_t(NH + NKV + kh) * D : nullptr;
      for (int i = lane; i < D; i += 32) put_kv<F8>(rope.v_cache, at + i, ldb(src + i) + (b ? b[i] : 0.f));
    }
    __syncthreads();  // the block's tile loads below read these two cache rows
  }
  // Keys [t0, t0 + n) into buffer `buf` (PIPE; else the one tile). cp.async copies form one group.
  auto load_tile = [&](int64_t t0, int buf) {
    const int n = static_cast<int>(j1 - t0 < kAttnTile ? j1 - t0 : kAttnTile);
    // TC: the rows past n are zero-filled, since the MMAs read whole tiles (a stale NaN there
    // times a zero probability would still be NaN).
    const int rows = TC ? kAttnTile : n;
    if constexpr (F8 && PIPE) {  // raw codes into staging tile buf: keys, then values
      constexpr int C16 = D / 16;
      uint8_t* st = extra + buf * S::kStage8;
      const uint8_t* kg = static_cast<const uint8_t*>(kc) + head + size_t(t0) * D;
      const uint8_t* vg = static_cast<const uint8_t*>(vc) + head + size_t(t0) * D;
      for (int e = tid; e < rows * C16; e += kAttnThreads) {
        const bool ok = e / C16 < n;
        cp16(smem_addr(st + e * 16), kg + size_t(ok ? e : 0) * 16, ok);
        cp16(smem_addr(st + kAttnTile * D + e * 16), vg + size_t(ok ? e : 0) * 16, ok);
      }
      cp_commit();
      return;
    } else if constexpr (F8) {
      const uint2* kg = reinterpret_cast<const uint2*>(static_cast<const uint8_t*>(kc) + head + size_t(t0) * D);
      const uint2* vg = reinterpret_cast<const uint2*>(static_cast<const uint8_t*>(vc) + head + size_t(t0) * D);
#pragma unroll 4
      for (int e = tid; e < rows * C8; e += kAttnThreads) {
        const int key = e / C8, c = e % C8;
        const bool ok = key < n;
        const uint2 kr = ok ? kg[e] : make_uint2(0, 0), vr = ok ? vg[e] : make_uint2(0, 0);  // not __ldg: the fused rope may have just written one of these rows
        *reinterpret_cast<uint4*>(ks0 + key * S::kKPitch + c * 8) = e4m3x8_to_bf16x8(kr);
        *reinterpret_cast<uint4*>(vs0 + key * S::kVPitch + c * 8) = e4m3x8_to_bf16x8(vr);
      }
      return;  // plain stores: the __syncthreads after cp_wait publishes them
    } else {
      uint16_t* kd = ks0;
      uint16_t* vd = vs0;
      if (PIPE && buf) {
        kd = reinterpret_cast<uint16_t*>(extra);
        vd = kd + kAttnTile * S::kKPitch;
      }
      const uint16_t* kg = static_cast<const uint16_t*>(kc) + head + size_t(t0) * D;
      const uint16_t* vg = static_cast<const uint16_t*>(vc) + head + size_t(t0) * D;
      for (int e = tid; e < rows * C8; e += kAttnThreads) {
        const int key = e / C8, c = e % C8;
        const bool ok = key < n;
        cp16(smem_addr(kd + key * S::kKPitch + c * 8), kg + size_t(ok ? e : 0) * 8, ok);
        cp16(smem_addr(vd + key * S::kVPitch + c * 8), vg + size_t(ok ? e : 0) * 8, ok);
      }
      cp_commit();
    }
  };
  load_tile(j0, 0);  // in flight while the queries are made

  // The scaled queries: fp32 rows of qs, or (TC) BF16 rows of qb and qlo, whose rows G..7 are zero.
  auto put_q = [&](int g, int i, float v) {
    if constexpr (TC) split_bf16(v, qb[g * S::kKPitch + i], qlo[g * S::kKPitch + i]);
    else qs[g * S::kQPitch + i] = v;
  };
  if (rope.k_cache) {  // fused decode: q-norm + RoPE of this block's G query heads, straight into shared memory
    for (int g = warp; g < G; g += kAttnThreads / 32) {
      const int64_t h = int64_t(kh) * G + g;
      norm_rope_head(rope.in.q + r * rope.in.ldq + h * D, rope.bias ? rope.bias + h * D : nullptr, rope.q_norm,
                     rope.eps, rope.inv_freq, pos, D, lane, [&](int i, float v) { put_q(g, i, v * scale); });
    }
  } else {
    const float* qr = q + (r * NH + int64_t(kh) * G) * D;
    for (int i = tid; i < G * D; i += kAttnThreads) put_q(i / D, i % D, qr[i] * scale);
  }
  if constexpr (TC) {
    for (int i = G * D + tid; i < kTcHeads * D; i += kAttnThreads)
      qb[(i / D) * S::kKPitch + i % D] = qlo[(i / D) * S::kKPitch + i % D] = 0;
    for (int i = tid; i < 2 * kTcHeads * kPbPitch; i += kAttnThreads) pb[i] = 0;  // pb, plo: rows G..7 stay zero
  }
  for (int g = tid; g < HS; g += kAttnThreads) {
    m_run[g] = -FLT_MAX;
    l_run[g] = 0.f;
    alpha[g] = 1.f;
  }
  float o[TC ? 1 : S::kTasks][8];
#pragma unroll
  for (int i = 0; i < (TC ? 1 : S::kTasks); ++i)
#pragma unroll
    for (int e = 0; e < 8; ++e) o[i][e] = 0.f;
  // TC: this warp's 16-dim tiles of the output (dims x heads, mma's C layout: dims g and g + 8,
  // heads 2t and 2t + 1 of the quad's thread t).
  constexpr int kTcTiles = D / 16, kTcTilesPerWarp = (kTcTiles + kAttnThreads / 32 - 1) / (kAttnThreads / 32);
  float ot[kTcTilesPerWarp][4];
#pragma unroll
  for (int i = 0; i < kTcTilesPerWarp; ++i) ot[i][0] = ot[i][1] = ot[i][2] = ot[i][3] = 0.f;
  const int gq = lane >> 2, tq = lane & 3;

  int it = 0;  // tile index within the split (PIPE: its buffer is it & 1)
  for (int64_t t0 = j0; t0 < j1; t0 += kAttnTile, ++it) {
    const int n = static_cast<int>(j1 - t0 < kAttnTile ? j1 - t0 : kAttnTile);
    if constexpr (PIPE) {
      // The other buffer was last read by tile it - 1, which every thread has finished (the
      // barrier at the end of the loop): the next tile's copies go there now.
      if (t0 + kAttnTile < j1) load_tile(t0 + kAttnTile, (it + 1) & 1);
      else cp_commit();  // an empty group keeps the count: wait<1> below always means this tile
      cp_wait<1>();
    } else {
      if (t0 != j0) load_tile(t0, 0);
      cp_wait<0>();
    }
    __syncthreads();  // the tile (and, first time round, the queries) are in shared memory
    if constexpr (PIPE && F8) {  // widen this tile's staged codes into the BF16 tile
      constexpr int C16 = D / 16;
      const uint8_t* st = extra + (it & 1) * S::kStage8;
      const int rows = TC ? kAttnTile : n;
      for (int e = tid; e < rows * C16; e += kAttnThreads) {
        const int key = e / C16, c = e % C16;
        const uint4 kr = *reinterpret_cast<const uint4*>(st + e * 16);
        const uint4 vr = *reinterpret_cast<const uint4*>(st + kAttnTile * D + e * 16);
        uint4* kd = reinterpret_cast<uint4*>(ks0 + key * S::kKPitch + c * 16);
        uint4* vd = reinterpret_cast<uint4*>(vs0 + key * S::kVPitch + c * 16);
        kd[0] = e4m3x8_to_bf16x8(make_uint2(kr.x, kr.y));
        kd[1] = e4m3x8_to_bf16x8(make_uint2(kr.z, kr.w));
        vd[0] = e4m3x8_to_bf16x8(make_uint2(vr.x, vr.y));
        vd[1] = e4m3x8_to_bf16x8(make_uint2(vr.z, vr.w));
      }
      __syncthreads();
    } else if constexpr (PIPE) {
      ks = (it & 1) ? reinterpret_cast<uint16_t*>(extra) : ks0;
      vs = ks + kAttnTile * S::kKPitch;
    }

    if constexpr (TC) {  // scores: warp w, keys 16w .. 16w + 15 x the 8 heads
      float sc[4] = {0.f, 0.f, 0.f, 0.f};
      const int k0 = 16 * warp;
#pragma unroll
      for (int d0 = 0; d0 < D; d0 += 32 < D ? 32 : D) {
        // A: keys k0.. x dims d0.. (ldmatrix x4: lanes 0-15 rows 0-15 at dim d0, 16-31 at d0 + 8);
        // B: the queries' dims d0 .. d0 + 15 (and + 31), heads as rows: x4 = two k-steps.
        uint32_t a[4], b[4], bl[4];
        ldsm_x4(smem_addr(ks + (k0 + (lane & 15)) * S::kKPitch + d0 + 8 * (lane >> 4)), a);
        if (D >= 32) {
          uint32_t a2[4];
          ldsm_x4(smem_addr(ks + (k0 + (lane & 15)) * S::kKPitch + d0 + 16 + 8 * (lane >> 4)), a2);
          ldsm_x4(smem_addr(qb + (lane & 7) * S::kKPitch + d0 + 8 * (lane >> 3)), b);
          ldsm_x4(smem_addr(qlo + (lane & 7) * S::kKPitch + d0 + 8 * (lane >> 3)), bl);
          mma_bf16(sc, a, b[0], b[1]);
          mma_bf16(sc, a2, b[2], b[3]);
          mma_bf16(sc, a, bl[0], bl[1]);
          mma_bf16(sc, a2, bl[2], bl[3]);
        } else {  // D = 16: one k-step (lanes 16-31 repeat the addresses of 0-15)
          ldsm_x4(smem_addr(qb + (lane & 7) * S::kKPitch + d0 + 8 * ((lane >> 3) & 1)), b);
          ldsm_x4(smem_addr(qlo + (lane & 7) * S::kKPitch + d0 + 8 * ((lane >> 3) & 1)), bl);
          mma_bf16(sc, a, b[0], b[1]);
          mma_bf16(sc, a, bl[0], bl[1]);
        }
      }
      // sc: keys k0 + gq (+ 8), heads 2tq (+ 1).
#pragma unroll
      for (int h = 0; h < 4; ++h) {
        const int key = k0 + gq + 8 * (h >> 1), g = 2 * tq + (h & 1);
        if (g < G) ps[g * kPPitch + key] = key < n ? sc[h] : -FLT_MAX;
      }
    } else {  // scores: thread (key, h0) for heads h0, h0 + 2, ...
      const int key = tid % kAttnTile, h0 = tid / kAttnTile;
      float acc[kMaxGroup / 2];
#pragma unroll
      for (int i = 0; i < kMaxGroup / 2; ++i) acc[i] = 0.f;
      if (key < n) {
#pragma unroll 4
        for (int c = 0; c < C8; ++c) {
          float kf[8];
          unpack8(*reinterpret_cast<const uint4*>(ks + key * S::kKPitch + c * 8), kf);
#pragma unroll
          for (int i = 0; i < kMaxGroup / 2; ++i) {
            const int g = h0 + 2 * i;
            if (g < G) {
              const float* qg = qs + g * S::kQPitch + c * 8;
#pragma unroll
              for (int e = 0; e < 8; ++e) acc[i] += qg[e] * kf[e];
            }
          }
        }
      }
#pragma unroll
      for (int i = 0; i < kMaxGroup / 2; ++i) {
        const int g = h0 + 2 * i;
        if (g < G) ps[g * kPPitch + key] = key < n ? acc[i] : -FLT_MAX;
      }
    }
    __syncthreads();

    for (int g = warp; g < G; g += kAttnThreads / 32) {  // online softmax, a warp per head
      float mx = -FLT_MAX;
      for (int t = lane; t < n; t += 32) mx = fmaxf(mx, ps[g * kPPitch + t]);
      mx = warp_max(mx);
      const float m_old = m_run[g], m_new = fmaxf(m_old, mx);
      float sum = 0.f;
      for (int t = lane; t < kAttnTile; t += 32) {
        const float p = t < n ? __expf(ps[g * kPPitch + t] - m_new) : 0.f;
        ps[g * kPPitch + t] = p;
        if constexpr (TC) split_bf16(p, pb[g * kPbPitch + t], plo[g * kPbPitch + t]);
        sum += p;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        const float a = __expf(m_old - m_new);  // 0 on the first tile (m_old = -FLT_MAX)
        alpha[g] = a;
        l_run[g] = l_run[g] * a + sum;
        m_run[g] = m_new;
      }
    }
    __syncthreads();

    if constexpr (TC) {  // values: warp w, dim tiles w, w + 4, ... x the 8 heads, over the tile's keys
      const float a0 = alpha[2 * tq], a1 = alpha[2 * tq + 1];
#pragma unroll
      for (int i = 0; i < kTcTilesPerWarp; ++i) {
        const int mt = warp + i * (kAttnThreads / 32);
        if (mt < kTcTiles) {
          ot[i][0] *= a0;
          ot[i][1] *= a1;
          ot[i][2] *= a0;
          ot[i][3] *= a1;
#pragma unroll
          for (int kb = 0; kb < kAttnTile; kb += 32) {
            // B: P^T for keys kb .. kb + 31 (heads as rows): x4 = two k-steps.
            uint32_t b[4], bl[4];
            ldsm_x4(smem_addr(pb + (lane & 7) * kPbPitch + kb + 8 * (lane >> 3)), b);
            ldsm_x4(smem_addr(plo + (lane & 7) * kPbPitch + kb + 8 * (lane >> 3)), bl);
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              // A: V^T (dims 16mt.. x keys kb + 16h..) from the key-major tile, transposed:
              // matrices (keys 0-7, dims 0-7), (keys 0-7, dims 8-15), (keys 8-15, dims 0-7), (8-15, 8-15).
              uint32_t a[4];
              const int key = kb + 16 * h + (lane & 7) + 8 * (lane >> 4), dim = 16 * mt + 8 * ((lane >> 3) & 1);
              ldsm_x4_trans(smem_addr(vs + key * S::kVPitch + dim), a);
              mma_bf16(ot[i], a, b[2 * h], b[2 * h + 1]);
              mma_bf16(ot[i], a, bl[2 * h], bl[2 * h + 1]);
            }
          }
        }
      }
    }
#pragma unroll
    for (int i = 0; i < (TC ? 0 : S::kTasks); ++i) {  // values: thread task (head g, dims c*8 .. c*8+7)
      const int task = tid + i * kAttnThreads;
      if (task < G * C8) {
        const int g = task / C8, c = task % C8;
        const float a = alpha[g];
#pragma unroll
        for (int e = 0; e < 8; ++e) o[i][e] *= a;
        const float* p = ps + g * kPPitch;
#pragma unroll 4
        for (int t = 0; t < n; ++t) {
          float vf[8];
          unpack8(*reinterpret_cast<const uint4*>(vs + t * D + c * 8), vf);
          const float pt = p[t];
#pragma unroll
          for (int e = 0; e < 8; ++e) o[i][e] += pt * vf[e];
        }
      }
    }
    __syncthreads();  // before the next tile overwrites keys, values and probabilities
  }

  const int64_t q0 = r * NH + int64_t(kh) * G;  // first query head of this block, over all rows
  if constexpr (TC) {  // ot: dims 16mt + gq (+ 8), heads 2tq (+ 1); one split: normalised, else partial
#pragma unroll
    for (int i = 0; i < kTcTilesPerWarp; ++i) {
      const int mt = warp + i * (kAttnThreads / 32);
      if (mt >= kTcTiles) continue;
#pragma unroll
      for (int h = 0; h < 4; ++h) {
        const int dim = 16 * mt + gq + 8 * (h >> 1), g = 2 * tq + (h & 1);
        if (g >= G) continue;
        if (ns == 1) out[(q0 + g) * D + dim] = stb(ot[i][h] / l_run[g]);
        else part_o[((q0 + g) * splits + s) * D + dim] = ot[i][h];
      }
    }
    if (ns == 1) return;
  }
  if (!TC && ns == 1) {
#pragma unroll
    for (int i = 0; i < S::kTasks; ++i) {
      const int task = tid + i * kAttnThreads;
      if (task < G * C8) {
        const int g = task / C8, c = task % C8;
        const float inv = 1.f / l_run[g];
        uint16_t* dst = out + (q0 + g) * D + c * 8;
#pragma unroll
        for (int e = 0; e < 8; ++e) dst[e] = stb(o[i][e] * inv);
      }
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < (TC ? 0 : S::kTasks); ++i) {
    const int task = tid + i * kAttnThreads;
    if (task < G * C8) {
      const int g = task / C8, c = task % C8;
      float* dst = part_o + ((q0 + g) * splits + s) * D + c * 8;
#pragma unroll
      for (int e = 0; e < 8; ++e) dst[e] = o[i][e];
    }
  }
  combine_splits<D>(G, ns, splits, s, q0, r * NKV + kh, m_run, l_run, part_o, part_ml, counters, out);
}

// E4M3 caches with up to 8 query heads per KV head and D a multiple of 16 up to 128 (decode and
// prefill rows alike, not the fused decode RoPE): each of the block's 4 warps runs its own 16-key
// steps of the split end to end, from a cp.async ring of kF8Stages steps per warp, with no block
// barrier until the warps' results are combined. Why: attn_k keeps one 64-key tile per block,
// widens it to BF16 in shared memory and passes four block barriers per tile; on an H100 at
// batch 64 with this cache it moved 1.1 TB/s (docs/perf.md), a third of copy speed.
// Tensor cores in FP16 (E4M3 values are exact in FP16, one cvt per two codes): scores
// S = K Q^T (16 keys x 8 heads, a k-step per 16 dims), then O^T += V^T P^T (16 dims x 8 heads,
// over the step's 16 keys). An mma's k index may stand for any dim (scores) or key (values) as
// long as both operands agree, so the k positions 2t, 2t + 1, 2t + 8, 2t + 9 of thread t are
// taken as the four bytes 4t .. 4t + 3 of a 16-byte span: a key fragment is one 32-bit shared
// load, a value fragment four byte loads from consecutive key rows, and the probabilities pass
// from the score fragments to the value fragments by movmatrix (attn_f8_layout.h: which key row
// stands for which position keeps the loads free of bank conflicts; a CPU test replays a step). Queries and probabilities are rounded
// to FP16 (11-bit significands; the cache's values carry 4).
constexpr int kF8Warps = 4;
constexpr int kF8Stages = 3;
template <int D>
struct F8AttnSmem {
  static constexpr int kPitch = D + 16;              // bytes per key row (16-byte aligned for cp.async)
  static constexpr int kStage = 2 * 16 * kPitch;     // one step: 16 key rows, then 16 value rows
  static constexpr int kWarp = kF8Stages * kStage;   // a warp's ring
  static constexpr int kRing = kF8Warps * kWarp;
  // After the loop the rings hold each warp's (max, sum, output) per head, then the block's (max, sum).
  static constexpr int kCombine = 4 * (kF8Warps * kTcHeads * (2 + D) + 2 * kTcHeads);
  static constexpr int kBytes = kRing > kCombine ? kRing : kCombine;
};
__device__ __forceinline__ uint32_t f16x2_bits(float a, float b) {
  const __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&h);
}

template <int D>
__global__ void __launch_bounds__(kF8Warps * 32) attn_f8_k(const float* q, const uint8_t* kc, const uint8_t* vc,
                                                          const int32_t* row_slot, const int32_t* row_pos, int NH,
                                                          int NKV, int64_t max_ctx, int chunk, int splits, float scale,
                                                          float* part_o, float* part_ml, int* counters,
                                                          uint16_t* out) {
  griddep_launch_dependents();  // the next kernel (a projection) may start fetching its weights
  using S = F8AttnSmem<D>;
  constexpr int KT = D / 16;  // k-steps of the scores; 16-dim tiles of the output
  static_assert(D % 16 == 0 && D <= 128, "16 to 128 dims per head, in steps of 16");
  const int s = blockIdx.x, kh = blockIdx.y;
  const int64_t r = blockIdx.z;
  const int G = NH / NKV;
  const int64_t slot = row_slot ? row_slot[r] : r;
  const int64_t len = int64_t(row_pos[r]) + 1;
  const int64_t j0 = int64_t(s) * chunk;
  if (j0 >= len) return;  // beyond this row's keys: not counted by the combine
  const int64_t j1 = len < j0 + chunk ? len : j0 + chunk;
  const int ns = static_cast<int>(min(int64_t(splits), (len + chunk - 1) / chunk));
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;

  extern __shared__ __align__(16) uint8_t f8_smem[];
  uint8_t* const ring = f8_smem + warp * S::kWarp;
  const size_t head = (size_t(slot) * NKV + kh) * size_t(max_ctx) * D;
  // The block's 16-key steps go to the warps in turn: warp w takes steps w, w + 4, ...
  const int steps = static_cast<int>((j1 - j0 + 15) / 16);
  const int mine = steps > warp ? (steps - warp + kF8Warps - 1) / kF8Warps : 0;
  auto step_keys = [&](int i, int64_t& t0) {
    t0 = j0 + 16 * int64_t(warp + kF8Warps * i);
    return static_cast<int>(j1 - t0 < 16 ? j1 - t0 : 16);
  };
  auto load = [&](int i) {  // this warp's step i into stage i % kF8Stages; rows past the keys zero-filled
    int64_t t0;
    const int n = step_keys(i, t0);
    uint8_t* st = ring + (i % kF8Stages) * S::kStage;
    constexpr int C = D / 16;
#pragma unroll
    for (int e = lane; e < 16 * C; e += 32) {
      const int key = e / C, c = e % C;
      const bool ok = key < n;
      const size_t off = head + size_t(t0 + (ok ? key : 0)) * D + size_t(c) * 16;
      cp16(smem_addr(st + key * S::kPitch + c * 16), kc + off, ok);
      cp16(smem_addr(st + (16 + key) * S::kPitch + c * 16), vc + off, ok);
    }
  };
#pragma unroll
  for (int i = 0; i < kF8Stages - 1; ++i) {
    if (i < mine) load(i);
    cp_commit();  // empty groups too: the wait below always counts kF8Stages - 1 groups past step i
  }

  // Queries (mma B: k = dims as above, n = head gq), scaled, FP16; heads past G are zero.
  uint32_t qf[KT][2];
  {
    const bool real = gq < G;
    const float* qr = q + ((r * NH + int64_t(kh) * G + (real ? gq : 0)) * D) + f8attn::dim_byte(tq);
#pragma unroll
    for (int kt = 0; kt < KT; ++kt) {
      const float4 v = real ? *reinterpret_cast<const float4*>(qr + 16 * kt) : make_float4(0.f, 0.f, 0.f, 0.f);
      qf[kt][0] = f16x2_bits(v.x * scale, v.y * scale);
      qf[kt][1] = f16x2_bits(v.z * scale, v.w * scale);
    }
  }
  const int kr0 = f8attn::key_row(gq), kr1 = f8attn::key_row(gq + 8);  // key rows of score rows gq and gq + 8
  // Value rows of k positions 2tq, 2tq + 1, 2tq + 8, 2tq + 9, as byte offsets.
  int vrow[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) vrow[j] = (16 + f8attn::key_row(f8attn::value_pos(tq, j))) * S::kPitch;

  float ot[KT][4];  // O^T: dims 16mt + gq (+ 8) x heads 2tq, 2tq + 1
#pragma unroll
  for (int mt = 0; mt < KT; ++mt) ot[mt][0] = ot[mt][1] = ot[mt][2] = ot[mt][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;  // heads 2tq, 2tq + 1 (l: this thread's keys)

  for (int i = 0; i < mine; ++i) {
    if (i + kF8Stages - 1 < mine) load(i + kF8Stages - 1);
    cp_commit();
    cp_wait<kF8Stages - 1>();
    __syncwarp();  // every lane's copies of step i have landed
    const uint8_t* st = ring + (i % kF8Stages) * S::kStage;
    int64_t t0;
    const int n = step_keys(i, t0);

    float sc[4] = {0.f, 0.f, 0.f, 0.f};  // key rows kr0 (heads 2tq, 2tq + 1), kr1 (the same heads)
#pragma unroll
    for (int kt = 0; kt < KT; ++kt) {
      const uint32_t w0 = *reinterpret_cast<const uint32_t*>(st + kr0 * S::kPitch + 16 * kt + f8attn::dim_byte(tq));
      const uint32_t w1 = *reinterpret_cast<const uint32_t*>(st + kr1 * S::kPitch + 16 * kt + f8attn::dim_byte(tq));
      const uint32_t a[4] = {e4m3x2_f16x2(w0), e4m3x2_f16x2(w1), e4m3x2_f16x2(w0 >> 16), e4m3x2_f16x2(w1 >> 16)};
      mma_f16(sc, a, qf[kt][0], qf[kt][1]);
    }
    if (kr0 >= n) sc[0] = sc[1] = -INFINITY;
    if (kr1 >= n) sc[2] = sc[3] = -INFINITY;
    // Online softmax over the step's 16 keys (the lanes of a column: xor 4, 8, 16); every step has
    // a key, so the new maxima are finite and exp(-inf) gives the first step's zero rescale.
    float mx0 = fmaxf(sc[0], sc[2]), mx1 = fmaxf(sc[1], sc[3]);
#pragma unroll
    for (int o = 4; o < 32; o <<= 1) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, o));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, o));
    }
    const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
    const float a0 = __expf(m0 - n0), a1 = __expf(m1 - n1);
    m0 = n0;
    m1 = n1;
    const float p0 = __expf(sc[0] - n0), p1 = __expf(sc[1] - n1), p2 = __expf(sc[2] - n0), p3 = __expf(sc[3] - n1);
    l0 = l0 * a0 + p0 + p2;
    l1 = l1 * a1 + p1 + p3;
    // P^T as mma B (k = positions 2tq, 2tq + 1 | 2tq + 8, 2tq + 9; n = head gq).
    const uint32_t b0 = movmatrix_trans(f16x2_bits(p0, p1)), b1 = movmatrix_trans(f16x2_bits(p2, p3));
#pragma unroll
    for (int mt = 0; mt < KT; ++mt) {
      ot[mt][0] *= a0;
      ot[mt][1] *= a1;
      ot[mt][2] *= a0;
      ot[mt][3] *= a1;
      // V^T as mma A: dim 16mt + gq (and + 8) at the four positions, one byte per key row.
      const uint8_t* c0 = st + 16 * mt + gq;
      const uint32_t lo = uint32_t(c0[vrow[0]]) | uint32_t(c0[vrow[1]]) << 8 | uint32_t(c0[vrow[2]]) << 16 |
                          uint32_t(c0[vrow[3]]) << 24;
      const uint32_t hi = uint32_t(c0[vrow[0] + 8]) | uint32_t(c0[vrow[1] + 8]) << 8 |
                          uint32_t(c0[vrow[2] + 8]) << 16 | uint32_t(c0[vrow[3] + 8]) << 24;
      const uint32_t a[4] = {e4m3x2_f16x2(lo), e4m3x2_f16x2(hi), e4m3x2_f16x2(lo >> 16), e4m3x2_f16x2(hi >> 16)};
      mma_f16(ot[mt], a, b0, b1);
    }
    __syncwarp();  // every lane is done with stage i before the next step's load reuses it
  }
  cp_wait<0>();
#pragma unroll
  for (int o = 4; o < 32; o <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, o);
    l1 += __shfl_xor_sync(0xffffffffu, l1, o);
  }

  // The warps' results -> the block's, through shared memory (over the rings: every warp first
  // leaves its loop). A warp with no step has max -inf and weighs nothing.
  __syncthreads();
  float* cm = reinterpret_cast<float*>(f8_smem);  // [warp][8] max
  float* cl = cm + kF8Warps * kTcHeads;           // [warp][8] sum
  float* co = cl + kF8Warps * kTcHeads;           // [warp][8][D] output
  float* mb = co + kF8Warps * kTcHeads * D;       // [8] the block's max
  float* lb = mb + kTcHeads;                      // [8] and sum
  const int w8 = warp * kTcHeads;
  if (gq == 0) {
    cm[w8 + 2 * tq] = m0;
    cm[w8 + 2 * tq + 1] = m1;
    cl[w8 + 2 * tq] = l0;
    cl[w8 + 2 * tq + 1] = l1;
  }
#pragma unroll
  for (int mt = 0; mt < KT; ++mt)
#pragma unroll
    for (int h = 0; h < 4; ++h) co[(w8 + 2 * tq + (h & 1)) * D + 16 * mt + gq + 8 * (h >> 1)] = ot[mt][h];
  __syncthreads();
  constexpr int C8 = D / 8;
  const int64_t q0 = r * NH + int64_t(kh) * G;  // first query head of this block, over all rows
  for (int task = tid; task < G * C8; task += kF8Warps * 32) {
    const int g = task / C8, c = task % C8;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kF8Warps; ++w) M = fmaxf(M, cm[w * kTcHeads + g]);
    float L = 0.f, acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
#pragma unroll
    for (int w = 0; w < kF8Warps; ++w) {
      const float e = __expf(cm[w * kTcHeads + g] - M);
      L += e * cl[w * kTcHeads + g];
      const float* src = co + (w * kTcHeads + g) * D + c * 8;
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[k] += e * src[k];
    }
    if (ns == 1) {
      uint16_t* dst = out + (q0 + g) * D + c * 8;
#pragma unroll
      for (int k = 0; k < 8; ++k) dst[k] = stb(acc[k] / L);
    } else {
      float* dst = part_o + ((q0 + g) * splits + s) * D + c * 8;
#pragma unroll
      for (int k = 0; k < 8; ++k) dst[k] = acc[k];
      if (c == 0) {
        mb[g] = M;
        lb[g] = L;
      }
    }
  }
  if (ns == 1) return;
  __syncthreads();  // mb, lb
  combine_splits<D>(G, ns, splits, s, q0, r * NKV + kh, mb, lb, part_o, part_ml, counters, out);
}

__global__ void silu_mul_k(const uint16_t* gate, int64_t ldg, const uint16_t* up, int64_t ldu, int64_t rows,
                           int64_t I, uint16_t* act) {
  griddep_launch_dependents();  // the next kernel (a projection) may start fetching its weights
  const size_t n = size_t(rows) * I;
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x) {
    const int64_t r = int64_t(e / I), i = int64_t(e % I);
    const float g = ldb(gate + r * ldg + i), u = ldb(up + r * ldu + i);
    act[e] = stb(g / (1.f + __expf(-g)) * u);
  }
}

// The same for I, ldg and ldu multiples of 8: 8 elements per thread (16-byte loads and stores),
// grid (chunks of the row, rows), so no 64-bit division per element.
__global__ void silu_mul_vec_k(const uint16_t* gate, int64_t ldg, const uint16_t* up, int64_t ldu, int64_t I,
                               uint16_t* act) {
  griddep_launch_dependents();  // the next kernel (a projection) may start fetching its weights
  const int64_t r = blockIdx.y;
  const int64_t i = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * 8;
  if (i >= I) return;
  float g[8], u[8];
  unpack8(*reinterpret_cast<const uint4*>(gate + r * ldg + i), g);
  unpack8(*reinterpret_cast<const uint4*>(up + r * ldu + i), u);
  uint4 o;
  uint32_t* ow = reinterpret_cast<uint32_t*>(&o);
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const float a = g[2 * e] / (1.f + __expf(-g[2 * e])) * u[2 * e];
    const float b = g[2 * e + 1] / (1.f + __expf(-g[2 * e + 1])) * u[2 * e + 1];
    ow[e] = uint32_t(stb(a)) | (uint32_t(stb(b)) << 16);
  }
  *reinterpret_cast<uint4*>(act + r * I + i) = o;
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
  const int64_t n4 = H / 4;
  auto aligned = [](const void* p, uintptr_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; };
  if (H % 4 == 0 && n4 <= 4 * 1024 && aligned(h, 16) && aligned(bias, 16) && aligned(w, 16) && aligned(delta, 8) &&
      aligned(out, 8)) {  // registers hold the row: up to 4 float4s per thread
    const int t4 = static_cast<int>(std::min<int64_t>(1024, (n4 + 31) / 32 * 32));
    const int64_t v = (n4 + t4 - 1) / t4;
    auto launch = [&](auto kernel) {
      kernel<<<static_cast<unsigned>(rows), t4, 0, s>>>(h, delta, bias, w, eps, out, H);
    };
    if (v == 1) launch(residual_rmsnorm_vec_k<1>);
    else if (v == 2) launch(residual_rmsnorm_vec_k<2>);
    else launch(residual_rmsnorm_vec_k<4>);
    SPENSE_CUDA_CHECK_LAUNCH();
    return;
  }
  residual_rmsnorm_k<<<static_cast<unsigned>(rows), threads, 0, s>>>(h, delta, bias, w, eps, out, H);
  SPENSE_CUDA_CHECK_LAUNCH();
}

void qkv_rope_cache(QkvView in, const float* bias, const float* q_norm, const float* k_norm, float eps,
                    const float* inv_freq, const int32_t* row_slot, const int32_t* row_pos, int64_t rows,
                    int64_t NH, int64_t NKV, int64_t D, float* q_out, void* k_cache, void* v_cache,
                    int64_t max_ctx, cudaStream_t s, KvCache kv) {
  if (rows <= 0) return;
  // One warp per head job, 4 per block, so that a single decode row still spreads over many SMs.
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>((NH + 2 * NKV + 3) / 4));
  (kv == KvCache::E4M3 ? qkv_rope_cache_k<true> : qkv_rope_cache_k<false>)<<<grid, 128, 0, s>>>(
      in, bias, q_norm, k_norm, eps, inv_freq, row_slot, row_pos, int(NH), int(NKV), int(D), q_out, k_cache, v_cache,
      max_ctx);
  SPENSE_CUDA_CHECK_LAUNCH();
}

namespace {
// Keys per split: the caller's chunk, grown (in whole tiles) so that a row has at most
// kAttnMaxSplits splits, since the last block of each (row, kv head) combines them serially.
int64_t attn_chunk(int64_t max_ctx, int64_t chunk) {
  const int64_t need = (max_ctx + kAttnMaxSplits - 1) / kAttnMaxSplits;
  const int64_t c = std::max(chunk, need);
  return (c + kAttnTile - 1) / kAttnTile * kAttnTile;
}
}  // namespace

bool attention_uses_tensor_cores(int64_t G, int64_t D) { return G >= 1 && G <= kTcHeads && D % 16 == 0; }

bool attention_uses_f8_warp_kernel(int64_t G, int64_t D) {
  // SPENSE_ATTN_F8_LEGACY=1 sends E4M3 caches to attn_k instead, to time the two in one process.
  static const bool legacy = [] {
    const char* v = std::getenv("SPENSE_ATTN_F8_LEGACY");
    return v && *v && *v != '0';
  }();
  return !legacy && G >= 1 && G <= kTcHeads && D % 16 == 0 && D <= 128;
}

size_t attention_workspace_floats(int64_t rows, int64_t NH, int64_t D, int64_t max_ctx, int64_t chunk) {
  const int64_t splits = (max_ctx + attn_chunk(max_ctx, chunk) - 1) / attn_chunk(max_ctx, chunk);
  return static_cast<size_t>(rows * NH * splits * (D + 2));
}

namespace {
// PIPE: splits of more than one tile (pipelined); one tile per split runs the plain kernel.
template <int D, bool TC, bool F8, bool PIPE>
void launch_attn_pipe(const float* q, const void* kc, const void* vc, const int32_t* row_slot,
                      const int32_t* row_pos, int64_t rows, int NH, int NKV, int64_t max_ctx, int chunk, int splits,
                      float* part_o, float* part_ml, int* counters, bf16_t* out, const DecodeRope& rope, cudaStream_t s) {
  const size_t smem = AttnSmem<D, TC>::bytes(NH / NKV, PIPE, F8);
  static size_t allowed = 48 * 1024;  // beyond 48 KB the dynamic shared-memory limit must be raised (per kernel)
  if (smem > allowed) {
    SPENSE_CUDA_CHECK(cudaFuncSetAttribute(attn_k<D, TC, F8, PIPE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
    allowed = smem;
  }
  dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(NKV), static_cast<unsigned>(rows));
  attn_k<D, TC, F8, PIPE><<<grid, kAttnThreads, smem, s>>>(q, kc, vc, row_slot, row_pos, NH, NKV, max_ctx, chunk,
                                                           splits, 1.f / sqrtf(float(D)), part_o, part_ml, counters,
                                                           out, rope);
  SPENSE_CUDA_CHECK_LAUNCH();
}
template <int D, bool TC, bool F8>
void launch_attn_as(const float* q, const void* kc, const void* vc, const int32_t* row_slot,
                    const int32_t* row_pos, int64_t rows, int NH, int NKV, int64_t max_ctx, int chunk, int splits,
                    float* part_o, float* part_ml, int* counters, bf16_t* out, const DecodeRope& rope, cudaStream_t s) {
  // The pipelined kernel's second buffer must fit the device's shared memory per block (at
  // D = 256 it needs about 150 KB: Hopper and A100 have it, sm_86 / sm_89 with 99 KB do not).
  static const int optin = [] {
    int dev = 0, v = 0;
    SPENSE_CUDA_CHECK(cudaGetDevice(&dev));
    SPENSE_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    return v;
  }();
  const bool pipe = chunk > kAttnTile && AttnSmem<D, TC>::bytes(NH / NKV, true, F8) <= size_t(optin);
  auto launch = pipe ? launch_attn_pipe<D, TC, F8, true> : launch_attn_pipe<D, TC, F8, false>;
  launch(q, kc, vc, row_slot, row_pos, rows, NH, NKV, max_ctx, chunk, splits, part_o, part_ml, counters, out, rope, s);
}

template <int D>
void launch_attn_f8(const float* q, const void* kc, const void* vc, const int32_t* row_slot, const int32_t* row_pos,
                    int64_t rows, int NH, int NKV, int64_t max_ctx, int chunk, int splits, float* part_o,
                    float* part_ml, int* counters, bf16_t* out, cudaStream_t s) {
  constexpr size_t smem = F8AttnSmem<D>::kBytes;
  static bool raised = false;  // beyond 48 KB the dynamic shared-memory limit must be raised (per kernel)
  if (smem > 48 * 1024 && !raised) {
    SPENSE_CUDA_CHECK(
        cudaFuncSetAttribute(attn_f8_k<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    raised = true;
  }
  dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(NKV), static_cast<unsigned>(rows));
  attn_f8_k<D><<<grid, kF8Warps * 32, smem, s>>>(q, static_cast<const uint8_t*>(kc), static_cast<const uint8_t*>(vc),
                                                  row_slot, row_pos, NH, NKV, max_ctx, chunk, splits,
                                                  1.f / sqrtf(float(D)), part_o, part_ml, counters, out);
  SPENSE_CUDA_CHECK_LAUNCH();
}

// E4M3 caches (but the fused decode RoPE) on attn_f8_k where it takes the shape; else the
// tensor-core kernel for groups of up to 8 query heads per KV head, else the CUDA-core one.
template <int D>
void launch_attn(const float* q, const void* kc, const void* vc, const int32_t* row_slot, const int32_t* row_pos,
                 int64_t rows, int NH, int NKV, int64_t max_ctx, int chunk, int splits, float* part_o,
                 float* part_ml, int* counters, bf16_t* out, const DecodeRope& rope, KvCache kv, cudaStream_t s) {
  if constexpr (D % 16 == 0 && D <= 128) {
    if (kv == KvCache::E4M3 && !rope.k_cache && attention_uses_f8_warp_kernel(NH / NKV, D)) {
      launch_attn_f8<D>(q, kc, vc, row_slot, row_pos, rows, NH, NKV, max_ctx, chunk, splits, part_o, part_ml,
                        counters, out, s);
      return;
    }
  }
  const bool tc = attention_uses_tensor_cores(NH / NKV, D), f8 = kv == KvCache::E4M3;
  auto launch = (tc ? (f8 ? launch_attn_as<D, true, true> : launch_attn_as<D, true, false>)
                    : (f8 ? launch_attn_as<D, false, true> : launch_attn_as<D, false, false>));
  launch(q, kc, vc, row_slot, row_pos, rows, NH, NKV, max_ctx, chunk, splits, part_o, part_ml, counters, out, rope, s);
}
}  // namespace

void attention(const float* q, const void* k_cache, const void* v_cache, const int32_t* row_slot,
               const int32_t* row_pos, int64_t rows, int64_t NH, int64_t NKV, int64_t D, int64_t max_ctx,
               int64_t chunk, float* workspace, int* counters, bf16_t* out, cudaStream_t s,
               const DecodeRope* rope_in, KvCache kv) {
  if (rows <= 0) return;
  const DecodeRope rope = rope_in ? *rope_in : DecodeRope{};
  if (rope.k_cache && (row_slot || rope.k_cache != k_cache || rope.v_cache != v_cache || !rope.inv_freq ||
                       !rope.in.q || !rope.in.k || !rope.in.v))
    throw Error("attention: the fused decode RoPE needs row r = slot r (no row_slot), q/k/v, the caches attention "
                "reads and the RoPE frequencies", 1);
  if (NKV <= 0 || NH % NKV != 0 || NH / NKV > kMaxGroup)
    throw Error("attention: " + std::to_string(NH) + " query heads over " + std::to_string(NKV) +
                " KV heads is not supported (at most " + std::to_string(kMaxGroup) + " query heads per KV head)");
  if (chunk <= 0) throw Error("attention: the KV chunk must be positive", 1);
  const int64_t ch = attn_chunk(max_ctx, chunk);
  const int splits = static_cast<int>((max_ctx + ch - 1) / ch);
  float* part_o = workspace;
  float* part_ml = workspace + size_t(rows) * NH * splits * D;
  const int nh = int(NH), nkv = int(NKV), c = int(ch);
  switch (D) {
    case 16: launch_attn<16>(q, k_cache, v_cache, row_slot, row_pos, rows, nh, nkv, max_ctx, c, splits, part_o, part_ml, counters, out, rope, kv, s); break;
    case 32: launch_attn<32>(q, k_cache, v_cache, row_slot, row_pos, rows, nh, nkv, max_ctx, c, splits, part_o, part_ml, counters, out, rope, kv, s); break;
    case 64: launch_attn<64>(q, k_cache, v_cache, row_slot, row_pos, rows, nh, nkv, max_ctx, c, splits, part_o, part_ml, counters, out, rope, kv, s); break;
    case 128: launch_attn<128>(q, k_cache, v_cache, row_slot, row_pos, rows, nh, nkv, max_ctx, c, splits, part_o, part_ml, counters, out, rope, kv, s); break;
    case 256: launch_attn<256>(q, k_cache, v_cache, row_slot, row_pos, rows, nh, nkv, max_ctx, c, splits, part_o, part_ml, counters, out, rope, kv, s); break;
    default: throw Error("attention: head_dim " + std::to_string(D) + " is not supported (16, 32, 64, 128 or 256)");
  }
}

void silu_mul(const bf16_t* gate, int64_t ldg, const bf16_t* up, int64_t ldu, int64_t rows, int64_t I, bf16_t* act,
              cudaStream_t s) {
  if (rows <= 0) return;
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (I % 8 == 0 && ldg % 8 == 0 && ldu % 8 == 0 && aligned(gate) && aligned(up) && aligned(act)) {
    const int64_t per_row = I / 8;  // threads per row
    const int threads = static_cast<int>(std::min<int64_t>(256, (per_row + 31) / 32 * 32));
    const dim3 grid(static_cast<unsigned>((per_row + threads - 1) / threads), static_cast<unsigned>(rows));
    silu_mul_vec_k<<<grid, threads, 0, s>>>(gate, ldg, up, ldu, I, act);
    SPENSE_CUDA_CHECK_LAUNCH();
    return;
  }
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
