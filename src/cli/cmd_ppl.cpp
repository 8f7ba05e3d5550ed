// spense ppl: perplexity of a model on a text file by the WikiText-2 protocol (see eval.h):
// the text is tokenized whole with DIR/tokenizer.json, cut into non-overlapping windows of
// --seqlen tokens (the partial tail is dropped), each window scored independently.
// Inputs are checked cheapest first (config, text, tokenizer, seqlen, token count) so a bad
// flag fails in milliseconds, before gigabytes of weights are loaded.
#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/util.h"
#include "spense/config.h"
#include "spense/error.h"
#include "spense/eval.h"
#include "spense/model.h"
#include "spense/progress.h"
#include "spense/tokenizer.h"

namespace spense::cli {
namespace {

struct PplArgs {
  std::string model, text;
  int64_t seqlen = 2048;
  int64_t max_windows = 0;
  bool json = false;
  bool progress = false;
};

void run_ppl(const PplArgs& a) {
  require_dir(a.model);
  const ModelConfig cfg = config_load(a.model);
  const std::string text = read_text_file(a.text);
  if (text.empty()) throw Error(a.text + ": text file is empty");
  const std::string tok_path = a.model + "/tokenizer.json";
  if (!file_exists(tok_path))
    throw Error(tok_path + ": tokenizer not found (ppl tokenizes the text with the model's tokenizer.json)");
  if (a.seqlen < 2) throw Error("--seqlen must be at least 2, got " + std::to_string(a.seqlen));
  if (a.max_windows < 0) throw Error("--max-windows must be >= 0, got " + std::to_string(a.max_windows));
  if (cfg.max_position_embeddings > 0 && a.seqlen > cfg.max_position_embeddings)
    throw Error(a.model + "/config.json: --seqlen " + std::to_string(a.seqlen) +
                " exceeds the model's max_position_embeddings " + std::to_string(cfg.max_position_embeddings));

  const Tokenizer tok = Tokenizer::load(tok_path);
  const std::vector<int32_t> ids = tok.encode(text);
  if (static_cast<int64_t>(ids.size()) < a.seqlen)
    throw Error(a.text + ": text has " + std::to_string(ids.size()) +
                " tokens, fewer than one window of --seqlen " + std::to_string(a.seqlen));
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= cfg.vocab_size)
      throw Error(tok_path + ": token id " + std::to_string(ids[i]) + " is outside the model's vocabulary [0, " +
                  std::to_string(cfg.vocab_size) + ") of " + a.model + "/config.json");

  const Model model = Model::load(a.model);
  int64_t windows = static_cast<int64_t>(ids.size()) / a.seqlen;
  if (a.max_windows > 0 && a.max_windows < windows) windows = a.max_windows;
  ProgressBar bar("ppl", windows * a.seqlen, "tok", a.progress);
  PplOptions opts;
  opts.seqlen = a.seqlen;
  opts.max_windows = a.max_windows;
  opts.progress = [&](int64_t done, int64_t) { bar.update(done * a.seqlen); };
  const PplResult r = perplexity(model, ids, opts);
  bar.finish();

  if (a.json) {
    nlohmann::ordered_json j;
    j["model"] = a.model;
    j["text"] = a.text;
    j["ppl"] = r.ppl;
    j["nll"] = r.nll;
    j["nll_per_token"] = r.nll / static_cast<double>(r.predicted);
    j["tokens"] = r.tokens;
    j["seqlen"] = r.seqlen;
    j["windows"] = r.windows;
    j["predicted_tokens"] = r.predicted;
    j["dropped_tokens"] = r.dropped;
    j["seconds"] = r.seconds;
    j["tokens_per_second"] = r.tokens_per_second();
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("perplexity: %.4f\n", r.ppl);
  std::printf("nll/token:  %.6f nats over %lld predicted tokens\n", r.nll / static_cast<double>(r.predicted),
              static_cast<long long>(r.predicted));
  std::printf("tokens:     %lld in the text; %lld windows x %lld, %lld tail tokens not scored\n",
              static_cast<long long>(r.tokens), static_cast<long long>(r.windows),
              static_cast<long long>(r.seqlen), static_cast<long long>(r.dropped));
  std::printf("speed:      %.1f tokens/s (%.2f s)\n", r.tokens_per_second(), r.seconds);
}

}  // namespace

void register_ppl(CLI::App& app) {
  auto a = std::make_shared<PplArgs>();
  auto* sub = app.add_subcommand(
      "ppl",
      "Perplexity of a model on a text file, WikiText-2 protocol: tokenize the whole text with "
      "the model's tokenizer.json, cut it into non-overlapping windows of --seqlen tokens "
      "(the last partial window is dropped), score tokens 1..seqlen-1 of each window given "
      "their prefix; ppl = exp(total NLL / predicted tokens). CPU fp32 reference forward pass.");
  sub->add_option("--model", a->model, "Model directory: config.json, safetensors weights, tokenizer.json")
      ->required();
  sub->add_option("--text", a->text, "UTF-8 text file to score (tokenized as one stream)")->required();
  sub->add_option("--seqlen", a->seqlen,
                  "Window length in tokens; at most the model's max_position_embeddings")
      ->default_val(2048);
  sub->add_option("--max-windows", a->max_windows,
                  "Score only the first N windows (0 = every full window)")
      ->default_val(0);
  sub->add_flag("--json", a->json, "Print the result as one JSON object");
  sub->add_flag("--progress", a->progress,
                "Draw the progress bar even when stderr is not a terminal (it is drawn on terminals by default)");
  sub->callback([a] { run_ppl(*a); });
}

}  // namespace spense::cli
