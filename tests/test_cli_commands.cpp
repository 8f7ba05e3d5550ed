// Happy paths of the `spense` binary: inspect reports the checkpoint's real counts, logits
// reproduces transformers' logits (fixture), synth is deterministic and loadable, ppl runs
// end to end with the real Qwen3 tokenizer on Brown corpus text, and the ppl input checks
// that need a model with a tokenizer (seqlen beyond the context, text shorter than a window).
#include <gtest/gtest.h>

#include <cstdlib>

#include "test_helpers.h"
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "spense/safetensors.h"

namespace fs = std::filesystem;
using namespace spense;

namespace {

const std::string kHf = std::string(SPENSE_FIXTURES) + "/hf";
const std::string kTokenizer = std::string(SPENSE_REFS) + "/qwen3/tokenizer.json";
const std::string kBrown = std::string(SPENSE_REFS) + "/brown/ca01";

using Result = test_util::CliResult;
using test_util::quote;
using test_util::slurp;
using test_util::spit;

const test_util::ScratchDir g_tmp("cli_commands");
const fs::path& tmp_root() { return g_tmp.path; }
Result run(const std::string& args) { return test_util::run_cli(args, tmp_root()); }

std::vector<float> read_f32(const SafetensorsFile& f, const std::string& name, std::vector<int64_t>* shape) {
  const TensorInfo* t = f.find(name);
  if (!t) throw std::runtime_error(f.path() + ": no " + name);
  *shape = t->shape;
  std::vector<float> v(static_cast<size_t>(t->numel()));
  convert_to_f32(t->dtype, f.data(*t), v.data(), v.size());
  return v;
}

TEST(CliCommands, HelpExplainsEveryFlag) {
  for (const char* cmd : {"inspect", "ppl", "logits", "synth", "generate"}) {
    const Result r = run(std::string(cmd) + " --help");
    EXPECT_EQ(r.code, 0) << cmd;
    // CLI11 prints each option with its description on the same line; an option without
    // one would end its line right after the option's type.
    std::istringstream lines(r.out);
    std::string line;
    int options = 0;
    while (std::getline(lines, line)) {
      const size_t dash = line.find("--");
      if (dash == std::string::npos || line.find("--help") != std::string::npos) continue;
      ++options;
      const std::string rest = line.substr(dash);
      EXPECT_GT(rest.size(), 30u) << cmd << ": option without description: " << line;
    }
    EXPECT_GT(options, 0) << cmd;
  }
  const Result s = run("synth --help");
  for (const char* flag : {"--arch", "--hidden", "--layers", "--heads", "--kv-heads", "--head-dim", "--intermediate",
                           "--vocab", "--preset", "--tokenizer", "--seed", "--out"})
    EXPECT_NE(s.out.find(flag), std::string::npos) << flag;
}

TEST(CliCommands, InspectReportsCheckpointCounts) {
  for (const char* name : {"llama_tiny", "qwen3_tiny"}) {
    const std::string dir = kHf + "/" + name;
    const Checkpoint ck = Checkpoint::open(dir);
    int64_t total = 0;
    for (const auto& n : ck.names()) total += ck.get(n).info->numel();
    const Result r = run("inspect --json " + quote(dir));
    ASSERT_EQ(r.code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["parameters"]["total"].get<int64_t>(), total) << name;
    EXPECT_EQ(j["size_on_disk"].get<uint64_t>(), ck.size_on_disk());
    EXPECT_EQ(j["tensors"].get<size_t>(), ck.names().size());
    const Result t = run("inspect " + quote(dir));
    ASSERT_EQ(t.code, 0);
    for (const char* word : {"embedding", "attention", "mlp", "norms", "lm_head", "total", "on disk"})
      EXPECT_NE(t.out.find(word), std::string::npos) << word;
  }
  const auto j = nlohmann::json::parse(run("inspect --json " + quote(kHf + "/qwen3_tiny")).out);
  EXPECT_EQ(j["parameters"]["lm_head"].get<int64_t>(), 0);  // tied
  EXPECT_EQ(j["parameters"]["embedding"].get<int64_t>(), 320 * 64);
  EXPECT_EQ(j["parameters"]["norms"].get<int64_t>(), 2 * (64 + 64 + 32 + 32) + 64);
  EXPECT_EQ(j["architecture"], "Qwen3ForCausalLM");
}

TEST(CliCommands, LogitsMatchTransformersFixture) {
  for (const char* name : {"qwen2_tiny", "llama_tiny"}) {
    const std::string dir = kHf + "/" + name;
    const auto ref = SafetensorsFile::open(dir + "/ref.safetensors");
    const TensorInfo* ids_t = ref->find("input_ids.2");
    ASSERT_NE(ids_t, nullptr);
    std::vector<int64_t> ids(static_cast<size_t>(ids_t->numel()));
    std::memcpy(ids.data(), ref->data(*ids_t), ids.size() * sizeof(int64_t));
    std::string text;
    for (int64_t id : ids) text += std::to_string(id) + (text.size() % 7 ? " " : "\n");
    const fs::path ids_path = tmp_root() / (std::string(name) + "_ids.txt");
    spit(ids_path, text);
    const fs::path out = tmp_root() / (std::string(name) + "_logits.safetensors");
    const Result r = run("logits --model " + quote(dir) + " --ids " + quote(ids_path.string()) + " --out " +
                         quote(out.string()));
    ASSERT_EQ(r.code, 0) << r.err;
    const auto got_f = SafetensorsFile::open(out.string());
    std::vector<int64_t> gs, es;
    const auto got = read_f32(*got_f, "logits", &gs);
    const auto expect = read_f32(*ref, "logits.2", &es);
    ASSERT_EQ(gs, es);
    double md = 0, mr = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      md = std::max(md, std::fabs(static_cast<double>(got[i]) - expect[i]));
      mr = std::max(mr, std::fabs(static_cast<double>(expect[i])));
    }
    EXPECT_LT(md / mr, 1e-4) << name;  // fp32 both sides, see test_model_forward.cpp
    EXPECT_EQ(got_f->find("logits")->dtype, DType::F32);
  }
}

// The CPU path of `spense generate`: its greedy next token is the argmax of transformers'
// logits (fixture) at every prefix length tried; text mode echoes the prompt and continues it.
TEST(CliCommands, GenerateGreedyFollowsTransformersArgmax) {
  const std::string dir = kHf + "/qwen3_tiny";
  const auto ref = SafetensorsFile::open(dir + "/ref.safetensors");
  std::vector<int64_t> shape;
  const auto logits = read_f32(*ref, "logits.2", &shape);
  const TensorInfo* ids_t = ref->find("input_ids.2");
  ASSERT_NE(ids_t, nullptr);
  const auto* ids = reinterpret_cast<const int64_t*>(ref->data(*ids_t));
  const int64_t V = shape[1];
  for (int64_t k : {1, 5, 17, 33}) {
    std::string list;
    for (int64_t i = 0; i < k; ++i) list += (i ? "," : "") + std::to_string(ids[i]);
    const Result r = run("generate --model " + quote(dir) + " --ids " + list +
                         " --max-new-tokens 1 --device cpu --ignore-eos");
    ASSERT_EQ(r.code, 0) << r.err;
    const float* row = logits.data() + (k - 1) * V;
    const int64_t want = std::max_element(row, row + V) - row;
    EXPECT_NE(r.out.find("\nids: " + std::to_string(want) + "\n"), std::string::npos) << "prefix " << k << ": " << r.out;
  }
  const std::string prompt = "After the war, the people of the town";
  const Result t = run("generate --model " + quote(std::string(SPENSE_SOURCE_DIR) + "/models/eval-qwen3") +
                       " --prompt " + quote(prompt) + " --max-new-tokens 6 --device cpu --print-ids --ignore-eos");
  ASSERT_EQ(t.code, 0) << t.err;
  EXPECT_EQ(t.out.rfind(prompt, 0), 0u) << t.out;
  EXPECT_GT(t.out.find('\n'), prompt.size()) << "no continuation: " << t.out;
  const size_t ids_at = t.out.find("\nids:");
  ASSERT_NE(ids_at, std::string::npos);
  std::istringstream in(t.out.substr(ids_at + 6));
  int n = 0, x;
  while (in >> x) ++n;
  EXPECT_EQ(n, 6);
}

TEST(CliCommands, GenerateRefusesBadFlags) {
  const std::string dir = quote(kHf + "/qwen3_tiny");
  for (const char* args : {"--prompt hi --ids 1,2", "--ids 1,99999", "--ids 1 --temperature -1",
                                  "--ids 1 --top-p 0", "--ids 1 --dtype fp8"}) {
    const Result r = run("generate --model " + dir + " " + std::string(args) + " --device cpu");
    EXPECT_EQ(r.code, 2) << args << ": " << r.err;
    EXPECT_NE(r.err.find("error"), std::string::npos) << args;
  }
  const Result m = run("generate --model " + quote((tmp_root() / "no_model").string()) + " --ids 1 --device cpu");
  EXPECT_EQ(m.code, 2);
  EXPECT_NE(m.err.find("no_model"), std::string::npos) << m.err;
}

// --version names the BLAS kernels; on a CPU with AVX2 + FMA they are never OpenBLAS's generic
// ones (spense restarts itself with OPENBLAS_CORETYPE set when the library picked them: ops.h).
TEST(CliCommands, VersionNamesTheBlasKernels) {
  const Result r = run("--version");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("OpenBLAS"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("kernels "), std::string::npos) << r.out;
  if (!std::getenv("OPENBLAS_CORETYPE") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    EXPECT_EQ(r.out.find("kernels Prescott"), std::string::npos) << r.out;
  }
}

// bench-prune (CUDA builds; --device cpu runs anywhere): the per-block table, the default seed
// accepted, bad flags refused with exit 2.
TEST(CliCommands, BenchPruneRunsOnTheCpu) {
  if (run("--help").out.find("bench-prune") == std::string::npos) GTEST_SKIP() << "built without CUDA";
  const Result r = run("bench-prune --synthetic tiny --layers 2 --nsamples 2 --seqlen 16 --tile 16 --device cpu --seed 0");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("extrapolated to 2 blocks"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("prune_layer: inverse"), std::string::npos) << r.out;
  for (const std::string bad : {"--layers 3", "--seed -1", "--device tpu", "--method foo", "--bogus 1"}) {
    std::string args = "bench-prune --synthetic tiny --nsamples 2 --seqlen 16 --tile 16 --device cpu ";
    args += bad;
    const Result b = run(args);
    EXPECT_EQ(b.code, 2) << bad << "\n" << b.err;
    EXPECT_NE(b.err.find("bench-prune"), std::string::npos) << bad << "\n" << b.err;
  }
}

// bench-decode (CUDA builds) checks its flags before it touches a GPU, so this runs anywhere:
// --help lists every flag, bad values exit 2 with a message naming the flag.
TEST(CliCommands, BenchDecodeRefusesBadFlagsBeforeTheGpu) {
  if (run("--help").out.find("bench-decode") == std::string::npos) GTEST_SKIP() << "built without CUDA";
  const Result h = run("bench-decode --help");
  EXPECT_EQ(h.code, 0) << h.err;
  for (const char* flag : {"--kv-cache", "--kv-chunk", "--axis out|in|mixed", "--hybrid-streams", "--small-m-kernel",
                           "--profile", "--e4m3-tokens", "--no-e4m3-tokens"})
    EXPECT_NE(h.out.find(flag), std::string::npos) << flag << "\n" << h.out;
  struct Case { std::string args, expect; };
  for (const Case& c : {Case{"--kv-cache int4", "--kv-cache takes bf16 or fp8"},
                        Case{"--axis diagonal", "--axis must be out, in or mixed"},
                        Case{"--hybrid-streams 3", "--hybrid-streams takes 1 or 2"},
                        Case{"--kv-chunk 0", "--kv-chunk must be a positive"},
                        Case{"--batch 0", "--batch needs positive"}, Case{"--bogus 1", "unknown flag '--bogus'"},
                        // both token flags parse (the run then stops at the bad cache type)
                        Case{"--e4m3-tokens --no-e4m3-tokens --kv-cache int4", "--kv-cache takes bf16 or fp8"}}) {
    const Result b = run("bench-decode --synthetic qwen3-8b " + c.args);
    EXPECT_EQ(b.code, 2) << c.args << "\n" << b.err;
    EXPECT_NE(b.err.find(c.expect), std::string::npos) << c.args << "\n" << b.err;
  }
}

// bench-prune --model streams a checkpoint's layers from disk; --layers cuts the depth and
// the extrapolation uses the checkpoint's own layer count.
TEST(CliCommands, BenchPruneStreamsACheckpoint) {
  if (run("--help").out.find("bench-prune") == std::string::npos) GTEST_SKIP() << "built without CUDA";
  const std::string m = quote(kHf + "/qwen3_tiny");  // 2 layers
  const Result r = run("bench-prune --model " + m + " --layers 1 --nsamples 2 --seqlen 16 --tile 16 --device cpu");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("for 1 blocks"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("extrapolated to 2 blocks"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("qwen3_tiny shapes"), std::string::npos) << r.err;
  const Result both = run("bench-prune --model " + m + " --synthetic tiny --device cpu");
  EXPECT_EQ(both.code, 2);
  EXPECT_NE(both.err.find("not both"), std::string::npos) << both.err;
  const Result missing = run("bench-prune --model /nonexistent/dir --device cpu");
  EXPECT_EQ(missing.code, 2);
  EXPECT_NE(missing.err.find("/nonexistent/dir"), std::string::npos) << missing.err;
  const Result deep = run("bench-prune --model " + m + " --layers 3 --device cpu");
  EXPECT_EQ(deep.code, 2);
  EXPECT_NE(deep.err.find("exceeds"), std::string::npos) << deep.err;
}

TEST(CliCommands, SynthIsDeterministicAndLoadable) {
  const fs::path a = tmp_root() / "synth_a", b = tmp_root() / "synth_b", c = tmp_root() / "synth_c";
  const std::string flags = " --arch qwen2 --hidden 48 --layers 3 --heads 6 --kv-heads 2 --intermediate 80 --vocab 200";
  ASSERT_EQ(run("synth" + flags + " --seed 3 --out " + quote(a.string())).code, 0);
  ASSERT_EQ(run("synth" + flags + " --seed 3 --out " + quote(b.string())).code, 0);
  ASSERT_EQ(run("synth" + flags + " --seed 4 --out " + quote(c.string())).code, 0);
  EXPECT_EQ(slurp(a / "model.safetensors"), slurp(b / "model.safetensors"));
  EXPECT_NE(slurp(a / "model.safetensors"), slurp(c / "model.safetensors"));
  const Result r = run("inspect --json " + quote(a.string()));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["architecture"], "Qwen2ForCausalLM");
  EXPECT_EQ(j["head_dim"], 8);
  EXPECT_EQ(j["num_layers"], 3);
  EXPECT_EQ(j["qkv_bias"], true);
  EXPECT_EQ(j["config_dtype"], "BF16");
  const auto cfg = nlohmann::json::parse(slurp(a / "config.json"));
  EXPECT_EQ(cfg["dtype"], "bfloat16");  // transformers 5 spelling
  EXPECT_TRUE(cfg.contains("rope_parameters"));
  // and it runs
  spit(tmp_root() / "synth_ids.txt", "1 2 3 199");
  EXPECT_EQ(run("logits --model " + quote(a.string()) + " --ids " + quote((tmp_root() / "synth_ids.txt").string()) +
                " --out " + quote((tmp_root() / "synth_logits.safetensors").string()))
                .code,
            0);
}

// A tiny Qwen3 with the real tokenizer, made once for the ppl tests.
class PplCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    Result r;
    if (!test_util::make_tiny_qwen3(tmp_root(), "ppl_model", kTokenizer, kBrown, &model_, &text_, &r)) return;
    ASSERT_EQ(r.code, 0) << r.err;
  }
  void SetUp() override {
    if (model_.empty()) GTEST_SKIP() << "reference data missing (scripts/fetch_refs.sh)";
  }
  static std::string model_, text_;
};
std::string PplCli::model_, PplCli::text_;

TEST_F(PplCli, RunsEndToEnd) {
  const Result r = run("ppl --model " + quote(model_) + " --text " + quote(text_) + " --seqlen 64 --max-windows 3 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["windows"], 3);
  EXPECT_EQ(j["seqlen"], 64);
  EXPECT_EQ(j["predicted_tokens"], 3 * 63);
  EXPECT_GT(j["tokens"].get<int64_t>(), 1000);
  // weights ~ N(0, 0.02): close to uniform over the 151,680 ids
  EXPECT_GT(j["ppl"].get<double>(), 151680 / 3.0);
  EXPECT_LT(j["ppl"].get<double>(), 151680 * 3.0);
  EXPECT_NEAR(std::log(j["ppl"].get<double>()), j["nll_per_token"].get<double>(), 1e-9);
  EXPECT_TRUE(r.err.empty()) << "progress bar drawn on a pipe: " << r.err;
  const Result t = run("ppl --model " + quote(model_) + " --text " + quote(text_) + " --seqlen 32 --max-windows 1");
  ASSERT_EQ(t.code, 0) << t.err;
  EXPECT_NE(t.out.find("perplexity:"), std::string::npos);
  EXPECT_NE(t.out.find("tokens/s"), std::string::npos);
}

TEST_F(PplCli, SeqlenBeyondContextIsRefused) {
  const Result r = run("ppl --model " + quote(model_) + " --text " + quote(text_) + " --seqlen 256");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find(model_ + "/config.json"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("max_position_embeddings"), std::string::npos) << r.err;
}

TEST_F(PplCli, TextShorterThanOneWindowIsRefused) {
  const fs::path shortf = tmp_root() / "short.txt";
  spit(shortf, "Only a few words here.");
  const Result r = run("ppl --model " + quote(model_) + " --text " + quote(shortf.string()) + " --seqlen 64");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find(shortf.string()), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("fewer than one window"), std::string::npos) << r.err;
}

}  // namespace
