// BF16 products for the CPU forward (ops.h, matmul_nt_bf16): oneDNN's matmul primitive, which
// runs on AMX or AVX-512 BF16 where the CPU has them (2.5x OpenBLAS's fp32 sgemm on this
// project's development machine, docs/perf.md). Inputs are rounded to BF16 here, to nearest
// even; the products accumulate in fp32. One primitive per (T, N, K, accumulate) and thread,
// created on first use and kept: creating one costs more than running a small product, and
// this OpenMP build of oneDNN runs a primitive only on the thread that created it. Written for
// oneDNN 2.x (matmul::desc; CMake refuses 3.x).
#include "model/ops.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <tuple>

#include "model/vmath.h"
#include "spense/error.h"

#ifdef SPENSE_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace spense::ops {

#ifdef SPENSE_HAVE_ONEDNN
namespace {

// f32_to_bf16 (dtype.h: nearest even, NaN kept), vectorised, in chunks over the threads.
void round_to_bf16(const float* src, int64_t n, uint16_t* dst) {
  constexpr int64_t chunk = int64_t(1) << 16;
  const int64_t chunks = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
  for (int64_t c = 0; c < chunks; ++c) vmath::to_bf16(src + c * chunk, std::min(chunk, n - c * chunk), dst + c * chunk);
}

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
bool bf16_matmul_available() {
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
  if (T == 0 || N == 0) return;
  if (beta != 0.0f && beta != 1.0f) throw Error("matmul_nt_bf16: beta must be 0 or 1", 1);
  if (K == 0) {
    if (beta == 0.0f) std::memset(y, 0, sizeof(float) * static_cast<size_t>(T * N));
    return;
  }
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
                    " x " + std::to_string(N) + " failed in oneDNN: " + e.what() +
                    (bf16_matmul_available() ? "" : " (this CPU has no BF16 support in oneDNN 2.x)"),
                1);
  }
}

#else

bool bf16_matmul_available() { return false; }

void matmul_nt_bf16(const float*, int64_t, const float*, int64_t, int64_t, float*, float) {
  throw Error("BF16 products need oneDNN, and this build has none (install libdnnl-dev and rebuild)", 2);
}

#endif

}  // namespace spense::ops
