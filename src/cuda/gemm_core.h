// Internal GEMM cores shared by the linear layers. A core holds the plans (descriptors,
// chosen algorithm, workspace) for one weight shape and never the weights themselves, so
// replicas of a layer (benchmarks) share one core. Both compute, in row-major terms,
//   D[m x n] (ld ldd) = alpha * X[m x k] (ld ldx) * W^T + beta * D,   W: n x k row-major,
// which in the libraries' column-major terms is D^T = W * X^T with W "transposed" (TN, the
// layout FP8 tensor-core GEMMs require).
#pragma once
#include <cublasLt.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "spense/cuda/runtime.h"
#include "spense/dtype.h"

namespace spense::cuda {

struct GemmShape {
  std::string name;  // "<layer>" or "<layer>/dense", used in errors
  int64_t n = 0, k = 0;
  int64_t ldx = 0, ldd = 0;
  DType in = DType::BF16;   // BF16, F16, F8_E4M3 (W and X)
  DType out = DType::BF16;  // BF16, F16, F32 (D)
  // cuBLASLt only: plan for this many SMs (CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET) because a
  // concurrent GEMM on another stream holds the rest; 0: the whole GPU.
  int sm_target = 0;
};

cudaDataType to_cuda_type(DType t);
size_t elem_bytes(DType t);
const char* dtype_label(DType t);

// cuBLASLt core: plans keyed by the exact m (cuBLASLt takes any m).
class LtGemm {
 public:
  // search > 0: time that many heuristic candidates per m and keep the fastest.
  LtGemm(Context& ctx, GemmShape shape, int search);
  ~LtGemm();
  const GemmShape& shape() const { return shape_; }
  bool prepared(int64_t m) const;
  // w: the device weights (used by the timed search only).
  void prepare(int64_t m, const void* w);
  // ws_role: which Context workspace to use (0: caller's stream, 1: side stream).
  void run(const void* w, const void* x, void* d, int64_t m, float beta, cudaStream_t s, int ws_role) const;
  std::string plan_info(int64_t m) const;

 private:
  struct Plan;
  Context& ctx_;
  GemmShape shape_;
  int search_;
  std::map<int64_t, std::unique_ptr<Plan>> plans_;
};

// cuSPARSELt core (src/cuda/sparselt/sparse_core.cpp; make_sparse_core throws in builds
// without cuSPARSELt). Plans keyed by the padded m (a rows_bucket value).
class SparseCore {
 public:
  virtual ~SparseCore() = default;
  // Check that w (device, n x k row-major, zeros in place) is 2:4 along K and compress it.
  virtual DeviceBuffer compress(const void* w, cudaStream_t s) = 0;
  virtual size_t compressed_bytes() const = 0;
  virtual bool prepared(int64_t m_pad) const = 0;
  virtual void prepare(int64_t m_pad, const void* w_compressed) = 0;
  virtual void run(const void* w_compressed, const void* x, void* d, int64_t m_pad, float beta,
                   cudaStream_t s) const = 0;
  virtual std::string plan_info(int64_t m_pad) const = 0;
};
std::unique_ptr<SparseCore> make_sparse_core(Context& ctx, const GemmShape& shape, bool search);

// Host scan for the first group of 4 along K with more than 2 non-zeros in a rows x k
// row-major matrix (16-bit or E4M3; -0 counts as zero). Returns "" when it is 2:4, else
// "row R, columns C..C+3 hold N non-zeros".
std::string find_24_violation(const void* host, DType type, int64_t rows, int64_t k);

}  // namespace spense::cuda
