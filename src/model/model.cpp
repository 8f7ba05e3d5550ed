// Model: loading (checkpoint -> fp32 per-layer structs) and the CPU reference forward pass.
// Each step mirrors transformers' modeling_llama / modeling_qwen2 / modeling_qwen3 eager code:
// embed -> [RMSNorm -> q,k,v (+bias) -> (q/k norm) -> RoPE -> causal GQA softmax attention
// -> o -> residual -> RMSNorm -> SwiGLU MLP -> residual] x L -> RMSNorm -> LM head.
#include <cmath>
#include <functional>
#include <memory>
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

  // Stores one tensor of a layer (data may be empty: only the shape is recorded).
  static void set_tensor(LayerWeights& L, const arch::TensorSpec& spec, std::vector<float> data) {
    auto set_w = [&](Linear& lin) {
      lin.out = spec.shape[0];
      lin.in = spec.shape[1];
      lin.weight = std::move(data);
    };
    using R = arch::TensorRole;
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

  // stream: layer tensors are not filled (shapes only); the returned reader fills one layer.
  static void build(Model& m, const ModelConfig& cfg, const Fill& fill, bool stream) {
    m.cfg_ = cfg;
    m.layers_.assign(static_cast<size_t>(cfg.num_layers), LayerWeights{});
    m.resident_.assign(static_cast<size_t>(cfg.num_layers), stream ? 0 : 1);
    const auto specs = arch::model_tensors(cfg);
    for (const auto& spec : specs) {
      using R = arch::TensorRole;
      if (spec.layer < 0) {
        std::vector<float> data = fill(spec);
        switch (spec.role) {
          case R::EMBED: m.embed_ = std::move(data); break;
          case R::FINAL_NORM: m.final_norm_ = std::move(data); break;
          case R::LM_HEAD: m.lm_head_ = std::move(data); break;
          default: break;
        }
        continue;
      }
      set_tensor(m.layers_[static_cast<size_t>(spec.layer)], spec, stream ? std::vector<float>{} : fill(spec));
    }
    m.inv_freq_ = rope_inv_freq(cfg);
    if (stream) {
      // Per layer, its specs (in checkpoint order).
      auto per_layer = std::make_shared<std::vector<std::vector<arch::TensorSpec>>>(size_t(cfg.num_layers));
      for (const auto& spec : specs)
        if (spec.layer >= 0) (*per_layer)[size_t(spec.layer)].push_back(spec);
      m.source_ = std::make_shared<const std::function<LayerWeights(int64_t)>>([per_layer, fill](int64_t l) {
        LayerWeights L;
        for (const auto& spec : (*per_layer)[size_t(l)]) set_tensor(L, spec, fill(spec));
        return L;
      });
    }
  }
};

Model Model::load(const std::string& dir, const ModelLoadOptions& opts) {
  ModelConfig cfg = config_load(dir);
  arch::validate_config(cfg, dir + "/config.json");
  auto ckpt = std::make_shared<const Checkpoint>(Checkpoint::open(dir));
  if (opts.strict) {
    std::set<std::string> known;
    for (const auto& s : arch::model_tensors(cfg)) known.insert(s.name);
    if (cfg.tie_word_embeddings) known.insert(arch::tensor_name(arch::TensorRole::LM_HEAD));
    for (const auto& n : ckpt->names())
      if (!known.count(n)) throw Error(dir + ": unexpected tensor '" + n + "' for " + cfg.model_type);
  }
  if (opts.max_layers < 0) throw Error("max_layers must be >= 0", 1);
  if (opts.max_layers > 0 && opts.max_layers < cfg.num_layers) cfg.num_layers = opts.max_layers;
  const auto specs = arch::model_tensors(cfg);
  if (opts.stream_layers)
    for (const auto& s : specs) ckpt->check_float(s.name, s.shape);  // fail now, not at layer 40
  Model m;
  ModelBuilder::build(
      m, cfg,
      [ckpt, stream = opts.stream_layers, head = opts.lm_head](const arch::TensorSpec& s) {
        if (!head && s.role == arch::TensorRole::LM_HEAD) return std::vector<float>{};
        std::vector<float> v = ckpt->load_f32(s.name, s.shape);
        // Every tensor is read once (into fp32): give its mapped pages back so the checkpoint
        // does not accumulate in the resident set while the layers stream.
        if (stream) ckpt->drop_pages(s.name);
        return v;
      },
      opts.stream_layers);
  return m;
}

Model Model::random(const ModelConfig& cfg, uint64_t seed, bool stream_layers) {
  arch::validate_config(cfg, "random model");
  Model m;
  ModelBuilder::build(m, cfg, [seed](const arch::TensorSpec& s) { return synth_tensor(s, seed); }, stream_layers);
  return m;
}

bool Model::layer_resident(int64_t i) const {
  if (i < 0 || i >= num_layers()) throw Error("layer " + std::to_string(i) + " out of range", 1);
  return resident_[size_t(i)] != 0;
}

LayerWeights Model::read_layer(int64_t i) const {
  if (i < 0 || i >= num_layers()) throw Error("layer " + std::to_string(i) + " out of range", 1);
  if (!source_) return layers_[size_t(i)];
  return (*source_)(i);
}

void Model::set_layer(int64_t i, LayerWeights w) {
  if (i < 0 || i >= num_layers()) throw Error("layer " + std::to_string(i) + " out of range", 1);
  LayerWeights& L = layers_[size_t(i)];
  for (Proj p : kAllProjs)
    if (w.proj(p).out != L.proj(p).out || w.proj(p).in != L.proj(p).in ||
        w.proj(p).weight.size() != size_t(L.proj(p).out * L.proj(p).in))
      throw Error("set_layer " + std::to_string(i) + ": " + proj_name(p) + " has the wrong shape", 1);
  L = std::move(w);
  resident_[size_t(i)] = 1;
}

void Model::drop_layer(int64_t i) {
  if (!source_ || !layer_resident(i)) return;
  LayerWeights& L = layers_[size_t(i)];
  LayerWeights shapes;
  for (Proj p : kAllProjs) shapes.proj(p).out = L.proj(p).out, shapes.proj(p).in = L.proj(p).in;
  L = std::move(shapes);
  resident_[size_t(i)] = 0;
}

LayerWeights& Model::layer(int64_t i) {
  if (i < 0 || i >= num_layers()) throw Error("layer " + std::to_string(i) + " out of range", 1);
  if (!resident_[static_cast<size_t>(i)])
    throw Error("layer " + std::to_string(i) + " is not in memory (streaming model: set_layer() it first)", 1);
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

void Model::block_forward(int64_t li, float* hidden, int64_t T, const LinearHook& hook, bool need_output,
                          MatmulDType linear_dtype) const {
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
  ops::linear(xn, T, L.q, q, false, linear_dtype);
  ops::linear(xn, T, L.k, k, false, linear_dtype);
  ops::linear(xn, T, L.v, v, false, linear_dtype);
  if (!L.q_norm.empty()) ops::head_rmsnorm(q, T, NH, D, L.q_norm.data(), eps);
  if (!L.k_norm.empty()) ops::head_rmsnorm(k, T, NKV, D, L.k_norm.data(), eps);
  ops::rope_tables(inv_freq_, T, ws.cos, ws.sin);
  ops::rope_apply(q, T, NH, D, ws.cos.data(), ws.sin.data());
  ops::rope_apply(k, T, NKV, D, ws.cos.data(), ws.sin.data());
  float* attn = grow(ws.attn, T * QD);
  ops::attention_causal(q, k, v, T, NH, NKV, D, attn);
  if (hook) hook(li, LinearInput::O, attn, T, QD);
  ops::linear(attn, T, L.o, hidden, /*accumulate=*/true, linear_dtype);  // residual add

  // --- MLP ---
  ops::rmsnorm(hidden, T, H, L.post_norm.data(), eps, xn);
  if (hook) hook(li, LinearInput::GATE_UP, xn, T, H);
  float* g = grow(ws.g, T * I);
  float* u = grow(ws.u, T * I);
  ops::linear(xn, T, L.gate, g, false, linear_dtype);
  ops::linear(xn, T, L.up, u, false, linear_dtype);
  ops::silu_mul(g, u, T * I);
  if (hook) hook(li, LinearInput::DOWN, g, T, I);
  if (need_output) ops::linear(g, T, L.down, hidden, /*accumulate=*/true, linear_dtype);  // residual add
}

void Model::final_norm_and_head(const float* hidden, int64_t T, float* logits) const {
  if (T <= 0) return;
  if (lm_head().empty()) throw Error("the LM head was not loaded (ModelLoadOptions::lm_head = false)", 1);
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
  int64_t n = 0;
  for (const auto& spec : arch::model_tensors(cfg_)) {
    int64_t e = 1;
    for (int64_t d : spec.shape) e *= d;
    n += e;
  }
  return n;
}

}  // namespace spense
