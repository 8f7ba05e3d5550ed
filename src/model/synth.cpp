// Synthetic random-weight models: the generator behind Model::random() and synth_write().
#include "model/synth.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "spense/error.h"
#include "spense/model.h"
#include "spense/safetensors.h"

namespace spense {
namespace {

inline uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

const char* torch_dtype_name(DType t) {
  switch (t) {
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    case DType::F32: return "float32";
    default: return "bfloat16";
  }
}

}  // namespace

void synth_normal(uint64_t key, float* out, int64_t n) {
  // Box-Muller in fp32: plenty for N(0, 0.02) weights, and 3x cheaper than in double.
  const int64_t pairs = (n + 1) / 2;
  constexpr float kTwoPi = 6.28318530717958647692f;
  constexpr float k2m24 = 1.0f / 16777216.0f;
#pragma omp parallel for schedule(static) if (n >= (1 << 16))
  for (int64_t j = 0; j < pairs; ++j) {
    const uint64_t a = splitmix64(key + static_cast<uint64_t>(j));
    const float u1 = static_cast<float>((a >> 40) + 1) * k2m24;               // (0, 1]
    const float u2 = static_cast<float>((a >> 16) & 0xffffffu) * k2m24;       // [0, 1)
    const float r = std::sqrt(-2.0f * std::log(u1));
    const float th = kTwoPi * u2;
    out[2 * j] = r * std::cos(th);
    if (2 * j + 1 < n) out[2 * j + 1] = r * std::sin(th);
  }
}

std::vector<float> synth_tensor(const arch::TensorSpec& spec, uint64_t seed) {
  int64_t n = 1;
  for (int64_t d : spec.shape) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  synth_normal(splitmix64(seed ^ fnv1a(spec.name)), v.data(), n);
  using R = arch::TensorRole;
  const bool norm = spec.role == R::INPUT_NORM || spec.role == R::POST_NORM ||
                    spec.role == R::FINAL_NORM || spec.role == R::Q_NORM || spec.role == R::K_NORM;
  const float base = norm ? 1.0f : 0.0f;
  for (auto& x : v) x = base + 0.02f * x;
  return v;
}

std::string config_to_json_tx5(const ModelConfig& cfg) {
  using nlohmann::ordered_json;
  ordered_json j;
  j["architectures"] = ordered_json::array({arch_name(cfg.arch)});
  j["model_type"] = cfg.model_type;
  if (cfg.arch != Arch::QWEN2 && cfg.arch != Arch::MISTRAL) j["attention_bias"] = cfg.attention_bias;
  j["attention_dropout"] = 0.0;
  j["dtype"] = torch_dtype_name(cfg.dtype);
  j["head_dim"] = cfg.head_dim;
  j["hidden_act"] = "silu";
  j["hidden_size"] = cfg.hidden_size;
  j["initializer_range"] = 0.02;
  j["intermediate_size"] = cfg.intermediate_size;
  j["max_position_embeddings"] = cfg.max_position_embeddings;
  if (cfg.arch == Arch::LLAMA) {
    j["mlp_bias"] = false;
    j["pretraining_tp"] = 1;
  }
  if (cfg.arch == Arch::QWEN2 || cfg.arch == Arch::QWEN3) {
    j["max_window_layers"] = cfg.num_layers;
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
  }
  // transformers' Mistral default is a 4096 sliding window, which we refuse: write null.
  if (cfg.arch == Arch::MISTRAL) j["sliding_window"] = nullptr;
  j["num_attention_heads"] = cfg.num_heads;
  j["num_hidden_layers"] = cfg.num_layers;
  j["num_key_value_heads"] = cfg.num_kv_heads;
  j["rms_norm_eps"] = cfg.rms_norm_eps;
  ordered_json rope;
  rope["rope_theta"] = cfg.rope.theta;
  if (cfg.rope.type == RopeType::LLAMA3) {
    rope["rope_type"] = "llama3";
    rope["factor"] = cfg.rope.factor;
    rope["low_freq_factor"] = cfg.rope.low_freq_factor;
    rope["high_freq_factor"] = cfg.rope.high_freq_factor;
    rope["original_max_position_embeddings"] = cfg.rope.original_max_position_embeddings;
  } else {
    rope["rope_type"] = "default";
  }
  j["rope_parameters"] = rope;
  j["tie_word_embeddings"] = cfg.tie_word_embeddings;
  j["use_cache"] = true;
  j["vocab_size"] = cfg.vocab_size;
  j["transformers_version"] = "5.17.0";
  return j.dump(2) + "\n";
}

void synth_write(const ModelConfig& cfg_in, uint64_t seed, const std::string& dir,
                 const std::string& tokenizer_path) {
  ModelConfig cfg = cfg_in;
  cfg.dtype = DType::BF16;
  arch::validate_config(cfg, "synth");
  std::string tok_text;
  if (!tokenizer_path.empty()) {
    std::ifstream f(tokenizer_path, std::ios::binary);
    if (!f) throw Error(tokenizer_path + ": cannot open tokenizer file");
    std::ostringstream ss;
    ss << f.rdbuf();
    tok_text = ss.str();
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(dir + ": cannot create directory: " + ec.message());

  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  for (const auto& spec : arch::model_tensors(cfg)) {
    std::vector<float> v = synth_tensor(spec, seed);
    std::vector<uint16_t> bf(v.size());
    convert_from_f32(DType::BF16, v.data(), bf.data(), v.size());
    w.add(spec.name, DType::BF16, spec.shape, bf.data(), bf.size() * sizeof(uint16_t));
  }
  w.write(dir + "/model.safetensors");
  const std::string cj = config_to_json_tx5(cfg);
  write_file_atomic(dir + "/config.json", cj.data(), cj.size());
  if (!tok_text.empty()) write_file_atomic(dir + "/tokenizer.json", tok_text.data(), tok_text.size());
}

}  // namespace spense
