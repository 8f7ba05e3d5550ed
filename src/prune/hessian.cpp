// Calibration statistics: H = 2/n * X^T X accumulated in fp64 with cblas_dsyrk, plus the
// column sums of squares for Wanda. fp32 batches of any size are cut into chunks converted to
// fp64 (at least 512 rows, about 32 MB), so memory stays bounded whatever the batch.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "spense/error.h"
#include "spense/prune.h"

namespace spense {

namespace {
constexpr int64_t kChunk = 512;

std::string tag(const std::string& layer) {
  return "layer '" + (layer.empty() ? std::string("?") : layer) + "'";
}
}  // namespace

Hessian Hessian::from_matrix(int64_t K, std::vector<double> H, const std::string& layer) {
  if (K <= 0 || H.size() != size_t(K) * size_t(K))
    throw Error(tag(layer) + ": Hessian has " + std::to_string(H.size()) + " elements, expected " +
                std::to_string(K) + " x " + std::to_string(K));
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = 0; j < K; ++j) {
      const double a = H[size_t(i * K + j)];
      if (!std::isfinite(a))
        throw Error(tag(layer) + ": Hessian [" + std::to_string(i) + "," + std::to_string(j) +
                    "] is NaN or Inf");
      if (j > i) {
        const double b = H[size_t(j * K + i)];
        if (std::abs(a - b) > 1e-12 * std::max({std::abs(a), std::abs(b), 1e-300}))
          throw Error(tag(layer) + ": Hessian is not symmetric at [" + std::to_string(i) + "," +
                      std::to_string(j) + "]");
      }
    }
  Hessian h;
  h.K = K;
  h.n_rows = 0;
  h.col_sq.resize(size_t(K));
  for (int64_t j = 0; j < K; ++j) h.col_sq[size_t(j)] = H[size_t(j * K + j)];
  h.H = std::move(H);
  return h;
}

HessianAccumulator::HessianAccumulator(std::string layer, int64_t K, int64_t chunk_rows, bool fp32_batches)
    : layer_(std::move(layer)), K_(K), fp32_batches_(fp32_batches) {
  chunk_ = chunk_rows > 0 ? chunk_rows : std::max<int64_t>(kChunk, (int64_t(1) << 22) / std::max<int64_t>(K, 1));
  if (K <= 0) throw Error(tag(layer_) + ": Hessian size K = " + std::to_string(K) + " must be positive");
  S_.assign(size_t(K) * size_t(K), 0.0);
  col_sq_.assign(size_t(K), 0.0);
}

namespace {
template <class T>
void check_finite(const std::string& layer, const T* X, int64_t rows, int64_t K, int64_t n_before) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < K; ++j)
      if (!std::isfinite(X[i * K + j]))
        throw Error(tag(layer) + ": calibration activation row " + std::to_string(n_before + i) +
                    ", column " + std::to_string(j) + " is NaN or Inf");
}

// col_sq[j] += sum_i X[i, j]^2 in fp64 (Wanda's column norms).
template <class T>
void add_column_squares(const T* X, int64_t rows, int64_t K, std::vector<double>& col_sq) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < K; ++j) col_sq[size_t(j)] += double(X[i * K + j]) * double(X[i * K + j]);
}

template <class T>
void accumulate(const T* X, int64_t rows, int64_t K, int64_t chunk_rows, std::vector<double>& buf,
                std::vector<double>& S, std::vector<double>& col_sq) {
  // fp64 input goes to dsyrk whole; fp32 input in chunks (large chunks keep dsyrk
  // compute-bound: each call streams S once).
  const int64_t chunk = std::is_same_v<T, double> ? rows : chunk_rows;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t m = std::min(chunk, rows - r0);
    const double* A;
    if constexpr (std::is_same_v<T, double>) {
      A = X + r0 * K;
    } else {
      buf.resize(size_t(m * K));
      for (int64_t i = 0; i < m * K; ++i) buf[size_t(i)] = double(X[r0 * K + i]);
      A = buf.data();
    }
    // S (upper) += A^T A; A is m x K row-major.
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, int(K), int(m), 1.0, A, int(K), 1.0,
                S.data(), int(K));
    add_column_squares(A, m, K, col_sq);
  }
}
}  // namespace

void HessianAccumulator::add(const float* X, int64_t rows) {
  if (rows <= 0) return;
  check_finite(layer_, X, rows, K_, n_);
  if (fp32_batches_) {
    // The batch's X^T X in fp32 (upper triangle, into a K x K buffer kept between batches, so
    // it is not faulted in again), then into S in fp64.
    s32_.resize(size_t(K_) * size_t(K_));
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, int(K_), int(rows), 1.0f, X, int(K_), 0.0f, s32_.data(),
                int(K_));
    for (int64_t i = 0; i < K_; ++i)
      for (int64_t j = i; j < K_; ++j) S_[size_t(i * K_ + j)] += double(s32_[size_t(i * K_ + j)]);
    add_column_squares(X, rows, K_, col_sq_);
  } else {
    accumulate(X, rows, K_, chunk_, buf_, S_, col_sq_);
  }
  n_ += rows;
}

void HessianAccumulator::add(const double* X, int64_t rows) {
  if (rows <= 0) return;
  check_finite(layer_, X, rows, K_, n_);
  accumulate(X, rows, K_, chunk_, buf_, S_, col_sq_);
  n_ += rows;
}

Hessian HessianAccumulator::finalize() const {
  if (n_ == 0) throw Error(tag(layer_) + ": no calibration rows were added to the Hessian");
  Hessian h;
  h.K = K_;
  h.n_rows = n_;
  h.H.resize(S_.size());
  const double s = 2.0 / double(n_);
  for (int64_t i = 0; i < K_; ++i)
    for (int64_t j = i; j < K_; ++j) {
      const double v = s * S_[size_t(i * K_ + j)];
      h.H[size_t(i * K_ + j)] = v;
      h.H[size_t(j * K_ + i)] = v;
    }
  for (int64_t i = 0; i < K_; ++i)
    if (!std::isfinite(h.H[size_t(i * K_ + i)]))
      throw Error(tag(layer_) + ": Hessian overflowed (diag [" + std::to_string(i) + "] is Inf)");
  h.col_sq = col_sq_;
  return h;
}

}  // namespace spense
