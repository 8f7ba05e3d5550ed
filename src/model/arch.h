// Architectures in one place: for each supported Arch, which optional tensors exist (biases,
// q/k norms), and the HF tensor name and expected shape of every weight. The config.json
// parsing itself lives in src/io/config.cpp; this file only reads the parsed ModelConfig.
// Adding an architecture of the Llama family: a row in kArchTraits (arch.cpp), a fixture
// from tools/make_fixture.py, and test_model_arch.cpp walks it automatically.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "spense/config.h"
#include "spense/model.h"

namespace spense::arch {

// What each tensor of the checkpoint is for.
enum class TensorRole : uint8_t {
  EMBED, FINAL_NORM, LM_HEAD,                 // model-level
  INPUT_NORM, POST_NORM, Q_NORM, K_NORM,      // per-layer norms
  Q, K, V, O, GATE, UP, DOWN,                 // per-layer projection weights
  Q_BIAS, K_BIAS, V_BIAS, O_BIAS,             // per-layer projection biases
};

struct ArchTraits {
  Arch arch;
  const char* model_type;     // config.json "model_type"
  // q/k/v biases: Qwen2 always has them; Llama and Qwen3 have q/k/v/o biases only when
  // config.attention_bias is true; Mistral never.
  bool qkv_bias_always;
  bool bias_from_config;      // attention_bias=true adds q/k/v AND o biases
  bool qk_norm;               // per-head RMSNorm on q and k before RoPE (Qwen3)
};

const ArchTraits& arch_traits(Arch a);
const std::vector<Arch>& all_archs();

bool has_qkv_bias(const ModelConfig& cfg);
bool has_o_bias(const ModelConfig& cfg);
bool has_qk_norm(const ModelConfig& cfg);

// HF tensor name for a role ("model.layers.3.self_attn.q_proj.weight"); layer ignored for
// model-level roles.
std::string tensor_name(TensorRole role, int64_t layer = -1);

struct TensorSpec {
  std::string name;
  TensorRole role;
  int64_t layer;               // -1 for model-level tensors
  std::vector<int64_t> shape;  // PyTorch order
};

// Every tensor the model reads, in checkpoint order (embedding, layers, final norm, head).
// The LM head is absent when the embeddings are tied.
std::vector<TensorSpec> model_tensors(const ModelConfig& cfg);

// Checks the shape fields of a config are consistent (positive sizes, heads divisible by
// kv heads, even head_dim); throws spense::Error prefixed with `source`.
void validate_config(const ModelConfig& cfg, const std::string& source);

}  // namespace spense::arch
