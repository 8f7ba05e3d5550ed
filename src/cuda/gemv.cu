// Small-M dense / 2:4 / Spense-out kernel (gemv.h). Why our own: at decode sizes the work is
// streaming the weights once, and cuSPARSELt's BF16 2:4 kernels stream their compressed bytes
// at less than half of the copy bandwidth (docs/perf.md), so they lose to dense. Here each warp
// owns kRowsPerWarp stored rows; lane l walks the 16-column chunks l, l+32, ... of those rows
// with 16-byte loads (coalesced: a warp reads 512 contiguous bytes of values per row per step),
// picks the two kept activations of each group of 4 with one byte permute from the 16
// activations of the chunk (bf16 pairs in registers, shared by all rows of the warp), and
// accumulates in fp32; a warp reduction and the row's scale finish the dot products.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "cuda/gemv.h"
#include "spense/cuda/check.h"

namespace spense::cuda::gemv {
namespace {

constexpr int kWarps = 8;  // warps per block

__device__ __forceinline__ float lo_bf16(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float hi_bf16(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// Two E4M3 bytes (low byte = first) -> two floats.
__device__ __forceinline__ float2 e4m3x2(uint16_t v) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(v), __NV_E4M3);
  return __half22float2(*reinterpret_cast<const __half2*>(&h));
}

__device__ __forceinline__ uint4 ldg16(const void* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }

// One span = the columns whose weights are 16 bytes of one row: 2:4 BF16 16 columns (8 kept
// values), 2:4 E4M3 32 columns (16 kept values), dense BF16 8, dense E4M3 16. Each lane loads
// one 16-byte weight vector per row per span, so a warp's loads are 512 contiguous bytes.
template <bool FP8, bool SPARSE>
struct Span {
  static constexpr int kCols = SPARSE ? (FP8 ? 32 : 16) : (FP8 ? 16 : 8);
  static constexpr int kXWords = kCols / 2;  // bf16 pairs of activations per span
};

// The span's activations of token row m (L1/L2 hits: x is small and shared by all warps).
template <int W>
__device__ __forceinline__ void load_x_span(const uint16_t* xr, uint32_t (&xw)[W]) {
#pragma unroll
  for (int v = 0; v < W / 4; ++v) {
    const uint4 a = ldg16(xr + 8 * v);
    xw[4 * v] = a.x;
    xw[4 * v + 1] = a.y;
    xw[4 * v + 2] = a.z;
    xw[4 * v + 3] = a.w;
  }
}

// acc += span(row) . x for one token row.
template <bool FP8, bool SPARSE>
__device__ __forceinline__ float span_dot(uint4 wv, uint32_t meta, const uint32_t (&xw)[Span<FP8, SPARSE>::kXWords],
                                          float acc) {
  const uint32_t ww[4] = {wv.x, wv.y, wv.z, wv.w};
  if constexpr (SPARSE) {
    constexpr int G = Span<FP8, SPARSE>::kCols / 4;  // groups of 4 columns
#pragma unroll
    for (int q = 0; q < G; ++q) {
      float w0, w1;
      if constexpr (FP8) {
        const float2 f = e4m3x2(static_cast<uint16_t>(ww[q / 2] >> (16 * (q % 2))));
        w0 = f.x;
        w1 = f.y;
      } else {
        w0 = lo_bf16(ww[q]);
        w1 = hi_bf16(ww[q]);
      }
      const uint32_t nib = (meta >> (4 * q)) & 0xFu;
      // Bytes 2p, 2p+1 of the 8-byte pair (xw[2q], xw[2q+1]) hold activation 4q + p; the
      // permute selector (2p0 | 2p0+1 << 4 | 2p1 << 8 | 2p1+1 << 12) in two multiply-adds.
      const uint32_t sel = 0x1010u + (nib & 3u) * 0x22u + (nib >> 2) * 0x2200u;
      const uint32_t xp = __byte_perm(xw[2 * q], xw[2 * q + 1], sel);
      acc = fmaf(w0, lo_bf16(xp), acc);
      acc = fmaf(w1, hi_bf16(xp), acc);
    }
  } else if constexpr (FP8) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float2 f = e4m3x2(static_cast<uint16_t>(ww[i / 2] >> (16 * (i % 2))));
      acc = fmaf(f.x, lo_bf16(xw[i]), acc);
      acc = fmaf(f.y, hi_bf16(xw[i]), acc);
    }
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      acc = fmaf(lo_bf16(ww[i]), lo_bf16(xw[i]), acc);
      acc = fmaf(hi_bf16(ww[i]), hi_bf16(xw[i]), acc);
    }
  }
  return acc;
}

// The rows [s0, s0 + R) of one kind: U spans per lane in flight (their weights and metadata
// loaded before any arithmetic, so each lane keeps U x R 16-byte loads outstanding).
// Spans part*32 + lane + j * 32 * wk of the row: the wk warps of a row group split K.
template <int M, bool FP8, bool SPARSE, int U>
__device__ __forceinline__ void rows_dot(const uint8_t* wrow, size_t row_bytes, const uint16_t* meta, int64_t k,
                                         const uint16_t* xb, int64_t ldx, int mrows, int lane, int part, int wk,
                                         float (&acc)[kRowsPerWarp][M]) {
  constexpr int R = kRowsPerWarp, C = Span<FP8, SPARSE>::kCols, XW = Span<FP8, SPARSE>::kXWords;
  const int64_t spans = k / C;
  const int64_t meta_row = k / 16;  // u16 per row
  const int64_t step = int64_t(32) * wk;
  for (int64_t c0 = part * 32 + lane; c0 < spans; c0 += step * U) {
    uint4 wv[U][R];
    uint32_t mt[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = c0 + step * u;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (c < spans) {
          wv[u][r] = ldg16(wrow + r * row_bytes + size_t(c) * 16);
          if constexpr (SPARSE) {
            if constexpr (FP8) mt[u][r] = __ldg(reinterpret_cast<const uint32_t*>(meta + r * meta_row) + c);
            else mt[u][r] = __ldg(meta + r * meta_row + c);
          } else {
            mt[u][r] = 0;
          }
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = c0 + step * u;
      if (c >= spans) break;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        if (m >= mrows) break;
        uint32_t xw[XW];
        load_x_span<XW>(xb + m * ldx + c * C, xw);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r][m] = span_dot<FP8, SPARSE>(wv[u][r], mt[u][r], xw, acc[r][m]);
      }
    }
  }
}

// Block: 8 / wk row groups of kRowsPerWarp rows; the wk warps of a group split the row's K
// range, and their partial sums meet in shared memory. Small-N layers take a large wk so that
// they still launch thousands of short blocks (no tail of a few long ones).
template <int M, bool FP8, int U>
__global__ void __launch_bounds__(kWarps * 32) gemv_k(Weights w, const uint16_t* x, int64_t ldx, int64_t m_total,
                                                      uint16_t* y, int64_t ldy, int wk) {
  constexpr int R = kRowsPerWarp;
  __shared__ float red[kWarps][R][M];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int groups = kWarps / wk, g = warp / wk, part = warp % wk;
  const int64_t n = w.ns + w.nd;
  const int64_t s0 = (int64_t(blockIdx.x) * groups + g) * R;
  const int64_t m0 = int64_t(blockIdx.y) * M;
  const int mrows = static_cast<int>(m_total - m0 < M ? m_total - m0 : M);
  const uint16_t* xb = x + m0 * ldx;
  const size_t eb = FP8 ? 1 : 2;
  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.f;
  if (s0 < w.ns) {  // 2:4 rows (ns is a multiple of R)
    const size_t rb = size_t(w.k / 2) * eb;
    rows_dot<M, FP8, true, U>(static_cast<const uint8_t*>(w.sparse_values) + size_t(s0) * rb, rb,
                              w.sparse_meta + size_t(s0) * (w.k / 16), w.k, xb, ldx, mrows, lane, part, wk, acc);
  } else if (s0 < n) {
    const size_t rb = size_t(w.dense_ld) * eb;
    rows_dot<M, FP8, false, U>(static_cast<const uint8_t*>(w.dense) + size_t(s0 - w.ns) * rb, rb, nullptr, w.k, xb,
                               ldx, mrows, lane, part, wk, acc);
  }
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float v = acc[r][m];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) red[warp][r][m] = v;
    }
  __syncthreads();
  for (int t = threadIdx.x; t < groups * R * M; t += blockDim.x) {
    const int gg = t / (R * M), r = (t / M) % R, m = t % M;
    const int64_t s = (int64_t(blockIdx.x) * groups + gg) * R + r;
    if (s >= n || m >= mrows) continue;
    float v = 0.f;
    for (int p = 0; p < wk; ++p) v += red[gg * wk + p][r][m];
    v *= w.scales ? w.scales[s] : 1.f;
    const int64_t col = w.row_map ? w.row_map[s] : s;
    const __nv_bfloat16 b = __float2bfloat16(v);
    y[(m0 + m) * ldy + col] = *reinterpret_cast<const uint16_t*>(&b);
  }
}

template <int M>
void launch_m(const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  const int64_t row_groups = (w.ns + w.nd + kRowsPerWarp - 1) / kRowsPerWarp;
  // The fewest warps per row (a power of two up to 8) that still give >= 2048 blocks, as long
  // as every lane keeps >= 4 spans of the row (short rows split further only idle lanes).
  const int64_t spans = w.ns > 0 ? w.k / (w.fp8 ? 32 : 16) : w.k / (w.fp8 ? 16 : 8);
  int wk = 1;
  while (wk < kWarps && row_groups * wk / kWarps < 2048 && spans / (32 * 2 * wk) >= 4) wk *= 2;
  const int64_t groups = kWarps / wk;
  dim3 grid(static_cast<unsigned>((row_groups + groups - 1) / groups), static_cast<unsigned>((m + M - 1) / M));
  // Spans in flight per lane: 4 at M = 1; 1 for larger M (measured on an H200, docs/perf.md:
  // at M = 2-4 the unrolled variants hold more registers and ran 20-35% slower).
  constexpr int U = M == 1 ? 4 : 1;
  if (w.fp8)
    gemv_k<M, true, U><<<grid, kWarps * 32, 0, s>>>(w, static_cast<const uint16_t*>(x), ldx, m,
                                                     static_cast<uint16_t*>(y), ldy, wk);
  else
    gemv_k<M, false, U><<<grid, kWarps * 32, 0, s>>>(w, static_cast<const uint16_t*>(x), ldx, m,
                                                      static_cast<uint16_t*>(y), ldy, wk);
  SPENSE_CUDA_CHECK_LAUNCH();
}

// ---- Tensor-core path (BF16 weights, M >= kTcMinM) ---------------------------------------
// The same stored layout as above, read by mma.sp (2:4 rows) and mma (dense rows) with the
// tokens as the N = 8 side of each MMA: a block of 8 warps owns one 16-row tile (all 2:4 or
// all dense, since ns and nd are multiples of 16) and its warps take the 32-column k-steps in
// turn (warp w: steps w, w + 8, ...). Every lane loads the metadata of its pair position
// (t & 1), so both thread pairs of a quad hold the same values and the mma.sp sparsity
// selector can stay 0 (pair 0 supplies). Fragments (PTX ISA, mma.m16n8k16 / mma.sp.m16n8k32 for 16-bit types), with
// g = lane / 4, t = lane % 4:
//   A (16 x 32 uncompressed; 16 x 16 kept values): registers {row g, cols 2t..2t+1},
//     {row g+8, cols 2t..}, {row g, cols 2t+8..}, {row g+8, cols 2t+8..} of the kept values:
//     4-byte loads straight from the row-major compressed rows (the 4 lanes of a quad read
//     16 contiguous bytes of a row; the +8 half is the next 16 bytes, an L1 hit).
//   metadata: thread t of the supplying pair (t & 1 = p) holds, per row, the nibbles of
//     groups 4p..4p+3 (one u16 of the v1 meta layout): row g in bits 0-15, row g+8 in 16-31.
//   B (32 x 8, K x tokens): token g, k = 2t + {0,1} + 8i for register i.
//   C (16 x 8): {row g, tokens 2t, 2t+1}, {row g+8, tokens 2t, 2t+1}.
// Partial sums of the 8 warps meet in shared memory, as in gemv_k.
constexpr int kTcWarps = 8;

__device__ __forceinline__ uint32_t ldg32(const void* p) { return __ldg(reinterpret_cast<const unsigned int*>(p)); }

__device__ __forceinline__ void mma_sp_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[4], uint32_t e) {
  asm volatile(
      "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, {%0,%1,%2,%3}, %12, 0;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// The four B registers of one 32-column k-step for token row tok (zeros past the last token).
__device__ __forceinline__ void load_b(const uint16_t* x, int64_t ldx, int64_t tok, int64_t m_total, int64_t col,
                                       int t, uint32_t (&b)[4]) {
  if (tok < m_total) {
    const uint16_t* xr = x + tok * ldx + col + 2 * t;
#pragma unroll
    for (int i = 0; i < 4; ++i) b[i] = ldg32(xr + 8 * i);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) b[i] = 0u;
  }
}

// 2:4 tile: steps s = first, first + 8, ... of the rows at vals (row-major kept values,
// k bytes per row) and meta (k/16 u16 per row).
template <int NT>
__device__ __forceinline__ void tc_sparse(const uint8_t* vals, const uint16_t* meta, int64_t k, const uint16_t* x,
                                          int64_t ldx, int64_t m0, int64_t m_total, int first, int g, int t,
                                          float (&acc)[NT][4]) {
  constexpr int U = 2;  // steps whose A loads are in flight together
  const int64_t steps = k / 32, mrow = k / 16;
  const uint8_t* r0 = vals + size_t(g) * size_t(k);
  const uint8_t* r8 = vals + size_t(g + 8) * size_t(k);
  const uint16_t* e0 = meta + size_t(g) * size_t(mrow);
  const uint16_t* e8 = meta + size_t(g + 8) * size_t(mrow);
  const int p = t & 1;
  for (int64_t s0 = first; s0 < steps; s0 += kTcWarps * U) {
    uint32_t a[U][4], e[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t s = s0 + kTcWarps * u;
      if (s < steps) {
        const size_t off = size_t(s) * 32 + size_t(4 * t);  // bytes: 16 kept bf16 = 32 bytes per step
        a[u][0] = ldg32(r0 + off);
        a[u][1] = ldg32(r8 + off);
        a[u][2] = ldg32(r0 + off + 16);
        a[u][3] = ldg32(r8 + off + 16);
        e[u] = uint32_t(__ldg(e0 + 2 * s + p)) | (uint32_t(__ldg(e8 + 2 * s + p)) << 16);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t s = s0 + kTcWarps * u;
      if (s >= steps) break;
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        uint32_t b[4];
        load_b(x, ldx, m0 + 8 * j + g, m_total, s * 32, t, b);
        mma_sp_bf16(acc[j], a[u], b, e[u]);
      }
    }
  }
}

// Dense tile (rows at w, ld elements apart): each 32-column step is two m16n8k16 MMAs.
template <int NT>
__device__ __forceinline__ void tc_dense(const uint16_t* w, int64_t ld, int64_t k, const uint16_t* x, int64_t ldx,
                                         int64_t m0, int64_t m_total, int first, int g, int t, float (&acc)[NT][4]) {
  const int64_t steps = k / 32;
  const uint16_t* r0 = w + size_t(g) * size_t(ld) + 2 * t;
  const uint16_t* r8 = w + size_t(g + 8) * size_t(ld) + 2 * t;
  for (int64_t s = first; s < steps; s += kTcWarps) {
    uint32_t a[2][4];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t c = s * 32 + 16 * h;
      a[h][0] = ldg32(r0 + c);
      a[h][1] = ldg32(r8 + c);
      a[h][2] = ldg32(r0 + c + 8);
      a[h][3] = ldg32(r8 + c + 8);
    }
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      uint32_t b[4];
      load_b(x, ldx, m0 + 8 * j + g, m_total, s * 32, t, b);
      // B registers 0, 1 are k = 2t.. and 2t+8.. of the first 16 columns; 2, 3 of the second.
      mma_bf16(acc[j], a[0][0], a[0][1], a[0][2], a[0][3], b[0], b[1]);
      mma_bf16(acc[j], a[1][0], a[1][1], a[1][2], a[1][3], b[2], b[3]);
    }
  }
}

template <int NT>
__global__ void __launch_bounds__(kTcWarps * 32) gemv_tc_k(Weights w, const uint16_t* x, int64_t ldx, int64_t m_total,
                                                          uint16_t* y, int64_t ldy) {
  constexpr int TOK = 8 * NT;
  __shared__ float red[kTcWarps][16][TOK];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int64_t s0 = int64_t(blockIdx.x) * 16, n = w.ns + w.nd;
  const int64_t m0 = int64_t(blockIdx.y) * TOK;
  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  if (s0 < w.ns) {
    const uint8_t* vals = static_cast<const uint8_t*>(w.sparse_values) + size_t(s0) * size_t(w.k);
    const uint16_t* meta = w.sparse_meta + size_t(s0) * size_t(w.k / 16);
    tc_sparse<NT>(vals, meta, w.k, x, ldx, m0, m_total, warp, g, t, acc);
  } else {
    tc_dense<NT>(static_cast<const uint16_t*>(w.dense) + size_t(s0 - w.ns) * size_t(w.dense_ld), w.dense_ld, w.k, x,
                 ldx, m0, m_total, warp, g, t, acc);
  }
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    red[warp][g][8 * j + 2 * t] = acc[j][0];
    red[warp][g][8 * j + 2 * t + 1] = acc[j][1];
    red[warp][g + 8][8 * j + 2 * t] = acc[j][2];
    red[warp][g + 8][8 * j + 2 * t + 1] = acc[j][3];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < 16 * TOK; i += blockDim.x) {
    const int r = i / TOK, c = i % TOK;
    const int64_t srow = s0 + r, tok = m0 + c;
    if (srow >= n || tok >= m_total) continue;
    float v = 0.f;
#pragma unroll
    for (int p = 0; p < kTcWarps; ++p) v += red[p][r][c];
    const int64_t col = w.row_map ? w.row_map[srow] : srow;
    const __nv_bfloat16 b = __float2bfloat16(v);
    y[tok * ldy + col] = *reinterpret_cast<const uint16_t*>(&b);
  }
}

template <int NT>
void launch_tc(const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>((w.ns + w.nd + 15) / 16), static_cast<unsigned>((m + 8 * NT - 1) / (8 * NT)));
  gemv_tc_k<NT><<<grid, kTcWarps * 32, 0, s>>>(w, static_cast<const uint16_t*>(x), ldx, m, static_cast<uint16_t*>(y),
                                                ldy);
  SPENSE_CUDA_CHECK_LAUNCH();
}

__global__ void compress24_k(const uint8_t* W, bool fp8, int64_t k, const int32_t* src_rows, int64_t ns,
                             uint8_t* values, uint16_t* meta, unsigned long long* bad) {
  const int64_t chunks = k / 16;
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= ns * chunks) return;
  const int64_t i = t / chunks, c = t % chunks;
  const size_t eb = fp8 ? 1 : 2;
  const uint8_t* src = W + (size_t(src_rows[i]) * k + size_t(c) * 16) * eb;
  uint8_t* dst = values + (size_t(i) * (k / 2) + size_t(c) * 8) * eb;
  uint16_t m = 0;
  for (int q = 0; q < 4; ++q) {
    int pos[2] = {-1, -1}, nz = 0;
    uint16_t v[4];
    for (int e = 0; e < 4; ++e) {
      v[e] = fp8 ? src[4 * q + e] : reinterpret_cast<const uint16_t*>(src)[4 * q + e];
      const bool zero = fp8 ? (v[e] & 0x7f) == 0 : (v[e] & 0x7fff) == 0;
      if (!zero) {
        if (nz < 2) pos[nz] = e;
        ++nz;
      }
    }
    if (nz > 2) {
      atomicMin(bad, static_cast<unsigned long long>(i * (k / 4) + c * 4 + q));
      nz = 2;
    }
    // Fewer than 2 non-zeros: fill with the lowest unused positions (their values are zero).
    for (int e = 0; nz < 2 && e < 4; ++e)
      if (e != pos[0]) {
        if (pos[0] < 0) pos[0] = e;
        else pos[1] = e;
        ++nz;
      }
    if (pos[0] > pos[1]) {
      const int tmp = pos[0];
      pos[0] = pos[1];
      pos[1] = tmp;
    }
    m |= static_cast<uint16_t>((pos[0] | (pos[1] << 2)) << (4 * q));
    for (int j = 0; j < 2; ++j) {
      if (fp8) dst[2 * q + j] = static_cast<uint8_t>(v[pos[j]]);
      else reinterpret_cast<uint16_t*>(dst)[2 * q + j] = v[pos[j]];
    }
  }
  meta[size_t(i) * chunks + c] = m;
}

}  // namespace

bool tc_eligible(const Weights& w) {
  return w.tensor_cores && !w.fp8 && w.k % 32 == 0 && w.ns % 16 == 0 && w.nd % 16 == 0 && (w.nd == 0 || w.dense_ld % 2 == 0);
}

void gemv(const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  if (m <= 0) return;
  if (m >= kTcMinM && tc_eligible(w) && ldx % 2 == 0) {  // x read as bf16 pairs
    if (m <= 8) launch_tc<1>(w, x, ldx, m, y, ldy, s);
    else if (m <= 16) launch_tc<2>(w, x, ldx, m, y, ldy, s);
    else if (m <= 32) launch_tc<4>(w, x, ldx, m, y, ldy, s);
    else launch_tc<8>(w, x, ldx, m, y, ldy, s);
    return;
  }
  switch (m < kMaxM ? m : kMaxM) {
    case 1: launch_m<1>(w, x, ldx, m, y, ldy, s); break;
    case 2: launch_m<2>(w, x, ldx, m, y, ldy, s); break;
    case 3: launch_m<3>(w, x, ldx, m, y, ldy, s); break;
    case 4: launch_m<4>(w, x, ldx, m, y, ldy, s); break;
    case 5:
    case 6: launch_m<6>(w, x, ldx, m, y, ldy, s); break;
    default: launch_m<8>(w, x, ldx, m, y, ldy, s); break;
  }
}

void compress24(const void* W, bool fp8, int64_t k, const int32_t* src_rows, int64_t ns, void* values,
                uint16_t* meta, unsigned long long* bad, cudaStream_t s) {
  const int64_t work = ns * (k / 16);
  if (work <= 0) return;
  compress24_k<<<static_cast<unsigned>((work + 255) / 256), 256, 0, s>>>(
      static_cast<const uint8_t*>(W), fp8, k, src_rows, ns, static_cast<uint8_t*>(values), meta, bad);
  SPENSE_CUDA_CHECK_LAUNCH();
}

}  // namespace spense::cuda::gemv
