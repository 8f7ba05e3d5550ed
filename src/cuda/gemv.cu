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

void gemv(const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  if (m <= 0) return;
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
