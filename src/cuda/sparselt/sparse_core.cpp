// cuSPARSELt GEMM core (see ../gemm_core.h); built only when cuSPARSELt is found.
// At load: one structured descriptor for W (n x k, row-major, 2:4 along k), the prune check
// (cusparseLtSpMMAPruneCheck2) and compression (cusparseLtSpMMACompress2, independent of
// any plan). Per M bucket, once: dense descriptors for X (m x k, row-major, ld ldx, used
// transposed) and D (n x m, column-major, ld ldd, i.e. Y row-major), the matmul descriptor, the algorithm (cusparseLtMatmulSearch
// when asked) and the plan's workspace. Nothing is created per call.
#include <cusparseLt.h>

#include <cstdlib>
#include <vector>

#include "../gemm_core.h"
#include "spense/cuda/kernels.h"

namespace spense::cuda {

inline void check_status(cusparseStatus_t s, const char* stmt, const char* file, int line) {
  if (s != CUSPARSE_STATUS_SUCCESS)
    throw_status("cuSPARSELt", cusparseLtGetErrorName(s), cusparseLtGetErrorString(s), stmt, file, line);
}

bool have_cusparselt() { return true; }

std::string cusparselt_version() {
  return "cuSPARSELt " + std::to_string(CUSPARSELT_VER_MAJOR) + "." + std::to_string(CUSPARSELT_VER_MINOR) +
         "." + std::to_string(CUSPARSELT_VER_PATCH);
}

void* sparselt_handle_create() {
  auto* h = new cusparseLtHandle_t;
  try {
    SPENSE_CUDA_CHECK(cusparseLtInit(h));
  } catch (...) {
    delete h;
    throw;
  }
  return h;
}

void sparselt_handle_destroy(void* h) {
  auto* p = static_cast<cusparseLtHandle_t*>(h);
  cusparseLtDestroy(p);
  delete p;
}

namespace {

// cusparseLtMatmulSearch on small matrices (seen: 128 x 256, BF16, m=16, H100, cuSPARSELt 0.8.0)
// returns CUSPARSE_STATUS_INTERNAL_ERROR after one of its candidate kernels hit an illegal
// instruction, which kills the CUDA context. Model-sized layers search fine (all of the Qwen3
// shapes), and small layers are launch-bound anyway, so they keep the default algorithm.
constexpr int64_t kMinSearchElems = int64_t(1) << 20;

// SPENSE_CUSPARSELT_SEARCH=0 turns cusparseLtMatmulSearch off everywhere (a workaround knob).
bool search_allowed() {
  const char* e = std::getenv("SPENSE_CUSPARSELT_SEARCH");
  return !(e && std::string(e) == "0");
}

class SparseCoreLt final : public SparseCore {
 public:
  SparseCoreLt(Context& ctx, GemmShape shape, bool search)
      : ctx_(ctx), shape_(std::move(shape)),
        search_(search && search_allowed() && shape_.n * shape_.k >= kMinSearchElems),
        h_(static_cast<const cusparseLtHandle_t*>(ctx.cusparselt_handle())) {
    if (!h_) throw Error("internal: Context has no cuSPARSELt handle", 1);
    SPENSE_CUDA_CHECK(cusparseLtStructuredDescriptorInit(h_, &a_, shape_.n, shape_.k, shape_.k, 16,
                                                         to_cuda_type(shape_.in), CUSPARSE_ORDER_ROW,
                                                         CUSPARSELT_SPARSITY_50_PERCENT));
    try {
      SPENSE_CUDA_CHECK(cusparseLtSpMMACompressedSize2(h_, &a_, &comp_size_, &comp_buf_size_));
    } catch (...) {
      cusparseLtMatDescriptorDestroy(&a_);
      throw;
    }
  }
  ~SparseCoreLt() override {
    plans_.clear();
    cusparseLtMatDescriptorDestroy(&a_);
  }

  DeviceBuffer compress(const void* w, cudaStream_t s) override {
    DeviceBuffer valid(sizeof(int));
    SPENSE_CUDA_CHECK(cudaMemsetAsync(valid.get(), 0, sizeof(int), s));
    SPENSE_CUDA_CHECK(cusparseLtSpMMAPruneCheck2(h_, &a_, 1, CUSPARSE_OPERATION_NON_TRANSPOSE, w,
                                                 valid.as<int>(), s));
    int bad = 0;
    SPENSE_CUDA_CHECK(cudaMemcpyAsync(&bad, valid.get(), sizeof(int), cudaMemcpyDeviceToHost, s));
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(s));
    if (bad != 0) {
      // Locate the first offending group for the message (only on this error path).
      const size_t bytes = static_cast<size_t>(shape_.n) * shape_.k * elem_bytes(shape_.in);
      std::vector<uint8_t> host(bytes);
      SPENSE_CUDA_CHECK(cudaMemcpy(host.data(), w, bytes, cudaMemcpyDeviceToHost));
      std::string where = find_24_violation(host.data(), shape_.in, shape_.n, shape_.k);
      throw Error("layer '" + shape_.name + "': weights are not 2:4 sparse along K (" +
                      (where.empty() ? std::string("cusparseLtSpMMAPruneCheck2 rejected them") : where) +
                      "); prune them to 2:4 or keep these tiles dense",
                  2);
    }
    DeviceBuffer out(comp_size_), tmp(comp_buf_size_);
    SPENSE_CUDA_CHECK(cusparseLtSpMMACompress2(h_, &a_, 1, CUSPARSE_OPERATION_NON_TRANSPOSE, w, out.get(),
                                               tmp.get(), s));
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(s));
    return out;
  }

  size_t compressed_bytes() const override { return comp_size_; }

  bool prepared(int64_t m_pad) const override { return plans_.count(m_pad) != 0; }

  void prepare(int64_t m_pad, const void* wc) override {
    if (prepared(m_pad)) return;
    auto p = std::make_unique<Plan>();
    const cudaDataType tin = to_cuda_type(shape_.in), tout = to_cuda_type(shape_.out);
    // X as stored: m_pad x k row-major, used transposed (k x m). The same bytes described as a
    // k x m column-major matrix with op N crash cusparseLtMatmulPlanInit in 0.8.0 (seen on H100).
    SPENSE_CUDA_CHECK(cusparseLtDenseDescriptorInit(h_, &p->b, m_pad, shape_.k, shape_.ldx, 16, tin,
                                                    CUSPARSE_ORDER_ROW));
    p->has_b = true;
    SPENSE_CUDA_CHECK(cusparseLtDenseDescriptorInit(h_, &p->c, shape_.n, m_pad, shape_.ldd, 16, tout,
                                                    CUSPARSE_ORDER_COL));
    p->has_c = true;
    SPENSE_CUDA_CHECK(cusparseLtMatmulDescriptorInit(h_, &p->mm, CUSPARSE_OPERATION_NON_TRANSPOSE,
                                                     CUSPARSE_OPERATION_TRANSPOSE, &a_, &p->b, &p->c,
                                                     &p->c, CUSPARSE_COMPUTE_32F));
    SPENSE_CUDA_CHECK(cusparseLtMatmulAlgSelectionInit(h_, &p->alg, &p->mm, CUSPARSELT_MATMUL_ALG_DEFAULT));
    p->has_alg = true;
    SPENSE_CUDA_CHECK(cusparseLtMatmulPlanInit(h_, &p->plan, &p->mm, &p->alg));
    p->has_plan = true;
    SPENSE_CUDA_CHECK(cusparseLtMatmulAlgGetAttribute(h_, &p->alg, CUSPARSELT_MATMUL_ALG_CONFIG_MAX_ID,
                                                      &p->max_id, sizeof(p->max_id)));
    if (search_) {
      size_t ws = 0;
      SPENSE_CUDA_CHECK(cusparseLtMatmulGetWorkspace(h_, &p->plan, &ws));
      // Scratch operands for the search (random, never zeros); split-K candidates may want
      // more workspace than the default algorithm, so give the search room.
      DeviceBuffer x(static_cast<size_t>(m_pad) * shape_.ldx * elem_bytes(shape_.in));
      DeviceBuffer d(static_cast<size_t>(m_pad) * shape_.ldd * elem_bytes(shape_.out));
      DeviceBuffer wsb(std::max<size_t>(ws, 64u << 20));
      Stream s;
      cudaStream_t sv = s.get();
      fill_random(x.get(), shape_.in, static_cast<size_t>(m_pad) * shape_.ldx, 11, 1.f, sv);
      const float alpha = 1.f, beta = 0.f;
      SPENSE_CUDA_CHECK(cusparseLtMatmulSearch(h_, &p->plan, &alpha, wc, x.get(), &beta, d.get(), d.get(),
                                               wsb.get(), &sv, 1));
      SPENSE_CUDA_CHECK(cudaStreamSynchronize(sv));
      // The search updates the plan (and the algorithm selection) in place. Destroying the plan
      // and initialising it again from the selection, as older samples do, crashes inside
      // cusparseLtMatmulPlanInit with 0.8.0 (seen on H100).
    }
    SPENSE_CUDA_CHECK(cusparseLtMatmulAlgGetAttribute(h_, &p->alg, CUSPARSELT_MATMUL_ALG_CONFIG_ID, &p->alg_id,
                                                      sizeof(p->alg_id)));
    SPENSE_CUDA_CHECK(cusparseLtMatmulAlgGetAttribute(h_, &p->alg, CUSPARSELT_MATMUL_SPLIT_K, &p->split_k,
                                                      sizeof(p->split_k)));
    SPENSE_CUDA_CHECK(cusparseLtMatmulGetWorkspace(h_, &p->plan, &p->ws_size));
    p->ws = DeviceBuffer(p->ws_size);
    plans_.emplace(m_pad, std::move(p));
  }

  void run(const void* wc, const void* x, void* d, int64_t m_pad, float beta, cudaStream_t s) const override {
    auto it = plans_.find(m_pad);
    if (it == plans_.end())
      throw Error("internal: layer '" + shape_.name + "' has no cuSPARSELt plan for m=" + std::to_string(m_pad), 1);
    const Plan& p = *it->second;
    const float alpha = 1.f;
    cudaStream_t sv = s;
    SPENSE_CUDA_CHECK(cusparseLtMatmul(h_, &p.plan, &alpha, wc, x, &beta, d, d, p.ws.get(), &sv, 1));
  }

  std::string plan_info(int64_t m_pad) const override {
    auto it = plans_.find(m_pad);
    if (it == plans_.end()) return "sparse: no plan";
    const Plan& p = *it->second;
    return "sparse: alg " + std::to_string(p.alg_id) + "/" + std::to_string(p.max_id) + " split-k " +
           std::to_string(p.split_k) + (search_ ? " (searched)" : " (default)") + " ws " +
           std::to_string(p.ws_size >> 10) + " KiB";
  }

 private:
  struct Plan {
    cusparseLtMatDescriptor_t b{}, c{};
    cusparseLtMatmulDescriptor_t mm{};
    cusparseLtMatmulAlgSelection_t alg{};
    cusparseLtMatmulPlan_t plan{};
    bool has_b = false, has_c = false, has_alg = false, has_plan = false;
    int alg_id = -1, max_id = -1, split_k = 1;
    size_t ws_size = 0;
    DeviceBuffer ws;
    ~Plan() {
      if (has_plan) cusparseLtMatmulPlanDestroy(&plan);
      if (has_alg) cusparseLtMatmulAlgSelectionDestroy(&alg);
      if (has_c) cusparseLtMatDescriptorDestroy(&c);
      if (has_b) cusparseLtMatDescriptorDestroy(&b);
    }
  };

  Context& ctx_;
  GemmShape shape_;
  bool search_;
  const cusparseLtHandle_t* h_;
  cusparseLtMatDescriptor_t a_{};
  size_t comp_size_ = 0, comp_buf_size_ = 0;
  std::map<int64_t, std::unique_ptr<Plan>> plans_;
};

}  // namespace

std::unique_ptr<SparseCore> make_sparse_core(Context& ctx, const GemmShape& shape, bool search) {
  return std::make_unique<SparseCoreLt>(ctx, shape, search);
}

}  // namespace spense::cuda
