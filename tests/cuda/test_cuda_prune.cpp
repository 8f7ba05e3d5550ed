// Pruning on the GPU (spense/cuda/prune_gpu.h) against the CPU path, which is itself tested
// against the PyTorch SparseGPT reference (tests/test_prune.cpp) and the transformers forward
// (tests/test_model*.cpp). The GPU must make the same choices (masks, dense tiles, damping
// retries) and give the same numbers up to rounding: fp64 OBS to ~1e-10 relative, fp32
// forwards to ~1e-5, and the same perplexity on the evaluation model within 0.5% (issue #8).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "prune/obs.h"
#include "spense/cuda/prune_gpu.h"
#include "spense/model.h"
#include "spense/pipeline.h"
#include "spense/prune.h"

namespace spense {
namespace {

const PruneCompute& gpu() {
  static const auto c = cuda::make_gpu_prune_compute();
  return *c;
}

// H from random correlated activations (rows x K), with `dead` all-zero input columns.
Hessian random_hessian(int64_t K, int64_t rows, uint64_t seed, int dead = 0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0, 1);
  std::vector<double> mix(static_cast<size_t>(K));
  for (auto& m : mix) m = nd(rng);
  std::vector<double> X(static_cast<size_t>(rows * K));
  for (int64_t r = 0; r < rows; ++r) {
    const double common = nd(rng);
    for (int64_t j = 0; j < K; ++j) X[size_t(r * K + j)] = (j < dead) ? 0.0 : nd(rng) * (1 + j % 7) + mix[size_t(j)] * common;
  }
  HessianAccumulator acc("t", K);
  acc.add(X.data(), rows);
  return acc.finalize();
}

Matrix random_weight(int64_t N, int64_t K, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0, 0.02);
  Matrix W(N, K);
  for (auto& w : W.data) w = nd(rng);
  return W;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

TEST(GpuPrune, InverseFactorMatchesCpu) {
  for (int dead : {0, 3}) {
    const Hessian H = random_hessian(320, 1000, 11 + dead, dead);
    const auto c = cpu_prune_compute().inverse_factor("t", H.H.data(), H.K, 0.01);
    const auto g = gpu().inverse_factor("t", H.H.data(), H.K, 0.01);
    EXPECT_EQ(c.n_dead, dead);
    EXPECT_EQ(g.n_dead, c.n_dead);
    EXPECT_EQ(g.dead, c.dead);
    EXPECT_EQ(g.lambda, c.lambda);
    double diff = 0;
    for (size_t i = 0; i < c.U.size(); ++i) diff = std::max(diff, std::abs(c.U[i] - g.U[i]));
    EXPECT_LT(diff / max_abs(c.U), 1e-11) << "dead " << dead;
  }
}

TEST(GpuPrune, DampingRetriesMatchCpu) {
  // Rank-deficient H (fewer rows than K) with percdamp 0: the first Cholesky fails on both.
  const Hessian H = random_hessian(128, 40, 5);
  const auto c = cpu_prune_compute().inverse_factor("t", H.H.data(), H.K, 0.0);
  const auto g = gpu().inverse_factor("t", H.H.data(), H.K, 0.0);
  EXPECT_GE(c.retries, 1);
  EXPECT_EQ(g.retries, c.retries);
  EXPECT_EQ(g.lambda, c.lambda);
}

TEST(GpuPrune, QuadFormMatchesCpu) {
  const Hessian H = random_hessian(256, 600, 3);
  const Matrix V = random_weight(300, 256, 4);
  const double c = cpu_prune_compute().quad_form_rows(V.data.data(), V.rows, V.cols, H.H.data());
  const double g = gpu().quad_form_rows(V.data.data(), V.rows, V.cols, H.H.data());
  EXPECT_NEAR(g / c, 1.0, 1e-12);
}

struct LayerCase {
  const char* label;
  PruneMethod method;
  SpenseAxis axis;
  DenseStrategy strategy;
  ObsPrecision precision;
  int dead;
};

TEST(GpuPrune, PruneLayerMakesTheSameChoices) {
  const LayerCase cases[] = {
      {"sparsegpt", PruneMethod::SPARSEGPT, SpenseAxis::OUT, DenseStrategy::SALIENCY, ObsPrecision::F64, 0},
      {"spense out saliency", PruneMethod::SPENSEGPT, SpenseAxis::OUT, DenseStrategy::SALIENCY, ObsPrecision::F64, 2},
      {"spense out error", PruneMethod::SPENSEGPT, SpenseAxis::OUT, DenseStrategy::ERROR, ObsPrecision::F64, 0},
      {"spense in saliency", PruneMethod::SPENSEGPT, SpenseAxis::IN, DenseStrategy::SALIENCY, ObsPrecision::F64, 2},
      {"spense in error", PruneMethod::SPENSEGPT, SpenseAxis::IN, DenseStrategy::ERROR, ObsPrecision::F64, 0},
      {"spense out fp32", PruneMethod::SPENSEGPT, SpenseAxis::OUT, DenseStrategy::SALIENCY, ObsPrecision::F32, 0},
  };
  // K = 384 spans three device column blocks of 128 with a partial trailing update each.
  const int64_t N = 256, K = 384;
  for (const auto& lc : cases) {
    const Hessian H = random_hessian(K, 1500, 21, lc.dead);
    const Matrix W = random_weight(N, K, 22);
    PruneOptions o;
    o.layer = lc.label;
    o.method = lc.method;
    o.axis = lc.axis;
    o.strategy = lc.strategy;
    o.precision = lc.precision;
    o.dense_ratio = 0.25;
    o.tile = 32;
    o.compare_sparsegpt = true;
    const PruneResult c = prune_layer(o, W, H);
    o.compute = &gpu();
    const PruneResult g = prune_layer(o, W, H);
    EXPECT_EQ(prune_layer(o, W, H).W.data, g.W.data) << lc.label << ": the GPU path is deterministic";
    EXPECT_EQ(g.layout.dense_tiles, c.layout.dense_tiles) << lc.label;
    int64_t mask_diff = 0;
    double wdiff = 0;
    for (size_t i = 0; i < c.W.data.size(); ++i) {
      mask_diff += (c.W.data[i] == 0.0) != (g.W.data[i] == 0.0);
      wdiff = std::max(wdiff, std::abs(c.W.data[i] - g.W.data[i]));
    }
    const bool f32 = lc.precision == ObsPrecision::F32;
    EXPECT_EQ(mask_diff, 0) << lc.label;
    EXPECT_LT(wdiff / max_abs(W.data), f32 ? 1e-4 : 1e-10) << lc.label;
    EXPECT_NEAR(g.report.error / c.report.error, 1.0, f32 ? 1e-4 : 1e-9) << lc.label;
    EXPECT_NEAR(g.report.sparsegpt_error / c.report.sparsegpt_error, 1.0, f32 ? 1e-4 : 1e-9) << lc.label;
    EXPECT_NEAR(g.report.obs_flops, c.report.obs_flops, 1e-9 * c.report.obs_flops) << lc.label;
    ASSERT_EQ(g.report.tile_scores.size(), c.report.tile_scores.size());
    for (size_t t = 0; t < c.report.tile_scores.size(); ++t)
      EXPECT_NEAR(g.report.tile_scores[t], c.report.tile_scores[t], (f32 ? 1e-4 : 1e-9) * std::abs(c.report.tile_scores[t]))
          << lc.label << " tile " << t;
  }
}

// S windows of T random tokens, embedded: the first block's calibration activations.
std::vector<float> embedded_windows(const Model& m, int64_t S, int64_t T, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> tok(0, int32_t(m.vocab_size() - 1));
  const int64_t Hd = m.hidden_size();
  std::vector<float> acts(size_t(S * T * Hd));
  for (int64_t s = 0; s < S; ++s) {
    std::vector<int32_t> ids(static_cast<size_t>(T));
    for (auto& t : ids) t = tok(rng);
    m.embed(ids.data(), T, acts.data() + s * T * Hd);
  }
  return acts;
}

// The CPU and GPU runners' Hessians of every layer of a tiny model (dense weights), with the
// GPU activations kept on the device and in host memory.
TEST(GpuPrune, CalibrationHessiansMatchCpu) {
  for (const char* name : {"qwen3_tiny", "qwen2_tiny", "llama_tiny"}) {
    const Model m = Model::load(std::string(SPENSE_FIXTURES) + "/hf/" + name);
    const int64_t S = 3, T = 24;
    const std::vector<float> acts = embedded_windows(m, S, T, 1);
    auto cpu = make_cpu_calibration_runner();
    auto g = cuda::make_gpu_calibration_runner(cuda::ActivationPlacement::DEVICE);
    auto gh = cuda::make_gpu_calibration_runner(cuda::ActivationPlacement::HOST);
    cpu->reset(m, acts, S, T);
    g->reset(m, acts, S, T);
    gh->reset(m, acts, S, T);
    for (int64_t l = 0; l < m.num_layers(); ++l) {
      const auto hc = cpu->hessians(m, l, {});
      const auto hg = g->hessians(m, l, {});
      const auto hh = gh->hessians(m, l, {});
      for (size_t r = 0; r < 4; ++r) EXPECT_EQ(hh[r].H, hg[r].H) << "activations in host memory: same arithmetic";
      ASSERT_EQ(hc.size(), 4u);
      ASSERT_EQ(hg.size(), 4u);
      for (size_t r = 0; r < 4; ++r) {
        ASSERT_EQ(hg[r].K, hc[r].K);
        EXPECT_EQ(hg[r].n_rows, hc[r].n_rows);
        double d = 0, dc = 0;
        for (size_t i = 0; i < hc[r].H.size(); ++i) d = std::max(d, std::abs(hc[r].H[i] - hg[r].H[i]));
        for (size_t i = 0; i < hc[r].col_sq.size(); ++i)
          dc = std::max(dc, std::abs(hc[r].col_sq[i] - hg[r].col_sq[i]) / std::max(hc[r].col_sq[i], 1e-30));
        EXPECT_LT(d / max_abs(hc[r].H), 1e-5) << name << " layer " << l << " input " << r;
        EXPECT_LT(dc, 1e-4) << name << " layer " << l << " input " << r;
      }
      cpu->advance(m, l, {});
      g->advance(m, l, {});
      gh->advance(m, l, {});
    }
  }
}

// --forward-dtype bf16: the GPU runner's Hessians (cuBLAS on BF16-rounded operands) against the CPU
// runner's with the same arithmetic (BF16-rounded operands, fp32 accumulation: oneDNN or its sgemm
// path), layer after layer. Each side rounds its own activations to BF16, so a rounding flip
// downstream moves an entry by 2^-8 of itself: 1e-3 relative. Against the fp32 CPU Hessians the
// distance must be larger (the products really ran in BF16).
TEST(GpuPrune, Bf16CalibrationHessiansMatchCpuBf16) {
  for (const char* name : {"qwen3_tiny", "qwen2_tiny", "llama_tiny"}) {
    const Model m = Model::load(std::string(SPENSE_FIXTURES) + "/hf/" + name);
    const int64_t S = 3, T = 24;
    const std::vector<float> acts = embedded_windows(m, S, T, 2);
    auto cpu16 = make_cpu_calibration_runner(false, MatmulDType::BF16);
    auto cpu32 = make_cpu_calibration_runner(false, MatmulDType::F32);
    auto g16 = cuda::make_gpu_calibration_runner(cuda::ActivationPlacement::DEVICE, MatmulDType::BF16);
    cpu16->reset(m, acts, S, T);
    cpu32->reset(m, acts, S, T);
    g16->reset(m, acts, S, T);
    double worst_same = 0, worst_f32 = 0;
    for (int64_t l = 0; l < m.num_layers(); ++l) {
      const auto hc = cpu16->hessians(m, l, {});
      const auto hf = cpu32->hessians(m, l, {});
      const auto hg = g16->hessians(m, l, {});
      ASSERT_EQ(hg.size(), 4u);
      for (size_t r = 0; r < 4; ++r) {
        ASSERT_EQ(hg[r].K, hc[r].K);
        double d = 0, df = 0;
        for (size_t i = 0; i < hc[r].H.size(); ++i) {
          d = std::max(d, std::abs(hc[r].H[i] - hg[r].H[i]));
          df = std::max(df, std::abs(hf[r].H[i] - hg[r].H[i]));
        }
        const double scale = max_abs(hc[r].H);
        EXPECT_LT(d / scale, 1e-3) << name << " layer " << l << " input " << r;
        worst_same = std::max(worst_same, d / scale);
        if (l > 0 || r > 0) worst_f32 = std::max(worst_f32, df / scale);  // layer 0's q/k/v input is the embedding
      }
      cpu16->advance(m, l, {});
      cpu32->advance(m, l, {});
      g16->advance(m, l, {});
    }
    std::printf("[%s] bf16 Hessians: GPU vs CPU bf16 %.2e, GPU bf16 vs CPU f32 %.2e (relative to max |H|)\n", name,
                worst_same, worst_f32);
    EXPECT_GT(worst_f32, 3 * worst_same) << name << ": BF16 Hessians as close to fp32 as to each other";
  }
}

struct PipelineRun {
  PipelineResult res;
  Model model;
};

PipelineRun run_pipeline(const std::string& dir, const std::vector<std::vector<int32_t>>& windows,
                         const PruneOptions& po, bool on_gpu) {
  PipelineRun r{{}, Model::load(dir)};
  PipelineOptions opts;
  opts.prune = po;
  std::unique_ptr<PruneCompute> compute;
  std::unique_ptr<CalibrationRunner> runner;
  if (on_gpu) {
    compute = cuda::make_gpu_prune_compute();
    runner = cuda::make_gpu_calibration_runner();
    opts.prune.compute = compute.get();
    opts.runner = runner.get();
  }
  r.res = prune_model(r.model, windows, opts);
  return r;
}

// Fraction of projection entries whose zero / non-zero status differs, and dense tiles equal.
void compare_runs(const PipelineRun& c, const PipelineRun& g, const std::string& label, double* mask_diff_frac,
                  int* tile_lists_differ) {
  int64_t diff = 0, total = 0;
  *tile_lists_differ = 0;
  for (int64_t l = 0; l < c.model.num_layers(); ++l)
    for (Proj p : kAllProjs) {
      const auto& wc = c.model.layer(l).proj(p).weight;
      const auto& wg = g.model.layer(l).proj(p).weight;
      for (size_t i = 0; i < wc.size(); ++i) diff += (wc[i] == 0.0f) != (wg[i] == 0.0f);
      total += int64_t(wc.size());
    }
  for (size_t i = 0; i < c.res.projections.size(); ++i)
    *tile_lists_differ += c.res.projections[i].report.dense_tiles != g.res.projections[i].report.dense_tiles;
  *mask_diff_frac = double(diff) / double(total);
  std::printf("[%s] mask entries differing: %lld of %lld; projections with different dense tiles: %d of %zu\n",
              label.c_str(), (long long)diff, (long long)total, *tile_lists_differ, c.res.projections.size());
}

TEST(GpuPrune, PipelineMakesTheSameChoicesOnTinyModels) {
  for (const char* name : {"qwen3_tiny", "qwen2_tiny", "llama_tiny"}) {
    const std::string dir = std::string(SPENSE_FIXTURES) + "/hf/" + name;
    const ModelConfig cfg = Model::load(dir).config();
    std::mt19937_64 rng(2);
    std::uniform_int_distribution<int32_t> tok(0, int32_t(cfg.vocab_size - 1));
    std::vector<std::vector<int32_t>> windows(4, std::vector<int32_t>(32));
    for (auto& w : windows)
      for (auto& t : w) t = tok(rng);
    for (SpenseAxis axis : {SpenseAxis::OUT, SpenseAxis::IN}) {
      PruneOptions po;
      po.method = PruneMethod::SPENSEGPT;
      po.axis = axis;
      po.dense_ratio = 0.25;
      po.tile = 16;
      const auto c = run_pipeline(dir, windows, po, false);
      const auto g = run_pipeline(dir, windows, po, true);
      double frac = 0;
      int tiles = 0;
      compare_runs(c, g, std::string(name) + " axis " + spense_axis_name(axis), &frac, &tiles);
      EXPECT_EQ(frac, 0.0) << name;
      EXPECT_EQ(tiles, 0) << name;
      for (size_t i = 0; i < c.res.projections.size(); ++i)
        EXPECT_NEAR(g.res.projections[i].report.error_rel, c.res.projections[i].report.error_rel,
                    1e-4 * c.res.projections[i].report.error_rel + 1e-12)
            << name << " " << c.res.projections[i].name;
    }
  }
}

std::vector<std::vector<int32_t>> read_windows(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::vector<int32_t>> out;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream is(line);
    std::vector<int32_t> w;
    int32_t id;
    while (is >> id) w.push_back(id);
    if (!w.empty()) out.push_back(std::move(w));
  }
  return out;
}

// Perplexity over whole windows: exp(mean NLL of every next token), fp64 log-sum-exp.
double perplexity(const Model& m, const std::vector<std::vector<int32_t>>& windows) {
  double nll = 0;
  int64_t n = 0;
  const int64_t V = m.vocab_size();
  for (const auto& w : windows) {
    const auto logits = m.forward(w);
    for (size_t t = 0; t + 1 < w.size(); ++t) {
      const float* z = logits.data() + int64_t(t) * V;
      double mx = z[0];
      for (int64_t v = 1; v < V; ++v) mx = std::max(mx, double(z[v]));
      double s = 0;
      for (int64_t v = 0; v < V; ++v) s += std::exp(double(z[v]) - mx);
      nll += mx + std::log(s) - double(z[w[t + 1]]);
      ++n;
    }
  }
  return std::exp(nll / double(n));
}

// Issue #8: the CPU and GPU paths agree in perplexity within 0.5% on the evaluation model.
// Windows: tests/fixtures/prune/eval_calib_ids.txt (16 x 512 tokens of the calibration split)
// and eval_ppl_ids.txt (8 x 512 of the held-out split), both written by `spense prune
// --save-calib` (see tests/fixtures/prune/README.md).
TEST(GpuPrune, EvalModelPerplexityAgreesWithCpu) {
  const std::string dir = std::string(SPENSE_SOURCE_DIR) + "/models/eval-qwen3";
  const auto calib = read_windows(std::string(SPENSE_FIXTURES) + "/prune/eval_calib_ids.txt");
  const auto eval = read_windows(std::string(SPENSE_FIXTURES) + "/prune/eval_ppl_ids.txt");
  ASSERT_EQ(calib.size(), 16u);
  ASSERT_EQ(eval.size(), 8u);
  PruneOptions po;  // the CLI defaults: spensegpt, d = 0.25, axis out, saliency, tile 64, fp64 OBS
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  const auto c = run_pipeline(dir, calib, po, false);
  const double cpu_s = std::chrono::duration<double>(Clock::now() - t0).count();
  t0 = Clock::now();
  const auto g = run_pipeline(dir, calib, po, true);
  const double gpu_s = std::chrono::duration<double>(Clock::now() - t0).count();
  double frac = 0;
  int tiles = 0;
  compare_runs(c, g, "eval-qwen3", &frac, &tiles);
  const double ppl_c = perplexity(c.model, eval), ppl_g = perplexity(g.model, eval);
  const double ppl_dense = perplexity(Model::load(dir), eval);
  std::printf("[eval-qwen3] ppl dense %.4f, pruned on cpu %.4f (%.1f s), on gpu %.4f (%.1f s): ratio %.6f\n",
              ppl_dense, ppl_c, cpu_s, ppl_g, gpu_s, ppl_g / ppl_c);
  EXPECT_LT(std::abs(ppl_g / ppl_c - 1.0), 0.005);
  EXPECT_LT(frac, 1e-3);
  EXPECT_GT(ppl_c, ppl_dense);  // pruning costs something: the comparison is not vacuous
}

}  // namespace
}  // namespace spense
