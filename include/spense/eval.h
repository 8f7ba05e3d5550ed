// Evaluation on the CPU reference model: perplexity by the standard WikiText-2 protocol and
// per-token log-likelihood helpers (the building blocks of zero-shot multiple-choice scoring).
// Logits are produced a few rows at a time and reduced at once, so memory stays bounded at
// large vocabularies (a 2048 x 151936 fp32 logits matrix would be 1.2 GB).
#pragma once
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "spense/model.h"

namespace spense {

class Tokenizer;

// log p(ids[t] | ids[0..t-1]) for every t in [first_target, T), computed with ONE forward
// pass over ids (first_target >= 1). Returned vector has T - first_target entries. When
// greedy is non-null it receives, per target, whether the target is the argmax token.
std::vector<double> token_logprobs(const Model& model, const int32_t* ids, int64_t T,
                                   int64_t first_target = 1, std::vector<uint8_t>* greedy = nullptr);

// Total negative log-likelihood of ids[1..T-1] given their prefixes (nats).
double sequence_nll(const Model& model, const std::vector<int32_t>& ids);

// Log-likelihood of a continuation given a context (lm-eval-harness "loglikelihood"):
// one forward over context + continuation; context must not be empty.
struct ContinuationScore {
  double logprob = 0;   // sum over continuation tokens, nats
  bool greedy = false;  // every continuation token is the argmax of its position
  int64_t tokens = 0;   // continuation length
};
ContinuationScore score_continuation(const Model& model, const std::vector<int32_t>& context,
                                     const std::vector<int32_t>& continuation);

// log softmax(logits)[target] for one row of `vocab` logits, accumulated in double.
double log_softmax_at(const float* logits, int64_t vocab, int32_t target);

struct PplOptions {
  int64_t seqlen = 2048;    // window length in tokens
  int64_t max_windows = 0;  // evaluate at most this many windows (0: all full windows)
  // Called after each window with (windows done, windows total).
  std::function<void(int64_t done, int64_t total)> progress;
};

struct PplResult {
  double ppl = 0;              // exp(nll / predicted)
  double nll = 0;              // total negative log-likelihood, nats
  int64_t predicted = 0;       // tokens scored: windows * (seqlen - 1)
  int64_t windows = 0;         // windows evaluated
  int64_t tokens = 0;          // tokens in the whole input
  int64_t dropped = 0;         // tail tokens not covered by a full window (or beyond max_windows)
  int64_t seqlen = 0;          // window length used
  double seconds = 0;          // wall time of the forward passes
  std::vector<double> window_nll;  // per-window NLL, nats
  // Forward throughput: tokens run through the model (windows * seqlen) per second.
  double tokens_per_second() const {
    return seconds > 0 ? static_cast<double>(windows * seqlen) / seconds : 0.0;
  }
};

// Perplexity by the WikiText-2 protocol used by GPTQ/SparseGPT/Wanda: the whole token stream
// is cut into non-overlapping windows of `seqlen` tokens; the last partial window is
// DROPPED (its tokens are not scored); each window is an independent sequence starting at
// position 0 with no carried-over context, and its tokens 1..seqlen-1 are scored given
// their prefix within the window. ppl = exp(total NLL / total predicted tokens). (Those
// scripts compute exp(mean over windows of loss*seqlen / seqlen), the same number, since
// every window predicts seqlen-1 tokens.)
// Throws spense::Error when seqlen < 2, seqlen > the model's max_position_embeddings, or the
// input holds fewer than seqlen tokens.
PplResult perplexity(const Model& model, const std::vector<int32_t>& ids, const PplOptions& opts);

// Tokenize the whole text (no BOS added, as the protocol does for Qwen/Llama 3 tokenizers),
// then perplexity() on the ids.
PplResult perplexity_text(const Model& model, const Tokenizer& tok, std::string_view text,
                          const PplOptions& opts);

}  // namespace spense
