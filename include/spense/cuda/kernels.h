// Small CUDA kernels around the library GEMMs (src/cuda/kernels.cu). Each launcher checks
// the launch; all work on row-major matrices with explicit leading dimensions (elements).
// What they do not do: any GEMM (cuBLASLt / cuSPARSELt do those).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "spense/dtype.h"

namespace spense::cuda {

// Per-row (per-token) dynamic FP8 quantization, fused with an optional column gather:
//   scale[r] = absmax(x[r, :]) / 448,  q[r, j] = e4m3(x[r, col_map ? col_map[j] : j] / scale[r]).
// x is BF16 or F16 (x_type), rows x k; rows [rows, rows_pad) of q are zero-filled with scale 0.
// col_map (device, k entries, nullable) must map runs of 8 consecutive j to 8 consecutive
// source columns (true for tile permutations with tile % 8 == 0). k % 8 == 0.
// The same kernel quantizes weights per output channel (x = W, rows = N).
// pdl: launched with programmatic dependent launch (sm_90+, src/cuda/pdl.cuh); it waits for the
// kernel before it in the stream before reading x.
// chunk_rows > 0: q is written chunk-major instead (ldq unused): code (r, j) at byte
// ((j / 16) * chunk_rows + r) * 16 + j % 16, i.e. 16-byte column chunk c of rows 0 .. chunk_rows - 1
// together, as the small-M kernel's streamed shapes copy a stage's tokens in one piece
// (rows_pad <= chunk_rows, k % 16 == 0).
void quantize_rows_e4m3(const void* x, DType x_type, int64_t ldx, int64_t rows, int64_t rows_pad,
                        int64_t k, const int32_t* col_map, uint8_t* q, int64_t ldq, float* scale,
                        cudaStream_t stream, bool pdl = false, int64_t chunk_rows = 0);

// FP8 epilogue: y[r, out_map ? out_map[j] : j] = (acc[r, j] + acc2[r, j]) * col_scale[j] * row_scale[r]
// for r < rows, j < n. acc/acc2 are F32 or BF16 (acc_type; acc2 nullable), y is BF16 or F16.
// out_map (nullable) must keep runs of 8 consecutive j consecutive. n % 8 == 0.
void scale_epilogue(const void* acc, const void* acc2, DType acc_type, int64_t ld_acc, int64_t rows,
                    int64_t n, const float* col_scale, const float* row_scale,
                    const int32_t* out_map, void* y, DType y_type, int64_t ldy, cudaStream_t stream);

// dst[r, j] = src[r, map[j]] for r < rows, j < cols (16-bit elements; runs of 8 consecutive
// j must map to 8 consecutive source columns; cols % 8 == 0).
void gather_cols16(const void* src, int64_t ld_src, void* dst, int64_t ld_dst, int64_t rows,
                   int64_t cols, const int32_t* map, cudaStream_t stream);

// y[r, j] += t[r, j] for r < rows, j < cols (BF16 or F16; cols % 8 == 0).
void add_inplace16(void* y, int64_t ldy, const void* t, int64_t ldt, int64_t rows, int64_t cols,
                   DType type, cudaStream_t stream);

// Deterministic pseudo-random fill (uniform in [-amp, amp), never all zeros) for benchmarks
// and plan searches: F32, BF16, F16 or F8_E4M3 (E4M3 draws uniform codes over +-amp, clamped to 448).
void fill_random(void* dst, DType type, size_t count, uint64_t seed, float amp, cudaStream_t stream);

// Reads `bytes` bytes of buf (device, 16-byte aligned) through L2, leaving them there in place
// of whatever it held: a read of a buffer larger than L2 before a timed call makes that call
// find its operands in device memory, as in a decode step that streams every layer's weights.
// sink (device, nullable) is never written in practice; it only keeps the loads.
void read_through_l2(const void* buf, size_t bytes, unsigned* sink, cudaStream_t stream);

// 2:4 magnitude pruning along K of a rows x k 16-bit matrix (in place): in every group of 4
// consecutive columns keep the 2 largest |w| and zero the rest. Rows with row_dense[r] != 0
// or columns with col_dense[c] != 0 (both device, nullable) are left as they are. k % 4 == 0.
void prune24_16(void* w, DType type, int64_t rows, int64_t k, const uint8_t* row_dense,
                const uint8_t* col_dense, cudaStream_t stream);

}  // namespace spense::cuda
