// Zero-shot multiple-choice scoring in the style of lm-eval-harness "loglikelihood" tasks,
// on the CPU reference model. Item format (one JSON object per line, docs/eval.md):
//   {"context": str, "choices": [str, ...], "label": int, "greedy": bool?, "task": str?}
// Scoring of one choice: the context and context+choice are tokenized; the continuation is
// the token suffix of context+choice after the longest common prefix with the context's
// tokens (normally all of them; fewer when BPE merges across the boundary, then the
// context's last token(s) are scored as part of the continuation). Its log-likelihood is
// summed over the continuation tokens from one forward pass (score_continuation).
//   acc      = the choice with the largest summed log-likelihood is the label
//   acc_norm = the same with log-likelihood / UTF-8 byte length of the choice string
//   greedy items: correct when every continuation token of the labelled choice is the
//                 argmax of its position (acc and acc_norm alike), as LAMBADA is scored.
// Ties go to the lowest index (numpy argmax).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "spense/model.h"

namespace spense {

class Tokenizer;

struct McItem {
  std::string task;                  // "task" field, or the caller's default
  std::string context;
  std::vector<std::string> choices;
  int64_t label = 0;
  bool greedy = false;
  int64_t line = 0;                  // 1-based line in the source file
};

// Parse a .jsonl file; blank lines are skipped. default_task names items without "task".
// Throws spense::Error "<path>:<line>: ..." on bad JSON, missing/mistyped fields, no
// choices, an empty choice, or a label out of range.
std::vector<McItem> load_mc_items(const std::string& path, const std::string& default_task);
std::vector<McItem> parse_mc_items(const std::string& text, const std::string& source,
                                   const std::string& default_task);

struct McItemResult {
  std::vector<double> logprob;        // per choice, summed over continuation tokens (nats)
  std::vector<int64_t> tokens;        // continuation tokens per choice
  std::vector<uint8_t> greedy;        // per choice: every continuation token is the argmax
  int64_t pred = 0, pred_norm = 0;    // argmax of logprob and of logprob / bytes
  bool correct = false, correct_norm = false;
};
// Throws spense::Error naming the task and line when the context tokenizes to nothing or a
// choice adds no token.
McItemResult score_mc_item(const Model& model, const Tokenizer& tok, const McItem& item);

struct McTaskResult {
  std::string task;
  int64_t n = 0;
  double acc = 0, acc_norm = 0;       // fractions in [0, 1]
  double acc_stderr = 0, acc_norm_stderr = 0;  // sqrt(p(1-p)/(n-1)) (0 when n < 2)
};
// Aggregate per task, in order of first appearance.
std::vector<McTaskResult> aggregate_mc(const std::vector<McItem>& items,
                                       const std::vector<McItemResult>& results);

}  // namespace spense
