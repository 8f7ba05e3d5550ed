// Model configuration from a Hugging Face config.json (Llama, Mistral, Qwen2, Qwen3), in
// both spellings in use: transformers 4.x (rope_theta, rope_scaling, torch_dtype) and 5.x
// (rope_parameters, dtype). Anything unsupported is refused with the field named.
#pragma once
#include <cstdint>
#include <string>

#include "spense/dtype.h"

namespace spense {

enum class Arch : uint8_t { LLAMA, MISTRAL, QWEN2, QWEN3 };
const char* arch_name(Arch a);  // the HF architectures string, e.g. "Qwen3ForCausalLM"

enum class RopeType : uint8_t { DEFAULT, LLAMA3 };

struct RopeConfig {
  double theta = 10000.0;
  RopeType type = RopeType::DEFAULT;
  // llama3 scaling (used only when type == LLAMA3)
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Arch arch = Arch::LLAMA;
  std::string model_type;     // "llama", "mistral", "qwen2", "qwen3"
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;       // explicit in Qwen3 configs, else hidden_size / num_heads
  int64_t intermediate_size = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2 always; Llama/Qwen3 if attention_bias=true)
  bool o_proj_bias = false;     // o_proj bias too (Llama/Qwen3 with attention_bias=true; never Qwen2)
  bool qk_norm = false;         // per-head RMSNorm on q and k (Qwen3)
  DType dtype = DType::BF16;    // torch_dtype / dtype: storage type of the weights
                                // (absent from config.json: F32, transformers' default)
  int64_t sliding_window = 0;   // 0 = none; configs that enable it are refused for now
};

// Parse config.json text; `source` names the file in error messages. Absent optional
// fields take the default of the transformers config class of that model_type (e.g.
// num_key_value_heads: Llama = num_attention_heads, Mistral 8, Qwen2/Qwen3 32; head_dim:
// Qwen3 128, others hidden_size / num_attention_heads; Mistral sliding_window 4096, which is
// refused). Refused, with the field named: unknown architectures / model_type, rope types
// other than default and llama3, sliding-window attention, hidden_act other than silu,
// quantized checkpoints (quantization_config), Llama mlp_bias, missing or non-positive
// sizes, num_attention_heads not a multiple of num_key_value_heads, odd head_dim.
ModelConfig config_parse(const std::string& json_text, const std::string& source);
// Read and parse a file (a directory means <dir>/config.json).
ModelConfig config_load(const std::string& path);

}  // namespace spense
