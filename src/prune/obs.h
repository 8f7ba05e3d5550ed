// Internals of the SparseGPT / SpenseGPT OBS pass, shared by prune.cpp, the tests and the
// benchmark. Not a public API.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "prune/keep24.h"
#include "spense/prune.h"

namespace spense::detail {

using InverseFactor = spense::InverseFactor;

// The CPU (OpenBLAS / LAPACKE) implementations behind cpu_prune_compute(); the contracts are
// PruneCompute's (spense/prune.h).
// H: K x K row-major symmetric (undamped). lambda = percdamp * mean(diag H_fix). If the
// Cholesky factorisation fails, lambda is raised tenfold (from at least 1e-8 * mean diag)
// up to 4 times, then spense::Error is thrown.
// Route: J (H_fix + lambda I) J = R R^T (dpotrf on the reversed matrix, J reverses indices),
// so H_fix + lambda I = V V^T with V = J R J upper; then U = V^-1 (dtrtri) is upper and
// U^T U = (V V^T)^-1. One factorisation and one triangular inverse, 2/3 K^3 flops, instead of
// the 4/3 K^3 of Cholesky + inverse + Cholesky; the same U (the Cholesky factor is unique).
InverseFactor inverse_factor(const std::string& layer, const double* H, int64_t K, double percdamp);

// What every inverse_factor implementation shares. _start: resets f to K, the dead inputs of H
// and the first damping (f.lambda); returns mean diag H_fix. _raise_damping: after the failed
// Cholesky number `attempt` (from 0), raises f.lambda tenfold or throws after the fourth retry.
double inverse_factor_start(InverseFactor& f, const double* H, int64_t K, double percdamp);
void inverse_factor_raise_damping(const std::string& layer, InverseFactor& f, int attempt, double percdamp,
                                  double mean_diag);

// diag of (H_fix + lambda I)^-1: squared column norms of U.
std::vector<double> inverse_diagonal(const InverseFactor& f);

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
