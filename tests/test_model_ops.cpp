// CPU kernels of the reference model (src/model/ops.cpp) against plain double-precision loops
// written straight from the definitions, on shapes the transformers fixtures do not reach:
// sequences spanning several attention query blocks, every GQA group size, products split
// across threads.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "model/ops.h"
#include "model/vmath.h"
#include "spense/dtype.h"
#include "spense/error.h"

using namespace spense;

namespace {

std::vector<float> randn(size_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// softmax(q k^T / sqrt(d) + causal mask) v, per head, in double.
std::vector<double> naive_attention(const std::vector<float>& q, const std::vector<float>& k,
                                    const std::vector<float>& v, int64_t T, int64_t H, int64_t KV, int64_t D) {
  std::vector<double> out(static_cast<size_t>(T * H * D), 0.0);
  std::vector<double> w(static_cast<size_t>(T));
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = h / (H / KV);
    for (int64_t i = 0; i < T; ++i) {
      double mx = -1e300;
      for (int64_t j = 0; j <= i; ++j) {
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += static_cast<double>(q[(i * H + h) * D + d]) * k[(j * KV + g) * D + d];
        w[j] = s / std::sqrt(static_cast<double>(D));
        mx = std::max(mx, w[j]);
      }
      double sum = 0;
      for (int64_t j = 0; j <= i; ++j) sum += (w[j] = std::exp(w[j] - mx));
      for (int64_t j = 0; j <= i; ++j)
        for (int64_t d = 0; d < D; ++d) out[(i * H + h) * D + d] += w[j] / sum * v[(j * KV + g) * D + d];
    }
  }
  return out;
}

TEST(Ops, AttentionMatchesDefinitionAcrossBlocksAndGroups) {
  ops::BlasSingleThread guard;
  for (const auto& [T, H, KV] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {1, 2, 1}, {257, 4, 4}, {600, 6, 2}, {513, 4, 1}}) {
    const int64_t D = 16;
    SCOPED_TRACE("T=" + std::to_string(T) + " H=" + std::to_string(H) + " KV=" + std::to_string(KV));
    const auto q = randn(static_cast<size_t>(T * H * D), 1, 2.0f);
    const auto k = randn(static_cast<size_t>(T * KV * D), 2, 2.0f);
    const auto v = randn(static_cast<size_t>(T * KV * D), 3);
    std::vector<float> out(static_cast<size_t>(T * H * D), -7.0f);
    ops::attention_causal(q.data(), k.data(), v.data(), T, H, KV, D, out.data());
    const auto ref = naive_attention(q, k, v, T, H, KV, D);
    double md = 0;
    for (size_t i = 0; i < out.size(); ++i) md = std::max(md, std::fabs(out[i] - ref[i]));
    // fp32 scores and sums over up to 600 terms of O(1) values: ~1e-6 expected
    EXPECT_LT(md, 1e-4);
  }
}

TEST(Ops, LinearSplitAcrossThreadsMatchesDefinition) {
  ops::BlasSingleThread guard;
  const int64_t T = 300, K = 96, N = 1000;  // large enough to be split across threads
  Linear L;
  L.out = N;
  L.in = K;
  L.weight = randn(static_cast<size_t>(N * K), 4);
  L.bias = randn(static_cast<size_t>(N), 5);
  const auto x = randn(static_cast<size_t>(T * K), 6);
  std::vector<float> y(static_cast<size_t>(T * N), 1.0f);
  ops::linear(x.data(), T, L, y.data(), /*accumulate=*/true);
  double md = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      double s = 1.0 + L.bias[n];
      for (int64_t kk = 0; kk < K; ++kk) s += static_cast<double>(x[t * K + kk]) * L.weight[n * K + kk];
      md = std::max(md, std::fabs(s - y[t * N + n]));
    }
  EXPECT_LT(md, 1e-4);
}

// BF16 rounding written from the definition (8 significant bits, ties to even), independent of
// bf16_matmul.cpp's bit trick: frexp's mantissa in [0.5, 1) scaled by 2^8 and rounded by
// nearbyint (the default rounding mode is to nearest, ties to even).
double bf16_round(float f) {
  int e = 0;
  const double m = std::frexp(static_cast<double>(f), &e);
  return std::ldexp(std::nearbyint(std::ldexp(m, 8)), e - 8);
}

// matmul_nt_bf16 (oneDNN) against a double-precision loop over the BF16-rounded inputs: the
// products then differ only by fp32 accumulation (relative 1e-6 expected), while the unrounded
// fp32 product is about 3e-3 away (so the test sees that the inputs really were rounded).
TEST(Ops, Bf16MatmulMatchesRoundedDefinition) {
  using Fn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*, float);
  // matmul_nt_bf16 (oneDNN where this machine has it) and its sgemm path (every machine)
  for (const auto& [path, fn] : {std::pair<const char*, Fn>{ops::bf16_matmul_onednn() ? "onednn" : "sgemm", ops::matmul_nt_bf16},
                                 std::pair<const char*, Fn>{"sgemm", ops::matmul_nt_bf16_sgemm}})
  for (const auto& [T, N, K] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1, 7, 5}, {37, 29, 53}, {300, 1000, 96}}) {
    SCOPED_TRACE(std::string(path) + " T=" + std::to_string(T) + " N=" + std::to_string(N) + " K=" + std::to_string(K));
    const auto x = randn(static_cast<size_t>(T * K), 7);
    const auto W = randn(static_cast<size_t>(N * K), 8, 0.1f);
    for (float beta : {0.0f, 1.0f}) {
      std::vector<float> y = randn(static_cast<size_t>(T * N), 9);
      const std::vector<float> y0 = y;
      fn(x.data(), T, W.data(), N, K, y.data(), beta);
      double num = 0, den = 0, num_unrounded = 0;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t n = 0; n < N; ++n) {
          double s = beta * y0[t * N + n], u = s;
          for (int64_t k = 0; k < K; ++k) {
            s += bf16_round(x[t * K + k]) * bf16_round(W[n * K + k]);
            u += static_cast<double>(x[t * K + k]) * W[n * K + k];
          }
          const double d = y[t * N + n] - s;
          num += d * d, den += s * s, num_unrounded += (u - s) * (u - s);
        }
      EXPECT_LT(std::sqrt(num / den), 1e-5) << "beta " << beta;
      if (K > 16) EXPECT_GT(std::sqrt(num_unrounded / den), 1e-4) << "the inputs were not rounded to BF16?";
    }
  }
  EXPECT_THROW(ops::matmul_nt_bf16(nullptr, 1, nullptr, 1, 1, nullptr, 0.5f), Error);
}

TEST(Ops, RmsNormAndSwiGlu) {
  const int64_t rows = 3, dim = 50;
  const auto x = randn(static_cast<size_t>(rows * dim), 7);
  const auto w = randn(static_cast<size_t>(dim), 8);
  std::vector<float> y(x.size());
  ops::rmsnorm(x.data(), rows, dim, w.data(), 1e-6, y.data());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t j = 0; j < dim; ++j) ss += static_cast<double>(x[r * dim + j]) * x[r * dim + j];
    const double inv = 1.0 / std::sqrt(ss / dim + 1e-6);
    for (int64_t j = 0; j < dim; ++j) EXPECT_NEAR(y[r * dim + j], w[j] * x[r * dim + j] * inv, 1e-5);
  }
  std::vector<float> g = {-3.0f, 0.0f, 2.0f}, u = {2.0f, 5.0f, -1.0f};
  ops::silu_mul(g.data(), u.data(), 3);
  EXPECT_NEAR(g[0], -3.0 / (1 + std::exp(3.0)) * 2.0, 1e-6);
  EXPECT_EQ(g[1], 0.0f);
  EXPECT_NEAR(g[2], 2.0 / (1 + std::exp(-2.0)) * -1.0, 1e-6);
}

// The vectorised kernels (vmath.h), every variant this CPU runs, against fp64 std::exp and the
// scalar f32_to_bf16 (dtype.h), on lengths that leave vector tails (1, 7, 17, 1001).
TEST(Ops, VectorKernelsMatchDefinitions) {
  for (const vmath::Kernels& k : vmath::supported_kernels()) {
    SCOPED_TRACE(k.isa);
    // exp over its whole clamped range: within 2e-7 relative (measured max 7e-8).
    for (int64_t n : {1, 7, 17, 1001}) {
      std::vector<float> x(static_cast<size_t>(n)), ref_x(x.size());
      for (int64_t j = 0; j < n; ++j) x[size_t(j)] = -87.0f + 175.3f * float(j) / float(std::max<int64_t>(n - 1, 1));
      ref_x = x;
      const float shift = 0.25f;
      k.exp_shifted_sum(x.data(), n, shift);  // the sum overflows fp32 here; checked below
      double max_rel = 0;
      for (int64_t j = 0; j < n; ++j) {
        const double arg = double(ref_x[size_t(j)] - shift);  // the fp32 difference, as the kernel forms it
        const double e = std::exp(std::min(std::max(arg, -87.0), 88.3));
        max_rel = std::max(max_rel, std::fabs(x[size_t(j)] - e) / e);
      }
      EXPECT_LT(max_rel, 2e-7) << "n " << n;
    }
    // A softmax row: max, then exp(x - max) and its sum, against fp64.
    for (int64_t n : {1, 7, 1001}) {
      auto row = randn(size_t(n), 11, 5.0f);
      const auto row0 = row;
      const float mx = k.max_value(row.data(), n);
      EXPECT_EQ(mx, *std::max_element(row.begin(), row.end()));
      const float sum = k.exp_shifted_sum(row.data(), n, mx);
      double ref_sum = 0;
      for (int64_t j = 0; j < n; ++j) ref_sum += std::exp(double(row0[size_t(j)] - mx));
      EXPECT_NEAR(sum, ref_sum, 1e-6 * ref_sum) << "n " << n;
    }
    // Clamping: far below -87 gives a tiny positive normal, far above 88.3 a finite value, no NaN.
    std::vector<float> ext = {-1e4f, -200.0f, 200.0f, 1e4f, std::numeric_limits<float>::quiet_NaN()};
    k.exp_shifted_sum(ext.data(), 5, 0.0f);
    for (int i = 0; i < 2; ++i) EXPECT_TRUE(ext[size_t(i)] > 0 && ext[size_t(i)] < 2e-38f) << ext[size_t(i)];
    for (int i = 2; i < 4; ++i) EXPECT_TRUE(std::isfinite(ext[size_t(i)]) && ext[size_t(i)] > 1e38f) << ext[size_t(i)];
    EXPECT_TRUE(std::isnan(ext[4]));
    EXPECT_EQ(k.max_value(nullptr, 0), -std::numeric_limits<float>::infinity());
    // SiLU x up against the fp64 definition, including saturated arguments.
    for (int64_t n : {1, 17, 1001}) {
      auto g = randn(size_t(n), 12, 6.0f), u = randn(size_t(n), 13);
      g[0] = n > 1 ? -120.0f : 3.0f;
      if (n > 1) g[1] = 120.0f;
      const auto g0 = g;
      k.silu_mul(g.data(), u.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double ref = double(g0[size_t(i)]) / (1.0 + std::exp(-double(g0[size_t(i)]))) * u[size_t(i)];
        EXPECT_NEAR(g[size_t(i)], ref, 1e-6 * std::max(1.0, std::fabs(ref))) << "n " << n << " i " << i;
      }
    }
    // BF16 rounding: bit-identical to the scalar f32_to_bf16 on random and special values.
    auto f = randn(1001, 14, 100.0f);
    const float specials[] = {0.0f, -0.0f, std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                              std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
                              std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min(),
                              1.00390625f /* 1 + 2^-8: a tie, rounds to even */, 1.01171875f /* 1 + 3 * 2^-8: a tie, rounds up */};
    std::copy(std::begin(specials), std::end(specials), f.begin());
    uint32_t signalling = 0x7f800001u;  // a signalling NaN comes out quiet
    std::memcpy(&f[20], &signalling, 4);
    std::vector<uint16_t> b(f.size());
    k.to_bf16(f.data(), int64_t(f.size()), b.data());
    for (size_t i = 0; i < f.size(); ++i) EXPECT_EQ(b[i], f32_to_bf16(f[i])) << "i " << i << " value " << f[i];
    EXPECT_EQ(b[8], 0x3f80);  // the tie 1 + 2^-8 rounds down to even 1.0
    EXPECT_EQ(b[9], 0x3f82);
  }
}

}  // namespace
