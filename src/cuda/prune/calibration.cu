// The GPU CalibrationRunner (spense/cuda/prune_gpu.h): Model::block_forward() on the device,
// fp32, one calibration window at a time, with the four linear inputs' Hessians accumulated
// as fp64 SYRK. Each kernel follows the CPU reference in src/model/ops.cpp (same formulas,
// same order of roundings where a formula has a choice, no FMA contraction in RoPE), so the
// two paths differ by rounding only: the summation order of the matrix products, expf against
// glibc's, and the softmax normalised before the value product (the CPU scales after it).
// Attention is computed with full T x T score matrices per head (cuBLAS strided batches over
// the KV heads, one batch per query head of a group) and a causal softmax kernel.
// The layer's weights are uploaded at every call (the pipeline changes them between calls).
// With MatmulDType::BF16 the seven linear products take BF16-rounded weights (kept on the device
// in BF16 only) and inputs (rounded into a scratch buffer before each product), accumulate in
// fp32 on the tensor cores and write fp32, as ops::matmul_nt_bf16 does on the CPU; attention's
// products stay fp32 on both.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cuda/prune/gpu_common.h"
#include "cuda/reduce.cuh"
#include "model/ops.h"
#include "spense/cuda/prune_gpu.h"
#include "spense/error.h"
#include "spense/model.h"

namespace spense::cuda {
namespace {

__global__ void rmsnorm_kernel(const float* x, int64_t dim, const float* __restrict__ w, float eps,
                               float* y) {
  const int64_t r = blockIdx.x;
  const float* xr = x + r * dim;
  float* yr = y + r * dim;
  double ss = 0;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) ss += double(xr[j]) * double(xr[j]);
  ss = block_sum(ss);
  // As ops::rmsnorm: variance rounded to fp32, + eps in fp32, 1/sqrt in fp64 rounded to fp32.
  const float var = float(ss / double(dim));
  const float inv = float(1.0 / sqrt(double(var + eps)));
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) yr[j] = __fmul_rn(w[j], __fmul_rn(xr[j], inv));
}

__global__ void rope_kernel(float* __restrict__ x, int64_t T, int64_t heads, int64_t D,
                            const float* __restrict__ cs, const float* __restrict__ sn) {
  const int64_t half = D / 2, n = T * heads * half;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx % half, th = idx / half, t = th / heads;
    float* v = x + th * D;
    const float c = cs[t * half + i], s = sn[t * half + i];
    const float a = v[i], b = v[i + half];
    v[i] = __fadd_rn(__fmul_rn(a, c), __fmul_rn(-b, s));
    v[i + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
  }
}

__global__ void bias_kernel(float* __restrict__ y, int64_t T, int64_t n, const float* __restrict__ b) {
  const int64_t total = T * n;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total; idx += int64_t(gridDim.x) * blockDim.x)
    y[idx] = __fadd_rn(y[idx], b[idx % n]);
}

__global__ void silu_mul_kernel(float* __restrict__ g, const float* __restrict__ u, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = g[i];
    g[i] = __fmul_rn(__fdiv_rn(x, __fadd_rn(1.0f, expf(-x))), u[i]);
  }
}

// y = x rounded to BF16, nearest even (NaN stays NaN), as f32_to_bf16 (dtype.h).
__global__ void to_bf16_kernel(const float* __restrict__ x, __nv_bfloat16* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __float2bfloat16_rn(x[i]);
}

// Row (head h, query t) of the T x T scores: softmax over keys 0..t, zeros after.
__global__ void softmax_causal_kernel(float* __restrict__ S, int64_t T) {
  const int64_t row = blockIdx.x, t = row % T;
  float* p = S + row * T;
  const int64_t visible = t + 1;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < visible; j += blockDim.x) mx = fmaxf(mx, p[j]);
  mx = block_max(mx);
  float sum = 0;
  for (int64_t j = threadIdx.x; j < visible; j += blockDim.x) {
    const float e = expf(p[j] - mx);
    p[j] = e;
    sum += e;
  }
  const float inv = 1.0f / block_sum(sum);
  for (int64_t j = threadIdx.x; j < T; j += blockDim.x) p[j] = j < visible ? p[j] * inv : 0.0f;
}

// fp32 -> fp64 copy; the smallest index of a NaN/Inf goes to *bad.
__global__ void widen_check_kernel(const float* __restrict__ x, double* __restrict__ y, int64_t n,
                                   unsigned long long* bad) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = x[i];
    if (!isfinite(v)) atomicMin(bad, (unsigned long long)i);
    y[i] = double(v);
  }
}

// S (column-major upper triangle of sum x x^T) -> full H = scale * S in place; col_sq = diag S.
__global__ void finalize_kernel(double* S, int64_t K, double scale, double* __restrict__ col_sq) {
  const int64_t n = K * K;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx % K, j = idx / K;
    if (i > j) continue;
    const double v = S[idx];
    if (i == j) col_sq[i] = v;
    S[idx] = scale * v;
    S[j + i * K] = scale * v;
  }
}

// One linear input's Hessian on the device.
struct DeviceHessian {
  std::string name;
  int64_t K = 0, n = 0;
  DeviceBuffer S;
};

class GpuCalibrationRunner final : public CalibrationRunner {
 public:
  GpuCalibrationRunner(ActivationPlacement p, MatmulDType dt) : placement_(p), dtype_(dt) {}
  const char* name() const override { return "cuda"; }

  void reset(const Model& model, std::vector<float> acts, int64_t S, int64_t T) override {
    const ModelConfig& c = model.config();
    if (int64_t(acts.size()) != S * T * c.hidden_size)
      throw Error("calibration runner: " + std::to_string(acts.size()) + " activations, expected " +
                  std::to_string(S) + " x " + std::to_string(T) + " x " + std::to_string(c.hidden_size), 1);
    S_ = S, T_ = T, H_ = c.hidden_size, D_ = c.head_dim, NH_ = c.num_heads, NKV_ = c.num_kv_heads;
    QD_ = NH_ * D_, KVD_ = NKV_ * D_, I_ = c.intermediate_size;
    eps_ = float(c.rms_norm_eps);
    const int64_t elems = S * T * H_;
    acts_dev_.reset();
    acts_host_.clear();
    // Scratch first, so the activations' placement sees what is left.
    x_ = device_alloc<float>(T * H_);
    xn_ = device_alloc<float>(T * H_);
    q_ = device_alloc<float>(T * QD_);
    k_ = device_alloc<float>(T * KVD_);
    v_ = device_alloc<float>(T * KVD_);
    attn_ = device_alloc<float>(T * QD_);
    g_ = device_alloc<float>(T * I_);
    u_ = device_alloc<float>(T * I_);
    scores_ = device_alloc<float>(NH_ * T * T);
    wide_ = device_alloc<double>(T * std::max({H_, QD_, I_}));
    if (dtype_ == MatmulDType::BF16) xb_ = device_alloc<__nv_bfloat16>(T * std::max({H_, QD_, I_}));
    bad_ = device_alloc<unsigned long long>(1);
    std::vector<float> cs, sn;
    ops::rope_tables(rope_inv_freq(c), T, cs, sn);
    cos_ = device_upload(cs.data(), cs.size() * sizeof(float));
    sin_ = device_upload(sn.data(), sn.size() * sizeof(float));
    size_t free_b = 0, total_b = 0;
    SPENSE_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    // Room besides the activations for the Hessians, one layer's weights, and the pruning of the
    // largest projection that follows (inverse factor: two K x K; OBS: W, U and the errors).
    const int64_t Kmax = std::max({H_, QD_, I_}), NKmax = std::max(I_ * H_, QD_ * H_);
    const double need_other = 8.0 * double(H_ * H_ * 2 + QD_ * QD_ + I_ * I_) +
                              4.0 * double(3 * H_ * I_ + H_ * (QD_ + 2 * KVD_) + QD_ * H_) +
                              8.0 * double(2 * Kmax * Kmax + NKmax);
    on_device_ = placement_ == ActivationPlacement::DEVICE ||
                 (placement_ == ActivationPlacement::AUTO && 4.0 * double(elems) + need_other < 0.9 * double(free_b));
    if (on_device_) {
      acts_dev_ = device_copy_of(acts.data(), elems);
    } else {
      acts_host_ = std::move(acts);
    }
  }

  std::vector<Hessian> hessians(const Model& model, int64_t l, const std::function<void()>& on_window) override {
    upload_layer(model, l);
    const int64_t dims[4] = {H_, QD_, H_, I_};
    hs_.clear();
    hs_.resize(4);
    for (int r = 0; r < 4; ++r) {
      hs_[size_t(r)].name = "model.layers." + std::to_string(l) + "." + linear_input_name(static_cast<LinearInput>(r));
      hs_[size_t(r)].K = dims[r];
      hs_[size_t(r)].S = device_alloc<double>(dims[r] * dims[r]);
      SPENSE_CUDA_CHECK(cudaMemset(hs_[size_t(r)].S.get(), 0, size_t(dims[r] * dims[r]) * sizeof(double)));
    }
    for (int64_t s = 0; s < S_; ++s) {
      load_window(s, x_.as<float>());
      block(x_.as<float>(), /*collect=*/true);
      if (on_window) on_window();
    }
    std::vector<Hessian> out;
    for (auto& dh : hs_) {
      if (dh.n == 0) throw Error("layer '" + dh.name + "': no calibration rows were added to the Hessian");
      Hessian h;
      h.K = dh.K;
      h.n_rows = dh.n;
      DeviceBuffer col = device_alloc<double>(dh.K);
      finalize_kernel<<<grid_for(dh.K * dh.K), 256>>>(dh.S.as<double>(), dh.K, 2.0 / double(dh.n), col.as<double>());
      SPENSE_CUDA_CHECK_LAUNCH();
      h.H.resize(size_t(dh.K * dh.K));
      h.col_sq.resize(size_t(dh.K));
      SPENSE_CUDA_CHECK(cudaMemcpy(h.H.data(), dh.S.get(), h.H.size() * sizeof(double), cudaMemcpyDeviceToHost));
      SPENSE_CUDA_CHECK(cudaMemcpy(h.col_sq.data(), col.get(), h.col_sq.size() * sizeof(double), cudaMemcpyDeviceToHost));
      dh.S.reset();
      for (int64_t i = 0; i < h.K; ++i)
        if (!std::isfinite(h.H[size_t(i * h.K + i)]))
          throw Error("layer '" + dh.name + "': Hessian overflowed (diag [" + std::to_string(i) + "] is Inf)");
      out.push_back(std::move(h));
    }
    hs_.clear();
    release_layer();
    return out;
  }

  void advance(const Model& model, int64_t l, const std::function<void()>& on_window) override {
    upload_layer(model, l);
    for (int64_t s = 0; s < S_; ++s) {
      if (on_device_) {
        block(acts_dev_.as<float>() + s * T_ * H_, false);
      } else {
        load_window(s, x_.as<float>());
        block(x_.as<float>(), false);
        SPENSE_CUDA_CHECK(cudaMemcpy(acts_host_.data() + s * T_ * H_, x_.get(), size_t(T_ * H_) * sizeof(float),
                                     cudaMemcpyDeviceToHost));
      }
      if (on_window) on_window();
    }
    SPENSE_CUDA_CHECK(cudaDeviceSynchronize());
    release_layer();
  }

 private:
  struct DevLinear {
    int64_t out = 0, in = 0;
    DeviceBuffer w, b;  // w: fp32, or BF16 with MatmulDType::BF16
  };

  void load_window(int64_t s, float* dst) {
    const size_t bytes = size_t(T_ * H_) * sizeof(float);
    if (on_device_)
      SPENSE_CUDA_CHECK(cudaMemcpy(dst, acts_dev_.as<float>() + s * T_ * H_, bytes, cudaMemcpyDeviceToDevice));
    else
      copy_to_device(dst, acts_host_.data() + s * T_ * H_, bytes);
  }

  static DeviceBuffer upload(const std::vector<float>& v) {
    if (v.empty()) return {};
    return device_copy_of(v.data(), int64_t(v.size()));
  }

  void upload_layer(const Model& model, int64_t l) {
    const LayerWeights& L = model.layer(l);
    for (Proj p : kAllProjs) {
      const Linear& src = L.proj(p);
      DevLinear& d = lin_[static_cast<int>(p)];
      d.out = src.out, d.in = src.in;
      d.w = upload(src.weight);
      if (dtype_ == MatmulDType::BF16 && d.w.get()) {  // keep the BF16 copy only
        const int64_t n = int64_t(src.weight.size());
        DeviceBuffer wb = device_alloc<__nv_bfloat16>(n);
        to_bf16_kernel<<<grid_for(n), 256>>>(d.w.as<float>(), wb.as<__nv_bfloat16>(), n);
        SPENSE_CUDA_CHECK_LAUNCH();
        d.w = std::move(wb);
      }
      d.b = upload(src.bias);
    }
    in_norm_ = upload(L.input_norm);
    post_norm_ = upload(L.post_norm);
    q_norm_ = upload(L.q_norm);
    k_norm_ = upload(L.k_norm);
  }

  void release_layer() {
    for (auto& d : lin_) d.w.reset(), d.b.reset();
    in_norm_.reset(), post_norm_.reset(), q_norm_.reset(), k_norm_.reset();
  }

  // y[T, out] (+)= x[T, in] W^T (+ b).
  void linear(const float* x, Proj p, float* y, bool accumulate) {
    const DevLinear& d = lin_[static_cast<int>(p)];
    const float alpha = 1, beta = accumulate ? 1.0f : 0.0f;
    if (dtype_ == MatmulDType::BF16) {
      __nv_bfloat16* xb = xb_.as<__nv_bfloat16>();
      to_bf16_kernel<<<grid_for(T_ * d.in), 256>>>(x, xb, T_ * d.in);
      SPENSE_CUDA_CHECK_LAUNCH();
      SPENSE_CUDA_CHECK(cublasGemmEx(blas_.get(), CUBLAS_OP_T, CUBLAS_OP_N, int(d.out), int(T_), int(d.in), &alpha,
                                     d.w.get(), CUDA_R_16BF, int(d.in), xb, CUDA_R_16BF, int(d.in), &beta, y,
                                     CUDA_R_32F, int(d.out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    } else {
      SPENSE_CUDA_CHECK(cublasSgemm(blas_.get(), CUBLAS_OP_T, CUBLAS_OP_N, int(d.out), int(T_), int(d.in), &alpha,
                                    d.w.as<float>(), int(d.in), x, int(d.in), &beta, y, int(d.out)));
    }
    if (d.b.get()) {
      bias_kernel<<<grid_for(T_ * d.out), 256>>>(y, T_, d.out, d.b.as<float>());
      SPENSE_CUDA_CHECK_LAUNCH();
    }
  }

  void rmsnorm(const float* x, int64_t rows, int64_t dim, const DeviceBuffer& w, float* y) {
    const int threads = int(std::min<int64_t>(256, (dim + 31) / 32 * 32));
    rmsnorm_kernel<<<unsigned(rows), threads>>>(x, dim, w.as<float>(), eps_, y);
    SPENSE_CUDA_CHECK_LAUNCH();
  }

  void add_hessian(int r, const float* x, int64_t K) {
    DeviceHessian& dh = hs_[size_t(r)];
    const int64_t n = T_ * K;
    const unsigned long long none = ~0ull;
    SPENSE_CUDA_CHECK(cudaMemcpy(bad_.get(), &none, sizeof none, cudaMemcpyHostToDevice));
    widen_check_kernel<<<grid_for(n), 256>>>(x, wide_.as<double>(), n, bad_.as<unsigned long long>());
    SPENSE_CUDA_CHECK_LAUNCH();
    unsigned long long bad = 0;
    SPENSE_CUDA_CHECK(cudaMemcpy(&bad, bad_.get(), sizeof bad, cudaMemcpyDeviceToHost));
    if (bad != none)
      throw Error("layer '" + dh.name + "': calibration activation row " + std::to_string(dh.n + int64_t(bad) / K) +
                  ", column " + std::to_string(int64_t(bad) % K) + " is NaN or Inf");
    // Column-major: S (K x K, upper) += A A^T with A = x^T (K x T).
    const double one = 1;
    SPENSE_CUDA_CHECK(cublasDsyrk(blas_.get(), CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, int(K), int(T_), &one,
                                  wide_.as<double>(), int(K), &one, dh.S.as<double>(), int(K)));
    dh.n += T_;
  }

  // One decoder layer in place on x [T, hidden] (Model::block_forward).
  void block(float* x, bool collect) {
    const int64_t T = T_, rep = NH_ / NKV_;
    float* xn = xn_.as<float>();
    float *q = q_.as<float>(), *k = k_.as<float>(), *v = v_.as<float>(), *attn = attn_.as<float>();
    rmsnorm(x, T, H_, in_norm_, xn);
    if (collect) add_hessian(0, xn, H_);
    linear(xn, Proj::Q, q, false);
    linear(xn, Proj::K, k, false);
    linear(xn, Proj::V, v, false);
    if (q_norm_.get()) rmsnorm(q, T * NH_, D_, q_norm_, q);
    if (k_norm_.get()) rmsnorm(k, T * NKV_, D_, k_norm_, k);
    rope_kernel<<<grid_for(T * NH_ * D_ / 2), 256>>>(q, T, NH_, D_, cos_.as<float>(), sin_.as<float>());
    SPENSE_CUDA_CHECK_LAUNCH();
    rope_kernel<<<grid_for(T * NKV_ * D_ / 2), 256>>>(k, T, NKV_, D_, cos_.as<float>(), sin_.as<float>());
    SPENSE_CUDA_CHECK_LAUNCH();
    // Scores of head h = g * rep + r at scores + h T T, column-major [key, query].
    const float scale = float(1.0 / std::sqrt(double(D_))), one = 1, zero = 0;
    float* sc = scores_.as<float>();
    for (int64_t r = 0; r < rep; ++r)
      SPENSE_CUDA_CHECK(cublasSgemmStridedBatched(blas_.get(), CUBLAS_OP_T, CUBLAS_OP_N, int(T), int(T), int(D_), &scale,
                                                  k, int(KVD_), D_, q + r * D_, int(QD_), rep * D_, &zero,
                                                  sc + r * T * T, int(T), rep * T * T, int(NKV_)));
    softmax_causal_kernel<<<unsigned(NH_ * T), 256>>>(sc, T);
    SPENSE_CUDA_CHECK_LAUNCH();
    for (int64_t r = 0; r < rep; ++r)
      SPENSE_CUDA_CHECK(cublasSgemmStridedBatched(blas_.get(), CUBLAS_OP_N, CUBLAS_OP_N, int(D_), int(T), int(T), &one,
                                                  v, int(KVD_), D_, sc + r * T * T, int(T), rep * T * T, &zero,
                                                  attn + r * D_, int(QD_), rep * D_, int(NKV_)));
    if (collect) add_hessian(1, attn, QD_);
    linear(attn, Proj::O, x, true);  // residual add
    rmsnorm(x, T, H_, post_norm_, xn);
    if (collect) add_hessian(2, xn, H_);
    float *g = g_.as<float>(), *u = u_.as<float>();
    linear(xn, Proj::GATE, g, false);
    linear(xn, Proj::UP, u, false);
    silu_mul_kernel<<<grid_for(T * I_), 256>>>(g, u, T * I_);
    SPENSE_CUDA_CHECK_LAUNCH();
    if (collect) add_hessian(3, g, I_);
    linear(g, Proj::DOWN, x, true);  // residual add
  }

  ActivationPlacement placement_;
  MatmulDType dtype_;
  BlasHandle blas_;
  int64_t S_ = 0, T_ = 0, H_ = 0, D_ = 0, NH_ = 0, NKV_ = 0, QD_ = 0, KVD_ = 0, I_ = 0;
  float eps_ = 1e-6f;
  bool on_device_ = true;
  DeviceBuffer acts_dev_;
  std::vector<float> acts_host_;
  DeviceBuffer x_, xn_, q_, k_, v_, attn_, g_, u_, scores_, wide_, bad_, cos_, sin_;
  DeviceBuffer xb_;  // MatmulDType::BF16: a product's input rounded to BF16
  DevLinear lin_[7];
  DeviceBuffer in_norm_, post_norm_, q_norm_, k_norm_;
  std::vector<DeviceHessian> hs_;
};

}  // namespace

std::unique_ptr<CalibrationRunner> make_gpu_calibration_runner(ActivationPlacement p, MatmulDType linear_dtype) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)
    throw Error("--device cuda: no CUDA device is available");
  return std::make_unique<GpuCalibrationRunner>(p, linear_dtype);
}

}  // namespace spense::cuda
