// Synthetic layers (see synth.h). The input mixing is one sgemm, so benchmark-sized inputs
// (4096 x 4096) take about a second.
#include "prune/synth.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace spense::detail {

uint64_t NormalRng::next_u64() {
  uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double NormalRng::uniform() { return (double(next_u64() >> 11) + 0.5) * 0x1.0p-53; }

double NormalRng::normal() {
  if (have_) {
    have_ = false;
    return spare_;
  }
  const double u = uniform(), v = uniform();
  const double r = std::sqrt(-2.0 * std::log(u)), t = 2.0 * M_PI * v;
  spare_ = r * std::sin(t);
  have_ = true;
  return r * std::cos(t);
}

SynthLayer synth_layer(int64_t N, int64_t K, int64_t n, uint64_t seed, int64_t outliers) {
  NormalRng rng(seed);
  SynthLayer s;
  s.n = n;
  s.W = Matrix(N, K);
  for (int64_t r = 0; r < N; ++r) {
    const double scale = 0.05 * std::exp(0.5 * rng.normal());
    for (int64_t j = 0; j < K; ++j) s.W(r, j) = scale * rng.normal();
  }
  std::vector<float> Z(size_t(n) * size_t(K)), A(size_t(K) * size_t(K));
  for (auto& z : Z) z = float(rng.normal());
  const double c = 0.5 / std::sqrt(double(K));
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = 0; j < K; ++j) A[size_t(i * K + j)] = float((i == j ? 1.0 : 0.0) + c * rng.normal());
  s.X.assign(size_t(n) * size_t(K), 0.0f);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(K), int(K), 1.0f, Z.data(),
              int(K), A.data(), int(K), 0.0f, s.X.data(), int(K));
  // Outlier channels: a seeded choice of distinct columns.
  std::vector<int64_t> cols(static_cast<size_t>(K));
  std::iota(cols.begin(), cols.end(), 0);
  for (int64_t i = 0; i < std::min(outliers, K); ++i) {
    const int64_t j = i + int64_t(rng.next_u64() % uint64_t(K - i));
    std::swap(cols[size_t(i)], cols[size_t(j)]);
    for (int64_t r = 0; r < n; ++r) s.X[size_t(r * K + cols[size_t(i)])] *= 10.0f;
  }
  return s;
}

}  // namespace spense::detail
