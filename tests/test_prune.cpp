// Pruning one layer: calibration statistics, the 2:4 invariants of every method, SpenseGPT's
// dense tiles (both axes, both strategies), the error ordering on synthetic data, numerical
// robustness and input errors. The agreement with the independent PyTorch SparseGPT is in
// test_prune_ref.cpp. References are named at each test: brute-force sums, algebraic
// identities of OBS, hand-computed small cases, or the method definitions (design.md s. 3).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "prune/obs.h"
#include "prune/synth.h"
#include "spense/error.h"
#include "spense/format.h"
#include "spense/prune.h"

using namespace spense;

namespace {

template <class Fn>
void expect_error(Fn&& fn, std::initializer_list<const char*> fragments) {
  try {
    fn();
    ADD_FAILURE() << "no spense::Error thrown (expected: " << *fragments.begin() << ")";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const char* f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "message: " << msg;
  }
}

struct Layer {
  Matrix W;
  Hessian H;
};

Layer synth(int64_t N, int64_t K, int64_t n, uint64_t seed, int64_t outliers = 6) {
  auto s = detail::synth_layer(N, K, n, seed, outliers);
  HessianAccumulator acc("synth", K);
  acc.add(s.X.data(), n);
  return {std::move(s.W), acc.finalize()};
}

// Largest number of non-zeros in any group of 4 outside the dense tiles.
int max_group_nnz(const Matrix& W, const SpenseLayout& l) {
  int worst = 0;
  for (int64_t r = 0; r < W.rows; ++r)
    for (int64_t c = 0; c < W.cols; c += 4) {
      bool dense = false;
      for (int64_t t : l.dense_tiles) {
        const int64_t i = l.axis == SpenseAxis::OUT ? r : c;
        dense |= i >= t * l.g && i < (t + 1) * l.g;
      }
      if (dense) continue;
      int nz = 0;
      for (int k = 0; k < 4; ++k) nz += W(r, c + k) != 0.0;
      worst = std::max(worst, nz);
    }
  return worst;
}

PruneOptions opts(PruneMethod m, SpenseAxis axis = SpenseAxis::OUT,
                  DenseStrategy s = DenseStrategy::SALIENCY, double d = 0.25, int64_t g = 16) {
  PruneOptions o;
  o.layer = "test.layer";
  o.method = m;
  o.axis = axis;
  o.strategy = s;
  o.dense_ratio = d;
  o.tile = g;
  return o;
}

}  // namespace

// ---------------------------------------------------------------- calibration statistics

TEST(Hessian, AccumulatorMatchesBruteForceAcrossBatchSizes) {
  // Reference: the definition H = 2/n sum_i x_i x_i^T, summed naively in long double.
  const int64_t K = 24, n = 1100;
  detail::NormalRng rng(5);
  std::vector<float> X(size_t(n * K));
  for (auto& x : X) x = float(rng.normal());
  HessianAccumulator acc("blk.3.mlp.down", K, 256);
  // Batches of 1, 7 and 600 rows (more than the 256-row conversion chunk), and the rest.
  int64_t r = 0;
  for (int64_t b : {int64_t(1), int64_t(7), int64_t(600)}) acc.add(X.data() + r * K, b), r += b;
  std::vector<double> Xd(X.begin() + r * K, X.end());
  acc.add(Xd.data(), n - r);  // the fp64 entry point too
  const Hessian h = acc.finalize();
  EXPECT_EQ(h.n_rows, n);
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = 0; j < K; ++j) {
      long double s = 0;
      for (int64_t t = 0; t < n; ++t) s += (long double)X[size_t(t * K + i)] * X[size_t(t * K + j)];
      const double ref = double(2.0L / n * s);
      EXPECT_NEAR(h.H[size_t(i * K + j)], ref, 1e-12 * (std::abs(ref) + 1)) << i << "," << j;
    }
  // Wanda's column norms are the undivided diagonal: col_sq = n/2 diag(H).
  for (int64_t j = 0; j < K; ++j)
    EXPECT_NEAR(h.col_sq[size_t(j)], n / 2.0 * h.H[size_t(j * K + j)], 1e-9 * h.col_sq[size_t(j)]);
}

TEST(Hessian, Fp32BatchesMatchBruteForce) {
  // fp32_batches: each batch's X^T X by ssyrk in fp32, summed in fp64. Reference as above (long
  // double); the tolerance is fp32 rounding over a 600-row batch, relative to sqrt(H_ii H_jj).
  const int64_t K = 24, n = 1100;
  detail::NormalRng rng(6);
  std::vector<float> X(size_t(n * K));
  for (auto& x : X) x = float(rng.normal());
  HessianAccumulator acc("blk.0.mlp.down", K, 0, /*fp32_batches=*/true);
  int64_t r = 0;
  for (int64_t b : {int64_t(1), int64_t(7), int64_t(600), int64_t(492)}) acc.add(X.data() + r * K, b), r += b;
  const Hessian h = acc.finalize();
  EXPECT_EQ(h.n_rows, n);
  double worst = 0;
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = 0; j < K; ++j) {
      long double s = 0;
      for (int64_t t = 0; t < n; ++t) s += (long double)X[size_t(t * K + i)] * X[size_t(t * K + j)];
      const double ref = double(2.0L / n * s);
      const double scale = std::sqrt(h.H[size_t(i * K + i)] * h.H[size_t(j * K + j)]);
      worst = std::max(worst, std::abs(h.H[size_t(i * K + j)] - ref) / scale);
      EXPECT_EQ(h.H[size_t(i * K + j)], h.H[size_t(j * K + i)]);
    }
  EXPECT_LT(worst, 1e-5);
  EXPECT_GT(worst, 0.0);  // it did round in fp32 (the fp64 path is exact to 1e-12 here)
  for (int64_t j = 0; j < K; ++j)
    EXPECT_NEAR(h.col_sq[size_t(j)], n / 2.0 * h.H[size_t(j * K + j)], 1e-5 * h.col_sq[size_t(j)]);
}

// K = 600 spans several product tiles (256 + 256 + 88: diagonal, off-diagonal and edge tiles,
// spread over the threads), in both precisions; reference as above (long double).
TEST(Hessian, TiledProductsMatchBruteForce) {
  const int64_t K = 600, n = 300;
  detail::NormalRng rng(7);
  std::vector<float> X(size_t(n * K));
  for (auto& x : X) x = float(rng.normal());
  std::vector<long double> ref(size_t(K * K), 0.0L);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < K; ++i)
      for (int64_t j = i; j < K; ++j) ref[size_t(i * K + j)] += (long double)X[size_t(t * K + i)] * X[size_t(t * K + j)];
  for (bool fp32 : {false, true}) {
    SCOPED_TRACE(fp32 ? "fp32 batches" : "fp64");
    HessianAccumulator acc("blk.1.mlp.down", K, 128, fp32);  // fp64: three conversion chunks of 128 rows
    acc.add(X.data(), 100);
    acc.add(X.data() + 100 * K, n - 100);
    const Hessian h = acc.finalize();
    double worst = 0;
    for (int64_t i = 0; i < K; ++i)
      for (int64_t j = 0; j < K; ++j) {
        const double r = double(2.0L / n * ref[size_t(std::min(i, j) * K + std::max(i, j))]);
        const double scale = std::sqrt(h.H[size_t(i * K + i)] * h.H[size_t(j * K + j)]);
        worst = std::max(worst, std::abs(h.H[size_t(i * K + j)] - r) / scale);
      }
    EXPECT_LT(worst, fp32 ? 1e-5 : 1e-13);
    for (int64_t j = 0; j < K; ++j)
      EXPECT_NEAR(h.col_sq[size_t(j)], double(ref[size_t(j * K + j)]), 1e-12 * h.col_sq[size_t(j)]);
  }
}

TEST(Hessian, RejectsNonFiniteActivations) {
  HessianAccumulator acc("blk.7.attn.q", 8);
  std::vector<float> X(16, 1.f);
  acc.add(X.data(), 2);
  X[13] = INFINITY;
  expect_error([&] { acc.add(X.data(), 2); }, {"blk.7.attn.q", "row 3", "column 5", "NaN or Inf"});
  EXPECT_EQ(acc.rows(), 2);  // the bad batch was not accumulated
  X[13] = NAN;
  expect_error([&] { acc.add(X.data(), 2); }, {"NaN"});
  HessianAccumulator empty("e", 4);
  expect_error([&] { empty.finalize(); }, {"no calibration rows"});
}

// ---------------------------------------------------------------- invariants of every method

TEST(Prune, EverySparseGroupIs24) {
  // Reference: the 2:4 definition (design.md s. 1), checked on the materialised result.
  const Layer L = synth(64, 128, 256, 1);
  for (auto m : {PruneMethod::MAGNITUDE, PruneMethod::WANDA, PruneMethod::SPARSEGPT})
    EXPECT_LE(max_group_nnz(prune_layer(opts(m), L.W, L.H).W, {}), 2) << prune_method_name(m);
  for (auto axis : {SpenseAxis::OUT, SpenseAxis::IN})
    for (auto s : {DenseStrategy::SALIENCY, DenseStrategy::ERROR}) {
      const auto r = prune_layer(opts(PruneMethod::SPENSEGPT, axis, s), L.W, L.H);
      EXPECT_LE(max_group_nnz(r.W, r.layout), 2);
      EXPECT_EQ(r.layout.dense_tiles.size(), size_t(axis == SpenseAxis::OUT ? 1 : 2));  // llround(0.25 * 4 or 8)
      EXPECT_NO_THROW(spense_pack_f64("test.layer", DType::BF16, 64, 128, r.W.data.data(), r.layout));
    }
}

TEST(Prune, AxisOutDenseRowsUntouchedAndAxisInDenseColumnsNotPruned) {
  // Reference: design.md s. 3 (axis OUT: dense rows kept as they are; axis IN: dense columns
  // never pruned but updated by OBS).
  const Layer L = synth(64, 128, 256, 2);
  for (auto s : {DenseStrategy::SALIENCY, DenseStrategy::ERROR}) {
    const auto r = prune_layer(opts(PruneMethod::SPENSEGPT, SpenseAxis::OUT, s, 0.5), L.W, L.H);
    ASSERT_EQ(r.layout.dense_tiles.size(), 2u);
    for (int64_t t : r.layout.dense_tiles)
      for (int64_t row = t * 16; row < (t + 1) * 16; ++row)
        EXPECT_EQ(std::memcmp(r.W.row(row), L.W.row(row), 128 * sizeof(double)), 0) << row;
  }
  const auto r = prune_layer(opts(PruneMethod::SPENSEGPT, SpenseAxis::IN), L.W, L.H);
  for (int64_t t : r.layout.dense_tiles)
    for (int64_t c = t * 16; c < (t + 1) * 16; ++c) {
      bool changed = false;
      for (int64_t row = 0; row < 64; ++row) {
        EXPECT_NE(r.W(row, c), 0.0);
        changed |= r.W(row, c) != L.W(row, c);
      }
      EXPECT_TRUE(changed) << "dense column " << c << " received no OBS update";
    }
}

TEST(Prune, DenseRatioZeroIsExactlySparseGPT) {
  // Reference: SparseGPT itself (bitwise: d = 0 takes the same path).
  const Layer L = synth(64, 128, 256, 3);
  const auto plain = prune_layer(opts(PruneMethod::SPARSEGPT), L.W, L.H);
  for (auto axis : {SpenseAxis::OUT, SpenseAxis::IN})
    for (auto s : {DenseStrategy::SALIENCY, DenseStrategy::ERROR}) {
      const auto r = prune_layer(opts(PruneMethod::SPENSEGPT, axis, s, 0.0), L.W, L.H);
      EXPECT_TRUE(r.layout.dense_tiles.empty());
      EXPECT_EQ(r.W.data, plain.W.data);
    }
}

TEST(Prune, DenseRatioOneLeavesWUnchanged) {
  const Layer L = synth(32, 64, 128, 4);
  for (auto axis : {SpenseAxis::OUT, SpenseAxis::IN})
    for (auto s : {DenseStrategy::SALIENCY, DenseStrategy::ERROR}) {
      const auto r = prune_layer(opts(PruneMethod::SPENSEGPT, axis, s, 1.0), L.W, L.H);
      EXPECT_EQ(r.W.data, L.W.data);
      EXPECT_EQ(r.report.error, 0.0);
      EXPECT_DOUBLE_EQ(r.report.density, 1.0);
    }
  EXPECT_EQ(prune_layer(opts(PruneMethod::DENSE), L.W, L.H).W.data, L.W.data);
}

TEST(Prune, DenseTileCountRoundsHalfAwayFromZero) {
  const Layer L = synth(160, 64, 128, 5);  // axis OUT, g = 16: 10 tiles
  const auto count = [&](double d) {
    return prune_layer(opts(PruneMethod::SPENSEGPT, SpenseAxis::OUT, DenseStrategy::SALIENCY, d),
                       L.W, L.H).layout.dense_tiles.size();
  };
  EXPECT_EQ(count(0.25), 3u);  // 2.5 -> 3
  EXPECT_EQ(count(0.05), 1u);  // 0.5 -> 1
  EXPECT_EQ(count(0.04), 0u);  // 0.4 -> 0
  EXPECT_EQ(count(0.3), 3u);
}

TEST(Prune, ExplicitDenseTiles) {
  const Layer L = synth(64, 64, 128, 6);
  auto o = opts(PruneMethod::SPENSEGPT, SpenseAxis::OUT);
  o.dense_tiles = std::vector<int64_t>{3, 0};
  const auto r = prune_layer(o, L.W, L.H);
  EXPECT_EQ(r.layout.dense_tiles, (std::vector<int64_t>{0, 3}));
  EXPECT_TRUE(r.report.tile_scores.empty());
  o.dense_tiles = std::vector<int64_t>{1, 1};
  expect_error([&] { prune_layer(o, L.W, L.H); }, {"test.layer", "sorted and unique"});
  o.dense_tiles = std::vector<int64_t>{4};
  expect_error([&] { prune_layer(o, L.W, L.H); }, {"out of range [0,4)"});
}

// ---------------------------------------------------------------- baselines by definition

TEST(Prune, MagnitudeAndWandaByDefinition) {
  // Reference: hand-computed. One row [1, 2, 3, 4] with ||X_j|| = [10, 1, 1, 1]: magnitude
  // keeps |w| = 3, 4; Wanda's |w| * ||X_j|| = [10, 2, 3, 4] keeps columns 0 and 3.
  Matrix W(1, 4);
  W.data = {1, 2, 3, 4};
  Hessian H = Hessian::from_matrix(4, {2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2});
  H.col_sq = {100, 1, 1, 1};
  EXPECT_EQ(prune_layer(opts(PruneMethod::MAGNITUDE), W, H).W.data, (std::vector<double>{0, 0, 3, 4}));
  EXPECT_EQ(prune_layer(opts(PruneMethod::WANDA), W, H).W.data, (std::vector<double>{1, 0, 0, 4}));
  // With H diagonal, OBS has nothing to compensate with: SparseGPT = magnitude weighted by
  // H_jj (saliency w^2 (H_jj + lambda)), and the kept weights stay unchanged.
  Hessian Hd = Hessian::from_matrix(4, {1, 0, 0, 0, 0, 100, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1});
  const auto r = prune_layer(opts(PruneMethod::SPARSEGPT), W, Hd);
  EXPECT_EQ(r.W.data, (std::vector<double>{0, 2, 0, 4}));  // saliencies ~ [1, 400, 9, 16]
}

// ---------------------------------------------------------------- numerical identities

TEST(Prune, BlockSizeDoesNotChangeTheResult) {
  // Reference: lazy batched updates are exact (SparseGPT s. 3.2): any block size gives the
  // same result up to rounding. K = 600 is not a multiple of 128, and exceeds the 512-column
  // super-block of the second lazy level (obs.cpp), which B = 200 cuts into 400 columns.
  const Layer L = synth(24, 600, 700, 7);
  auto o = opts(PruneMethod::SPARSEGPT);
  o.compute_error = false;
  o.blocksize = 600;  // one block: every update immediate
  const auto ref = prune_layer(o, L.W, L.H);
  for (int64_t B : {4, 12, 128, 200}) {
    o.blocksize = B;
    const auto r = prune_layer(o, L.W, L.H);
    double max_diff = 0, max_ref = 0;
    for (size_t i = 0; i < r.W.data.size(); ++i) {
      EXPECT_EQ(r.W.data[i] != 0, ref.W.data[i] != 0) << "B " << B << " element " << i;
      max_diff = std::max(max_diff, std::abs(r.W.data[i] - ref.W.data[i]));
      max_ref = std::max(max_ref, std::abs(ref.W.data[i]));
    }
    EXPECT_LE(max_diff, 1e-12 * max_ref) << "B " << B;
  }
}

TEST(Prune, ObsIdentityGivesTheReconstructionError) {
  // Reference: with E = W - W_hat = Err U and U^T U = (H + lambda I)^-1,
  // tr(E (H + lambda I) E^T) = ||Err||^2, so the error is available without a GEMM; it must
  // equal the direct tr(E H E^T) for every SparseGPT-family configuration.
  const Layer L = synth(64, 128, 256, 8);
  struct C { PruneMethod m; SpenseAxis a; DenseStrategy s; };
  for (C c : {C{PruneMethod::SPARSEGPT, SpenseAxis::OUT, DenseStrategy::SALIENCY},
              C{PruneMethod::SPENSEGPT, SpenseAxis::OUT, DenseStrategy::SALIENCY},
              C{PruneMethod::SPENSEGPT, SpenseAxis::OUT, DenseStrategy::ERROR},
              C{PruneMethod::SPENSEGPT, SpenseAxis::IN, DenseStrategy::SALIENCY},
              C{PruneMethod::SPENSEGPT, SpenseAxis::IN, DenseStrategy::ERROR}}) {
    auto o = opts(c.m, c.a, c.s);
    o.compare_sparsegpt = true;
    const auto direct = prune_layer(o, L.W, L.H);
    o.compute_error = false;
    const auto ident = prune_layer(o, L.W, L.H);
    EXPECT_TRUE(direct.report.error_exact);
    EXPECT_FALSE(ident.report.error_exact);
    EXPECT_EQ(direct.W.data, ident.W.data);
    EXPECT_NEAR(ident.report.error, direct.report.error, 1e-9 * direct.report.error);
    EXPECT_NEAR(ident.report.sparsegpt_error, direct.report.sparsegpt_error,
                1e-9 * direct.report.sparsegpt_error);
  }
}

TEST(Prune, StrategyErrorAxisOutEqualsARealSecondPass) {
  // Reference: rerunning SparseGPT on the sparse rows with the chosen tiles given explicitly.
  // Strategy B (axis out) reuses pass 1 for those rows instead (rows are independent); the two
  // must agree to rounding.
  const Layer L = synth(64, 128, 256, 18);
  auto o = opts(PruneMethod::SPENSEGPT, SpenseAxis::OUT, DenseStrategy::ERROR, 0.5);
  const auto b = prune_layer(o, L.W, L.H);
  o.dense_tiles = b.layout.dense_tiles;
  const auto x = prune_layer(o, L.W, L.H);
  ASSERT_EQ(b.W.data.size(), x.W.data.size());
  for (size_t i = 0; i < b.W.data.size(); ++i) {
    ASSERT_EQ(b.W.data[i] != 0, x.W.data[i] != 0) << i;
    ASSERT_NEAR(b.W.data[i], x.W.data[i], 1e-12) << i;
  }
  EXPECT_NEAR(b.report.error, x.report.error, 1e-10 * x.report.error);
}

// Projections sharing a Hessian (q/k/v) reuse its inverse factor through the cache: the same
// result bit for bit as computing it again, no inverse time for the reuse, and a different
// Hessian (or damping) computes its own. Plain SparseGPT (d = 0) goes the same way as axis out.
TEST(Prune, InverseFactorCacheReusesTheFactorOfTheSameHessian) {
  const Layer A = synth(64, 128, 256, 21), B = synth(64, 128, 256, 22);
  for (SpenseAxis axis : {SpenseAxis::OUT, SpenseAxis::IN}) {
    for (DenseStrategy st : {DenseStrategy::SALIENCY, DenseStrategy::ERROR}) {
      SCOPED_TRACE(std::string(spense_axis_name(axis)) + " " + dense_strategy_name(st));
      PruneOptions o = opts(PruneMethod::SPENSEGPT, axis, st);
      const PruneResult fresh_a = prune_layer(o, A.W, A.H);
      const PruneResult fresh_b = prune_layer(o, B.W, A.H);  // another weight on A's Hessian
      InverseFactorCache cache;
      o.factor_cache = &cache;
      const PruneResult first = prune_layer(o, A.W, A.H);
      // axis in with saliency factors only the permuted H (dense columns last), per projection
      if (axis == SpenseAxis::IN && st == DenseStrategy::SALIENCY) {
        EXPECT_FALSE(cache.factor);
        EXPECT_EQ(first.W.data, fresh_a.W.data);
        continue;
      }
      ASSERT_TRUE(cache.factor);
      EXPECT_EQ(cache.H, &A.H);
      const auto* kept = cache.factor.get();
      const PruneResult second = prune_layer(o, B.W, A.H);
      EXPECT_EQ(cache.factor.get(), kept);  // reused, not recomputed
      EXPECT_EQ(first.W.data, fresh_a.W.data);
      EXPECT_EQ(second.W.data, fresh_b.W.data);
      EXPECT_EQ(second.report.dense_tiles, fresh_b.report.dense_tiles);
      EXPECT_EQ(second.report.damping, fresh_b.report.damping);
      // axis out never permutes H, so the reuse leaves no inverse work at all
      if (axis == SpenseAxis::OUT) EXPECT_EQ(second.report.time.inverse_s, 0.0);
      // another Hessian object: its own factor replaces the cached one
      const PruneResult other = prune_layer(o, B.W, B.H);
      EXPECT_EQ(cache.H, &B.H);
      EXPECT_NE(cache.factor.get(), kept);
      o.factor_cache = nullptr;
      EXPECT_EQ(other.W.data, prune_layer(o, B.W, B.H).W.data);
      // another damping on the same Hessian: recomputed too
      o.factor_cache = &cache;
      o.percdamp = 0.05;
      const auto* before = cache.factor.get();
      prune_layer(o, B.W, B.H);
      EXPECT_NE(cache.factor.get(), before);
      EXPECT_EQ(cache.percdamp, 0.05);
    }
  }
}

TEST(Prune, InverseFactorIsTheCholeskyFactorOfTheInverse) {
  // Reference: U^T U (H + lambda I) = I, U upper with a positive diagonal.
  const Layer L = synth(8, 64, 256, 9);
  const auto f = detail::inverse_factor("t", L.H.H.data(), 64, 0.01);
  double mean = 0;
  for (int64_t j = 0; j < 64; ++j) mean += L.H.H[size_t(j * 64 + j)] / 64;
  EXPECT_NEAR(f.lambda, 0.01 * mean, 1e-15 * mean);
  for (int64_t i = 0; i < 64; ++i) {
    EXPECT_GT(f.U[size_t(i * 64 + i)], 0);
    for (int64_t j = 0; j < i; ++j) EXPECT_EQ(f.U[size_t(i * 64 + j)], 0.0);
  }
  double worst = 0;
  for (int64_t i = 0; i < 64; ++i)
    for (int64_t j = 0; j < 64; ++j) {
      double s = 0;  // (U^T U H_d)_ij
      for (int64_t k = 0; k < 64; ++k) {
        double utu = 0;
        for (int64_t m = 0; m <= std::min(i, k); ++m) utu += f.U[size_t(m * 64 + i)] * f.U[size_t(m * 64 + k)];
        s += utu * (L.H.H[size_t(k * 64 + j)] + (k == j ? f.lambda : 0.0));
      }
      worst = std::max(worst, std::abs(s - (i == j ? 1.0 : 0.0)));
    }
  EXPECT_LT(worst, 1e-10);
}

// ---------------------------------------------------------------- quality ordering

TEST(Prune, ErrorOrderingOnCorrelatedInputsWithOutliers) {
  // Reference: design.md s. 4's expected ordering, on seeded correlated inputs with outlier
  // channels: SpenseGPT(d=0.25) < SparseGPT < Wanda < magnitude, both axes, both strategies.
  const Layer L = synth(128, 256, 512, 10, 8);
  const double mag = prune_layer(opts(PruneMethod::MAGNITUDE), L.W, L.H).report.error;
  const double wanda = prune_layer(opts(PruneMethod::WANDA), L.W, L.H).report.error;
  const double sgpt = prune_layer(opts(PruneMethod::SPARSEGPT), L.W, L.H).report.error;
  std::printf("magnitude %.4f  wanda %.4f  sparsegpt %.4f\n", mag, wanda, sgpt);
  EXPECT_LT(wanda, mag);
  EXPECT_LT(sgpt, wanda);
  for (auto axis : {SpenseAxis::OUT, SpenseAxis::IN})
    for (auto s : {DenseStrategy::SALIENCY, DenseStrategy::ERROR}) {
      auto o = opts(PruneMethod::SPENSEGPT, axis, s);
      o.compare_sparsegpt = true;
      const auto r = prune_layer(o, L.W, L.H);
      std::printf("spensegpt axis %s strategy %s: %.4f (dense tiles %zu of %lld)\n",
                  spense_axis_name(axis), dense_strategy_name(s), r.report.error,
                  r.layout.dense_tiles.size(), (long long)r.report.num_tiles);
      EXPECT_LT(r.report.error, sgpt);
      EXPECT_NEAR(r.report.sparsegpt_error, sgpt, 1e-9 * sgpt);
      EXPECT_DOUBLE_EQ(r.report.density, 0.625);
    }
}

TEST(Prune, StrategiesBeatRandomTilesAndDenseLastHelps) {
  // Reference: the purpose of the strategies (design.md s. 3): their tiles must beat the
  // average of a few fixed tile choices; with axis IN, processing dense columns last lets them
  // absorb every pruned column's error, so it must not be worse than the natural order.
  const Layer L = synth(128, 256, 512, 11, 8);
  for (auto axis : {SpenseAxis::OUT, SpenseAxis::IN}) {
    const int64_t T = axis == SpenseAxis::OUT ? 8 : 16, nd = axis == SpenseAxis::OUT ? 2 : 4;
    double fixed = 0;
    int runs = 0;
    for (int64_t start = 0; start + nd <= T; start += nd, ++runs) {
      auto o = opts(PruneMethod::SPENSEGPT, axis);
      std::vector<int64_t> tiles;
      for (int64_t t = start; t < start + nd; ++t) tiles.push_back(t);
      o.dense_tiles = tiles;
      fixed += prune_layer(o, L.W, L.H).report.error;
    }
    fixed /= runs;
    for (auto s : {DenseStrategy::SALIENCY, DenseStrategy::ERROR}) {
      const double e = prune_layer(opts(PruneMethod::SPENSEGPT, axis, s), L.W, L.H).report.error;
      EXPECT_LT(e, fixed) << spense_axis_name(axis) << " " << dense_strategy_name(s);
    }
  }
  auto o = opts(PruneMethod::SPENSEGPT, SpenseAxis::IN);
  const double last = prune_layer(o, L.W, L.H).report.error;
  o.dense_last = false;
  const double natural = prune_layer(o, L.W, L.H).report.error;
  std::printf("axis in, saliency: dense_last %.4f, natural order %.4f\n", last, natural);
  EXPECT_LE(last, natural);
}

TEST(Prune, SaliencyPicksTheObviousTiles) {
  // Reference: the score definitions. Axis OUT: a tile of rows with 10x weights has 100x the
  // OBS loss. Axis IN: the tile holding the outlier channel has the largest H_jj ||W_:,j||^2.
  Layer L = synth(64, 64, 256, 12, 0);
  for (int64_t r = 32; r < 48; ++r)
    for (int64_t c = 0; c < 64; ++c) L.W(r, c) *= 10;  // tile 2 of 4
  auto o = opts(PruneMethod::SPENSEGPT, SpenseAxis::OUT, DenseStrategy::SALIENCY, 0.25);
  EXPECT_EQ(prune_layer(o, L.W, L.H).layout.dense_tiles, (std::vector<int64_t>{2}));
  o.strategy = DenseStrategy::ERROR;
  EXPECT_EQ(prune_layer(o, L.W, L.H).layout.dense_tiles, (std::vector<int64_t>{2}));
  // Column 37 (tile 2 of 4 with g = 16) an outlier channel: scale its activations by 20.
  auto s = detail::synth_layer(64, 64, 256, 13, 0);
  for (int64_t i = 0; i < 256; ++i) s.X[size_t(i * 64 + 37)] *= 20;
  HessianAccumulator acc("t", 64);
  acc.add(s.X.data(), 256);
  const Hessian H = acc.finalize();
  o = opts(PruneMethod::SPENSEGPT, SpenseAxis::IN, DenseStrategy::SALIENCY, 0.25);
  EXPECT_EQ(prune_layer(o, s.W, H).layout.dense_tiles, (std::vector<int64_t>{2}));
}

TEST(Prune, Fp32ObsCloseToFp64) {
  const Layer L = synth(64, 256, 512, 14);
  auto o = opts(PruneMethod::SPENSEGPT, SpenseAxis::IN, DenseStrategy::ERROR);
  const auto a = prune_layer(o, L.W, L.H);
  o.precision = ObsPrecision::F32;
  const auto b = prune_layer(o, L.W, L.H);
  EXPECT_EQ(a.layout.dense_tiles, b.layout.dense_tiles);
  size_t mask_diff = 0;
  for (size_t i = 0; i < a.W.data.size(); ++i) mask_diff += (a.W.data[i] != 0) != (b.W.data[i] != 0);
  EXPECT_LE(mask_diff, a.W.data.size() / 1000);  // near-ties may flip in fp32
  EXPECT_NEAR(b.report.error, a.report.error, 1e-3 * a.report.error);
}

// ---------------------------------------------------------------- robustness

TEST(Prune, SingularHessianDeadAndDuplicateColumns) {
  // Rank-deficient H (n < K), two dead inputs and duplicated channels: the damped inverse
  // exists, dead columns are zero in the pruned part (SparseGPT's rule), everything is finite.
  auto s = detail::synth_layer(32, 64, 40, 15, 2);
  for (int64_t i = 0; i < 40; ++i) {
    s.X[size_t(i * 64 + 5)] = 0;
    s.X[size_t(i * 64 + 40)] = 0;
    s.X[size_t(i * 64 + 21)] = s.X[size_t(i * 64 + 20)];
    s.X[size_t(i * 64 + 33)] = -2 * s.X[size_t(i * 64 + 30)];
  }
  HessianAccumulator acc("t", 64);
  acc.add(s.X.data(), 40);
  const Hessian H = acc.finalize();
  for (auto axis : {SpenseAxis::OUT, SpenseAxis::IN})
    for (auto st : {DenseStrategy::SALIENCY, DenseStrategy::ERROR}) {
      const auto r = prune_layer(opts(PruneMethod::SPENSEGPT, axis, st, 0.25), s.W, H);
      EXPECT_EQ(r.report.dead_inputs, 2);
      EXPECT_EQ(r.report.damping_retries, 0);
      EXPECT_TRUE(std::isfinite(r.report.error));
      for (double v : r.W.data) ASSERT_TRUE(std::isfinite(v));
      EXPECT_LE(max_group_nnz(r.W, r.layout), 2);
      if (axis == SpenseAxis::OUT) {
        for (int64_t row = 0; row < 32; ++row) {
          const bool dense = row / 16 == r.layout.dense_tiles[0];
          if (!dense) {
            EXPECT_EQ(r.W(row, 5), 0.0);
            EXPECT_EQ(r.W(row, 40), 0.0);
          }
        }
      }
    }
  // No damping at all: the Cholesky of the singular H fails and lambda is raised.
  auto o = opts(PruneMethod::SPARSEGPT);
  o.percdamp = 0;
  const auto r = prune_layer(o, s.W, H);
  EXPECT_GT(r.report.damping_retries, 0);
  EXPECT_GT(r.report.damping, 0);
  for (double v : r.W.data) ASSERT_TRUE(std::isfinite(v));
}

TEST(Prune, InputErrors) {
  const Layer L = synth(40, 64, 128, 16);
  // N = 40 is not a multiple of g = 16 (axis OUT); K = 64 is (axis IN) but not of g = 48.
  expect_error([&] { prune_layer(opts(PruneMethod::SPENSEGPT, SpenseAxis::OUT), L.W, L.H); },
               {"test.layer", "N = 40", "multiple of the tile size g = 16"});
  EXPECT_NO_THROW(prune_layer(opts(PruneMethod::SPENSEGPT, SpenseAxis::IN), L.W, L.H));
  expect_error([&] { prune_layer(opts(PruneMethod::SPENSEGPT, SpenseAxis::IN, DenseStrategy::SALIENCY, 0.25, 48), L.W, L.H); },
               {"K = 64", "g = 48"});
  expect_error([&] { prune_layer(opts(PruneMethod::SPENSEGPT, SpenseAxis::IN, DenseStrategy::SALIENCY, 0.25, 6), L.W, L.H); },
               {"positive multiple of 4"});
  expect_error([&] { prune_layer(opts(PruneMethod::SPENSEGPT, SpenseAxis::IN, DenseStrategy::SALIENCY, 1.5), L.W, L.H); },
               {"dense ratio"});
  auto o = opts(PruneMethod::SPARSEGPT);
  o.blocksize = 30;
  expect_error([&] { prune_layer(o, L.W, L.H); }, {"blocksize 30"});
  // K % 4 != 0.
  Matrix W6(4, 6);
  expect_error([&] { prune_layer(opts(PruneMethod::WANDA), W6, Hessian::from_matrix(6, std::vector<double>(36, 0.0))); },
               {"K = 6", "multiple of 4"});
  // Hessian of the wrong size.
  expect_error([&] { prune_layer(opts(PruneMethod::SPARSEGPT), L.W, Hessian::from_matrix(32, std::vector<double>(1024, 0.0))); },
               {"Hessian is 32 x 32, expected 64 x 64"});
  // NaN / Inf in the weights and in H.
  Matrix Wn = L.W;
  Wn(3, 17) = NAN;
  for (auto m : {PruneMethod::DENSE, PruneMethod::MAGNITUDE, PruneMethod::SPARSEGPT, PruneMethod::SPENSEGPT})
    expect_error([&] { prune_layer(opts(m, SpenseAxis::IN), Wn, L.H); }, {"test.layer", "weight [3,17]", "NaN or Inf"});
  Hessian Hn = L.H;
  Hn.H[5] = INFINITY;
  expect_error([&] { prune_layer(opts(PruneMethod::SPARSEGPT), L.W, Hn); }, {"Hessian [0,5]", "NaN or Inf"});
  std::vector<double> asym(16, 0.0);
  asym[1] = 1;
  expect_error([&] { Hessian::from_matrix(4, asym, "q"); }, {"'q'", "not symmetric"});
}

TEST(Prune, ReportAndPackRoundTrip) {
  const Layer L = synth(64, 128, 256, 17);
  auto o = opts(PruneMethod::SPENSEGPT, SpenseAxis::OUT, DenseStrategy::ERROR, 0.25);
  const auto r = prune_layer(o, L.W, L.H);
  const auto j = nlohmann::json::parse(prune_report_json(r.report));
  EXPECT_EQ(j.at("method"), "spensegpt");
  EXPECT_EQ(j.at("axis"), "out");
  EXPECT_EQ(j.at("strategy"), "error");
  EXPECT_EQ(j.at("dense_tiles").size(), 1u);
  EXPECT_GT(j.at("time_s").at("total").get<double>(), 0);
  EXPECT_NEAR(r.report.nonzero_fraction, 0.625, 1e-9);  // no accidental zeros in random data
  EXPECT_GT(r.report.error_rel, 0);
  EXPECT_LT(r.report.error_rel, 1);
  EXPECT_EQ(r.report.tile_scores.size(), 4u);
  EXPECT_GE(r.report.sparsegpt_error, r.report.error);
  // Pack in BF16 and materialise: equals W_hat rounded to BF16.
  const auto t = spense_pack_f64(o.layer, DType::BF16, 64, 128, r.W.data.data(), r.layout);
  const auto back = spense_unpack_f32(t);
  for (size_t i = 0; i < back.size(); ++i)
    ASSERT_EQ(back[i], bf16_to_f32(f32_to_bf16(float(r.W.data[i])))) << i;
}
