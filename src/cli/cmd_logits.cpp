// spense logits: run the CPU reference forward pass on a token sequence and save the fp32
// logits, for comparison with other implementations (transformers, vLLM, our GPU path).
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>

#include "cli/commands.h"
#include "cli/util.h"
#include "spense/config.h"
#include "spense/error.h"
#include "spense/model.h"
#include "spense/safetensors.h"

namespace spense::cli {
namespace {

struct LogitsArgs {
  std::string model, ids, out;
};

std::vector<int32_t> parse_ids(const std::string& path, const std::string& text, int64_t vocab,
                               const std::string& model_dir) {
  std::istringstream in(text);
  std::string word;
  std::vector<int32_t> ids;
  while (in >> word) {
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(word.c_str(), &end, 10);
    if (end == word.c_str() || *end != '\0' || errno == ERANGE)
      throw Error(path + ": token " + std::to_string(ids.size()) + " '" + word + "' is not an integer id");
    if (v < 0 || v >= vocab)
      throw Error(path + ": id " + word + " at position " + std::to_string(ids.size()) +
                  " is outside the vocabulary [0, " + std::to_string(vocab) + ") of " + model_dir);
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) throw Error(path + ": no token ids (expected whitespace-separated integers)");
  return ids;
}

void run_logits(const LogitsArgs& a) {
  require_dir(a.model);
  const ModelConfig cfg = config_load(a.model);
  const std::vector<int32_t> ids = parse_ids(a.ids, read_text_file(a.ids), cfg.vocab_size, a.model);
  const Model model = Model::load(a.model);
  const std::vector<float> logits = model.forward(ids);
  const int64_t T = static_cast<int64_t>(ids.size());
  SafetensorsWriter w;
  w.add_f32("logits", {T, cfg.vocab_size}, logits.data());
  std::vector<int64_t> ids64(ids.begin(), ids.end());
  w.add("input_ids", DType::I64, {T}, ids64.data(), ids64.size() * sizeof(int64_t));
  w.set_metadata("model", a.model);
  w.write(a.out);
  std::fprintf(stderr, "wrote %s: logits [%lld, %lld]\n", a.out.c_str(), static_cast<long long>(T),
               static_cast<long long>(cfg.vocab_size));
}

}  // namespace

void register_logits(CLI::App& app) {
  auto a = std::make_shared<LogitsArgs>();
  auto* sub = app.add_subcommand(
      "logits",
      "Run the CPU fp32 reference forward pass on one token sequence (positions 0..T-1, causal) "
      "and write the logits as a safetensors file: tensor 'logits' F32 [T, vocab] and "
      "'input_ids' I64 [T]. Written atomically (temporary file, then rename).");
  sub->add_option("--model", a->model, "Model directory: config.json and safetensors weights")->required();
  sub->add_option("--ids", a->ids,
                  "Text file of whitespace-separated integer token ids, each in [0, vocab_size)")
      ->required();
  sub->add_option("--out", a->out, "Output .safetensors file (replaced if it exists)")->required();
  sub->callback([a] { run_logits(*a); });
}

}  // namespace spense::cli
