// Whole-model pruning pipeline (spense/pipeline.h) on a small random model, and the
// zero-shot multiple-choice scorer (spense/zeroshot.h).
#include <gtest/gtest.h>

#include "test_helpers.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

#include "spense/dtype.h"
#include "spense/error.h"
#include "spense/eval.h"
#include "spense/pipeline.h"
#include "spense/tokenizer.h"
#include "spense/zeroshot.h"

using namespace spense;

namespace {

ModelConfig tiny_config(int64_t vocab = 256) {
  ModelConfig c;
  c.arch = Arch::QWEN3;
  c.model_type = "qwen3";
  c.qk_norm = true;
  c.tie_word_embeddings = true;
  c.hidden_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.intermediate_size = 96;
  c.vocab_size = vocab;
  c.max_position_embeddings = 256;
  c.rope.theta = 1e6;
  return c;
}

std::vector<std::vector<int32_t>> random_windows(int64_t n, int64_t T, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(vocab - 1));
  std::vector<std::vector<int32_t>> w(static_cast<size_t>(n), std::vector<int32_t>(static_cast<size_t>(T)));
  for (auto& v : w)
    for (auto& x : v) x = d(rng);
  return w;
}

using test_util::magnitude24;

float bf16_round(float x) { return bf16_to_f32(f32_to_bf16(x)); }

// Every group of 4 along K has at most 2 non-zeros, outside the dense tiles.
void expect_24_outside(const Linear& lin, const SpenseLayout& lay, const std::string& name,
                       bool require_sparse = true) {
  std::vector<bool> dense_row(static_cast<size_t>(lin.out), false), dense_col(static_cast<size_t>(lin.in), false);
  for (int64_t t : lay.dense_tiles)
    for (int64_t i = t * lay.g; i < (t + 1) * lay.g; ++i)
      (lay.axis == SpenseAxis::OUT ? dense_row : dense_col)[size_t(i)] = true;
  int64_t sparse_groups = 0;
  for (int64_t r = 0; r < lin.out; ++r) {
    if (dense_row[size_t(r)]) continue;
    for (int64_t g = 0; g < lin.in; g += 4) {
      if (dense_col[size_t(g)]) continue;
      int nz = 0;
      for (int k = 0; k < 4; ++k) nz += lin.weight[size_t(r * lin.in + g + k)] != 0.0f;
      ASSERT_LE(nz, 2) << name << " row " << r << " group " << g / 4;
      ++sparse_groups;
    }
  }
  if (require_sparse) {
    EXPECT_GT(sparse_groups, 0) << name;
  }
}

TEST(CalibrationWindows, SeededAndChecked) {
  std::vector<int32_t> ids(1000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  const auto a = sample_calibration_windows(ids, 8, 100, 7), b = sample_calibration_windows(ids, 8, 100, 7);
  const auto c = sample_calibration_windows(ids, 8, 100, 8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  ASSERT_EQ(a.size(), 8u);
  for (const auto& w : a) {
    ASSERT_EQ(w.size(), 100u);
    for (size_t i = 1; i < w.size(); ++i) EXPECT_EQ(w[i], w[i - 1] + 1);  // contiguous windows
  }
  EXPECT_EQ(sample_calibration_windows(ids, 1, 1000, 0)[0], ids);
  EXPECT_THROW(sample_calibration_windows(ids, 1, 1001, 0), Error);
  EXPECT_THROW(sample_calibration_windows(ids, 0, 10, 0), Error);
  EXPECT_THROW(sample_calibration_windows(ids, 1, 1, 0), Error);
}

TEST(PrunePipeline, MagnitudeMatchesIndependentComputation) {
  for (DType dt : {DType::F32, DType::BF16}) {
    const ModelConfig cfg = tiny_config();
    Model m = Model::random(cfg, 1);
    const Model orig = Model::random(cfg, 1);
    PipelineOptions o;
    o.prune.method = PruneMethod::MAGNITUDE;
    o.prune.tile = 64;  // no dense tiles: any tile works
    o.dtypes.assign(size_t(cfg.num_layers * 7), dt);
    const auto res = prune_model(m, random_windows(2, 16, cfg.vocab_size, 3), o);
    ASSERT_EQ(res.projections.size(), size_t(cfg.num_layers * 7));
    for (int64_t l = 0; l < cfg.num_layers; ++l)
      for (Proj p : kAllProjs) {
        std::vector<float> w = orig.layer(l).proj(p).weight;
        std::vector<float> expect = magnitude24(w);
        if (dt == DType::BF16)
          for (auto& x : expect) x = bf16_round(x);
        ASSERT_EQ(m.layer(l).proj(p).weight, expect) << "layer " << l << " " << proj_name(p);
      }
  }
}

TEST(PrunePipeline, SpenseGptIsTwoFourOutsideDenseTilesAndPacksExactly) {
  // Axis out, in, and mixed (mixed_axis: in for o/down, out for the rest; prune.axis ignored).
  for (int mode = 0; mode < 3; ++mode) {
    const SpenseAxis axis = mode == 1 ? SpenseAxis::IN : SpenseAxis::OUT;
    const ModelConfig cfg = tiny_config();
    Model m = Model::random(cfg, 2);
    PipelineOptions o;
    o.prune.method = PruneMethod::SPENSEGPT;
    o.prune.axis = mode == 2 ? SpenseAxis::IN : axis;
    o.mixed_axis = mode == 2;
    o.prune.dense_ratio = 0.25;
    o.prune.tile = 16;
    o.dtypes.assign(size_t(cfg.num_layers * 7), DType::BF16);
    const auto res = prune_model(m, random_windows(4, 32, cfg.vocab_size, 5), o);
    for (const auto& pp : res.projections) {
      ASSERT_TRUE(pp.packed) << pp.name;
      const Linear& lin = m.layer(pp.layer).proj(pp.proj);
      const bool in = mode == 2 ? (pp.proj == Proj::O || pp.proj == Proj::DOWN) : axis == SpenseAxis::IN;
      EXPECT_EQ(pp.tensor.layout.axis, in ? SpenseAxis::IN : SpenseAxis::OUT) << pp.name << " mode " << mode;
      EXPECT_FALSE(pp.tensor.layout.dense_tiles.empty()) << pp.name;
      expect_24_outside(lin, pp.tensor.layout, pp.name);
      EXPECT_EQ(spense_unpack_f32(pp.tensor), lin.weight) << pp.name;
      EXPECT_GT(pp.report.error, 0.0);
      EXPECT_LT(pp.report.error_rel, 1.0);
    }
  }
}

TEST(PrunePipeline, DenseAndFullDenseRatioLeaveWeightsUnchanged) {
  const ModelConfig cfg = tiny_config();
  const Model orig = Model::random(cfg, 3);
  struct Case {
    PruneMethod method;
    SpenseAxis axis;
  };
  for (Case c : {Case{PruneMethod::DENSE, SpenseAxis::OUT}, Case{PruneMethod::SPENSEGPT, SpenseAxis::OUT},
                 Case{PruneMethod::SPENSEGPT, SpenseAxis::IN}}) {
    Model m = Model::random(cfg, 3);
    PipelineOptions o;
    o.prune.method = c.method;
    o.prune.axis = c.axis;
    o.prune.dense_ratio = 1.0;
    o.prune.tile = 16;
    prune_model(m, random_windows(2, 16, cfg.vocab_size, 1), o);
    for (int64_t l = 0; l < cfg.num_layers; ++l)
      for (Proj p : kAllProjs)
        EXPECT_EQ(m.layer(l).proj(p).weight, orig.layer(l).proj(p).weight)
            << prune_method_name(c.method) << " " << spense_axis_name(c.axis) << " " << l << " " << proj_name(p);
  }
}

TEST(PrunePipeline, SkipRegexKeepsMatchesDense) {
  const ModelConfig cfg = tiny_config();
  const Model orig = Model::random(cfg, 4);
  Model m = Model::random(cfg, 4);
  PipelineOptions o;
  o.prune.method = PruneMethod::SPARSEGPT;
  o.skip_regex = "layers\\.1\\.|down_proj";
  const auto res = prune_model(m, random_windows(2, 16, cfg.vocab_size, 1), o);
  int skipped = 0;
  for (const auto& pp : res.projections) {
    const bool expect_skip = pp.layer == 1 || pp.proj == Proj::DOWN;
    EXPECT_EQ(pp.skipped, expect_skip) << pp.name;
    const bool same = m.layer(pp.layer).proj(pp.proj).weight == orig.layer(pp.layer).proj(pp.proj).weight;
    EXPECT_EQ(same, expect_skip) << pp.name;
    skipped += pp.skipped;
  }
  EXPECT_EQ(skipped, 8);
  o.skip_regex = "(";
  EXPECT_THROW(prune_model(m, random_windows(1, 8, cfg.vocab_size, 1), o), Error);
}

TEST(PrunePipeline, TileNotDividingIsAnError) {
  const ModelConfig cfg = tiny_config();
  Model m = Model::random(cfg, 5);
  PipelineOptions o;
  o.prune.method = PruneMethod::SPENSEGPT;
  o.prune.tile = 64;  // k_proj has 32 output rows
  EXPECT_THROW(prune_model(m, random_windows(1, 8, cfg.vocab_size, 1), o), Error);
}

TEST(PrunePipeline, SequentialInputsComeFromThePrunedBlock) {
  // Pruning layer 1 must see the outputs of the pruned layer 0: with layer 0 skipped, layer
  // 1's result differs from a run where layer 0 is pruned.
  const ModelConfig cfg = tiny_config();
  const auto win = random_windows(2, 16, cfg.vocab_size, 9);
  Model a = Model::random(cfg, 6), b = Model::random(cfg, 6);
  PipelineOptions o;
  o.prune.method = PruneMethod::SPARSEGPT;
  prune_model(a, win, o);
  o.skip_regex = "layers\\.0\\.";
  prune_model(b, win, o);
  EXPECT_NE(a.layer(1).q.weight, b.layer(1).q.weight);
}

// ---- zero-shot multiple choice ----

TEST(ZeroShot, ParsesAndRejects) {
  const auto items = parse_mc_items(
      "{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"label\": 1}\n\n"
      "{\"context\": \"x\", \"choices\": [\"y\"], \"label\": 0, \"greedy\": true, \"task\": \"t2\"}\n",
      "f.jsonl", "deft");
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].task, "deft");
  EXPECT_EQ(items[0].label, 1);
  EXPECT_EQ(items[0].line, 1);
  EXPECT_EQ(items[1].task, "t2");
  EXPECT_TRUE(items[1].greedy);
  EXPECT_EQ(items[1].line, 3);
  for (const char* bad : {"{", "[1]", "{\"choices\": [\"a\"], \"label\": 0}",
                          "{\"context\": \"a\", \"choices\": [], \"label\": 0}",
                          "{\"context\": \"a\", \"choices\": [\"b\"], \"label\": 1}",
                          "{\"context\": \"a\", \"choices\": [\"\"], \"label\": 0}",
                          "{\"context\": \"a\", \"choices\": [\"b\"], \"label\": \"0\"}"}) {
    try {
      parse_mc_items(std::string("\n") + bad + "\n", "f.jsonl", "t");
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("f.jsonl:2:"), std::string::npos) << e.what();
    }
  }
}

TEST(ZeroShot, MatchesDirectScoring) {
  const std::string tok_path = std::string(SPENSE_REFS) + "/qwen3/tokenizer.json";
  if (!std::filesystem::exists(tok_path)) GTEST_SKIP() << "reference tokenizer missing (scripts/fetch_refs.sh)";
  const Tokenizer tok = Tokenizer::load(tok_path);
  const Model m = Model::random(tiny_config(tok.vocab_size()), 11);
  const auto items = parse_mc_items(
      "{\"context\": \"The cat sat on the\", \"choices\": [\" mat\", \" dog house\", \" roof\"], \"label\": 2}\n"
      "{\"context\": \"One two three\", \"choices\": [\" four\", \" five six seven\"], \"label\": 0}\n"
      "{\"context\": \"Hello\", \"choices\": [\" world\"], \"label\": 0, \"greedy\": true}\n",
      "t.jsonl", "t");
  std::vector<McItemResult> res;
  for (const auto& it : items) {
    const McItemResult r = score_mc_item(m, tok, it);
    const auto ctx = tok.encode(it.context);
    double best = -1e300, best_norm = -1e300;
    int64_t pred = -1, pred_norm = -1;
    for (size_t c = 0; c < it.choices.size(); ++c) {
      const auto full = tok.encode(it.context + it.choices[c]);
      ASSERT_TRUE(std::equal(ctx.begin(), ctx.end(), full.begin()));  // these contexts do not merge
      const std::vector<int32_t> cont(full.begin() + ctx.size(), full.end());
      const ContinuationScore s = score_continuation(m, ctx, cont);
      EXPECT_DOUBLE_EQ(r.logprob[c], s.logprob);
      EXPECT_EQ(r.tokens[c], s.tokens);
      EXPECT_EQ(r.greedy[c] != 0, s.greedy);
      if (s.logprob > best) best = s.logprob, pred = int64_t(c);
      const double n = s.logprob / double(it.choices[c].size());
      if (n > best_norm) best_norm = n, pred_norm = int64_t(c);
    }
    EXPECT_EQ(r.pred, pred);
    EXPECT_EQ(r.pred_norm, pred_norm);
    if (it.greedy) {
      EXPECT_EQ(r.correct, r.greedy[size_t(it.label)] != 0);
    } else {
      EXPECT_EQ(r.correct, pred == it.label);
      EXPECT_EQ(r.correct_norm, pred_norm == it.label);
    }
    res.push_back(r);
  }
  const auto agg = aggregate_mc(items, res);
  ASSERT_EQ(agg.size(), 1u);
  EXPECT_EQ(agg[0].n, 3);
  double hits = 0;
  for (const auto& r : res) hits += r.correct;
  EXPECT_DOUBLE_EQ(agg[0].acc, hits / 3);
}

}  // namespace

namespace {

TEST(PrunePipeline, GlobalBudgetSpendsTheSameDenseElements) {
  for (DenseStrategy st : {DenseStrategy::SALIENCY, DenseStrategy::ERROR}) {
    const ModelConfig cfg = tiny_config();
    Model m = Model::random(cfg, 12);
    PipelineOptions o;
    o.prune.method = PruneMethod::SPENSEGPT;
    o.prune.strategy = st;
    o.prune.dense_ratio = 0.25;
    o.prune.tile = 16;
    o.global_budget = true;
    const auto res = prune_model(m, random_windows(4, 32, cfg.vocab_size, 13), o);
    double dense_elems = 0, total = 0;
    for (const auto& pp : res.projections) {
      const Linear& lin = m.layer(pp.layer).proj(pp.proj);
      total += double(lin.out * lin.in);
      const int64_t per_tile = 16 * lin.in;  // axis OUT
      dense_elems += double(pp.tensor.layout.dense_tiles.size() * per_tile);
      expect_24_outside(lin, pp.tensor.layout, pp.name, false);  // a projection may be all dense
      EXPECT_EQ(spense_unpack_f32(pp.tensor), lin.weight);
    }
    EXPECT_NEAR(dense_elems / total, 0.25, 16.0 * 96 / total);
  }
}

TEST(PrunePipeline, StreamingModelPrunesLikeAResidentOne) {
  // A streaming model (layers read one at a time from their source, the next one in the
  // background) must give the resident model's result exactly, hold only the current layer
  // at its callback (the next one is still in the reader's hands), and hand every pruned
  // layer to the callback.
  ModelConfig cfg = tiny_config();
  cfg.num_layers = 4;
  for (bool global : {false, true}) {
    SCOPED_TRACE(global ? "global budget" : "uniform budget");
    PipelineOptions o;
    o.prune.method = PruneMethod::SPENSEGPT;
    o.prune.dense_ratio = 0.25;
    o.prune.tile = 16;
    o.global_budget = global;
    const auto windows = random_windows(3, 24, cfg.vocab_size, 31);
    Model resident = Model::random(cfg, 30);
    const auto ra = prune_model(resident, windows, o);

    Model streamed = Model::random(cfg, 30, /*stream_layers=*/true);
    std::vector<LayerWeights> seen;
    const auto rb = prune_model(streamed, windows, o, [&](const Model& m, int64_t l, PrunedProjection* projs) {
      for (int64_t j = 0; j < m.num_layers(); ++j) {
        EXPECT_EQ(m.layer_resident(j), j == l) << "layer " << j << " at the callback of " << l;
      }
      EXPECT_EQ(projs[0].layer, l);
      EXPECT_EQ(projs[6].proj, Proj::DOWN);
      seen.push_back(m.layer(l));
      projs[3].tensor = SpenseTensor{};  // the callback may take the packed tensors
    });
    ASSERT_EQ(seen.size(), size_t(cfg.num_layers));
    for (int64_t l = 0; l < cfg.num_layers; ++l) {
      EXPECT_FALSE(streamed.layer_resident(l));
      for (Proj p : kAllProjs) {
        EXPECT_EQ(seen[size_t(l)].proj(p).weight, resident.layer(l).proj(p).weight) << proj_module(l, p);
      }
    }
    ASSERT_EQ(ra.projections.size(), rb.projections.size());
    for (size_t i = 0; i < ra.projections.size(); ++i) {
      EXPECT_EQ(ra.projections[i].report.dense_tiles, rb.projections[i].report.dense_tiles) << ra.projections[i].name;
      EXPECT_EQ(ra.projections[i].report.error, rb.projections[i].report.error) << ra.projections[i].name;
      if (ra.projections[i].proj != Proj::O) {
        EXPECT_EQ(spense_unpack_f32(ra.projections[i].tensor), spense_unpack_f32(rb.projections[i].tensor));
      }
    }
  }
}

}  // namespace
