// Calibration statistics: H = 2/n * X^T X accumulated in fp64 (tiles of syrk / gemm over the
// OpenMP threads), plus the column sums of squares for Wanda. fp32 batches of any size are cut
// into chunks converted to fp64 (at least 512 rows, about 32 MB), so memory stays bounded
// whatever the batch; with fp32_batches each batch's product is formed in fp32 instead.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "common/blas_threads.h"
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
void throw_first_non_finite(const std::string& layer, const T* X, int64_t rows, int64_t K, int64_t n_before) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < K; ++j)
      if (!std::isfinite(X[i * K + j]))
        throw Error(tag(layer) + ": calibration activation row " + std::to_string(n_before + i) +
                    ", column " + std::to_string(j) + " is NaN or Inf");
}

// sq[j] = sum_i X[i, j]^2 in fp64 (Wanda's column norms), columns split over the threads. A
// non-finite sum means a NaN or Inf in X (the square of a finite float cannot overflow fp64),
// so this pass is also the finiteness check.
template <class T>
std::vector<double> column_squares(const T* X, int64_t rows, int64_t K) {
  std::vector<double> sq(size_t(K), 0.0);
  constexpr int64_t kCols = 256;
  const int64_t parts = (K + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (double(rows) * double(K) >= 1e6)
  for (int64_t p = 0; p < parts; ++p) {
    const int64_t j0 = p * kCols, j1 = std::min(K, j0 + kCols);
    double* out = sq.data() + j0;
    for (int64_t i = 0; i < rows; ++i) {
      const T* x = X + i * K;
      for (int64_t j = j0; j < j1; ++j) out[j - j0] += double(x[j]) * double(x[j]);
    }
  }
  return sq;
}

// Square tiles of the upper triangle of a K x K product, largest work first. Tiles of 256
// (512 above K = 2048) give 2x2 tiles or more per thread on the projections of real models,
// each product large enough for BLAS to run near its peak.
struct Tile {
  int64_t i0, ni, j0, nj;
};
std::vector<Tile> upper_tiles(int64_t K) {
  const int64_t tb = K > 2048 ? 512 : 256;
  std::vector<Tile> t;
  for (int64_t i0 = 0; i0 < K; i0 += tb)
    for (int64_t j0 = i0; j0 < K; j0 += tb) t.push_back({i0, std::min(tb, K - i0), j0, std::min(tb, K - j0)});
  std::stable_sort(t.begin(), t.end(), [](const Tile& a, const Tile& b) { return a.ni * a.nj > b.ni * b.nj; });
  return t;
}

// S (upper triangle, row-major, fp64) += X^T X for X rows x K. The tiles are spread over the
// OpenMP threads, each running single-threaded BLAS (OpenBLAS's own thread pool, woken for a
// multi-threaded syrk, spins in sched_yield afterwards and takes the cores from the forward
// pass's OpenMP threads: 10% of calibration time on 2 cores, docs/perf.md). T = float: each
// tile's product in fp32 (ssyrk on the diagonal, sgemm off it), then added into S; T = double:
// dsyrk / dgemm straight into S.
template <class T>
void add_gram(const T* X, int64_t rows, int64_t K, std::vector<double>& S) {
  const std::vector<Tile> tiles = upper_tiles(K);
  BlasThreads one(1);
#pragma omp parallel for schedule(dynamic, 1) if (double(rows) * double(K) * double(K) >= 2e7)
  for (size_t t = 0; t < tiles.size(); ++t) {
    const Tile& tl = tiles[t];
    const bool diag = tl.i0 == tl.j0;
    const int r = int(rows), ni = int(tl.ni), nj = int(tl.nj), ld = int(K);
    if constexpr (std::is_same_v<T, double>) {
      double* C = S.data() + tl.i0 * K + tl.j0;
      if (diag) cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, ni, r, 1.0, X + tl.i0, ld, 1.0, C, ld);
      else cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ni, nj, r, 1.0, X + tl.i0, ld, X + tl.j0, ld, 1.0, C, ld);
    } else {
      thread_local std::vector<float> c;
      if (c.size() < size_t(ni) * size_t(nj)) c.resize(size_t(ni) * size_t(nj));
      if (diag) cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, ni, r, 1.0f, X + tl.i0, ld, 0.0f, c.data(), nj);
      else cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ni, nj, r, 1.0f, X + tl.i0, ld, X + tl.j0, ld, 0.0f, c.data(), nj);
      for (int64_t a = 0; a < tl.ni; ++a) {
        double* dst = S.data() + (tl.i0 + a) * K + tl.j0;
        const float* src = c.data() + a * tl.nj;
        for (int64_t b = diag ? a : 0; b < tl.nj; ++b) dst[b] += double(src[b]);
      }
    }
  }
}

// Checks the batch and returns its column squares; throws (naming the first bad element)
// before anything is accumulated.
template <class T>
std::vector<double> checked_column_squares(const std::string& layer, const T* X, int64_t rows, int64_t K,
                                           int64_t n_before) {
  std::vector<double> sq = column_squares(X, rows, K);
  for (double v : sq)
    if (!std::isfinite(v)) throw_first_non_finite(layer, X, rows, K, n_before);
  return sq;
}
}  // namespace

void HessianAccumulator::add(const float* X, int64_t rows) {
  if (rows <= 0) return;
  const std::vector<double> sq = checked_column_squares(layer_, X, rows, K_, n_);
  if (fp32_batches_) {
    add_gram(X, rows, K_, S_);  // the batch's products in fp32, summed into S in fp64
  } else {
    // fp64 products: rows converted in chunks, so memory stays bounded whatever the batch.
    for (int64_t r0 = 0; r0 < rows; r0 += chunk_) {
      const int64_t m = std::min(chunk_, rows - r0);
      buf_.resize(size_t(m * K_));
      const float* src = X + r0 * K_;
#pragma omp parallel for schedule(static) if (m * K_ >= (int64_t(1) << 20))
      for (int64_t i = 0; i < m * K_; ++i) buf_[size_t(i)] = double(src[i]);
      add_gram(buf_.data(), m, K_, S_);
    }
  }
  for (int64_t j = 0; j < K_; ++j) col_sq_[size_t(j)] += sq[size_t(j)];
  n_ += rows;
}

void HessianAccumulator::add(const double* X, int64_t rows) {
  if (rows <= 0) return;
  const std::vector<double> sq = checked_column_squares(layer_, X, rows, K_, n_);
  add_gram(X, rows, K_, S_);
  for (int64_t j = 0; j < K_; ++j) col_sq_[size_t(j)] += sq[size_t(j)];
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
