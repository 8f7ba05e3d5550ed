// CPU dispatch of vmath.h: the kernels of vmath_kernels.inc compiled three times.
#include "model/vmath.h"

#include <cstdint>

namespace spense::vmath {

namespace sse2 {
#include "model/vmath_kernels.inc"
}
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#include "model/vmath_kernels.inc"
}
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,prefer-vector-width=512")
namespace avx512 {
#include "model/vmath_kernels.inc"
}
#pragma GCC pop_options

namespace {

#define SPENSE_VMATH_KERNELS(ns) Kernels{#ns, ns::exp_shifted_sum, ns::max_value, ns::silu_mul, ns::to_bf16}

const Kernels& kernels() { return supported_kernels().front(); }

}  // namespace

float exp_shifted_sum(float* x, int64_t n, float shift) { return kernels().exp_shifted_sum(x, n, shift); }
float max_value(const float* x, int64_t n) { return kernels().max_value(x, n); }
void silu_mul(float* gate, const float* up, int64_t n) { kernels().silu_mul(gate, up, n); }
void to_bf16(const float* src, int64_t n, uint16_t* dst) { kernels().to_bf16(src, n, dst); }
const char* isa() { return kernels().isa; }

const std::vector<Kernels>& supported_kernels() {
  static const std::vector<Kernels> k = [] {
    __builtin_cpu_init();
    std::vector<Kernels> v;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
      v.push_back(SPENSE_VMATH_KERNELS(avx512));
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) v.push_back(SPENSE_VMATH_KERNELS(avx2));
    v.push_back(SPENSE_VMATH_KERNELS(sse2));  // x86-64 baseline
    return v;
  }();
  return k;
}

}  // namespace spense::vmath
