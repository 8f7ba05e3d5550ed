// Internals of the SparseGPT / SpenseGPT OBS pass, shared by prune.cpp, the tests and the
// benchmark. Not a public API.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace spense::detail {

// The damped inverse Hessian as SparseGPT uses it.
struct InverseFactor {
  int64_t K = 0;
  std::vector<double> U;       // K x K row-major, upper triangular, U^T U = (H_fix + lambda I)^-1
  std::vector<uint8_t> dead;   // diag H == 0 (H_fix has 1 there)
  int64_t n_dead = 0;
  double lambda = 0;           // damping actually used
  int retries = 0;             // tenfold increases of lambda after a failed Cholesky
};

// H: K x K row-major symmetric (undamped). lambda = percdamp * mean(diag H_fix). If the
// Cholesky factorisation fails, lambda is raised tenfold (from at least 1e-8 * mean diag)
// up to 4 times, then spense::Error is thrown.
// Route: J (H_fix + lambda I) J = R R^T (dpotrf on the reversed matrix, J reverses indices),
// so H_fix + lambda I = V V^T with V = J R J upper; then U = V^-1 (dtrtri) is upper and
// U^T U = (V V^T)^-1. One factorisation and one triangular inverse, 2/3 K^3 flops, instead of
// the 4/3 K^3 of Cholesky + inverse + Cholesky; the same U (the Cholesky factor is unique).
InverseFactor inverse_factor(const std::string& layer, const double* H, int64_t K, double percdamp);

// diag of (H_fix + lambda I)^-1: squared column norms of U.
std::vector<double> inverse_diagonal(const InverseFactor& f);

// Keep the 2 largest of 4 saliencies (ties: the lower position is kept). Returns a 4-bit keep mask.
template <class T>
inline unsigned keep2of4(const T s[4]) {
  unsigned keep = 0;
  for (int k = 0; k < 4; ++k) {
    int rank = 0;  // how many positions beat k
    for (int m = 0; m < 4; ++m) rank += (s[m] > s[k]) || (s[m] == s[k] && m < k);
    if (rank < 2) keep |= 1u << k;
  }
  return keep;
}

// The SparseGPT pass on N rows of W (row-major, leading dimension K), in place. U: the
// inverse factor in the same precision. prunable[j]: column j may be pruned (groups of 4 are
// uniformly prunable or not); a non-prunable column keeps its (updated) value and passes no
// error on. Column blocks of B (multiple of 4): inside a block every row runs column by
// column (the 2:4 mask of a group is chosen when the row reaches it, by w^2 / U_jj^2, from
// the updated weights), then one GEMM applies the block's errors to all later columns.
// Rows are independent (OpenMP over rows; BLAS only outside parallel regions).
// err_row[r] += sum_j err_rj^2 and err_col[j] += sum_r err_rj^2 if non-null, where
// err_rj = (w_rj - q_rj) / U_jj; sum_j err_rj^2 = e_r^T (H_fix + lambda I) e_r exactly.
// Returns the floating-point operations done.
template <class T>
double obs_prune(T* W, int64_t N, int64_t K, const T* U, const uint8_t* prunable, int64_t B,
                 double* err_row, double* err_col);

}  // namespace spense::detail
