// Small-M dense / 2:4 / Spense-out kernel (gemv.h). Why our own: at decode sizes the work is
// streaming the weights once, and cuSPARSELt's BF16 2:4 kernels stream their compressed bytes
// at less than half of the copy bandwidth (docs/perf.md), so they lose to dense. Here each warp
// owns kRowsPerWarp stored rows; lane l walks the 16-column chunks l, l+32, ... of those rows
// with 16-byte loads (coalesced: a warp reads 512 contiguous bytes of values per row per step),
// picks the two kept activations of each group of 4 with one byte permute from the 16
// activations of the chunk (bf16 pairs in registers, shared by all rows of the warp), and
// accumulates in fp32; a warp reduction and the row's scale finish the dot products.
#include <cuda_bf16.h>

#include <algorithm>

#include "cuda/fp8.cuh"
#include "cuda/gemv.h"
#include "cuda/gemv_tc.cuh"  // the tensor-core shapes' shared templates (and the headers they need)
#include "cuda/pdl.cuh"
#include "spense/cuda/check.h"

namespace spense::cuda::gemv {
namespace {

constexpr int kWarps = 8;  // warps per block

__device__ __forceinline__ float lo_bf16(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float hi_bf16(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

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
// Spans part*32 + lane + j * 32 * wk of the row: the wk warps of a row group split K. The k
// columns are stored columns seg0 .. seg0 + k - 1 (axis=in: a row's 2:4 or dense part).
template <int M, bool FP8, bool SPARSE, int U, bool IN = false>
__device__ __forceinline__ void rows_dot(const uint8_t* wrow, size_t row_bytes, const uint16_t* meta, int64_t k,
                                         const uint16_t* xb, int64_t ldx, int mrows, int lane, int part, int wk,
                                         float (&acc)[kRowsPerWarp][M], const int32_t* col_tiles = nullptr,
                                         int tile_shift = 0, int64_t seg0 = 0) {
  constexpr int R = kRowsPerWarp, C = Span<FP8, SPARSE>::kCols, XW = Span<FP8, SPARSE>::kXWords;
  const int64_t spans = k / C;
  const int64_t meta_row = k / 16;  // u16 per row
  const int64_t step = int64_t(32) * wk;
  for (int64_t c0 = part * 32 + lane; c0 < spans; c0 += step * U) {
    uint4 wv[U][R];
    uint32_t mt[U][R];
    int64_t xc[U];  // the span's first activation column
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = c0 + step * u;
      xc[u] = c < spans ? x_column<IN>(seg0 + c * C, col_tiles, tile_shift) : 0;
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
        load_x_span<XW>(xb + m * ldx + xc[u], xw);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r][m] = span_dot<FP8, SPARSE>(wv[u][r], mt[u][r], xw, acc[r][m]);
      }
    }
  }
}

// Block: 8 / wk row groups of kRowsPerWarp rows; the wk warps of a group split the row's K
// range, and their partial sums meet in shared memory. Small-N layers take a large wk so that
// they still launch thousands of short blocks (no tail of a few long ones).
// Axis=in (IN): every row is a 2:4 part and a dense part, summed in the same accumulators.
template <int M, bool FP8, int U, bool IN = false>
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
  const int64_t ks = IN ? w.in_ks : w.k;  // columns of a 2:4 row (axis=in: of its 2:4 part)
  {  // this lane's first weight spans toward L2 while the previous kernel may still run (PDL)
    const bool sp = s0 < w.ns && ks > 0;
    const size_t rb = (sp ? size_t(ks / 2) : size_t(w.dense_ld)) * eb;
    const int64_t spans = sp ? ks / Span<FP8, true>::kCols : (w.k - (IN ? ks : 0)) / Span<FP8, false>::kCols;
    const int64_t c = int64_t(part) * 32 + lane;
    if (s0 < n && c < spans) {
      const uint8_t* base = sp ? static_cast<const uint8_t*>(w.sparse_values) + size_t(s0) * rb
                               : static_cast<const uint8_t*>(w.dense) + size_t(IN ? s0 : s0 - w.ns) * rb;
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (s0 + r < n) prefetch_l2(base + r * rb + size_t(c) * 16);
    }
  }
  griddep_wait();  // x is the previous kernel's output
  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.f;
  if constexpr (IN) {
    if (s0 < n) {  // n is a multiple of R
      if (ks > 0) {
        const size_t rb = size_t(ks / 2) * eb;
        rows_dot<M, FP8, true, U, true>(static_cast<const uint8_t*>(w.sparse_values) + size_t(s0) * rb, rb,
                                        w.sparse_meta + size_t(s0) * (ks / 16), ks, xb, ldx, mrows, lane, part, wk,
                                        acc, w.col_tiles, w.tile_shift, 0);
      }
      if (w.k > ks) {
        const size_t rb = size_t(w.dense_ld) * eb;
        rows_dot<M, FP8, false, U, true>(static_cast<const uint8_t*>(w.dense) + size_t(s0) * rb, rb, nullptr,
                                         w.k - ks, xb, ldx, mrows, lane, part, wk, acc, w.col_tiles, w.tile_shift, ks);
      }
    }
  } else if (s0 < w.ns) {  // 2:4 rows (ns is a multiple of R)
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
  const int64_t spans = w.axis_in ? w.in_ks / (w.fp8 ? 32 : 16) + (w.k - w.in_ks) / (w.fp8 ? 16 : 8)
                      : w.ns > 0 ? w.k / (w.fp8 ? 32 : 16) : w.k / (w.fp8 ? 16 : 8);
  int wk = 1;
  while (wk < kWarps && row_groups * wk / kWarps < 2048 && spans / (32 * 2 * wk) >= 4) wk *= 2;
  const int64_t groups = kWarps / wk;
  dim3 grid(static_cast<unsigned>((row_groups + groups - 1) / groups), static_cast<unsigned>((m + M - 1) / M));
  // Spans in flight per lane: 4 at M = 1; 1 for larger M (measured on an H200, docs/perf.md:
  // at M = 2-4 the unrolled variants hold more registers and ran 20-35% slower).
  constexpr int U = M == 1 ? 4 : 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(kWarps * 32);
  cfg.stream = s;
  cudaLaunchAttribute attr[1] = {pdl_launch_attribute()};
  cfg.attrs = attr;
  cfg.numAttrs = w.pdl && tc_device().clusters ? 1 : 0;  // clusters: sm_90+, as PDL
  const auto* xp = static_cast<const uint16_t*>(x);
  auto* yp = static_cast<uint16_t*>(y);
  if (w.axis_in) {
    if (w.fp8) SPENSE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, gemv_k<M, true, U, true>, w, xp, ldx, m, yp, ldy, wk));
    else SPENSE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, gemv_k<M, false, U, true>, w, xp, ldx, m, yp, ldy, wk));
  } else if (w.fp8) {
    SPENSE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, gemv_k<M, true, U>, w, xp, ldx, m, yp, ldy, wk));
  } else {
    SPENSE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, gemv_k<M, false, U>, w, xp, ldx, m, yp, ldy, wk));
  }
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

// The tensor-core path: the block shape that runs for Weights::tc_shape (shapes the build or
// the GPU lacks run as their nearest kin; see gemv.h), launched by its family's unit.
void launch_tc(const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  int v = w.tc_shape >= kTcFirstWgmmaShape && !tc_device().wgmma ? 0 : w.tc_shape;
  if (v >= kTcFirstE4m3Shape && !w.e4m3_tokens)  // BF16 tokens
    v = v == kTcFirstE4m3Shape + 1 || (v >= kTcFirstStreamShape && stream_rows(v) == 128) ? 5 : 4;
  if (v >= kTcFirstStreamShape) v = stream_rows(v) == 128 ? 7 : 6;  // not streamed (tc_streamed): same rows per warpgroup
  if (v >= kTcFirstE4m3Shape) detail::launch_tc_e4m3(v, w, x, ldx, m, y, ldy, s);
  else if (w.fp8) detail::launch_tc_fp8(v, w, x, ldx, m, y, ldy, s);
  else detail::launch_tc_bf16(v, w, x, ldx, m, y, ldy, s);
}

}  // namespace

// Set by the build (cmake/cuda.cmake) when CMAKE_CUDA_ARCHITECTURES holds 90a: the device code
// then has the wgmma instructions, which plain sm_90 code lacks.
#ifndef SPENSE_WGMMA_BUILT
#define SPENSE_WGMMA_BUILT 0
#endif
const TcDevice& detail::tc_device() {
  static const TcDevice d = [] {
    int dev = 0, major = 0;
    TcDevice r;
    SPENSE_CUDA_CHECK(cudaGetDevice(&dev));
    SPENSE_CUDA_CHECK(cudaDeviceGetAttribute(&r.sms, cudaDevAttrMultiProcessorCount, dev));
    SPENSE_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    r.clusters = major >= 9;
    SPENSE_CUDA_CHECK(cudaDeviceGetAttribute(&r.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    r.wgmma = major == 9 && SPENSE_WGMMA_BUILT;  // no launch here: this may first run inside graph capture
    return r;
  }();
  return d;
}

bool tc_wgmma_ok() { return tc_device().wgmma; }

bool tc_e4m3_tokens(const Weights& w, int shape) {
  return shape >= kTcFirstE4m3Shape && w.fp8 && tc_device().wgmma;
}

bool tc_streamed(const Weights& w, int shape, int64_t m) {
  return shape >= kTcFirstStreamShape && tc_e4m3_tokens(w, shape) && !w.axis_in && m >= 1 && m <= kStreamMaxM;
}

int64_t tc_stream_tokens(int64_t m) { return m <= 8 ? 8 : m <= 16 ? 16 : m <= 32 ? 32 : 64; }

// Axis=in with both parts: at least 2 slices (one per part).
static int tc_min_slices(const Weights& w) { return w.axis_in && w.in_ks > 0 && w.in_ks < w.k ? 2 : 1; }

int tc_effective_slices(const Weights& w, int requested) {
  return std::max(tc_min_slices(w), std::min(requested, tc_max_slices(w)));
}

int tc_max_slices(const Weights& w) {
  if (!tc_device().clusters) return 1;
  // Clusters of up to 8 blocks (the portable limit), each slice keeping >= 4 2:4 stages.
  return int(std::max<int64_t>(tc_min_slices(w), std::min<int64_t>(8, w.k / (w.fp8 ? 256 : 128) / 4)));
}

bool tc_eligible(const Weights& w) {
  // The block shapes' shared memory (gemv_tc.cuh; sized for Hopper's 227 KB) must fit the device:
  // elsewhere (A100: 163 KB, Ada: 99 KB) the CUDA-core path runs.
  constexpr int kLargestBf16 = tc_largest_smem<false>(), kLargestFp8 = tc_largest_smem<true>();
  if (tc_device().smem_optin < (w.fp8 ? kLargestFp8 : kLargestBf16)) return false;
  if (w.axis_in) {  // the two parts meet in a cluster's reduction
    const int64_t sc = w.fp8 ? 256 : 128, dc = w.fp8 ? 128 : 64, kd = w.k - w.in_ks;
    return tc_device().clusters && w.in_ks % sc == 0 && kd % dc == 0 && (kd == 0 || w.dense_ld % (w.fp8 ? 16 : 8) == 0);
  }
  // Whole stages (128 weight bytes per row) along K, and 16-byte aligned dense rows.
  if (w.fp8) return w.k % 256 == 0 && (w.nd == 0 || w.dense_ld % 16 == 0);
  return w.k % 128 == 0 && (w.nd == 0 || w.dense_ld % 8 == 0);
}

void gemv(const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  if (m <= 0) return;
  // cp.async moves 16-byte pieces of the token rows.
  const bool aligned = ldx % (w.e4m3_tokens ? 16 : 8) == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  if (w.e4m3_tokens) {
    if (!(w.tensor_cores && tc_e4m3_tokens(w, w.tc_shape) && tc_eligible(w) && w.x_scales && aligned))
      throw Error("gemv: E4M3 tokens need an E4M3-token block shape on an FP8 layer where wgmma runs, "
                  "x_scales, and 16-byte aligned token rows", 1);
    if (tc_streamed(w, w.tc_shape, m)) detail::launch_stream_m(w, x, m, y, ldy, s);  // x chunk-major (tc_stream_tokens)
    else launch_tc(w, x, ldx, m, y, ldy, s);
    return;
  }
  if (w.tensor_cores && tc_eligible(w) && aligned) {
    launch_tc(w, x, ldx, m, y, ldy, s);
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
