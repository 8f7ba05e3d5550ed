// spense generate: stream a continuation of a prompt. On the GPU (CUDA builds) through the
// decode engine (KV cache, CUDA graphs, any Spense format); on the CPU through the fp32
// reference model (no KV cache: every step recomputes the sequence, fine for small models
// and for reference outputs).
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "spense/config.h"
#include "spense/engine_plan.h"
#include "spense/error.h"
#include "spense/model.h"
#include "spense/tokenizer.h"
#ifdef SPENSE_HAVE_CUDA
#include "spense/cuda/engine.h"
#endif

namespace spense::cli {
namespace {

struct GenerateArgs {
  std::string model, prompt, ids, device = "auto", dtype = "bf16", format = "auto";
  int64_t max_new_tokens = 64, max_ctx = 0;
  float temperature = 0.f, top_p = 1.f;
  uint64_t seed = 0;
  bool ignore_eos = false, print_ids = false, no_graph = false;
  std::string kv_cache = "bf16";
};

// eos_token_id from generation_config.json (an int or a list), else config.json.
std::vector<int32_t> eos_ids(const std::string& dir) {
  for (const char* f : {"/generation_config.json", "/config.json"}) {
    std::ifstream in(dir + f);
    if (!in) continue;
    std::stringstream ss;
    ss << in.rdbuf();
    nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
    if (j.is_discarded() || !j.contains("eos_token_id")) continue;
    const auto& e = j["eos_token_id"];
    std::vector<int32_t> v;
    if (e.is_number_integer()) v.push_back(e.get<int32_t>());
    else if (e.is_array())
      for (const auto& x : e)
        if (x.is_number_integer()) v.push_back(x.get<int32_t>());
    if (!v.empty()) return v;
  }
  return {};
}

std::vector<int32_t> parse_id_list(const std::string& s, int64_t vocab) {
  std::vector<int32_t> v;
  std::stringstream ss(s);
  std::string t;
  while (std::getline(ss, t, ',')) {
    if (t.empty()) continue;
    char* end = nullptr;
    const long long x = std::strtoll(t.c_str(), &end, 10);
    if (*end || x < 0 || x >= vocab)
      throw Error("--ids: '" + t + "' is not a token id in [0, " + std::to_string(vocab) + ")");
    v.push_back(static_cast<int32_t>(x));
  }
  if (v.empty()) throw Error("--ids: no token ids");
  return v;
}

// Prints the text of the tokens so far as it becomes complete UTF-8 (a multi-byte character
// can span tokens; the tokenizer shows an incomplete one as U+FFFD until it is complete).
class TextStream {
 public:
  explicit TextStream(const Tokenizer* tok) : tok_(tok) {}
  void push(int32_t id) {
    ids_.push_back(id);
    if (!tok_) return;
    const std::string s = tok_->decode(ids_, true);
    if (s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0) return;
    if (s.size() > printed_) std::fwrite(s.data() + printed_, 1, s.size() - printed_, stdout);
    printed_ = s.size();
    std::fflush(stdout);
  }
  const std::vector<int32_t>& ids() const { return ids_; }

 private:
  const Tokenizer* tok_;
  std::vector<int32_t> ids_;
  size_t printed_ = 0;
};

void run_generate(const GenerateArgs& a) {
  const ModelConfig cfg = config_load(a.model);
  if (a.prompt.empty() == a.ids.empty()) throw Error("give exactly one of --prompt TEXT and --ids LIST");
  if (a.max_new_tokens < 0) throw Error("--max-new-tokens must be >= 0");
  if (a.temperature < 0 || a.top_p <= 0 || a.top_p > 1) throw Error("--temperature must be >= 0 and --top-p in (0, 1]");
  std::unique_ptr<Tokenizer> tok;
  std::vector<int32_t> prompt;
  if (!a.prompt.empty()) {
    tok = std::make_unique<Tokenizer>(Tokenizer::load(a.model));
    prompt = tok->encode(a.prompt);
    if (prompt.empty()) throw Error("--prompt: the prompt has no tokens");
  } else {
    prompt = parse_id_list(a.ids, cfg.vocab_size);
  }
  std::vector<int32_t> stop = a.ignore_eos ? std::vector<int32_t>{} : eos_ids(a.model);
  TextStream out(tok.get());
  std::string device = a.device;
#ifdef SPENSE_HAVE_CUDA
  if (device == "auto") {
    int n = 0;
    device = cudaGetDeviceCount(&n) == cudaSuccess && n > 0 ? "cuda" : "cpu";
    (void)cudaGetLastError();
  }
#else
  if (device == "auto") device = "cpu";
  if (device == "cuda") throw Error("--device cuda: this build has no CUDA support (rebuild where nvcc is found)");
#endif
  // The prompt is echoed once the model is loaded, so a load error leaves no partial output.
  auto echo_prompt = [&] {
    if (tok) std::fwrite(a.prompt.data(), 1, a.prompt.size(), stdout);
    std::fflush(stdout);
  };
  if (device == "cpu") {
    if (a.dtype != "bf16" || a.format != "auto")
      throw Error("--device cpu runs the fp32 reference model: --dtype and --format apply to --device cuda only");
    const Model m = Model::load(a.model);
    echo_prompt();
    std::vector<int32_t> seq = prompt;
    std::mt19937_64 rng(a.seed);
    for (int64_t i = 0; i < a.max_new_tokens; ++i) {
      if (static_cast<int64_t>(seq.size()) > cfg.max_position_embeddings && cfg.max_position_embeddings > 0)
        throw Error("sequence longer than max_position_embeddings (" + std::to_string(cfg.max_position_embeddings) + ")");
      const std::vector<float> logits = m.forward(seq);
      const float* last = logits.data() + (seq.size() - 1) * static_cast<size_t>(cfg.vocab_size);
      const int32_t t = sample_token(last, cfg.vocab_size, a.temperature, a.top_p, rng);
      seq.push_back(t);
      out.push(t);
      if (std::find(stop.begin(), stop.end(), t) != stop.end()) break;
    }
  } else {
#ifdef SPENSE_HAVE_CUDA
    cuda::Context ctx;
    cuda::EngineOptions eo;
    if (a.dtype == "bf16") eo.precision = cuda::LinearPrecision::BF16;
    else if (a.dtype == "fp8") eo.precision = cuda::LinearPrecision::FP8;
    else throw Error("--dtype: '" + a.dtype + "' is not bf16 or fp8");
    if (!weight_format_parse(a.format, &eo.plan.format)) throw Error("--format: unknown format '" + a.format + "'");
    eo.max_ctx = a.max_ctx > 0 ? a.max_ctx : static_cast<int64_t>(prompt.size()) + a.max_new_tokens + 8;
    eo.graphs = !a.no_graph;
    eo.kv_fp8 = a.kv_cache == "fp8";
    auto e = cuda::Engine::load(ctx, a.model, eo);
    echo_prompt();
    cuda::GenerateOptions g;
    g.max_new_tokens = a.max_new_tokens;
    g.temperature = a.temperature;
    g.top_p = a.top_p;
    g.seed = a.seed;
    g.stop_ids = stop;
    cuda::generate(*e, {prompt}, g, [&](int64_t, int32_t t) { out.push(t); });
#endif
  }
  std::fputc('\n', stdout);
  if (a.print_ids || !a.ids.empty()) {
    std::printf("prompt ids:");
    for (int32_t t : prompt) std::printf(" %d", t);
    std::printf("\nids:");
    for (int32_t t : out.ids()) std::printf(" %d", t);
    std::printf("\n");
  }
}

}  // namespace

void register_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  auto* sub = app.add_subcommand("generate",
                                 "Continue a prompt and stream the text: on the GPU through the decode engine "
                                 "(dense, 2:4 or Spense checkpoints, BF16 or FP8), or on the CPU through the fp32 "
                                 "reference model");
  sub->add_option("--model", a->model, "Checkpoint directory (config.json, safetensors, tokenizer.json)")->required();
  sub->add_option("--prompt", a->prompt, "Prompt text (tokenized with the model's tokenizer.json, no BOS added)");
  sub->add_option("--ids", a->ids, "Prompt as comma-separated token ids instead of --prompt (prints ids only)");
  sub->add_option("--max-new-tokens", a->max_new_tokens, "Tokens to generate at most")->capture_default_str();
  sub->add_option("--temperature", a->temperature, "0: greedy; > 0: sample from softmax(logits / T)")
      ->capture_default_str();
  sub->add_option("--top-p", a->top_p, "Nucleus sampling: keep the most likely tokens up to this probability")
      ->capture_default_str();
  sub->add_option("--seed", a->seed, "Sampling seed")->capture_default_str();
  sub->add_option("--device", a->device, "auto (cuda when built with CUDA and a GPU is present), cuda or cpu")
      ->check(CLI::IsMember({"auto", "cuda", "cpu"}))
      ->capture_default_str();
  sub->add_option("--dtype", a->dtype, "GPU: bf16, or fp8 (E4M3 weights per channel, per-token activations)")
      ->capture_default_str();
  sub->add_option("--format", a->format,
                  "GPU: auto (what spense.json says, else dense), dense, 24 (magnitude 2:4 on load if needed) or "
                  "spense")
      ->capture_default_str();
  sub->add_option("--max-ctx", a->max_ctx, "GPU: KV-cache length (default: prompt + max-new-tokens)");
  sub->add_flag("--ignore-eos", a->ignore_eos, "Do not stop at the eos_token_id of generation_config.json");
  sub->add_flag("--print-ids", a->print_ids, "Print the generated token ids after the text");
  sub->add_flag("--no-graph", a->no_graph, "GPU: launch decode steps without CUDA graphs");
  sub->add_option("--kv-cache", a->kv_cache, "GPU: KV-cache elements, bf16 or fp8 (E4M3 with no scale: half the memory)")
      ->check(CLI::IsMember({"bf16", "fp8"}))
      ->capture_default_str();
  sub->callback([a] { run_generate(*a); });
}

}  // namespace spense::cli
