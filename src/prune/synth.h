// Seeded synthetic layers for tests and benchmarks: weights and correlated calibration
// inputs with a few outlier channels, the situation where Wanda beats magnitude and
// SparseGPT beats Wanda. Deterministic across runs and machines (own normal generator).
#pragma once
#include <cstdint>
#include <vector>

#include "spense/prune.h"

namespace spense::detail {

struct SynthLayer {
  Matrix W;              // N x K, N(0, 0.05^2) scaled per row by exp(0.5 * N(0,1))
  std::vector<float> X;  // n x K: Z (I + 0.5 G / sqrt(K)), then `outliers` channels x 10
  int64_t n = 0;
};

SynthLayer synth_layer(int64_t N, int64_t K, int64_t n, uint64_t seed, int64_t outliers);

// Standard normal samples from a splitmix64 stream (Box-Muller), for reproducible data.
class NormalRng {
 public:
  explicit NormalRng(uint64_t seed) : s_(seed) {}
  uint64_t next_u64();
  double uniform();  // (0, 1)
  double normal();

 private:
  uint64_t s_;
  bool have_ = false;
  double spare_ = 0;
};

}  // namespace spense::detail
