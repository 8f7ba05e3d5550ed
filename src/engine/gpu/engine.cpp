// The GPU decode engine (include/spense/cuda/engine.h): loading (checkpoint or synthetic),
// the decoder forward over a set of token rows, prefill, graph-captured decode steps.
// What it does not do: tokenization (src/tokenizer), GEMMs (src/cuda linear layers).
#include "spense/cuda/engine.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "engine/gpu/engine_kernels.h"
#include "model/arch.h"
#include "spense/cuda/kernels.h"
#include "spense/error.h"
#include "spense/progress.h"
#include "spense/safetensors.h"

namespace spense::cuda {
namespace {

using engine::bf16_t;

template <class T>
DeviceBuffer upload_vec(const std::vector<T>& v) {
  return device_upload(v.data(), v.size() * sizeof(T));
}

// A checkpoint tensor as BF16 bits (any float dtype).
std::vector<uint16_t> tensor_bf16(const TensorRef& t) {
  const size_t n = static_cast<size_t>(t.info->numel());
  std::vector<uint16_t> out(n);
  if (t.info->dtype == DType::BF16) {
    std::copy_n(reinterpret_cast<const uint16_t*>(t.data), n, out.data());
    return out;
  }
  if (!dtype_is_float(t.info->dtype))
    throw Error(*t.file + ": tensor '" + t.info->name + "' has dtype " + dtype_name(t.info->dtype) +
                ", expected a float type");
  std::vector<float> f(n);
  convert_to_f32(t.info->dtype, t.data, f.data(), n);
  convert_from_f32(DType::BF16, f.data(), out.data(), n);
  return out;
}

// The cuBLASLt / cuSPARSELt form of a plan.
std::unique_ptr<Linear> make_library_linear(Context& ctx, const LinearPlan& lp, const WeightsView& wv,
                                            const EngineOptions& eo, const LinearOptions& lo) {
  const ProjFormat& f = lp.format;
  switch (f.kind) {
    case ProjFormat::DENSE: return make_dense_linear(ctx, lp.n, lp.k, eo.precision, wv, lo);
    case ProjFormat::SPARSE24: return make_sparse_linear(ctx, lp.n, lp.k, eo.precision, wv, lo);
    case ProjFormat::HYBRID: {
      HybridLayout hl;
      hl.axis = f.layout.axis == SpenseAxis::OUT ? HybridAxis::OUT : HybridAxis::IN;
      hl.tile = f.layout.g;
      for (int64_t t : f.layout.dense_tiles) hl.dense_tiles.push_back(static_cast<int32_t>(t));
      return make_hybrid_linear(ctx, lp.n, lp.k, eo.precision, wv, hl, lo);
    }
  }
  return nullptr;
}

// Quick timing of one layer at m rows (median, L2 flushed before each call: in a decode step the
// weights come from device memory), for the AUTO back end's choice and --verbose (not reported).
// as_graph: the layer's launches captured once and replayed as a CUDA graph, as a decode step
// runs them (a library hybrid's fork and join become graph edges); else eager launches.
float time_linear(Linear& l, int64_t m, bool as_graph = false) {
  l.prepare(m);
  const int64_t rows = l.rows_capacity(m);
  DeviceBuffer x(static_cast<size_t>(rows * l.k()) * 2), y(static_cast<size_t>(rows * l.n()) * 4);
  Stream st;
  fill_random(x.get(), DType::BF16, static_cast<size_t>(rows * l.k()), 5, 1.f, st.get());
  auto forward = [&](cudaStream_t s) { l.forward(x.get(), y.get(), m, s); };
  if (!as_graph) return time_calls_cold_ms(st.get(), forward);
  GraphExec g;
  g.capture(st.get(), forward);
  return time_calls_cold_ms(st.get(), [&](cudaStream_t s) { g.launch(s); });
}

// Builds one GPU linear from BF16 weights on the device (n x k, modified in place when the
// plan prunes on load).
std::unique_ptr<Linear> build_linear(Context& ctx, const LinearPlan& lp, void* w_dev, const EngineOptions& eo,
                                     cudaStream_t s) {
  // w_dev was usually just filled by a pageable cudaMemcpy on the legacy stream, which may
  // return before its DMA lands; the kernels below run on the non-blocking stream s, which
  // does not wait for it (seen as intermittently wrong FP8 weights): wait for everything.
  SPENSE_CUDA_CHECK(cudaDeviceSynchronize());
  const ProjFormat& f = lp.format;
  if (f.prune_on_load && f.kind != ProjFormat::DENSE) {
    DeviceBuffer rows_mask, cols_mask;
    if (f.kind == ProjFormat::HYBRID) {
      const bool out = f.layout.axis == SpenseAxis::OUT;
      std::vector<uint8_t> mask(static_cast<size_t>(out ? lp.n : lp.k), 0);
      for (int64_t t : f.layout.dense_tiles)
        std::fill_n(mask.begin() + t * f.layout.g, f.layout.g, uint8_t(1));
      (out ? rows_mask : cols_mask) = upload_vec(mask);
    }
    prune24_16(w_dev, DType::BF16, lp.n, lp.k, rows_mask.as<uint8_t>(), cols_mask.as<uint8_t>(), s);
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(s));  // before the masks are freed
  }
  LinearOptions lo;
  lo.name = lp.name;
  lo.sparse_search = eo.sparse_search;
  lo.dense_search = eo.dense_search;
  lo.concurrent = eo.concurrent;
  lo.small_m_kernel = eo.small_m_kernel;
  lo.pdl = eo.pdl;
  lo.small_m_e4m3_tokens = eo.e4m3_tokens;
  WeightsView wv{w_dev, DType::BF16, nullptr};
  DeviceBuffer q, scales;
  if (eo.precision == LinearPrecision::FP8) {
    q = DeviceBuffer(static_cast<size_t>(lp.n * lp.k));
    scales = DeviceBuffer(static_cast<size_t>(lp.n) * sizeof(float));
    quantize_rows_e4m3(w_dev, DType::BF16, lp.k, lp.n, lp.n, lp.k, nullptr, q.as<uint8_t>(), lp.k,
                       scales.as<float>(), s);
    wv = WeightsView{q.get(), DType::F8_E4M3, scales.as<float>()};
  }
  SPENSE_CUDA_CHECK(cudaDeviceSynchronize());  // prune / quantize above ran on s; the layers copy on the legacy stream
  const bool ours_ok =
      !(f.kind == ProjFormat::HYBRID && f.layout.axis == SpenseAxis::IN && !gemv_axis_in_tile_ok(f.layout.g));
  auto make_ours = [&] {
    GemvLayout gl;
    gl.all_dense = f.kind == ProjFormat::DENSE;
    if (f.kind == ProjFormat::HYBRID) {
      gl.axis = f.layout.axis == SpenseAxis::OUT ? HybridAxis::OUT : HybridAxis::IN;
      gl.tile = f.layout.g;
      for (int64_t t : f.layout.dense_tiles) gl.dense_tiles.push_back(static_cast<int32_t>(t));
    }
    return make_gemv_linear(ctx, lp.n, lp.k, eo.precision, wv, gl, lo);
  };
  // EngineOptions::verbose: the layer's standalone time at the largest batch and its plan, so a
  // step's per-operation profile can be set against the layer alone.
  auto report = [&](std::unique_ptr<Linear> l, const char* how) {
    if (eo.verbose) {
      const double us = 1000.0 * time_linear(*l, eo.max_batch);  // prepares the plan printed below
      std::string graph;
      try {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.2f us", 1000.0 * time_linear(*l, eo.max_batch, true));
        graph = buf;
      } catch (const std::exception& e) {
        graph = std::string("failed (") + e.what() + ")";
      }
      std::fprintf(stderr, "%s [%lld x %lld]: %s, %.2f us alone at M=%lld (as a graph: %s); %s\n", lp.name.c_str(),
                   (long long)lp.n, (long long)lp.k, how, us, (long long)eo.max_batch, graph.c_str(),
                   l->plan_info(eo.max_batch).c_str());
    }
    return l;
  };
  if (ours_ok && (eo.backend == GemmBackend::SPENSE || (eo.backend == GemmBackend::AUTO && f.kind == ProjFormat::DENSE)))
    return report(make_ours(), "ours");  // the dense wrapper itself takes cuBLASLt where that is faster
  if (ours_ok && eo.backend == GemmBackend::AUTO) {
    // Both kernels for this layer, timed at the engine's largest batch; the slower is freed.
    std::unique_ptr<Linear> lib = make_library_linear(ctx, lp, wv, eo, lo);
    std::unique_ptr<Linear> own = make_ours();
    const float t_own = time_linear(*own, eo.max_batch, eo.auto_time_graphs),
                t_lib = time_linear(*lib, eo.max_batch, eo.auto_time_graphs);
    if (eo.verbose)
      std::fprintf(stderr, "%s: auto at M=%lld (%s): ours %.2f us, library %.2f us\n", lp.name.c_str(),
                   (long long)eo.max_batch, eo.auto_time_graphs ? "graphs" : "eager", 1000.0 * t_own,
                   1000.0 * t_lib);
    return report(t_own < t_lib ? std::move(own) : std::move(lib), t_own < t_lib ? "ours" : "library");
  }
  return report(make_library_linear(ctx, lp, wv, eo, lo), "library");
}

std::string format_label(const LinearPlan& lp) {
  const ProjFormat& f = lp.format;
  if (f.kind != ProjFormat::HYBRID) return proj_kind_name(f.kind);
  const bool out = f.layout.axis == SpenseAxis::OUT;
  const double tiles = static_cast<double>((out ? lp.n : lp.k) / f.layout.g);
  char buf[96];
  std::snprintf(buf, sizeof buf, "spense-%s d=%.3f g=%lld", spense_axis_name(f.layout.axis),
                static_cast<double>(f.layout.dense_tiles.size()) / tiles, static_cast<long long>(f.layout.g));
  return buf;
}

struct GpuLayer {
  DeviceBuffer in_norm, post_norm, q_norm, k_norm, qkv_bias, o_bias;  // fp32; q/k norm, biases may be empty
  bool has_qk_norm = false, has_qkv_bias = false, has_o_bias = false;
  std::vector<std::unique_ptr<Linear>> qkv;      // 1 fused or 3 (q, k, v)
  std::unique_ptr<Linear> o;
  std::vector<std::unique_ptr<Linear>> gate_up;  // 1 fused or 2 (gate, up)
  std::unique_ptr<Linear> down;

  template <class Fn>
  void each_linear(Fn&& fn) const {
    for (const auto& l : qkv) fn(*l);
    fn(*o);
    for (const auto& l : gate_up) fn(*l);
    fn(*down);
  }
};

class EngineImpl final : public Engine {
 public:
  EngineImpl(Context& ctx, ModelConfig cfg, EngineOptions opts, std::vector<LayerPlan> plan)
      : ctx_(ctx), cfg_(std::move(cfg)), opts_(opts), plan_(std::move(plan)) {
    if (opts_.precision == LinearPrecision::FP16)
      throw Error("the decode engine runs bf16 or fp8 (fp16 activations are not supported)");
    if (opts_.max_batch <= 0 || opts_.max_ctx <= 0 || opts_.prefill_chunk <= 0)
      throw Error("engine: max batch, max context and prefill chunk must be positive");
    if (opts_.max_ctx % 8 != 0) opts_.max_ctx = (opts_.max_ctx + 7) / 8 * 8;
    H_ = cfg_.hidden_size;
    D_ = cfg_.head_dim;
    NH_ = cfg_.num_heads;
    NKV_ = cfg_.num_kv_heads;
    QD_ = NH_ * D_;
    KVD_ = NKV_ * D_;
    I_ = cfg_.intermediate_size;
    V_ = cfg_.vocab_size;
    if (D_ % 8 != 0) throw Error("engine: head_dim " + std::to_string(D_) + " is not a multiple of 8");
  }

  // --- construction -------------------------------------------------------------------
  void load_checkpoint(const std::string& dir) {
    Checkpoint ck = Checkpoint::open(dir);
    using arch::TensorRole;
    auto get = [&](TensorRole role, int64_t layer, const std::vector<int64_t>& shape) {
      return ck.get(arch::tensor_name(role, layer), shape);
    };
    auto vec = [&](TensorRole role, int64_t layer, int64_t n) { return ck.load_f32(arch::tensor_name(role, layer), {n}); };
    auto norm = [&](TensorRole role, int64_t layer, int64_t n) { return upload_vec(vec(role, layer, n)); };
    ProgressBar bar("load " + dir, cfg_.num_layers, "layer");
    DeviceBuffer tmp;
    for (int64_t l = 0; l < cfg_.num_layers; ++l) {
      GpuLayer L;
      L.in_norm = norm(TensorRole::INPUT_NORM, l, H_);
      L.post_norm = norm(TensorRole::POST_NORM, l, H_);
      if (arch::has_qk_norm(cfg_)) {
        L.has_qk_norm = true;
        L.q_norm = norm(TensorRole::Q_NORM, l, D_);
        L.k_norm = norm(TensorRole::K_NORM, l, D_);
      }
      if (arch::has_qkv_bias(cfg_)) {
        std::vector<float> b;
        for (auto [role, n] : {std::pair{TensorRole::Q_BIAS, QD_}, {TensorRole::K_BIAS, KVD_}, {TensorRole::V_BIAS, KVD_}}) {
          auto v = vec(role, l, n);
          b.insert(b.end(), v.begin(), v.end());
        }
        L.has_qkv_bias = true;
        L.qkv_bias = upload_vec(b);
      }
      if (arch::has_o_bias(cfg_)) {
        L.has_o_bias = true;
        L.o_bias = norm(TensorRole::O_BIAS, l, H_);
      }
      const LayerPlan& lp = plan_[static_cast<size_t>(l)];
      auto make = [&](const LinearPlan& p) {
        std::vector<uint16_t> w;
        w.reserve(static_cast<size_t>(p.n * p.k));
        for (Proj pr : p.projs) {
          const auto [n, k] = proj_shape(cfg_, pr);
          auto part = tensor_bf16(ck.get(proj_module(l, pr) + ".weight", {n, k}));
          w.insert(w.end(), part.begin(), part.end());
        }
        const size_t bytes = w.size() * 2;
        if (tmp.size() < bytes) tmp = DeviceBuffer(bytes);
        copy_to_device(tmp.get(), w.data(), bytes);
        return build_linear(ctx_, p, tmp.get(), opts_, stream_.get());
      };
      for (const auto& p : lp.qkv) L.qkv.push_back(make(p));
      L.o = make(lp.o);
      for (const auto& p : lp.gate_up) L.gate_up.push_back(make(p));
      L.down = make(lp.down);
      if (opts_.verbose) log_layer(l);
      layers_.push_back(std::move(L));
      bar.update(l + 1);
    }
    bar.finish();
    final_norm_ = norm(TensorRole::FINAL_NORM, -1, H_);
    auto emb = tensor_bf16(get(TensorRole::EMBED, -1, {V_, H_}));
    embed_ = upload_vec(emb);
    if (cfg_.tie_word_embeddings) make_lm_head(embed_.get());
    else make_lm_head(upload_vec(tensor_bf16(get(TensorRole::LM_HEAD, -1, {V_, H_}))).get());
    inv_freq_ = upload_vec(rope_inv_freq(cfg_));
    allocate_state();
  }

  void build_synthetic() {
    std::vector<float> ones_h(static_cast<size_t>(H_), 1.f), ones_d(static_cast<size_t>(D_), 1.f);
    cudaStream_t s = stream_.get();
    const LayerPlan& lp = plan_[0];
    GpuLayer first;
    {
      size_t maxw = 0;
      for (const auto* p : {&lp.o, &lp.down}) maxw = std::max<size_t>(maxw, p->n * p->k);
      for (const auto& p : lp.qkv) maxw = std::max<size_t>(maxw, p.n * p.k);
      for (const auto& p : lp.gate_up) maxw = std::max<size_t>(maxw, p.n * p.k);
      DeviceBuffer tmp(maxw * 2);
      uint64_t seed = opts_.seed * 1000 + 1;
      auto make = [&](const LinearPlan& p) {
        fill_random(tmp.get(), DType::BF16, static_cast<size_t>(p.n * p.k), seed++, 0.02f, s);
        return build_linear(ctx_, p, tmp.get(), opts_, s);
      };
      for (const auto& p : lp.qkv) first.qkv.push_back(make(p));
      first.o = make(lp.o);
      for (const auto& p : lp.gate_up) first.gate_up.push_back(make(p));
      first.down = make(lp.down);
    }
    ProgressBar bar("synthetic layers", cfg_.num_layers, "layer");
    for (int64_t l = 0; l < cfg_.num_layers; ++l) {
      GpuLayer L;
      L.in_norm = upload_vec(ones_h);
      L.post_norm = upload_vec(ones_h);
      if (arch::has_qk_norm(cfg_)) {
        L.has_qk_norm = true;
        L.q_norm = upload_vec(ones_d);
        L.k_norm = upload_vec(ones_d);
      }
      if (l == 0) {
        L.qkv = std::move(first.qkv);
        L.o = std::move(first.o);
        L.gate_up = std::move(first.gate_up);
        L.down = std::move(first.down);
      } else {
        const GpuLayer& L0 = layers_[0];
        for (const auto& x : L0.qkv) L.qkv.push_back(x->replicate());
        L.o = L0.o->replicate();
        for (const auto& x : L0.gate_up) L.gate_up.push_back(x->replicate());
        L.down = L0.down->replicate();
      }
      layers_.push_back(std::move(L));
      bar.update(l + 1);
    }
    bar.finish();
    final_norm_ = upload_vec(ones_h);
    embed_ = DeviceBuffer(static_cast<size_t>(V_ * H_) * 2);
    fill_random(embed_.get(), DType::BF16, static_cast<size_t>(V_ * H_), opts_.seed * 1000 + 999, 0.02f, s);
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(s));
    make_lm_head(embed_.get());
    inv_freq_ = upload_vec(rope_inv_freq(cfg_));
    allocate_state();
  }

  // --- Engine interface ------------------------------------------------------------------
  const ModelConfig& config() const override { return cfg_; }
  const EngineOptions& options() const override { return opts_; }

  EngineMemory memory() const override {
    EngineMemory m;
    for (const auto& L : layers_) L.each_linear([&](const Linear& x) { m.linear_weight_bytes += x.weight_bytes(); });
    m.other_weight_bytes = embed_.size() + lm_head_->weight_bytes() + norm_bytes();
    m.kv_cache_bytes = k_cache_.size() + v_cache_.size();
    m.activation_bytes = activation_bytes_;
    size_t free_b = 0, total_b = 0;
    SPENSE_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    m.device_used_bytes = total_b - free_b;
    return m;
  }

  size_t weight_bytes_per_step() const override {
    size_t b = lm_head_->weight_bytes() + norm_bytes();
    for (const auto& L : layers_) L.each_linear([&](const Linear& x) { b += x.weight_bytes(); });
    return b;
  }

  size_t kv_bytes_per_step(int64_t batch) const override {
    size_t toks = 0;
    for (int64_t r = 0; r < batch; ++r) toks += static_cast<size_t>(lens_[static_cast<size_t>(r)] + 1);
    return toks * static_cast<size_t>(KVD_) * 2 * engine::kv_cache_bytes(kv()) * static_cast<size_t>(cfg_.num_layers);
  }

  std::string describe() const override {
    std::string s;
    const LayerPlan& lp = plan_[0];
    auto add = [&](const LinearPlan& p, const Linear& x) {
      s += "  " + p.name + " [" + std::to_string(p.n) + " x " + std::to_string(p.k) + "] " + format_label(p) + " " +
           precision_name(opts_.precision) + ", " + std::to_string(x.weight_bytes()) + " B; " +
           x.plan_info(opts_.max_batch) + "\n";
    };
    const GpuLayer& L = layers_[0];
    for (size_t i = 0; i < lp.qkv.size(); ++i) add(lp.qkv[i], *L.qkv[i]);
    add(lp.o, *L.o);
    for (size_t i = 0; i < lp.gate_up.size(); ++i) add(lp.gate_up[i], *L.gate_up[i]);
    add(lp.down, *L.down);
    return s;
  }

  void reset(int64_t slot) override {
    check_slot(slot);
    set_len(slot, 0);
  }
  int64_t length(int64_t slot) const override {
    check_slot(slot);
    return lens_[static_cast<size_t>(slot)];
  }

  std::vector<float> prefill(int64_t slot, const std::vector<int32_t>& ids, bool all_logits) override {
    check_slot(slot);
    const int64_t n = static_cast<int64_t>(ids.size());
    if (n == 0) throw Error("prefill: empty prompt");
    for (int64_t i = 0; i < n; ++i)
      if (ids[i] < 0 || ids[i] >= V_)
        throw Error("token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                    " is outside the vocabulary [0, " + std::to_string(V_) + ")");
    const int64_t len0 = lens_[static_cast<size_t>(slot)];
    if (len0 + n > opts_.max_ctx)
      throw Error("sequence of " + std::to_string(len0 + n) + " tokens exceeds the engine's context of " +
                  std::to_string(opts_.max_ctx) + " (raise --max-ctx)");
    cudaStream_t s = stream_.get();
    std::vector<float> out(static_cast<size_t>((all_logits ? n : 1) * V_));
    std::vector<int32_t> slots, pos;
    for (int64_t c0 = 0; c0 < n; c0 += opts_.prefill_chunk) {
      const int64_t c = std::min(opts_.prefill_chunk, n - c0);
      slots.assign(static_cast<size_t>(c), static_cast<int32_t>(slot));
      pos.resize(static_cast<size_t>(c));
      for (int64_t i = 0; i < c; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(len0 + c0 + i);
      SPENSE_CUDA_CHECK(cudaMemcpyAsync(pf_ids_.get(), ids.data() + c0, c * sizeof(int32_t), cudaMemcpyHostToDevice, s));
      SPENSE_CUDA_CHECK(cudaMemcpyAsync(pf_slot_.get(), slots.data(), c * sizeof(int32_t), cudaMemcpyHostToDevice, s));
      SPENSE_CUDA_CHECK(cudaMemcpyAsync(pf_pos_.get(), pos.data(), c * sizeof(int32_t), cudaMemcpyHostToDevice, s));
      const bool last = c0 + c == n;
      const int64_t row0 = all_logits ? 0 : c - 1, nrows = all_logits ? c : 1;
      forward(c, pf_ids_.as<int32_t>(), pf_slot_.as<int32_t>(), pf_pos_.as<int32_t>(), opts_.prefill_kv_chunk, row0,
              nrows, s);
      if (all_logits || last) {
        float* dst = out.data() + (all_logits ? c0 * V_ : 0);
        SPENSE_CUDA_CHECK(cudaMemcpyAsync(dst, logits_.get(), nrows * V_ * sizeof(float), cudaMemcpyDeviceToHost, s));
      }
      SPENSE_CUDA_CHECK(cudaStreamSynchronize(s));  // host vectors above are reused per chunk
    }
    set_len(slot, len0 + n);
    return out;
  }

  void set_tokens(const std::vector<int32_t>& t) override {
    const int64_t b = static_cast<int64_t>(t.size());
    if (b > opts_.max_batch) throw Error("set_tokens: batch " + std::to_string(b) + " exceeds the engine's " +
                                         std::to_string(opts_.max_batch) + " slots");
    for (int64_t i = 0; i < b; ++i)
      if (t[i] < 0 || t[i] >= V_) throw Error("token id " + std::to_string(t[i]) + " is outside the vocabulary");
    SPENSE_CUDA_CHECK(cudaMemcpyAsync(tok_.get(), t.data(), b * sizeof(int32_t), cudaMemcpyHostToDevice, stream_.get()));
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  }

  void step(int64_t batch) override {
    check_batch(batch);
    for (int64_t r = 0; r < batch; ++r)
      if (lens_[static_cast<size_t>(r)] >= opts_.max_ctx)
        throw Error("slot " + std::to_string(r) + " is full (" + std::to_string(opts_.max_ctx) +
                    " tokens; raise --max-ctx)");
    cudaStream_t s = stream_.get();
    if (opts_.graphs) {
      auto it = graphs_.find(batch);
      if (it == graphs_.end() || it->second.gen != ctx_.scratch_generation()) {
        prepare_step(batch);
        it = graphs_.find(batch);
      }
      it->second.exec->launch(s);
    } else {
      step_body(batch, s);
    }
    for (int64_t r = 0; r < batch; ++r) ++lens_[static_cast<size_t>(r)];
  }

  std::vector<int32_t> tokens(int64_t batch) override {
    check_batch(batch);
    std::vector<int32_t> t(static_cast<size_t>(batch));
    SPENSE_CUDA_CHECK(cudaMemcpyAsync(t.data(), tok_.get(), batch * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_.get()));
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    return t;
  }

  std::vector<float> logits(int64_t batch) override {
    check_batch(batch);
    std::vector<float> l(static_cast<size_t>(batch * V_));
    SPENSE_CUDA_CHECK(cudaMemcpyAsync(l.data(), logits_.get(), l.size() * sizeof(float), cudaMemcpyDeviceToHost,
                                      stream_.get()));
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    return l;
  }

  void fill_cache_random(int64_t batch, int64_t len, uint64_t seed) override {
    check_batch(batch);
    if (len < 0 || len >= opts_.max_ctx) throw Error("fill_cache_random: length " + std::to_string(len) +
                                                     " must be below the context " + std::to_string(opts_.max_ctx));
    const size_t per_layer = static_cast<size_t>(opts_.max_batch * NKV_ * opts_.max_ctx * D_);
    const size_t used = static_cast<size_t>(batch * NKV_ * opts_.max_ctx * D_);
    const size_t eb = engine::kv_cache_bytes(kv());
    const DType t = kv() == engine::KvCache::E4M3 ? DType::F8_E4M3 : DType::BF16;
    for (int64_t l = 0; l < cfg_.num_layers; ++l) {
      fill_random(k_cache_.as<uint8_t>() + l * per_layer * eb, t, used, seed + 2 * l, 1.f, stream_.get());
      fill_random(v_cache_.as<uint8_t>() + l * per_layer * eb, t, used, seed + 2 * l + 1, 1.f, stream_.get());
    }
    for (int64_t r = 0; r < batch; ++r) set_len(r, len);
    set_tokens(std::vector<int32_t>(static_cast<size_t>(batch), 0));
  }

  void prepare_step(int64_t batch) override {
    check_batch(batch);
    for (const auto& L : layers_) L.each_linear([&](Linear& x) { x.prepare(batch); });
    lm_head_->prepare(batch);
    if (!opts_.graphs) return;
    cudaStream_t s = stream_.get();
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(s));
    auto g = std::make_unique<GraphExec>();
    g->capture(s, [&](cudaStream_t cs) { step_body(batch, cs); });
    graphs_[batch] = CapturedStep{std::move(g), ctx_.scratch_generation()};
  }

  cudaStream_t stream() const override { return stream_.get(); }

  std::vector<std::pair<std::string, double>> profile_step(int64_t batch, int reps) override {
    check_batch(batch);
    if (reps < 1) throw Error("profile_step: reps must be positive");
    for (int64_t r = 0; r < batch; ++r)
      if (lens_[static_cast<size_t>(r)] + reps + 1 > opts_.max_ctx)
        throw Error("profile_step: slot " + std::to_string(r) + " has no room for " + std::to_string(reps + 1) +
                    " more tokens (max context " + std::to_string(opts_.max_ctx) + ")");
    prepare_step(batch);  // plans and scratch of every layer, outside any capture
    cudaStream_t s = stream_.get();
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(s));
    // One eager pass only counts the marks, so that every event exists before the capture.
    Profile prof;
    prof_ = &prof;
    int64_t steps_run = 0;  // each advances the device lengths: the host's follow, also on a throw
    try {
      step_body(batch, s);
      ++steps_run;
      SPENSE_CUDA_CHECK(cudaStreamSynchronize(s));
      for (size_t i = 0; i < prof.kinds.size(); ++i) prof.events.push_back(std::make_unique<Event>(true));
      prof.kinds.clear();
      prof.recording = true;
      std::unique_ptr<GraphExec> g;
      if (opts_.graphs) {
        g = std::make_unique<GraphExec>();
        try {
          g->capture(s, [&](cudaStream_t cs) { step_body(batch, cs); });
        } catch (const std::exception& e) {
          // A capture that cannot take the event nodes between the kernels falls back to eager
          // replays (the times then include launch gaps).
          (void)cudaGetLastError();
          std::fprintf(stderr, "profile_step: capturing the marked step failed (%s); profiling eager launches\n",
                       e.what());
          g.reset();
        }
      }
      prof_ = nullptr;
      std::vector<std::string> order;
      std::map<std::string, std::vector<double>> per_kind;
      for (int r = 0; r < reps; ++r) {
        if (g) g->launch(s);
        else {
          prof_ = &prof;
          prof.kinds.clear();
          step_body(batch, s);
          prof_ = nullptr;
        }
        ++steps_run;
        SPENSE_CUDA_CHECK(cudaStreamSynchronize(s));
        std::map<std::string, double> sum;
        for (size_t i = 1; i < prof.kinds.size(); ++i) {
          float ms = 0;
          SPENSE_CUDA_CHECK(cudaEventElapsedTime(&ms, prof.events[i - 1]->get(), prof.events[i]->get()));
          if (!sum.count(prof.kinds[i]) && r == 0) order.push_back(prof.kinds[i]);
          sum[prof.kinds[i]] += ms;
        }
        for (const auto& kv : sum) per_kind[kv.first].push_back(kv.second);
      }
      for (int64_t r = 0; r < batch; ++r) lens_[static_cast<size_t>(r)] += steps_run;
      std::vector<std::pair<std::string, double>> out;
      for (const auto& k : order) {
        std::vector<double> v = per_kind[k];
        std::sort(v.begin(), v.end());
        out.emplace_back(k, v[v.size() / 2]);
      }
      return out;
    } catch (...) {
      prof_ = nullptr;
      for (int64_t r = 0; r < batch; ++r) lens_[static_cast<size_t>(r)] += steps_run;
      throw;
    }
  }

 private:
  // Timing marks of profile_step: kinds[i] names the operation that ends at events[i].
  struct Profile {
    std::vector<std::string> kinds;
    std::vector<std::unique_ptr<Event>> events;
    bool recording = false;
  };
  void mark(const char* kind, cudaStream_t s) {
    if (!prof_) return;
    const size_t i = prof_->kinds.size();
    prof_->kinds.push_back(kind);
    if (!prof_->recording) return;
    if (i >= prof_->events.size()) throw Error("profile_step: the step ran more operations than counted");
    // External: inside a capture this becomes an event-record node rather than a dependency.
    SPENSE_CUDA_CHECK(cudaEventRecordWithFlags(prof_->events[i]->get(), s,
                                               stream_is_capturing(s) ? cudaEventRecordExternal : cudaEventRecordDefault));
  }

  struct CapturedStep {
    std::unique_ptr<GraphExec> exec;
    uint64_t gen = 0;
  };

  void make_lm_head(const void* w_dev) {
    LinearOptions lo;
    lo.name = "lm_head";
    lo.f32_output = true;
    lo.dense_search = opts_.dense_search;
    lm_head_ = make_dense_linear(ctx_, V_, H_, LinearPrecision::BF16, WeightsView{w_dev, DType::BF16, nullptr}, lo);
  }

  size_t norm_bytes() const {
    size_t b = final_norm_.size();
    for (const auto& L : layers_)
      b += L.in_norm.size() + L.post_norm.size() + L.q_norm.size() + L.k_norm.size() + L.qkv_bias.size() +
           L.o_bias.size();
    return b;
  }

  void log_layer(int64_t l) const {
    const LayerPlan& lp = plan_[static_cast<size_t>(l)];
    std::string s = "layer " + std::to_string(l) + ":";
    for (const auto& p : lp.qkv) s += " " + p.name.substr(p.name.rfind('.') + 1) + "=" + format_label(p);
    s += " o_proj=" + format_label(lp.o);
    for (const auto& p : lp.gate_up) s += " " + p.name.substr(p.name.rfind('.') + 1) + "=" + format_label(p);
    s += " down_proj=" + format_label(lp.down);
    std::fprintf(stderr, "%s\n", s.c_str());
  }

  void allocate_state() {
    cap_ = rows_bucket(std::max(opts_.max_batch, opts_.prefill_chunk));
    auto alloc = [&](DeviceBuffer& b, size_t bytes) {
      b = DeviceBuffer(std::max<size_t>(bytes, 16));
      SPENSE_CUDA_CHECK(cudaMemset(b.get(), 0, b.size()));
      activation_bytes_ += b.size();
    };
    const size_t cap = static_cast<size_t>(cap_);
    alloc(h_, cap * H_ * 4);
    alloc(xn_, cap * H_ * 2);
    alloc(qkv_, cap * (QD_ + 2 * KVD_) * 2);
    alloc(qf_, cap * QD_ * 4);
    alloc(attn_, cap * QD_ * 2);
    alloc(o_out_, cap * H_ * 2);
    alloc(gu_, cap * 2 * I_ * 2);
    alloc(act_, cap * I_ * 2);
    alloc(d_out_, cap * H_ * 2);
    alloc(logits_, cap * V_ * 4);
    const size_t ws = std::max(
        engine::attention_workspace_floats(opts_.max_batch, NH_, D_, opts_.max_ctx, decode_chunk(1)),
        engine::attention_workspace_floats(opts_.prefill_chunk, NH_, D_, opts_.max_ctx, opts_.prefill_kv_chunk));
    alloc(attn_ws_, ws * 4);
    alloc(attn_cnt_, cap * NKV_ * 4);  // zeroed; the attention kernel leaves it zero
    alloc(pf_ids_, cap * 4);
    alloc(pf_slot_, cap * 4);
    alloc(pf_pos_, cap * 4);
    alloc(tok_, cap * 4);
    alloc(lens_dev_, static_cast<size_t>(opts_.max_batch) * 4);
    const size_t cache_bytes =
        static_cast<size_t>(cfg_.num_layers * opts_.max_batch * NKV_ * opts_.max_ctx * D_) * engine::kv_cache_bytes(kv());
    k_cache_ = DeviceBuffer(cache_bytes);
    v_cache_ = DeviceBuffer(cache_bytes);
    lens_.assign(static_cast<size_t>(opts_.max_batch), 0);
    SPENSE_CUDA_CHECK(cudaDeviceSynchronize());  // the memsets above ran on the legacy stream
  }

  void check_slot(int64_t slot) const {
    if (slot < 0 || slot >= opts_.max_batch)
      throw Error("slot " + std::to_string(slot) + " is outside [0, " + std::to_string(opts_.max_batch) + ")");
  }
  void check_batch(int64_t b) const {
    if (b <= 0 || b > opts_.max_batch)
      throw Error("batch " + std::to_string(b) + " is outside [1, " + std::to_string(opts_.max_batch) +
                  "] (raise --max-batch)");
  }
  void set_len(int64_t slot, int64_t len) {
    lens_[static_cast<size_t>(slot)] = len;
    const int32_t v = static_cast<int32_t>(len);
    SPENSE_CUDA_CHECK(cudaMemcpyAsync(lens_dev_.as<int32_t>() + slot, &v, 4, cudaMemcpyHostToDevice, stream_.get()));
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  }

  // Keys per attention block at decode (EngineOptions::decode_kv_chunk; 0: automatic). On an H100
  // with the E4M3 cache, Qwen3-32B at ctx 1024, 256 keys (pipelined splits) beat 64 at batch 16
  // and 64 (128 and 512 (row, KV head) pairs; docs/perf.md); with fewer pairs 64 keeps more
  // blocks busy. Batch 1 (the smallest chunk, the most splits) sizes the workspace.
  int64_t decode_chunk(int64_t batch) const {
    if (opts_.decode_kv_chunk != 0) return opts_.decode_kv_chunk;
    return opts_.kv_fp8 && batch * NKV_ >= 128 ? 256 : 64;
  }

  void step_body(int64_t batch, cudaStream_t s) {
    mark("start", s);
    forward(batch, tok_.as<int32_t>(), nullptr, lens_dev_.as<int32_t>(), decode_chunk(batch), 0, batch, s);
    engine::argmax_rows(logits_.as<float>(), V_, batch, tok_.as<int32_t>(), s);
    engine::advance(lens_dev_.as<int32_t>(), batch, s);
    mark("argmax", s);
  }

  // The decoder over M token rows; logits of rows [row0, row0 + nrows) into logits_.
  void forward(int64_t M, const int32_t* ids, const int32_t* row_slot, const int32_t* row_pos, int64_t kv_chunk,
               int64_t row0, int64_t nrows, cudaStream_t s) {
    const float eps = static_cast<float>(cfg_.rms_norm_eps);
    auto* h = h_.as<float>();
    auto* xn = xn_.as<bf16_t>();
    auto* qkv = qkv_.as<bf16_t>();
    auto* gu = gu_.as<bf16_t>();
    const size_t kv_layer = static_cast<size_t>(opts_.max_batch * NKV_ * opts_.max_ctx * D_);
    engine::embed_rows(ids, embed_.as<bf16_t>(), V_, H_, M, h, s);
    engine::residual_rmsnorm(h, nullptr, nullptr, layers_[0].in_norm.as<float>(), eps, xn, M, H_, s);
    mark("embed+norm", s);
    for (size_t l = 0; l < layers_.size(); ++l) {
      const GpuLayer& L = layers_[l];
      engine::QkvView view{};
      if (L.qkv.size() == 1) {
        L.qkv[0]->forward(xn, qkv, M, s);
        const int64_t ld = QD_ + 2 * KVD_;
        view = {qkv, ld, qkv + QD_, ld, qkv + QD_ + KVD_, ld};
      } else {
        bf16_t* qb = qkv;
        bf16_t* kb = qkv + cap_ * QD_;
        bf16_t* vb = kb + cap_ * KVD_;
        L.qkv[0]->forward(xn, qb, M, s);
        L.qkv[1]->forward(xn, kb, M, s);
        L.qkv[2]->forward(xn, vb, M, s);
        view = {qb, QD_, kb, KVD_, vb, KVD_};
      }
      mark("qkv", s);
      uint8_t* kc = k_cache_.as<uint8_t>() + l * kv_layer * engine::kv_cache_bytes(kv());
      uint8_t* vc = v_cache_.as<uint8_t>() + l * kv_layer * engine::kv_cache_bytes(kv());
      engine::DecodeRope rope;
      rope.in = view;
      rope.bias = L.has_qkv_bias ? L.qkv_bias.as<float>() : nullptr;
      rope.q_norm = L.has_qk_norm ? L.q_norm.as<float>() : nullptr;
      rope.k_norm = L.has_qk_norm ? L.k_norm.as<float>() : nullptr;
      rope.eps = eps;
      rope.inv_freq = inv_freq_.as<float>();
      // Decode (no row_slot: row r is slot r, one new key each) of a few rows: attention does the
      // q/k norm, RoPE and cache write itself, saving a launch. Every KV split of a row redoes its
      // query heads' norm and RoPE, so with more rows the separate kernel wins: on an H100 the
      // fused path took 0.03-0.23 ms less per Qwen3-32B step at batch 1 and 0.31-0.78 ms more at
      // batch 16 (docs/perf.md; batches 2-8 not measured, the cut at 4 is between the two).
      // Prefill rows of one slot read each other's new keys, so there the separate kernel writes
      // them all first.
      constexpr int64_t kFusedRopeMaxRows = 4;
      const bool fused = row_slot == nullptr && M <= kFusedRopeMaxRows;
      if (fused) {
        rope.k_cache = kc;
        rope.v_cache = vc;
      } else {
        engine::qkv_rope_cache(view, rope.bias, rope.q_norm, rope.k_norm, eps, rope.inv_freq, row_slot, row_pos, M,
                               NH_, NKV_, D_, qf_.as<float>(), kc, vc, opts_.max_ctx, s, kv());
        mark("qk-norm+rope+cache", s);
      }
      engine::attention(qf_.as<float>(), kc, vc, row_slot, row_pos, M, NH_, NKV_, D_, opts_.max_ctx, kv_chunk,
                        attn_ws_.as<float>(), attn_cnt_.as<int>(), attn_.as<bf16_t>(), s, fused ? &rope : nullptr, kv());
      mark(fused ? "qk-norm+rope+attention" : "attention", s);
      L.o->forward(attn_.as<bf16_t>(), o_out_.as<bf16_t>(), M, s);
      mark("o", s);
      engine::residual_rmsnorm(h, o_out_.as<bf16_t>(), L.has_o_bias ? L.o_bias.as<float>() : nullptr,
                               L.post_norm.as<float>(), eps, xn, M, H_, s);
      mark("residual+norm", s);
      const bf16_t *g, *u;
      int64_t ldg, ldu;
      if (L.gate_up.size() == 1) {
        L.gate_up[0]->forward(xn, gu, M, s);
        g = gu;
        u = gu + I_;
        ldg = ldu = 2 * I_;
      } else {
        L.gate_up[0]->forward(xn, gu, M, s);
        L.gate_up[1]->forward(xn, gu + cap_ * I_, M, s);
        g = gu;
        u = gu + cap_ * I_;
        ldg = ldu = I_;
      }
      mark("gate_up", s);
      engine::silu_mul(g, ldg, u, ldu, M, I_, act_.as<bf16_t>(), s);
      mark("silu*up", s);
      L.down->forward(act_.as<bf16_t>(), d_out_.as<bf16_t>(), M, s);
      mark("down", s);
      const float* next = l + 1 < layers_.size() ? layers_[l + 1].in_norm.as<float>() : final_norm_.as<float>();
      engine::residual_rmsnorm(h, d_out_.as<bf16_t>(), nullptr, next, eps, xn, M, H_, s);
      mark("residual+norm", s);
    }
    lm_head_->forward(xn + row0 * H_, logits_.get(), nrows, s);
    mark("lm_head", s);
  }

  Context& ctx_;
  ModelConfig cfg_;
  EngineOptions opts_;
  std::vector<LayerPlan> plan_;
  int64_t H_ = 0, D_ = 0, NH_ = 0, NKV_ = 0, QD_ = 0, KVD_ = 0, I_ = 0, V_ = 0;
  Stream stream_;
  std::vector<GpuLayer> layers_;
  std::unique_ptr<Linear> lm_head_;
  DeviceBuffer embed_, final_norm_, inv_freq_;
  DeviceBuffer h_, xn_, qkv_, qf_, attn_, o_out_, gu_, act_, d_out_, logits_, attn_ws_, attn_cnt_;
  DeviceBuffer pf_ids_, pf_slot_, pf_pos_, tok_, lens_dev_;
  DeviceBuffer k_cache_, v_cache_;
  // The caches' element type (EngineOptions::kv_fp8).
  engine::KvCache kv() const { return opts_.kv_fp8 ? engine::KvCache::E4M3 : engine::KvCache::BF16; }
  int64_t cap_ = 0;  // rows of every activation buffer (the cuSPARSELt bucket of the most rows)
  size_t activation_bytes_ = 0;
  std::vector<int64_t> lens_;
  std::map<int64_t, CapturedStep> graphs_;
  Profile* prof_ = nullptr;  // set while profile_step runs
};

}  // namespace

const char* gemm_backend_name(GemmBackend b) {
  return b == GemmBackend::AUTO ? "auto" : b == GemmBackend::LIBRARY ? "library" : "spense";
}
bool gemm_backend_parse(const std::string& s, GemmBackend* out) {
  if (s == "auto") *out = GemmBackend::AUTO;
  else if (s == "library") *out = GemmBackend::LIBRARY;
  else if (s == "spense") *out = GemmBackend::SPENSE;
  else return false;
  return true;
}

std::unique_ptr<Engine> Engine::load(Context& ctx, const std::string& dir, const EngineOptions& opts) {
  ModelConfig cfg = config_load(dir);
  arch::validate_config(cfg, dir + "/config.json");
  auto plan = plan_model(cfg, read_spense_json(dir, cfg), opts.plan);
  auto e = std::make_unique<EngineImpl>(ctx, cfg, opts, std::move(plan));
  e->load_checkpoint(dir);
  return e;
}

std::unique_ptr<Engine> Engine::synthetic(Context& ctx, const ModelConfig& cfg, const EngineOptions& opts) {
  arch::validate_config(cfg, "synthetic model");
  EngineOptions o = opts;
  if (o.plan.format == WeightFormat::AUTO) o.plan.format = WeightFormat::DENSE;
  auto e = std::make_unique<EngineImpl>(ctx, cfg, o, plan_model(cfg, {}, o.plan));
  e->build_synthetic();
  return e;
}

}  // namespace spense::cuda
