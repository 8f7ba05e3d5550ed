// The GPU engine's host-side plan (include/spense/engine_plan.h), CPU only: formats read from
// spense.json, forced formats, q|k|v and gate|up fusion with shifted tiles, refusal of bad
// spense.json files naming the file and layer, token sampling, and the model presets (checked
// against the published config.json values of the Qwen3 models).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <random>
#include <string>

#include "spense/engine_plan.h"
#include "spense/error.h"
#include "test_helpers.h"

using namespace spense;
namespace fs = std::filesystem;

namespace {

const test_util::ScratchDir g_tmp("engine_plan");

// hidden 64, 4 heads x 16 (q: 64 rows), 2 KV heads (k, v: 32 rows), intermediate 96.
ModelConfig tiny() {
  ModelConfig c = model_preset("qwen3", "tiny");
  c.intermediate_size = 96;
  return c;
}

std::string write_json(const std::string& name, const std::string& layers) {
  const fs::path d = g_tmp.path / name;
  fs::create_directories(d);
  test_util::spit(d / "spense.json", "{\"format\": \"spense\", \"version\": 1, \"layers\": {" + layers + "}}");
  return d.string();
}

std::string entry(const std::string& module, int64_t n, int64_t k, const char* axis, int64_t g,
                  const std::string& tiles) {
  return "\"model.layers.0." + module + "\": {\"shape\": [" + std::to_string(n) + "," + std::to_string(k) +
         "], \"axis\": \"" + axis + "\", \"g\": " + std::to_string(g) + ", \"dense_tiles\": [" + tiles + "]}";
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(EnginePlan, FormatNamesRoundTrip) {
  for (WeightFormat f : {WeightFormat::AUTO, WeightFormat::DENSE, WeightFormat::SPARSE24, WeightFormat::SPENSE}) {
    WeightFormat g;
    ASSERT_TRUE(weight_format_parse(weight_format_name(f), &g));
    EXPECT_EQ(g, f);
  }
  WeightFormat g;
  EXPECT_TRUE(weight_format_parse("2:4", &g));
  EXPECT_EQ(g, WeightFormat::SPARSE24);
  EXPECT_FALSE(weight_format_parse("sparse", &g));
}

TEST(EnginePlan, DenseModelFusesQkvAndGateUp) {
  const ModelConfig c = tiny();
  const auto plan = plan_model(c, {}, PlanOptions{});
  ASSERT_EQ(plan.size(), 2u);
  ASSERT_EQ(plan[0].qkv.size(), 1u);
  EXPECT_EQ(plan[0].qkv[0].n, 64 + 32 + 32);
  EXPECT_EQ(plan[0].qkv[0].k, 64);
  EXPECT_EQ(plan[0].qkv[0].format.kind, ProjFormat::DENSE);
  ASSERT_EQ(plan[0].gate_up.size(), 1u);
  EXPECT_EQ(plan[0].gate_up[0].n, 2 * 96);
  EXPECT_EQ(plan[1].down.name, "model.layers.1.mlp.down_proj");
  EXPECT_EQ(plan[1].down.n, 64);
  EXPECT_EQ(plan[1].down.k, 96);
  PlanOptions nofuse;
  nofuse.fuse = false;
  EXPECT_EQ(plan_model(c, {}, nofuse)[0].qkv.size(), 3u);
}

TEST(EnginePlan, AxisOutTilesAreShiftedByEachPartsRowOffset) {
  const ModelConfig c = tiny();
  const std::string dir = write_json("out", entry("self_attn.q_proj", 64, 64, "out", 16, "1") + "," +
                                                entry("self_attn.k_proj", 32, 64, "out", 16, "0") + "," +
                                                entry("self_attn.v_proj", 32, 64, "out", 16, "1"));
  const auto ck = read_spense_json(dir, c);
  ASSERT_EQ(ck.size(), 3u);
  const auto plan = plan_model(c, ck, PlanOptions{});
  ASSERT_EQ(plan[0].qkv.size(), 1u);
  const LinearPlan& q = plan[0].qkv[0];
  EXPECT_EQ(q.name, "model.layers.0.self_attn.qkv_proj");
  EXPECT_EQ(q.format.kind, ProjFormat::HYBRID);
  // q has 4 tiles of 16 rows, k 2, v 2: q's tile 1, k's tile 0 -> 4, v's tile 1 -> 4 + 2 + 1.
  EXPECT_EQ(q.format.layout.dense_tiles, (std::vector<int64_t>{1, 4, 7}));
  EXPECT_FALSE(q.format.prune_on_load);
  // Projections absent from spense.json stay dense; layer 1 is untouched.
  EXPECT_EQ(plan[0].o.format.kind, ProjFormat::DENSE);
  EXPECT_EQ(plan[1].qkv[0].format.kind, ProjFormat::DENSE);
}

TEST(EnginePlan, AxisInFusesOnlyIdenticalColumnTiles) {
  const ModelConfig c = tiny();
  const std::string same = write_json("in_same", entry("mlp.gate_proj", 96, 64, "in", 16, "2") + "," +
                                                     entry("mlp.up_proj", 96, 64, "in", 16, "2"));
  auto plan = plan_model(c, read_spense_json(same, c), PlanOptions{});
  ASSERT_EQ(plan[0].gate_up.size(), 1u);
  EXPECT_EQ(plan[0].gate_up[0].format.layout.dense_tiles, (std::vector<int64_t>{2}));
  const std::string diff = write_json("in_diff", entry("mlp.gate_proj", 96, 64, "in", 16, "2") + "," +
                                                     entry("mlp.up_proj", 96, 64, "in", 16, "3"));
  plan = plan_model(c, read_spense_json(diff, c), PlanOptions{});
  ASSERT_EQ(plan[0].gate_up.size(), 2u);
  EXPECT_EQ(plan[0].gate_up[1].name, "model.layers.0.mlp.up_proj");
  EXPECT_EQ(plan[0].gate_up[1].format.layout.dense_tiles, (std::vector<int64_t>{3}));
}

TEST(EnginePlan, DenseAndSparseExtremesAndMixedKinds) {
  const ModelConfig c = tiny();
  // All 4 tiles dense -> DENSE; no tiles -> 2:4; q dense + k 2:4 cannot fuse.
  const std::string dir = write_json("mixed", entry("self_attn.q_proj", 64, 64, "out", 16, "0,1,2,3") + "," +
                                                  entry("self_attn.k_proj", 32, 64, "out", 16, "") + "," +
                                                  "\"model.layers.0.self_attn.v_proj\": {\"dense\": true}");
  const auto ck = read_spense_json(dir, c);
  EXPECT_EQ(ck.at("model.layers.0.self_attn.q_proj").kind, ProjFormat::DENSE);
  EXPECT_EQ(ck.at("model.layers.0.self_attn.k_proj").kind, ProjFormat::SPARSE24);
  EXPECT_EQ(ck.at("model.layers.0.self_attn.v_proj").kind, ProjFormat::DENSE);
  const auto plan = plan_model(c, ck, PlanOptions{});
  ASSERT_EQ(plan[0].qkv.size(), 3u);
  EXPECT_EQ(plan[0].qkv[1].format.kind, ProjFormat::SPARSE24);
}

TEST(EnginePlan, ForcedFormats) {
  const ModelConfig c = tiny();
  const std::string dir = write_json("forced", entry("mlp.down_proj", 64, 96, "out", 16, "1") + "," +
                                                   entry("mlp.up_proj", 96, 64, "out", 16, ""));
  const auto ck = read_spense_json(dir, c);
  PlanOptions o;
  o.format = WeightFormat::SPARSE24;
  auto plan = plan_model(c, ck, o);
  EXPECT_EQ(plan[0].down.format.kind, ProjFormat::SPARSE24);
  EXPECT_TRUE(plan[0].down.format.prune_on_load);  // its dense tile is not 2:4
  o.format = WeightFormat::DENSE;
  EXPECT_EQ(plan_model(c, ck, o)[0].down.format.kind, ProjFormat::DENSE);
  // SPENSE without spense.json: round(d * tiles) tiles spread evenly, pruned on load.
  o.format = WeightFormat::SPENSE;
  o.dense_ratio = 0.5;
  o.tile = 16;
  plan = plan_model(c, {}, o);
  const LinearPlan& d = plan[0].down;
  EXPECT_EQ(d.format.kind, ProjFormat::HYBRID);
  EXPECT_EQ(d.format.layout.dense_tiles.size(), 2u);  // 4 tiles of 16 rows
  EXPECT_TRUE(d.format.prune_on_load);
  // ... and with spense.json, SPENSE takes the checkpoint's layout as is.
  plan = plan_model(c, ck, o);
  EXPECT_EQ(plan[0].down.format.layout.dense_tiles, (std::vector<int64_t>{1}));
  EXPECT_FALSE(plan[0].down.format.prune_on_load);
  o.dense_ratio = 1.5;
  EXPECT_NE(error_of([&] { plan_model(c, {}, o); }).find("outside [0, 1]"), std::string::npos);
}

TEST(EnginePlan, SpreadTilesAreEvenAndCounted) {
  EXPECT_EQ(spread_dense_tiles(8, 0.25), (std::vector<int64_t>{2, 6}));
  EXPECT_TRUE(spread_dense_tiles(8, 0.0).empty());
  EXPECT_EQ(spread_dense_tiles(4, 1.0), (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(EnginePlan, BadSpenseJsonNamesFileAndLayer) {
  const ModelConfig c = tiny();
  const std::string bad_json = (g_tmp.path / "badjson").string();
  fs::create_directories(bad_json);
  test_util::spit(fs::path(bad_json) / "spense.json", "{\"layers\": {");
  EXPECT_NE(error_of([&] { read_spense_json(bad_json, c); }).find("spense.json: not valid JSON"), std::string::npos);
  const std::string shape = write_json("shape", entry("mlp.down_proj", 64, 128, "out", 16, ""));
  const std::string e1 = error_of([&] { read_spense_json(shape, c); });
  EXPECT_NE(e1.find("model.layers.0.mlp.down_proj"), std::string::npos) << e1;
  EXPECT_NE(e1.find("does not match config.json"), std::string::npos) << e1;
  const std::string range = write_json("range", entry("mlp.down_proj", 64, 96, "out", 16, "4"));
  EXPECT_NE(error_of([&] { read_spense_json(range, c); }).find("down_proj"), std::string::npos);
  const std::string name = write_json("name", "\"model.layers.0.mlp.weird_proj\": {\"dense\": true}");
  EXPECT_NE(error_of([&] { read_spense_json(name, c); }).find("weird_proj"), std::string::npos);
  const std::string deep = write_json("deep", "\"model.layers.9.mlp.up_proj\": {\"dense\": true}");
  EXPECT_NE(error_of([&] { read_spense_json(deep, c); }).find("beyond the model's 2 layers"), std::string::npos);
  EXPECT_TRUE(read_spense_json((g_tmp.path / "nothing_here").string(), c).empty());
}

TEST(EnginePlan, SamplingGreedyTopPAndFrequencies) {
  std::mt19937_64 rng(42);
  const float tie[4] = {1.f, 3.f, 3.f, 0.f};
  EXPECT_EQ(sample_token(tie, 4, 0.f, 1.f, rng), 1);  // greedy: lowest index among equal maxima
  const float l[4] = {0.f, std::log(2.f), std::log(3.f), std::log(4.f)};  // softmax = 0.1, 0.2, 0.3, 0.4
  for (int i = 0; i < 50; ++i) EXPECT_EQ(sample_token(l, 4, 1.f, 0.3f, rng), 3);  // top-p 0.3 keeps only 0.4
  int counts[4] = {0, 0, 0, 0};
  const int n = 40000;
  for (int i = 0; i < n; ++i) ++counts[sample_token(l, 4, 1.f, 1.f, rng)];
  for (int j = 0; j < 4; ++j) {
    const double p = 0.1 * (j + 1), sd = std::sqrt(n * p * (1 - p));
    EXPECT_NEAR(counts[j], n * p, 4 * sd) << j;
  }
  // top-p 0.75: keeps 0.4 + 0.3 (= 0.7 < 0.75) + 0.2; renormalised 4/9, 3/9, 2/9; never token 0.
  int c2[4] = {0, 0, 0, 0};
  for (int i = 0; i < n; ++i) ++c2[sample_token(l, 4, 1.f, 0.75f, rng)];
  EXPECT_EQ(c2[0], 0);
  EXPECT_NEAR(c2[3], n * 4.0 / 9, 4 * std::sqrt(n * (4.0 / 9) * (5.0 / 9)));
  // Temperature 2 flattens: p ~ sqrt(0.1 j): counts of token 0 rise well above 10%.
  int c3 = 0;
  for (int i = 0; i < n; ++i) c3 += sample_token(l, 4, 2.f, 1.f, rng) == 0;
  const double p0 = std::sqrt(1.0) / (1 + std::sqrt(2.0) + std::sqrt(3.0) + 2);
  EXPECT_NEAR(c3, n * p0, 4 * std::sqrt(n * p0 * (1 - p0)));
}

TEST(EnginePlan, PresetsHaveThePublishedShapes) {
  // Qwen/Qwen3-32B and Qwen3-8B config.json: hidden, layers, heads, kv heads, head_dim, intermediate, vocab.
  const ModelConfig a = model_preset("qwen3", "qwen3-32b");
  EXPECT_EQ(std::vector<int64_t>({a.hidden_size, a.num_layers, a.num_heads, a.num_kv_heads, a.head_dim,
                                  a.intermediate_size, a.vocab_size}),
            std::vector<int64_t>({5120, 64, 64, 8, 128, 25600, 151936}));
  EXPECT_FALSE(a.tie_word_embeddings);
  const ModelConfig b = model_preset("qwen3", "qwen3-8b");
  EXPECT_EQ(std::vector<int64_t>({b.hidden_size, b.num_layers, b.num_heads, b.num_kv_heads, b.intermediate_size}),
            std::vector<int64_t>({4096, 36, 32, 8, 12288}));
  EXPECT_NE(error_of([] { model_preset("qwen3", "qwen9"); }).find("qwen3-32b"), std::string::npos);
  // Qwen3-32B's projections: qkv fused to 10240 x 5120, gate_up 51200 x 5120 (the bench-gemm shapes).
  const auto plan = plan_model(a, {}, PlanOptions{});
  EXPECT_EQ(plan[0].qkv[0].n, 10240);
  EXPECT_EQ(plan[0].gate_up[0].n, 51200);
  EXPECT_EQ(plan[0].down.k, 25600);
}

}  // namespace
