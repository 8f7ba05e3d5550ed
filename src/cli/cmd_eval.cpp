// spense eval: perplexity (as `spense ppl`, WikiText-2 protocol) and zero-shot
// multiple-choice accuracy (lm-eval-harness style, spense/zeroshot.h; format in
// docs/eval.md) of one model, as a table or one JSON object.
#include <cstdio>
#include <filesystem>
#include <map>
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
#include "spense/zeroshot.h"

namespace spense::cli {
namespace {

struct EvalArgs {
  std::string model, text;
  std::vector<std::string> tasks;
  int64_t seqlen = 2048, max_windows = 0, limit = 0;
  bool json = false, progress = false;
};

void run_eval(const EvalArgs& a) {
  if (a.text.empty() && a.tasks.empty()) throw Error("nothing to evaluate: give --text and/or --tasks");
  require_dir(a.model);
  const ModelConfig cfg = config_load(a.model);
  if (a.seqlen < 2) throw Error("--seqlen must be at least 2, got " + std::to_string(a.seqlen));
  if (a.max_windows < 0) throw Error("--max-windows must be >= 0, got " + std::to_string(a.max_windows));
  if (a.limit < 0) throw Error("--limit must be >= 0, got " + std::to_string(a.limit));
  std::string text;
  if (!a.text.empty()) {
    text = read_text_file(a.text);
    if (text.empty()) throw Error(a.text + ": text file is empty");
    if (cfg.max_position_embeddings > 0 && a.seqlen > cfg.max_position_embeddings)
      throw Error(a.model + "/config.json: --seqlen " + std::to_string(a.seqlen) +
                  " exceeds the model's max_position_embeddings " + std::to_string(cfg.max_position_embeddings));
  }
  // Items, --limit applied per task (first N of each task, in file order).
  std::vector<McItem> items;
  {
    std::map<std::string, int64_t> count;
    for (const auto& f : a.tasks) {
      for (auto& it : load_mc_items(f, std::filesystem::path(f).stem().string())) {
        if (a.limit > 0 && count[it.task] >= a.limit) continue;
        count[it.task]++;
        items.push_back(std::move(it));
      }
    }
  }
  const std::string tok_path = a.model + "/tokenizer.json";
  if (!file_exists(tok_path)) throw Error(tok_path + ": tokenizer not found (eval needs the model's tokenizer.json)");
  const Tokenizer tok = Tokenizer::load(tok_path);
  std::vector<int32_t> ids;
  if (!text.empty()) {
    ids = tok.encode(text);
    if (static_cast<int64_t>(ids.size()) < a.seqlen)
      throw Error(a.text + ": text has " + std::to_string(ids.size()) + " tokens, fewer than one window of --seqlen " +
                  std::to_string(a.seqlen));
    for (int32_t id : ids)
      if (id < 0 || id >= cfg.vocab_size)
        throw Error(tok_path + ": token id " + std::to_string(id) + " is outside the model's vocabulary [0, " +
                    std::to_string(cfg.vocab_size) + ")");
  }

  const Model model = Model::load(a.model);
  nlohmann::ordered_json out;
  out["model"] = a.model;
  PplResult ppl;
  if (!ids.empty()) {
    int64_t windows = static_cast<int64_t>(ids.size()) / a.seqlen;
    if (a.max_windows > 0 && a.max_windows < windows) windows = a.max_windows;
    ProgressBar bar("ppl", windows * a.seqlen, "tok", a.progress);
    PplOptions o;
    o.seqlen = a.seqlen;
    o.max_windows = a.max_windows;
    o.progress = [&](int64_t done, int64_t) { bar.update(done * a.seqlen); };
    ppl = perplexity(model, ids, o);
    bar.finish();
    nlohmann::ordered_json p;
    p["text"] = a.text;
    p["ppl"] = ppl.ppl;
    p["nll_per_token"] = ppl.nll / static_cast<double>(ppl.predicted);
    p["seqlen"] = ppl.seqlen;
    p["windows"] = ppl.windows;
    p["predicted_tokens"] = ppl.predicted;
    p["seconds"] = ppl.seconds;
    out["perplexity"] = p;
  }
  std::vector<McTaskResult> agg;
  if (!items.empty()) {
    std::vector<McItemResult> res;
    ProgressBar bar("tasks", static_cast<int64_t>(items.size()), "item", a.progress);
    for (const auto& it : items) {
      res.push_back(score_mc_item(model, tok, it));
      bar.update(static_cast<int64_t>(res.size()));
    }
    bar.finish();
    agg = aggregate_mc(items, res);
    nlohmann::ordered_json t = nlohmann::ordered_json::object();
    for (const auto& r : agg) {
      nlohmann::ordered_json j;
      j["n"] = r.n;
      j["acc"] = r.acc;
      j["acc_stderr"] = r.acc_stderr;
      j["acc_norm"] = r.acc_norm;
      j["acc_norm_stderr"] = r.acc_norm_stderr;
      t[r.task] = j;
    }
    out["tasks"] = t;
  }
  if (a.json) {
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  if (!ids.empty())
    std::printf("perplexity: %.4f (%lld windows x %lld tokens, %s)\n", ppl.ppl, static_cast<long long>(ppl.windows),
                static_cast<long long>(ppl.seqlen), a.text.c_str());
  if (!agg.empty()) {
    std::printf("%-24s %6s %16s %16s\n", "task", "n", "acc", "acc_norm");
    for (const auto& r : agg)
      std::printf("%-24s %6lld %8.4f±%.4f %8.4f±%.4f\n", r.task.c_str(), static_cast<long long>(r.n), r.acc,
                  r.acc_stderr, r.acc_norm, r.acc_norm_stderr);
  }
}

}  // namespace

void register_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* sub = app.add_subcommand(
      "eval",
      "Evaluate a model: perplexity on --text (as `spense ppl`) and zero-shot multiple-choice "
      "accuracy (acc, acc_norm) on --tasks jsonl files (docs/eval.md). CPU fp32 reference forward pass.");
  sub->add_option("--model", a->model, "Model directory: config.json, safetensors weights, tokenizer.json")->required();
  sub->add_option("--text", a->text, "UTF-8 text file for perplexity");
  sub->add_option("--seqlen", a->seqlen, "Perplexity window length in tokens")->default_val(2048);
  sub->add_option("--max-windows", a->max_windows, "Score only the first N windows (0 = all)")->default_val(0);
  sub->add_option("--tasks", a->tasks, "Multiple-choice task files (.jsonl), one item per line")->expected(1, -1);
  sub->add_option("--limit", a->limit, "At most N items per task (0 = all)")->default_val(0);
  sub->add_flag("--json", a->json, "Print one JSON object");
  sub->add_flag("--progress", a->progress, "Draw progress bars even when stderr is not a terminal");
  sub->callback([a] { run_eval(*a); });
}

}  // namespace spense::cli
