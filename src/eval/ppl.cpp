// Perplexity by the WikiText-2 protocol (non-overlapping windows, partial tail dropped);
// see eval.h for the exact definition.
#include <chrono>
#include <cmath>
#include <string>

#include "spense/error.h"
#include "spense/eval.h"
#include "spense/tokenizer.h"

namespace spense {

PplResult perplexity(const Model& model, const std::vector<int32_t>& ids, const PplOptions& opts) {
  const int64_t seqlen = opts.seqlen;
  const int64_t n = static_cast<int64_t>(ids.size());
  if (seqlen < 2) throw Error("seqlen must be at least 2, got " + std::to_string(seqlen));
  const int64_t max_pos = model.config().max_position_embeddings;
  if (max_pos > 0 && seqlen > max_pos)
    throw Error("seqlen " + std::to_string(seqlen) + " exceeds the model's max_position_embeddings " +
                std::to_string(max_pos));
  if (n < seqlen)
    throw Error("text has " + std::to_string(n) + " tokens, fewer than one window of seqlen " +
                std::to_string(seqlen));
  if (opts.max_windows < 0) throw Error("max_windows must be >= 0");

  int64_t windows = n / seqlen;
  if (opts.max_windows > 0 && opts.max_windows < windows) windows = opts.max_windows;

  PplResult r;
  r.tokens = n;
  r.seqlen = seqlen;
  r.windows = windows;
  r.dropped = n - windows * seqlen;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t w = 0; w < windows; ++w) {
    const auto lps = token_logprobs(model, ids.data() + w * seqlen, seqlen, 1);
    double nll = 0.0;
    for (double lp : lps) nll -= lp;
    r.window_nll.push_back(nll);
    r.nll += nll;
    r.predicted += static_cast<int64_t>(lps.size());
    if (opts.progress) opts.progress(w + 1, windows);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.ppl = std::exp(r.nll / static_cast<double>(r.predicted));
  return r;
}

PplResult perplexity_text(const Model& model, const Tokenizer& tok, std::string_view text,
                          const PplOptions& opts) {
  const std::vector<int32_t> ids = tok.encode(text);
  return perplexity(model, ids, opts);
}

}  // namespace spense
