// One-shot pruning of one linear layer (W: N x K, out x in, row-major) from calibration
// statistics: SpenseGPT (2:4 sparse + dense tiles, docs/format.md and design.md section 3)
// and the baselines it is compared with (dense, magnitude 2:4, Wanda 2:4, SparseGPT 2:4),
// all through prune_layer().
//
// Precision: calibration statistics, damping and the inverse Hessian are always fp64; the
// OBS pass runs in fp64 (default, matches the PyTorch reference to ~1e-12) or fp32
// (PruneOptions::precision, twice the GEMM speed). Weights enter and leave as fp64 values.
//
// The O(K^3) and O(N K^2) arithmetic (inverse-Hessian factor, OBS passes, reconstruction
// errors) goes through a PruneCompute: the CPU one by default, the GPU one from
// spense/cuda/prune_gpu.h. Every decision (masks, tiles, permutations, damping retries) is
// taken here on the host from its results, so both make the same choices up to rounding.
//
// Not here: running the model to collect activations (the caller feeds
// HessianAccumulator), writing checkpoints, the packed format itself (spense/format.h).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "spense/format.h"

namespace spense {

// Row-major fp64 matrix.
struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<double> data;

  Matrix() = default;
  Matrix(int64_t r, int64_t c) : rows(r), cols(c), data(size_t(r) * size_t(c), 0.0) {}
  double& operator()(int64_t r, int64_t c) { return data[size_t(r * cols + c)]; }
  double operator()(int64_t r, int64_t c) const { return data[size_t(r * cols + c)]; }
  double* row(int64_t r) { return data.data() + r * cols; }
  const double* row(int64_t r) const { return data.data() + r * cols; }
};

// Calibration statistics of one layer's inputs X (n x K): H = 2/n * X^T X (full symmetric
// K x K, fp64) and the per-column sums of squares sum_i x_ij^2 (Wanda's ||X_j||^2).
// The scale 2/n does not change any pruning decision (SparseGPT is invariant to scaling H);
// it only sets the units of the reported reconstruction errors: with it, the error of W_hat is
// 2 * mean over the n calibration rows of ||x (W - W_hat)^T||^2.
struct Hessian {
  int64_t K = 0;
  int64_t n_rows = 0;           // calibration rows (tokens) that went in
  std::vector<double> H;        // K x K
  std::vector<double> col_sq;   // K

  // From an explicit H (e.g. a reference fixture); col_sq is taken as diag(H) (the Wanda
  // score only compares columns within a row, so the common factor n/2 does not matter).
  // Throws if H is not K x K, not finite or not symmetric (relative 1e-12).
  static Hessian from_matrix(int64_t K, std::vector<double> H, const std::string& layer = "");
};

// Accumulates X^T X in fp64 from batches of any number of rows (dsyrk / dgemm on fp64 copies
// of each chunk of rows), plus the column sums of squares. With fp32_batches, each fp32 batch's
// X^T X is formed in fp32 (ssyrk / sgemm, about twice as fast on the CPU; the precision of the
// SparseGPT reference) and added to the fp64 sum, so rounding does not build up across batches.
// The products run in square tiles of the upper triangle spread over the OpenMP threads, each
// with single-threaded BLAS; call add() outside OpenMP regions.
class HessianAccumulator {
 public:
  // chunk_rows: rows of an fp32 batch converted to fp64 per dsyrk call; 0 = automatic
  // (at least 512, about 32 MB of fp64).
  HessianAccumulator(std::string layer, int64_t K, int64_t chunk_rows = 0, bool fp32_batches = false);
  // X: rows x K row-major (leading dimension K). Throws spense::Error naming the layer, the
  // row and the column if a value is NaN/Inf (nothing of that batch is accumulated).
  void add(const float* X, int64_t rows);
  void add(const double* X, int64_t rows);
  int64_t rows() const { return n_; }
  int64_t K() const { return K_; }
  // H = 2/n * sum x x^T. Throws if no rows were added.
  Hessian finalize() const;

 private:
  std::string layer_;
  int64_t K_ = 0, n_ = 0, chunk_ = 0;
  std::vector<double> S_;       // upper triangle (row-major) of sum x x^T
  std::vector<double> col_sq_;
  std::vector<double> buf_;     // fp64 copy of a chunk of rows
  bool fp32_batches_ = false;
};

// The damped inverse Hessian as SparseGPT uses it (see PruneCompute::inverse_factor).
struct InverseFactor {
  int64_t K = 0;
  std::vector<double> U;       // K x K row-major, upper triangular, U^T U = (H_fix + lambda I)^-1
  std::vector<uint8_t> dead;   // diag H == 0 (H_fix has 1 there)
  int64_t n_dead = 0;
  double lambda = 0;           // damping actually used
  int retries = 0;             // tenfold increases of lambda after a failed Cholesky
};

// The inverse factor of one Hessian, kept for the next projection that reads the same input
// (q/k/v share one Hessian, gate/up another): the factor depends only on H and percdamp, so
// prune_layer computes it once per Hessian instead of once per projection (PruneOptions::
// factor_cache). Holds one factor; a different Hessian replaces it.
struct InverseFactorCache {
  const Hessian* H = nullptr;  // the Hessian object the factor was computed from
  double percdamp = 0;
  std::shared_ptr<const InverseFactor> factor;
};

// Where prune_layer's heavy arithmetic runs. Implementations: cpu_prune_compute() (OpenBLAS
// and LAPACKE, fp64) and make_gpu_prune_compute() (spense/cuda/prune_gpu.h: cuSOLVER and
// cuBLAS). All pointers are host memory; an implementation may move data to a device. The CPU
// one is thread-safe; the GPU one is not (one per thread).
class PruneCompute {
 public:
  virtual ~PruneCompute() = default;
  virtual const char* name() const = 0;
  // H: K x K row-major symmetric (undamped). lambda = percdamp * mean(diag H_fix). If the
  // Cholesky factorisation fails, lambda is raised tenfold (from at least 1e-8 * mean diag)
  // up to 4 times, then spense::Error naming the layer is thrown.
  // Route: J (H_fix + lambda I) J = R R^T (Cholesky of the reversed matrix, J reverses
  // indices), so H_fix + lambda I = V V^T with V = J R J upper; then U = V^-1 (triangular
  // inverse) is upper and U^T U = (V V^T)^-1: 2/3 K^3 flops.
  virtual InverseFactor inverse_factor(const std::string& layer, const double* H, int64_t K,
                                       double percdamp) const = 0;
  // The SparseGPT pass on N rows of W (row-major, leading dimension K), in place, with U the
  // inverse factor in the same precision. prunable[j]: column j may be pruned (groups of 4
  // are uniformly prunable or not); a non-prunable column keeps its (updated) value and
  // passes no error on. Inside each column block of B (a multiple of 4) every row runs
  // column by column (the 2:4 mask of a group is chosen when the row reaches it, by
  // w^2 / U_jj^2, from the updated weights), then one GEMM applies the block's errors to all
  // later columns. err_row[r] += sum_j err_rj^2 and err_col[j] += sum_r err_rj^2 (both
  // required), err_rj = (w_rj - q_rj) / U_jj. Returns the floating-point operations done.
  virtual double obs_prune(double* W, int64_t N, int64_t K, const double* U, const uint8_t* prunable,
                           int64_t B, double* err_row, double* err_col) const = 0;
  virtual double obs_prune(float* W, int64_t N, int64_t K, const float* U, const uint8_t* prunable,
                           int64_t B, double* err_row, double* err_col) const = 0;
  // sum_r v_r^T H v_r over the N rows of V (N x K row-major), H K x K symmetric.
  virtual double quad_form_rows(const double* V, int64_t N, int64_t K, const double* H) const = 0;
};
// The CPU implementation (a process-wide instance; thread-safe).
const PruneCompute& cpu_prune_compute();

enum class PruneMethod : uint8_t {
  DENSE,      // no-op: W_hat = W
  MAGNITUDE,  // 2:4, keep the 2 largest |w| of each group of 4 along K
  WANDA,      // 2:4, keep the 2 largest |w_ij| * ||X_j|| of each group
  SPARSEGPT,  // 2:4 with OBS updates (SpenseGPT with dense_ratio forced to 0)
  SPENSEGPT,  // dense tiles + 2:4 SparseGPT on the rest
};
const char* prune_method_name(PruneMethod m);  // "dense", "magnitude", "wanda", "sparsegpt", "spensegpt"
bool prune_method_parse(const std::string& s, PruneMethod* out);

// How SpenseGPT chooses its dense tiles (docs/format.md, "Choosing dense tiles").
enum class DenseStrategy : uint8_t {
  SALIENCY,  // A, one pass: score tiles before pruning, keep the top-scoring ones dense
  ERROR,     // B, two passes: SparseGPT everything, keep the tiles with the largest error dense, redo
};
const char* dense_strategy_name(DenseStrategy s);  // "saliency" / "error"
bool dense_strategy_parse(const std::string& s, DenseStrategy* out);

enum class ObsPrecision : uint8_t { F64, F32 };

struct PruneOptions {
  std::string layer;                           // layer name for messages and the report
  PruneMethod method = PruneMethod::SPENSEGPT;
  SpenseAxis axis = SpenseAxis::OUT;           // SpenseGPT: dense rows (OUT) or columns (IN)
  DenseStrategy strategy = DenseStrategy::SALIENCY;
  double dense_ratio = 0.25;                   // d; dense tiles = round(d * tiles), ties away from 0
  int64_t tile = 64;                           // g: positive multiple of 4 (16 for GPU kernels)
  // If set, these tiles (any order) are dense and the strategy is not used.
  std::optional<std::vector<int64_t>> dense_tiles;
  int64_t blocksize = 128;                     // B: OBS column block, positive multiple of 4
  double percdamp = 0.01;                      // lambda = percdamp * mean(diag H)
  ObsPrecision precision = ObsPrecision::F64;  // arithmetic of the OBS pass
  // axis IN: run the OBS pass over the sparse columns first and the dense columns last, so the
  // dense columns absorb the error of every pruned column, not only of those before them.
  bool dense_last = true;
  // Compute the reconstruction error tr((W - W_hat) H (W - W_hat)^T) directly (2 N K^2 flops).
  // Off: the report uses the exact OBS identity instead (free; SparseGPT-family methods only).
  bool compute_error = true;
  // Also run plain SparseGPT 2:4 (if the method did not already) to report its error.
  bool compare_sparsegpt = false;
  // Where the arithmetic runs; nullptr = cpu_prune_compute(). Not owned.
  const PruneCompute* compute = nullptr;
  // Reuse of the (unpermuted) inverse factor across projections with the same Hessian object;
  // nullptr = computed for every call. Not owned. The Hessian must not change while cached.
  InverseFactorCache* factor_cache = nullptr;
};

struct PruneTimings {
  double inverse_s = 0;  // damping, Cholesky factorisations and inverse (fp64 LAPACK)
  double select_s = 0;   // tile scoring and selection (and the masks of magnitude/Wanda)
  double obs_s = 0;      // OBS passes (both passes for strategy ERROR)
  double error_s = 0;    // reconstruction error(s) for the report
  double total_s = 0;
};

struct PruneReport {
  std::string layer;
  PruneMethod method = PruneMethod::SPENSEGPT;
  SpenseAxis axis = SpenseAxis::OUT;
  DenseStrategy strategy = DenseStrategy::SALIENCY;
  int64_t N = 0, K = 0, g = 0, num_tiles = 0;
  std::vector<int64_t> dense_tiles;   // sorted
  std::vector<double> tile_scores;    // per tile (SpenseGPT with a strategy); empty otherwise
  double dense_ratio = 0;             // achieved: dense tiles / tiles
  double density = 0;                 // stored values / (N*K): (1-d)*0.5 + d
  double nonzero_fraction = 0;        // non-zero entries of W_hat / (N*K)
  double damping = 0;                 // lambda actually added to diag H
  int damping_retries = 0;            // times lambda was raised x10 after a failed Cholesky
  int64_t dead_inputs = 0;            // columns with diag H == 0
  double error = 0;                   // tr((W - W_hat) H (W - W_hat)^T), H undamped
  double error_rel = 0;               // error / tr(W H W^T)
  double sparsegpt_error = -1;        // plain SparseGPT 2:4's error if computed, else -1
  bool error_exact = true;            // false: from the OBS identity, not computed directly
  double obs_flops = 0;               // floating-point operations of the OBS passes
  PruneTimings time;
};
std::string prune_report_json(const PruneReport& r);  // one line of JSON

struct PruneResult {
  Matrix W;                 // W_hat, N x K: every sparse group has <= 2 non-zeros (+0.0 elsewhere)
  SpenseLayout layout;      // axis, g, dense tiles (for spense_pack_f64)
  PruneReport report;
};

// Prune one layer. Throws spense::Error naming the layer if: W or H is not finite, H is not
// K x K, K % 4 != 0, blocksize or g is not a positive multiple of 4, (SpenseGPT) the tiled
// dimension is not a multiple of g, d is outside [0,1], explicit dense tiles are out of range
// or repeated, or the damped Hessian stays indefinite after 4 tenfold increases of lambda.
PruneResult prune_layer(const PruneOptions& opt, const Matrix& W, const Hessian& H);

// tr((W - W_hat) H (W - W_hat)^T) with the undamped H (on compute; nullptr = the CPU).
double reconstruction_error(const Matrix& W, const Matrix& W_hat, const Hessian& H,
                            const PruneCompute* compute = nullptr);

}  // namespace spense
