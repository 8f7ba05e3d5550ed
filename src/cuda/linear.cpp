// The three GPU linear layers (include/spense/cuda/linear.h): DenseLinear (cuBLASLt),
// SparseLinear (cuSPARSELt 2:4) and HybridLinear (the Spense format, both axes). They own
// the weights (copied to the device at construction), share GEMM cores (plans) with their
// replicas, and take all temporary activations from the Context's scratch slots.
// What they do not do: read checkpoints (src/io, src/format), or choose dense tiles (src/prune).
#include "spense/cuda/linear.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "cuda/gemv.h"
#include "gemm_core.h"
#include "spense/cuda/kernels.h"

namespace spense::cuda {

const char* precision_name(LinearPrecision p) {
  switch (p) {
    case LinearPrecision::BF16: return "bf16";
    case LinearPrecision::FP16: return "fp16";
    case LinearPrecision::FP8: return "fp8";
  }
  return "?";
}
DType precision_weight_dtype(LinearPrecision p) {
  return p == LinearPrecision::BF16 ? DType::BF16 : p == LinearPrecision::FP16 ? DType::F16 : DType::F8_E4M3;
}
DType precision_act_dtype(LinearPrecision p) { return p == LinearPrecision::FP16 ? DType::F16 : DType::BF16; }
const char* axis_name(HybridAxis a) { return a == HybridAxis::OUT ? "out" : "in"; }

int64_t rows_bucket(int64_t m) {
  if (m <= 16) return 16;
  if (m <= 1024) {
    int64_t b = 16;
    while (b < m) b *= 2;
    return b;
  }
  return (m + 511) / 512 * 512;
}

namespace {

[[noreturn]] void layer_error(const std::string& name, const std::string& what) {
  throw Error("layer '" + name + "': " + what, 2);
}

// Run fn; prefix errors that do not name the layer yet.
template <class Fn>
auto in_layer(const std::string& name, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.rfind("layer '", 0) == 0) throw;
    throw Error("layer '" + name + "': " + msg, e.exit_code());
  }
}

void check_common(const Context& ctx, const std::string& name, int64_t n, int64_t k, LinearPrecision prec,
                  const WeightsView& w) {
  if (n <= 0 || k <= 0) layer_error(name, "empty shape " + std::to_string(n) + " x " + std::to_string(k));
  const DType want = precision_weight_dtype(prec);
  if (w.dtype != want)
    layer_error(name, std::string("weights are ") + dtype_label(w.dtype) + ", but precision " +
                          precision_name(prec) + " needs " + dtype_label(want) +
                          " (supported: BF16, F16, F8_E4M3 with per-channel scales)");
  if (!w.data) layer_error(name, "no weight data");
  const int64_t kmul = prec == LinearPrecision::FP8 ? 32 : 16;
  if (n % 16 != 0 || k % kmul != 0)
    layer_error(name, "shape [" + std::to_string(n) + ", " + std::to_string(k) +
                          "] is misaligned: out features must be a multiple of 16 and in features a multiple of " +
                          std::to_string(kmul) + " for " + precision_name(prec) +
                          " tensor-core GEMMs (16-byte rows)");
  if (prec == LinearPrecision::FP8) {
    if (!w.scales) layer_error(name, "F8_E4M3 weights need per-output-channel scales");
    check_compute_capability(ctx.cc_major(), ctx.cc_minor(), 8, 9, ctx.gpu_name(),
                             "layer '" + name + "': FP8 (E4M3) GEMMs");
  }
}

void check_io(const std::string& name, const void* x, const void* y) {
  if ((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(y)) & 15u)
    layer_error(name, "x and y must be 16-byte aligned device pointers");
}

std::vector<float> fetch_floats(const float* p, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  SPENSE_CUDA_CHECK(cudaMemcpy(v.data(), p, v.size() * sizeof(float), cudaMemcpyDefault));
  return v;
}

// Every load-time copy completes before it returns (device_upload says why).
DeviceBuffer upload(const void* src, size_t bytes) { return device_upload(src, bytes); }

DeviceBuffer upload_ints(const std::vector<int32_t>& v) { return upload(v.data(), v.size() * sizeof(int32_t)); }
DeviceBuffer upload_floats(const std::vector<float>& v) { return upload(v.data(), v.size() * sizeof(float)); }

DeviceBuffer copy_device(const DeviceBuffer& b) { return device_upload(b.get(), b.size()); }

size_t round16(size_t b) { return (b + 15) / 16 * 16; }

// FP8 library layers (cuBLASLt dense, cuSPARSELt 2:4) over `rows` GEMM rows (m, or its bucket):
// the scratch they take, and their forward: x quantized per token, the fp32-output GEMM
// (gemm(xq, acc)), then both scales applied in the epilogue.
void reserve_fp8_scratch(Context& ctx, int64_t rows, int64_t k, int64_t n) {
  ctx.reserve_scratch(Scratch::X_Q, round16(rows * k));
  ctx.reserve_scratch(Scratch::X_SCALE, round16(rows * sizeof(float)));
  ctx.reserve_scratch(Scratch::ACC, rows * n * sizeof(float));
}
template <class Gemm>
void forward_fp8_library(Context& ctx, const void* x, void* y, int64_t m, int64_t rows, int64_t k, int64_t n,
                         const float* w_scales, cudaStream_t s, Gemm&& gemm) {
  auto* xq = static_cast<uint8_t*>(ctx.scratch(Scratch::X_Q, rows * k));
  auto* xs = static_cast<float*>(ctx.scratch(Scratch::X_SCALE, rows * sizeof(float)));
  void* acc = ctx.scratch(Scratch::ACC, rows * n * sizeof(float));
  quantize_rows_e4m3(x, DType::BF16, k, m, rows, k, nullptr, xq, k, xs, s);
  gemm(xq, acc);
  scale_epilogue(acc, nullptr, DType::F32, n, m, n, w_scales, xs, nullptr, y, DType::BF16, n, s);
}

// Guards forward(): plans for m must exist; made here unless a graph is being captured.
class Prepared {
 public:
  template <class Prep>
  void ensure(const std::string& name, int64_t m, cudaStream_t s, Prep&& prep) {
    if (done_.count(m)) return;
    if (stream_is_capturing(s))
      layer_error(name, "no plan for M=" + std::to_string(m) + " (bucket " + std::to_string(rows_bucket(m)) +
                            "); call prepare(M) for every M before capturing a CUDA graph");
    prep(m);
  }
  void mark(int64_t m) { done_.insert(m); }

 private:
  std::set<int64_t> done_;
};

// ---------------------------------------------------------------------------------------
class DenseLinearImpl final : public Linear {
 public:
  DenseLinearImpl(Context& ctx, int64_t n, int64_t k, LinearPrecision prec, const WeightsView& w,
                  const LinearOptions& opts)
      : Linear(ctx, n, k, prec, opts) {
    check_common(ctx, opts.name, n, k, prec, w);
    if (opts.f32_output && prec == LinearPrecision::FP8)
      layer_error(opts.name, "f32_output is supported for BF16/FP16 dense layers only");
    GemmShape sh{opts.name, n, k, k, n, precision_weight_dtype(prec),
                 prec == LinearPrecision::FP8 || opts.f32_output ? DType::F32 : precision_act_dtype(prec)};
    gemm_ = std::make_shared<LtGemm>(ctx, sh, opts.dense_search);
    w_ = upload(w.data, static_cast<size_t>(n) * k * elem_bytes(sh.in));
    if (prec == LinearPrecision::FP8) scales_ = std::make_shared<DeviceBuffer>(upload_floats(fetch_floats(w.scales, n)));
  }
  DenseLinearImpl(const DenseLinearImpl& o)
      : Linear(*o.ctx_, o.n_, o.k_, o.prec_, o.opts_), gemm_(o.gemm_), w_(copy_device(o.w_)), scales_(o.scales_) {}

  void prepare(int64_t m) override {
    in_layer(name(), [&] {
      gemm_->prepare(m, w_.get());
      if (prec_ == LinearPrecision::FP8) reserve_fp8_scratch(*ctx_, m, k_, n_);
    });
    prepared_.mark(m);
  }

  void forward(const void* x, void* y, int64_t m, cudaStream_t s) override {
    if (m <= 0) return;
    check_io(name(), x, y);
    prepared_.ensure(name(), m, s, [&](int64_t mm) { prepare(mm); });
    if (prec_ != LinearPrecision::FP8) {
      gemm_->run(w_.get(), x, y, m, 0.f, s, 0);
      return;
    }
    forward_fp8_library(*ctx_, x, y, m, m, k_, n_, scales_->as<float>(), s,
                        [&](const void* xq, void* acc) { gemm_->run(w_.get(), xq, acc, m, 0.f, s, 0); });
  }

  int64_t rows_capacity(int64_t m) const override { return m; }
  std::unique_ptr<Linear> replicate() const override { return std::make_unique<DenseLinearImpl>(*this); }
  size_t weight_bytes() const override { return w_.size() + (scales_ ? scales_->size() : 0); }
  std::string plan_info(int64_t m) const override { return gemm_->plan_info(m); }
  const void* device_weights() const override { return w_.get(); }
  const float* device_scales() const override { return scales_ ? scales_->as<float>() : nullptr; }

 private:
  std::shared_ptr<LtGemm> gemm_;
  DeviceBuffer w_;
  std::shared_ptr<DeviceBuffer> scales_;
  Prepared prepared_;
};

// ---------------------------------------------------------------------------------------
class SparseLinearImpl final : public Linear {
 public:
  SparseLinearImpl(Context& ctx, int64_t n, int64_t k, LinearPrecision prec, const WeightsView& w,
                   const LinearOptions& opts)
      : Linear(ctx, n, k, prec, opts) {
    check_common(ctx, opts.name, n, k, prec, w);
    GemmShape sh{opts.name, n, k, k, n, precision_weight_dtype(prec),
                 prec == LinearPrecision::FP8 ? DType::F32 : precision_act_dtype(prec)};
    core_ = std::shared_ptr<SparseCore>(make_sparse_core(ctx, sh, opts.sparse_search));
    DeviceBuffer tmp = upload(w.data, static_cast<size_t>(n) * k * elem_bytes(sh.in));
    Stream s;
    wc_ = core_->compress(tmp.get(), s.get());
    if (prec == LinearPrecision::FP8) scales_ = std::make_shared<DeviceBuffer>(upload_floats(fetch_floats(w.scales, n)));
  }
  SparseLinearImpl(const SparseLinearImpl& o)
      : Linear(*o.ctx_, o.n_, o.k_, o.prec_, o.opts_), core_(o.core_), wc_(copy_device(o.wc_)), scales_(o.scales_) {}

  void prepare(int64_t m) override {
    const int64_t mp = rows_bucket(m);
    in_layer(name(), [&] {
      core_->prepare(mp, wc_.get());
      if (prec_ == LinearPrecision::FP8) reserve_fp8_scratch(*ctx_, mp, k_, n_);
    });
    prepared_.mark(m);
  }

  void forward(const void* x, void* y, int64_t m, cudaStream_t s) override {
    if (m <= 0) return;
    check_io(name(), x, y);
    prepared_.ensure(name(), m, s, [&](int64_t mm) { prepare(mm); });
    const int64_t mp = rows_bucket(m);
    if (prec_ != LinearPrecision::FP8) {
      core_->run(wc_.get(), x, y, mp, 0.f, s);
      return;
    }
    forward_fp8_library(*ctx_, x, y, m, mp, k_, n_, scales_->as<float>(), s,
                        [&](const void* xq, void* acc) { core_->run(wc_.get(), xq, acc, mp, 0.f, s); });
  }

  std::unique_ptr<Linear> replicate() const override { return std::make_unique<SparseLinearImpl>(*this); }
  size_t weight_bytes() const override { return core_->compressed_bytes() + (scales_ ? scales_->size() : 0); }
  std::string plan_info(int64_t m) const override { return core_->plan_info(rows_bucket(m)); }

 private:
  std::shared_ptr<SparseCore> core_;
  DeviceBuffer wc_;
  std::shared_ptr<DeviceBuffer> scales_;
  Prepared prepared_;
};

// ---------------------------------------------------------------------------------------
// Copy the tiles of W (n x k row-major, host or device) listed in `order` (stored order,
// element indices along the split axis) from [begin, end) of `order` into a packed matrix.
// axis=out: rows; axis=in: columns. Consecutive original indices are copied as one run.
DeviceBuffer pack_part(const void* w, size_t eb, int64_t n, int64_t k, HybridAxis axis,
                       const std::vector<int32_t>& order, int64_t begin, int64_t end) {
  const int64_t cnt = end - begin;
  const int64_t rows = axis == HybridAxis::OUT ? cnt : n, cols = axis == HybridAxis::OUT ? k : cnt;
  DeviceBuffer out(static_cast<size_t>(rows) * cols * eb);
  const auto* src = static_cast<const uint8_t*>(w);
  auto* dst = out.as<uint8_t>();
  for (int64_t j = begin; j < end;) {
    int64_t run = 1;
    while (j + run < end && order[j + run] == order[j] + run) ++run;
    const int64_t o = order[j], d = j - begin;
    if (axis == HybridAxis::OUT)
      SPENSE_CUDA_CHECK(cudaMemcpy(dst + d * k * eb, src + o * k * eb, run * k * eb, cudaMemcpyDefault));
    else
      SPENSE_CUDA_CHECK(cudaMemcpy2D(dst + d * eb, cols * eb, src + o * eb, k * eb, run * eb, n, cudaMemcpyDefault));
    j += run;
  }
  SPENSE_CUDA_CHECK(cudaDeviceSynchronize());
  return out;
}

class HybridLinearImpl final : public Linear {
 public:
  HybridLinearImpl(Context& ctx, int64_t n, int64_t k, LinearPrecision prec, const WeightsView& w,
                   const HybridLayout& layout, const LinearOptions& opts)
      : Linear(ctx, n, k, prec, opts), axis_(layout.axis) {
    check_common(ctx, opts.name, n, k, prec, w);
    const bool out = axis_ == HybridAxis::OUT;
    const int64_t extent = out ? n : k;
    hybrid_layout_check(opts.name, extent, layout);
    if (prec == LinearPrecision::FP8 && !out && layout.tile % 32 != 0)
      layer_error(opts.name, "FP8 axis=in needs tiles that are multiples of 32 (E4M3 16-byte rows), got " +
                                 std::to_string(layout.tile));
    const std::vector<int32_t> order = hybrid_stored_order(extent, layout);
    const int64_t nd = static_cast<int64_t>(layout.dense_tiles.size()) * layout.tile;
    split_ = extent - nd;  // sparse extent (stored first)
    const DType win = precision_weight_dtype(prec);
    const DType dout = prec == LinearPrecision::FP8 ? DType::F32 : precision_act_dtype(prec);
    const size_t eb = elem_bytes(win);

    if (split_ > 0) {
      GemmShape sh{opts.name, out ? split_ : n, out ? k : split_, k, n, win, dout};
      core_ = std::shared_ptr<SparseCore>(make_sparse_core(ctx, sh, opts.sparse_search));
      DeviceBuffer ws = pack_part(w.data, eb, n, k, axis_, order, 0, split_);
      Stream s;
      wc_ = core_->compress(ws.get(), s.get());
    }
    if (nd > 0) {
      GemmShape sh{opts.name + "/dense", out ? nd : n, out ? k : nd, k, n, win, dout};
      if (opts.concurrent && opts.split_sms && split_ > 0) {
        // Dense bytes vs compressed sparse bytes (values / 2 plus 2-bit metadata per kept value).
        const double dense_b = double(nd), sparse_b = double(split_) * (eb == 1 ? 0.625 : 0.5625);
        const int sms = ctx.props().multiProcessorCount;
        sh.sm_target = std::clamp(static_cast<int>(std::lround(sms * dense_b / (dense_b + sparse_b))), 8, sms);
      }
      dense_ = std::make_shared<LtGemm>(ctx, sh, opts.dense_search);
      wd_ = pack_part(w.data, eb, n, k, axis_, order, split_, extent);
    }
    if (out) {
      out_map_ = std::make_shared<DeviceBuffer>(upload_ints(order));
      std::vector<int32_t> inv(order.size());
      for (size_t j = 0; j < order.size(); ++j) inv[static_cast<size_t>(order[j])] = static_cast<int32_t>(j);
      inv_map_ = std::make_shared<DeviceBuffer>(upload_ints(inv));
    } else {
      in_map_ = std::make_shared<DeviceBuffer>(upload_ints(order));
    }
    if (prec == LinearPrecision::FP8) {
      std::vector<float> sc = fetch_floats(w.scales, n);
      if (out) {  // the epilogue indexes scales by stored column
        std::vector<float> st(sc.size());
        for (size_t j = 0; j < order.size(); ++j) st[j] = sc[static_cast<size_t>(order[j])];
        sc.swap(st);
      }
      scales_ = std::make_shared<DeviceBuffer>(upload_floats(sc));
    }
  }
  HybridLinearImpl(const HybridLinearImpl& o)
      : Linear(*o.ctx_, o.n_, o.k_, o.prec_, o.opts_), axis_(o.axis_), split_(o.split_), core_(o.core_),
        dense_(o.dense_), wc_(copy_device(o.wc_)), wd_(copy_device(o.wd_)), out_map_(o.out_map_),
        inv_map_(o.inv_map_), in_map_(o.in_map_), scales_(o.scales_) {}

  void prepare(int64_t m) override {
    const int64_t mp = rows_bucket(m);
    const bool fp8 = prec_ == LinearPrecision::FP8;
    const size_t ab = fp8 ? 4 : 2;  // accumulator / output element bytes
    in_layer(name(), [&] {
      if (core_) core_->prepare(mp, wc_.get());
      if (dense_) dense_->prepare(m, wd_.get());
      if (fp8) {
        reserve_fp8_scratch(*ctx_, mp, k_, n_);
      } else if (axis_ == HybridAxis::OUT) {
        if (!opts_.fold_permutation) ctx_->reserve_scratch(Scratch::ACC, mp * n_ * ab);
      } else {
        ctx_->reserve_scratch(Scratch::X_Q, mp * k_ * 2);
      }
      if (axis_ == HybridAxis::IN && two_streams()) ctx_->reserve_scratch(Scratch::ACC2, m * n_ * ab);
    });
    prepared_.mark(m);
  }

  void forward(const void* x, void* y, int64_t m, cudaStream_t s) override {
    if (m <= 0) return;
    check_io(name(), x, y);
    prepared_.ensure(name(), m, s, [&](int64_t mm) { prepare(mm); });
    const int64_t mp = rows_bucket(m);
    if (prec_ == LinearPrecision::FP8) forward_fp8(x, y, m, mp, s);
    else if (axis_ == HybridAxis::OUT) forward16_out(x, y, m, mp, s);
    else forward16_in(x, y, m, mp, s);
  }

  std::unique_ptr<Linear> replicate() const override { return std::make_unique<HybridLinearImpl>(*this); }
  size_t weight_bytes() const override {
    return (core_ ? core_->compressed_bytes() : 0) + wd_.size() + (scales_ ? scales_->size() : 0);
  }
  std::string plan_info(int64_t m) const override {
    std::string s;
    if (core_) s += core_->plan_info(rows_bucket(m));
    if (dense_) s += (s.empty() ? "" : "; ") + dense_->plan_info(m);
    return s;
  }

 private:
  bool two_streams() const { return opts_.concurrent && core_ && dense_; }

  // Runs the sparse part on s and the dense part on the side stream (fork/join with events,
  // so it can be captured into a graph), or both on s one after the other.
  template <class Sparse, class Dense>
  void run_parts(cudaStream_t s, Sparse&& sparse, Dense&& dense) {
    if (two_streams()) {
      cudaStream_t side = ctx_->side_stream();
      SPENSE_CUDA_CHECK(cudaEventRecord(ctx_->fork_event(), s));
      SPENSE_CUDA_CHECK(cudaStreamWaitEvent(side, ctx_->fork_event(), 0));
      dense(side, 1);
      sparse(s);
      SPENSE_CUDA_CHECK(cudaEventRecord(ctx_->join_event(), side));
      SPENSE_CUDA_CHECK(cudaStreamWaitEvent(s, ctx_->join_event(), 0));
    } else {
      if (core_) sparse(s);
      if (dense_) dense(s, 0);
    }
  }

  void forward16_out(const void* x, void* y, int64_t m, int64_t mp, cudaStream_t s) {
    const bool fold = opts_.fold_permutation;
    auto* target = static_cast<uint8_t*>(fold ? y : ctx_->scratch(Scratch::ACC, mp * n_ * 2));
    run_parts(
        s, [&](cudaStream_t st) { core_->run(wc_.get(), x, target, mp, 0.f, st); },
        [&](cudaStream_t st, int role) { dense_->run(wd_.get(), x, target + split_ * 2, m, 0.f, st, role); });
    if (!fold) gather_cols16(target, n_, y, n_, m, n_, inv_map_->as<int32_t>(), s);
  }

  void forward16_in(const void* x, void* y, int64_t m, int64_t mp, cudaStream_t s) {
    auto* xp = static_cast<uint8_t*>(ctx_->scratch(Scratch::X_Q, mp * k_ * 2));
    gather_cols16(x, k_, xp, k_, m, k_, in_map_->as<int32_t>(), s);
    if (two_streams()) {
      void* t = ctx_->scratch(Scratch::ACC2, m * n_ * 2);
      run_parts(
          s, [&](cudaStream_t st) { core_->run(wc_.get(), xp, y, mp, 0.f, st); },
          [&](cudaStream_t st, int role) { dense_->run(wd_.get(), xp + split_ * 2, t, m, 0.f, st, role); });
      add_inplace16(y, n_, t, n_, m, n_, precision_act_dtype(prec_), s);
    } else {
      // Serial: the second GEMM accumulates into y with beta = 1.
      if (core_) core_->run(wc_.get(), xp, y, mp, 0.f, s);
      if (dense_) dense_->run(wd_.get(), xp + split_ * 2, y, m, core_ ? 1.f : 0.f, s, 0);
    }
  }

  void forward_fp8(const void* x, void* y, int64_t m, int64_t mp, cudaStream_t s) {
    const bool out = axis_ == HybridAxis::OUT;
    auto* xq = static_cast<uint8_t*>(ctx_->scratch(Scratch::X_Q, mp * k_));
    auto* xs = static_cast<float*>(ctx_->scratch(Scratch::X_SCALE, mp * sizeof(float)));
    auto* acc = static_cast<float*>(ctx_->scratch(Scratch::ACC, mp * n_ * sizeof(float)));
    float* acc2 = nullptr;
    quantize_rows_e4m3(x, DType::BF16, k_, m, mp, k_, out ? nullptr : in_map_->as<int32_t>(), xq, k_, xs, s);
    if (out) {
      run_parts(
          s, [&](cudaStream_t st) { core_->run(wc_.get(), xq, acc, mp, 0.f, st); },
          [&](cudaStream_t st, int role) { dense_->run(wd_.get(), xq, acc + split_, m, 0.f, st, role); });
    } else if (two_streams()) {
      acc2 = static_cast<float*>(ctx_->scratch(Scratch::ACC2, m * n_ * sizeof(float)));
      run_parts(
          s, [&](cudaStream_t st) { core_->run(wc_.get(), xq, acc, mp, 0.f, st); },
          [&](cudaStream_t st, int role) { dense_->run(wd_.get(), xq + split_, acc2, m, 0.f, st, role); });
    } else {
      if (core_) core_->run(wc_.get(), xq, acc, mp, 0.f, s);
      if (dense_) dense_->run(wd_.get(), xq + split_, acc, m, core_ ? 1.f : 0.f, s, 0);
    }
    const int32_t* omap = out && !opts_.fold_permutation ? out_map_->as<int32_t>() : nullptr;
    scale_epilogue(acc, acc2, DType::F32, n_, m, n_, scales_->as<float>(), xs, omap, y, DType::BF16, n_, s);
  }

  HybridAxis axis_;
  int64_t split_ = 0;
  std::shared_ptr<SparseCore> core_;
  std::shared_ptr<LtGemm> dense_;
  DeviceBuffer wc_, wd_;
  std::shared_ptr<DeviceBuffer> out_map_, inv_map_, in_map_, scales_;
  Prepared prepared_;
};

// ---------------------------------------------------------------------------------------
// Our small-M kernel (gemv.h). Rows are stored sparse first, then dense; row_map_ sends each
// stored row to its output column. all_dense wraps a cuBLASLt DenseLinear and reads its weights.
class GemvLinearImpl final : public Linear {
 public:
  GemvLinearImpl(Context& ctx, int64_t n, int64_t k, LinearPrecision prec, const WeightsView& w,
                 const GemvLayout& layout, const LinearOptions& opts)
      : Linear(ctx, n, k, prec, opts) {
    check_common(ctx, opts.name, n, k, prec, w);
    if (prec == LinearPrecision::FP16) layer_error(opts.name, "the small-M kernel runs BF16 or FP8 weights, not FP16");
    const size_t eb = prec == LinearPrecision::FP8 ? 1 : 2;
    if (layout.all_dense) {
      inner_ = make_dense_linear(ctx, n, k, prec, w, opts);
      return;
    }
    if (layout.axis == HybridAxis::IN) {
      build_axis_in(w, layout, eb);
      return;
    }
    hybrid_layout_check(opts.name, n, HybridLayout{HybridAxis::OUT, layout.tile, layout.dense_tiles});
    if (layout.tile % gemv::kRowsPerWarp != 0) layer_error(opts.name, "tile must be even for the small-M kernel");
    const std::vector<int32_t> order = hybrid_stored_order(n, HybridLayout{HybridAxis::OUT, layout.tile, layout.dense_tiles});
    nd_ = static_cast<int64_t>(layout.dense_tiles.size()) * layout.tile;
    ns_ = n - nd_;
    row_map_ = std::make_shared<DeviceBuffer>(upload_ints(order));
    DeviceBuffer wdev = upload(w.data, static_cast<size_t>(n * k) * eb);
    if (ns_ > 0) {
      values_ = DeviceBuffer(static_cast<size_t>(ns_ * k / 2) * eb);
      meta_ = DeviceBuffer(static_cast<size_t>(ns_ * k / 16) * 2);
      DeviceBuffer bad(sizeof(unsigned long long));
      SPENSE_CUDA_CHECK(cudaMemset(bad.get(), 0xff, bad.size()));
      gemv::compress24(wdev.get(), eb == 1, k, row_map_->as<int32_t>(), ns_, values_.get(), meta_.as<uint16_t>(),
                       bad.as<unsigned long long>(), nullptr);
      unsigned long long first = 0;
      SPENSE_CUDA_CHECK(cudaMemcpy(&first, bad.get(), sizeof first, cudaMemcpyDeviceToHost));
      if (first != ~0ull) {
        const int64_t i = static_cast<int64_t>(first) / (k / 4), g = static_cast<int64_t>(first) % (k / 4);
        layer_error(opts.name, "weights are not 2:4 outside the dense tiles: row " + std::to_string(order[i]) +
                                   ", columns " + std::to_string(4 * g) + ".." + std::to_string(4 * g + 3) +
                                   " hold more than 2 non-zeros");
      }
    }
    if (nd_ > 0) dense_ = pack_part(wdev.get(), eb, n, k, HybridAxis::OUT, order, ns_, n);
    if (prec == LinearPrecision::FP8) {
      const std::vector<float> sc = fetch_floats(w.scales, n);
      std::vector<float> st(sc.size());
      for (size_t j = 0; j < order.size(); ++j) st[j] = sc[static_cast<size_t>(order[j])];
      scales_ = std::make_shared<DeviceBuffer>(upload_floats(st));
    }
  }
  GemvLinearImpl(const GemvLinearImpl& o)
      : Linear(*o.ctx_, o.n_, o.k_, o.prec_, o.opts_), inner_(o.inner_ ? o.inner_->replicate() : nullptr),
        choice_(o.choice_), ns_(o.ns_), nd_(o.nd_), axis_in_(o.axis_in_), in_ks_(o.in_ks_), tile_shift_(o.tile_shift_),
        values_(copy_device(o.values_)), meta_(copy_device(o.meta_)), dense_(copy_device(o.dense_)),
        row_map_(o.row_map_), col_tiles_(o.col_tiles_), scales_(o.scales_), col_order_(o.col_order_) {}

  // Per M up to kTimedMaxM (decode batches), the kernels that can run it (cuBLASLt for dense
  // layers, our CUDA-core kernel up to kMaxM rows per pass -- any M for 2:4 and hybrid layers --,
  // our tensor-core kernel where eligible, in each of its block shapes and K splits of 1, 2, 3,
  // 4, 6 and 8 slices) are timed once, each call after an L2 flush, and the fastest is kept. Larger M (prefill chunks, whose sizes vary with the prompt) is not timed:
  // cuBLASLt for dense layers, else tensor cores where eligible, else CUDA cores.
  void prepare(int64_t m) override {
    if (m <= 0) return;
    // cuBLASLt's plan and scratch, also when it is the only candidate, and also when m has a
    // choice already: a replica copies the choices but its inner layer is prepared on its own.
    if (inner_) inner_->prepare(m);
    const std::vector<Choice> cands = candidates(m);
    // The E4M3-token shapes quantize x into the Context's scratch (as the library's FP8 layers do).
    // The streamed ones quantize tc_stream_tokens(m) rows (padded) and sum cut units in a workspace.
    if (any_e4m3_tokens(cands)) {
      const int64_t rows = std::max(m, gemv::tc_stream_tokens(m));
      ctx_->reserve_scratch(Scratch::X_Q, round16(static_cast<size_t>(rows * k_)));
      ctx_->reserve_scratch(Scratch::X_SCALE, round16(static_cast<size_t>(rows) * sizeof(float)));
    }
    for (const Choice& c : cands)
      if (streamed(c, m)) ctx_->reserve_scratch(Scratch::GEMV_STREAM, gemv::tc_stream_workspace_bytes(weights(), c.shape, m));
    if (choice_.count(m)) return;
    if (cands.size() == 1) {
      choice_[m] = cands[0];
      return;
    }
    DeviceBuffer x(static_cast<size_t>(m * k_) * 2), y(static_cast<size_t>(m * n_) * 4);
    Stream st;
    fill_random(x.get(), DType::BF16, static_cast<size_t>(m * k_), 7, 1.f, st.get());
    const L2Flush flush;  // timed with the weights in device memory, as in a decode step
    float best = 0;
    for (const Choice& p : cands) {
      const float t = time_calls_cold_ms(st.get(), [&](cudaStream_t s) { run(p, x.get(), y.get(), m, s); }, &flush);
      if (&p == &cands[0] || t < best) {
        best = t;
        choice_[m] = p;
      }
    }
  }
  void forward(const void* x, void* y, int64_t m, cudaStream_t s) override {
    if (m <= 0) return;
    check_io(name(), x, y);
    if (!choice_.count(m)) {
      // No planning, timing or scratch growth (E4M3 tokens) inside a capture.
      const std::vector<Choice> cands = candidates(m);
      if ((inner_ || cands.size() > 1 || any_e4m3_tokens(cands)) && stream_is_capturing(s))
        layer_error(name(), "no plan for M=" + std::to_string(m) + "; call prepare(M) before capturing a CUDA graph");
      prepare(m);
    }
    run(choice_.at(m), x, y, m, s);
  }
  int64_t rows_capacity(int64_t m) const override { return m; }
  std::unique_ptr<Linear> replicate() const override { return std::make_unique<GemvLinearImpl>(*this); }
  size_t weight_bytes() const override {
    if (inner_) return inner_->weight_bytes();
    return values_.size() + meta_.size() + dense_.size() + (scales_ ? scales_->size() : 0) +
           (row_map_ ? row_map_->size() : 0) + (col_tiles_ ? col_tiles_->size() : 0) +
           (col_order_ ? col_order_->size() : 0);
  }
  std::string plan_info(int64_t m) const override {
    const auto it = choice_.find(m);
    if (it == choice_.end()) return "not prepared for M=" + std::to_string(m);
    switch (it->second.path) {
      case Path::LIBRARY: return "cuBLASLt: " + inner_->plan_info(m);
      case Path::TENSOR_CORES:
        if (streamed(it->second, m))
          return "spense small-M kernel, tensor cores, block shape " + std::to_string(it->second.shape) +
                 " (streamed: persistent blocks, TMA), E4M3 tokens";
        return "spense small-M kernel, tensor cores, block shape " + std::to_string(it->second.shape) + ", K in " +
               (it->second.slices > 0 ? std::to_string(it->second.slices) : std::string("default")) + " slice(s)" +
               (e4m3_tokens(it->second) ? ", E4M3 tokens" : "");
      default: return "spense small-M kernel (" + std::to_string((m + gemv::kMaxM - 1) / gemv::kMaxM) + " pass)";
    }
  }

 private:
  // Axis=in: every row is 2:4 over the sparse column tiles (packed in stored order, then
  // compressed) and dense over the dense ones; col_tiles_ maps stored column tiles back.
  void build_axis_in(const WeightsView& w, const GemvLayout& layout, size_t eb) {
    const HybridLayout hl{HybridAxis::IN, layout.tile, layout.dense_tiles};
    hybrid_layout_check(name(), k_, hl);
    if (!gemv_axis_in_tile_ok(layout.tile))
      layer_error(name(), "axis=in needs tiles of a power of two >= 32 columns for the small-M kernel, got " +
                              std::to_string(layout.tile));
    int shift = 0;
    while ((int64_t(1) << shift) < layout.tile) ++shift;
    const std::vector<int32_t> order = hybrid_stored_order(k_, hl);
    axis_in_ = true;
    tile_shift_ = shift;
    in_ks_ = k_ - static_cast<int64_t>(layout.dense_tiles.size()) * layout.tile;
    ns_ = n_;
    nd_ = 0;
    std::vector<int32_t> tiles(static_cast<size_t>(k_ / layout.tile));
    for (size_t j = 0; j < tiles.size(); ++j) tiles[j] = order[j * static_cast<size_t>(layout.tile)] >> shift;
    col_tiles_ = std::make_shared<DeviceBuffer>(upload_ints(tiles));
    if (prec_ == LinearPrecision::FP8) col_order_ = std::make_shared<DeviceBuffer>(upload_ints(order));
    DeviceBuffer wdev = upload(w.data, static_cast<size_t>(n_ * k_) * eb);
    if (in_ks_ > 0) {
      const DeviceBuffer part = pack_part(wdev.get(), eb, n_, k_, HybridAxis::IN, order, 0, in_ks_);
      std::vector<int32_t> rows(static_cast<size_t>(n_));
      for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int32_t>(i);
      const DeviceBuffer rows_dev = upload_ints(rows);
      values_ = DeviceBuffer(static_cast<size_t>(n_ * in_ks_ / 2) * eb);
      meta_ = DeviceBuffer(static_cast<size_t>(n_ * in_ks_ / 16) * 2);
      DeviceBuffer bad(sizeof(unsigned long long));
      SPENSE_CUDA_CHECK(cudaMemset(bad.get(), 0xff, bad.size()));
      gemv::compress24(part.get(), eb == 1, in_ks_, rows_dev.as<int32_t>(), n_, values_.get(), meta_.as<uint16_t>(),
                       bad.as<unsigned long long>(), nullptr);
      unsigned long long first = 0;
      SPENSE_CUDA_CHECK(cudaMemcpy(&first, bad.get(), sizeof first, cudaMemcpyDeviceToHost));
      if (first != ~0ull) {
        const int64_t i = static_cast<int64_t>(first) / (in_ks_ / 4), c = 4 * (static_cast<int64_t>(first) % (in_ks_ / 4));
        layer_error(name(), "weights are not 2:4 outside the dense column tiles: row " + std::to_string(i) +
                                ", columns " + std::to_string(order[static_cast<size_t>(c)]) + ".." +
                                std::to_string(order[static_cast<size_t>(c)] + 3) + " hold more than 2 non-zeros");
      }
    }
    if (in_ks_ < k_) dense_ = pack_part(wdev.get(), eb, n_, k_, HybridAxis::IN, order, in_ks_, k_);
    if (prec_ == LinearPrecision::FP8) scales_ = std::make_shared<DeviceBuffer>(upload_floats(fetch_floats(w.scales, n_)));
  }


  static constexpr int64_t kTimedMaxM = 64;
  enum class Path : uint8_t { LIBRARY, CUDA_CORES, TENSOR_CORES };
  struct Choice {
    Path path;
    int slices = 0;  // tensor cores: K split (Weights::tc_slices)
    int shape = 0;   // tensor cores: block shape (Weights::tc_shape)
  };
  std::vector<Choice> candidates(int64_t m) const {
    std::vector<Choice> v;
    const SmallMKernel want = opts_.small_m_kernel;
    const gemv::Weights w = weights();
    const bool tc = want != SmallMKernel::CUDA_CORES && gemv::tc_eligible(w);
    if (want == SmallMKernel::AUTO && m > kTimedMaxM) {
      if (inner_) return {{Path::LIBRARY}};
      return {{tc ? Path::TENSOR_CORES : Path::CUDA_CORES}};
    }
    if (want != SmallMKernel::TENSOR_CORES || !tc) {
      if (want == SmallMKernel::AUTO && inner_) v.push_back({Path::LIBRARY});
      if (want != SmallMKernel::AUTO || !inner_ || m <= gemv::kMaxM) v.push_back({Path::CUDA_CORES});
    }
    for (int shape = 0; tc && shape < gemv::kTcShapes; ++shape)
      if (opts_.small_m_tc_shape >= 0 && shape != opts_.small_m_tc_shape) continue;
      else if (opts_.small_m_tc_shape < 0 && shape >= gemv::kTcFirstWgmmaShape && !gemv::tc_wgmma_ok()) continue;
      else if (opts_.small_m_tc_shape < 0 && shape >= gemv::kTcFirstE4m3Shape &&
               (!opts_.small_m_e4m3_tokens || !gemv::tc_e4m3_tokens(w, shape)))
        continue;  // would only repeat shapes 4-5
      else if (opts_.small_m_tc_shape < 0 && shape >= gemv::kTcFirstStreamShape && !gemv::tc_streamed(w, shape, m))
        continue;  // would only repeat shapes 6-7
      else if (opts_.small_m_tc_shape < 0 && shape == gemv::kTcFirstStreamShape + 2)
        continue;  // the same kernel as 11 (gemv.h)
      else if (gemv::tc_streamed(w, shape, m) && opts_.small_m_e4m3_tokens)
        v.push_back({Path::TENSOR_CORES, 1, shape});  // no K split: its blocks share the stages
      else if (opts_.small_m_tc_slices > 0)
        v.push_back({Path::TENSOR_CORES, gemv::tc_effective_slices(w, opts_.small_m_tc_slices), shape});
      else
        for (int sl : {1, 2, 3, 4, 6, 8})  // counts that fill the SMs in whole waves for most layers
          if (sl <= gemv::tc_max_slices(w) && gemv::tc_effective_slices(w, sl) == sl)  // axis=in: >= 2
            v.push_back({Path::TENSOR_CORES, sl, shape});
    return v;
  }
  void run(const Choice& c, const void* x, void* y, int64_t m, cudaStream_t s) const {
    if (c.path == Path::LIBRARY) return inner_->forward(x, y, m, s);
    gemv::Weights w = weights();
    w.tensor_cores = c.path == Path::TENSOR_CORES;
    w.tc_slices = c.slices;
    w.tc_shape = c.shape;
    w.pdl = opts_.pdl;
    if (e4m3_tokens(c)) {  // per-token E4M3 tokens (as the library FP8 layers take them)
      // Streamed shapes: chunk-major, padded to the token tile (gemv::tc_streamed).
      const bool st = streamed(c, m);
      const int64_t rows = st ? gemv::tc_stream_tokens(m) : m;
      auto* xq = static_cast<uint8_t*>(ctx_->scratch(Scratch::X_Q, static_cast<size_t>(rows * k_)));
      auto* xs = static_cast<float*>(ctx_->scratch(Scratch::X_SCALE, static_cast<size_t>(rows) * sizeof(float)));
      // Axis=in: quantized in stored column order, so the kernel reads them without the tile map.
      quantize_rows_e4m3(x, DType::BF16, k_, m, rows, k_, col_order_ ? col_order_->as<int32_t>() : nullptr, xq, k_, xs,
                         s, opts_.pdl, st ? rows : 0);
      if (st) {
        w.stream_ws_bytes = gemv::tc_stream_workspace_bytes(w, c.shape, m);
        w.stream_ws = ctx_->scratch(Scratch::GEMV_STREAM, w.stream_ws_bytes);
        w.stream_blocks = opts_.small_m_stream_blocks;
      }
      w.e4m3_tokens = true;
      w.x_scales = xs;
      return gemv::gemv(w, xq, k_, m, y, n_, s);
    }
    gemv::gemv(w, x, k_, m, y, n_, s);
  }
  bool e4m3_tokens(const Choice& c) const {
    return c.path == Path::TENSOR_CORES && opts_.small_m_e4m3_tokens && gemv::tc_e4m3_tokens(weights(), c.shape);
  }
  bool streamed(const Choice& c, int64_t m) const {
    return e4m3_tokens(c) && gemv::tc_streamed(weights(), c.shape, m);
  }
  bool any_e4m3_tokens(const std::vector<Choice>& cands) const {
    return std::any_of(cands.begin(), cands.end(), [&](const Choice& c) { return e4m3_tokens(c); });
  }

  gemv::Weights weights() const {
    gemv::Weights w;
    w.fp8 = prec_ == LinearPrecision::FP8;
    w.k = k_;
    if (inner_) {
      w.dense = inner_->device_weights();
      w.scales = inner_->device_scales();
      w.nd = n_;
    } else {
      w.sparse_values = values_.get();
      w.sparse_meta = meta_.as<uint16_t>();
      w.dense = dense_.get();
      w.scales = scales_ ? scales_->as<float>() : nullptr;
      w.row_map = row_map_ ? row_map_->as<int32_t>() : nullptr;
      w.ns = ns_;
      w.nd = nd_;
      w.axis_in = axis_in_;
      w.in_ks = in_ks_;
      w.col_tiles = col_tiles_ ? col_tiles_->as<int32_t>() : nullptr;
      w.tile_shift = tile_shift_;
    }
    w.dense_ld = axis_in_ ? k_ - in_ks_ : k_;
    return w;
  }

  std::unique_ptr<Linear> inner_;
  std::map<int64_t, Choice> choice_;  // M -> the fastest kernel
  int64_t ns_ = 0, nd_ = 0;
  bool axis_in_ = false;
  int64_t in_ks_ = 0;  // axis=in: stored 2:4 columns per row
  int tile_shift_ = 0;
  DeviceBuffer values_, meta_, dense_;
  std::shared_ptr<DeviceBuffer> row_map_, col_tiles_, scales_;
  std::shared_ptr<DeviceBuffer> col_order_;  // FP8 axis=in: stored column -> original column
};

}  // namespace

SmallMKernel small_m_kernel_parse(const std::string& s, const std::string& tool) {
  for (SmallMKernel k : {SmallMKernel::AUTO, SmallMKernel::CUDA_CORES, SmallMKernel::TENSOR_CORES})
    if (s == small_m_kernel_name(k)) return k;
  throw Error(tool + ": --small-m-kernel '" + s + "' (expected auto, cuda-cores or tensor-cores)");
}

std::unique_ptr<Linear> make_dense_linear(Context& ctx, int64_t n, int64_t k, LinearPrecision prec,
                                          const WeightsView& w, const LinearOptions& opts) {
  return in_layer(opts.name, [&]() -> std::unique_ptr<Linear> {
    return std::make_unique<DenseLinearImpl>(ctx, n, k, prec, w, opts);
  });
}

std::unique_ptr<Linear> make_sparse_linear(Context& ctx, int64_t n, int64_t k, LinearPrecision prec,
                                           const WeightsView& w, const LinearOptions& opts) {
  return in_layer(opts.name, [&]() -> std::unique_ptr<Linear> {
    return std::make_unique<SparseLinearImpl>(ctx, n, k, prec, w, opts);
  });
}

std::unique_ptr<Linear> make_gemv_linear(Context& ctx, int64_t n, int64_t k, LinearPrecision prec,
                                         const WeightsView& w, const GemvLayout& layout, const LinearOptions& opts) {
  return in_layer(opts.name, [&]() -> std::unique_ptr<Linear> {
    if (opts.small_m_stream_blocks < 0)
      layer_error(opts.name, "small_m_stream_blocks " + std::to_string(opts.small_m_stream_blocks) + " is negative");
    if (opts.small_m_tc_shape < -1 || opts.small_m_tc_shape >= gemv::kTcShapes)
      layer_error(opts.name, "small_m_tc_shape " + std::to_string(opts.small_m_tc_shape) + " is outside -1.." +
                                 std::to_string(gemv::kTcShapes - 1));
    return std::make_unique<GemvLinearImpl>(ctx, n, k, prec, w, layout, opts);
  });
}
int64_t gemv_max_m() { return gemv::kMaxM; }
bool gemv_axis_in_tile_ok(int64_t tile) { return tile >= 32 && (tile & (tile - 1)) == 0; }

std::unique_ptr<Linear> make_hybrid_linear(Context& ctx, int64_t n, int64_t k, LinearPrecision prec,
                                           const WeightsView& w, const HybridLayout& layout,
                                           const LinearOptions& opts) {
  return in_layer(opts.name, [&]() -> std::unique_ptr<Linear> {
    return std::make_unique<HybridLinearImpl>(ctx, n, k, prec, w, layout, opts);
  });
}

void hybrid_layout_check(const std::string& name, int64_t extent, const HybridLayout& layout) {
  const char* ax = axis_name(layout.axis);
  if (layout.tile <= 0 || layout.tile % 16 != 0)
    layer_error(name, "tile size " + std::to_string(layout.tile) + " is not a positive multiple of 16");
  if (extent % layout.tile != 0)
    layer_error(name, std::string("axis=") + ax + " extent " + std::to_string(extent) +
                          " is not a multiple of the tile size " + std::to_string(layout.tile));
  const int64_t tiles = extent / layout.tile;
  std::vector<char> seen(static_cast<size_t>(tiles), 0);
  for (int32_t t : layout.dense_tiles) {
    if (t < 0 || t >= tiles)
      layer_error(name, "dense tile index " + std::to_string(t) + " is out of range [0, " + std::to_string(tiles) +
                            ") for axis=" + ax);
    if (seen[static_cast<size_t>(t)]) layer_error(name, "dense tile index " + std::to_string(t) + " is repeated");
    seen[static_cast<size_t>(t)] = 1;
  }
}

std::vector<int32_t> hybrid_stored_order(int64_t extent, const HybridLayout& layout) {
  const int64_t tiles = extent / layout.tile;
  std::vector<char> dense(static_cast<size_t>(tiles), 0);
  for (int32_t t : layout.dense_tiles) dense[static_cast<size_t>(t)] = 1;
  std::vector<int32_t> order;
  order.reserve(static_cast<size_t>(extent));
  for (int pass = 0; pass < 2; ++pass)
    for (int64_t t = 0; t < tiles; ++t)
      if (dense[static_cast<size_t>(t)] == pass)
        for (int64_t i = 0; i < layout.tile; ++i) order.push_back(static_cast<int32_t>(t * layout.tile + i));
  return order;
}

std::vector<int32_t> hybrid_spread_tiles(int64_t extent, int64_t tile, double d) {
  const int64_t tiles = extent / tile;
  const int64_t nd = std::clamp<int64_t>(std::llround(d * static_cast<double>(tiles)), 0, tiles);
  std::vector<int32_t> v;
  for (int64_t i = 0; i < nd; ++i)
    v.push_back(static_cast<int32_t>((2 * i + 1) * tiles / (2 * nd)));
  return v;
}

}  // namespace spense::cuda
