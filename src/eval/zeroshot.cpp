// Zero-shot multiple-choice scoring (see spense/zeroshot.h).
#include "spense/zeroshot.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "spense/error.h"
#include "spense/eval.h"
#include "spense/tokenizer.h"

namespace spense {

std::vector<McItem> parse_mc_items(const std::string& text, const std::string& source,
                                   const std::string& default_task) {
  std::vector<McItem> items;
  std::istringstream in(text);
  std::string line;
  int64_t no = 0;
  while (std::getline(in, line)) {
    ++no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = source + ":" + std::to_string(no) + ": ";
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(where + "invalid JSON (" + e.what() + ")");
    }
    if (!j.is_object()) throw Error(where + "expected a JSON object");
    McItem it;
    it.line = no;
    if (!j.contains("context") || !j["context"].is_string()) throw Error(where + "\"context\" must be a string");
    it.context = j["context"].get<std::string>();
    if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty())
      throw Error(where + "\"choices\" must be a non-empty array of strings");
    for (const auto& c : j["choices"]) {
      if (!c.is_string()) throw Error(where + "\"choices\" must be a non-empty array of strings");
      if (c.get<std::string>().empty()) throw Error(where + "a choice is an empty string");
      it.choices.push_back(c.get<std::string>());
    }
    if (!j.contains("label") || !j["label"].is_number_integer()) throw Error(where + "\"label\" must be an integer");
    it.label = j["label"].get<int64_t>();
    if (it.label < 0 || it.label >= static_cast<int64_t>(it.choices.size()))
      throw Error(where + "\"label\" " + std::to_string(it.label) + " is outside [0, " +
                  std::to_string(it.choices.size()) + ")");
    if (j.contains("greedy")) {
      if (!j["greedy"].is_boolean()) throw Error(where + "\"greedy\" must be true or false");
      it.greedy = j["greedy"].get<bool>();
    }
    it.task = default_task;
    if (j.contains("task")) {
      if (!j["task"].is_string() || j["task"].get<std::string>().empty())
        throw Error(where + "\"task\" must be a non-empty string");
      it.task = j["task"].get<std::string>();
    }
    items.push_back(std::move(it));
  }
  return items;
}

std::vector<McItem> load_mc_items(const std::string& path, const std::string& default_task) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open task file");
  std::ostringstream ss;
  ss << f.rdbuf();
  auto items = parse_mc_items(ss.str(), path, default_task);
  if (items.empty()) throw Error(path + ": no items (expected one JSON object per line)");
  return items;
}

McItemResult score_mc_item(const Model& model, const Tokenizer& tok, const McItem& item) {
  const std::string where = item.task + " line " + std::to_string(item.line);
  const std::vector<int32_t> ctx = tok.encode(item.context);
  McItemResult r;
  const size_t nc = item.choices.size();
  r.logprob.resize(nc);
  r.tokens.resize(nc);
  r.greedy.resize(nc);
  for (size_t c = 0; c < nc; ++c) {
    const std::vector<int32_t> full = tok.encode(item.context + item.choices[c]);
    size_t p = 0;
    while (p < ctx.size() && p < full.size() && ctx[p] == full[p]) ++p;
    if (p == 0) throw Error(where + ": the context tokenizes to nothing (or merges with the choice's first token)");
    if (p == full.size()) throw Error(where + ": choice " + std::to_string(c) + " adds no token to the context");
    const std::vector<int32_t> context(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(p));
    const std::vector<int32_t> cont(full.begin() + static_cast<std::ptrdiff_t>(p), full.end());
    const ContinuationScore s = score_continuation(model, context, cont);
    r.logprob[c] = s.logprob;
    r.tokens[c] = s.tokens;
    r.greedy[c] = s.greedy;
  }
  double best = -INFINITY, best_norm = -INFINITY;
  for (size_t c = 0; c < nc; ++c) {
    if (r.logprob[c] > best) {
      best = r.logprob[c];
      r.pred = static_cast<int64_t>(c);
    }
    const double norm = r.logprob[c] / static_cast<double>(item.choices[c].size());
    if (norm > best_norm) {
      best_norm = norm;
      r.pred_norm = static_cast<int64_t>(c);
    }
  }
  if (item.greedy) {
    r.correct = r.correct_norm = r.greedy[size_t(item.label)] != 0;
  } else {
    r.correct = r.pred == item.label;
    r.correct_norm = r.pred_norm == item.label;
  }
  return r;
}

std::vector<McTaskResult> aggregate_mc(const std::vector<McItem>& items,
                                       const std::vector<McItemResult>& results) {
  std::vector<McTaskResult> out;
  std::vector<int64_t> hit, hit_norm;
  for (size_t i = 0; i < items.size() && i < results.size(); ++i) {
    size_t k = 0;
    while (k < out.size() && out[k].task != items[i].task) ++k;
    if (k == out.size()) {
      out.push_back({});
      out.back().task = items[i].task;
      hit.push_back(0);
      hit_norm.push_back(0);
    }
    out[k].n++;
    hit[k] += results[i].correct;
    hit_norm[k] += results[i].correct_norm;
  }
  for (size_t k = 0; k < out.size(); ++k) {
    const double n = static_cast<double>(out[k].n);
    out[k].acc = hit[k] / n;
    out[k].acc_norm = hit_norm[k] / n;
    if (out[k].n > 1) {
      out[k].acc_stderr = std::sqrt(out[k].acc * (1 - out[k].acc) / (n - 1));
      out[k].acc_norm_stderr = std::sqrt(out[k].acc_norm * (1 - out[k].acc_norm) / (n - 1));
    }
  }
  return out;
}

}  // namespace spense
