// The small-M kernel's tensor-core path (gemv.h), shared by its translation units: block
// shapes 0-9 (mma.sync and wgmma) as templates, the device code the streamed shapes reuse, and
// the launch entry points of each unit. The shapes compile in separate units (gemv_tc_bf16.cu,
// gemv_tc_fp8.cu, gemv_tc_e4m3.cu, gemv_stream.cu), so a parallel build compiles them side by
// side; gemv.cu holds the CUDA-core path and picks among them. Internal to src/cuda.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cooperative_groups.h>
#include <cuda.h>

#include <algorithm>
#include <cstdint>

#include "cuda/async_copy.cuh"
#include "cuda/fp8.cuh"
#include "cuda/gemv.h"
#include "cuda/mma.cuh"
#include "cuda/pdl.cuh"
#include "cuda/wgmma.cuh"
#include "spense/cuda/check.h"

namespace spense::cuda::gemv {
namespace detail {

// The GPU's properties the launches need (the current device, read once).
struct TcDevice {
  int sms = 0;
  bool clusters = false;
  int smem_optin = 0;  // bytes of shared memory a block may opt in to
  bool wgmma = false;  // an sm_90 GPU, and this binary holds sm_90a code (the warpgroup shapes)
};
const TcDevice& tc_device();  // gemv.cu

// Weight rows per block of streamed shape `shape` (10-13).
constexpr int stream_rows(int shape) { return shape == kTcFirstStreamShape ? 128 : 64; }

// Block shape v of each family (v as gemv.cu maps Weights::tc_shape), each in its own unit:
// gemv_tc_bf16.cu: 0-5 on BF16 weights; gemv_tc_fp8.cu: 0-5 on E4M3 weights and BF16 tokens;
// gemv_tc_e4m3.cu: 6-9 on E4M3 weights and tokens.
void launch_tc_bf16(int v, const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy,
                    cudaStream_t s);
void launch_tc_fp8(int v, const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy,
                   cudaStream_t s);
void launch_tc_e4m3(int v, const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy,
                    cudaStream_t s);
// gemv_stream.cu: the streamed shapes (tc_streamed), xq holding the tokens chunk-major.
void launch_stream_m(const Weights& w, const void* xq, int64_t m, void* y, int64_t ldy, cudaStream_t s);

}  // namespace detail

using detail::stream_rows;
using detail::tc_device;
using detail::TcDevice;

namespace {

namespace cg = cooperative_groups;

// Where the activations of stored column sc are: the same column, or for axis=in (IN) the
// column at the same place in original column tile col_tiles[sc >> tile_shift].
template <bool IN>
__device__ __forceinline__ int64_t x_column(int64_t sc, const int32_t* col_tiles, int tile_shift) {
  if constexpr (IN)
    return (int64_t(__ldg(col_tiles + (sc >> tile_shift))) << tile_shift) | (sc & ((int64_t(1) << tile_shift) - 1));
  else return sc;
}

// ---- Tensor-core path (BF16 or E4M3 weights, BF16 activations) ---------------------------------
// E4M3 weights are widened to BF16 in registers (exact) and scaled per row in the epilogue, so
// both precisions run the BF16 MMAs on the BF16 activations as they are.
// The same stored layout as the CUDA-core path's (gemv.cu), read by mma.sp (2:4 rows) and mma
// (dense rows) with the tokens as the N = 8 side of each MMA. A block owns one unit: kBM stored rows of one kind
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
void launch_tc_plain(int v, const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
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
}  // namespace spense::cuda::gemv
