// BF16 products for the CPU forward (ops.h, matmul_nt_bf16): oneDNN's matmul primitive, which
// runs on AMX or AVX-512 BF16 where the CPU has them (2.5x OpenBLAS's fp32 sgemm on this
// project's development machine, docs/perf.md). Inputs are rounded to BF16 here, to nearest
// even; the products accumulate in fp32. One primitive per (T, N, K, accumulate) and thread,
// created on first use and kept: creating one costs more than running a small product, and
// this OpenMP build of oneDNN runs a primitive only on the thread that created it. Written for
// oneDNN 2.x (matmul::desc; CMake refuses 3.x). Without oneDNN, or on a CPU it has no BF16
// kernels for, the same arithmetic runs through fp32 sgemm on BF16-rounded copies (the product
// of two BF16 values is exact in fp32), so the results do not depend on the build.
#include "model/ops.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "model/vmath.h"
#include "spense/error.h"

#ifdef SPENSE_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace spense::ops {

namespace {

// f32_to_bf16 (dtype.h: nearest even, NaN kept), vectorised, in chunks over the threads.
void round_to_bf16(const float* src, int64_t n, uint16_t* dst) {
  constexpr int64_t chunk = int64_t(1) << 16;
  const int64_t chunks = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
  for (int64_t c = 0; c < chunks; ++c) vmath::to_bf16(src + c * chunk, std::min(chunk, n - c * chunk), dst + c * chunk);
}

// The rounded values widened back to fp32 (exact).
void round_to_bf16_as_f32(const float* src, int64_t n, std::vector<uint16_t>& tmp, std::vector<float>& dst) {
  tmp.resize(size_t(n));
  dst.resize(size_t(n));
  round_to_bf16(src, n, tmp.data());
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
  for (int64_t i = 0; i < n; ++i) dst[size_t(i)] = __builtin_bit_cast(float, uint32_t(tmp[size_t(i)]) << 16);
}

void check_bf16_args(int64_t K, int64_t T, int64_t N, float* y, float beta, bool* done) {
  *done = T == 0 || N == 0;
  if (*done) return;
  if (beta != 0.0f && beta != 1.0f) throw Error("matmul_nt_bf16: beta must be 0 or 1", 1);
  if (K == 0) {
    if (beta == 0.0f) std::memset(y, 0, sizeof(float) * static_cast<size_t>(T * N));
    *done = true;
  }
}

}  // namespace

void matmul_nt_bf16_sgemm(const float* x, int64_t T, const float* W, int64_t N, int64_t K, float* y, float beta) {
  bool done = false;
  check_bf16_args(K, T, N, y, beta, &done);
  if (done) return;
  thread_local std::vector<uint16_t> tmp;
  thread_local std::vector<float> xr, wr;
  round_to_bf16_as_f32(x, T * K, tmp, xr);
  round_to_bf16_as_f32(W, N * K, tmp, wr);
  matmul_nt(xr.data(), T, wr.data(), N, K, y, beta);
}

#ifdef SPENSE_HAVE_ONEDNN
namespace {

dnnl::matmul::primitive_desc matmul_desc(const dnnl::engine& eng, int64_t T, int64_t N, int64_t K, bool accumulate) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  const dnnl::memory::desc src({T, K}, dt::bf16, tag::ab);
  const dnnl::memory::desc wei({K, N}, dt::bf16, tag::ba);  // W as stored: N x K row-major
  const dnnl::memory::desc dst({T, N}, dt::f32, tag::ab);
  dnnl::primitive_attr attr;
  if (accumulate) {
    dnnl::post_ops po;
    po.append_sum(1.0f);
    attr.set_post_ops(po);
  }
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, dst), attr, eng);
}

// Per thread (see the top of the file).
struct Onednn {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  std::map<std::tuple<int64_t, int64_t, int64_t, bool>, dnnl::matmul> prims;

  static Onednn& get() {
    thread_local Onednn o;
    return o;
  }
  dnnl::matmul& prim(int64_t T, int64_t N, int64_t K, bool accumulate) {
    const auto key = std::make_tuple(T, N, K, accumulate);
    auto it = prims.find(key);
    if (it != prims.end()) return it->second;
    return prims.emplace(key, dnnl::matmul(matmul_desc(eng, T, N, K, accumulate))).first->second;
  }
};

}  // namespace

// oneDNN 2.x has BF16 matmuls only on CPUs with AVX-512 (or AMX): ask it for one.
bool bf16_matmul_onednn() {
  static const bool ok = [] {
    try {
      const dnnl::engine eng(dnnl::engine::kind::cpu, 0);
      (void)matmul_desc(eng, 4, 16, 32, false);
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return ok;
}

void matmul_nt_bf16(const float* x, int64_t T, const float* W, int64_t N, int64_t K, float* y, float beta) {
  bool done = false;
  check_bf16_args(K, T, N, y, beta, &done);
  if (done) return;
  if (!bf16_matmul_onednn()) return matmul_nt_bf16_sgemm(x, T, W, N, K, y, beta);
  thread_local std::vector<uint16_t> xb, wb;
  xb.resize(static_cast<size_t>(T * K));
  wb.resize(static_cast<size_t>(N * K));
  round_to_bf16(x, T * K, xb.data());
  round_to_bf16(W, N * K, wb.data());
  try {
    Onednn& o = Onednn::get();
    dnnl::matmul& mm = o.prim(T, N, K, beta == 1.0f);
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    dnnl::memory src({{T, K}, dt::bf16, tag::ab}, o.eng, xb.data());
    dnnl::memory wei({{K, N}, dt::bf16, tag::ba}, o.eng, wb.data());
    dnnl::memory dst({{T, N}, dt::f32, tag::ab}, o.eng, y);
    mm.execute(o.strm, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
    o.strm.wait();
  } catch (const dnnl::error& e) {
    throw Error("BF16 product " + std::to_string(T) + " x " + std::to_string(K) + " by " + std::to_string(K) +
                    " x " + std::to_string(N) + " failed in oneDNN: " + e.what(),
                1);
  }
}

#else

bool bf16_matmul_onednn() { return false; }

void matmul_nt_bf16(const float* x, int64_t T, const float* W, int64_t N, int64_t K, float* y, float beta) {
  matmul_nt_bf16_sgemm(x, T, W, N, K, y, beta);
}

#endif

}  // namespace spense::ops
