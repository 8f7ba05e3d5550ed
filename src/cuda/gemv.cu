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

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "cuda/async_copy.cuh"
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

// Where the 16-byte weight span c (and its metadata) of stored row s0 + r of one kind is, in the
// tiled storage (gemv.h) or, for an all-dense layer, row-major: span c is chunk c % 8 of stage
// c / 8 of the row.
struct RowsAt {
  const uint8_t* v = nullptr;  // stage 0 of row s0
  int64_t row_step = 0;        // bytes from row s0 to s0 + 1
  int64_t stage_step = 0;      // bytes from a row's stage to its next
  int swz = 0, swz_mask = 0;   // chunk c of row s0 + r sits at chunk c ^ ((swz + r) & swz_mask)
  const uint8_t* m = nullptr;  // 2:4: metadata of row s0's stage 0
  int64_t m_row_step = 0, m_stage_step = 0;
  __device__ __forceinline__ const uint8_t* span(int r, int64_t c) const {
    return v + r * row_step + (c >> 3) * stage_step + ((int(c & 7) ^ ((swz + r) & swz_mask)) << 4);
  }
  // Where a span's metadata is: 16 bits per 16 columns, so 2 bytes per BF16 span and 4 per E4M3 span.
  template <bool FP8>
  __device__ __forceinline__ const uint8_t* meta_ptr(int r, int64_t c) const {
    return m + r * m_row_step + (c >> 3) * m_stage_step + (c & 7) * (FP8 ? 4 : 2);
  }
};

// Row s0 (< ns: 2:4, else dense) of w as RowsAt.
template <bool FP8>
__device__ __forceinline__ RowsAt rows_at(const Weights& w, int64_t s0) {
  RowsAt a;
  const bool sp = s0 < w.ns;
  const int64_t row = sp ? s0 : s0 - w.ns;
  const int64_t row_bytes = (sp ? w.k / 2 : w.k) * (FP8 ? 1 : 2);
  const uint8_t* base = static_cast<const uint8_t*>(sp ? w.sparse_values : w.dense);
  if (!w.tiled) {  // an all-dense layer's row-major weights
    a.v = base + size_t(row) * size_t(w.dense_ld) * (FP8 ? 1 : 2);
    a.row_step = w.dense_ld * (FP8 ? 1 : 2);
    a.stage_step = kTileBytes;
    return a;
  }
  const int64_t stages = tile_stages(row_bytes), rb = row / kTileRows, r = row % kTileRows;
  a.v = base + (rb * stages * kTileRows + r) * kTileBytes;
  a.row_step = kTileBytes;
  a.stage_step = kTileRows * kTileBytes;
  a.swz = int(r & 7);
  a.swz_mask = 7;
  if (sp) {
    constexpr int mb = kMetaTileBytes(FP8);
    a.m = reinterpret_cast<const uint8_t*>(w.sparse_meta) + (rb * stages * kTileRows + r) * mb;
    a.m_row_step = mb;
    a.m_stage_step = kTileRows * mb;
  }
  return a;
}

// The rows [s0, s0 + R) of one kind (at): U spans per lane in flight (their weights and
// metadata loaded before any arithmetic, so each lane keeps U x R 16-byte loads outstanding).
// Spans part*32 + lane + j * 32 * wk of the row: the wk warps of a row group split K.
template <int M, bool FP8, bool SPARSE, int U>
__device__ __forceinline__ void rows_dot(const RowsAt& at, int64_t k, const uint16_t* xb, int64_t ldx, int mrows,
                                         int lane, int part, int wk, float (&acc)[kRowsPerWarp][M]) {
  constexpr int R = kRowsPerWarp, C = Span<FP8, SPARSE>::kCols, XW = Span<FP8, SPARSE>::kXWords;
  const int64_t spans = k / C;
  const int64_t step = int64_t(32) * wk;
  // A lane's spans c0, c0 + step, ... keep c % 8 (step is a multiple of 32): the row and chunk
  // part of their addresses is set once, the stage part is a shift (stage_step is a power of 2).
  const int64_t c_first = part * 32 + lane;
  int v_off[R], m_off[R];  // < 2^31: row r of R and a chunk
#pragma unroll
  for (int r = 0; r < R; ++r) {
    v_off[r] = int(at.span(r, c_first) - at.v - (c_first >> 3) * at.stage_step);
    if constexpr (SPARSE) m_off[r] = int(at.template meta_ptr<FP8>(r, c_first) - at.m - (c_first >> 3) * at.m_stage_step);
  }
  const int v_shift = __ffsll(at.stage_step) - 1, m_shift = SPARSE ? __ffsll(at.m_stage_step) - 1 : 0;
  for (int64_t c0 = c_first; c0 < spans; c0 += step * U) {
    uint4 wv[U][R];
    uint32_t mt[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = c0 + step * u;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (c < spans) {
          wv[u][r] = ldg16(at.v + v_off[r] + ((c >> 3) << v_shift));
          if constexpr (SPARSE) {
            const uint8_t* p = at.m + m_off[r] + ((c >> 3) << m_shift);
            if constexpr (FP8) mt[u][r] = __ldg(reinterpret_cast<const uint32_t*>(p));
            else mt[u][r] = __ldg(reinterpret_cast<const uint16_t*>(p));
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
  const RowsAt at = s0 < n ? rows_at<FP8>(w, s0) : RowsAt{};
  {  // this lane's first weight spans toward L2 while the previous kernel may still run (PDL)
    const int64_t spans = s0 < w.ns ? w.k / Span<FP8, true>::kCols : w.k / Span<FP8, false>::kCols;
    const int64_t c = int64_t(part) * 32 + lane;
    if (s0 < n && c < spans) {
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (s0 + r < n) prefetch_l2(at.span(r, c));
    }
  }
  griddep_wait();  // x is the previous kernel's output
  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.f;
  if (s0 < w.ns) {  // 2:4 rows (ns is a multiple of R)
    rows_dot<M, FP8, true, U>(at, w.k, xb, ldx, mrows, lane, part, wk, acc);
  } else if (s0 < n) {
    rows_dot<M, FP8, false, U>(at, w.k, xb, ldx, mrows, lane, part, wk, acc);
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
  const int64_t spans = w.ns > 0 ? w.k / (w.fp8 ? 32 : 16) : w.k / (w.fp8 ? 16 : 8);
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
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = w.pdl && tc_device().clusters ? 1 : 0;  // clusters: sm_90+, as PDL
  const auto* xp = static_cast<const uint16_t*>(x);
  auto* yp = static_cast<uint16_t*>(y);
  if (w.fp8) SPENSE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, gemv_k<M, true, U>, w, xp, ldx, m, yp, ldy, wk));
  else SPENSE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, gemv_k<M, false, U>, w, xp, ldx, m, yp, ldy, wk));
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
// STREAM (the streamed shapes, gemv_stream_k): the stage's weight rows land as the tiled
// storage holds them (kTileBytes apart, chunks swizzled), copied whole by the copy engine.
template <int MT, int NT, int W, int S, bool FP8 = false, bool WG = false, bool STREAM = false>
struct TcCfg {
  static constexpr bool kFP8 = FP8, kWG = WG, kStream = STREAM;
  static_assert(!WG || W % 4 == 0, "warpgroup shapes take whole warpgroups");
  static_assert(!(WG && STREAM), "streamed shapes use mma.sync");
  static constexpr int kMT = MT, kNT = NT, kThreads = 32 * W, kStages = S;
  static constexpr int kBM = 16 * MT * W, kTok = 8 * NT;
  static constexpr int kSparseCols = FP8 ? 256 : 128;  // columns of a 2:4 stage
  static constexpr int kDenseCols = FP8 ? 128 : 64;    // columns of a dense stage
  static constexpr int kMetaBytes = kSparseCols / 8;   // a 2:4 stage's metadata per row
  static constexpr int kXPitch = 2 * kSparseCols + 16;  // shared-memory pitch of a token's columns
  static constexpr int kAPitch = STREAM ? kTileBytes : kTcRowPitch;  // bytes between weight rows in a stage
  static_assert(!STREAM || kBM % kTileRows == 0, "streamed stages are whole tiles");
  static constexpr int kA = kBM * kAPitch, kMeta = kBM * kMetaBytes;
  static constexpr int kX = WG ? kTok * 2 * kSparseCols : kTok * kXPitch;
  static constexpr int kStage = kA + kMeta + kX;
  static constexpr int kRedPitch = kTok + 1;  // fp32 partial tile for the cluster reduction
  static constexpr int kSmem = S * kStage;    // the reduction reuses the drained pipeline
  static constexpr int kARowsPerPass = kThreads / 8;  // 8 16-byte copies per weight row
  static constexpr int kAChunks = kBM / kARowsPerPass;
  static constexpr int kMetaChunks = kBM * kMetaBytes / 16;  // 16-byte metadata copies per stage
  static constexpr int kMetaPerThread = (kMetaChunks + kThreads - 1) / kThreads;
  static_assert(kAChunks * kARowsPerPass == kBM && kMetaPerThread <= 4, "four metadata copies per thread at most");
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

template <class C>
__device__ __forceinline__ TcUnit tc_unit(const Weights& w, int64_t u, int64_t row_blocks, int64_t sparse_blocks,
                                          int slice, int slices) {
  const int64_t rb = u % row_blocks;
  TcUnit t;
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
// of the tile's kTok x XCH chunks. Stage i reads i tiles further along each weight row than stage
// 0 in the tiled storage (gemv.h; i * 128 bytes in an all-dense layer's row-major weights), as
// many metadata tiles further, and 2 * kCols columns further along each token row. In shared
// memory the weight chunks land unswizzled, in rows padded to kTcRowPitch.
template <class C, bool SPARSE>
struct TcCopies {
  static_assert(kTcRowBytes == kTileBytes && C::kMetaBytes == kMetaTileBytes(C::kFP8), "a stage is one tile");
  static constexpr int kCols = SPARSE ? C::kSparseCols : C::kDenseCols;  // weight columns per stage
  static constexpr int XCH = kCols / 8;  // 16-byte chunks of a token's stage columns
  static constexpr int XN = (C::kTok * XCH + C::kThreads - 1) / C::kThreads;
  static constexpr int MN = C::kMetaPerThread;
  const uint8_t* a[C::kAChunks];
  const uint8_t* meta[MN];
  const uint8_t* xs[XN];
  uint32_t a_dst, meta_dst[MN], x_dst[XN];
  uint32_t a_ok = 0, meta_ok = 0, meta_any = 0, x_ok = 0, x_any = 0;
  int64_t a_step;  // bytes from a row's stage to its next: whole tiles, or 128 bytes row-major
  static constexpr int kMetaStep = kTileRows * C::kMetaBytes;

  __device__ __forceinline__ TcCopies(const Weights& w, const uint16_t* x, int64_t ldx, int64_t m_total,
                                      const TcUnit& t) {
    const int tid = threadIdx.x;
    const uint8_t* abase = SPARSE ? static_cast<const uint8_t*>(w.sparse_values) : static_cast<const uint8_t*>(w.dense);
    const int64_t eb = C::kFP8 ? 1 : 2;
    const int64_t stages = tile_stages((SPARSE ? w.k / 2 : w.k) * eb);  // of the tiled storage
    a_step = w.tiled ? kTileRows * kTileBytes : kTcRowBytes;
#pragma unroll
    for (int j = 0; j < C::kAChunks; ++j) {
      const int64_t r = t.row0 + tid / 8 + j * C::kARowsPerPass;
      const bool ok = r < t.rows;
      const int64_t rr = ok ? r : 0;
      // Chunk tid % 8 of the row's stage t.begin (swizzled in the tiled storage, see gemv.h).
      a[j] = w.tiled ? abase + ((rr / kTileRows * stages + t.begin) * kTileRows + rr % kTileRows) * kTileBytes +
                           16 * ((tid % 8) ^ (rr % 8))
                     : abase + rr * w.dense_ld * eb + t.begin * kTcRowBytes + 16 * (tid % 8);
      a_ok |= uint32_t(ok) << j;
    }
    a_dst = (tid / 8) * kTcRowPitch + 16 * (tid % 8);
#pragma unroll
    for (int j = 0; j < MN; ++j) {
      constexpr int per_row = C::kMetaBytes / 16;
      const int c = tid + j * C::kThreads, row = c / per_row, piece = c % per_row;
      const bool any = SPARSE && c < C::kMetaChunks, ok = any && t.row0 + row < t.rows;
      const int64_t rr = ok ? t.row0 + row : 0;
      meta[j] = SPARSE ? reinterpret_cast<const uint8_t*>(w.sparse_meta) +
                             ((rr / kTileRows * stages + t.begin) * kTileRows + rr % kTileRows) * C::kMetaBytes +
                             16 * piece
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
      xs[j] = reinterpret_cast<const uint8_t*>(x + (ok ? t.m0 + tk : 0) * ldx + t.begin * kCols + q * 8);
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
      cp16(stage + a_dst + j * C::kARowsPerPass * kTcRowPitch, a[j] + i * a_step, (a_ok >> j) & 1);
#pragma unroll
    for (int j = 0; j < MN; ++j)
      if ((meta_any >> j) & 1) cp16(stage + meta_dst[j], meta[j] + i * kMetaStep, (meta_ok >> j) & 1);
  }
  __device__ __forceinline__ void issue_x(int64_t i, uint32_t stage) const {
#pragma unroll
    for (int j = 0; j < XN; ++j)
      if ((x_any >> j) & 1) cp16(stage + x_dst[j], xs[j] + i * 2 * kCols, (x_ok >> j) & 1);
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
// of the tile's rows row0 .. row0 + 15 in a landed stage: ldmatrix, or E4M3 pairs widened.
// Byte b of weight row r in a landed stage: padded rows, or (streamed shapes) the tiled
// storage's rows with their 16-byte chunks swizzled by r % 8 (gemv.h).
template <class C>
__device__ __forceinline__ int a_at(int r, int b) {
  if constexpr (C::kStream) return r * kTileBytes + ((((b >> 4) ^ r) & 7) << 4) + (b & 15);
  else return r * kTcRowPitch + b;
}

template <class C>
__device__ __forceinline__ void a_frag(const uint8_t* A, int row0, int col_bytes, uint32_t (&a)[4]) {
  const int lane = threadIdx.x & 31;
  if constexpr (C::kFP8) {  // fragment row g's columns 2t, 2t + 1, 2t + 8, 2t + 9 (and row g + 8's)
    const int r = row0 + (lane >> 2), b = 2 * (lane & 3) + col_bytes / 2;
    a[0] = bf16x2_of_e4m3_smem(A + a_at<C>(r, b));
    a[1] = bf16x2_of_e4m3_smem(A + a_at<C>(r + 8, b));
    a[2] = bf16x2_of_e4m3_smem(A + a_at<C>(r, b + 8));
    a[3] = bf16x2_of_e4m3_smem(A + a_at<C>(r + 8, b + 8));
  } else {
    const int a_row = (lane & 7) + 8 * ((lane >> 3) & 1), a_byte = 16 * (lane >> 4);
    ldsm_x4(smem_addr(A + a_at<C>(row0 + a_row, a_byte + col_bytes)), a);
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
  // Fragments per stage: one per 2:4 k-step (32 columns, 16 kept), or per dense k16.
  constexpr int KF = SPARSE ? kCols / 32 : kCols / 16;
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
      if constexpr (SPARSE) e[f][mt] = meta_frag<C>(M, row0, f);
    }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) wgmma::pin(d[mt]);
  wgmma::fence();
#pragma unroll
  for (int f = 0; f < KF; ++f)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      // A 2:4 k-step spans 4 chunks of 8 columns along K, a dense k16 two.
      const uint64_t b = wgmma::smem_desc(xb + f * (SPARSE ? 4 : 2) * kLBO, kLBO, 128);
      if constexpr (SPARSE) wgmma::Wgmma<N>::sparse(d[mt], a[f][mt], b, e[f][mt]);
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

template <int MT, int NT, int W, int S, bool FP8, bool WG = false>
void launch_tc(const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  using C = TcCfg<MT, NT, W, S, FP8, WG>;
  static const int resident = [] {  // blocks per SM at this shared-memory size
    SPENSE_CUDA_CHECK(cudaFuncSetAttribute(gemv_tc_k<C>, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem));
    int b = 0;
    SPENSE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, gemv_tc_k<C>, C::kThreads, C::kSmem));
    return b > 0 ? b : 1;
  }();
  const TcDevice& dev = tc_device();
  const int64_t slots = int64_t(dev.sms) * resident;
  const int64_t sparse_blocks = (w.ns + C::kBM - 1) / C::kBM, dense_blocks = (w.nd + C::kBM - 1) / C::kBM;
  const int64_t row_blocks = sparse_blocks + dense_blocks, units = row_blocks * ((m + C::kTok - 1) / C::kTok);
  // The split: Weights::tc_slices (make_gemv_linear times each per M), else the smallest that
  // fills every SM's resident slots twice.
  int slices = 1;
  if (w.tc_slices > 0) slices = tc_effective_slices(w, w.tc_slices);
  else
    while (dev.clusters && slices < 8 && units * slices < 2 * slots && w.k / C::kSparseCols >= 8 * slices) slices *= 2;
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
    attr[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[na].val.programmaticStreamSerializationAllowed = 1;
    ++na;
  }
  cfg.attrs = attr;
  cfg.numAttrs = na;
  SPENSE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, gemv_tc_k<C>, w, static_cast<const uint16_t*>(x), ldx, m,
                                       static_cast<uint16_t*>(y), ldy, sparse_blocks, row_blocks));
}

// ---- Streamed shapes (6-7): persistent blocks, the copy engine, stream-K over the stages ----
// tools/device/stream_pattern.cu measured what limits the block pipeline above: with one block
// per unit, blocks start and drain their pipelines once per unit, and 16-byte copies of
// 128-byte row pieces stream the weights at 51-69% of the copy bandwidth even with no
// arithmetic; persistent blocks that each stream one contiguous share of the layer's stages,
// whole tiles at a time through the copy engine (cp.async.bulk), reached 85-94% (H200,
// docs/perf.md). So: the layer's units (row blocks, 2:4 first, times token tiles) are laid end
// to end as one sequence of stages (a stage = 128 bytes of every row of a block, tiled storage,
// so both kinds' stages hold the same bytes), every resident block takes an equal run of it,
// and its pipeline runs on across unit boundaries. A unit that lies wholly in one block's run is
// written directly; one cut between blocks is summed in Weights::stream_ws (fp32 atomics) and
// written by the block that adds its last stages, which also zeroes the tile and its counter.
// Warp-specialized: one producer warp after the W consumer warps fills the S slots (lane 0: the
// stage's weight and metadata tiles as bulk copies; all 32 lanes: the token chunks by cp.async,
// each lane's arrival on the slot's "full" mbarrier deferred until its copies land), and the
// consumer warps free a slot on its "empty" mbarrier once they have read it. No block-wide
// barrier per stage: a unit's epilogue in one warp group does not stall the copies.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define SPENSE_BULK 1
#else
#define SPENSE_BULK 0
#endif

__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
#if SPENSE_BULK
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
#endif
}
__device__ __forceinline__ void mbar_init_fence() {
#if SPENSE_BULK
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
// Arrives on bar and adds `bytes` to the copies its current phase waits for.
__device__ __forceinline__ void mbar_expect(uint32_t bar, uint32_t bytes) {
#if SPENSE_BULK
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#endif
}
// Waits for the phase of bar with this parity to complete. A copy that never lands (a bug)
// traps after about 10 s instead of hanging the GPU.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
#if SPENSE_BULK
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
__device__ __forceinline__ void bulk_copy(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
#if SPENSE_BULK
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
#else
  __trap();  // the host launches the streamed shapes on sm_90 only
#endif
}

// Arrives on bar (release: this thread's earlier shared-memory reads of the slot are done).
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
#if SPENSE_BULK
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#endif
}
// Arrives on bar once every cp.async this thread has issued so far has landed (one of the
// phase's expected arrivals: .noinc).
__device__ __forceinline__ void mbar_arrive_cp(uint32_t bar) {
#if SPENSE_BULK
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
#endif
}
// Barrier 1 over the consumer warps only (the producer warp never joins it).
template <class C>
__device__ __forceinline__ void consumers_sync() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(C::kThreads) : "memory");
}

// The layer's stage sequence: per token tile, the 2:4 row blocks' stages, then the dense ones'.
struct StreamGeom {
  int64_t sparse_blocks = 0, row_blocks = 0;  // row blocks of kBM rows, 2:4 first
  int64_t sv = 0, sd = 0;                     // stages of a 2:4 / dense unit
  int64_t per_tile = 0, total = 0;            // stages of one token tile's units / of all
};

// A position in the sequence: token tile, row block, stage within the unit, the unit's stages.
struct StreamPos {
  int64_t tt = 0, rb = 0, s = 0, n = 0;
  __device__ __forceinline__ void seek(const StreamGeom& g, int64_t i) {
    tt = i / g.per_tile;
    int64_t r = i % g.per_tile;
    if (r < g.sparse_blocks * g.sv) {
      rb = r / g.sv, s = r % g.sv, n = g.sv;
    } else {
      r -= g.sparse_blocks * g.sv;
      rb = g.sparse_blocks + r / g.sd, s = r % g.sd, n = g.sd;
    }
  }
  __device__ __forceinline__ void next(const StreamGeom& g) {
    if (++s < n) return;
    s = 0;
    if (++rb == g.row_blocks) rb = 0, ++tt;
    n = rb < g.sparse_blocks ? g.sv : g.sd;
  }
  __device__ __forceinline__ bool sparse(const StreamGeom& g) const { return rb < g.sparse_blocks; }
};

// Thread 0: stage p's weight tiles (and 2:4 metadata tiles) into the slot at `stage`, on `bar`.
template <class C>
__device__ __forceinline__ void stream_issue_weights(const Weights& w, const StreamGeom& g, const StreamPos& p,
                                                     uint32_t stage, uint32_t bar) {
  constexpr int kTiles = C::kBM / kTileRows, kVal = kTileRows * kTileBytes, kMet = kTileRows * C::kMetaBytes;
  const bool sp = p.sparse(g);
  const int64_t rows = sp ? w.ns : w.nd, stages = sp ? g.sv : g.sd;
  const int64_t t0 = (sp ? p.rb : p.rb - g.sparse_blocks) * kTiles;
  const int64_t nt = std::min<int64_t>(kTiles, (rows + kTileRows - 1) / kTileRows - t0);  // the last block may be short
  mbar_expect(bar, uint32_t(nt * (sp ? kVal + kMet : kVal)));
  const uint8_t* v = static_cast<const uint8_t*>(sp ? w.sparse_values : w.dense);
  const uint8_t* m = reinterpret_cast<const uint8_t*>(w.sparse_meta);
  for (int j = 0; j < nt; ++j) {
    const int64_t tile = (t0 + j) * stages + p.s;
    bulk_copy(stage + j * kVal, v + tile * kVal, kVal, bar);
    if (sp) bulk_copy(stage + C::kA + j * kMet, m + tile * kMet, kMet, bar);
  }
}

// Lane `lane` of the producer warp: its cp.async chunks of stage p's token columns.
template <class C>
__device__ __forceinline__ void stream_issue_tokens(const StreamGeom& g, const StreamPos& p, const uint16_t* x,
                                                    int64_t ldx, int64_t m_total, uint32_t stage, int lane) {
  const int cols = p.sparse(g) ? C::kSparseCols : C::kDenseCols, xch = cols / 8;
  const int64_t m0 = p.tt * C::kTok, c0 = p.s * cols;
  for (int c = lane; c < C::kTok * xch; c += 32) {
    const int tk = c / xch, q = c % xch;
    const bool ok = m0 + tk < m_total;
    cp16(stage + C::kA + C::kMeta + tk * C::kXPitch + q * 16, x + (ok ? m0 + tk : 0) * ldx + c0 + q * 8, ok);
  }
}

// The end of a run of unit p's stages [s0, p.s]: written directly when the run is the whole
// unit, else summed through the workspace (see above).
template <class C>
__device__ __forceinline__ void stream_epilogue(const Weights& w, const StreamGeom& g, const StreamPos& p, int64_t s0,
                                                int64_t m_total, uint16_t* y, int64_t ldy,
                                                const float (&acc)[C::kMT][C::kNT][4], int* last) {
  constexpr int MT = C::kMT, NT = C::kNT, kTile = C::kBM * C::kTok;
  TcUnit t;
  t.sparse = p.sparse(g);
  t.row0 = (t.sparse ? p.rb : p.rb - g.sparse_blocks) * C::kBM;
  t.rows = t.sparse ? w.ns : w.nd;
  t.first = t.sparse ? 0 : w.ns;
  t.m0 = p.tt * C::kTok;
  const int64_t done = p.s + 1 - s0;
  if (done == p.n) return tc_epilogue<C>(w, m_total, y, ldy, t, nullptr, 0, 1, acc);
  const int64_t u = p.tt * g.row_blocks + p.rb, units = g.row_blocks * ((m_total + C::kTok - 1) / C::kTok);
  int* counters = static_cast<int*>(w.stream_ws);
  float* tile = reinterpret_cast<float*>(counters + (units + 63) / 64 * 64) + u * kTile;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g4 = lane >> 2, q4 = lane & 3;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int r = tc_row0<C>(warp, mt) + g4, tk = 8 * j + 2 * q4;
      atomicAdd(tile + r * C::kTok + tk, acc[mt][j][0]);
      atomicAdd(tile + r * C::kTok + tk + 1, acc[mt][j][1]);
      atomicAdd(tile + (r + 8) * C::kTok + tk, acc[mt][j][2]);
      atomicAdd(tile + (r + 8) * C::kTok + tk + 1, acc[mt][j][3]);
    }
  __threadfence();  // this block's sums are visible device-wide before its stages are counted
  consumers_sync<C>();
  if (threadIdx.x == 0) {
    const int before = atomicAdd(counters + u, int(done));
    *last = before + done == p.n;
    if (*last) counters[u] = 0;  // every block of the unit has counted: ready for the next launch
  }
  consumers_sync<C>();
  if (!*last) return;
  __threadfence();
  for (int i = threadIdx.x; i < kTile; i += C::kThreads) {
    const int r = i / C::kTok, tk = i % C::kTok;
    const float v = __ldcg(tile + i);
    __stcg(tile + i, 0.f);
    if (t.row0 + r >= t.rows || t.m0 + tk >= m_total) continue;
    const int64_t s = t.first + t.row0 + r;
    store_bf16(y + (t.m0 + tk) * ldy + (w.row_map ? w.row_map[s] : s), w.scales ? v * w.scales[s] : v);
  }
}

template <class C>
__global__ void __launch_bounds__(C::kThreads + 32, 2) gemv_stream_k(Weights w, const uint16_t* x, int64_t ldx,
                                                                  int64_t m_total, uint16_t* y, int64_t ldy,
                                                                  StreamGeom g) {
  extern __shared__ __align__(16) uint8_t smem[];  // bulk copies need 16-byte aligned slots
  constexpr int S = C::kStages, W = C::kThreads / 32;
  // full[slot]: the producer warp's 32 lanes (their token copies, .noinc) and lane 0's expected
  // weight bytes; empty[slot]: one lane of each consumer warp, done reading the slot.
  __shared__ __align__(8) uint64_t full[S], empty[S];
  __shared__ int last;
  const int64_t g0 = g.total * blockIdx.x / gridDim.x, n = g.total * (blockIdx.x + 1) / gridDim.x - g0;
  const uint32_t base = smem_addr(smem);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (threadIdx.x < S) {
    mbar_init(smem_addr(&full[threadIdx.x]), 33);
    mbar_init(smem_addr(&empty[threadIdx.x]), W);
  }
  mbar_init_fence();
  __syncthreads();  // the last block-wide barrier: the producer warp leaves early
  StreamPos cur;
  cur.seek(g, g0);
  if (warp == W) {  // producer: fills slot i % S with stage i once the consumers have freed it
    StreamPos p = cur;
    // The first S stages' weights go out before the wait for the previous kernel (PDL).
    for (int i = 0; i < S && i < n; ++i, p.next(g))
      if (lane == 0) stream_issue_weights<C>(w, g, p, base + i * C::kStage, smem_addr(&full[i]));
    griddep_wait();  // the tokens are the previous kernel's output
    p = cur;
#pragma unroll 1
    for (int64_t i = 0; i < n; ++i, p.next(g)) {
      const int slot = int(i % S);
      const uint32_t fb = smem_addr(&full[slot]);
      if (i >= S) {
        mbar_wait(smem_addr(&empty[slot]), uint32_t((i / S - 1) & 1));
        if (lane == 0) stream_issue_weights<C>(w, g, p, base + slot * C::kStage, fb);
      }
      stream_issue_tokens<C>(g, p, x, ldx, m_total, base + slot * C::kStage, lane);
      mbar_arrive_cp(fb);
    }
    cp_commit();  // the copies above belong to no group until now: drain them before leaving
    cp_wait<0>();
    return;
  }
  griddep_wait();  // before the outputs and the workspace are written
  float acc[C::kMT][C::kNT][4] = {};
  int64_t s0 = cur.s;  // the first stage of the current run of the unit
#pragma unroll 1
  for (int64_t i = 0; i < n; ++i) {
    const int slot = int(i % S);
    mbar_wait(smem_addr(&full[slot]), uint32_t((i / S) & 1));
    if (cur.sparse(g)) tc_compute<C, true>(smem + slot * C::kStage, acc);
    else tc_compute<C, false>(smem + slot * C::kStage, acc);
    __syncwarp();
    if (lane == 0) mbar_arrive(smem_addr(&empty[slot]));
    if (cur.s + 1 == cur.n || i + 1 == n) {
      stream_epilogue<C>(w, g, cur, s0, m_total, y, ldy, acc, &last);
#pragma unroll
      for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
        for (int j = 0; j < C::kNT; ++j) acc[mt][j][0] = acc[mt][j][1] = acc[mt][j][2] = acc[mt][j][3] = 0.f;
      s0 = 0;
    }
    cur.next(g);
  }
}

template <class C>
StreamGeom stream_geom(const Weights& w, int64_t m) {
  StreamGeom g;
  const int64_t eb = C::kFP8 ? 1 : 2;
  g.sparse_blocks = (w.ns + C::kBM - 1) / C::kBM;
  g.row_blocks = g.sparse_blocks + (w.nd + C::kBM - 1) / C::kBM;
  g.sv = tile_stages(w.k / 2 * eb);
  g.sd = tile_stages(w.k * eb);
  g.per_tile = g.sparse_blocks * g.sv + (g.row_blocks - g.sparse_blocks) * g.sd;
  g.total = g.per_tile * ((m + C::kTok - 1) / C::kTok);
  return g;
}

// Workspace bytes of C at M = m: a counter per unit (padded to 64), then a partial tile per unit.
template <class C>
size_t stream_ws_bytes(const Weights& w, int64_t m) {
  const StreamGeom g = stream_geom<C>(w, m);
  const int64_t units = g.row_blocks * ((m + C::kTok - 1) / C::kTok);
  return size_t((units + 63) / 64 * 64) * sizeof(int) + size_t(units) * C::kBM * C::kTok * sizeof(float);
}

template <class C>
void launch_stream(const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  static const int resident = [] {  // blocks per SM at this shared-memory size
    SPENSE_CUDA_CHECK(cudaFuncSetAttribute(gemv_stream_k<C>, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem));
    int b = 0;
    SPENSE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, gemv_stream_k<C>, C::kThreads + 32, C::kSmem));
    return b > 0 ? b : 1;
  }();
  const StreamGeom g = stream_geom<C>(w, m);
  if (g.total <= 0) return;
  if (!w.stream_ws || w.stream_ws_bytes < stream_ws_bytes<C>(w, m))
    throw std::runtime_error("internal: the small-M kernel's streamed shape has no workspace for M=" + std::to_string(m));
  cudaLaunchConfig_t cfg = {};
  int64_t blocks = std::min<int64_t>(g.total, int64_t(tc_device().sms) * resident);
  if (w.stream_blocks > 0) blocks = std::min<int64_t>(blocks, w.stream_blocks);
  cfg.gridDim = dim3(static_cast<unsigned>(blocks));
  cfg.blockDim = dim3(C::kThreads + 32);  // the consumer warps, then the producer warp
  cfg.dynamicSmemBytes = C::kSmem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = w.pdl ? 1 : 0;
  SPENSE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, gemv_stream_k<C>, w, static_cast<const uint16_t*>(x), ldx, m,
                                       static_cast<uint16_t*>(y), ldy, g));
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
// columns, so large token tiles take fewer stages.
// Shapes 6-7 (streamed, sm_90 copy engine; tiled storage and M <= 64 only, else shape 0): 8
// warps of 128 rows and 4 warps of 64 rows, 3-4 stages, sized so that 2-4 blocks stay resident
// per SM (the stream_pattern measurement: more resident pipelines per SM streamed faster at
// the same bytes in flight).
template <bool FP8>
void launch_tc_m(const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  int v = w.tc_shape >= kTcFirstWgmmaShape && !tc_device().wgmma ? 0 : w.tc_shape;
  if (v >= kTcFirstStreamShape && (!w.tiled || m > 64)) v = 0;
  if (v == 6 || v == 7) {
    if (m <= 8) {
      if (v == 6) launch_stream<TcCfg<1, 1, 8, 4, FP8, false, true>>(w, x, ldx, m, y, ldy, s);
      else launch_stream<TcCfg<1, 1, 4, 4, FP8, false, true>>(w, x, ldx, m, y, ldy, s);
    } else if (m <= 16) {
      if (v == 6) launch_stream<TcCfg<1, 2, 8, 3, FP8, false, true>>(w, x, ldx, m, y, ldy, s);
      else launch_stream<TcCfg<1, 2, 4, 4, FP8, false, true>>(w, x, ldx, m, y, ldy, s);
    } else if (m <= 32) {
      if (v == 6) launch_stream<TcCfg<1, 4, 8, 3, FP8, false, true>>(w, x, ldx, m, y, ldy, s);
      else launch_stream<TcCfg<1, 4, 4, 4, FP8, false, true>>(w, x, ldx, m, y, ldy, s);
    } else {
      if (v == 6) launch_stream<TcCfg<1, 8, 8, 3, FP8, false, true>>(w, x, ldx, m, y, ldy, s);
      else launch_stream<TcCfg<1, 8, 4, 4, FP8, false, true>>(w, x, ldx, m, y, ldy, s);
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
                       TcCfg<2, 8, 8, FP8 ? 2 : 3, FP8, true>::kSmem, TcCfg<1, 1, 8, 4, FP8, false, true>::kSmem,
                       TcCfg<1, 1, 4, 4, FP8, false, true>::kSmem, TcCfg<1, 2, 8, 3, FP8, false, true>::kSmem,
                       TcCfg<1, 2, 4, 4, FP8, false, true>::kSmem, TcCfg<1, 4, 8, 3, FP8, false, true>::kSmem,
                       TcCfg<1, 4, 4, 4, FP8, false, true>::kSmem, TcCfg<1, 8, 8, 3, FP8, false, true>::kSmem,
                       TcCfg<1, 8, 4, 4, FP8, false, true>::kSmem};
  int m = 0;
  for (int x : v) m = x > m ? x : m;
  return m;
}

// One thread per 2 bytes of dst (gemv.h, tile_rows).
__global__ void tile_rows_k(const uint8_t* src, int64_t rows, int64_t row_bytes, int piece, int64_t stages,
                            uint8_t* dst, int64_t total) {
  const int64_t off = 2 * (int64_t(blockIdx.x) * blockDim.x + threadIdx.x);
  if (off >= total) return;
  const int64_t tile = off / (kTileRows * piece), rem = off % (kTileRows * piece);
  const int64_t row = tile / stages * kTileRows + rem / piece;
  int b = int(rem % piece);
  if (piece == kTileBytes) b = (((b >> 4) ^ int(row & 7)) << 4) | (b & 15);  // the swizzle is its own inverse
  const int64_t sb = tile % stages * piece + b;
  uint16_t v = 0;
  if (row < rows && sb < row_bytes) v = *reinterpret_cast<const uint16_t*>(src + row * row_bytes + sb);
  *reinterpret_cast<uint16_t*>(dst + off) = v;
}

}  // namespace

void tile_rows(const void* src, int64_t rows, int64_t row_bytes, int piece, void* dst, cudaStream_t s) {
  const int64_t stages = (row_bytes + piece - 1) / piece, total = tiled_bytes(rows, stages, piece);
  if (total <= 0) return;
  tile_rows_k<<<static_cast<unsigned>((total / 2 + 255) / 256), 256, 0, s>>>(
      static_cast<const uint8_t*>(src), rows, row_bytes, piece, stages, static_cast<uint8_t*>(dst), total);
  SPENSE_CUDA_CHECK_LAUNCH();
}

bool tc_wgmma_ok() { return tc_device().wgmma; }

size_t tc_stream_workspace_bytes(const Weights& w, int64_t m) {
  if (!w.tiled || m <= 0 || m > 64) return 0;
  auto most = [&](auto... c) { return std::max({stream_ws_bytes<decltype(c)>(w, m)...}); };
  if (m <= 8) return w.fp8 ? most(TcCfg<1, 1, 8, 4, true, false, true>{}, TcCfg<1, 1, 4, 4, true, false, true>{})
                           : most(TcCfg<1, 1, 8, 4, false, false, true>{}, TcCfg<1, 1, 4, 4, false, false, true>{});
  if (m <= 16) return w.fp8 ? most(TcCfg<1, 2, 8, 3, true, false, true>{}, TcCfg<1, 2, 4, 4, true, false, true>{})
                            : most(TcCfg<1, 2, 8, 3, false, false, true>{}, TcCfg<1, 2, 4, 4, false, false, true>{});
  if (m <= 32) return w.fp8 ? most(TcCfg<1, 4, 8, 3, true, false, true>{}, TcCfg<1, 4, 4, 4, true, false, true>{})
                            : most(TcCfg<1, 4, 8, 3, false, false, true>{}, TcCfg<1, 4, 4, 4, false, false, true>{});
  return w.fp8 ? most(TcCfg<1, 8, 8, 3, true, false, true>{}, TcCfg<1, 8, 4, 4, true, false, true>{})
               : most(TcCfg<1, 8, 8, 3, false, false, true>{}, TcCfg<1, 8, 4, 4, false, false, true>{});
}

int tc_effective_slices(const Weights& w, int requested) {
  return std::max(1, std::min(requested, tc_max_slices(w)));
}

int tc_max_slices(const Weights& w) {
  if (!tc_device().clusters) return 1;
  // Clusters of up to 8 blocks (the portable limit), each slice keeping >= 4 2:4 stages.
  return int(std::max<int64_t>(1, std::min<int64_t>(8, w.k / (w.fp8 ? 256 : 128) / 4)));
}

bool tc_eligible(const Weights& w) {
  // The block shapes' shared memory (launch_tc_m; sized for Hopper's 227 KB) must fit the device:
  // elsewhere (A100: 163 KB, Ada: 99 KB) the CUDA-core path runs.
  constexpr int kLargestBf16 = tc_largest_smem<false>(), kLargestFp8 = tc_largest_smem<true>();
  if (tc_device().smem_optin < (w.fp8 ? kLargestFp8 : kLargestBf16)) return false;
  // Whole stages (128 weight bytes per row) along K, and 16-byte aligned dense rows.
  if (w.fp8) return w.k % 256 == 0 && (w.nd == 0 || w.dense_ld % 16 == 0);
  return w.k % 128 == 0 && (w.nd == 0 || w.dense_ld % 8 == 0);
}

void gemv(const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  if (m <= 0) return;
  // cp.async moves 16-byte pieces of the token rows.
  if (w.tensor_cores && tc_eligible(w) && ldx % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0) {
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
