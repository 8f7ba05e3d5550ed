// Batched generation on the engine (include/spense/cuda/engine.h: generate()).
#include <algorithm>
#include <random>

#include "spense/cuda/engine.h"
#include "spense/error.h"

namespace spense::cuda {

std::vector<std::vector<int32_t>> generate(Engine& e, const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& g,
                                           const std::function<void(int64_t, int32_t)>& on_token) {
  const int64_t B = static_cast<int64_t>(prompts.size());
  if (B == 0) return {};
  if (B > e.options().max_batch)
    throw Error(std::to_string(B) + " prompts exceed the engine's " + std::to_string(e.options().max_batch) + " slots");
  const int64_t V = e.config().vocab_size;
  const bool greedy = g.temperature <= 0.f;
  std::mt19937_64 rng(g.seed);
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(B));
  std::vector<char> done(static_cast<size_t>(B), 0);
  std::vector<int32_t> next(static_cast<size_t>(B));
  for (int64_t r = 0; r < B; ++r) {
    e.reset(r);
    const std::vector<float> l = e.prefill(r, prompts[static_cast<size_t>(r)]);
    next[static_cast<size_t>(r)] = sample_token(l.data(), V, g.temperature, g.top_p, rng);
  }
  auto keep = [&](int64_t r, int32_t t) {
    if (done[static_cast<size_t>(r)]) return;
    out[static_cast<size_t>(r)].push_back(t);
    if (on_token) on_token(r, t);
    if (static_cast<int64_t>(out[static_cast<size_t>(r)].size()) >= g.max_new_tokens ||
        std::find(g.stop_ids.begin(), g.stop_ids.end(), t) != g.stop_ids.end())
      done[static_cast<size_t>(r)] = 1;
  };
  if (g.max_new_tokens <= 0) return out;
  for (int64_t r = 0; r < B; ++r) keep(r, next[static_cast<size_t>(r)]);
  while (std::find(done.begin(), done.end(), 0) != done.end()) {
    e.set_tokens(next);
    e.step(B);
    if (greedy) {
      next = e.tokens(B);
    } else {
      const std::vector<float> l = e.logits(B);
      for (int64_t r = 0; r < B; ++r)
        next[static_cast<size_t>(r)] = sample_token(l.data() + r * V, V, g.temperature, g.top_p, rng);
    }
    for (int64_t r = 0; r < B; ++r) keep(r, next[static_cast<size_t>(r)]);
  }
  return out;
}

}  // namespace spense::cuda
