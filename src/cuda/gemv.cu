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
#include <cooperative_groups.h>
#include <cuda.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cuda/async_copy.cuh"
#include "cuda/fp8.cuh"
#include "cuda/mma.cuh"
#include "cuda/gemv.h"
#include "cuda/pdl.cuh"
#include "cuda/wgmma.cuh"
#include "spense/cuda/check.h"

namespace spense::cuda::gemv {
namespace {

namespace cg = cooperative_groups;

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

// Where the activations of stored column sc are: the same column, or for axis=in (IN) the
// column at the same place in original column tile col_tiles[sc >> tile_shift].
template <bool IN>
__device__ __forceinline__ int64_t x_column(int64_t sc, const int32_t* col_tiles, int tile_shift) {
  if constexpr (IN) return (int64_t(__ldg(col_tiles + (sc >> tile_shift))) << tile_shift) | (sc & ((int64_t(1) << tile_shift) - 1));
  else return sc;
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

// The GPU's properties the launches need (the current device, read once).
struct TcDevice {
  int sms = 0;
  bool clusters = false;
  int smem_optin = 0;  // bytes of shared memory a block may opt in to
  bool wgmma = false;  // an sm_90 GPU, and this binary holds sm_90a code (the warpgroup shapes)
};

// Set by the build (cmake/cuda.cmake) when CMAKE_CUDA_ARCHITECTURES holds 90a: the device code
// then has the wgmma instructions, which plain sm_90 code lacks.
#ifndef SPENSE_WGMMA_BUILT
#define SPENSE_WGMMA_BUILT 0
#endif
const TcDevice& tc_device() {
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

// ---- Tensor-core path (BF16 or E4M3 weights, BF16 activations) ---------------------------------
// E4M3 weights are widened to BF16 in registers (exact) and scaled per row in the epilogue, so
// both precisions run the BF16 MMAs on the BF16 activations as they are.
// The same stored layout as above, read by mma.sp (2:4 rows) and mma (dense rows) with the
// tokens as the N = 8 side of each MMA. A block owns one unit: kBM stored rows of one kind
// (2:4 row blocks first, then dense ones), a tile of up to 8 * NT tokens and one K slice, and
// streams it through a cp.async pipeline of S stages in shared memory. Per stage: 128 bytes of
// every weight row (BF16 2:4: 128 columns = 64 kept values, plus their 16 metadata bytes; BF16
// dense: 64 columns; E4M3: twice the columns and metadata) and the stage's columns of the unit's
// tokens, which all W warps share. Each thread
// computes its 16-byte copies' addresses once and advances them by a constant per stage: Nsight
// Compute showed the first version bound by instruction issue, mostly address arithmetic of the
// copies, at 19% occupancy (docs/perf.md). Fragments come from shared memory by ldmatrix (rows
// padded by 16 bytes, so the 8 rows of each 8x8 matrix sit on distinct banks; E4M3 A fragments
// by 2-byte loads, see tc_compute). Layers with few
// row blocks split K over a thread-block cluster of up to 8 blocks (grid z), whose fp32 partial
// tiles are summed through distributed shared memory: one launch, no workspace.
// Fragments (PTX ISA, mma.m16n8k16 / mma.sp.m16n8k32, 16-bit types; g = lane / 4, t = lane % 4):
//   A: {row g, cols 2t..}, {row g+8, cols 2t..}, {row g, cols 2t+8..}, {row g+8, cols 2t+8..}
//     of the (kept) values: ldmatrix.x4 with lanes 0-7 / 8-15 / 16-23 / 24-31 addressing rows
//     0-7 / 8-15 / 0-7 / 8-15 at byte 0 / 0 / 16 / 16 of the 32-byte k-step.
//   metadata: thread t of the supplying pair (t & 1 = p) holds, per row, the nibbles of groups
//     4p..4p+3 (one u16 of the v1 meta layout): row g in bits 0-15, row g+8 in 16-31. Every lane
//     loads its pair position's values, so both pairs agree and the sparsity selector stays 0.
//   B (32 x 8, K x tokens): token g, k = 2t + {0,1} + 8i for register i: ldmatrix.x4 of the
//     token-major tile, matrix i = the step's columns 8i..8i+7.
//   C (16 x 8): {row g, tokens 2t, 2t+1}, {row g+8, tokens 2t, 2t+1}.
constexpr int kTcRowBytes = 128;               // weight bytes per row per stage
constexpr int kTcRowPitch = kTcRowBytes + 16;  // shared-memory pitch of a weight row

// MT 16-row tiles per warp, NT 8-token tiles, W warps, S stages; BF16 or E4M3 weights. A stage
// holds 128 bytes of every weight row either way, so E4M3 stages span twice the columns (and
// twice the metadata and token columns) of BF16 ones.
// WG (warpgroup shapes, sm_90a): the MMAs are wgmma (src/cuda/wgmma.cuh), W a multiple of 4,
// each warpgroup owning MT tiles of 64 rows (warp w % 4 the rows 16 (w % 4) .. of each), and the
// token tile stored for wgmma's descriptor: K-major core matrices of 8 tokens x 16 bytes, chunk q
// (columns 8q .. 8q + 7) of token tk at byte (q * kTok + tk) * 16 of the stage's token area
// (kTok * 16 bytes between chunks along K, 128 between groups of 8 tokens).
// IN: axis=in weights (Weights::axis_in; a separate instantiation, so that the axis=out code
// keeps its registers).
// Q (warpgroup shapes, E4M3 weights): E4M3 tokens (Weights::e4m3_tokens) in the same
// core-matrix layout, 16 columns per 16-byte chunk, so a stage's token area is half the BF16
// one; the MMAs are the E4M3 wgmmas (a 2:4 stage: 4 k-steps of 64 columns, a dense one: 4 of 32).
// With IN the tokens come quantized in stored column order, so they are read as axis=out reads
// them (no column-tile map).
template <int MT, int NT, int W, int S, bool FP8 = false, bool WG = false, bool IN = false, bool Q = false>
struct TcCfg {
  static constexpr bool kFP8 = FP8, kWG = WG, kIN = IN, kQ = Q;
  static_assert(!WG || W % 4 == 0, "warpgroup shapes take whole warpgroups");
  static_assert(!Q || (FP8 && WG), "E4M3 tokens: E4M3 weights, warpgroup shapes");
  static constexpr int kMT = MT, kNT = NT, kThreads = 32 * W, kStages = S;
  static constexpr int kBM = 16 * MT * W, kTok = 8 * NT;
  static constexpr int kSparseCols = FP8 ? 256 : 128;  // columns of a 2:4 stage
  static constexpr int kDenseCols = FP8 ? 128 : 64;    // columns of a dense stage
  static constexpr int kMetaBytes = kSparseCols / 8;   // a 2:4 stage's metadata per row
  static constexpr int kXPitch = 2 * kSparseCols + 16;  // shared-memory pitch of a token's columns
  static constexpr int kA = kBM * kTcRowPitch, kMeta = kBM * kMetaBytes;
  static constexpr int kX = Q ? kTok * kSparseCols : WG ? kTok * 2 * kSparseCols : kTok * kXPitch;
  static constexpr int kStage = kA + kMeta + kX;
  static constexpr int kRedPitch = kTok + 1;  // fp32 partial tile for the cluster reduction
  static constexpr int kSmem = S * kStage;    // the reduction reuses the drained pipeline
  static constexpr int kARowsPerPass = kThreads / 8;  // 8 16-byte copies per weight row
  static constexpr int kAChunks = kBM / kARowsPerPass;
  static constexpr int kMetaChunks = kBM * kMetaBytes / 16;  // 16-byte metadata copies per stage
  static constexpr int kMetaPerThread = (kMetaChunks + kThreads - 1) / kThreads;
  static_assert(kBM % kARowsPerPass == 0 && kMetaPerThread <= 4, "four metadata copies per thread at most");
  static_assert(kBM * kRedPitch * 4 <= kSmem, "the partial tile must fit in the pipeline's memory");
  static_assert(kSmem <= 227 * 1024, "more shared memory than a Hopper block can have");
};

// The unit's first row of warp `warp`'s 16-row tile mt (see TcCfg: warpgroup shapes interleave
// the warps of a warpgroup within each 64-row tile).
template <class C>
__device__ __forceinline__ int tc_row0(int warp, int mt) {
  if constexpr (C::kWG) return (warp / 4) * 64 * C::kMT + mt * 64 + (warp % 4) * 16;
  else return warp * 16 * C::kMT + mt * 16;
}

__device__ __forceinline__ void mma_sp_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[4], uint32_t e) {
  asm volatile(
      "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, {%0,%1,%2,%3}, %12, 0;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
}

// A block's unit: kBM stored rows of one kind, one tile of up to kTok tokens, and the 2:4 or
// dense stages [begin, end) of its K slice (TcCfg::kSparseCols / kDenseCols columns each).
struct TcUnit {
  bool sparse;
  int64_t row0, rows, first, m0, begin, end;  // first: stored index of the kind's row 0
};

// Axis=in: every row block is a unit; `sparse_blocks` is then the number of K slices (of
// the cluster's `slices`) that share the rows' 2:4 part, the others share their dense part.
template <class C>
__device__ __forceinline__ TcUnit tc_unit(const Weights& w, int64_t u, int64_t row_blocks, int64_t sparse_blocks,
                                          int slice, int slices) {
  const int64_t rb = u % row_blocks;
  TcUnit t;
  if constexpr (C::kIN) {
    const int ss = int(sparse_blocks);
    t.sparse = slice < ss;
    t.row0 = rb * C::kBM;
    t.rows = w.ns;
    t.first = 0;
    t.m0 = (u / row_blocks) * C::kTok;
    const int64_t steps = t.sparse ? w.in_ks / C::kSparseCols : (w.k - w.in_ks) / C::kDenseCols;
    const int part = t.sparse ? slice : slice - ss, parts = t.sparse ? ss : slices - ss;
    t.begin = steps * part / parts;
    t.end = steps * (part + 1) / parts;
    return t;
  }
  t.sparse = rb < sparse_blocks;
  t.row0 = (t.sparse ? rb : rb - sparse_blocks) * C::kBM;
  t.rows = t.sparse ? w.ns : w.nd;
  t.first = t.sparse ? 0 : w.ns;
  t.m0 = (u / row_blocks) * C::kTok;
  const int64_t steps = w.k / (t.sparse ? C::kSparseCols : C::kDenseCols);
  t.begin = steps * slice / slices;
  t.end = steps * (slice + 1) / slices;
  return t;
}

// This thread's share of every stage's copies, addressed once: weight chunk j is row
// (tid / 8) + j * kARowsPerPass, bytes 16 * (tid % 8) of the row's 128; metadata chunk j is
// tid + j * kThreads of the kBM x (kMetaBytes / 16) chunks; token chunk j is tid + j * kThreads
// of the tile's kTok x XCH chunks. Stage i reads 128 bytes further along each weight row than
// stage 0, kMetaBytes further along the metadata and kXB * kCols along each token row.
template <class C, bool SPARSE>
struct TcCopies {
  static constexpr int kCols = SPARSE ? C::kSparseCols : C::kDenseCols;  // weight columns per stage
  static constexpr int kXB = C::kQ ? 1 : 2;             // bytes per token column
  static constexpr bool kGather = C::kIN && !C::kQ;     // tokens read through the column-tile map
  static constexpr int XCH = kCols * kXB / 16;           // 16-byte chunks of a token's stage columns
  static constexpr int XN = (C::kTok * XCH + C::kThreads - 1) / C::kThreads;
  static constexpr int MN = C::kMetaPerThread;
  const uint8_t* a[C::kAChunks];
  const uint8_t* meta[MN];
  const uint8_t* xs[XN];  // axis=in: the token's row; else the chunk's first stage
  int32_t xcol[XN];       // axis=in: the chunk's stored column in the first stage
  const int32_t* col_tiles;
  int tile_shift;
  uint32_t a_dst, meta_dst[MN], x_dst[XN];
  uint32_t a_ok = 0, meta_ok = 0, meta_any = 0, x_ok = 0, x_any = 0;

  __device__ __forceinline__ TcCopies(const Weights& w, const uint16_t* x, int64_t ldx, int64_t m_total,
                                      const TcUnit& t) {
    const int tid = threadIdx.x;
    const uint8_t* abase = SPARSE ? static_cast<const uint8_t*>(w.sparse_values) : static_cast<const uint8_t*>(w.dense);
    const size_t eb = C::kFP8 ? 1 : 2;
    const int64_t ks = C::kIN ? w.in_ks : w.k;  // columns of a 2:4 row
    const size_t arow = (SPARSE ? size_t(ks / 2) : size_t(w.dense_ld)) * eb;  // bytes between weight rows
    col_tiles = w.col_tiles;
    tile_shift = w.tile_shift;
    const size_t k0 = size_t(t.begin) * kTcRowBytes;
#pragma unroll
    for (int j = 0; j < C::kAChunks; ++j) {
      const int64_t r = t.row0 + tid / 8 + j * C::kARowsPerPass;
      const bool ok = r < t.rows;
      a[j] = abase + size_t(ok ? r : 0) * arow + k0 + 16 * (tid % 8);
      a_ok |= uint32_t(ok) << j;
    }
    a_dst = (tid / 8) * kTcRowPitch + 16 * (tid % 8);
#pragma unroll
    for (int j = 0; j < MN; ++j) {
      constexpr int per_row = C::kMetaBytes / 16;
      const int c = tid + j * C::kThreads, row = c / per_row, piece = c % per_row;
      const bool any = SPARSE && c < C::kMetaChunks, ok = any && t.row0 + row < t.rows;
      meta[j] = SPARSE ? reinterpret_cast<const uint8_t*>(w.sparse_meta) + size_t(ok ? t.row0 + row : 0) * size_t(ks / 8) +
                             size_t(t.begin) * C::kMetaBytes + 16 * piece
                       : nullptr;
      meta_dst[j] = C::kA + row * C::kMetaBytes + 16 * piece;
      meta_ok |= uint32_t(ok) << j;
      meta_any |= uint32_t(any) << j;
    }
#pragma unroll
    for (int j = 0; j < XN; ++j) {
      const int c = tid + j * C::kThreads;
      // Warpgroup shapes: pairs of chunks (one 32-byte sector) per token, tokens in turn, so
      // that a warp's shared-memory writes fill contiguous runs of the core-matrix layout.
      const int tk = C::kWG ? (c >> 1) % C::kTok : c / XCH;
      const int q = C::kWG ? (c & 1) + 2 * ((c >> 1) / C::kTok) : c % XCH;
      const bool any = c < C::kTok * XCH, ok = any && t.m0 + tk < m_total;
      const int64_t col = (SPARSE || !C::kIN ? 0 : w.in_ks) + t.begin * kCols + q * (16 / kXB);  // stored column
      xcol[j] = static_cast<int32_t>(col);
      xs[j] = reinterpret_cast<const uint8_t*>(x) + ((ok ? t.m0 + tk : 0) * ldx + (kGather ? 0 : col)) * kXB;
      x_dst[j] = C::kA + C::kMeta + (C::kWG ? (q * C::kTok + tk) * 16 : tk * C::kXPitch + q * 16);
      x_ok |= uint32_t(ok) << j;
      x_any |= uint32_t(any) << j;
    }
  }

  // Issues stage i (relative to t.begin) into the slot at shared address `stage` (not waited):
  // its weights and metadata, then its activations.
  __device__ __forceinline__ void issue_weights(int64_t i, uint32_t stage) const {
#pragma unroll
    for (int j = 0; j < C::kAChunks; ++j)
      cp16(stage + a_dst + j * C::kARowsPerPass * kTcRowPitch, a[j] + i * kTcRowBytes, (a_ok >> j) & 1);
#pragma unroll
    for (int j = 0; j < MN; ++j)
      if ((meta_any >> j) & 1) cp16(stage + meta_dst[j], meta[j] + i * C::kMetaBytes, (meta_ok >> j) & 1);
  }
  __device__ __forceinline__ void issue_x(int64_t i, uint32_t stage) const {
#pragma unroll
    for (int j = 0; j < XN; ++j)
      if ((x_any >> j) & 1) {
        // A chunk's 8 columns lie in one column tile (tiles of >= 32 columns; kGather: BF16 tokens).
        const uint8_t* src = kGather ? xs[j] + 2 * x_column<true>(xcol[j] + i * kCols, col_tiles, tile_shift)
                                    : xs[j] + i * kXB * kCols;
        cp16(stage + x_dst[j], src, (x_ok >> j) & 1);
      }
  }
  __device__ __forceinline__ void issue(int64_t i, uint32_t stage) const {
    issue_weights(i, stage);
    issue_x(i, stage);
  }
};

// Two E4M3 weights (bytes 0 and 1 of v) as a BF16 pair (low half first), exactly (every finite
// E4M3 value is a BF16 value; the NaN codes 0x7F / 0xFF come out as -+480, not NaN: weights are
// quantized from finite values), in four integer operations and one multiply: each byte's sign goes to
// bit 15 of its half and its 7 exponent-mantissa bits to bits 4-10, which reads as the E4M3 value
// times 2^-120 (BF16's exponent bias exceeds E4M3's by 120; E4M3 subnormals land on BF16
// subnormals with the same mantissa), and a BF16 multiply by 2^120 restores the value. It
// replaced a chain of conversion instructions (E4M3 -> F16 -> F32 -> BF16, which issue at a
// quarter of the integer rate) without a measurable change in speed (docs/perf.md): the path is
// limited elsewhere, and this form issues fewer instructions.
__device__ __forceinline__ uint32_t bf16x2_of_e4m3x2(uint32_t v) {
  const uint32_t x = __byte_perm(v, 0u, 0x4140u) << 4;  // bytes (b0, 0, b1, 0) << 4: signs at bits 11, 27
  const uint32_t r = x + (x & 0x08000800u) * 15u;        // signs moved to bits 15, 31
  constexpr uint32_t kTwo120 = 0x7B807B80u;               // BF16 2^120, twice
  const __nv_bfloat162 h = __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&r),
                                   *reinterpret_cast<const __nv_bfloat162*>(&kTwo120));
  return *reinterpret_cast<const uint32_t*>(&h);
}
__device__ __forceinline__ uint32_t bf16x2_of_e4m3_smem(const uint8_t* p) {
  return bf16x2_of_e4m3x2(*reinterpret_cast<const uint16_t*>(p));
}

// The A fragment of 16 weight columns (BF16: 32 bytes, E4M3: 16) starting at BF16 byte col_bytes
// of the tile's rows row0 .. row0 + 15 in a landed stage: ldmatrix, or E4M3 pairs widened. With
// E4M3 tokens (C::kQ) the E4M3 MMAs take the bytes as they are: 32 of them (32 E4M3 columns, or
// 32 kept values of 64 for 2:4) at byte col_bytes, by ldmatrix.
template <class C>
__device__ __forceinline__ void a_frag(const uint8_t* A, int row0, int col_bytes, uint32_t (&a)[4]) {
  const int lane = threadIdx.x & 31;
  if constexpr (C::kFP8 && !C::kQ) {  // fragment row g's columns 2t, 2t + 1, 2t + 8, 2t + 9 (and row g + 8's)
    const uint8_t* q = A + (row0 + (lane >> 2)) * kTcRowPitch + 2 * (lane & 3) + col_bytes / 2;
    constexpr int P8 = 8 * kTcRowPitch;
    a[0] = bf16x2_of_e4m3_smem(q);
    a[1] = bf16x2_of_e4m3_smem(q + P8);
    a[2] = bf16x2_of_e4m3_smem(q + 8);
    a[3] = bf16x2_of_e4m3_smem(q + P8 + 8);
  } else {
    const int a_row = (lane & 7) + 8 * ((lane >> 3) & 1), a_byte = 16 * (lane >> 4);
    ldsm_x4(smem_addr(A + (row0 + a_row) * kTcRowPitch + a_byte + col_bytes), a);
  }
}

// The 2:4 metadata of k-step ks for the tile's rows row0 .. row0 + 15: the pair position's u16
// of rows g (bits 0-15) and g + 8 (bits 16-31), as the fragment notes above say.
template <class C>
__device__ __forceinline__ uint32_t meta_frag(const uint8_t* M, int row0, int ks) {
  const int lane = threadIdx.x & 31, r = row0 + (lane >> 2), p = lane & 1;
  const uint32_t m_lo = *reinterpret_cast<const uint32_t*>(M + r * C::kMetaBytes + 4 * ks);
  const uint32_t m_hi = *reinterpret_cast<const uint32_t*>(M + (r + 8) * C::kMetaBytes + 4 * ks);
  return (p ? m_lo >> 16 : m_lo & 0xffffu) | (p ? m_hi & 0xffff0000u : m_hi << 16);
}

// The 8-bit 2:4 metadata of k-step ks (64 columns: 8 bytes per row) for the tile's rows row0 ..
// row0 + 15: all four threads of a quad supply 32 bits (the sparsity selector is 0), thread t
// the 8 groups (32 columns) t >> 1 of row g + 8 (t & 1), i.e. u32 t >> 1 of that row's 8 bytes
// in the v1 meta layout. Measured on an H100 (docs/perf.md): of three arrangements tried by
// SmallMKernelFp8EveryCodeExact, only this one gave exact results (thread t holding u16 t of
// rows g and g + 8, the BF16 arrangement above spread over four threads, did not).
template <class C>
__device__ __forceinline__ uint32_t meta_frag_e4m3(const uint8_t* M, int row0, int ks) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  return *reinterpret_cast<const uint32_t*>(M + (row0 + g + 8 * (t & 1)) * C::kMetaBytes + 8 * ks + 4 * (t >> 1));
}

// acc += this warp's rows of one landed stage times its tokens. BF16 weights reach the A
// fragments by ldmatrix; E4M3 weights by 2-byte shared loads of the fragment's element pairs
// (row g or g + 8, columns 2t and 2t + 8 of the k-step: a row pitch of 144 bytes is 4 banks, so
// rows g = 0..7 land on banks 4g and 4g + 1 and the warp's loads do not conflict), widened to
// BF16 in registers.
template <class C, bool SPARSE>
__device__ __forceinline__ void tc_compute(const uint8_t* stage, float (&acc)[C::kMT][C::kNT][4]) {
  constexpr int MT = C::kMT, NT = C::kNT;
  constexpr int kCols = SPARSE ? C::kSparseCols : C::kDenseCols;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const uint8_t* A = stage;
  const uint8_t* M = A + C::kA;
  const uint8_t* X = M + C::kMeta;
  // ldmatrix row addresses of this lane (see the fragment notes above).
  const uint32_t b_addr = smem_addr(X + (lane & 7) * C::kXPitch + 16 * (lane >> 3));
#pragma unroll
  for (int ks = 0; ks < kCols / 32; ++ks) {  // 32-column k-steps
    uint32_t b[NT][4];
#pragma unroll
    for (int j = 0; j < NT; ++j) ldsm_x4(b_addr + j * 8 * C::kXPitch + ks * 64, b[j]);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int row0 = tc_row0<C>(warp, mt);
      if constexpr (SPARSE) {
        uint32_t a[4];
        a_frag<C>(A, row0, 32 * ks, a);  // 16 kept values per k-step
        const uint32_t e = meta_frag<C>(M, row0, ks);
#pragma unroll
        for (int j = 0; j < NT; ++j) mma_sp_bf16(acc[mt][j], a, b[j], e);
      } else {
        uint32_t a0[4], a1[4];
        a_frag<C>(A, row0, 64 * ks, a0);
        a_frag<C>(A, row0, 64 * ks + 32, a1);
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          mma_bf16(acc[mt][j], a0, b[j][0], b[j][1]);
          mma_bf16(acc[mt][j], a1, b[j][2], b[j][3]);
        }
      }
    }
  }
}

// The warpgroup shapes' stage (TcCfg, WG): this warp's A fragments of every k-step of the stage
// and every row tile go to registers first (a_frag, meta_frag, as in tc_compute),
// then the warpgroup issues one wgmma per k-step and 64-row tile, B read from the stage's token
// area by descriptor, and waits for them before the stage's memory is reused.
template <class C, bool SPARSE>
__device__ __forceinline__ void tc_compute_wg(const uint8_t* stage, float (&acc)[C::kMT][C::kNT][4]) {
  constexpr int MT = C::kMT, N = 8 * C::kNT, R = N / 2;
  constexpr int kCols = SPARSE ? C::kSparseCols : C::kDenseCols;
  // Fragments per stage: one per 2:4 k-step (32 columns, 16 kept), or per dense k16; with E4M3
  // tokens one per 2:4 k64 (32 kept) or dense k32. Either way 32 bytes of each weight row.
  constexpr int KF = C::kQ ? (SPARSE ? kCols / 64 : kCols / 32) : SPARSE ? kCols / 32 : kCols / 16;
  constexpr uint32_t kLBO = C::kTok * 16;  // bytes between the token tile's chunks along K
  const int warp = threadIdx.x >> 5;
  const uint8_t* A = stage;
  const uint8_t* M = A + C::kA;
  const uint32_t xb = smem_addr(M + C::kMeta);
  auto& d = reinterpret_cast<float(&)[MT][R]>(acc);
  uint32_t a[KF][MT][4], e[KF][MT];
#pragma unroll
  for (int f = 0; f < KF; ++f)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int row0 = tc_row0<C>(warp, mt);
      a_frag<C>(A, row0, 32 * f, a[f][mt]);
      if constexpr (SPARSE && C::kQ) e[f][mt] = meta_frag_e4m3<C>(M, row0, f);
      else if constexpr (SPARSE) e[f][mt] = meta_frag<C>(M, row0, f);
    }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) wgmma::pin(d[mt]);
  wgmma::fence();
#pragma unroll
  for (int f = 0; f < KF; ++f)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      // A 2:4 k-step spans 4 16-byte chunks along K, a dense one two (8 BF16 or 16 E4M3 columns each).
      const uint64_t b = wgmma::smem_desc(xb + f * (SPARSE ? 4 : 2) * kLBO, kLBO, 128);
      if constexpr (SPARSE && C::kQ) wgmma::Wgmma<N>::sparse_e4m3(d[mt], a[f][mt], b, e[f][mt]);
      else if constexpr (SPARSE) wgmma::Wgmma<N>::sparse(d[mt], a[f][mt], b, e[f][mt]);
      else if constexpr (C::kQ) wgmma::Wgmma<N>::dense_e4m3(d[mt], a[f][mt], b);
      else wgmma::Wgmma<N>::dense(d[mt], a[f][mt], b);
    }
  wgmma::commit();
  wgmma::wait<0>();
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) wgmma::pin(d[mt]);
}

__device__ __forceinline__ void store_bf16(uint16_t* y, float v) {
  const __nv_bfloat16 b = __float2bfloat16(v);
  *y = *reinterpret_cast<const uint16_t*>(&b);
}

// Writes unit t's products, summed over the cluster's K slices when slices > 1 (through `red`,
// the block's drained pipeline memory).
template <class C>
__device__ __forceinline__ void tc_epilogue(const Weights& w, int64_t m_total, uint16_t* y, int64_t ldy,
                                            const TcUnit& t, float* red, int slice, int slices,
                                            const float (&acc)[C::kMT][C::kNT][4]) {
  constexpr int MT = C::kMT, NT = C::kNT;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, q4 = lane & 3;
  auto out = [&](int r, int tk, float v) {  // r: row of the unit, tk: token of the tile
    if (t.row0 + r >= t.rows || t.m0 + tk >= m_total) return;
    const int64_t s = t.first + t.row0 + r;
    if constexpr (C::kQ) v *= w.x_scales[t.m0 + tk];
    store_bf16(y + (t.m0 + tk) * ldy + (w.row_map ? w.row_map[s] : s), w.scales ? v * w.scales[s] : v);
  };
  if (slices == 1) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const int r = tc_row0<C>(warp, mt) + g, tk = 8 * j + 2 * q4;
        out(r, tk, acc[mt][j][0]);
        out(r, tk + 1, acc[mt][j][1]);
        out(r + 8, tk, acc[mt][j][2]);
        out(r + 8, tk + 1, acc[mt][j][3]);
      }
    return;
  }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Every block of the cluster leaves its partial tile in its shared memory; block `slice` sums
  // rows [slice, slice + 1) * ceil(kBM / slices) of all of them (the last part may be short)
  // and stores those.
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int r = tc_row0<C>(warp, mt) + g, tk = 8 * j + 2 * q4;
      red[r * C::kRedPitch + tk] = acc[mt][j][0];
      red[r * C::kRedPitch + tk + 1] = acc[mt][j][1];
      red[(r + 8) * C::kRedPitch + tk] = acc[mt][j][2];
      red[(r + 8) * C::kRedPitch + tk + 1] = acc[mt][j][3];
    }
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  const int part = (C::kBM + slices - 1) / slices, r0 = slice * part;
  const int n_rows = r0 < C::kBM ? min(part, C::kBM - r0) : 0;
  for (int i = threadIdx.x; i < n_rows * C::kTok; i += C::kThreads) {
    const int r = r0 + i / C::kTok, tk = i % C::kTok;
    float v = 0.f;
    for (int q = 0; q < slices; ++q) v += cluster.map_shared_rank(red, q)[r * C::kRedPitch + tk];
    out(r, tk, v);
  }
  cluster.sync();  // everyone has read every partial tile before any block exits
#else
  __trap();  // split K needs clusters (sm_90+ code); the host only splits where the device has them
#endif
}

template <class C, bool SPARSE>
__device__ __forceinline__ void tc_run(const Weights& w, const uint16_t* x, int64_t ldx, int64_t m_total, uint16_t* y,
                                       int64_t ldy, const TcUnit& t, uint8_t* smem, int slice, int slices) {
  constexpr int S = C::kStages;
  float acc[C::kMT][C::kNT][4];
#pragma unroll
  for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
    for (int j = 0; j < C::kNT; ++j) acc[mt][j][0] = acc[mt][j][1] = acc[mt][j][2] = acc[mt][j][3] = 0.f;
  const TcCopies<C, SPARSE> cp(w, x, ldx, m_total, t);
  const uint32_t base = smem_addr(smem);
  const int64_t n = t.end - t.begin;
  // The first stages' weights go out before the wait for the previous kernel (PDL); they join
  // the first commit group, so stage 0's wait covers them too.
#pragma unroll
  for (int i = 0; i < S - 1; ++i)
    if (i < n) cp.issue_weights(i, base + i * C::kStage);
  griddep_wait();
#pragma unroll
  for (int i = 0; i < S - 1; ++i) {
    if (i < n) cp.issue_x(i, base + i * C::kStage);
    cp_commit();
  }
  int slot = 0, next_slot = S - 1;  // stage i's slot, and stage i + S - 1's
#pragma unroll 1
  for (int64_t i = 0; i < n; ++i) {
    cp_wait<S - 2>();
    if constexpr (C::kWG) wgmma::fence_proxy_async_smem();  // wgmma reads the tokens through the async proxy
    __syncthreads();  // stage i has landed for everyone; stage i - 1's slot is free
    if (i + S - 1 < n) cp.issue(i + S - 1, base + next_slot * C::kStage);
    cp_commit();
    if constexpr (C::kWG) tc_compute_wg<C, SPARSE>(smem + slot * C::kStage, acc);
    else tc_compute<C, SPARSE>(smem + slot * C::kStage, acc);
    slot = slot + 1 == S ? 0 : slot + 1;
    next_slot = next_slot + 1 == S ? 0 : next_slot + 1;
  }
  cp_wait<0>();
  __syncthreads();  // every stage read: the memory can take the partial tile
  tc_epilogue<C>(w, m_total, y, ldy, t, reinterpret_cast<float*>(smem), slice, slices, acc);
}

// grid (units, 1, slices), cluster (1, 1, slices). Units: row blocks, 2:4 ones first, times
// token tiles; one per block (persistent blocks measured slower on an H200, up to 2x with split
// K, where every unit ends in cluster barriers: docs/perf.md).
template <class C>
__global__ void __launch_bounds__(C::kThreads) gemv_tc_k(Weights w, const uint16_t* x, int64_t ldx, int64_t m_total,
                                                         uint16_t* y, int64_t ldy, int64_t sparse_blocks,
                                                         int64_t row_blocks) {
  extern __shared__ __align__(16) uint8_t smem[];
  const int slices = int(gridDim.z), slice = int(blockIdx.z);
  const TcUnit t = tc_unit<C>(w, blockIdx.x, row_blocks, sparse_blocks, slice, slices);
  if (t.sparse) tc_run<C, true>(w, x, ldx, m_total, y, ldy, t, smem, slice, slices);
  else tc_run<C, false>(w, x, ldx, m_total, y, ldy, t, smem, slice, slices);
}

template <class C>
void launch_tc_cfg(const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  static const int resident = [] {  // blocks per SM at this shared-memory size
    SPENSE_CUDA_CHECK(cudaFuncSetAttribute(gemv_tc_k<C>, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem));
    int b = 0;
    SPENSE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, gemv_tc_k<C>, C::kThreads, C::kSmem));
    return b > 0 ? b : 1;
  }();
  const TcDevice& dev = tc_device();
  const int64_t slots = int64_t(dev.sms) * resident;
  int64_t sparse_blocks = (w.ns + C::kBM - 1) / C::kBM, dense_blocks = (w.nd + C::kBM - 1) / C::kBM;
  const int64_t row_blocks = sparse_blocks + dense_blocks, units = row_blocks * ((m + C::kTok - 1) / C::kTok);
  // The split: Weights::tc_slices (make_gemv_linear times each per M), else the smallest that
  // fills every SM's resident slots twice.
  int slices = 1;
  if (w.tc_slices > 0) slices = tc_effective_slices(w, w.tc_slices);
  else {
    while (dev.clusters && slices < 8 && units * slices < 2 * slots && w.k / C::kSparseCols >= 8 * slices) slices *= 2;
    slices = tc_effective_slices(w, slices);  // axis=in: at least one slice per part
  }
  if constexpr (C::kIN) {  // the 2:4 part's share of the slices: in proportion to its stages (same bytes each)
    const int64_t s_steps = w.in_ks / C::kSparseCols, d_steps = (w.k - w.in_ks) / C::kDenseCols;
    sparse_blocks = d_steps == 0 ? slices
                    : s_steps == 0 ? 0
                                   : std::clamp<int64_t>((slices * s_steps + (s_steps + d_steps) / 2) / (s_steps + d_steps),
                                                         1, slices - 1);
    // No part with more slices than stages (their blocks would only add zeros), where the split allows.
    if (d_steps > 0 && s_steps > 0 && slices <= s_steps + d_steps)
      sparse_blocks = std::clamp<int64_t>(sparse_blocks, std::max<int64_t>(1, slices - d_steps),
                                          std::min<int64_t>(slices - 1, s_steps));
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(units), 1, static_cast<unsigned>(slices));
  cfg.blockDim = dim3(C::kThreads);
  cfg.dynamicSmemBytes = C::kSmem;
  cfg.stream = s;
  cudaLaunchAttribute attr[2];
  unsigned na = 0;
  if (slices > 1) {
    attr[na].id = cudaLaunchAttributeClusterDimension;
    attr[na].val.clusterDim.x = 1;
    attr[na].val.clusterDim.y = 1;
    attr[na].val.clusterDim.z = static_cast<unsigned>(slices);
    ++na;
  }
  if (w.pdl && dev.clusters) {  // clusters: sm_90+, as PDL
    attr[na++] = pdl_launch_attribute();
  }
  cfg.attrs = attr;
  cfg.numAttrs = na;
  SPENSE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, gemv_tc_k<C>, w, static_cast<const uint16_t*>(x), ldx, m,
                                       static_cast<uint16_t*>(y), ldy, sparse_blocks, row_blocks));
}

template <int MT, int NT, int W, int S, bool FP8, bool WG = false>
void launch_tc(const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  if (w.axis_in) launch_tc_cfg<TcCfg<MT, NT, W, S, FP8, WG, true>>(w, x, ldx, m, y, ldy, s);
  else launch_tc_cfg<TcCfg<MT, NT, W, S, FP8, WG>>(w, x, ldx, m, y, ldy, s);
}
// The E4M3-token warpgroup shapes (E4M3 weights: TcCfg's Q).
template <int MT, int NT, int W, int S>
void launch_tc_q(const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  if (w.axis_in) launch_tc_cfg<TcCfg<MT, NT, W, S, true, true, true, true>>(w, x, ldx, m, y, ldy, s);
  else launch_tc_cfg<TcCfg<MT, NT, W, S, true, true, false, true>>(w, x, ldx, m, y, ldy, s);
}

// ---- Streamed E4M3 shapes (10-13): persistent blocks, TMA tiles, stream-K over the stages ----
// Nsight Compute put our E4M3-token shapes at 62-65% of the DRAM peak on gate_up at M = 16 and
// cuSPARSELt's 2:4 kernel at 70% (docs/perf.md); copy-only pipelines over the same bytes
// (tools/device/stream_pattern.cu) reached 85% of the read reference only with persistent
// blocks, each streaming one contiguous share of the layer's stages, fed by whole-tile copies
// of the copy engine. Here the copy engine is the TMA: a stage's 128 bytes of each of the
// block's rows are one 2-D box of the row-major storage (values or dense rows, swizzled 128 B
// so that ldmatrix reads them without bank conflicts: 16-byte chunk c of row r lands at
// chunk c ^ (r % 8)), its metadata one more box, and its tokens one bulk copy (the quantize
// kernel writes them chunk-major, so a stage's token columns are contiguous and land in the
// core-matrix layout wgmma's descriptor reads). The layer's units (row blocks, 2:4 first) are
// laid end to end as one sequence of stages (a 2:4 stage of 256 columns and a dense one of 128
// hold the same 128 bytes per row); each block takes an equal run of it. Its pipeline runs on
// across unit boundaries; a unit wholly inside one run is written directly, a unit cut between
// runs is summed in a workspace (fp32 atomics) and written by the block that adds its last
// stages, which zeroes the tile and the counter again (graph replays find them zeroed).
// Warp-specialized: one producer warp (lane 0 issues every copy) after the consumer
// warpgroups; per slot a "full" mbarrier (the copies' bytes) and an "empty" one (one arrival
// per consumer warp), so no block-wide barrier stalls the copies.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define SPENSE_SM90 1
#else
#define SPENSE_SM90 0
#endif

__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
#if SPENSE_SM90
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
#endif
}
__device__ __forceinline__ void mbar_init_fence() {
#if SPENSE_SM90
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
// Arrives on bar and adds `bytes` to the copies its current phase waits for.
__device__ __forceinline__ void mbar_expect(uint32_t bar, uint32_t bytes) {
#if SPENSE_SM90
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
#if SPENSE_SM90
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#endif
}
// Waits for the phase of bar with this parity to complete. A copy that never lands (a bug)
// traps after about 10 s instead of hanging the GPU.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
#if SPENSE_SM90
  const long long t0 = clock64();
  for (;;) {
    uint32_t done;
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
    if (done) return;
    if (clock64() - t0 > (1ll << 34)) __trap();
  }
#endif
}
// Branch-free forms for code with wgmmas in flight (a divergent branch there makes ptxas
// serialize the wgmmas): an arrival made only where `pred` holds, and a wait whose spin loop
// lives inside the asm (no time-out).
__device__ __forceinline__ void mbar_arrive_if(uint32_t bar, bool pred) {
#if SPENSE_SM90
  asm volatile("{\n .reg .pred p;\n setp.ne.u32 p, %1, 0;\n @p mbarrier.arrive.shared::cta.b64 _, [%0];\n}\n" ::"r"(bar),
               "r"(uint32_t(pred))
               : "memory");
#endif
}
__device__ __forceinline__ void mbar_wait_spin(uint32_t bar, uint32_t parity) {
#if SPENSE_SM90
  asm volatile(
      "{\n .reg .pred p;\n WAIT:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra WAIT;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
#endif
}
// Copy engine: `bytes` contiguous bytes, completing on bar.
__device__ __forceinline__ void bulk_copy(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
#if SPENSE_SM90
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
#endif
}
// TMA: the box of `map` at (byte column c0, row c1), completing on bar. Rows past the tensor's
// end land as zeros (and count as copied bytes).
__device__ __forceinline__ void tma_2d(uint32_t dst, const CUtensorMap* map, int c0, int c1, uint32_t bar) {
#if SPENSE_SM90
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
#endif
}

// The three tensor maps of a layer: 2:4 values (ns rows of k/2 bytes), their metadata (ns rows of
// k/8 bytes) and the dense rows (nd rows of k bytes, ld dense_ld); boxes of kBM rows.
struct StreamMaps {
  CUtensorMap values, meta, dense;
};

// MT 64-row tiles per consumer warpgroup, WGS consumer warpgroups, NT 8-token tiles, S slots.
// A stage: the weight box (kBM rows x 128 bytes, swizzled), the tokens (a 2:4 stage's 256
// columns = 16 chunks of 16 bytes per token, chunk-major; a dense stage uses half) and the
// metadata box (kBM rows x 32 bytes). Each part starts on 1024 bytes (the swizzle's period).
// SS: the consumers' wgmmas read the weights straight from the swizzled box (a shared-memory
// descriptor, no ldmatrix) and stay in flight while the next stage is awaited: a slot is freed
// one stage later, once the wgmmas that read it are done.
template <int MT, int WGS, int NT, int S, bool SS = false>
struct StreamCfg {
  using Tc = TcCfg<MT, NT, 4 * WGS, 2, true, true, false, true>;  // the E4M3-token compute and epilogue layout
  static constexpr bool kSmemA = SS;
  static constexpr int kBM = Tc::kBM, kTok = Tc::kTok, kStages = S;
  static constexpr int kConsumers = 128 * WGS, kThreads = kConsumers + 32;
  static constexpr int kA = kBM * 128, kXSparse = 16 * kTok * 16, kXDense = 8 * kTok * 16, kMeta = kBM * 32;
  static constexpr int kStage = kA + kXSparse + kMeta;
  static constexpr int kSmem = S * kStage + 1024;  // + the alignment of the dynamic memory to 1024
  // Blocks per SM that the shared memory allows (228 KB per SM, 1 KB reserved per block), for the
  // register budget: three where they fit, else two (the 64-token tile of shape 10 needs more
  // than 128 registers, or its wgmmas are serialized).
  static constexpr int kMinBlocks = 3 * (kSmem + 2048) <= 228 * 1024 ? 3 : 2;
  static_assert(kBM <= 256, "a TMA box has at most 256 rows");
  static_assert(Tc::kFP8 && Tc::kQ && !Tc::kIN && Tc::kStages == 2 && Tc::kSparseCols == 256 && Tc::kDenseCols == 128 &&
                    Tc::kAChunks > 0,
                "E4M3 weights and tokens, axis out; 2:4 stages of 256 columns, dense ones of 128");
  static_assert(kA % 1024 == 0 && kXSparse % 1024 == 0 && kMeta % 1024 == 0, "1024-byte aligned parts");
};

// The layer's stage sequence: the 2:4 row blocks' stages, then the dense ones'.
struct StreamGeom {
  int64_t sparse_blocks = 0, row_blocks = 0;  // row blocks of kBM rows, 2:4 first
  int64_t sv = 0, sd = 0, total = 0;          // stages of a 2:4 / dense unit, of all
};

// A position in the sequence: row block (= unit), stage within it, the unit's stages.
struct StreamPos {
  int64_t rb = 0, s = 0, n = 0;
  __device__ __forceinline__ void seek(const StreamGeom& g, int64_t i) {
    if (i < g.sparse_blocks * g.sv) {
      rb = i / g.sv, s = i % g.sv, n = g.sv;
    } else {
      const int64_t r = i - g.sparse_blocks * g.sv;
      rb = g.sparse_blocks + r / g.sd, s = r % g.sd, n = g.sd;
    }
  }
  __device__ __forceinline__ void next(const StreamGeom& g) {
    if (++s < n) return;
    s = 0;
    ++rb;
    n = rb < g.sparse_blocks ? g.sv : g.sd;
  }
  __device__ __forceinline__ bool sparse(const StreamGeom& g) const { return rb < g.sparse_blocks; }
};

// acc += the consumer warpgroup's rows of one landed stage times its tokens: A fragments by
// ldmatrix from the swizzled box (chunk c of row r at c ^ (r % 8); otherwise as a_frag), then
// one E4M3 wgmma per k-step (a 2:4 k64 or a dense k32: 32 bytes of each row) and 64-row tile.
template <class C, bool SPARSE>
__device__ __forceinline__ void stream_compute(const uint8_t* stage, float (&acc)[C::Tc::kMT][C::Tc::kNT][4]) {
  using T = typename C::Tc;
  constexpr int MT = T::kMT, N = 8 * T::kNT, R = N / 2, KF = 4;
  constexpr uint32_t kLBO = C::kTok * 16;  // bytes between the token tile's chunks along K
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const uint8_t* A = stage;
  const uint32_t xb = smem_addr(stage + C::kA);
  const uint8_t* M = stage + C::kA + C::kXSparse;
  auto& d = reinterpret_cast<float(&)[MT][R]>(acc);
  const int a_row = (lane & 7) + 8 * ((lane >> 3) & 1), half = lane >> 4;
  uint32_t a[KF][MT][4], e[KF][MT];
#pragma unroll
  for (int f = 0; f < KF; ++f)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int row0 = tc_row0<T>(warp, mt), r = row0 + a_row, chunk = 2 * f + half;
      ldsm_x4(smem_addr(A + r * 128 + ((chunk ^ (r & 7)) << 4)), a[f][mt]);
      if constexpr (SPARSE) e[f][mt] = meta_frag_e4m3<T>(M, row0, f);
    }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) wgmma::pin(d[mt]);
  wgmma::fence();
#pragma unroll
  for (int f = 0; f < KF; ++f)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const uint64_t b = wgmma::smem_desc(xb + f * (SPARSE ? 4 : 2) * kLBO, kLBO, 128);
      if constexpr (SPARSE) wgmma::Wgmma<N>::sparse_e4m3(d[mt], a[f][mt], b, e[f][mt]);
      else wgmma::Wgmma<N>::dense_e4m3(d[mt], a[f][mt], b);
    }
  wgmma::commit();
  wgmma::wait<0>();
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) wgmma::pin(d[mt]);
}

// The same MMAs with A read from the swizzled box by descriptor (StreamCfg::kSmemA): issued and
// committed as one group, not waited for.
// fresh: the stage starts a new sum (its first wgmmas overwrite the accumulators).
template <class C, bool SPARSE>
__device__ __forceinline__ void stream_issue_ss(const uint8_t* stage, float (&acc)[C::Tc::kMT][C::Tc::kNT][4], bool fresh) {
  using T = typename C::Tc;
  constexpr int MT = T::kMT, N = 8 * T::kNT, R = N / 2, KF = 4;
  constexpr uint32_t kLBO = C::kTok * 16;
  const int warp = threadIdx.x >> 5;
  const uint32_t ab = smem_addr(stage), xb = smem_addr(stage + C::kA);
  const uint8_t* M = stage + C::kA + C::kXSparse;
  auto& d = reinterpret_cast<float(&)[MT][R]>(acc);
  uint32_t e[KF][MT];
  if constexpr (SPARSE) {
#pragma unroll
    for (int f = 0; f < KF; ++f)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) e[f][mt] = meta_frag_e4m3<T>(M, tc_row0<T>(warp, mt), f);
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) wgmma::pin(d[mt]);
  wgmma::fence();
#pragma unroll
  for (int f = 0; f < KF; ++f)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      // this warpgroup's 64-row tile mt, 32 bytes of each row per k-step
      const uint64_t a = wgmma::smem_desc_sw128(ab + ((warp / 4) * MT + mt) * 64 * 128 + f * 32);
      const uint64_t b = wgmma::smem_desc(xb + f * (SPARSE ? 4 : 2) * kLBO, kLBO, 128);
      const uint32_t scale_d = f > 0 || !fresh;
      if constexpr (SPARSE) wgmma::Wgmma<N>::sparse_e4m3_ss(d[mt], a, b, e[f][mt], scale_d);
      else wgmma::Wgmma<N>::dense_e4m3_ss(d[mt], a, b, scale_d);
    }
  wgmma::commit();
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) wgmma::pin(d[mt]);
}

// Barrier 1 over the consumer warps only (the producer warp never joins it).
template <class C>
__device__ __forceinline__ void consumers_sync() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(C::kConsumers) : "memory");
}

// The end of a run of unit p's stages [s0, p.s]: written directly when the run is the whole
// unit, else summed through the workspace (counters: one int per unit, padded to 64; then one
// fp32 kBM x kTok tile per unit).
template <class C>
__device__ __forceinline__ void stream_epilogue(const Weights& w, const StreamGeom& g, const StreamPos& p, int64_t s0,
                                                int64_t m_total, uint16_t* y, int64_t ldy, void* ws,
                                                const float (&acc)[C::Tc::kMT][C::Tc::kNT][4], int* last) {
  using T = typename C::Tc;
  constexpr int MT = T::kMT, NT = T::kNT, kTile = C::kBM * C::kTok;
  TcUnit t;
  t.sparse = p.sparse(g);
  t.row0 = (t.sparse ? p.rb : p.rb - g.sparse_blocks) * C::kBM;
  t.rows = t.sparse ? w.ns : w.nd;
  t.first = t.sparse ? 0 : w.ns;
  t.m0 = 0;
  t.begin = t.end = 0;
  const int64_t done = p.s + 1 - s0;
  // (uniform for ptxas through a shuffle: a branch it cannot prove uniform makes it serialize
  // the wgmmas of StreamCfg::kSmemA)
  if (__shfl_sync(0xffffffffu, int(done == p.n), 0)) return tc_epilogue<T>(w, m_total, y, ldy, t, nullptr, 0, 1, acc);
  int* counters = static_cast<int*>(ws);
  float* tile = reinterpret_cast<float*>(counters + (g.row_blocks + 63) / 64 * 64) + p.rb * kTile;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g4 = lane >> 2, q4 = lane & 3;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int r = tc_row0<T>(warp, mt) + g4, tk = 8 * j + 2 * q4;
      atomicAdd(tile + r * C::kTok + tk, acc[mt][j][0]);
      atomicAdd(tile + r * C::kTok + tk + 1, acc[mt][j][1]);
      atomicAdd(tile + (r + 8) * C::kTok + tk, acc[mt][j][2]);
      atomicAdd(tile + (r + 8) * C::kTok + tk + 1, acc[mt][j][3]);
    }
  __threadfence();  // this block's sums are visible device-wide before its stages are counted
  consumers_sync<C>();
  if (threadIdx.x == 0) {
    const int before = atomicAdd(counters + p.rb, int(done));
    *last = before + done == p.n;
    if (*last) counters[p.rb] = 0;  // every block of the unit has counted: ready for the next launch
  }
  consumers_sync<C>();
  if (!__shfl_sync(0xffffffffu, *last, 0)) return;  // (uniform for ptxas: see gemv_stream_k)
  __threadfence();
  for (int i = threadIdx.x; i < kTile; i += C::kConsumers) {
    const int r = i / C::kTok, tk = i % C::kTok;
    const float v = __ldcg(tile + i);
    __stcg(tile + i, 0.f);
    if (t.row0 + r >= t.rows || tk >= m_total) continue;
    const int64_t s = t.first + t.row0 + r;
    const float sv = v * w.x_scales[tk];
    store_bf16(y + tk * ldy + (w.row_map ? w.row_map[s] : s), w.scales ? sv * w.scales[s] : sv);
  }
}

// xq: the E4M3 tokens chunk-major for kTok rows (quantize_rows_e4m3's chunk_rows = kTok).
template <class C>
__global__ void __launch_bounds__(C::kThreads, C::kMinBlocks) gemv_stream_k(const __grid_constant__ StreamMaps maps, Weights w,
                                                               const uint8_t* xq, int64_t m_total, uint16_t* y,
                                                               int64_t ldy, StreamGeom g, void* ws) {
#if SPENSE_WGMMA
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  constexpr int S = C::kStages, kWarps = C::kConsumers / 32;
  // full[slot]: lane 0 of the producer warp (one arrival with the stage's bytes);
  // empty[slot]: lane 0 of each consumer warp, done reading the slot.
  __shared__ __align__(8) uint64_t full[S], empty[S];
  __shared__ int last;
  const uint32_t raw = smem_addr(smem_raw), base = (raw + 1023) & ~1023u;
  uint8_t* smem = smem_raw + (base - raw);
  const int64_t g0 = g.total * blockIdx.x / gridDim.x, n = g.total * (blockIdx.x + 1) / gridDim.x - g0;
  // (the warp index through a shuffle: provably warp-uniform for ptxas, which otherwise treats the
  // producer/consumer split as a divergent path and serializes the in-flight wgmmas of kSmemA)
  const int warp = __shfl_sync(0xffffffffu, int(threadIdx.x >> 5), 0), lane = threadIdx.x & 31;
  if (threadIdx.x < S) {
    mbar_init(smem_addr(&full[threadIdx.x]), 1);
    mbar_init(smem_addr(&empty[threadIdx.x]), kWarps);
  }
  mbar_init_fence();
  __syncthreads();  // the only block-wide barrier: the producer warp leaves early
  StreamPos cur;
  cur.seek(g, g0);
  if (warp == kWarps) {  // producer: fills slot i % S with stage i once the consumers have freed it
    if (lane != 0) return;
    auto issue_weights = [&](const StreamPos& p, uint32_t st, uint32_t bar) {
      const bool sp = p.sparse(g);
      const int row0 = int((sp ? p.rb : p.rb - g.sparse_blocks) * C::kBM);
      mbar_expect(bar, uint32_t(C::kA + (sp ? C::kMeta + C::kXSparse : C::kXDense)));  // the tokens' bytes too
      tma_2d(st, sp ? &maps.values : &maps.dense, int(p.s * 128), row0, bar);
      if (sp) tma_2d(st + C::kA + C::kXSparse, &maps.meta, int(p.s * 32), row0, bar);
    };
    auto issue_tokens = [&](const StreamPos& p, uint32_t st, uint32_t bar) {
      const int bytes = p.sparse(g) ? C::kXSparse : C::kXDense;
      bulk_copy(st + C::kA, xq + p.s * bytes, uint32_t(bytes), bar);
    };
    StreamPos p = cur;
    // The first S stages' weights go out before the wait for the previous kernel (PDL).
    for (int i = 0; i < S && i < n; ++i, p.next(g)) issue_weights(p, base + i * C::kStage, smem_addr(&full[i]));
    griddep_wait();  // the tokens are the previous kernel's output
    p = cur;
#pragma unroll 1
    for (int64_t i = 0; i < n; ++i, p.next(g)) {
      const int slot = int(i % S);
      const uint32_t st = base + slot * C::kStage, fb = smem_addr(&full[slot]);
      if (i >= S) {
        mbar_wait(smem_addr(&empty[slot]), uint32_t((i / S - 1) & 1));
        issue_weights(p, st, fb);
      }
      issue_tokens(p, st, fb);
    }
    return;
  }
  griddep_wait();  // before the outputs and the workspace are written
  float acc[C::Tc::kMT][C::Tc::kNT][4] = {};
  int64_t s0 = cur.s;  // the first stage of the current run of the unit
  int held = -1;       // kSmemA: the slot the wgmmas in flight read (freed one stage later)
  bool fresh = true;   // kSmemA: the next stage starts a new sum
#pragma unroll 1
  for (int64_t i = 0; i < n; ++i) {
    const int slot = int(i % S);
    if constexpr (C::kSmemA) {
      mbar_wait_spin(smem_addr(&full[slot]), uint32_t((i / S) & 1));
      if (cur.sparse(g)) stream_issue_ss<C, true>(smem + slot * C::kStage, acc, fresh);
      else stream_issue_ss<C, false>(smem + slot * C::kStage, acc, fresh);
      fresh = false;
      wgmma::wait<1>();  // the previous stage's group is done: its slot is free
      __syncwarp();
      mbar_arrive_if(smem_addr(&empty[held < 0 ? slot : held]), held >= 0 && lane == 0);
      held = slot;
    } else {
      mbar_wait(smem_addr(&full[slot]), uint32_t((i / S) & 1));
      if (cur.sparse(g)) stream_compute<C, true>(smem + slot * C::kStage, acc);
      else stream_compute<C, false>(smem + slot * C::kStage, acc);
      __syncwarp();
      if (lane == 0) mbar_arrive(smem_addr(&empty[slot]));
    }
    if (cur.s + 1 == cur.n || i + 1 == n) {
      if constexpr (C::kSmemA) {
        wgmma::wait<0>();
#pragma unroll
        for (int mt = 0; mt < C::Tc::kMT; ++mt) wgmma::pin(reinterpret_cast<float(&)[4 * C::Tc::kNT]>(acc[mt]));
        __syncwarp();
        mbar_arrive_if(smem_addr(&empty[slot]), lane == 0);
        held = -1;
        fresh = true;
      }
      stream_epilogue<C>(w, g, cur, s0, m_total, y, ldy, ws, acc, &last);
      if constexpr (!C::kSmemA) {
#pragma unroll
        for (int mt = 0; mt < C::Tc::kMT; ++mt)
#pragma unroll
          for (int j = 0; j < C::Tc::kNT; ++j) acc[mt][j][0] = acc[mt][j][1] = acc[mt][j][2] = acc[mt][j][3] = 0.f;
      }
      s0 = 0;
    }
    cur.next(g);
  }
  // (nothing is in flight here, but without this wait ptxas adds one on the loop's back edge)
  if constexpr (C::kSmemA) wgmma::wait<0>();
#else
  __trap();  // the host launches the streamed shapes only where wgmma runs (tc_streamed)
#endif
}

// Weight rows per block of streamed shape `shape` (10-13).
constexpr int stream_rows(int shape) { return shape == kTcFirstStreamShape ? 128 : 64; }

StreamGeom stream_geom(const Weights& w, int bm) {
  StreamGeom g;
  g.sparse_blocks = (w.ns + bm - 1) / bm;
  g.row_blocks = g.sparse_blocks + (w.nd + bm - 1) / bm;
  g.sv = w.k / 256;
  g.sd = w.k / 128;
  g.total = g.sparse_blocks * g.sv + (g.row_blocks - g.sparse_blocks) * g.sd;
  return g;
}

// cuTensorMapEncodeTiled, from the driver through the runtime (no link to libcuda).
using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                 const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
EncodeTiled encode_tiled() {
  static const EncodeTiled fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    SPENSE_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q));
    if (!p || q != cudaDriverEntryPointSuccess) throw Error("gemv: the CUDA driver has no cuTensorMapEncodeTiled", 1);
    return reinterpret_cast<EncodeTiled>(p);
  }();
  return fn;
}

// A 2-D byte tensor of `rows` rows of `row_bytes` (ld bytes apart), boxes of box_bytes x box_rows.
CUtensorMap tensor_map(const void* base, int64_t row_bytes, int64_t rows, int64_t ld, int box_bytes, int box_rows,
                       bool swizzle128) {
  CUtensorMap m;
  const cuuint64_t dims[2] = {cuuint64_t(row_bytes), cuuint64_t(rows)}, strides[1] = {cuuint64_t(ld)};
  const cuuint32_t box[2] = {cuuint32_t(box_bytes), cuuint32_t(box_rows)}, es[2] = {1, 1};
  const CUresult r = encode_tiled()(&m, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void*>(base), dims, strides, box, es,
                                    CU_TENSOR_MAP_INTERLEAVE_NONE,
                                    swizzle128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_NONE,
                                    CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw Error("gemv: cuTensorMapEncodeTiled failed (CUresult " + std::to_string(int(r)) + ") for " +
                    std::to_string(rows) + " rows of " + std::to_string(row_bytes) + " bytes, ld " + std::to_string(ld),
                1);
  return m;
}

size_t stream_ws_bytes(const Weights& w, int bm, int64_t tok) {
  const StreamGeom g = stream_geom(w, bm);
  return size_t((g.row_blocks + 63) / 64 * 64) * sizeof(int) + size_t(g.row_blocks * bm * tok) * sizeof(float);
}

template <class C>
void launch_stream(const Weights& w, const void* xq, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  static const int resident = [] {  // blocks per SM at this shared-memory size
    SPENSE_CUDA_CHECK(cudaFuncSetAttribute(gemv_stream_k<C>, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem));
    int b = 0;
    SPENSE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, gemv_stream_k<C>, C::kThreads, C::kSmem));
    return b > 0 ? b : 1;
  }();
  const StreamGeom g = stream_geom(w, C::kBM);
  if (g.total <= 0) return;
  if (!w.stream_ws || w.stream_ws_bytes < stream_ws_bytes(w, C::kBM, C::kTok))
    throw Error("internal: the small-M kernel's streamed shape has no workspace for M=" + std::to_string(m), 1);
  StreamMaps maps;
  std::memset(&maps, 0, sizeof maps);
  if (w.ns > 0) {
    maps.values = tensor_map(w.sparse_values, w.k / 2, w.ns, w.k / 2, 128, C::kBM, true);
    maps.meta = tensor_map(w.sparse_meta, w.k / 8, w.ns, w.k / 8, 32, C::kBM, false);
  }
  if (w.nd > 0) maps.dense = tensor_map(w.dense, w.k, w.nd, w.dense_ld, 128, C::kBM, true);
  int64_t blocks = std::min<int64_t>(g.total, int64_t(tc_device().sms) * resident);
  if (w.stream_blocks > 0) blocks = std::min<int64_t>(blocks, w.stream_blocks);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(blocks));
  cfg.blockDim = dim3(C::kThreads);  // the consumer warpgroups, then the producer warp
  cfg.dynamicSmemBytes = C::kSmem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1] = {pdl_launch_attribute()};
  cfg.attrs = attr;
  cfg.numAttrs = w.pdl ? 1 : 0;
  SPENSE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, gemv_stream_k<C>, maps, w, static_cast<const uint8_t*>(xq), m,
                                       static_cast<uint16_t*>(y), ldy, g, w.stream_ws));
}

// Shape 10: one warpgroup of two 64-row tiles (128 rows), 3 slots (3 blocks per SM up to 16
// tokens, the copy-only measurement's best); 11: one warpgroup of 64 rows, 4 slots (up to 4
// blocks per SM); 12: 11 with StreamCfg::kSmemA (on an H100 as fast as 11: the consumer does not
// bound these shapes, docs/perf.md); 13: 12 with 8 slots, so one block per SM, 6-19% faster
// than 11 on every Qwen3-32B layer at M = 16 and 64 (fewer concurrent streams, a deeper ring;
// docs/perf.md). Per token tile of 8 / 16 / 32 / 64 (M <= 64).
template <int MT, int S, bool SS>
void launch_stream_shape(const Weights& w, const void* xq, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  if (m <= 8) launch_stream<StreamCfg<MT, 1, 1, S, SS>>(w, xq, m, y, ldy, s);
  else if (m <= 16) launch_stream<StreamCfg<MT, 1, 2, S, SS>>(w, xq, m, y, ldy, s);
  else if (m <= 32) launch_stream<StreamCfg<MT, 1, 4, S, SS>>(w, xq, m, y, ldy, s);
  else launch_stream<StreamCfg<MT, 1, 8, S, SS>>(w, xq, m, y, ldy, s);
}
void launch_stream_m(const Weights& w, const void* xq, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  if (w.tc_shape == kTcFirstStreamShape) launch_stream_shape<2, 3, false>(w, xq, m, y, ldy, s);
  else if (w.tc_shape == kTcFirstStreamShape + 1) launch_stream_shape<1, 4, false>(w, xq, m, y, ldy, s);
  else if (w.tc_shape == kTcFirstStreamShape + 2) launch_stream_shape<1, 4, true>(w, xq, m, y, ldy, s);
  else launch_stream_shape<1, 8, true>(w, xq, m, y, ldy, s);
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

// Six shapes per token-tile size; make_gemv_linear times each. Shapes 0-3 (mma.sync): the first
// two are the best two of a sweep on the Qwen3-32B layers (H200, docs/perf.md); the third (added
// for M = 16-64, where every block re-reads the token tile from L2 each stage) has more weight
// rows per block, so that the token bytes per stage shrink against the weight bytes. The fourth
// gives each warp 4 row tiles (64 rows; E4M3 at M > 32: 3, which fits the registers): every B
// fragment a warp loads from shared memory by ldmatrix then feeds 3-4 MMAs, not 1-2, which
// halves the shared-memory reads of the token tile per weight byte (at M = 64 and MT = 2 they
// are 4x the weight bytes in BF16, 8x in E4M3). On an H100 it won FP8 o and down at M = 64,
// not BF16 (docs/perf.md). Shapes 4-5 (wgmma, sm_90a only: tc_wgmma_ok): one
// warpgroup of 64 rows, and two warpgroups of 128 rows each (256 rows: a quarter of the token
// bytes per weight byte). First: the one for untimed M. E4M3 stages carry twice the token
// columns, so large token tiles take fewer stages. Shapes 6-9 (tc_e4m3_tokens; elsewhere 6, 8
// and 9 run as 4, 7 as 5): the warpgroups of 4-5 on E4M3 tokens, whose stages hold half the token
// bytes, so they take more stages (6: two blocks per SM at every token tile), 8: two
// warpgroups of 64 rows, two blocks per SM (eight warps issuing copies, as shape 1 at M = 1),
// and 9: one warpgroup of 64 rows with shallow pipelines, 3-4 blocks per SM (the copy-only
// measurement of docs/perf.md found more resident blocks better than deeper pipelines).
template <bool FP8>
void launch_tc_m(const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  int v = w.tc_shape >= kTcFirstWgmmaShape && !tc_device().wgmma ? 0 : w.tc_shape;
  if (v >= kTcFirstE4m3Shape && !w.e4m3_tokens)  // BF16 tokens
    v = v == kTcFirstE4m3Shape + 1 || (v >= kTcFirstStreamShape && stream_rows(v) == 128) ? 5 : 4;
  if (v >= kTcFirstStreamShape) v = stream_rows(v) == 128 ? 7 : 6;  // not streamed (tc_streamed): same rows per warpgroup
  if (v >= kTcFirstE4m3Shape) {
    if (m <= 8) {
      if (v == 6) launch_tc_q<1, 1, 4, 6>(w, x, ldx, m, y, ldy, s);
      else if (v == 7) launch_tc_q<2, 1, 8, 4>(w, x, ldx, m, y, ldy, s);
      else if (v == 8) launch_tc_q<1, 1, 8, 4>(w, x, ldx, m, y, ldy, s);
      else launch_tc_q<1, 1, 4, 3>(w, x, ldx, m, y, ldy, s);
    } else if (m <= 16) {
      if (v == 6) launch_tc_q<1, 2, 4, 6>(w, x, ldx, m, y, ldy, s);
      else if (v == 7) launch_tc_q<2, 2, 8, 4>(w, x, ldx, m, y, ldy, s);
      else if (v == 8) launch_tc_q<1, 2, 8, 4>(w, x, ldx, m, y, ldy, s);
      else launch_tc_q<1, 2, 4, 3>(w, x, ldx, m, y, ldy, s);
    } else if (m <= 32) {
      if (v == 6) launch_tc_q<1, 4, 4, 5>(w, x, ldx, m, y, ldy, s);
      else if (v == 7) launch_tc_q<2, 4, 8, 4>(w, x, ldx, m, y, ldy, s);
      else if (v == 8) launch_tc_q<1, 4, 8, 3>(w, x, ldx, m, y, ldy, s);
      else launch_tc_q<1, 4, 4, 3>(w, x, ldx, m, y, ldy, s);
    } else {
      if (v == 6) launch_tc_q<1, 8, 4, 4>(w, x, ldx, m, y, ldy, s);
      else if (v == 7) launch_tc_q<2, 8, 8, 3>(w, x, ldx, m, y, ldy, s);
      else if (v == 8) launch_tc_q<1, 8, 8, 2>(w, x, ldx, m, y, ldy, s);
      else launch_tc_q<1, 8, 4, 2>(w, x, ldx, m, y, ldy, s);
    }
    return;
  }
  if (m <= 8) {
    if (v == 1) launch_tc<1, 1, 8, 4, FP8>(w, x, ldx, m, y, ldy, s);
    else if (v == 2) launch_tc<2, 1, 8, 4, FP8>(w, x, ldx, m, y, ldy, s);
    else if (v == 3) launch_tc<4, 1, 4, FP8 ? 4 : 5, FP8>(w, x, ldx, m, y, ldy, s);
    else if (v == 4) launch_tc<1, 1, 4, 6, FP8, true>(w, x, ldx, m, y, ldy, s);
    else if (v == 5) launch_tc<2, 1, 8, 4, FP8, true>(w, x, ldx, m, y, ldy, s);
    else launch_tc<1, 1, 4, 5, FP8>(w, x, ldx, m, y, ldy, s);
  } else if (m <= 16) {
    if (v == 1) launch_tc<1, 2, 4, 6, FP8>(w, x, ldx, m, y, ldy, s);
    else if (v == 2) launch_tc<2, 2, 8, 4, FP8>(w, x, ldx, m, y, ldy, s);
    else if (v == 3) launch_tc<4, 2, 4, 4, FP8>(w, x, ldx, m, y, ldy, s);
    else if (v == 4) launch_tc<1, 2, 4, 6, FP8, true>(w, x, ldx, m, y, ldy, s);
    else if (v == 5) launch_tc<2, 2, 8, 3, FP8, true>(w, x, ldx, m, y, ldy, s);
    else launch_tc<1, 2, 8, 4, FP8>(w, x, ldx, m, y, ldy, s);
  } else if (m <= 32) {
    if (v == 1) launch_tc<1, 4, 8, 4, FP8>(w, x, ldx, m, y, ldy, s);
    else if (v == 2) launch_tc<2, 4, 8, FP8 ? 3 : 4, FP8>(w, x, ldx, m, y, ldy, s);
    else if (v == 3) launch_tc<4, 4, 4, FP8 ? 3 : 4, FP8>(w, x, ldx, m, y, ldy, s);
    else if (v == 4) launch_tc<1, 4, 4, 4, FP8, true>(w, x, ldx, m, y, ldy, s);
    else if (v == 5) launch_tc<2, 4, 8, 3, FP8, true>(w, x, ldx, m, y, ldy, s);
    else launch_tc<1, 4, 8, 3, FP8>(w, x, ldx, m, y, ldy, s);
  } else {
    if (v == 1) launch_tc<2, 8, 4, 4, FP8>(w, x, ldx, m, y, ldy, s);
    else if (v == 2) launch_tc<1, 8, 8, 4, FP8>(w, x, ldx, m, y, ldy, s);
    else if (v == 3) launch_tc<FP8 ? 3 : 4, 8, 4, 3, FP8>(w, x, ldx, m, y, ldy, s);
    else if (v == 4) launch_tc<1, 8, 4, 4, FP8, true>(w, x, ldx, m, y, ldy, s);
    else if (v == 5) launch_tc<2, 8, 8, FP8 ? 2 : 3, FP8, true>(w, x, ldx, m, y, ldy, s);
    else launch_tc<2, 8, FP8 ? 4 : 8, 3, FP8>(w, x, ldx, m, y, ldy, s);
  }
}

// The most shared memory any shape above asks for (tc_eligible: the device must give it).
template <bool FP8>
constexpr int tc_largest_smem() {
  constexpr int v[] = {TcCfg<1, 1, 8, 4, FP8>::kSmem, TcCfg<2, 1, 8, 4, FP8>::kSmem, TcCfg<1, 1, 4, 5, FP8>::kSmem,
                       TcCfg<1, 2, 4, 6, FP8>::kSmem, TcCfg<2, 2, 8, 4, FP8>::kSmem, TcCfg<1, 2, 8, 4, FP8>::kSmem,
                       TcCfg<1, 4, 8, 4, FP8>::kSmem, TcCfg<2, 4, 8, FP8 ? 3 : 4, FP8>::kSmem,
                       TcCfg<1, 4, 8, 3, FP8>::kSmem, TcCfg<2, 8, 4, 4, FP8>::kSmem, TcCfg<1, 8, 8, 4, FP8>::kSmem,
                       TcCfg<2, 8, FP8 ? 4 : 8, 3, FP8>::kSmem, TcCfg<4, 1, 4, FP8 ? 4 : 5, FP8>::kSmem,
                       TcCfg<4, 2, 4, 4, FP8>::kSmem, TcCfg<4, 4, 4, FP8 ? 3 : 4, FP8>::kSmem,
                       TcCfg<FP8 ? 3 : 4, 8, 4, 3, FP8>::kSmem, TcCfg<1, 1, 4, 6, FP8, true>::kSmem,
                       TcCfg<2, 1, 8, 4, FP8, true>::kSmem, TcCfg<1, 2, 4, 6, FP8, true>::kSmem,
                       TcCfg<2, 2, 8, 3, FP8, true>::kSmem, TcCfg<1, 4, 4, 4, FP8, true>::kSmem,
                       TcCfg<2, 4, 8, 3, FP8, true>::kSmem, TcCfg<1, 8, 4, 4, FP8, true>::kSmem,
                       TcCfg<2, 8, 8, FP8 ? 2 : 3, FP8, true>::kSmem,
                       // E4M3-token shapes (the same sizes for BF16: only ever launched for E4M3)
                       TcCfg<1, 1, 4, 6, true, true, false, true>::kSmem, TcCfg<2, 1, 8, 4, true, true, false, true>::kSmem,
                       TcCfg<1, 2, 4, 6, true, true, false, true>::kSmem, TcCfg<2, 2, 8, 4, true, true, false, true>::kSmem,
                       TcCfg<1, 4, 4, 5, true, true, false, true>::kSmem, TcCfg<2, 4, 8, 4, true, true, false, true>::kSmem,
                       TcCfg<1, 8, 4, 4, true, true, false, true>::kSmem, TcCfg<2, 8, 8, 3, true, true, false, true>::kSmem,
                       TcCfg<1, 1, 8, 4, true, true, false, true>::kSmem, TcCfg<1, 2, 8, 4, true, true, false, true>::kSmem,
                       TcCfg<1, 4, 8, 3, true, true, false, true>::kSmem, TcCfg<1, 8, 8, 2, true, true, false, true>::kSmem,
                       TcCfg<1, 1, 4, 3, true, true, false, true>::kSmem, TcCfg<1, 2, 4, 3, true, true, false, true>::kSmem,
                       TcCfg<1, 4, 4, 3, true, true, false, true>::kSmem, TcCfg<1, 8, 4, 2, true, true, false, true>::kSmem};
  int m = 0;
  for (int x : v) m = x > m ? x : m;
  return m;
}

}  // namespace

bool tc_wgmma_ok() { return tc_device().wgmma; }

bool tc_e4m3_tokens(const Weights& w, int shape) {
  return shape >= kTcFirstE4m3Shape && w.fp8 && tc_device().wgmma;
}

bool tc_streamed(const Weights& w, int shape, int64_t m) {
  return shape >= kTcFirstStreamShape && tc_e4m3_tokens(w, shape) && !w.axis_in && m >= 1 && m <= kStreamMaxM;
}

int64_t tc_stream_tokens(int64_t m) { return m <= 8 ? 8 : m <= 16 ? 16 : m <= 32 ? 32 : 64; }

size_t tc_stream_workspace_bytes(const Weights& w, int shape, int64_t m) {
  return stream_ws_bytes(w, stream_rows(shape), tc_stream_tokens(m));
}

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
  // The block shapes' shared memory (launch_tc_m; sized for Hopper's 227 KB) must fit the device:
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
    if (tc_streamed(w, w.tc_shape, m)) launch_stream_m(w, x, m, y, ldy, s);  // x chunk-major (tc_stream_tokens)
    else launch_tc_m<true>(w, x, ldx, m, y, ldy, s);
    return;
  }
  if (w.tensor_cores && tc_eligible(w) && aligned) {
    if (w.fp8) launch_tc_m<true>(w, x, ldx, m, y, ldy, s);
    else launch_tc_m<false>(w, x, ldx, m, y, ldy, s);
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
