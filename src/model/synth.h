// Seeded random weights for synthetic models (spense synth, benchmarks, tests). Values come
// from a counter-based generator keyed by (seed, tensor name), so they do not depend on the
// thread count or on the order tensors are generated in.
#pragma once
#include <cstdint>
#include <vector>

#include "model/arch.h"

namespace spense {

// Linear weights, embeddings, LM head and biases ~ N(0, 0.02); norm weights ~ 1 + N(0, 0.02).
std::vector<float> synth_tensor(const arch::TensorSpec& spec, uint64_t seed);

// n standard normal values for key (fp32 Box-Muller on a splitmix64 counter stream, one
// 64-bit draw per pair: 24 bits for the radius, 24 for the angle).
void synth_normal(uint64_t key, float* out, int64_t n);

}  // namespace spense
