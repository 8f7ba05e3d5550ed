// GPU linear layers Y = X W^T for the three Spense formats, made by factories that return a Linear:
//   make_dense_linear  (DenseLinear)  - cuBLASLt, the whole W dense;
//   make_sparse_linear (SparseLinear) - cuSPARSELt, the whole W 2:4 along K (compressed once at load);
//   make_hybrid_linear (HybridLinear) - the Spense format: a 2:4 region (cuSPARSELt) and dense tiles (cuBLASLt),
//                  split by output rows (axis=out) or input columns (axis=in), the two GEMMs
//                  run concurrently on two streams (fork/join with events, graph-capturable).
// Shapes follow PyTorch: W is N x K (out x in), X is M x K, Y is M x N, all row-major.
//
// Precisions (LinearPrecision):
//   BF16 / FP16: weights and activations 16-bit, fp32 accumulation, 16-bit output.
//   FP8: weights E4M3 with one fp32 scale per output channel; activations arrive in BF16 and
//        are quantized per token (row absmax -> scale -> E4M3) by a fused kernel; the GEMMs
//        accumulate in fp32 and one epilogue kernel applies channel x token scales (and, for
//        axis=out, undoes the row permutation) while writing BF16.
//
// Buffers: x and y are device pointers, 16-byte aligned, row-major with leading dimension K
// and N. Both must have room for rows_capacity(M) rows: cuSPARSELt runs at M padded to a
// bucket (16, 32, 64, ... 1024, then multiples of 512), and rows past M of y may be
// overwritten with garbage. Descriptors, plans and workspaces are made by prepare(M) (once
// per M bucket for cuSPARSELt, once per distinct M for cuBLASLt); forward() makes them on
// first use when not capturing, and throws when asked to inside a graph capture, so call
// prepare() for every M before capturing.
//
// Errors (spense::Error, message starts with "layer '<name>': "): weights that are not 2:4
// where they must be (found by cusparseLtSpMMAPruneCheck, then located on the host), N or K
// not multiples of 16 (32 for FP8), tiles not multiples of 16 or out of range, unsupported
// dtypes, GPUs below compute capability 8.0 (8.9 for FP8), a build without cuSPARSELt.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "spense/cuda/runtime.h"
#include "spense/dtype.h"

namespace spense::cuda {

enum class LinearPrecision { BF16, FP16, FP8 };
const char* precision_name(LinearPrecision p);  // "bf16", "fp16", "fp8"
// Weight element type of a precision (BF16, F16, F8_E4M3).
DType precision_weight_dtype(LinearPrecision p);
// Activation (input and output) element type: BF16 for BF16 and FP8, F16 for FP16.
DType precision_act_dtype(LinearPrecision p);

// Rows that x and y must hold for a call with m rows (the cuSPARSELt bucket of m).
int64_t rows_bucket(int64_t m);

// Paths of our small-M kernel (make_gemv_linear). AUTO: per M, every kernel that can run it
// (CUDA cores; tensor cores for BF16 layers whose K is a multiple of 128; cuBLASLt for dense
// layers) is timed once and the fastest kept. CUDA_CORES / TENSOR_CORES force that path (the
// tensor-core one where the layer is eligible, else the CUDA-core one), for tests and benchmarks.
enum class SmallMKernel : uint8_t { AUTO, CUDA_CORES, TENSOR_CORES };
inline const char* small_m_kernel_name(SmallMKernel k) {
  return k == SmallMKernel::AUTO ? "auto" : k == SmallMKernel::CUDA_CORES ? "cuda-cores" : "tensor-cores";
}
// Parses a --small-m-kernel value; throws spense::Error naming `tool` and the flag otherwise.
SmallMKernel small_m_kernel_parse(const std::string& s, const std::string& tool);

struct LinearOptions {
  std::string name = "linear";  // used in every error message and log line
  // cuBLASLt: time this many heuristic candidates once per M and keep the fastest
  // (0: take the heuristic's first choice).
  int dense_search = 0;
  // cuSPARSELt: run cusparseLtMatmulSearch once per M bucket (else the default algorithm).
  bool sparse_search = true;
  // Hybrid: run the sparse and dense GEMMs concurrently on two streams (else one after the
  // other on the caller's stream; axis=in then accumulates with beta=1).
  bool concurrent = true;
  // Hybrid, concurrent: plan the dense GEMM for a share of the SMs proportional to its share of
  // the weight bytes (cuBLASLt SM-count target), leaving the rest to the sparse GEMM; 0 turns
  // this off (the dense GEMM then plans for the whole GPU and the two tend to serialize).
  bool split_sms = true;
  // Hybrid axis=out: leave y's columns in stored order (sparse tiles first, then dense tiles;
  // the next layer must absorb the permutation, see HybridLinear::output_order()). When false
  // a gather kernel (BF16/FP16) or the FP8 epilogue writes y in the original order.
  bool fold_permutation = false;
  // Dense BF16/FP16 only: write y as fp32 (the engine's LM head, so logits are not rounded
  // to 16 bits before argmax or sampling). y then holds M x N floats.
  bool f32_output = false;
  // Our small-M kernel (make_gemv_linear): which of its paths may run (see SmallMKernel).
  SmallMKernel small_m_kernel = SmallMKernel::AUTO;
  // Its tensor-core path splits K over a cluster of 1 to 8 blocks: 0 times the splits 1, 2, 3, 4,
  // 6 and 8 per M and keeps the fastest; n > 0 forces n (capped by K and the GPU).
  int small_m_tc_slices = 0;
  // And its block shape (gemv::kTcShapes per token-tile size; see gemv.h): -1 times each,
  // 0 .. kTcShapes - 1 forces one.
  int small_m_tc_shape = -1;
  // And its streamed shapes (10-13) run at most this many persistent blocks (0: as many as fit
  // on the GPU). Tests set it small so that each block streams more stages than its ring holds.
  int small_m_stream_blocks = 0;
  // FP8 layers: its E4M3-token block shapes (6-13, Hopper; 10-13 streamed) may run: they quantize x per token
  // (as cuBLASLt's FP8 layers do) into the Context's scratch (so, as with those, a captured graph
  // must be captured again after the scratch grows: Context::scratch_generation) and multiply
  // E4M3 x E4M3 on wgmma. false (default here; the decode engine turns it on,
  // EngineOptions::e4m3_tokens): BF16 tokens only, and forced shapes 6-13 run as their
  // BF16-token counterparts.
  bool small_m_e4m3_tokens = false;
  // And it launches with programmatic dependent launch on sm_90+ (its blocks start and fetch
  // their first weights while the previous kernel in the stream finishes; they wait for that
  // kernel before reading x).
  bool pdl = true;
};

// Weights of one layer as stored: N x K row-major, host or device memory (copied at load).
struct WeightsView {
  const void* data = nullptr;
  DType dtype = DType::BF16;      // BF16, F16 or F8_E4M3 (must match the precision)
  const float* scales = nullptr;  // F8_E4M3 only: N per-output-channel scales, host or device
};

class Linear {
 public:
  virtual ~Linear() = default;
  // y[0:M, :] = x[0:M, :] W^T on `stream` (may also use the Context's side stream).
  virtual void forward(const void* x, void* y, int64_t m, cudaStream_t stream) = 0;
  // Make descriptors/plans/workspaces and reserve scratch for m (outside graph capture).
  virtual void prepare(int64_t m) = 0;
  // rows x and y must hold for m (see above).
  virtual int64_t rows_capacity(int64_t m) const { return rows_bucket(m); }
  // Same layer with its own copy of the weights, sharing plans (benchmarks rotate replicas so
  // that weights come from device memory, not L2).
  virtual std::unique_ptr<Linear> replicate() const = 0;
  // Bytes of weights read per forward (compressed values + metadata + scales).
  virtual size_t weight_bytes() const = 0;
  // One line on the chosen algorithms for m ("sparse alg 3 split-k 1; dense heuristic #2").
  virtual std::string plan_info(int64_t m) const = 0;
  // Dense layers: the device weights (n x k row-major, the precision's weight type) and, for
  // FP8, the per-row scales; nullptr for other layers. Lets a second kernel share the weights.
  virtual const void* device_weights() const { return nullptr; }
  virtual const float* device_scales() const { return nullptr; }

  const std::string& name() const { return opts_.name; }
  int64_t n() const { return n_; }
  int64_t k() const { return k_; }
  LinearPrecision precision() const { return prec_; }

 protected:
  Linear(Context& ctx, int64_t n, int64_t k, LinearPrecision prec, LinearOptions opts)
      : ctx_(&ctx), n_(n), k_(k), prec_(prec), opts_(std::move(opts)) {}
  Context* ctx_;
  int64_t n_, k_;
  LinearPrecision prec_;
  LinearOptions opts_;
};

// cuBLASLt dense layer.
std::unique_ptr<Linear> make_dense_linear(Context& ctx, int64_t n, int64_t k, LinearPrecision prec,
                                          const WeightsView& w, const LinearOptions& opts = {});

// cuSPARSELt 2:4 layer: w holds the pruned weights with zeros in place (2 of every 4
// consecutive K entries zero in every row).
std::unique_ptr<Linear> make_sparse_linear(Context& ctx, int64_t n, int64_t k, LinearPrecision prec,
                                           const WeightsView& w, const LinearOptions& opts = {});

enum class HybridAxis { OUT, IN };
const char* axis_name(HybridAxis a);  // "out", "in"

struct HybridLayout {
  HybridAxis axis = HybridAxis::OUT;
  int64_t tile = 64;                 // rows (axis=out) or columns (axis=in) per tile, multiple of 16
  std::vector<int32_t> dense_tiles;  // indices of the dense tiles (any order, no duplicates)
};

// Spense hybrid layer from the materialized checkpoint form: w is the full N x K matrix with
// zeros in place; the tiles not in layout.dense_tiles must be 2:4 along K.
std::unique_ptr<Linear> make_hybrid_linear(Context& ctx, int64_t n, int64_t k, LinearPrecision prec,
                                           const WeightsView& w, const HybridLayout& layout,
                                           const LinearOptions& opts = {});

// Our own small-M kernel (src/cuda/gemv*.cu), for decoding: at most gemv_max_m() token rows
// per pass on CUDA cores, or (K a multiple of 128 for BF16, 256 for E4M3) up to 64 per pass on tensor cores
// (mma.sp / mma); per M the fastest of these and, for dense layers, cuBLASLt is timed once and
// kept (LinearOptions::small_m_kernel). One launch per layer with no fork/join, no activation
// quantization and no output gather: dense rows and 2:4 rows (kept values + 2-bit positions) in one kernel that writes y
// in the original row order. Weights BF16, or E4M3 with per-row scales dequantized in
// registers (FP8 here means 8-bit weights with BF16 activations). all_dense: every row
// dense (a cuBLASLt DenseLinear shares the weights for large M); otherwise, axis=out, the rows
// of dense_tiles (tiles of `tile` output rows) are dense and the others must be 2:4, or,
// axis=in, the columns of dense_tiles (tiles of `tile` input columns, a power of two >= 32) are
// dense and every row must be 2:4 in the others: each row's two parts are summed in the kernel,
// the activations read through the tile map (no gather), and on tensor cores the parts go to
// different blocks of a thread-block cluster (sm_90+; elsewhere CUDA cores only).
struct GemvLayout {
  bool all_dense = false;
  HybridAxis axis = HybridAxis::OUT;
  int64_t tile = 64;
  std::vector<int32_t> dense_tiles;
};
std::unique_ptr<Linear> make_gemv_linear(Context& ctx, int64_t n, int64_t k, LinearPrecision prec,
                                         const WeightsView& w, const GemvLayout& layout,
                                         const LinearOptions& opts = {});
int64_t gemv_max_m();
// Whether the small-M kernel takes axis=in layers of this tile (columns): a power of two >= 32,
// since it reads activations through the column-tile map by shifts (the libraries take any multiple of 16).
bool gemv_axis_in_tile_ok(int64_t tile);

// Stored column order of a hybrid axis=out layer's output: column j of y (folded) is original
// output channel order[j]: the sparse tiles in increasing order, then the dense tiles.
std::vector<int32_t> hybrid_stored_order(int64_t extent, const HybridLayout& layout);

// Validates a layout against the extent it splits (N for axis=out, K for axis=in); throws
// spense::Error naming the layer.
void hybrid_layout_check(const std::string& name, int64_t extent, const HybridLayout& layout);

// Dense tiles for a dense ratio d: round(d * tiles) tiles spread evenly (deterministic, for
// benchmarks and tests; the pruner chooses real ones).
std::vector<int32_t> hybrid_spread_tiles(int64_t extent, int64_t tile, double d);

}  // namespace spense::cuda
