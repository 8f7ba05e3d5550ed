// Host (CPU) twins for the GPU linear-layer tests: random data, 16-bit and E4M3 conversions
// (the CUDA headers' host paths, the same rounding as the device), 2:4 magnitude pruning with
// the device kernel's tie rule, per-row E4M3 quantization with the device kernel's arithmetic,
// an fp64-accumulated reference GEMM, and the relative error ||out - ref|| / ||ref||.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace spense::cuda::testutil {

inline uint16_t f32_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even (inputs are finite)
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_bits_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_f16_bits(float f) {
  __half h = __float2half_rn(f);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
inline float f16_bits_to_f32(uint16_t b) {
  __half_raw r;
  r.x = b;
  return __half2float(__half(r));
}
inline uint8_t f32_to_e4m3(float f) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3));
}
inline float e4m3_to_f32(uint8_t v) {
  __half_raw hr = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(v), __NV_E4M3);
  __half h(hr);
  return __half2float(h);
}

inline std::vector<float> random_uniform(size_t n, uint64_t seed, float amp = 1.f) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<float> d(-amp, amp);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// Round fp32 values to 16-bit (fp16=false: BF16) and back, returning both.
inline std::vector<uint16_t> to16(const std::vector<float>& v, bool fp16, std::vector<float>* rounded) {
  std::vector<uint16_t> b(v.size());
  rounded->resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    b[i] = fp16 ? f32_to_f16_bits(v[i]) : f32_to_bf16_bits(v[i]);
    (*rounded)[i] = fp16 ? f16_bits_to_f32(b[i]) : bf16_bits_to_f32(b[i]);
  }
  return b;
}

// 2:4 along k: keep the 2 largest |w| of each group of 4 (ties: lower index), skipping rows or
// columns marked dense (empty vectors: none).
inline void prune24(std::vector<float>& w, int64_t rows, int64_t k, const std::vector<uint8_t>& row_dense,
                    const std::vector<uint8_t>& col_dense) {
  for (int64_t r = 0; r < rows; ++r) {
    if (!row_dense.empty() && row_dense[r]) continue;
    for (int64_t c = 0; c < k; c += 4) {
      if (!col_dense.empty() && col_dense[c]) continue;
      float a[4];
      for (int i = 0; i < 4; ++i) a[i] = std::fabs(w[r * k + c + i]);
      for (int i = 0; i < 4; ++i) {
        int rank = 0;
        for (int j = 0; j < 4; ++j) rank += (a[j] > a[i]) || (a[j] == a[i] && j < i);
        if (rank >= 2) w[r * k + c + i] = 0.f;
      }
    }
  }
}

// Per-row E4M3 quantization, the device kernel's arithmetic: inv = 448/amax, scale = amax/448.
inline void quantize_rows(const std::vector<float>& x, int64_t rows, int64_t k, std::vector<uint8_t>* q,
                          std::vector<float>* scale, std::vector<float>* dequant) {
  q->resize(x.size());
  scale->resize(static_cast<size_t>(rows));
  dequant->resize(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0.f;
    for (int64_t j = 0; j < k; ++j) amax = std::fmax(amax, std::fabs(x[r * k + j]));
    const float inv = amax > 0.f ? 448.f / amax : 0.f;
    (*scale)[r] = amax / 448.f;
    for (int64_t j = 0; j < k; ++j) {
      (*q)[r * k + j] = f32_to_e4m3(x[r * k + j] * inv);
      (*dequant)[r * k + j] = e4m3_to_f32((*q)[r * k + j]) * (*scale)[r];
    }
  }
}

// y = x w^T: x m x k, w n x k, fp64 accumulation.
inline std::vector<float> ref_gemm(const std::vector<float>& x, const std::vector<float>& w, int64_t m, int64_t n,
                                   int64_t k) {
  std::vector<float> y(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      const float* a = &x[i * k];
      const float* b = &w[j * k];
      for (int64_t t = 0; t < k; ++t) s += double(a[t]) * double(b[t]);
      y[i * n + j] = static_cast<float>(s);
    }
  return y;
}

// ||out - ref|| / ||ref||; infinity if out holds a NaN or Inf (unwritten poisoned outputs).
inline double rel_err(const std::vector<float>& out, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(out[i])) return std::numeric_limits<double>::infinity();
    const double d = double(out[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}

}  // namespace spense::cuda::testutil
