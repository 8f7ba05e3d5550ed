// Shapes of real models for synthetic (random-weight) models: `spense synth`, `spense
// bench-decode --synthetic`. Sizes are the published config.json values of each model.
#include <string>

#include "spense/engine_plan.h"
#include "spense/error.h"

namespace spense {

namespace {
struct Preset {
  const char* name;
  int64_t hidden, layers, heads, kv_heads, head_dim, intermediate, vocab, max_pos;
  bool tied;
};
// Qwen3 dense models (Qwen/Qwen3-*: head_dim 128, vocab 151936), and Qwen2.5-0.5B's shapes
// (Qwen/Qwen2.5-0.5B config.json; use it with --arch qwen2, which adds the q/k/v biases).
constexpr Preset kPresets[] = {
    {"tiny", 64, 2, 4, 2, 16, 192, 512, 4096, true},
    {"qwen2.5-0.5b", 896, 24, 14, 2, 64, 4864, 151936, 32768, true},
    {"qwen3-0.6b", 1024, 28, 16, 8, 128, 3072, 151936, 40960, true},
    {"qwen3-8b", 4096, 36, 32, 8, 128, 12288, 151936, 40960, false},
    {"qwen3-14b", 5120, 40, 40, 8, 128, 17408, 151936, 40960, false},
    {"qwen3-32b", 5120, 64, 64, 8, 128, 25600, 151936, 40960, false},
};
}  // namespace

std::string model_preset_names() {
  std::string s;
  for (const auto& p : kPresets) s += std::string(s.empty() ? "" : ", ") + p.name;
  return s;
}

ModelConfig model_preset(const std::string& arch, const std::string& preset) {
  ModelConfig c;
  if (arch == "qwen3") {
    c.arch = Arch::QWEN3;
    c.qk_norm = true;
  } else if (arch == "qwen2") {
    c.arch = Arch::QWEN2;
    c.attention_bias = true;
  } else if (arch == "llama") {
    c.arch = Arch::LLAMA;
  } else {
    throw Error("--arch: unsupported architecture '" + arch + "' (qwen3, qwen2, llama)");
  }
  c.model_type = arch;
  c.dtype = DType::BF16;
  const bool llama = c.arch == Arch::LLAMA;
  c.rms_norm_eps = llama ? 1e-5 : 1e-6;
  c.rope.theta = llama ? 500000.0 : 1000000.0;
  for (const auto& p : kPresets) {
    if (preset != p.name) continue;
    c.hidden_size = p.hidden;
    c.num_layers = p.layers;
    c.num_heads = p.heads;
    c.num_kv_heads = p.kv_heads;
    c.head_dim = p.head_dim;
    c.intermediate_size = p.intermediate;
    c.vocab_size = p.vocab;
    c.max_position_embeddings = p.max_pos;
    c.tie_word_embeddings = p.tied && !llama;
    return c;
  }
  throw Error("--preset: unknown preset '" + preset + "' (" + model_preset_names() + ")");
}

}  // namespace spense
