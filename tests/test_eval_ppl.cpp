// Perplexity and log-likelihood helpers against transformers: the window protocol on the
// llama_tiny fixture (ppl.safetensors, computed in Python by tools/make_fixture.py with
// transformers 5.17: non-overlapping windows of 64 tokens over 300 ids, tail dropped, NLL in
// float64 from fp32 logits) and per-token log-probabilities from the fixture's HF logits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "spense/error.h"
#include "spense/eval.h"
#include "spense/model.h"
#include "spense/progress.h"
#include "spense/safetensors.h"
#include "spense/tokenizer.h"

using namespace spense;

namespace {

const std::string kHf = std::string(SPENSE_FIXTURES) + "/hf";

// NLL sums over 63-token windows are ~400 nats; fp32 logits carry ~1e-6 relative error
// (sgemm summation order), so 1e-4 relative on NLL and ppl leaves ample margin.
constexpr double kRelTol = 1e-4;

struct Ref {
  std::unique_ptr<SafetensorsFile> f;
  explicit Ref(const std::string& path) : f(SafetensorsFile::open(path)) {}
  template <class T>
  std::vector<T> raw(const std::string& name, DType want) const {
    const TensorInfo* t = f->find(name);
    if (!t || t->dtype != want)
      throw std::runtime_error(f->path() + ": missing " + name + " (re-run tools/make_fixture.py)");
    std::vector<T> v(static_cast<size_t>(t->numel()));
    std::memcpy(v.data(), f->data(*t), v.size() * sizeof(T));
    return v;
  }
  std::vector<int32_t> ids(const std::string& name) const {
    auto v = raw<int64_t>(name, DType::I64);
    return std::vector<int32_t>(v.begin(), v.end());
  }
  std::vector<float> f32(const std::string& name) const { return raw<float>(name, DType::F32); }
  double f64(const std::string& name) const { return raw<double>(name, DType::F64).at(0); }
};

double rel(double a, double b) { return std::fabs(a - b) / std::fabs(b); }

TEST(Perplexity, MatchesTransformersWindowProtocol) {
  const Model m = Model::load(kHf + "/llama_tiny");
  const Ref ref(kHf + "/llama_tiny/ppl.safetensors");
  const auto ids = ref.ids("ids");
  const auto window_nll = ref.raw<double>("window_nll", DType::F64);
  const int64_t seqlen = ref.raw<int64_t>("seqlen", DType::I64).at(0);
  PplOptions o;
  o.seqlen = seqlen;
  std::vector<std::pair<int64_t, int64_t>> calls;
  o.progress = [&](int64_t d, int64_t t) { calls.emplace_back(d, t); };
  const PplResult r = perplexity(m, ids, o);
  EXPECT_EQ(r.windows, static_cast<int64_t>(window_nll.size()));
  EXPECT_EQ(r.predicted, ref.raw<int64_t>("predicted", DType::I64).at(0));
  EXPECT_EQ(r.tokens, static_cast<int64_t>(ids.size()));
  EXPECT_EQ(r.dropped, static_cast<int64_t>(ids.size()) - r.windows * seqlen);
  EXPECT_GT(r.dropped, 0);  // the fixture has a partial tail, which must not be scored
  EXPECT_LT(rel(r.ppl, ref.f64("ppl")), kRelTol) << r.ppl << " vs " << ref.f64("ppl");
  EXPECT_LT(rel(r.nll, ref.f64("nll")), kRelTol);
  ASSERT_EQ(r.window_nll.size(), window_nll.size());
  for (size_t w = 0; w < window_nll.size(); ++w) EXPECT_LT(rel(r.window_nll[w], window_nll[w]), kRelTol) << w;
  ASSERT_EQ(calls.size(), window_nll.size());
  EXPECT_EQ(calls.back(), std::make_pair(r.windows, r.windows));
  std::printf("  ppl %.6f (transformers %.6f), rel err %.2e\n", r.ppl, ref.f64("ppl"), rel(r.ppl, ref.f64("ppl")));
}

TEST(Perplexity, MaxWindowsScoresOnlyTheFirstWindows) {
  const Model m = Model::load(kHf + "/llama_tiny");
  const Ref ref(kHf + "/llama_tiny/ppl.safetensors");
  const auto window_nll = ref.raw<double>("window_nll", DType::F64);
  PplOptions o;
  o.seqlen = 64;
  o.max_windows = 2;
  const PplResult r = perplexity(m, ref.ids("ids"), o);
  EXPECT_EQ(r.windows, 2);
  EXPECT_EQ(r.predicted, 2 * 63);
  EXPECT_LT(rel(r.nll, window_nll[0] + window_nll[1]), kRelTol);
  EXPECT_LT(rel(r.ppl, std::exp((window_nll[0] + window_nll[1]) / 126.0)), kRelTol);
}

TEST(Perplexity, RefusesBadInputs) {
  const Model m = Model::load(kHf + "/llama_tiny");  // max_position_embeddings 256
  std::vector<int32_t> ids(300, 5);
  PplOptions o;
  o.seqlen = 512;
  EXPECT_THROW(perplexity(m, ids, o), Error);  // beyond the model's context
  o.seqlen = 1;
  EXPECT_THROW(perplexity(m, ids, o), Error);
  o.seqlen = 64;
  EXPECT_THROW(perplexity(m, std::vector<int32_t>(63, 5), o), Error);  // not one full window
  try {
    perplexity(m, std::vector<int32_t>(10, 5), o);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fewer than one window"), std::string::npos) << e.what();
  }
}

TEST(LogLikelihood, TokenLogprobsMatchTransformersLogits) {
  for (const char* name : {"qwen3_tiny", "llama3_rope"}) {
    const Model m = Model::load(kHf + "/" + name);
    const Ref ref(kHf + "/" + name + "/ref.safetensors");
    const auto ids = ref.ids("input_ids.2");
    const auto logits = ref.f32("logits.2");
    const int64_t T = static_cast<int64_t>(ids.size()), V = m.vocab_size();
    std::vector<uint8_t> greedy;
    const auto lp = token_logprobs(m, ids.data(), T, 1, &greedy);
    ASSERT_EQ(lp.size(), static_cast<size_t>(T - 1));
    double nll_ref = 0;
    for (int64_t t = 0; t + 1 < T; ++t) {
      const double want = log_softmax_at(logits.data() + t * V, V, ids[t + 1]);
      nll_ref -= want;
      EXPECT_NEAR(lp[t], want, 1e-4 * std::max(1.0, std::fabs(want))) << name << " t=" << t;
      const float* row = logits.data() + t * V;
      EXPECT_EQ(greedy[t] != 0, std::max_element(row, row + V) - row == ids[t + 1]);
    }
    EXPECT_LT(rel(sequence_nll(m, ids), nll_ref), kRelTol);
    // continuation scoring = the same log-probs restricted to the continuation
    const std::vector<int32_t> ctx(ids.begin(), ids.begin() + 20), cont(ids.begin() + 20, ids.end());
    const ContinuationScore s = score_continuation(m, ctx, cont);
    double want = 0;
    for (int64_t t = 19; t + 1 < T; ++t) want += log_softmax_at(logits.data() + t * V, V, ids[t + 1]);
    EXPECT_EQ(s.tokens, static_cast<int64_t>(cont.size()));
    EXPECT_LT(rel(s.logprob, want), kRelTol);
  }
}

TEST(LogLikelihood, GreedyContinuationIsDetected) {
  // The argmax of the HF logits at the last context position is a greedy continuation.
  const Model m = Model::load(kHf + "/qwen2_tiny");
  const Ref ref(kHf + "/qwen2_tiny/ref.safetensors");
  const auto ids = ref.ids("input_ids.1");
  const auto logits = ref.f32("logits.1");
  const int64_t V = m.vocab_size(), T = static_cast<int64_t>(ids.size());
  const float* last = logits.data() + (T - 1) * V;
  const int32_t best = static_cast<int32_t>(std::max_element(last, last + V) - last);
  EXPECT_TRUE(score_continuation(m, ids, {best}).greedy);
  EXPECT_FALSE(score_continuation(m, ids, {(best + 1) % static_cast<int32_t>(V)}).greedy);
  EXPECT_THROW(score_continuation(m, {}, {1}), Error);
}

TEST(Perplexity, TextPathTokenizesWholeText) {
  const std::string tok_path = std::string(SPENSE_REFS) + "/qwen3/tokenizer.json";
  const std::string brown = std::string(SPENSE_REFS) + "/brown/ca01";
  if (!std::filesystem::exists(tok_path) || !std::filesystem::exists(brown))
    GTEST_SKIP() << "reference data missing (scripts/fetch_refs.sh)";
  const Tokenizer tok = Tokenizer::load(tok_path);
  ModelConfig c;
  c.arch = Arch::QWEN3;
  c.model_type = "qwen3";
  c.hidden_size = 32;
  c.num_layers = 1;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 16;
  c.intermediate_size = 32;
  c.vocab_size = 151936;
  c.max_position_embeddings = 1024;
  c.qk_norm = true;
  c.tie_word_embeddings = true;
  const Model m = Model::random(c, 1);
  std::ifstream f(brown);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  PplOptions o;
  o.seqlen = 64;
  o.max_windows = 2;
  const PplResult a = perplexity_text(m, tok, text, o);
  const PplResult b = perplexity(m, tok.encode(text), o);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.nll, b.nll);
  // a near-uniform random model: ppl within a factor of a few of the vocabulary size
  EXPECT_GT(a.ppl, 151936 / 4.0);
  EXPECT_LT(a.ppl, 151936 * 4.0);
}

TEST(ProgressBar, FormatShowsCountsRateAndEta) {
  const std::string s = ProgressBar::format("ppl", 50, 200, 10.0, "tok");
  EXPECT_NE(s.find("50/200"), std::string::npos) << s;
  EXPECT_NE(s.find("5.0 tok/s"), std::string::npos) << s;
  EXPECT_NE(s.find("ETA 00:30"), std::string::npos) << s;
  EXPECT_NE(s.find("[######.................."), std::string::npos) << s;
  // not a terminal (ctest pipes stderr): silent unless forced
  ProgressBar quiet("x", 10);
  if (!isatty(fileno(stderr))) {
    EXPECT_FALSE(quiet.enabled());
  }
  ProgressBar forced("x", 10, "it", true);
  EXPECT_TRUE(forced.enabled());
}

}  // namespace
