// prune_layer(): the baselines (dense, magnitude, Wanda, SparseGPT) and SpenseGPT's dense
// tile selection (strategy A saliency, strategy B error-driven) around the OBS pass in
// obs.cpp. The choices made here are documented in docs/format.md ("Pruning") and are:
//  - dead inputs (diag H == 0): H_jj = 1 and W[:,j] = 0 in the rows/columns that get pruned;
//    dense rows (axis OUT) and dense columns (axis IN) keep their values;
//  - dense tile count = llround(d * tiles) (half away from zero); ties in tile scores go to
//    the lower tile index;
//  - strategy A, axis OUT: row score = sum over the 2 entries per group with the smallest
//    w^2/[H^-1]_jj of w^2/[H^-1]_jj, [H^-1] the full damped inverse; axis IN: column score
//    H_jj * ||W[:,j]||^2 (undamped H);
//  - strategy B, axis OUT: row score e^T H e of the plain SparseGPT result (undamped H);
//    SparseGPT treats rows independently, so pass 2 equals pass 1 on the sparse rows and is
//    not rerun; axis IN: column score sum_r err_rj^2, the exact share of column j in the
//    (damped) OBS loss of pass 1, then pass 2 with those columns kept.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>

#include "prune/obs.h"
#include "spense/error.h"
#include "spense/prune.h"

namespace spense {

namespace {

using Clock = std::chrono::steady_clock;
// Elementwise loops use threads only from this many elements (a parallel region is not free,
// least of all on a loaded 2-core machine).
constexpr int64_t kParallelElems = int64_t(1) << 20;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string tag(const std::string& layer) {
  return "layer '" + (layer.empty() ? std::string("?") : layer) + "'";
}

// Keep the 2 entries of each group of 4 with the largest score; +0.0 elsewhere.
template <class ScoreFn>
void mask24(Matrix& W, ScoreFn score) {
  const int64_t N = W.rows, K = W.cols;
  for (int64_t r = 0; r < N; ++r) {
    double* w = W.row(r);
    for (int64_t c = 0; c < K; c += 4) {
      double s[4];
      for (int k = 0; k < 4; ++k) s[k] = score(w[c + k], c + k);
      const unsigned keep = detail::keep2of4(s);
      for (int k = 0; k < 4; ++k)
        if (!((keep >> k) & 1)) w[c + k] = 0.0;
    }
  }
}

// Indices of the n largest scores (ties: lower index first), returned sorted ascending.
std::vector<int64_t> top_tiles(const std::vector<double>& score, int64_t n) {
  std::vector<int64_t> idx(score.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t a, int64_t b) { return score[size_t(a)] > score[size_t(b)]; });
  idx.resize(size_t(n));
  std::sort(idx.begin(), idx.end());
  return idx;
}

// The OBS pass on the listed rows of Wp (a K-column matrix), writing them into out.
struct ObsRun {
  double flops = 0;
  std::vector<double> err_row;  // per listed row
  std::vector<double> err_col;  // per column
};

ObsRun run_obs(const PruneCompute& compute, const Matrix& Wp, const std::vector<int64_t>& rows,
               const detail::InverseFactor& f, const std::vector<uint8_t>& prunable, int64_t B,
               ObsPrecision p, Matrix& out) {
  const int64_t K = Wp.cols, n = int64_t(rows.size());
  ObsRun run;
  run.err_row.assign(size_t(n), 0.0);
  run.err_col.assign(size_t(K), 0.0);
  auto go = [&](auto tag_value) {
    using T = decltype(tag_value);
    std::vector<T> W(size_t(n) * size_t(K));
#pragma omp parallel for schedule(static) if (n * K >= kParallelElems)
    for (int64_t i = 0; i < n; ++i) {
      const double* src = Wp.row(rows[size_t(i)]);
      T* dst = W.data() + i * K;
      for (int64_t j = 0; j < K; ++j) dst[j] = T(src[j]);
    }
    const T* U;
    std::vector<T> Uc;
    if constexpr (std::is_same_v<T, double>) {
      U = f.U.data();
    } else {
      Uc.assign(f.U.begin(), f.U.end());
      U = Uc.data();
    }
    run.flops = compute.obs_prune(W.data(), n, K, U, prunable.data(), B, run.err_row.data(),
                                  run.err_col.data());
#pragma omp parallel for schedule(static) if (n * K >= kParallelElems)
    for (int64_t i = 0; i < n; ++i) {
      const T* src = W.data() + i * K;
      double* dst = out.row(rows[size_t(i)]);
      for (int64_t j = 0; j < K; ++j) dst[j] = double(src[j]);
    }
  };
  if (p == ObsPrecision::F64)
    go(double(0));
  else
    go(float(0));
  return run;
}

const PruneCompute& compute_of(const PruneOptions& o) {
  return o.compute ? *o.compute : cpu_prune_compute();
}

void check_inputs(const PruneOptions& o, const Matrix& W, const Hessian& hs) {
  const std::string t = tag(o.layer);
  if (W.rows <= 0 || W.cols <= 0 || W.data.size() != size_t(W.rows) * size_t(W.cols))
    throw Error(t + ": weight is " + std::to_string(W.rows) + " x " + std::to_string(W.cols) +
                " with " + std::to_string(W.data.size()) + " elements");
  const int64_t K = W.cols;
  if (hs.K != K || hs.H.size() != size_t(K) * size_t(K))
    throw Error(t + ": Hessian is " + std::to_string(hs.K) + " x " + std::to_string(hs.K) +
                ", expected " + std::to_string(K) + " x " + std::to_string(K) + " (weight [" +
                std::to_string(W.rows) + "," + std::to_string(K) + "])");
  if (o.method != PruneMethod::DENSE && K % 4 != 0)
    throw Error(t + ": K = " + std::to_string(K) + " is not a multiple of 4; 2:4 groups run along K");
  if (o.blocksize <= 0 || o.blocksize % 4 != 0)
    throw Error(t + ": blocksize " + std::to_string(o.blocksize) + " must be a positive multiple of 4");
  if (!(o.percdamp >= 0) || !std::isfinite(o.percdamp))
    throw Error(t + ": percdamp " + std::to_string(o.percdamp) + " must be finite and >= 0");
  if (!(o.dense_ratio >= 0 && o.dense_ratio <= 1))
    throw Error(t + ": dense ratio " + std::to_string(o.dense_ratio) + " must be in [0,1]");
  // A cheap vectorised scan first; the slow search for the position only on failure.
  auto all_finite = [](const std::vector<double>& v) {
    double acc = 0;
    for (double x : v) acc += x * 0.0;  // NaN if any x is NaN or Inf
    return acc == 0.0;
  };
  if (!all_finite(W.data))
    for (size_t i = 0; i < W.data.size(); ++i)
      if (!std::isfinite(W.data[i]))
        throw Error(t + ": weight [" + std::to_string(int64_t(i) / K) + "," +
                    std::to_string(int64_t(i) % K) + "] is NaN or Inf");
  if (!all_finite(hs.H))
    for (size_t i = 0; i < hs.H.size(); ++i)
      if (!std::isfinite(hs.H[i]))
        throw Error(t + ": Hessian [" + std::to_string(int64_t(i) / K) + "," +
                    std::to_string(int64_t(i) % K) + "] is NaN or Inf");
  if (hs.col_sq.size() != size_t(K))
    throw Error(t + ": Hessian column norms have " + std::to_string(hs.col_sq.size()) +
                " entries, expected " + std::to_string(K));
  for (int64_t j = 0; j < K; ++j)
    if (hs.H[size_t(j * K + j)] < 0)
      throw Error(t + ": Hessian diagonal [" + std::to_string(j) + "] is negative");
}

// Everything SparseGPT-shaped: d = 0 (plain SparseGPT) and SpenseGPT.
struct SpenseRun {
  const PruneOptions& o;
  const Matrix& W;
  const Hessian& hs;
  PruneReport& rep;
  int64_t N, K;

  Matrix wp_store;
  bool wp_ready = false;
  // W with dead input columns zeroed (what the pruned part starts from); W itself if none.
  // The dead set depends on H only, so one copy serves every unpermuted factor.
  const Matrix& dead_zeroed(const detail::InverseFactor& f) {
    if (!f.n_dead) return W;
    if (!wp_ready) {
      wp_store = W;
      for (int64_t r = 0; r < N; ++r)
        for (int64_t j = 0; j < K; ++j)
          if (f.dead[size_t(j)]) wp_store(r, j) = 0.0;
      wp_ready = true;
    }
    return wp_store;
  }

  detail::InverseFactor factor(const double* H) {
    const auto t0 = Clock::now();
    auto f = compute_of(o).inverse_factor(o.layer, H, K, o.percdamp);
    rep.time.inverse_s += seconds_since(t0);
    note_factor(f);
    return f;
  }
  void note_factor(const detail::InverseFactor& f) {
    rep.damping = f.lambda;
    rep.damping_retries = std::max(rep.damping_retries, f.retries);
    rep.dead_inputs = f.n_dead;
  }
  // The factor of hs itself: from o.factor_cache when it holds this Hessian's, else computed
  // (and left in the cache for the next projection that reads the same input).
  std::shared_ptr<const detail::InverseFactor> unpermuted_factor() {
    InverseFactorCache* c = o.factor_cache;
    if (c && c->factor && c->H == &hs && c->percdamp == o.percdamp) {
      note_factor(*c->factor);
      return c->factor;
    }
    auto f = std::make_shared<const detail::InverseFactor>(factor(hs.H.data()));
    if (c) *c = InverseFactorCache{&hs, o.percdamp, f};
    return f;
  }

  // Plain SparseGPT on all of W. err_row / err_col from the pass.
  ObsRun sparsegpt_all(const detail::InverseFactor& f, Matrix& out) {
    const Matrix& Wp = dead_zeroed(f);
    std::vector<int64_t> rows(static_cast<size_t>(N));
    std::iota(rows.begin(), rows.end(), 0);
    std::vector<uint8_t> prunable(size_t(K), 1);
    const auto t0 = Clock::now();
    auto run = run_obs(compute_of(o), Wp, rows, f, prunable, o.blocksize, o.precision, out);
    rep.time.obs_s += seconds_since(t0);
    rep.obs_flops += run.flops;
    return run;
  }

  // Undamped error from the OBS identity: sum_r (err_row[r] - lambda ||W'_r - W_hat_r||^2).
  double identity_error(const ObsRun& run, const std::vector<int64_t>& rows, const Matrix& Wp,
                        const Matrix& out, double lambda, std::vector<double>* per_row) const {
    double total = 0;
    const int64_t n = int64_t(rows.size());
#pragma omp parallel for schedule(static) reduction(+ : total) if (n * K >= kParallelElems)
    for (int64_t i = 0; i < n; ++i) {
      const double* a = Wp.row(rows[size_t(i)]);
      const double* b = out.row(rows[size_t(i)]);
      double e2 = 0;
      for (int64_t j = 0; j < K; ++j) e2 += (a[j] - b[j]) * (a[j] - b[j]);
      const double v = run.err_row[size_t(i)] - lambda * e2;
      if (per_row) (*per_row)[size_t(i)] = v;
      total += v;
    }
    return total;
  }

  // axis IN: the OBS pass with the dense columns kept (and, with dense_last, processed last).
  ObsRun prune_in(const std::vector<uint8_t>& dense_col, const detail::InverseFactor* f_plain,
                  Matrix& out) {
    const bool any_dense = std::find(dense_col.begin(), dense_col.end(), 1) != dense_col.end();
    std::vector<int64_t> perm(static_cast<size_t>(K));  // new position -> original column
    std::iota(perm.begin(), perm.end(), 0);
    const bool permute = o.dense_last && any_dense;
    if (permute)
      std::stable_partition(perm.begin(), perm.end(), [&](int64_t j) { return !dense_col[size_t(j)]; });
    detail::InverseFactor f_local;
    const detail::InverseFactor* f = f_plain;
    if (permute || !f) {
      std::vector<double> Hp(size_t(K) * size_t(K));
#pragma omp parallel for schedule(static) if (K * K >= kParallelElems)
      for (int64_t a = 0; a < K; ++a) {
        const double* h = hs.H.data() + perm[size_t(a)] * K;
        double* hp = Hp.data() + a * K;
        for (int64_t b = 0; b < K; ++b) hp[b] = h[perm[size_t(b)]];
      }
      f_local = factor(Hp.data());
      f = &f_local;
    }
    // Wp in the processing order; dead columns zeroed only where they get pruned.
    Matrix Wp(N, K);
    std::vector<uint8_t> prunable(static_cast<size_t>(K)), zero(static_cast<size_t>(K));
    for (int64_t a = 0; a < K; ++a) {
      prunable[size_t(a)] = !dense_col[size_t(perm[size_t(a)])];
      zero[size_t(a)] = prunable[size_t(a)] && f->dead[size_t(a)];
    }
#pragma omp parallel for schedule(static) if (N * K >= kParallelElems)
    for (int64_t r = 0; r < N; ++r) {
      const double* w = W.row(r);
      double* wp = Wp.row(r);
      for (int64_t a = 0; a < K; ++a) wp[a] = zero[size_t(a)] ? 0.0 : w[perm[size_t(a)]];
    }
    std::vector<int64_t> rows(static_cast<size_t>(N));
    std::iota(rows.begin(), rows.end(), 0);
    Matrix res(N, K);
    const auto t0 = Clock::now();
    auto run = run_obs(compute_of(o), Wp, rows, *f, prunable, o.blocksize, o.precision, res);
    rep.time.obs_s += seconds_since(t0);
    rep.obs_flops += run.flops;
    std::vector<double> err_col(static_cast<size_t>(K));
    for (int64_t a = 0; a < K; ++a) err_col[size_t(perm[size_t(a)])] = run.err_col[size_t(a)];
#pragma omp parallel for schedule(static) if (N * K >= kParallelElems)
    for (int64_t r = 0; r < N; ++r) {
      const double* src = res.row(r);
      double* dst = out.row(r);
      for (int64_t a = 0; a < K; ++a) dst[perm[size_t(a)]] = src[a];
    }
    run.err_col = std::move(err_col);
    // Identity-based error (used if compute_error is off): in processing order.
    if (!o.compute_error) rep.error = identity_error(run, rows, Wp, res, f->lambda, nullptr);
    return run;
  }

  PruneResult go() {
    PruneResult res;
    res.W = Matrix(N, K);
    res.layout.axis = o.axis;
    res.layout.g = o.tile;
    const bool spense = o.method == PruneMethod::SPENSEGPT;
    int64_t T = 0, nd = 0;
    std::vector<int64_t> chosen;
    bool explicit_tiles = false;
    if (spense) {
      SpenseLayout probe{o.axis, o.tile, {}};
      T = spense_num_tiles(o.layer, N, K, probe);
      if (o.dense_tiles) {
        explicit_tiles = true;
        chosen = *o.dense_tiles;
        std::sort(chosen.begin(), chosen.end());
        SpenseLayout l{o.axis, o.tile, chosen};
        spense_layout_check(o.layer, N, K, l);
        nd = int64_t(chosen.size());
      } else {
        nd = std::llround(o.dense_ratio * double(T));
      }
    }
    rep.num_tiles = T;
    rep.g = spense ? o.tile : 0;

    // All dense: nothing to prune.
    if (spense && nd == T) {
      res.W = W;
      chosen.resize(size_t(T));
      std::iota(chosen.begin(), chosen.end(), 0);
      res.layout.dense_tiles = chosen;
      rep.dense_tiles = chosen;
      return res;
    }

    const bool out_axis = o.axis == SpenseAxis::OUT;
    std::vector<double> tile_score;
    std::shared_ptr<const detail::InverseFactor> f_owner;  // of the unpermuted H
    auto F = [&]() -> const detail::InverseFactor& {
      if (!f_owner) f_owner = unpermuted_factor();
      return *f_owner;
    };
    Matrix plain;          // plain SparseGPT result, when computed
    bool have_plain = false;
    ObsRun plain_run;

    if (nd > 0 && !explicit_tiles) {
      tile_score.assign(size_t(T), 0.0);
      if (o.strategy == DenseStrategy::SALIENCY) {
        if (out_axis) {
          const detail::InverseFactor& f = F();  // before the timer: inverse_s has it
          const auto t0 = Clock::now();
          const auto hinv = detail::inverse_diagonal(f);
          const Matrix& Wp = dead_zeroed(f);
          std::vector<double> row_score(static_cast<size_t>(N));
#pragma omp parallel for schedule(static) if (N * K >= kParallelElems)
          for (int64_t r = 0; r < N; ++r) {
            const double* w = Wp.row(r);
            double score = 0;
            for (int64_t c = 0; c < K; c += 4) {
              double s[4];
              for (int k = 0; k < 4; ++k) s[k] = w[c + k] * w[c + k] / hinv[size_t(c + k)];
              const unsigned keep = detail::keep2of4(s);
              for (int k = 0; k < 4; ++k)
                if (!((keep >> k) & 1)) score += s[k];
            }
            row_score[size_t(r)] = score;
          }
          for (int64_t r = 0; r < N; ++r) tile_score[size_t(r / o.tile)] += row_score[size_t(r)];
          rep.time.select_s += seconds_since(t0);
        } else {
          const auto t0 = Clock::now();
          std::vector<double> colnorm(size_t(K), 0.0);
          for (int64_t r = 0; r < N; ++r)
            for (int64_t j = 0; j < K; ++j) colnorm[size_t(j)] += W(r, j) * W(r, j);
          for (int64_t j = 0; j < K; ++j)
            tile_score[size_t(j / o.tile)] += hs.H[size_t(j * K + j)] * colnorm[size_t(j)];
          rep.time.select_s += seconds_since(t0);
        }
      } else {  // ERROR: pass 1 = plain SparseGPT
        plain = Matrix(N, K);
        plain_run = sparsegpt_all(F(), plain);
        have_plain = true;
        const auto t0 = Clock::now();
        if (out_axis) {
          std::vector<int64_t> rows(static_cast<size_t>(N));
          std::iota(rows.begin(), rows.end(), 0);
          std::vector<double> per_row(static_cast<size_t>(N));
          identity_error(plain_run, rows, dead_zeroed(F()), plain, F().lambda, &per_row);
          for (int64_t r = 0; r < N; ++r) tile_score[size_t(r / o.tile)] += per_row[size_t(r)];
        } else {
          for (int64_t j = 0; j < K; ++j) tile_score[size_t(j / o.tile)] += plain_run.err_col[size_t(j)];
        }
        rep.time.select_s += seconds_since(t0);
      }
      chosen = top_tiles(tile_score, nd);
    }
    res.layout.dense_tiles = chosen;
    rep.dense_tiles = chosen;
    rep.tile_scores = tile_score;

    // The final pass.
    if (out_axis) {
      std::vector<uint8_t> dense_row(size_t(N), 0);
      for (int64_t t : chosen)
        for (int64_t r = t * o.tile; r < (t + 1) * o.tile; ++r) dense_row[size_t(r)] = 1;
      std::vector<int64_t> rows;
      for (int64_t r = 0; r < N; ++r)
        if (!dense_row[size_t(r)]) rows.push_back(r);
        else std::memcpy(res.W.row(r), W.row(r), size_t(K) * sizeof(double));
      if (have_plain) {  // rows are independent: pass 2 on the sparse rows equals pass 1
        for (int64_t r : rows) std::memcpy(res.W.row(r), plain.row(r), size_t(K) * sizeof(double));
        if (!o.compute_error) {
          double e = 0;
          std::vector<double> per_row(static_cast<size_t>(N));
          std::vector<int64_t> all(static_cast<size_t>(N));
          std::iota(all.begin(), all.end(), 0);
          identity_error(plain_run, all, dead_zeroed(F()), plain, F().lambda, &per_row);
          for (int64_t r : rows) e += per_row[size_t(r)];
          rep.error = e;
        }
      } else {
        const Matrix& Wp = dead_zeroed(F());
        std::vector<uint8_t> prunable(static_cast<size_t>(K), 1);
        const auto t0 = Clock::now();
        auto run = run_obs(compute_of(o), Wp, rows, F(), prunable, o.blocksize, o.precision, res.W);
        rep.time.obs_s += seconds_since(t0);
        rep.obs_flops += run.flops;
        if (!o.compute_error) rep.error = identity_error(run, rows, Wp, res.W, F().lambda, nullptr);
      }
    } else {
      std::vector<uint8_t> dense_col(size_t(K), 0);
      for (int64_t t : chosen)
        for (int64_t j = t * o.tile; j < (t + 1) * o.tile; ++j) dense_col[size_t(j)] = 1;
      const bool permute = o.dense_last && !chosen.empty();
      prune_in(dense_col, permute ? nullptr : &F(), res.W);
    }

    // Plain SparseGPT for comparison.
    if (o.compare_sparsegpt && !have_plain && spense && nd > 0) {
      plain = Matrix(N, K);
      plain_run = sparsegpt_all(F(), plain);
      have_plain = true;
    }
    if (have_plain) {
      const auto t0 = Clock::now();
      if (o.compute_error) {
        rep.sparsegpt_error = reconstruction_error(W, plain, hs, o.compute);
      } else {
        std::vector<int64_t> all(static_cast<size_t>(N));
        std::iota(all.begin(), all.end(), 0);
        rep.sparsegpt_error = identity_error(plain_run, all, dead_zeroed(F()), plain, F().lambda, nullptr);
      }
      rep.time.error_s += seconds_since(t0);
    }
    return res;
  }
};

}  // namespace

const char* prune_method_name(PruneMethod m) {
  switch (m) {
    case PruneMethod::DENSE: return "dense";
    case PruneMethod::MAGNITUDE: return "magnitude";
    case PruneMethod::WANDA: return "wanda";
    case PruneMethod::SPARSEGPT: return "sparsegpt";
    case PruneMethod::SPENSEGPT: return "spensegpt";
  }
  return "?";
}

bool prune_method_parse(const std::string& s, PruneMethod* out) {
  for (auto m : {PruneMethod::DENSE, PruneMethod::MAGNITUDE, PruneMethod::WANDA,
                 PruneMethod::SPARSEGPT, PruneMethod::SPENSEGPT})
    if (s == prune_method_name(m)) return *out = m, true;
  return false;
}

const char* dense_strategy_name(DenseStrategy s) {
  return s == DenseStrategy::SALIENCY ? "saliency" : "error";
}

bool dense_strategy_parse(const std::string& s, DenseStrategy* out) {
  if (s == "saliency" || s == "A") return *out = DenseStrategy::SALIENCY, true;
  if (s == "error" || s == "B") return *out = DenseStrategy::ERROR, true;
  return false;
}

double reconstruction_error(const Matrix& W, const Matrix& W_hat, const Hessian& H,
                            const PruneCompute* compute) {
  if (W.rows != W_hat.rows || W.cols != W_hat.cols || H.K != W.cols)
    throw Error("reconstruction_error: shapes differ", 1);
  Matrix E(W.rows, W.cols);
  const int64_t n = int64_t(E.data.size());
#pragma omp parallel for schedule(static) if (n >= kParallelElems)
  for (int64_t i = 0; i < n; ++i) E.data[size_t(i)] = W.data[size_t(i)] - W_hat.data[size_t(i)];
  return (compute ? *compute : cpu_prune_compute()).quad_form_rows(E.data.data(), E.rows, E.cols, H.H.data());
}

PruneResult prune_layer(const PruneOptions& opt, const Matrix& W, const Hessian& hs) {
  const auto t_start = Clock::now();
  check_inputs(opt, W, hs);
  const int64_t N = W.rows, K = W.cols;
  PruneOptions o = opt;
  if (o.method == PruneMethod::SPARSEGPT) {
    o.dense_ratio = 0;
    o.dense_tiles.reset();
  }
  PruneResult res;
  PruneReport rep;
  rep.layer = o.layer;
  rep.method = o.method;
  rep.axis = o.axis;
  rep.strategy = o.strategy;
  rep.N = N;
  rep.K = K;

  switch (o.method) {
    case PruneMethod::DENSE:
      res.W = W;
      res.layout = {o.axis, o.tile, {}};
      break;
    case PruneMethod::MAGNITUDE:
    case PruneMethod::WANDA: {
      const auto t0 = Clock::now();
      res.W = W;
      res.layout = {SpenseAxis::OUT, o.tile, {}};
      if (o.method == PruneMethod::MAGNITUDE) {
        mask24(res.W, [](double w, int64_t) { return std::abs(w); });
      } else {
        std::vector<double> norm(static_cast<size_t>(K));
        for (int64_t j = 0; j < K; ++j) norm[size_t(j)] = std::sqrt(hs.col_sq[size_t(j)]);
        mask24(res.W, [&](double w, int64_t j) { return std::abs(w) * norm[size_t(j)]; });
      }
      rep.time.select_s = seconds_since(t0);
      break;
    }
    case PruneMethod::SPARSEGPT:
    case PruneMethod::SPENSEGPT: {
      SpenseRun run{o, W, hs, rep, N, K, Matrix(), false};
      res = run.go();
      break;
    }
  }

  // Report.
  rep.dense_tiles = res.layout.dense_tiles;
  rep.g = res.layout.g;
  const bool spense = o.method == PruneMethod::SPENSEGPT;
  if (spense) {
    rep.dense_ratio = rep.num_tiles ? double(rep.dense_tiles.size()) / double(rep.num_tiles) : 0;
    rep.density = o.method == PruneMethod::DENSE ? 1.0 : 0.5 * (1 - rep.dense_ratio) + rep.dense_ratio;
  } else {
    rep.dense_ratio = o.method == PruneMethod::DENSE ? 1.0 : 0.0;
    rep.density = o.method == PruneMethod::DENSE ? 1.0 : 0.5;
  }
  int64_t nnz = 0;
  const int64_t total = N * K;
  const double* wh = res.W.data.data();
#pragma omp parallel for schedule(static) reduction(+ : nnz) if (total >= kParallelElems)
  for (int64_t i = 0; i < total; ++i) nnz += wh[i] != 0.0;
  rep.nonzero_fraction = double(nnz) / (double(N) * double(K));

  const auto t0 = Clock::now();
  const bool obs_method = o.method == PruneMethod::SPARSEGPT || spense;
  double base = 0;
  if (o.compute_error || !obs_method) {
    rep.error = o.method == PruneMethod::DENSE ? 0.0 : reconstruction_error(W, res.W, hs, o.compute);
    rep.error_exact = true;
  } else {
    rep.error_exact = false;  // rep.error set by the OBS identity
  }
  if (o.compute_error || !obs_method) {
    base = compute_of(o).quad_form_rows(W.data.data(), W.rows, W.cols, hs.H.data());
    rep.error_rel = base > 0 ? rep.error / base : 0;
  } else {
    rep.error_rel = -1;
  }
  if (o.method == PruneMethod::SPARSEGPT) rep.sparsegpt_error = rep.error;
  rep.time.error_s += seconds_since(t0);
  rep.time.total_s = seconds_since(t_start);
  res.report = std::move(rep);
  return res;
}

std::string prune_report_json(const PruneReport& r) {
  nlohmann::json j;
  j["layer"] = r.layer;
  j["method"] = prune_method_name(r.method);
  j["axis"] = spense_axis_name(r.axis);
  j["strategy"] = dense_strategy_name(r.strategy);
  j["shape"] = {r.N, r.K};
  j["g"] = r.g;
  j["num_tiles"] = r.num_tiles;
  j["dense_tiles"] = r.dense_tiles;
  j["dense_ratio"] = r.dense_ratio;
  j["density"] = r.density;
  j["nonzero_fraction"] = r.nonzero_fraction;
  j["damping"] = r.damping;
  j["damping_retries"] = r.damping_retries;
  j["dead_inputs"] = r.dead_inputs;
  j["error"] = r.error;
  j["error_rel"] = r.error_rel;
  j["error_exact"] = r.error_exact;
  if (r.sparsegpt_error >= 0) j["sparsegpt_error"] = r.sparsegpt_error;
  j["obs_gflop"] = r.obs_flops * 1e-9;
  j["time_s"] = {{"inverse", r.time.inverse_s}, {"select", r.time.select_s}, {"obs", r.time.obs_s},
                 {"error", r.time.error_s}, {"total", r.time.total_s}};
  return j.dump();
}

}  // namespace spense
