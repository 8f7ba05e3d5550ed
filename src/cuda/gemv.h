// Our own small-M kernels (src/cuda/gemv.cu) behind make_gemv_linear(): y = x W^T for M <= 8
// token rows per launch pass on CUDA cores, or up to 64 token rows per pass on tensor cores
// (E4M3 weights widened to BF16 in registers), weights streamed once from HBM. The weight rows are
// held in a stored order: first the 2:4 rows, compressed (the kept values, and per group of 4
// one nibble p0 | p1 << 2 with the kept positions, 16 bits per 16 columns: the Spense v1 meta
// layout), then the dense rows as they are; row_map[stored] = original output row, so y comes
// out in the original order with no gather. Weights BF16, or E4M3 with one fp32 scale per row;
// activations and outputs BF16, fp32 accumulation.
// Tiled storage (Weights::tiled; every 2:4 or hybrid layer): a kind's rows (2:4 values, their
// metadata, or dense rows) are cut into blocks of kTileRows rows and stages of kTileBytes bytes
// per row (metadata: kMetaTileBytes(fp8) per row, the metadata of one value stage), and each such
// tile is stored contiguously, tiles of one row block in K order, row blocks one after another
// (rows padded to a multiple of kTileRows, row bytes to whole stages, with zeros). Within a
// value tile, row r's 16-byte chunk c sits at r * kTileBytes + 16 * (c ^ (r % 8)), so that a
// stage copied as it is into shared memory can be read by ldmatrix without bank conflicts.
// Why: a stage of a block's rows is then one contiguous piece, which the copy engine moves in
// one bulk copy; one bulk copy per 128-byte row piece streamed 2.5-4.5x slower
// (tools/device/stream_pattern.cu, docs/perf.md).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace spense::cuda::gemv {

// Rows handled by one warp, and the largest M of one kernel pass (larger M: several passes).
inline constexpr int kRowsPerWarp = 2;
inline constexpr int kMaxM = 8;
inline constexpr int kTileRows = 64, kTileBytes = 128;
// Metadata bytes per row of one value stage: 128 value bytes are 64 BF16 (128 columns, 16 bytes of
// nibbles) or 128 E4M3 kept values (256 columns, 32 bytes).
constexpr int kMetaTileBytes(bool fp8) { return fp8 ? 32 : 16; }
// Stages per row of r bytes, and bytes of a tiled array of `rows` rows of r bytes (piece: bytes
// of a row per stage, kTileBytes or kMetaTileBytes; `stages` counts value stages).
constexpr int64_t tile_stages(int64_t row_bytes) { return (row_bytes + kTileBytes - 1) / kTileBytes; }
constexpr int64_t tiled_bytes(int64_t rows, int64_t stages, int piece) {
  return (rows + kTileRows - 1) / kTileRows * kTileRows * stages * piece;
}
struct Weights {
  const void* sparse_values = nullptr;  // Ns x K/2 elements (BF16 or E4M3), tiled
  const uint16_t* sparse_meta = nullptr;  // Ns x K/16, tiled (kMetaTileBytes per row and stage)
  const void* dense = nullptr;          // Nd x K elements: tiled, or row-major when !tiled
  int64_t dense_ld = 0;                 // elements between dense rows when !tiled (K)
  // The tiled storage above; false only for an all-dense layer, whose rows are cuBLASLt's
  // row-major weights (ns == 0 then).
  bool tiled = false;
  const float* scales = nullptr;        // E4M3 only: N, by stored row
  const int32_t* row_map = nullptr;     // N, stored row -> output column of y (nullptr: identity)
  int64_t ns = 0, nd = 0, k = 0;
  bool fp8 = false;
  // Tensor-core path (mma.sp for the 2:4 rows, mma for the dense rows) when tc_eligible() and
  // x is 16-byte aligned with ldx a multiple of 8.
  bool tensor_cores = false;
  int tc_slices = 0;  // K split over a thread-block cluster (tc_effective_slices); 0: by rule
  int tc_shape = 0;   // block shape, 0 .. kTcShapes - 1 (warps, rows per warp, pipeline depth)
  // Launch with programmatic dependent launch (src/cuda/pdl.cuh; sm_90+): the blocks may start,
  // and fetch their first weights, while the kernel before them in the stream finishes.
  bool pdl = false;
  int stream_blocks = 0;  // streamed shapes: at most this many blocks (0: as many as fit)
  // The streamed shapes' workspace (tc_stream_workspace_bytes; zeroed once, and the kernel
  // leaves it zeroed): fp32 partial tiles and counters of the units that several blocks share.
  void* stream_ws = nullptr;
  size_t stream_ws_bytes = 0;
};

// Block shapes of the tensor-core path per token-tile size (gemv.cu), timed by make_gemv_linear:
// 0-3 with mma.sync, 4-5 with Hopper's warpgroup MMAs (wgmma), 6-7 streamed: persistent blocks
// that each stream an equal share of the layer's stages through the copy engine (mma.sync; tiled
// storage only, M <= 64). Shapes 4-7 run only where tc_wgmma_ok(); elsewhere they run as shape 0.
inline constexpr int kTcShapes = 8;
inline constexpr int kTcFirstWgmmaShape = 4;
inline constexpr int kTcFirstStreamShape = 6;
// Whether the current GPU runs shapes 4-7 (sm_90, and this binary built for sm_90a).
bool tc_wgmma_ok();
// Bytes of Weights::stream_ws the streamed shapes need for w at M = m (0 when they do not run).
size_t tc_stream_workspace_bytes(const Weights& w, int64_t m);
// Whether w can take the tensor-core path: K a multiple of 128 (BF16) or 256 (E4M3), dense rows
// 16-byte aligned.
bool tc_eligible(const Weights& w);
// The largest K split of the tensor-core path for w on the current device (1 without clusters).
int tc_max_slices(const Weights& w);
// The split that runs for a requested one: requested, capped by tc_max_slices (any count: the
// cluster's row parts may be uneven).
int tc_effective_slices(const Weights& w, int requested);

// y[r, row_map[s]] = sum_j x[r, j] W_s[j] for r < m (x: m x k BF16, ld ldx; y: BF16, ld ldy).
void gemv(const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy, cudaStream_t s);

// Compresses rows src_rows[i] (i < ns) of a 2:4 matrix W (n x k, BF16 or E4M3, device) into
// values (ns x k/2) and meta (ns x k/16). Returns through *bad (device int64, preset to -1 by
// the caller) the lowest i * (k/4) + group of a group with more than 2 non-zeros, if any.
void compress24(const void* W, bool fp8, int64_t k, const int32_t* src_rows, int64_t ns, void* values,
                uint16_t* meta, unsigned long long* bad, cudaStream_t s);

// dst (tiled_bytes(rows, stages, piece) bytes) = src (rows x row_bytes, row-major, rows
// row_bytes apart) in the tiled storage above: piece kTileBytes (values, dense rows; chunks
// swizzled) or kMetaTileBytes (metadata; not swizzled). row_bytes must be even; padding is zero.
void tile_rows(const void* src, int64_t rows, int64_t row_bytes, int piece, void* dst, cudaStream_t s);

}  // namespace spense::cuda::gemv
