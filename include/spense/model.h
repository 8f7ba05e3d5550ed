// The CPU reference model: a decoder-only transformer of the Llama family (Llama, Mistral,
// Qwen2, Qwen3) loaded from a Hugging Face checkpoint directory, every weight held in fp32,
// and a plain fp32 forward pass (cblas_sgemm for every matrix product, OpenMP for the rest)
// that follows transformers' eager implementation operation by operation.
//
// The forward pass is split the way the pruning pipeline walks a model: embed(), then
// block_forward() once per decoder layer (with a hook that sees the input of each linear
// layer, for Hessians and Wanda norms), then final_norm_and_head(). Layer weights are plain
// fp32 matrices in the PyTorch layout (out x in) and can be replaced in place.
//
// Not here: KV cache / incremental decoding (every call starts at position 0), batching of
// several sequences (call once per sequence), sliding-window attention, GPU execution.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "spense/config.h"

namespace spense {

// A linear layer y = x W^T + b, W row-major [out, in] (the PyTorch/HF layout).
struct Linear {
  int64_t out = 0;
  int64_t in = 0;
  std::vector<float> weight;  // out * in
  std::vector<float> bias;    // out, or empty when the layer has no bias
};

// The seven projections of a decoder layer.
enum class Proj : uint8_t { Q, K, V, O, GATE, UP, DOWN };
inline constexpr Proj kAllProjs[] = {Proj::Q, Proj::K, Proj::V, Proj::O,
                                     Proj::GATE, Proj::UP, Proj::DOWN};
// HF module path inside a layer: "self_attn.q_proj", ..., "mlp.down_proj".
const char* proj_name(Proj p);
// HF module path of projection p in layer l ("model.layers.l.self_attn.q_proj").
std::string proj_module(int64_t layer, Proj p);
// Shape of projection p of a config: {out, in}.
std::pair<int64_t, int64_t> proj_shape(const ModelConfig& cfg, Proj p);

// The distinct inputs the projections read. Q, K and V share one input, as do GATE and UP,
// so a hook sees four activations per layer, not seven.
enum class LinearInput : uint8_t { QKV, O, GATE_UP, DOWN };
const char* linear_input_name(LinearInput r);  // "qkv", "o", "gate_up", "down"
LinearInput proj_input(Proj p);

// Precision of a forward pass's linear products on the CPU: F32 (sgemm, the reference that
// matches transformers) or BF16 inputs with fp32 accumulation, as a BF16 model on a GPU
// computes them (oneDNN: AMX / AVX-512 BF16 where the CPU has them).
enum class MatmulDType { F32, BF16 };

// Called inside block_forward() with the input of a linear layer just before its matrix
// product: x is row-major [rows, cols] (rows = tokens, cols = the layer's in-features),
// valid only during the call.
using LinearHook = std::function<void(int64_t layer, LinearInput role, const float* x,
                                      int64_t rows, int64_t cols)>;

// One decoder layer's weights, fp32.
struct LayerWeights {
  std::vector<float> input_norm;  // [hidden]   input_layernorm.weight
  std::vector<float> post_norm;   // [hidden]   post_attention_layernorm.weight
  std::vector<float> q_norm;      // [head_dim] self_attn.q_norm.weight (Qwen3), else empty
  std::vector<float> k_norm;      // [head_dim] self_attn.k_norm.weight (Qwen3), else empty
  Linear q, k, v, o;              // q: [heads*head_dim, hidden], k/v: [kv_heads*head_dim, hidden],
                                  // o: [hidden, heads*head_dim]
  Linear gate, up, down;          // gate/up: [intermediate, hidden], down: [hidden, intermediate]

  Linear& proj(Proj p);
  const Linear& proj(Proj p) const;
};

struct ModelLoadOptions {
  // Check every tensor of the checkpoint is used; unknown tensors are an error when true,
  // ignored when false (e.g. a checkpoint that also stores rotary inv_freq buffers).
  bool strict = false;
  // Leave the decoder layers in the checkpoint: only the embedding, final norm and LM head
  // are loaded, and read_layer()/set_layer()/drop_layer() bring one layer at a time into
  // memory (whole-model pruning of checkpoints larger than host memory). Every tensor's
  // presence, shape and dtype is still checked at load time.
  bool stream_layers = false;
  // Keep only the first max_layers decoder layers (0: all), as if the config said so; the
  // checkpoint's later layers are neither read nor checked. For benchmarks of deep models.
  int64_t max_layers = 0;
  // Load the LM head (false: lm_head() stays empty and final_norm_and_head() throws; for
  // whole-model pruning, which never runs it). A tied head is the embedding and always there.
  bool lm_head = true;
};

class Model {
 public:
  // Load <dir>/config.json and the weights (model.safetensors or a sharded index), converting
  // every tensor to fp32. Throws spense::Error naming the file and tensor on a missing
  // tensor, a wrong shape, a non-float dtype or an unsupported configuration.
  static Model load(const std::string& dir, const ModelLoadOptions& opts = {});
  // A model of the given shape with seeded random weights, the same values synth_write()
  // stores (before its BF16 rounding): linear weights and embeddings ~ N(0, 0.02), biases
  // ~ N(0, 0.02), norm weights ~ 1 + N(0, 0.02). For benchmarks and tests.
  static Model random(const ModelConfig& cfg, uint64_t seed, bool stream_layers = false);

  const ModelConfig& config() const { return cfg_; }
  int64_t num_layers() const { return cfg_.num_layers; }
  int64_t hidden_size() const { return cfg_.hidden_size; }
  int64_t vocab_size() const { return cfg_.vocab_size; }

  // Mutable access so pruned weights can be swapped in (shapes must stay the same). Throws
  // when layer i of a streaming model is not resident.
  LayerWeights& layer(int64_t i);
  const LayerWeights& layer(int64_t i) const;

  // Streaming models (ModelLoadOptions::stream_layers, or random(..., true)): layers start
  // out absent. read_layer(i) reads layer i from the source (the checkpoint, converted to
  // fp32, or the random generator) without touching the model, so one thread may read the
  // next layer while another computes with the current one; set_layer(i) makes it resident
  // and drop_layer(i) frees it again (read_layer() then reads the source again: the original
  // weights, not changes made while the layer was resident). A non-streaming model has every
  // layer resident and read_layer() returns a copy of it (not safe while another thread
  // changes that layer).
  bool streams_layers() const { return static_cast<bool>(source_); }
  bool layer_resident(int64_t i) const;
  LayerWeights read_layer(int64_t i) const;
  void set_layer(int64_t i, LayerWeights w);
  void drop_layer(int64_t i);  // streaming models only (a no-op otherwise)
  std::vector<float>& embedding() { return embed_; }      // [vocab, hidden]
  std::vector<float>& final_norm() { return final_norm_; }  // [hidden]
  // The LM head matrix [vocab, hidden]: the embedding itself when tie_word_embeddings.
  const std::vector<float>& lm_head() const { return cfg_.tie_word_embeddings ? embed_ : lm_head_; }
  std::vector<float>& lm_head() { return cfg_.tie_word_embeddings ? embed_ : lm_head_; }

  // hidden[T, hidden_size] = embedding rows of ids. Throws on an id outside [0, vocab).
  void embed(const int32_t* ids, int64_t T, float* hidden) const;
  // One decoder layer in place on hidden[T, hidden_size], positions 0..T-1 (causal).
  // hook, if set, sees the input of each linear layer before its product. Activation
  // buffers are kept per calling thread between calls (about T * (2*hidden + 4*heads*head_dim
  // + 2*intermediate) floats; freed at thread exit), so calls on one Model from several
  // threads are safe but each thread holds its own buffers. need_output = false skips the
  // down projection (for hooks that only want the linear inputs: hidden is then left after
  // the attention residual, not the block's output). linear_dtype BF16: the seven linear
  // products take BF16-rounded inputs with fp32 accumulation (ops::matmul_nt_bf16; needs a
  // build with oneDNN), attention and everything else stay fp32.
  void block_forward(int64_t layer, float* hidden, int64_t T, const LinearHook& hook = {},
                     bool need_output = true, MatmulDType linear_dtype = MatmulDType::F32) const;
  // logits[T, vocab] = lm_head(final_norm(hidden)). Call on a slice of rows to bound memory.
  void final_norm_and_head(const float* hidden, int64_t T, float* logits) const;
  // The whole forward pass: logits [T, vocab], row-major.
  std::vector<float> forward(const std::vector<int32_t>& ids, const LinearHook& hook = {}) const;

  // Multiply-adds of one forward pass over T tokens, times two (matrix products only, the
  // causal attention counted as T*(T+1)/2 score and value products per head).
  double forward_flops(int64_t T) const;
  // Parameter count (the tied LM head counted once), resident or not.
  int64_t num_params() const;

 private:
  ModelConfig cfg_;
  std::vector<float> embed_;
  std::vector<float> final_norm_;
  std::vector<float> lm_head_;  // empty when tied
  std::vector<LayerWeights> layers_;
  std::vector<float> inv_freq_;  // [head_dim / 2], see rope_inv_freq()
  std::vector<uint8_t> resident_;  // per layer
  // Reads one layer (streaming models; null otherwise). Shared so Model stays copyable.
  std::shared_ptr<const std::function<LayerWeights(int64_t)>> source_;

  friend struct ModelBuilder;  // src/model/model.cpp: fills the fields from a tensor source
};

// RoPE inverse frequencies [head_dim / 2] as transformers computes them (default and llama3
// scaling), rounded to fp32 like its float32 buffers.
std::vector<float> rope_inv_freq(const ModelConfig& cfg);

// Write a random-weight model directory: config.json (transformers 5 spelling),
// model.safetensors in BF16 (the values of Model::random(cfg, seed), rounded), and
// tokenizer.json copied from tokenizer_path when it is not empty. Creates dir if needed.
void synth_write(const ModelConfig& cfg, uint64_t seed, const std::string& dir,
                 const std::string& tokenizer_path = "");
// config.json text for cfg, in the transformers 5 spelling (dtype, rope_parameters).
std::string config_to_json_tx5(const ModelConfig& cfg);

// What a checkpoint tensor belongs to, from its HF name alone (for `spense inspect`).
enum class ModuleKind : uint8_t { EMBEDDING, ATTENTION, MLP, NORM, LM_HEAD, OTHER };
const char* module_kind_name(ModuleKind k);  // "embedding", "attention", "mlp", "norms", "lm_head", "other"
ModuleKind tensor_module_kind(const std::string& hf_name);

}  // namespace spense
