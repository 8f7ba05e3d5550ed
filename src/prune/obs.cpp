// The inverse-Hessian factor and the lazy-batched OBS pass of SparseGPT (Frantar & Alistarh,
// "SparseGPT", 2023, Algorithm 1), written from the paper's description for row-major
// weights: each row is an independent least-squares problem sharing H, so a block runs row
// by row (contiguous, cache-resident) and the trailing update is one GEMM per block.
#include "prune/obs.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>

#include "spense/error.h"

namespace spense::detail {

namespace {
constexpr int64_t kSuperBlock = 512;  // columns per outer lazy-update level (see obs_prune)

std::string tag(const std::string& layer) {
  return "layer '" + (layer.empty() ? std::string("?") : layer) + "'";
}

inline void gemm(int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
                 float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm(int M, int N, int K, double alpha, const double* A, int lda, const double* B,
                 int ldb, double beta, double* C, int ldc) {
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
// One row's work inside a block [i1, i2): mask choice at each group start, error, in-block
// update, +0.0 at pruned positions. e[i] receives the scaled error of column i. Returns the
// summed lengths of the in-block updates (for the flop count); *es = sum of err^2.
template <class T>
[[gnu::always_inline]] inline int64_t row_block_impl(T* __restrict w, T* __restrict e,
                                                     const T* __restrict U, const T* __restrict ud,
                                                     const uint8_t* __restrict prunable, int64_t i1,
                                                     int64_t i2, int64_t K, double* es_out) {
  int64_t updates = 0;
  double es = 0;
  unsigned keep = 0xf;
  for (int64_t i = i1; i < i2; ++i) {
    if (((i - i1) & 3) == 0) {
      if (prunable[i]) {
        T sal[4];
        for (int k = 0; k < 4; ++k) sal[k] = w[i + k] * w[i + k] / (ud[i + k] * ud[i + k]);
        keep = keep2of4(sal);
      } else {
        keep = 0xf;
      }
    }
    const T wi = w[i];
    const T q = (keep >> ((i - i1) & 3)) & 1 ? wi : T(0);
    const T err = (wi - q) / ud[i];
    e[i] = err;
    if (err != T(0)) {
      const T* __restrict u = U + i * K;
      for (int64_t k = i + 1; k < i2; ++k) w[k] -= err * u[k];
      es += double(err) * double(err);
      updates += i2 - i - 1;
    }
    w[i] = q;
  }
  *es_out = es;
  return updates;
}

// The build targets baseline x86-64 (no -march); the in-block axpys are worth AVX2/AVX-512,
// so the kernel is cloned per ISA and picked at load time (GCC function multiversioning).
[[gnu::target_clones("avx512f", "avx2", "default")]] int64_t row_block(
    double* w, double* e, const double* U, const double* ud, const uint8_t* prunable, int64_t i1,
    int64_t i2, int64_t K, double* es) {
  return row_block_impl(w, e, U, ud, prunable, i1, i2, K, es);
}
[[gnu::target_clones("avx512f", "avx2", "default")]] int64_t row_block(
    float* w, float* e, const float* U, const float* ud, const uint8_t* prunable, int64_t i1,
    int64_t i2, int64_t K, double* es) {
  return row_block_impl(w, e, U, ud, prunable, i1, i2, K, es);
}

}  // namespace

double inverse_factor_start(InverseFactor& f, const double* H, int64_t K, double percdamp) {
  f = InverseFactor();
  f.K = K;
  f.dead.assign(size_t(K), 0);
  double mean_diag = 0;
  for (int64_t j = 0; j < K; ++j) {
    const double d = H[j * K + j];
    if (d == 0) f.dead[size_t(j)] = 1, ++f.n_dead;
    mean_diag += d == 0 ? 1.0 : d;
  }
  mean_diag /= double(K);
  f.lambda = percdamp * mean_diag;
  return mean_diag;
}

void inverse_factor_raise_damping(const std::string& layer, InverseFactor& f, int attempt, double percdamp,
                                  double mean_diag) {
  if (attempt == 4)
    throw Error(tag(layer) + ": Hessian is not positive definite even with damping " + std::to_string(f.lambda) +
                " (percdamp " + std::to_string(percdamp) + ", mean diag " + std::to_string(mean_diag) + ")");
  f.lambda = std::max(f.lambda * 10, 1e-8 * mean_diag);
  ++f.retries;
}

InverseFactor inverse_factor(const std::string& layer, const double* H, int64_t K, double percdamp) {
  InverseFactor f;
  const double mean_diag = inverse_factor_start(f, H, K, percdamp);
  std::vector<double> A(size_t(K) * size_t(K));
  for (int attempt = 0;; ++attempt) {
    // A = J (H_fix + lambda I) J, row-major.
    for (int64_t i = 0; i < K; ++i) {
      const double* h = H + (K - 1 - i) * K;
      double* a = A.data() + i * K;
      for (int64_t j = 0; j < K; ++j) a[j] = h[K - 1 - j];
      a[i] += f.lambda + (f.dead[size_t(K - 1 - i)] ? 1.0 : 0.0);
    }
    // Row-major lower = column-major upper: this yields A = R R^T with R lower (row-major).
    const lapack_int info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', lapack_int(K), A.data(), lapack_int(K));
    if (info == 0) break;
    if (info < 0) throw Error(tag(layer) + ": dpotrf argument error " + std::to_string(info), 1);
    inverse_factor_raise_damping(layer, f, attempt, percdamp, mean_diag);
  }
  // V = J R J (upper), then U = V^-1.
  f.U.assign(size_t(K) * size_t(K), 0.0);
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = i; j < K; ++j) f.U[size_t(i * K + j)] = A[size_t((K - 1 - i) * K + (K - 1 - j))];
  // Row-major upper = column-major lower.
  const lapack_int info = LAPACKE_dtrtri(LAPACK_COL_MAJOR, 'L', 'N', lapack_int(K), f.U.data(), lapack_int(K));
  if (info != 0)
    throw Error(tag(layer) + ": triangular inverse of the Hessian factor failed (dtrtri info " +
                std::to_string(info) + ")", 1);
  return f;
}

std::vector<double> inverse_diagonal(const InverseFactor& f) {
  const int64_t K = f.K;
  std::vector<double> d(size_t(K), 0.0);
  for (int64_t i = 0; i < K; ++i) {
    const double* u = f.U.data() + i * K;
    for (int64_t j = i; j < K; ++j) d[size_t(j)] += u[j] * u[j];
  }
  return d;
}

template <class T>
double obs_prune(T* W, int64_t N, int64_t K, const T* U, const uint8_t* prunable, int64_t B,
                 double* err_row, double* err_col) {
  if (N == 0) return 0;
  std::vector<T> ud(static_cast<size_t>(K));
  for (int64_t j = 0; j < K; ++j) ud[size_t(j)] = U[j * K + j];
  // Two levels of lazy updates (both exact): blocks of B columns inside super-blocks of S.
  // A block's errors go at once only to the rest of its super-block (GEMM, inner dim B); a
  // super-block's errors go to all later columns in one GEMM of inner dim S. Same flops as
  // one level, but the big trailing GEMMs stream W's trailing columns S/B times less often.
  const int64_t S = std::min(K, std::max(B, (kSuperBlock / B) * B));
  std::vector<T> Err(size_t(N) * size_t(S));
  double flops = 0;
  for (int64_t s1 = 0; s1 < K; s1 += S) {
    const int64_t s2 = std::min(s1 + S, K), sw = s2 - s1;
    for (int64_t i1 = s1; i1 < s2; i1 += B) {
      const int64_t i2 = std::min(i1 + B, s2), bw = i2 - i1;
      int64_t pruned_updates = 0;  // in-block axpy lengths, for the flop count
      // Threads only when a block has enough work (~N bw^2 / 4 flops): a parallel region
      // costs a barrier, and on a loaded 2-core machine a descheduled thread stalls it.
      const bool par = N * bw * bw >= (int64_t(1) << 23);
#pragma omp parallel for schedule(static) reduction(+ : pruned_updates) if (par)
      for (int64_t r = 0; r < N; ++r) {
        double es = 0;
        pruned_updates += row_block(W + r * K, Err.data() + r * sw - s1, U, ud.data(), prunable,
                                    i1, i2, K, &es);
        if (err_row) err_row[r] += es;
      }
      if (err_col)
        for (int64_t r = 0; r < N; ++r) {
          const T* e = Err.data() + r * sw - s1;
          for (int64_t c = i1; c < i2; ++c) err_col[c] += double(e[c]) * double(e[c]);
        }
      if (i2 < s2)
        gemm(int(N), int(s2 - i2), int(bw), T(-1), Err.data() + (i1 - s1), int(sw),
             U + i1 * K + i2, int(K), T(1), W + i2, int(K));
      flops += 2.0 * double(N) * double(bw) * double(s2 - i2) + 2.0 * double(pruned_updates);
    }
    if (s2 < K)
      gemm(int(N), int(K - s2), int(sw), T(-1), Err.data(), int(sw), U + s1 * K + s2, int(K), T(1),
           W + s2, int(K));
    flops += 2.0 * double(N) * double(sw) * double(K - s2);
  }
  return flops;
}

template double obs_prune<float>(float*, int64_t, int64_t, const float*, const uint8_t*, int64_t,
                                 double*, double*);
template double obs_prune<double>(double*, int64_t, int64_t, const double*, const uint8_t*, int64_t,
                                  double*, double*);

namespace {
double quad_form_cpu(const double* V, int64_t N, int64_t K, const double* H) {
  const int64_t chunk = 256;
  std::vector<double> C(size_t(std::min(N, chunk)) * size_t(K));
  double total = 0;
  for (int64_t r0 = 0; r0 < N; r0 += chunk) {
    const int64_t m = std::min(chunk, N - r0);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(K), int(K), 1.0, V + r0 * K,
                int(K), H, int(K), 0.0, C.data(), int(K));
    const double* v = V + r0 * K;
    double s = 0;
    for (int64_t i = 0; i < m * K; ++i) s += v[i] * C[size_t(i)];
    total += s;
  }
  return total;
}

class CpuPruneCompute final : public PruneCompute {
 public:
  const char* name() const override { return "cpu"; }
  InverseFactor inverse_factor(const std::string& layer, const double* H, int64_t K,
                               double percdamp) const override {
    return detail::inverse_factor(layer, H, K, percdamp);
  }
  double obs_prune(double* W, int64_t N, int64_t K, const double* U, const uint8_t* prunable, int64_t B,
                   double* err_row, double* err_col) const override {
    return detail::obs_prune<double>(W, N, K, U, prunable, B, err_row, err_col);
  }
  double obs_prune(float* W, int64_t N, int64_t K, const float* U, const uint8_t* prunable, int64_t B,
                   double* err_row, double* err_col) const override {
    return detail::obs_prune<float>(W, N, K, U, prunable, B, err_row, err_col);
  }
  double quad_form_rows(const double* V, int64_t N, int64_t K, const double* H) const override {
    return quad_form_cpu(V, N, K, H);
  }
};
}  // namespace

}  // namespace spense::detail

namespace spense {
const PruneCompute& cpu_prune_compute() {
  static const detail::CpuPruneCompute instance;
  return instance;
}
}  // namespace spense
