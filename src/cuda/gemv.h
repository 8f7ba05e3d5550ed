// Our own small-M kernels (src/cuda/gemv*.cu) behind make_gemv_linear(): y = x W^T for M <= 8
// token rows per launch pass on CUDA cores, or up to 64 token rows per pass on tensor cores
// (E4M3 weights widened to BF16 in registers, or on Hopper multiplied natively with E4M3
// tokens), weights streamed once from HBM. The weight rows are
// held in a stored order: first the 2:4 rows, compressed (the kept values, and per group of 4
// one nibble p0 | p1 << 2 with the kept positions, 16 bits per 16 columns: the Spense v1 meta
// layout), then the dense rows as they are; row_map[stored] = original output row, so y comes
// out in the original order with no gather. Weights BF16, or E4M3 with one fp32 scale per row;
// activations BF16 (or E4M3 with one scale per token), outputs BF16, fp32 accumulation.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace spense::cuda::gemv {

// Rows handled by one warp, and the largest M of one kernel pass (larger M: several passes).
inline constexpr int kRowsPerWarp = 2;
inline constexpr int kMaxM = 8;
struct Weights {
  const void* sparse_values = nullptr;  // Ns x K/2 elements (BF16 or E4M3)
  const uint16_t* sparse_meta = nullptr;  // Ns x K/16
  const void* dense = nullptr;          // Nd x K elements, row-major
  int64_t dense_ld = 0;                 // elements between dense rows (K)
  const float* scales = nullptr;        // E4M3 only: N, by stored row
  const int32_t* row_map = nullptr;     // N, stored row -> output column of y (nullptr: identity)
  int64_t ns = 0, nd = 0, k = 0;
  bool fp8 = false;
  // Spense axis=in (tiles of input columns): every row is 2:4 over its first in_ks stored
  // columns (sparse_values n x in_ks/2, sparse_meta n x in_ks/16) and dense over the other
  // k - in_ks (dense, ld dense_ld); stored column tile j (1 << tile_shift columns, >= 32) is
  // original column tile col_tiles[j], which is where each span's activations are read. Then
  // ns = n, nd = 0, row_map = nullptr. The K split of the tensor-core path gives the 2:4 and
  // the dense columns to different blocks of a cluster (see tc_eligible).
  bool axis_in = false;
  int64_t in_ks = 0;
  const int32_t* col_tiles = nullptr;
  int tile_shift = 0;
  // Tensor-core path (mma.sp for the 2:4 rows, mma for the dense rows) when tc_eligible() and
  // x is 16-byte aligned with ldx a multiple of 8.
  bool tensor_cores = false;
  int tc_slices = 0;  // K split over a thread-block cluster (tc_effective_slices); 0: by rule
  int tc_shape = 0;   // block shape, 0 .. kTcShapes - 1 (warps, rows per warp, pipeline depth)
  // Block shapes kTcFirstE4m3Shape.. on FP8 layers where wgmma runs: x holds E4M3 tokens (ldx
  // in bytes, quantized per token by quantize_rows_e4m3; axis=in: in stored column order, the
  // column-tile map applied by the quantization) and x_scales their m scales, multiplied on
  // wgmma's E4M3 MMAs. Set by the caller that quantized x.
  bool e4m3_tokens = false;
  const float* x_scales = nullptr;
  // Launch with programmatic dependent launch (src/cuda/pdl.cuh; sm_90+): the blocks may start,
  // and fetch their first weights, while the kernel before them in the stream finishes.
  bool pdl = false;
  // Streamed shapes (tc_streamed): their workspace (tc_stream_workspace_bytes, zeroed before the
  // first launch and left zeroed by every launch), and a cap on their persistent blocks (0: as
  // many as fit; tests set it small so that each block's run wraps its ring of slots).
  void* stream_ws = nullptr;
  size_t stream_ws_bytes = 0;
  int stream_blocks = 0;
};

// Block shapes of the tensor-core path per token-tile size (gemv_tc.cuh, gemv_stream.cu), timed
// by make_gemv_linear: 0-3 with mma.sync, 4-5 with Hopper's warpgroup MMAs (wgmma; only where
// tc_wgmma_ok(), elsewhere they run as shape 0), 6-9 warpgroups multiplying E4M3 weights by E4M3
// tokens (tc_e4m3_tokens; elsewhere they run as shapes 4-5), 10-13 the streamed E4M3-token
// shapes (tc_streamed: persistent blocks fed by the TMA, their wgmmas reading the weights from
// shared memory; 12 is the same kernel as 11 and only runs when forced, 13 has 8 slots (one
// block per SM); elsewhere 10 runs as 7 or 5, 11-13 as 6 or 4).
inline constexpr int kTcShapes = 14;
inline constexpr int kTcFirstWgmmaShape = 4;
inline constexpr int kTcFirstE4m3Shape = 6;
inline constexpr int kTcFirstStreamShape = 10;
inline constexpr int64_t kStreamMaxM = 64;
// Whether the current GPU runs the wgmma shapes (sm_90, and this binary built for sm_90a).
bool tc_wgmma_ok();
// Whether block shape `shape` runs on E4M3 tokens for w: an E4M3-token shape, FP8 weights, and
// the wgmma shapes available. The caller then quantizes x per token and sets
// Weights::e4m3_tokens and x_scales.
bool tc_e4m3_tokens(const Weights& w, int shape);
// Whether block shape `shape` runs streamed for w at M = m: a streamed shape, E4M3 tokens
// (tc_e4m3_tokens), axis out, 1 <= m <= kStreamMaxM. The caller then quantizes x chunk-major
// for tc_stream_tokens(m) rows (quantize_rows_e4m3's chunk_rows) and passes a workspace of
// tc_stream_workspace_bytes (Weights::stream_ws).
bool tc_streamed(const Weights& w, int shape, int64_t m);
int64_t tc_stream_tokens(int64_t m);
size_t tc_stream_workspace_bytes(const Weights& w, int shape, int64_t m);
// Whether w can take the tensor-core path: K a multiple of 128 (BF16) or 256 (E4M3), dense rows
// 16-byte aligned.
// Axis=in also needs clusters, 2:4 columns in whole 2:4 stages (128 BF16 / 256 E4M3 columns)
// and dense ones in whole dense stages (64 / 128).
bool tc_eligible(const Weights& w);
// The largest K split of the tensor-core path for w on the current device (1 without clusters).
int tc_max_slices(const Weights& w);
// The split that runs for a requested one: requested, capped by tc_max_slices (any count: the
// cluster's row parts may be uneven).
int tc_effective_slices(const Weights& w, int requested);

// y[r, row_map[s]] = sum_j x[r, j] W_s[j] for r < m (x: m x k BF16, ld ldx, or E4M3 with
// Weights::e4m3_tokens; y: BF16, ld ldy).
void gemv(const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy, cudaStream_t s);

// Compresses rows src_rows[i] (i < ns) of a 2:4 matrix W (n x k, BF16 or E4M3, device) into
// values (ns x k/2) and meta (ns x k/16). Returns through *bad (device int64, preset to -1 by
// the caller) the lowest i * (k/4) + group of a group with more than 2 non-zeros, if any.
void compress24(const void* W, bool fp8, int64_t k, const int32_t* src_rows, int64_t ns, void* values,
                uint16_t* meta, unsigned long long* bad, cudaStream_t s);

}  // namespace spense::cuda::gemv
