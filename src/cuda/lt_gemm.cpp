// cuBLASLt GEMM core (see gemm_core.h): one plan per distinct m, made once (descriptor,
// three matrix layouts, the algorithm from the heuristic or from a short timed search).
// Also the small dtype helpers and the host 2:4 scan shared by the layers.
#include <algorithm>
#include <cstring>
#include <vector>

#include "gemm_core.h"
#include "spense/cuda/kernels.h"

namespace spense::cuda {

cudaDataType to_cuda_type(DType t) {
  switch (t) {
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    case DType::F32: return CUDA_R_32F;
    case DType::F8_E4M3: return CUDA_R_8F_E4M3;
    default: throw Error("internal: no CUDA type for this dtype", 1);
  }
}

size_t elem_bytes(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16:
    case DType::F16: return 2;
    case DType::F8_E4M3: return 1;
    default: throw Error("internal: unsupported dtype", 1);
  }
}

const char* dtype_label(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::F64: return "F64";
    case DType::I8: return "I8";
    default: return "other";
  }
}

std::string find_24_violation(const void* host, DType type, int64_t rows, int64_t k) {
  const size_t eb = elem_bytes(type);
  const auto* p = static_cast<const uint8_t*>(host);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c + 4 <= k; c += 4) {
      int nz = 0;
      for (int i = 0; i < 4; ++i) {
        const uint8_t* e = p + (r * k + c + i) * eb;
        if (eb == 1) nz += (e[0] & 0x7f) != 0;
        else {
          uint16_t v;
          std::memcpy(&v, e, 2);
          nz += (v & 0x7fff) != 0;
        }
      }
      if (nz > 2)
        return "row " + std::to_string(r) + ", columns " + std::to_string(c) + ".." +
               std::to_string(c + 3) + " hold " + std::to_string(nz) + " non-zeros";
    }
  return "";
}

struct LtGemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  int choice = 0, candidates = 0;
  float us = -1.f;
  ~Plan() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

LtGemm::LtGemm(Context& ctx, GemmShape shape, int search)
    : ctx_(ctx), shape_(std::move(shape)), search_(search) {}
LtGemm::~LtGemm() = default;

bool LtGemm::prepared(int64_t m) const { return plans_.count(m) != 0; }

void LtGemm::prepare(int64_t m, const void* w) {
  if (prepared(m)) return;
  auto p = std::make_unique<Plan>();
  const cudaDataType tin = to_cuda_type(shape_.in), tout = to_cuda_type(shape_.out);
  SPENSE_CUDA_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
  SPENSE_CUDA_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opT, sizeof(opT)));
  SPENSE_CUDA_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof(opN)));
  if (shape_.sm_target > 0) {
    const int32_t sms = shape_.sm_target;
    SPENSE_CUDA_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET, &sms, sizeof(sms)));
  }
  // Column-major view: A = W^T stored k x n (ld k), used transposed; B = X^T k x m (ld ldx);
  // C = D = Y^T n x m (ld ldd).
  SPENSE_CUDA_CHECK(cublasLtMatrixLayoutCreate(&p->a, tin, shape_.k, shape_.n, shape_.k));
  SPENSE_CUDA_CHECK(cublasLtMatrixLayoutCreate(&p->b, tin, shape_.k, m, shape_.ldx));
  SPENSE_CUDA_CHECK(cublasLtMatrixLayoutCreate(&p->c, tout, shape_.n, m, shape_.ldd));

  cublasLtMatmulPreference_t pref = nullptr;
  SPENSE_CUDA_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  size_t ws = ctx_.workspace_bytes();
  std::vector<cublasLtMatmulHeuristicResult_t> res(std::max(1, search_));
  int found = 0;
  try {
    SPENSE_CUDA_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    SPENSE_CUDA_CHECK(cublasLtMatmulAlgoGetHeuristic(ctx_.cublaslt(), p->desc, p->a, p->b, p->c, p->c,
                                                     pref, static_cast<int>(res.size()), res.data(), &found));
  } catch (...) {
    cublasLtMatmulPreferenceDestroy(pref);
    throw;
  }
  cublasLtMatmulPreferenceDestroy(pref);
  if (found == 0)
    throw Error("layer '" + shape_.name + "': cuBLASLt has no algorithm for " + dtype_label(shape_.in) +
                    " x " + dtype_label(shape_.in) + " -> " + dtype_label(shape_.out) + " with n=" +
                    std::to_string(shape_.n) + " k=" + std::to_string(shape_.k) + " m=" + std::to_string(m),
                2);
  p->candidates = found;
  p->algo = res[0].algo;

  if (search_ > 0 && found > 1) {
    // Short timed search on scratch inputs (random, never zeros), weights as given.
    DeviceBuffer x(static_cast<size_t>(m) * shape_.ldx * elem_bytes(shape_.in));
    DeviceBuffer d(static_cast<size_t>(m) * shape_.ldd * elem_bytes(shape_.out));
    Stream s;
    fill_random(x.get(), shape_.in, static_cast<size_t>(m) * shape_.ldx, 7, 1.f, s.get());
    Event e0(true), e1(true);
    const L2Flush flush;  // each timed call reads the weights from device memory (runtime.h)
    float best = 1e30f;
    const float alpha = 1.f, beta = 0.f;
    for (int i = 0; i < found; ++i) {
      std::vector<float> t;
      bool ok = true;
      for (int it = 0; it < 7 && ok; ++it) {
        flush(s.get());
        SPENSE_CUDA_CHECK(cudaEventRecord(e0.get(), s.get()));
        cublasStatus_t st = cublasLtMatmul(ctx_.cublaslt(), p->desc, &alpha, w, p->a, x.get(), p->b, &beta,
                                           d.get(), p->c, d.get(), p->c, &res[i].algo, ctx_.workspace(0),
                                           ws, s.get());
        if (st != CUBLAS_STATUS_SUCCESS) {
          ok = false;
          break;
        }
        SPENSE_CUDA_CHECK(cudaEventRecord(e1.get(), s.get()));
        SPENSE_CUDA_CHECK(cudaEventSynchronize(e1.get()));
        float ms = 0;
        SPENSE_CUDA_CHECK(cudaEventElapsedTime(&ms, e0.get(), e1.get()));
        if (it >= 2) t.push_back(ms * 1000.f);  // first two are warm-up
      }
      if (!ok || t.empty()) continue;
      std::sort(t.begin(), t.end());
      const float med = t[t.size() / 2];
      if (med < best) {
        best = med;
        p->algo = res[i].algo;
        p->choice = i;
        p->us = med;
      }
    }
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(s.get()));
  }
  plans_.emplace(m, std::move(p));
}

void LtGemm::run(const void* w, const void* x, void* d, int64_t m, float beta, cudaStream_t s,
                 int ws_role) const {
  auto it = plans_.find(m);
  if (it == plans_.end())
    throw Error("internal: layer '" + shape_.name + "' has no cuBLASLt plan for m=" + std::to_string(m), 1);
  const Plan& p = *it->second;
  const float alpha = 1.f;
  SPENSE_CUDA_CHECK(cublasLtMatmul(ctx_.cublaslt(), p.desc, &alpha, w, p.a, x, p.b, &beta, d, p.c, d, p.c,
                                   &p.algo, ctx_.workspace(ws_role), ctx_.workspace_bytes(), s));
}

std::string LtGemm::plan_info(int64_t m) const {
  auto it = plans_.find(m);
  if (it == plans_.end()) return "dense: no plan";
  const Plan& p = *it->second;
  return "dense: heuristic #" + std::to_string(p.choice) + " of " + std::to_string(p.candidates) +
         (search_ > 0 ? " (timed)" : "") +
         (shape_.sm_target > 0 ? " for " + std::to_string(shape_.sm_target) + " SMs" : "");
}

}  // namespace spense::cuda
