// GPU linear layers (src/cuda/) against the CPU twins in cuda_test_util.h: dense (cuBLASLt),
// 2:4 (cuSPARSELt) and Spense hybrid layers, both axes, BF16 / FP16 / FP8, every M bucket,
// odd M, two streams and CUDA-graph capture, and the error paths. Needs a GPU (label cuda);
// skips without one, and the 2:4 / hybrid tests skip in builds without cuSPARSELt.
//
// Tolerances (relative Frobenius error against an fp64-accumulated reference):
//   1e-2 for BF16/FP16: operands are exactly representable (the reference uses the rounded
//        values), so the error is the 16-bit rounding of the output (2^-9 relative per element,
//        ~2e-3 in norm) plus fp32 accumulation-order differences.
//   5e-2 for FP8 against the unquantized fp32 computation: E4M3 keeps 3 mantissa bits, so each
//        product carries ~4% relative rounding noise that does not average out relative to the
//        sum (measured ~3.5%); 1e-2 against the reference on the dequantized operands (the
//        same inputs the GPU multiplies), which checks the scales and the epilogue tightly.
//   5e-3 between the cuSPARSELt path and cuBLASLt on the same masked weights: the same exact
//        products, only summation order and output rounding differ.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda/gemv.h"
#include "cuda_test_util.h"
#include "spense/cuda/kernels.h"
#include "spense/cuda/linear.h"
#include "spense/cuda/runtime.h"
#include "spense/error.h"

using namespace spense;
using namespace spense::cuda;
using namespace spense::cuda::testutil;

namespace {

bool g_have_gpu = false;
std::unique_ptr<Context> g_ctx;

class CudaLinear : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
      (void)cudaGetLastError();
      return;
    }
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess || p.major < 8) return;
    g_ctx = std::make_unique<Context>();
    g_have_gpu = true;
  }
  static void TearDownTestSuite() { g_ctx.reset(); }
  void SetUp() override {
    if (!g_have_gpu) GTEST_SKIP() << "no GPU of compute capability >= 8.0";
    stream_holder_ = std::make_unique<Stream>();
  }
  static bool fp8_ok() { return g_ctx->cc_major() * 10 + g_ctx->cc_minor() >= 89; }
  // The small-M kernel's tensor-core shapes are sized for Hopper's 227 KB of shared memory per
  // block; devices with less run its CUDA-core path (gemv::tc_eligible).
  static bool tc_smem_ok() {
    int dev = 0, optin = 0;
    return cudaGetDevice(&dev) == cudaSuccess &&
           cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess &&
           optin >= 227 * 1024;
  }
  struct StreamRef {
    std::unique_ptr<Stream>* p;
    cudaStream_t get() const { return (*p)->get(); }
  };
  std::unique_ptr<Stream> stream_holder_;  // made after the GPU check (no GPU: no stream)
  StreamRef stream_{&stream_holder_};
};

#define NEED_SPARSELT() \
  if (!have_cusparselt()) GTEST_SKIP() << "built without cuSPARSELt"

// Host-side weights of one layer in the form the GPU gets them, plus the reference values.
struct HostWeights {
  int64_t n = 0, k = 0;
  LinearPrecision prec = LinearPrecision::BF16;
  std::vector<float> exact;    // before quantization (after pruning)
  std::vector<float> ref;      // values the GPU multiplies (16-bit rounded or dequantized)
  std::vector<uint16_t> w16;   // BF16/FP16 bits
  std::vector<uint8_t> wq;     // E4M3 codes
  std::vector<float> scales;   // per output channel (FP8)
  WeightsView view() const {
    if (prec == LinearPrecision::FP8) return {wq.data(), DType::F8_E4M3, scales.data()};
    return {w16.data(), precision_weight_dtype(prec), nullptr};
  }
};

HostWeights make_weights(int64_t n, int64_t k, LinearPrecision prec, uint64_t seed, bool prune,
                         const std::vector<uint8_t>& row_dense = {}, const std::vector<uint8_t>& col_dense = {}) {
  HostWeights h;
  h.n = n;
  h.k = k;
  h.prec = prec;
  h.exact = random_uniform(static_cast<size_t>(n * k), seed);
  if (prune) prune24(h.exact, n, k, row_dense, col_dense);
  if (prec == LinearPrecision::FP8) {
    quantize_rows(h.exact, n, k, &h.wq, &h.scales, &h.ref);
  } else {
    h.w16 = to16(h.exact, prec == LinearPrecision::FP16, &h.ref);
    h.exact = h.ref;
  }
  return h;
}

struct HostActs {
  std::vector<uint16_t> x16;  // what the GPU gets
  std::vector<float> x;       // its values
  std::vector<float> xdq;     // FP8: after per-token quantization
};

HostActs make_acts(int64_t m, int64_t k, LinearPrecision prec, uint64_t seed) {
  HostActs a;
  a.x16 = to16(random_uniform(static_cast<size_t>(m * k), seed), prec == LinearPrecision::FP16, &a.x);
  if (prec == LinearPrecision::FP8) {
    std::vector<uint8_t> q;
    std::vector<float> s;
    quantize_rows(a.x, m, k, &q, &s, &a.xdq);
  }
  return a;
}

// Runs L on m rows: padding rows of x hold random garbage, y is poisoned with NaN (0xFFFF)
// so that unwritten outputs fail the comparison.
std::vector<float> run_layer(Linear& L, const HostActs& a, int64_t m, cudaStream_t s, bool graph = false) {
  const int64_t cap = L.rows_capacity(m), n = L.n(), k = L.k();
  DeviceBuffer x(static_cast<size_t>(cap * k * 2)), y(static_cast<size_t>(cap * n * 2));
  fill_random(x.get(), DType::BF16, static_cast<size_t>(cap * k), 1234, 3.f, s);
  SPENSE_CUDA_CHECK(cudaMemcpyAsync(x.get(), a.x16.data(), static_cast<size_t>(m * k * 2), cudaMemcpyHostToDevice, s));
  SPENSE_CUDA_CHECK(cudaMemsetAsync(y.get(), 0xFF, static_cast<size_t>(cap * n * 2), s));
  if (graph) {
    L.prepare(m);
    GraphExec g;
    g.begin_capture(s);
    L.forward(x.get(), y.get(), m, s);
    g.end_capture(s);
    g.launch(s);
    SPENSE_CUDA_CHECK(cudaMemsetAsync(y.get(), 0xFF, static_cast<size_t>(cap * n * 2), s));
    g.launch(s);  // a second replay must give the same result
  } else {
    L.forward(x.get(), y.get(), m, s);
  }
  std::vector<uint16_t> yb(static_cast<size_t>(m * n));
  SPENSE_CUDA_CHECK(cudaMemcpyAsync(yb.data(), y.get(), yb.size() * 2, cudaMemcpyDeviceToHost, s));
  SPENSE_CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<float> out(yb.size());
  const bool f16 = L.precision() == LinearPrecision::FP16;
  for (size_t i = 0; i < yb.size(); ++i) out[i] = f16 ? f16_bits_to_f32(yb[i]) : bf16_bits_to_f32(yb[i]);
  return out;
}

// Checks out against the references for the precision (see the tolerances on top).
void expect_close(const std::vector<float>& out, const HostWeights& w, const HostActs& a, int64_t m,
                  const std::vector<int32_t>* col_order = nullptr) {
  auto permute = [&](std::vector<float> r) {
    if (!col_order) return r;
    std::vector<float> p(r.size());
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < w.n; ++j) p[i * w.n + j] = r[i * w.n + (*col_order)[j]];
    return p;
  };
  if (w.prec == LinearPrecision::FP8) {
    const double e_exact = rel_err(out, permute(ref_gemm(a.x, w.exact, m, w.n, w.k)));
    const double e_dq = rel_err(out, permute(ref_gemm(a.xdq, w.ref, m, w.n, w.k)));
    EXPECT_LT(e_exact, 5e-2) << "FP8 vs fp32 reference";
    EXPECT_LT(e_dq, 1e-2) << "FP8 vs dequantized-operand reference";
  } else {
    const double e = rel_err(out, permute(ref_gemm(a.x, w.ref, m, w.n, w.k)));
    EXPECT_LT(e, 1e-2);
  }
}

// A random choice of round(d * tiles) dense tiles (GemvLayout::dense_tiles), and the per-row or
// per-column mask (size = tiles * tile) that make_weights keeps dense.
std::vector<int32_t> random_dense_tiles(int64_t tiles, double d, std::mt19937& rng) {
  std::vector<int32_t> all(static_cast<size_t>(tiles));
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  return std::vector<int32_t>(all.begin(), all.begin() + std::llround(d * double(tiles)));
}
std::vector<uint8_t> dense_tile_mask(int64_t size, int64_t tile, const std::vector<int32_t>& dense_tiles) {
  std::vector<uint8_t> m(static_cast<size_t>(size), 0);
  for (int32_t t : dense_tiles) std::fill_n(m.begin() + t * tile, tile, uint8_t(1));
  return m;
}

// The small-M kernel choices a test forces: CUDA cores, AUTO, each tensor-core block shape, and
// with k >= 8192 each shape at each of the given K slice counts.
struct ForcedKernel { SmallMKernel kern; int slices, shape; };
std::vector<ForcedKernel> forced_kernels(int64_t k, std::initializer_list<int> slices) {
  std::vector<ForcedKernel> v{{SmallMKernel::CUDA_CORES, 0, -1}, {SmallMKernel::AUTO, 0, -1}};
  for (int shape = 0; shape < gemv::kTcShapes; ++shape) {
    v.push_back({SmallMKernel::TENSOR_CORES, 0, shape});
    if (k >= 8192)
      for (int sl : slices) v.push_back({SmallMKernel::TENSOR_CORES, sl, shape});
  }
  return v;
}
// Activations (seed seed0 + m) and the reference products with the weights' stored values, once
// per M (the CPU product dominates these tests' time): `want` with the BF16 activations as they
// are (both precisions' kernels multiply those, FP8 weights widened in the kernel), and for FP8
// `want_q` with the activations quantized per token (CPU twin of quantize_rows_e4m3), which
// the E4M3-token block shapes multiply (plan_info says "E4M3 tokens"), and so does cuBLASLt's
// FP8 GEMM (the plan of an all-dense layer's library path names cuBLASLt); want_for picks.
struct ActsAndRefs {
  HostActs a;
  std::vector<float> want, want_q;
  const std::vector<float>& want_for(const std::string& plan) const {
    if (plan.find("E4M3 tokens") != std::string::npos) {
      EXPECT_FALSE(want_q.empty()) << "E4M3 tokens on a layer that is not FP8: " << plan;
      return want_q;
    }
    return plan.find("cuBLASLt") != std::string::npos && !want_q.empty() ? want_q : want;
  }
};
std::map<int64_t, ActsAndRefs> acts_and_refs(const std::vector<int64_t>& ms, const HostWeights& w, LinearPrecision p,
                                             uint64_t seed0) {
  std::map<int64_t, ActsAndRefs> io;
  for (int64_t m : ms) {
    ActsAndRefs r;
    r.a = make_acts(m, w.k, p, seed0 + m);
    r.want = ref_gemm(r.a.x, w.ref, m, w.n, w.k);
    if (p == LinearPrecision::FP8) r.want_q = ref_gemm(r.a.xdq, w.ref, m, w.n, w.k);
    io.emplace(m, std::move(r));
  }
  return io;
}

std::vector<LinearPrecision> precisions(bool with_fp8) {
  std::vector<LinearPrecision> v{LinearPrecision::BF16, LinearPrecision::FP16};
  if (with_fp8) v.push_back(LinearPrecision::FP8);
  return v;
}

}  // namespace

TEST_F(CudaLinear, DenseMatchesReferenceOnRandomShapes) {
  struct S { int64_t n, k; };
  for (S sh : {S{64, 64}, S{128, 256}, S{256, 96}, S{384, 512}})
    for (LinearPrecision p : precisions(fp8_ok())) {
      if (p == LinearPrecision::FP8 && sh.k % 32) continue;
      HostWeights w = make_weights(sh.n, sh.k, p, 11 + sh.n, false);
      LinearOptions o;
      o.name = "dense";
      o.dense_search = 4;
      auto L = make_dense_linear(*g_ctx, sh.n, sh.k, p, w.view(), o);
      for (int64_t m : {1, 3, 17, 64, 100}) {
        SCOPED_TRACE("n=" + std::to_string(sh.n) + " k=" + std::to_string(sh.k) + " m=" + std::to_string(m) +
                     " " + precision_name(p));
        HostActs a = make_acts(m, sh.k, p, 100 + m);
        expect_close(run_layer(*L, a, m, stream_.get()), w, a, m);
      }
    }
}

TEST_F(CudaLinear, SparseEveryBucketAndEqualsDenseOnMaskedWeights) {
  NEED_SPARSELT();
  const int64_t n = 128, k = 256;
  for (LinearPrecision p : precisions(fp8_ok())) {
    HostWeights w = make_weights(n, k, p, 21, true);
    LinearOptions o;
    o.name = "sparse";
    auto S = make_sparse_linear(*g_ctx, n, k, p, w.view(), o);
    auto D = make_dense_linear(*g_ctx, n, k, p, w.view(), o);
    // One M in (or at the edge of) every bucket: 16, 32, ..., 1024, then multiples of 512.
    for (int64_t m : {1, 16, 17, 32, 33, 64, 100, 128, 200, 256, 300, 512, 700, 1024, 1025, 1536, 4096}) {
      if (p == LinearPrecision::FP16 && m > 256) continue;  // FP16 shares BF16's code path
      SCOPED_TRACE("m=" + std::to_string(m) + " " + precision_name(p));
      HostActs a = make_acts(m, k, p, 300 + m);
      std::vector<float> ys = run_layer(*S, a, m, stream_.get());
      expect_close(ys, w, a, m);
      std::vector<float> yd = run_layer(*D, a, m, stream_.get());
      EXPECT_LT(rel_err(ys, yd), 5e-3) << "2:4 compressed path vs dense GEMM on the same masked weights";
    }
  }
}

TEST_F(CudaLinear, HybridBothAxesAllModes) {
  NEED_SPARSELT();
  struct S { int64_t n, k, tile; };
  std::mt19937 rng(5);
  for (S sh : {S{256, 512, 64}, S{192, 320, 32}})
    for (HybridAxis axis : {HybridAxis::OUT, HybridAxis::IN})
      for (LinearPrecision p : {LinearPrecision::BF16, LinearPrecision::FP8}) {
        if (p == LinearPrecision::FP8 && !fp8_ok()) continue;
        const int64_t extent = axis == HybridAxis::OUT ? sh.n : sh.k, tiles = extent / sh.tile;
        for (double d : {0.0, 0.125, 0.25, 0.5, 1.0}) {
          HybridLayout lay;
          lay.axis = axis;
          lay.tile = sh.tile;
          lay.dense_tiles = random_dense_tiles(tiles, d, rng);  // random tiles, random order
          const int64_t nd = static_cast<int64_t>(lay.dense_tiles.size());
          const std::vector<uint8_t> dmap = dense_tile_mask(extent, sh.tile, lay.dense_tiles);
          HostWeights w = make_weights(sh.n, sh.k, p, 31 + nd, true, axis == HybridAxis::OUT ? dmap : std::vector<uint8_t>{},
                                       axis == HybridAxis::IN ? dmap : std::vector<uint8_t>{});
          const std::vector<int32_t> order = hybrid_stored_order(extent, lay);
          for (bool conc : {true, false})
            for (bool fold : {false, true}) {
              if (fold && axis == HybridAxis::IN) continue;
              LinearOptions o;
              o.name = "hybrid";
              o.concurrent = conc;
              o.fold_permutation = fold;
              o.sparse_search = false;  // algorithm choice does not change results; keeps the test fast
              auto L = make_hybrid_linear(*g_ctx, sh.n, sh.k, p, w.view(), lay, o);
              for (int64_t m : {1, 37, 130}) {
                SCOPED_TRACE(std::string("axis=") + axis_name(axis) + " " + precision_name(p) + " n=" +
                             std::to_string(sh.n) + " d=" + std::to_string(d) + " conc=" + std::to_string(conc) +
                             " fold=" + std::to_string(fold) + " m=" + std::to_string(m));
                HostActs a = make_acts(m, sh.k, p, 500 + m);
                expect_close(run_layer(*L, a, m, stream_.get()), w, a, m, fold ? &order : nullptr);
              }
            }
        }
      }
}

// Our small-M kernel (make_gemv_linear), each path forced and then chosen by timing (AUTO):
// the CUDA-core path (any M in passes of 8; BF16 and FP8) and the tensor-core path (K a multiple
// of 128 for BF16, 256 for FP8: mma.sp for the 2:4 rows, mma for the dense rows, FP8 weights
// widened to BF16 in registers, a cp.async pipeline, K split over a thread-block cluster when the
// layer has few row blocks) against the fp64 reference, for 2:4 layers, Spense axis=out with
// random dense tiles, and all tiles dense. The shapes give partial row blocks of both kinds
// (n = 192, 320), K split into 8 uneven slices (k = 8448 = 66 BF16 stages of 128 columns, 33 FP8
// stages of 256), K not a multiple of 128 (k = 336: CUDA cores only) or, for FP8, of 256 (k = 640);
// M covers partial token tiles and several passes. Tolerance 1e-2 as for BF16 above: every path multiplies the stored
// weights with the BF16 activations exactly and rounds only the output -- or, on the E4M3-token
// shapes (6-13 on Hopper; 10-13 streamed up to 64 tokens, the second run checking that the
// streamed workspace comes back zeroed), with the activations quantized per token, against the
// reference on those same quantized activations (want_q).
TEST_F(CudaLinear, SmallMKernelPathsMatchReference) {
  struct S { int64_t n, k, tile; std::vector<int64_t> ms; };
  const std::vector<int64_t> many{1, 2, 3, 4, 5, 8, 9, 16, 17, 31, 33, 64, 65, 100};
  std::mt19937 rng(11);
  for (const S& sh : {S{256, 512, 64, many}, S{192, 640, 16, many}, S{128, 336, 16, {1, 3, 9, 17, 64}},
                      S{320, 8448, 32, {1, 3, 8, 16, 33, 64, 100}}})
    for (LinearPrecision p : {LinearPrecision::BF16, LinearPrecision::FP8}) {
      if (p == LinearPrecision::FP8 && (!fp8_ok() || sh.k % 32 != 0)) continue;
      const int64_t tiles = sh.n / sh.tile;
      for (double d : {0.0, 0.25, 1.0}) {
        GemvLayout gl;
        gl.tile = sh.tile;
        gl.dense_tiles = random_dense_tiles(tiles, d, rng);
        const std::vector<uint8_t> dmap = dense_tile_mask(sh.n, sh.tile, gl.dense_tiles);
        HostWeights w = make_weights(sh.n, sh.k, p, 71 + gl.dense_tiles.size(), true, dmap);
        // Tensor cores: each block shape forced, and with k = 8320 (8 uneven slices) each K split
        // in each shape, then both timed.
        const auto io = acts_and_refs(sh.ms, w, p, 900);
        for (const ForcedKernel& kk : forced_kernels(sh.k, {1, 2, 3, 4, 5, 6, 7, 8})) {
          const SmallMKernel kern = kk.kern;
          LinearOptions o;
          o.name = "gemv";
          o.small_m_kernel = kern;
          o.small_m_e4m3_tokens = true;  // shapes 6-13 on E4M3 tokens where they can (off by default)
          o.small_m_tc_slices = kk.slices;
          o.small_m_tc_shape = kk.shape;
          auto L = make_gemv_linear(*g_ctx, sh.n, sh.k, p, w.view(), gl, o);
          for (int64_t m : sh.ms) {
            L->prepare(m);
            SCOPED_TRACE(std::string(precision_name(p)) + " n=" + std::to_string(sh.n) + " k=" + std::to_string(sh.k) +
                         " d=" + std::to_string(d) + " m=" + std::to_string(m) + " " + small_m_kernel_name(kern) +
                         " slices " + std::to_string(kk.slices) + " shape " + std::to_string(kk.shape) + " (" +
                         L->plan_info(m) + ")");
            const HostActs& a = io.at(m).a;
            const std::vector<float>& want = io.at(m).want_for(L->plan_info(m));
            EXPECT_LT(rel_err(run_layer(*L, a, m, stream_.get()), want), 1e-2);
            if (kern == SmallMKernel::TENSOR_CORES) {
              // Again: nothing a launch leaves behind may change the next.
              EXPECT_LT(rel_err(run_layer(*L, a, m, stream_.get()), want), 1e-2) << "second run";
              // The forced path is the one that ran.
              const bool tc = tc_smem_ok() && sh.k % (p == LinearPrecision::BF16 ? 128 : 256) == 0;
              EXPECT_EQ(L->plan_info(m).find("tensor cores") != std::string::npos, tc) << L->plan_info(m);
              // Shapes 6-13 on E4M3 weights where wgmma runs take E4M3 tokens; nowhere else. Of
              // those, 10-13 run streamed (persistent blocks, no K split) up to kStreamMaxM tokens.
              const bool q = tc && p == LinearPrecision::FP8 && kk.shape >= gemv::kTcFirstE4m3Shape && gemv::tc_wgmma_ok();
              const bool streamed = q && kk.shape >= gemv::kTcFirstStreamShape && m <= gemv::kStreamMaxM;
              if (kk.slices > 0 && tc && !streamed) {
                EXPECT_NE(L->plan_info(m).find(std::to_string(kk.slices) + " slice"), std::string::npos) << L->plan_info(m);
              }
              if (tc) {
                EXPECT_NE(L->plan_info(m).find("block shape " + std::to_string(kk.shape)), std::string::npos)
                    << L->plan_info(m);
                EXPECT_EQ(L->plan_info(m).find("E4M3 tokens") != std::string::npos, q) << L->plan_info(m);
                EXPECT_EQ(L->plan_info(m).find("streamed") != std::string::npos, streamed) << L->plan_info(m);
              }
            }
          }
        }
      }
    }
}

// Our small-M kernel on Spense axis=in layers (GemvLayout::axis): every row 2:4 over the
// sparse column tiles and dense over random dense column tiles, the two parts summed in the
// kernel, the activations read through the column-tile map. Each path forced (CUDA cores; tensor
// cores in each block shape, where the 2:4 and dense parts go to different blocks of a cluster,
// and on the largest layer each K split), then AUTO, against the fp64 reference of the stored
// weights (tolerance 1e-2 as above). Shapes: tiles of 32, 64 and 128 columns; 2:4 and dense
// column counts in whole tensor-core stages or not (k = 512, d = 0.25: 384 2:4 columns, not a
// multiple of FP8's 256, so FP8 runs on CUDA cores there); d = 0 (no dense part) and d = 1 (no
// 2:4 part). FP8 shapes 6-9 on Hopper take E4M3 tokens quantized in stored column order (the
// column-tile map applied by the quantization), checked against want_q.
TEST_F(CudaLinear, SmallMKernelAxisInMatchesReference) {
  struct S { int64_t n, k, tile; std::vector<int64_t> ms; };
  std::mt19937 rng(12);
  const bool clusters = g_ctx->cc_major() >= 9;
  for (const S& sh : {S{256, 512, 64, {1, 2, 3, 8, 9, 16, 33, 64, 100}}, S{192, 1024, 32, {1, 5, 16, 17, 64}},
                      S{128, 2048, 128, {1, 8, 32, 65}}, S{320, 8192, 64, {1, 3, 16, 64}}})
    for (LinearPrecision p : {LinearPrecision::BF16, LinearPrecision::FP8}) {
      if (p == LinearPrecision::FP8 && !fp8_ok()) continue;
      const int64_t tiles = sh.k / sh.tile;
      for (double d : {0.0, 0.25, 1.0}) {
        GemvLayout gl;
        gl.axis = HybridAxis::IN;
        gl.tile = sh.tile;
        gl.dense_tiles = random_dense_tiles(tiles, d, rng);
        const std::vector<uint8_t> dmap = dense_tile_mask(sh.k, sh.tile, gl.dense_tiles);
        HostWeights w = make_weights(sh.n, sh.k, p, 171 + gl.dense_tiles.size(), true, {}, dmap);
        const int64_t kd = static_cast<int64_t>(gl.dense_tiles.size()) * sh.tile, ks = sh.k - kd;
        const bool fp8 = p == LinearPrecision::FP8;
        const bool tc = tc_smem_ok() && clusters && ks % (fp8 ? 256 : 128) == 0 && kd % (fp8 ? 128 : 64) == 0;
        const int min_slices = ks > 0 && kd > 0 ? 2 : 1;
        const auto io = acts_and_refs(sh.ms, w, p, 1900);
        for (const ForcedKernel& kk : forced_kernels(sh.k, {1, 2, 3, 5, 8})) {
          LinearOptions o;
          o.name = "gemv-in";
          o.small_m_e4m3_tokens = true;
          o.small_m_kernel = kk.kern;
          o.small_m_tc_slices = kk.slices;
          o.small_m_tc_shape = kk.shape;
          auto L = make_gemv_linear(*g_ctx, sh.n, sh.k, p, w.view(), gl, o);
          for (int64_t m : sh.ms) {
            L->prepare(m);
            SCOPED_TRACE(std::string(precision_name(p)) + " axis=in n=" + std::to_string(sh.n) + " k=" +
                         std::to_string(sh.k) + " tile " + std::to_string(sh.tile) + " d=" + std::to_string(d) +
                         " m=" + std::to_string(m) + " " + small_m_kernel_name(kk.kern) + " slices " +
                         std::to_string(kk.slices) + " shape " + std::to_string(kk.shape) + " (" + L->plan_info(m) + ")");
            const HostActs& a = io.at(m).a;
            const std::vector<float>& want = io.at(m).want_for(L->plan_info(m));
            EXPECT_LT(rel_err(run_layer(*L, a, m, stream_.get()), want), 1e-2);
            if (kk.kern == SmallMKernel::TENSOR_CORES) {
              EXPECT_LT(rel_err(run_layer(*L, a, m, stream_.get()), want), 1e-2) << "second run";
              EXPECT_EQ(L->plan_info(m).find("tensor cores") != std::string::npos, tc) << L->plan_info(m);
              if (tc) {
                const bool q = fp8 && kk.shape >= gemv::kTcFirstE4m3Shape && gemv::tc_wgmma_ok();
                EXPECT_EQ(L->plan_info(m).find("E4M3 tokens") != std::string::npos, q) << L->plan_info(m);
              }
              if (tc && kk.slices > 0) {
                const int expect = std::max(kk.slices, min_slices);
                EXPECT_NE(L->plan_info(m).find(std::to_string(expect) + " slice"), std::string::npos) << L->plan_info(m);
              }
            }
          }
        }
      }
    }
}

// Axis=in layers our kernel cannot take, or whose weights are not 2:4 outside the dense column
// tiles, are refused at load with the layer's name and the reason (the second naming the
// original column of the offending group).
TEST_F(CudaLinear, SmallMKernelAxisInRejectsBadLayouts) {
  const int64_t n = 64, k = 384;
  GemvLayout gl;
  gl.axis = HybridAxis::IN;
  for (int64_t tile : {16, 48}) {  // both divide k
    gl.tile = tile;
    gl.dense_tiles = {1};
    HostWeights w = make_weights(n, k, LinearPrecision::BF16, 5, true);
    LinearOptions o;
    o.name = "gemv-in-bad";
    try {
      make_gemv_linear(*g_ctx, n, k, LinearPrecision::BF16, w.view(), gl, o);
      ADD_FAILURE() << "tile " << tile << " accepted";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("gemv-in-bad"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("power of two"), std::string::npos) << e.what();
    }
  }
  // Dense column tile 0 (columns 0..63); column group 68..71 of row 5 is dense in a 2:4 tile.
  gl.tile = 64;
  gl.dense_tiles = {0};
  std::vector<uint8_t> dmap(size_t(k), 0);
  std::fill_n(dmap.begin(), 64, uint8_t(1));
  HostWeights w = make_weights(n, k, LinearPrecision::BF16, 6, true, {}, dmap);
  for (int c = 68; c < 72; ++c) w.w16[size_t(5 * k + c)] = 0x3F80;  // BF16 1.0
  try {
    make_gemv_linear(*g_ctx, n, k, LinearPrecision::BF16, w.view(), gl, LinearOptions{});
    ADD_FAILURE() << "a dense group in a 2:4 tile was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("row 5, columns 68..71"), std::string::npos) << e.what();
  }
}

// Every E4M3 code through the small-M kernel, exactly. The weights of a Spense axis=out layer
// (2:4 tiles with varying kept positions, and dense tiles) hold all 254 finite codes, subnormals
// and both zeros included;
// scales are 1 and each token is one-hot, so every output is one weight times 1, which BF16
// holds exactly: the output must equal the code's value bit for bit. The expected values come
// from the E4M3 definition (OCP FP8: bias 7, subnormals m/8 * 2^-6), not from the kernel's
// widening (bit moves and a multiply by 2^120 on the tensor-core path, the cvt instructions on
// the CUDA-core path). Token counts 8 / 16 / 32 / 64 reach every token tile size.
TEST_F(CudaLinear, SmallMKernelFp8EveryCodeExact) {
  if (!fp8_ok()) GTEST_SKIP() << "FP8 needs compute capability 8.9";
  const int64_t n = 256, k = 256;
  auto e4m3 = [](uint8_t b) {
    const int e = (b >> 3) & 15, m = b & 7;
    const float mag = e == 0 ? std::ldexp(float(m) / 8.f, -6) : std::ldexp(1.f + float(m) / 8.f, e - 7);
    return (b & 0x80) ? -mag : mag;
  };
  GemvLayout gl;
  gl.tile = 64;
  gl.dense_tiles = {1, 3};
  HostWeights w;
  w.n = n;
  w.k = k;
  w.prec = LinearPrecision::FP8;
  w.wq.assign(size_t(n * k), 0);
  w.scales.assign(size_t(n), 1.f);
  for (int64_t r = 0; r < n; ++r) {
    const bool dense = (r / 64) % 2 == 1;
    for (int64_t c = 0; c < k; ++c) {
      uint8_t code = uint8_t((r * 7 + c) % 256);
      if ((code & 0x7f) == 0x7f) code = 0x01;  // NaN codes: the smallest subnormal instead
      // 2:4 rows keep one of the 6 position pairs, varying with row and group, so that a
      // metadata nibble read for the wrong row or group gives wrong outputs.
      static const int kPairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
      const int64_t g = c / 4, pos = c % 4, pair = (r * 5 + g * 3 + (r * g) % 7) % 6;
      if (dense || pos == kPairs[pair][0] || pos == kPairs[pair][1]) w.wq[size_t(r * k + c)] = code;
    }
  }
  for (uint8_t b : w.wq) w.ref.push_back(e4m3(b));
  for (SmallMKernel kern : {SmallMKernel::TENSOR_CORES, SmallMKernel::CUDA_CORES})
    for (int shape = 0; shape < gemv::kTcShapes; ++shape) {
      if (kern == SmallMKernel::CUDA_CORES && shape > 0) continue;
      LinearOptions o;
      o.name = "gemv-fp8-codes";
      o.small_m_e4m3_tokens = true;
      o.small_m_kernel = kern;
      o.small_m_tc_shape = kern == SmallMKernel::TENSOR_CORES ? shape : -1;
      auto L = make_gemv_linear(*g_ctx, n, k, LinearPrecision::FP8, w.view(), gl, o);
      for (int64_t m : {8, 16, 32, 64})
        for (int64_t base = 0; base < k; base += m) {
          HostActs a;
          a.x.assign(size_t(m * k), 0.f);
          a.x16.assign(size_t(m * k), 0);
          for (int64_t i = 0; i < m; ++i) {
            a.x[size_t(i * k + base + i)] = 1.f;
            a.x16[size_t(i * k + base + i)] = 0x3F80;  // BF16 1.0
          }
          L->prepare(m);
          const std::vector<float> y = run_layer(*L, a, m, stream_.get());
          int64_t wrong = 0;
          for (int64_t i = 0; i < m; ++i)
            for (int64_t r = 0; r < n; ++r) {
              const float want = w.ref[size_t(r * k + base + i)], got = y[size_t(i * n + r)];
              if (!(got == want) && wrong++ < 3) {
                ADD_FAILURE() << small_m_kernel_name(kern) << " shape " << shape << " m=" << m << " row " << r
                              << " code 0x" << std::hex << int(w.wq[size_t(r * k + base + i)]) << std::dec
                              << ": got " << got << ", want " << want << " (" << L->plan_info(m) << ")";
              }
            }
          EXPECT_EQ(wrong, 0) << small_m_kernel_name(kern) << " m=" << m << " base " << base;
          if (kern == SmallMKernel::TENSOR_CORES && tc_smem_ok()) {
            EXPECT_NE(L->plan_info(m).find("tensor cores"), std::string::npos) << L->plan_info(m);
          }
        }
    }
}

// A build with sm_90a code (SPENSE_WGMMA_BUILT, set by cmake/cuda.cmake and exported by
// spense_cuda) runs the warpgroup shapes on Hopper, rather than falling back to shape 0.
TEST_F(CudaLinear, SmallMKernelWgmmaShapesRunOnHopper) {
  if (g_ctx->cc_major() != 9) GTEST_SKIP() << "wgmma is sm_90a only";
#if defined(SPENSE_WGMMA_BUILT) && SPENSE_WGMMA_BUILT
  EXPECT_TRUE(gemv::tc_wgmma_ok());
#else
  GTEST_SKIP() << "built without sm_90a code (CMAKE_CUDA_ARCHITECTURES)";
#endif
}

// A forced block shape outside the kernel's kTcShapes is refused at load, naming the option.
TEST_F(CudaLinear, SmallMKernelRejectsUnknownShape) {
  const int64_t n = 64, k = 128;
  HostWeights w = make_weights(n, k, LinearPrecision::BF16, 5, true, std::vector<uint8_t>(size_t(n), 0));
  GemvLayout gl;
  gl.tile = 16;
  for (int bad : {-2, gemv::kTcShapes}) {
    LinearOptions o;
    o.name = "gemv";
    o.small_m_tc_shape = bad;
    try {
      make_gemv_linear(*g_ctx, n, k, LinearPrecision::BF16, w.view(), gl, o);
      ADD_FAILURE() << "shape " << bad << " accepted";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("small_m_tc_shape"), std::string::npos) << e.what();
    }
  }
}

// The same layers in AUTO inside CUDA graphs (prepare, capture, two replays), for a dense layer
// (all_dense: cuBLASLt shares the weights, and is the only candidate above M = 64) and a hybrid
// one, through M = 130 (untimed above 64: cuBLASLt / tensor cores), against the fp64 reference.
// Then a replica of the prepared layer (the engine times layer 0 and replicates it), captured
// too: the all-dense wrapper once copied its choice per M into the replica but skipped
// preparing the replica's cuBLASLt layer, and the capture threw "no plan for M".
TEST_F(CudaLinear, SmallMKernelAutoInsideGraphs) {
  const int64_t n = 256, k = 512;
  for (bool all_dense : {true, false}) {
    GemvLayout gl;
    gl.all_dense = all_dense;
    gl.tile = 64;
    std::vector<uint8_t> dmap(static_cast<size_t>(n), 0);
    if (!all_dense) {
      gl.dense_tiles = {2};
      std::fill_n(dmap.begin() + 2 * 64, 64, uint8_t(1));
    }
    HostWeights w = all_dense ? make_weights(n, k, LinearPrecision::BF16, 5, false)
                              : make_weights(n, k, LinearPrecision::BF16, 6, true, dmap);
    LinearOptions o;
    o.name = "gemv-graph";
    auto L = make_gemv_linear(*g_ctx, n, k, LinearPrecision::BF16, w.view(), gl, o);
    const auto ms = {1, 5, 16, 64, 65, 130};
    for (int64_t m : ms) {
      SCOPED_TRACE(std::string(all_dense ? "all dense" : "hybrid") + " m=" + std::to_string(m));
      HostActs a = make_acts(m, k, LinearPrecision::BF16, 300 + m);
      EXPECT_LT(rel_err(run_layer(*L, a, m, stream_.get(), true), ref_gemm(a.x, w.ref, m, w.n, w.k)), 1e-2)
          << L->plan_info(m);
    }
    auto R = L->replicate();
    for (int64_t m : ms) {
      SCOPED_TRACE(std::string(all_dense ? "all dense" : "hybrid") + " replica m=" + std::to_string(m));
      HostActs a = make_acts(m, k, LinearPrecision::BF16, 900 + m);
      EXPECT_LT(rel_err(run_layer(*R, a, m, stream_.get(), true), ref_gemm(a.x, w.ref, m, w.n, w.k)), 1e-2)
          << R->plan_info(m);
    }
  }
}

// The E4M3-token block shapes (per-token quantization into the Context's scratch, then wgmma
// on E4M3 x E4M3) inside CUDA graphs, for a Spense axis=out layer with partial row blocks of both
// kinds, an all-dense one and an axis=in one (tokens quantized in stored column order), every
// token tile size, K split or not, and a replica: against the fp64 reference on the per-token
// quantized activations (1e-2, as in PathsMatchReference). Then the same layers with the
// E4M3-token shapes switched off (LinearOptions::small_m_e4m3_tokens), against the BF16-token one.
TEST_F(CudaLinear, SmallMKernelE4m3TokensInsideGraphs) {
  if (!fp8_ok() || !tc_smem_ok() || !gemv::tc_wgmma_ok()) GTEST_SKIP() << "E4M3 tokens run on Hopper's wgmma";
  const int64_t n = 320, k = 2048;
  for (const char* layout : {"hybrid out", "all dense", "hybrid in"}) {
    const std::string lay = layout;
    GemvLayout gl;
    gl.all_dense = lay == "all dense";
    gl.tile = lay == "hybrid in" ? 64 : 32;
    std::vector<uint8_t> rmap(static_cast<size_t>(n), 0), cmap(static_cast<size_t>(k), 0);
    if (lay == "hybrid out") {
      gl.dense_tiles = {1, 6, 9};
      for (int32_t t : gl.dense_tiles) std::fill_n(rmap.begin() + t * 32, 32, uint8_t(1));
    } else if (lay == "hybrid in") {  // 8 of 32 column tiles dense: 512 dense columns, 1536 2:4 ones
      gl.axis = HybridAxis::IN;
      gl.dense_tiles = {0, 3, 7, 12, 18, 22, 27, 31};
      for (int32_t t : gl.dense_tiles) std::fill_n(cmap.begin() + t * 64, 64, uint8_t(1));
    }
    HostWeights w = make_weights(n, k, LinearPrecision::FP8, 41 + lay.size(), !gl.all_dense, rmap, cmap);
    const std::vector<int64_t> ms{1, 8, 13, 16, 32, 33, 64};
    const auto io = acts_and_refs(ms, w, LinearPrecision::FP8, 700);
    for (int shape = gemv::kTcFirstE4m3Shape; shape < gemv::kTcShapes; ++shape)
      // Block shapes: K split or not. Streamed shapes: persistent blocks uncapped, or capped at
      // 1, 2 and 5 so that each block streams more stages than its slots hold (the ring wraps)
      // and units are both cut between blocks (the workspace) and whole in one (written directly).
      for (int variant : shape >= gemv::kTcFirstStreamShape ? std::vector<int>{0, 1, 2, 5} : std::vector<int>{0, 2}) {
        const bool streamed_shape = shape >= gemv::kTcFirstStreamShape;
        LinearOptions o;
        o.name = "gemv-e4m3-tokens";
        o.small_m_e4m3_tokens = true;
        o.small_m_kernel = SmallMKernel::TENSOR_CORES;
        o.small_m_tc_shape = shape;
        o.small_m_tc_slices = streamed_shape ? 0 : variant;
        o.small_m_stream_blocks = streamed_shape ? variant : 0;
        auto L = make_gemv_linear(*g_ctx, n, k, LinearPrecision::FP8, w.view(), gl, o);
        auto trace = [&](const char* who, int64_t m) {
          return lay + " " + who + " shape " + std::to_string(shape) + (streamed_shape ? " blocks " : " slices ") +
                 std::to_string(variant) + " m=" + std::to_string(m);
        };
        for (int64_t m : ms) {
          SCOPED_TRACE(trace("layer", m));
          EXPECT_LT(rel_err(run_layer(*L, io.at(m).a, m, stream_.get(), true), io.at(m).want_q), 1e-2)
              << L->plan_info(m);
          EXPECT_NE(L->plan_info(m).find("E4M3 tokens"), std::string::npos) << L->plan_info(m);
          // Axis=in layers run shapes 10-13 as block shapes 7 (10) and 6 (11-13).
          EXPECT_EQ(L->plan_info(m).find("streamed") != std::string::npos, streamed_shape && lay != "hybrid in")
              << L->plan_info(m);
        }
        // A replica of the prepared layer copies its choices and prepares its own scratch.
        auto R = L->replicate();
        for (int64_t m : ms) {
          SCOPED_TRACE(trace("replica", m));
          EXPECT_LT(rel_err(run_layer(*R, io.at(m).a, m, stream_.get(), true), io.at(m).want_q), 1e-2)
              << R->plan_info(m);
        }
      }
    // LinearOptions::small_m_e4m3_tokens = false: a forced E4M3-token shape runs on BF16 tokens
    // (as shape 4 or 5), and AUTO never picks one; both match the BF16-token reference -- except
    // where AUTO picks cuBLASLt (all-dense layers), whose FP8 GEMM takes per-token quantized
    // tokens (want_for; the first GPU run of this test compared that with the BF16-token
    // reference: 2.6e-2).
    for (int shape : {gemv::kTcFirstE4m3Shape, -1}) {
      LinearOptions o;
      o.name = "gemv-bf16-tokens";
      o.small_m_kernel = shape < 0 ? SmallMKernel::AUTO : SmallMKernel::TENSOR_CORES;
      o.small_m_tc_shape = shape;
      o.small_m_e4m3_tokens = false;
      auto L = make_gemv_linear(*g_ctx, n, k, LinearPrecision::FP8, w.view(), gl, o);
      for (int64_t m : {1, 16, 64}) {
        SCOPED_TRACE(lay + " E4M3 tokens off, shape " + std::to_string(shape) + " m=" + std::to_string(m));
        L->prepare(m);
        const std::string plan = L->plan_info(m);
        EXPECT_LT(rel_err(run_layer(*L, io.at(m).a, m, stream_.get(), true), io.at(m).want_for(plan)), 1e-2) << plan;
        EXPECT_EQ(plan.find("E4M3 tokens"), std::string::npos) << plan;
      }
    }
  }
}

TEST_F(CudaLinear, GraphCaptureAndReplicas) {
  NEED_SPARSELT();
  const int64_t n = 512, k = 256;
  for (LinearPrecision p : {LinearPrecision::BF16, LinearPrecision::FP8}) {
    if (p == LinearPrecision::FP8 && !fp8_ok()) continue;
    for (HybridAxis axis : {HybridAxis::OUT, HybridAxis::IN}) {
      HybridLayout lay{axis, 64, hybrid_spread_tiles(axis == HybridAxis::OUT ? n : k, 64, 0.25)};
      std::vector<uint8_t> dmap(static_cast<size_t>(axis == HybridAxis::OUT ? n : k), 0);
      for (int32_t t : lay.dense_tiles) std::fill_n(dmap.begin() + t * 64, 64, uint8_t(1));
      HostWeights w = make_weights(n, k, p, 41, true, axis == HybridAxis::OUT ? dmap : std::vector<uint8_t>{},
                                   axis == HybridAxis::IN ? dmap : std::vector<uint8_t>{});
      LinearOptions o;
      o.name = "graph";
      auto L = make_hybrid_linear(*g_ctx, n, k, p, w.view(), lay, o);
      auto R = L->replicate();
      for (int64_t m : {1, 16, 77}) {
        SCOPED_TRACE(std::string(precision_name(p)) + " axis=" + axis_name(axis) + " m=" + std::to_string(m));
        HostActs a = make_acts(m, k, p, 700 + m);
        expect_close(run_layer(*L, a, m, stream_.get(), true), w, a, m);
        expect_close(run_layer(*R, a, m, stream_.get(), true), w, a, m);
      }
    }
  }
}

TEST_F(CudaLinear, ForwardInsideCaptureWithoutPrepareThrows) {
  const int64_t n = 64, k = 64;
  HostWeights w = make_weights(n, k, LinearPrecision::BF16, 3, false);
  LinearOptions o;
  o.name = "unprepared";
  auto L = make_dense_linear(*g_ctx, n, k, LinearPrecision::BF16, w.view(), o);
  DeviceBuffer x(64 * k * 2), y(64 * n * 2);
  cudaStream_t s = stream_.get();
  SPENSE_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  try {
    L->forward(x.get(), y.get(), 5, s);
    ADD_FAILURE() << "expected spense::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'unprepared'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("prepare"), std::string::npos) << e.what();
  }
  cudaGraph_t g = nullptr;
  cudaStreamEndCapture(s, &g);
  if (g) cudaGraphDestroy(g);
  (void)cudaGetLastError();
}

namespace {
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_F(CudaLinear, BadInputsGiveClearErrors) {
  const int64_t n = 64, k = 128;
  LinearOptions o;
  o.name = "model.layers.3.mlp.up_proj";
  HostWeights dense = make_weights(n, k, LinearPrecision::BF16, 9, false);

  // Not 2:4 where it must be.
  if (have_cusparselt()) {
    std::string e = error_of([&] { make_sparse_linear(*g_ctx, n, k, LinearPrecision::BF16, dense.view(), o); });
    EXPECT_NE(e.find("layer 'model.layers.3.mlp.up_proj'"), std::string::npos) << e;
    EXPECT_NE(e.find("not 2:4"), std::string::npos) << e;
    EXPECT_NE(e.find("row 0, columns 0..3"), std::string::npos) << e;
    HybridLayout lay{HybridAxis::OUT, 16, {0}};  // rows 16.. must be 2:4 but are dense
    e = error_of([&] { make_hybrid_linear(*g_ctx, n, k, LinearPrecision::BF16, dense.view(), lay, o); });
    EXPECT_NE(e.find("not 2:4"), std::string::npos) << e;
  } else {
    std::string e = error_of([&] { make_sparse_linear(*g_ctx, n, k, LinearPrecision::BF16, dense.view(), o); });
    EXPECT_NE(e.find("cuSPARSELt"), std::string::npos) << e;
  }

  // Misaligned dims.
  HostWeights odd = make_weights(64, 100, LinearPrecision::BF16, 9, false);
  std::string e = error_of([&] { make_dense_linear(*g_ctx, 64, 100, LinearPrecision::BF16, odd.view(), o); });
  EXPECT_NE(e.find("misaligned"), std::string::npos) << e;
  EXPECT_NE(e.find("model.layers.3.mlp.up_proj"), std::string::npos) << e;

  // Unsupported dtype, missing FP8 scales, dtype not matching the precision.
  std::vector<float> f32(static_cast<size_t>(n * k), 1.f);
  e = error_of([&] { make_dense_linear(*g_ctx, n, k, LinearPrecision::BF16, {f32.data(), DType::F32, nullptr}, o); });
  EXPECT_NE(e.find("weights are F32"), std::string::npos) << e;
  e = error_of([&] { make_dense_linear(*g_ctx, n, k, LinearPrecision::FP8, {dense.w16.data(), DType::F8_E4M3, nullptr}, o); });
  EXPECT_NE(e.find("scales"), std::string::npos) << e;

  // Bad hybrid layouts.
  HybridLayout bad_tile{HybridAxis::OUT, 24, {}};
  e = error_of([&] { make_hybrid_linear(*g_ctx, n, k, LinearPrecision::BF16, dense.view(), bad_tile, o); });
  EXPECT_NE(e.find("multiple of 16"), std::string::npos) << e;
  HybridLayout bad_idx{HybridAxis::IN, 32, {4}};
  e = error_of([&] { make_hybrid_linear(*g_ctx, n, k, LinearPrecision::BF16, dense.view(), bad_idx, o); });
  EXPECT_NE(e.find("out of range"), std::string::npos) << e;

  // GPUs below compute capability 8.0.
  e = error_of([] { check_compute_capability(7, 5, 8, 0, "Tesla T4", "Spense's GPU runtime"); });
  EXPECT_NE(e.find("compute capability 8.0"), std::string::npos) << e;
  EXPECT_NE(e.find("Tesla T4"), std::string::npos) << e;
}

TEST(CudaLinearHost, BucketsAndLayouts) {
  EXPECT_EQ(rows_bucket(1), 16);
  EXPECT_EQ(rows_bucket(16), 16);
  EXPECT_EQ(rows_bucket(17), 32);
  EXPECT_EQ(rows_bucket(1000), 1024);
  EXPECT_EQ(rows_bucket(1025), 1536);
  EXPECT_EQ(rows_bucket(4096), 4096);
  HybridLayout lay{HybridAxis::OUT, 16, {2, 0}};
  std::vector<int32_t> order = hybrid_stored_order(64, lay);
  ASSERT_EQ(order.size(), 64u);
  EXPECT_EQ(order[0], 16);   // sparse tiles 1, 3 first
  EXPECT_EQ(order[16], 48);
  EXPECT_EQ(order[32], 0);   // then dense tiles 0, 2
  EXPECT_EQ(order[48], 32);
  std::vector<int32_t> t = hybrid_spread_tiles(800 * 64, 64, 0.25);
  EXPECT_EQ(t.size(), 200u);
  EXPECT_TRUE(std::is_sorted(t.begin(), t.end()));
  EXPECT_EQ(std::adjacent_find(t.begin(), t.end()), t.end());
}

// copy_to_device (runtime.h): pageable sources through the pinned staging (sizes below, at and
// across its 4 MiB threshold and 32 MiB chunks, with a tail), pinned and device sources
// directly; every byte arrives, and the copy is ordered after earlier legacy-stream work.
TEST_F(CudaLinear, CopyToDeviceEveryPathAndSize) {
  const size_t MiB = size_t(1) << 20;
  for (size_t bytes : {size_t(0), size_t(1000), 4 * MiB - 1, 4 * MiB, 32 * MiB, 97 * MiB + 3}) {
    SCOPED_TRACE(std::to_string(bytes) + " bytes");
    std::vector<uint8_t> src(bytes), back(bytes);
    for (size_t i = 0; i < bytes; ++i) src[i] = uint8_t((i * 2654435761u) >> 13);
    DeviceBuffer d(std::max<size_t>(bytes, 1));
    // pending legacy-stream work on the destination must land first (the copy then overwrites it)
    if (bytes) SPENSE_CUDA_CHECK(cudaMemsetAsync(d.get(), 0xab, bytes, 0));
    copy_to_device(d.get(), src.data(), bytes);
    if (bytes) SPENSE_CUDA_CHECK(cudaMemcpy(back.data(), d.get(), bytes, cudaMemcpyDeviceToHost));
    EXPECT_TRUE(back == src) << "pageable";
    if (!bytes) continue;
    void* pinned = nullptr;
    SPENSE_CUDA_CHECK(cudaMallocHost(&pinned, bytes));
    std::memcpy(pinned, src.data(), bytes);
    DeviceBuffer d2(bytes);
    copy_to_device(d2.get(), pinned, bytes);
    SPENSE_CUDA_CHECK(cudaFreeHost(pinned));
    DeviceBuffer d3(bytes);
    copy_to_device(d3.get(), d2.get(), bytes);  // device source
    std::fill(back.begin(), back.end(), 0);
    SPENSE_CUDA_CHECK(cudaMemcpy(back.data(), d3.get(), bytes, cudaMemcpyDeviceToHost));
    EXPECT_TRUE(back == src) << "pinned, then device";
  }
}

// Last on purpose: exercises cusparseLtMatmulSearch (layers of >= 2^20 weights search; see
// src/cuda/sparselt/sparse_core.cpp for why small ones do not).
TEST_F(CudaLinear, SearchedSparseAlgorithmsOnModelSizedLayer) {
  NEED_SPARSELT();
  const int64_t n = 1024, k = 1024;
  for (LinearPrecision p : {LinearPrecision::BF16, LinearPrecision::FP8}) {
    if (p == LinearPrecision::FP8 && !fp8_ok()) continue;
    HostWeights w = make_weights(n, k, p, 61, true);
    LinearOptions o;
    o.name = "searched";
    auto S = make_sparse_linear(*g_ctx, n, k, p, w.view(), o);
    for (int64_t m : {1, 64}) {
      SCOPED_TRACE(std::string(precision_name(p)) + " m=" + std::to_string(m));
      HostActs a = make_acts(m, k, p, 900 + m);
      expect_close(run_layer(*S, a, m, stream_.get()), w, a, m);
    }
  }
}
