// Per-token log-likelihoods on the CPU reference model (see eval.h). The LM head runs over a
// bounded number of rows at a time and each row is reduced to its log-softmax at the target
// right away, so large vocabularies never need a [T, vocab] logits matrix.
#include <algorithm>
#include <cmath>
#include <string>

#include "spense/error.h"
#include "spense/eval.h"

namespace spense {

double log_softmax_at(const float* logits, int64_t vocab, int32_t target) {
  float mx = logits[0];
  for (int64_t j = 1; j < vocab; ++j) mx = std::max(mx, logits[j]);
  // exp in fp32 (as torch's log_softmax on fp32 logits), summed in double: ~1e-7 relative.
  double sum = 0.0;
  for (int64_t j = 0; j < vocab; ++j) sum += std::exp(logits[j] - mx);
  return (static_cast<double>(logits[target]) - mx) - std::log(sum);
}

std::vector<double> token_logprobs(const Model& model, const int32_t* ids, int64_t T,
                                   int64_t first_target, std::vector<uint8_t>* greedy) {
  if (first_target < 1) throw Error("token_logprobs: first_target must be >= 1", 1);
  std::vector<double> out;
  if (greedy) greedy->clear();
  if (T <= first_target) return out;
  const int64_t H = model.hidden_size(), V = model.vocab_size();
  for (int64_t t = 0; t < T; ++t)
    if (ids[t] < 0 || ids[t] >= V)
      throw Error("token id " + std::to_string(ids[t]) + " at position " + std::to_string(t) +
                  " is outside the vocabulary [0, " + std::to_string(V) + ")");

  std::vector<float> hidden(static_cast<size_t>(T * H));
  model.embed(ids, T, hidden.data());
  for (int64_t l = 0; l < model.num_layers(); ++l) model.block_forward(l, hidden.data(), T);

  // Row r of the head predicts ids[r + 1]; rows first_target-1 .. T-2 are needed.
  const int64_t r0 = first_target - 1, r1 = T - 1;
  // Rows per head product: at least 64, below which sgemm loses a third of its speed
  // (measured M = 27: 45 GFLOP/s vs M = 64: 74, one core, N = 75968, K = 1024); at most
  // 64 MB of logits (110 rows at a 150k vocabulary).
  const int64_t chunk = std::clamp<int64_t>((int64_t{16} << 20) / V, 64, 256);
  out.resize(static_cast<size_t>(r1 - r0));
  if (greedy) greedy->resize(out.size());
  // Kept per thread between calls: a fresh 64 MB buffer per window costs ~16k page faults.
  // (A raw pointer is taken: inside the OpenMP loop `logits_buf` would name each worker
  // thread's own, empty, buffer.)
  thread_local std::vector<float> logits_buf;
  if (logits_buf.size() < static_cast<size_t>(std::min(chunk, r1 - r0) * V))
    logits_buf.resize(static_cast<size_t>(std::min(chunk, r1 - r0) * V));
  float* const logits = logits_buf.data();
  for (int64_t c0 = r0; c0 < r1; c0 += chunk) {
    const int64_t n = std::min(chunk, r1 - c0);
    model.final_norm_and_head(hidden.data() + c0 * H, n, logits);
#pragma omp parallel for schedule(static) if (n * V >= (1 << 17))
    for (int64_t i = 0; i < n; ++i) {
      const float* row = logits + i * V;
      const int32_t target = ids[c0 + i + 1];
      out[static_cast<size_t>(c0 + i - r0)] = log_softmax_at(row, V, target);
      if (greedy) {
        const int64_t am = std::max_element(row, row + V) - row;
        (*greedy)[static_cast<size_t>(c0 + i - r0)] = am == target;
      }
    }
  }
  return out;
}

double sequence_nll(const Model& model, const std::vector<int32_t>& ids) {
  double nll = 0.0;
  for (double lp : token_logprobs(model, ids.data(), static_cast<int64_t>(ids.size()))) nll -= lp;
  return nll;
}

ContinuationScore score_continuation(const Model& model, const std::vector<int32_t>& context,
                                     const std::vector<int32_t>& continuation) {
  if (context.empty()) throw Error("score_continuation: empty context", 1);
  std::vector<int32_t> ids = context;
  ids.insert(ids.end(), continuation.begin(), continuation.end());
  std::vector<uint8_t> greedy;
  const auto lps = token_logprobs(model, ids.data(), static_cast<int64_t>(ids.size()),
                                  static_cast<int64_t>(context.size()), &greedy);
  ContinuationScore s;
  s.tokens = static_cast<int64_t>(continuation.size());
  s.greedy = true;
  for (size_t i = 0; i < lps.size(); ++i) {
    s.logprob += lps[i];
    s.greedy = s.greedy && greedy[i];
  }
  return s;
}

}  // namespace spense
