// Model: loading (checkpoint -> fp32 per-layer structs) and the CPU reference forward pass.
// Each step mirrors transformers' modeling_llama / modeling_qwen2 / modeling_qwen3 eager code:
// embed -> [RMSNorm -> q,k,v (+bias) -> (q/k norm) -> RoPE -> causal GQA softmax attention
// -> o -> residual -> RMSNorm -> SwiGLU MLP -> residual] x L -> RMSNorm -> LM head.
#include <cmath>
#include <functional>
#include <set>

#include "model/arch.h"
#include "model/ops.h"
#include "model/synth.h"
#include "spense/error.h"
#include "spense/model.h"
#include "spense/safetensors.h"

namespace spense {

Linear& LayerWeights::proj(Proj p) {
  switch (p) {
    case Proj::Q: return q;
    case Proj::K: return k;
    case Proj::V: return v;
    case Proj::O: return o;
    case Proj::GATE: return gate;
    case Proj::UP: return up;
    case Proj::DOWN: return down;
  }
  return q;
}
const Linear& LayerWeights::proj(Proj p) const { return const_cast<LayerWeights*>(this)->proj(p); }


namespace {

// Activation buffers of block_forward(), kept per thread between calls. Fresh large
// allocations are mmapped and page-faulted on first write; in a VM that cost 0.1-0.2 s per
// layer at T = 2048 (gate/up products ran at 60% of the speed of the down product, which
// writes into the existing hidden state). Freed when the thread exits.
struct BlockWorkspace {
  std::vector<float> xn, q, k, v, attn, g, u, cos, sin;
};

float* grow(std::vector<float>& v, int64_t n) {
  if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
  return v.data();
}

}  // namespace

// Fills a Model from any tensor source (a checkpoint, or the random generator).
struct ModelBuilder {
  using Fill = std::function<std::vector<float>(const arch::TensorSpec&)>;

  static void build(Model& m, const ModelConfig& cfg, const Fill& fill) {
    m.cfg_ = cfg;
    m.layers_.assign(static_cast<size_t>(cfg.num_layers), LayerWeights{});
    for (const auto& spec : arch::model_tensors(cfg)) {
      std::vector<float> data = fill(spec);
      using R = arch::TensorRole;
      if (spec.layer < 0) {
        switch (spec.role) {
          case R::EMBED: m.embed_ = std::move(data); break;
          case R::FINAL_NORM: m.final_norm_ = std::move(data); break;
          case R::LM_HEAD: m.lm_head_ = std::move(data); break;
          default: break;
        }
        continue;
      }
      LayerWeights& L = m.layers_[static_cast<size_t>(spec.layer)];
      auto set_w = [&](Linear& lin) {
        lin.out = spec.shape[0];
        lin.in = spec.shape[1];
        lin.weight = std::move(data);
      };
      switch (spec.role) {
        case R::INPUT_NORM: L.input_norm = std::move(data); break;
        case R::POST_NORM: L.post_norm = std::move(data); break;
        case R::Q_NORM: L.q_norm = std::move(data); break;
        case R::K_NORM: L.k_norm = std::move(data); break;
        case R::Q: set_w(L.q); break;
        case R::K: set_w(L.k); break;
        case R::V: set_w(L.v); break;
        case R::O: set_w(L.o); break;
        case R::GATE: set_w(L.gate); break;
        case R::UP: set_w(L.up); break;
        case R::DOWN: set_w(L.down); break;
        case R::Q_BIAS: L.q.bias = std::move(data); break;
        case R::K_BIAS: L.k.bias = std::move(data); break;
        case R::V_BIAS: L.v.bias = std::move(data); break;
        case R::O_BIAS: L.o.bias = std::move(data); break;
        default: break;
      }
    }
    m.inv_freq_ = rope_inv_freq(cfg);
  }
};

Model Model::load(const std::string& dir, const ModelLoadOptions& opts) {
  ModelConfig cfg = config_load(dir);
  arch::validate_config(cfg, dir + "/config.json");
  Checkpoint ckpt = Checkpoint::open(dir);
  const auto specs = arch::model_tensors(cfg);
  if (opts.strict) {
    std::set<std::string> known;
    for (const auto& s : specs) known.insert(s.name);
    if (cfg.tie_word_embeddings) known.insert(arch::tensor_name(arch::TensorRole::LM_HEAD));
    for (const auto& n : ckpt.names())
      if (!known.count(n)) throw Error(dir + ": unexpected tensor '" + n + "' for " + cfg.model_type);
  }
  Model m;
  ModelBuilder::build(m, cfg, [&](const arch::TensorSpec& s) { return ckpt.load_f32(s.name, s.shape); });
  return m;
}

Model Model::random(const ModelConfig& cfg, uint64_t seed) {
  arch::validate_config(cfg, "random model");
  Model m;
  ModelBuilder::build(m, cfg, [&](const arch::TensorSpec& s) { return synth_tensor(s, seed); });
  return m;
}

LayerWeights& Model::layer(int64_t i) {
  if (i < 0 || i >= num_layers()) throw Error("layer " + std::to_string(i) + " out of range", 1);
  return layers_[static_cast<size_t>(i)];
}
const LayerWeights& Model::layer(int64_t i) const { return const_cast<Model*>(this)->layer(i); }

void Model::embed(const int32_t* ids, int64_t T, float* hidden) const {
  const int64_t H = cfg_.hidden_size, V = cfg_.vocab_size;
  for (int64_t t = 0; t < T; ++t)
    if (ids[t] < 0 || ids[t] >= V)
      throw Error("token id " + std::to_string(ids[t]) + " at position " + std::to_string(t) +
                  " is outside the vocabulary [0, " + std::to_string(V) + ")");
#pragma omp parallel for schedule(static) if (T * H >= ops::kParallelMinElems)
  for (int64_t t = 0; t < T; ++t) {
    const float* src = embed_.data() + static_cast<int64_t>(ids[t]) * H;
    std::copy(src, src + H, hidden + t * H);
  }
}

void Model::block_forward(int64_t li, float* hidden, int64_t T, const LinearHook& hook) const {
  const LayerWeights& L = layer(li);
  const int64_t H = cfg_.hidden_size, D = cfg_.head_dim;
  const int64_t NH = cfg_.num_heads, NKV = cfg_.num_kv_heads;
  const int64_t QD = NH * D, KVD = NKV * D, I = cfg_.intermediate_size;
  const double eps = cfg_.rms_norm_eps;
  if (T <= 0) return;
  ops::BlasSingleThread blas_guard;

  thread_local BlockWorkspace ws;
  // --- attention ---
  float* xn = grow(ws.xn, T * H);
  ops::rmsnorm(hidden, T, H, L.input_norm.data(), eps, xn);
  if (hook) hook(li, LinearInput::QKV, xn, T, H);
  float* q = grow(ws.q, T * QD);
  float* k = grow(ws.k, T * KVD);
  float* v = grow(ws.v, T * KVD);
  ops::linear(xn, T, L.q, q);
  ops::linear(xn, T, L.k, k);
  ops::linear(xn, T, L.v, v);
  if (!L.q_norm.empty()) ops::head_rmsnorm(q, T, NH, D, L.q_norm.data(), eps);
  if (!L.k_norm.empty()) ops::head_rmsnorm(k, T, NKV, D, L.k_norm.data(), eps);
  ops::rope_tables(inv_freq_, T, ws.cos, ws.sin);
  ops::rope_apply(q, T, NH, D, ws.cos.data(), ws.sin.data());
  ops::rope_apply(k, T, NKV, D, ws.cos.data(), ws.sin.data());
  float* attn = grow(ws.attn, T * QD);
  ops::attention_causal(q, k, v, T, NH, NKV, D, attn);
  if (hook) hook(li, LinearInput::O, attn, T, QD);
  ops::linear(attn, T, L.o, hidden, /*accumulate=*/true);  // residual add

  // --- MLP ---
  ops::rmsnorm(hidden, T, H, L.post_norm.data(), eps, xn);
  if (hook) hook(li, LinearInput::GATE_UP, xn, T, H);
  float* g = grow(ws.g, T * I);
  float* u = grow(ws.u, T * I);
  ops::linear(xn, T, L.gate, g);
  ops::linear(xn, T, L.up, u);
  ops::silu_mul(g, u, T * I);
  if (hook) hook(li, LinearInput::DOWN, g, T, I);
  ops::linear(g, T, L.down, hidden, /*accumulate=*/true);  // residual add
}

void Model::final_norm_and_head(const float* hidden, int64_t T, float* logits) const {
  if (T <= 0) return;
  ops::BlasSingleThread blas_guard;
  const int64_t H = cfg_.hidden_size;
  ops::Buffer xn(static_cast<size_t>(T * H));
  ops::rmsnorm(hidden, T, H, final_norm_.data(), cfg_.rms_norm_eps, xn.get());
  ops::matmul_nt(xn.get(), T, lm_head().data(), cfg_.vocab_size, H, logits);
}

std::vector<float> Model::forward(const std::vector<int32_t>& ids, const LinearHook& hook) const {
  const int64_t T = static_cast<int64_t>(ids.size()), H = cfg_.hidden_size;
  std::vector<float> hidden(static_cast<size_t>(T * H));
  embed(ids.data(), T, hidden.data());
  for (int64_t l = 0; l < num_layers(); ++l) block_forward(l, hidden.data(), T, hook);
  std::vector<float> logits(static_cast<size_t>(T * cfg_.vocab_size));
  final_norm_and_head(hidden.data(), T, logits.data());
  return logits;
}

double Model::forward_flops(int64_t T) const {
  double per_layer = 0;
  for (Proj p : kAllProjs) {
    const Linear& lin = layers_.at(0).proj(p);
    per_layer += 2.0 * static_cast<double>(T) * static_cast<double>(lin.out) * static_cast<double>(lin.in);
  }
  // scores and weighted values: 2 products of head_dim per visible (query, key) pair
  per_layer += 2.0 * 2.0 * cfg_.num_heads * cfg_.head_dim * (static_cast<double>(T) * (T + 1) / 2);
  return per_layer * num_layers() + 2.0 * static_cast<double>(T) * cfg_.vocab_size * cfg_.hidden_size;
}

int64_t Model::num_params() const {
  int64_t n = static_cast<int64_t>(embed_.size() + final_norm_.size() + lm_head_.size());
  for (const auto& L : layers_) {
    n += static_cast<int64_t>(L.input_norm.size() + L.post_norm.size() + L.q_norm.size() + L.k_norm.size());
    for (Proj p : kAllProjs) n += static_cast<int64_t>(L.proj(p).weight.size() + L.proj(p).bias.size());
  }
  return n;
}

}  // namespace spense
