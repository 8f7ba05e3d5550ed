// Architecture table and HF tensor names (see arch.h).
#include "model/arch.h"

#include <cmath>
#include <regex>

#include "spense/error.h"

namespace spense::arch {
namespace {

// One row per architecture. All four share the HF "model.layers.{i}...." naming.
const ArchTraits kArchTraits[] = {
    //  arch          model_type  qkv_bias_always bias_from_config qk_norm
    {Arch::LLAMA, "llama", false, true, false},
    {Arch::MISTRAL, "mistral", false, false, false},
    {Arch::QWEN2, "qwen2", true, false, false},
    {Arch::QWEN3, "qwen3", false, true, true},
};

std::string layer_prefix(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

}  // namespace

const ArchTraits& arch_traits(Arch a) {
  for (const auto& t : kArchTraits)
    if (t.arch == a) return t;
  throw Error("unsupported architecture id " + std::to_string(static_cast<int>(a)), 1);
}

const std::vector<Arch>& all_archs() {
  static const std::vector<Arch> v = [] {
    std::vector<Arch> r;
    for (const auto& t : kArchTraits) r.push_back(t.arch);
    return r;
  }();
  return v;
}

bool has_qkv_bias(const ModelConfig& cfg) {
  const auto& t = arch_traits(cfg.arch);
  return t.qkv_bias_always || (t.bias_from_config && cfg.attention_bias);
}
bool has_o_bias(const ModelConfig& cfg) {
  const auto& t = arch_traits(cfg.arch);
  return t.bias_from_config && cfg.attention_bias;
}
bool has_qk_norm(const ModelConfig& cfg) { return arch_traits(cfg.arch).qk_norm || cfg.qk_norm; }

std::string tensor_name(TensorRole role, int64_t layer) {
  switch (role) {
    case TensorRole::EMBED: return "model.embed_tokens.weight";
    case TensorRole::FINAL_NORM: return "model.norm.weight";
    case TensorRole::LM_HEAD: return "lm_head.weight";
    case TensorRole::INPUT_NORM: return layer_prefix(layer) + "input_layernorm.weight";
    case TensorRole::POST_NORM: return layer_prefix(layer) + "post_attention_layernorm.weight";
    case TensorRole::Q_NORM: return layer_prefix(layer) + "self_attn.q_norm.weight";
    case TensorRole::K_NORM: return layer_prefix(layer) + "self_attn.k_norm.weight";
    case TensorRole::Q: return layer_prefix(layer) + "self_attn.q_proj.weight";
    case TensorRole::K: return layer_prefix(layer) + "self_attn.k_proj.weight";
    case TensorRole::V: return layer_prefix(layer) + "self_attn.v_proj.weight";
    case TensorRole::O: return layer_prefix(layer) + "self_attn.o_proj.weight";
    case TensorRole::GATE: return layer_prefix(layer) + "mlp.gate_proj.weight";
    case TensorRole::UP: return layer_prefix(layer) + "mlp.up_proj.weight";
    case TensorRole::DOWN: return layer_prefix(layer) + "mlp.down_proj.weight";
    case TensorRole::Q_BIAS: return layer_prefix(layer) + "self_attn.q_proj.bias";
    case TensorRole::K_BIAS: return layer_prefix(layer) + "self_attn.k_proj.bias";
    case TensorRole::V_BIAS: return layer_prefix(layer) + "self_attn.v_proj.bias";
    case TensorRole::O_BIAS: return layer_prefix(layer) + "self_attn.o_proj.bias";
  }
  return "";
}

std::vector<TensorSpec> model_tensors(const ModelConfig& cfg) {
  const int64_t H = cfg.hidden_size, D = cfg.head_dim, I = cfg.intermediate_size;
  const int64_t QD = cfg.num_heads * D, KVD = cfg.num_kv_heads * D;
  std::vector<TensorSpec> v;
  auto add = [&](TensorRole r, int64_t layer, std::vector<int64_t> shape) {
    v.push_back({tensor_name(r, layer), r, layer, std::move(shape)});
  };
  add(TensorRole::EMBED, -1, {cfg.vocab_size, H});
  const bool qkv_bias = has_qkv_bias(cfg), o_bias = has_o_bias(cfg), qk_norm = has_qk_norm(cfg);
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    add(TensorRole::INPUT_NORM, l, {H});
    add(TensorRole::Q, l, {QD, H});
    add(TensorRole::K, l, {KVD, H});
    add(TensorRole::V, l, {KVD, H});
    if (qkv_bias) {
      add(TensorRole::Q_BIAS, l, {QD});
      add(TensorRole::K_BIAS, l, {KVD});
      add(TensorRole::V_BIAS, l, {KVD});
    }
    if (qk_norm) {
      add(TensorRole::Q_NORM, l, {D});
      add(TensorRole::K_NORM, l, {D});
    }
    add(TensorRole::O, l, {H, QD});
    if (o_bias) add(TensorRole::O_BIAS, l, {H});
    add(TensorRole::POST_NORM, l, {H});
    add(TensorRole::GATE, l, {I, H});
    add(TensorRole::UP, l, {I, H});
    add(TensorRole::DOWN, l, {H, I});
  }
  add(TensorRole::FINAL_NORM, -1, {H});
  if (!cfg.tie_word_embeddings) add(TensorRole::LM_HEAD, -1, {cfg.vocab_size, H});
  return v;
}

void validate_config(const ModelConfig& cfg, const std::string& source) {
  auto fail = [&](const std::string& what) { throw Error(source + ": " + what); };
  auto positive = [&](const char* name, int64_t v) {
    if (v <= 0) fail(std::string(name) + " must be positive, got " + std::to_string(v));
  };
  positive("hidden_size", cfg.hidden_size);
  positive("num_hidden_layers", cfg.num_layers);
  positive("num_attention_heads", cfg.num_heads);
  positive("num_key_value_heads", cfg.num_kv_heads);
  positive("head_dim", cfg.head_dim);
  positive("intermediate_size", cfg.intermediate_size);
  positive("vocab_size", cfg.vocab_size);
  if (cfg.num_heads % cfg.num_kv_heads != 0)
    fail("num_attention_heads " + std::to_string(cfg.num_heads) +
         " is not a multiple of num_key_value_heads " + std::to_string(cfg.num_kv_heads));
  if (cfg.head_dim % 2 != 0) fail("head_dim " + std::to_string(cfg.head_dim) + " must be even for RoPE");
  if (cfg.sliding_window > 0) fail("sliding-window attention is not supported");
  (void)arch_traits(cfg.arch);
}

}  // namespace spense::arch

namespace spense {

const char* module_kind_name(ModuleKind k) {
  switch (k) {
    case ModuleKind::EMBEDDING: return "embedding";
    case ModuleKind::ATTENTION: return "attention";
    case ModuleKind::MLP: return "mlp";
    case ModuleKind::NORM: return "norms";
    case ModuleKind::LM_HEAD: return "lm_head";
    case ModuleKind::OTHER: return "other";
  }
  return "other";
}

ModuleKind tensor_module_kind(const std::string& name) {
  if (name == "model.embed_tokens.weight") return ModuleKind::EMBEDDING;
  if (name == "lm_head.weight") return ModuleKind::LM_HEAD;
  if (name == "model.norm.weight") return ModuleKind::NORM;
  static const std::regex layer_re(R"(^model\.layers\.\d+\.(.+)$)");
  std::smatch m;
  if (!std::regex_match(name, m, layer_re)) return ModuleKind::OTHER;
  const std::string rest = m[1];
  // q_norm/k_norm are norms even though they sit under self_attn.
  if (rest.find("layernorm") != std::string::npos || rest.find("_norm.") != std::string::npos)
    return ModuleKind::NORM;
  if (rest.rfind("self_attn.", 0) == 0) {
    if (rest.find("rotary_emb") != std::string::npos) return ModuleKind::OTHER;
    return ModuleKind::ATTENTION;
  }
  if (rest.rfind("mlp.", 0) == 0) return ModuleKind::MLP;
  return ModuleKind::OTHER;
}

const char* proj_name(Proj p) {
  switch (p) {
    case Proj::Q: return "self_attn.q_proj";
    case Proj::K: return "self_attn.k_proj";
    case Proj::V: return "self_attn.v_proj";
    case Proj::O: return "self_attn.o_proj";
    case Proj::GATE: return "mlp.gate_proj";
    case Proj::UP: return "mlp.up_proj";
    case Proj::DOWN: return "mlp.down_proj";
  }
  return "";
}

std::pair<int64_t, int64_t> proj_shape(const ModelConfig& c, Proj p) {
  const int64_t qd = c.num_heads * c.head_dim, kvd = c.num_kv_heads * c.head_dim;
  switch (p) {
    case Proj::Q: return {qd, c.hidden_size};
    case Proj::K:
    case Proj::V: return {kvd, c.hidden_size};
    case Proj::O: return {c.hidden_size, qd};
    case Proj::GATE:
    case Proj::UP: return {c.intermediate_size, c.hidden_size};
    case Proj::DOWN: return {c.hidden_size, c.intermediate_size};
  }
  return {0, 0};
}

std::string proj_module(int64_t layer, Proj p) {
  return "model.layers." + std::to_string(layer) + "." + proj_name(p);
}

const char* linear_input_name(LinearInput r) {
  switch (r) {
    case LinearInput::QKV: return "qkv";
    case LinearInput::O: return "o";
    case LinearInput::GATE_UP: return "gate_up";
    case LinearInput::DOWN: return "down";
  }
  return "";
}

LinearInput proj_input(Proj p) {
  switch (p) {
    case Proj::Q:
    case Proj::K:
    case Proj::V: return LinearInput::QKV;
    case Proj::O: return LinearInput::O;
    case Proj::GATE:
    case Proj::UP: return LinearInput::GATE_UP;
    case Proj::DOWN: return LinearInput::DOWN;
  }
  return LinearInput::QKV;
}

// The naming helpers above and rope_inv_freq live here rather than in model.cpp so the GPU
// engine can use them without the BLAS reference model.
std::vector<float> rope_inv_freq(const ModelConfig& cfg) {
  const int64_t dim = cfg.head_dim, half = dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  const float base = static_cast<float>(cfg.rope.theta);
  for (int64_t i = 0; i < half; ++i) {
    // HF: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all fp32.
    const float e = static_cast<float>(2 * i) / static_cast<float>(dim);
    const float p = static_cast<float>(std::pow(static_cast<double>(base), static_cast<double>(e)));
    inv[i] = 1.0f / p;
  }
  if (cfg.rope.type == RopeType::LLAMA3) {
    // HF _compute_llama3_parameters, fp32 tensor arithmetic step by step.
    const float factor = static_cast<float>(cfg.rope.factor);
    const float lff = static_cast<float>(cfg.rope.low_freq_factor);
    const float hff = static_cast<float>(cfg.rope.high_freq_factor);
    const double old_ctx = static_cast<double>(cfg.rope.original_max_position_embeddings);
    const double low_wavelen = old_ctx / cfg.rope.low_freq_factor;
    const double high_wavelen = old_ctx / cfg.rope.high_freq_factor;
    const float two_pi = static_cast<float>(2.0 * M_PI);
    const float dff = static_cast<float>(cfg.rope.high_freq_factor - cfg.rope.low_freq_factor);
    for (auto& f : inv) {
      const float wavelen = two_pi / f;
      float llama = wavelen > low_wavelen ? f / factor : f;
      const float smooth = (static_cast<float>(old_ctx) / wavelen - lff) / dff;
      const float smoothed = (1.0f - smooth) * llama / factor + smooth * llama;
      const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
      f = medium ? smoothed : llama;
    }
    (void)hff;
  }
  return inv;
}

}  // namespace spense
