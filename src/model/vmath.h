// Vectorised elementwise kernels for the CPU forward pass: the softmax's exp, SiLU, BF16
// rounding. The project builds for baseline x86-64 (no -march), where GCC would call libm's
// scalar expf per element (a quarter of the attention time on Qwen2.5-0.5B shapes,
// docs/perf.md); these are compiled for SSE2, AVX2 + FMA and AVX-512 and the widest the CPU
// supports is picked once. Results differ between the three only by rounding (FMA contraction,
// the order of the vector sum). Single-threaded: callers split the work across threads.
#pragma once
#include <cstdint>
#include <vector>

namespace spense::vmath {

// x[j] = exp(x[j] - shift) for j < n; returns their fp32 sum. Arguments of exp are clamped to
// [-87, 88.3] (no overflow, no denormals); NaN propagates. Relative error < 2e-7.
float exp_shifted_sum(float* x, int64_t n, float shift);
// max over x[0..n) (-inf for n = 0); NaN elements are skipped, as std::max's fold does.
float max_value(const float* x, int64_t n);
// gate[i] = silu(gate[i]) * up[i].
void silu_mul(float* gate, const float* up, int64_t n);
// dst[i] = f32_to_bf16(src[i]) (dtype.h: nearest even, NaN kept).
void to_bf16(const float* src, int64_t n, uint16_t* dst);
// "avx512", "avx2" or "sse2": the variant in use.
const char* isa();

// One compiled variant of the kernels above (tests run every variant the CPU supports).
struct Kernels {
  const char* isa;
  float (*exp_shifted_sum)(float*, int64_t, float);
  float (*max_value)(const float*, int64_t);
  void (*silu_mul)(float*, const float*, int64_t);
  void (*to_bf16)(const float*, int64_t, uint16_t*);
};
// The variants this CPU can run, widest first; the first is the one in use.
const std::vector<Kernels>& supported_kernels();

}  // namespace spense::vmath
