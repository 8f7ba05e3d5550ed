// The small-M kernel's streamed E4M3-token shapes (gemv.h: tc_streamed), in their own unit.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/gemv_tc.cuh"

namespace spense::cuda::gemv {
namespace {

// ---- Streamed E4M3 shapes (10-13): persistent blocks, TMA tiles, stream-K over the stages ----
// Nsight Compute put our E4M3-token shapes at 62-65% of the DRAM peak on gate_up at M = 16 and
// cuSPARSELt's 2:4 kernel at 70% (docs/perf.md); copy-only pipelines over the same bytes
// (tools/device/stream_pattern.cu) reached 85% of the read reference only with persistent
// blocks, each streaming one contiguous share of the layer's stages, fed by whole-tile copies
// of the copy engine. Here the copy engine is the TMA: a stage's 128 bytes of each of the
// block's rows are one 2-D box of the row-major storage (values or dense rows, swizzled 128 B
// so that ldmatrix reads them without bank conflicts: 16-byte chunk c of row r lands at
// chunk c ^ (r % 8)), its metadata one more box, and its tokens one bulk copy (the quantize
// kernel writes them chunk-major, so a stage's token columns are contiguous and land in the
// core-matrix layout wgmma's descriptor reads). The layer's units (row blocks, 2:4 first) are
// laid end to end as one sequence of stages (a 2:4 stage of 256 columns and a dense one of 128
// hold the same 128 bytes per row); each block takes an equal run of it. Its pipeline runs on
// across unit boundaries; a unit wholly inside one run is written directly, a unit cut between
// runs is summed in a workspace (fp32 atomics) and written by the block that adds its last
// stages, which zeroes the tile and the counter again (graph replays find them zeroed).
// Warp-specialized: one producer warp (lane 0 issues every copy) after the consumer
// warpgroups; per slot a "full" mbarrier (the copies' bytes) and an "empty" one (one arrival
// per consumer warp), so no block-wide barrier stalls the copies.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define SPENSE_SM90 1
#else
#define SPENSE_SM90 0
#endif

__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
#if SPENSE_SM90
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
#endif
}
__device__ __forceinline__ void mbar_init_fence() {
#if SPENSE_SM90
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
// Arrives on bar and adds `bytes` to the copies its current phase waits for.
__device__ __forceinline__ void mbar_expect(uint32_t bar, uint32_t bytes) {
#if SPENSE_SM90
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#endif
}
// Waits for the phase of bar with this parity to complete. A copy that never lands (a bug)
// traps after about 10 s instead of hanging the GPU.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
#if SPENSE_SM90
  const long long t0 = clock64();
  for (;;) {
    uint32_t done;
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
    if (done) return;
    if (clock64() - t0 > (1ll << 34)) __trap();
  }
#endif
}
// Branch-free forms for code with wgmmas in flight (a divergent branch there makes ptxas
// serialize the wgmmas): an arrival made only where `pred` holds, and a wait whose spin loop
// lives inside the asm (no time-out).
__device__ __forceinline__ void mbar_arrive_if(uint32_t bar, bool pred) {
#if SPENSE_SM90
  asm volatile("{\n .reg .pred p;\n setp.ne.u32 p, %1, 0;\n @p mbarrier.arrive.shared::cta.b64 _, [%0];\n}\n" ::"r"(bar),
               "r"(uint32_t(pred))
               : "memory");
#endif
}
__device__ __forceinline__ void mbar_wait_spin(uint32_t bar, uint32_t parity) {
#if SPENSE_SM90
  asm volatile(
      "{\n .reg .pred p;\n WAIT:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra WAIT;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
#endif
}
// Copy engine: `bytes` contiguous bytes, completing on bar.
__device__ __forceinline__ void bulk_copy(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
#if SPENSE_SM90
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
#endif
}
// TMA: the box of `map` at (byte column c0, row c1), completing on bar. Rows past the tensor's
// end land as zeros (and count as copied bytes).
__device__ __forceinline__ void tma_2d(uint32_t dst, const CUtensorMap* map, int c0, int c1, uint32_t bar) {
#if SPENSE_SM90
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
#endif
}

// The three tensor maps of a layer: 2:4 values (ns rows of k/2 bytes), their metadata (ns rows of
// k/8 bytes) and the dense rows (nd rows of k bytes, ld dense_ld); boxes of kBM rows.
struct StreamMaps {
  CUtensorMap values, meta, dense;
};

// MT 64-row tiles per consumer warpgroup, WGS consumer warpgroups, NT 8-token tiles, S slots.
// A stage: the weight box (kBM rows x 128 bytes, swizzled), the tokens (a 2:4 stage's 256
// columns = 16 chunks of 16 bytes per token, chunk-major; a dense stage uses half) and the
// metadata box (kBM rows x 32 bytes). Each part starts on 1024 bytes (the swizzle's period).
// The consumers' wgmmas read the weights straight from the swizzled box (a shared-memory
// descriptor, no ldmatrix) and stay in flight while the next stage is awaited: a slot is freed
// one stage later, once the wgmmas that read it are done. (A consumer that loaded them into
// registers by ldmatrix first and waited for each stage's wgmmas ran at the same speed on an
// H100, for 64- and 128-row blocks: the consumer does not bound these shapes; docs/perf.md.)
template <int MT, int WGS, int NT, int S>
struct StreamCfg {
  using Tc = TcCfg<MT, NT, 4 * WGS, 2, true, true, false, true>;  // the E4M3-token compute and epilogue layout
  static constexpr int kBM = Tc::kBM, kTok = Tc::kTok, kStages = S;
  static constexpr int kConsumers = 128 * WGS, kThreads = kConsumers + 32;
  static constexpr int kA = kBM * 128, kXSparse = 16 * kTok * 16, kXDense = 8 * kTok * 16, kMeta = kBM * 32;
  static constexpr int kStage = kA + kXSparse + kMeta;
  static constexpr int kSmem = S * kStage + 1024;  // + the alignment of the dynamic memory to 1024
  // Blocks per SM that the shared memory allows (228 KB per SM, 1 KB reserved per block), for the
  // register budget: three where they fit, else two (the 64-token tile of shape 10 needs more
  // than 128 registers, or its wgmmas are serialized).
  static constexpr int kMinBlocks = 3 * (kSmem + 2048) <= 228 * 1024 ? 3 : 2;
  static_assert(kBM <= 256, "a TMA box has at most 256 rows");
  static_assert(Tc::kFP8 && Tc::kQ && !Tc::kIN && Tc::kStages == 2 && Tc::kSparseCols == 256 && Tc::kDenseCols == 128 &&
                    Tc::kAChunks > 0,
                "E4M3 weights and tokens, axis out; 2:4 stages of 256 columns, dense ones of 128");
  static_assert(kA % 1024 == 0 && kXSparse % 1024 == 0 && kMeta % 1024 == 0, "1024-byte aligned parts");
};

// The layer's stage sequence: the 2:4 row blocks' stages, then the dense ones'.
struct StreamGeom {
  int64_t sparse_blocks = 0, row_blocks = 0;  // row blocks of kBM rows, 2:4 first
  int64_t sv = 0, sd = 0, total = 0;          // stages of a 2:4 / dense unit, of all
};

// A position in the sequence: row block (= unit), stage within it, the unit's stages.
struct StreamPos {
  int64_t rb = 0, s = 0, n = 0;
  __device__ __forceinline__ void seek(const StreamGeom& g, int64_t i) {
    if (i < g.sparse_blocks * g.sv) {
      rb = i / g.sv, s = i % g.sv, n = g.sv;
    } else {
      const int64_t r = i - g.sparse_blocks * g.sv;
      rb = g.sparse_blocks + r / g.sd, s = r % g.sd, n = g.sd;
    }
  }
  __device__ __forceinline__ void next(const StreamGeom& g) {
    if (++s < n) return;
    s = 0;
    ++rb;
    n = rb < g.sparse_blocks ? g.sv : g.sd;
  }
  __device__ __forceinline__ bool sparse(const StreamGeom& g) const { return rb < g.sparse_blocks; }
};

// acc += the consumer warpgroup's rows of one landed stage times its tokens: one E4M3 wgmma per
// k-step (a 2:4 k64 or a dense k32: 32 bytes of each row) and 64-row tile, A read from the
// swizzled box by descriptor; issued and committed as one group, not waited for.
// fresh: the stage starts a new sum (its first wgmmas overwrite the accumulators).
template <class C, bool SPARSE>
__device__ __forceinline__ void stream_issue_ss(const uint8_t* stage, float (&acc)[C::Tc::kMT][C::Tc::kNT][4], bool fresh) {
  using T = typename C::Tc;
  constexpr int MT = T::kMT, N = 8 * T::kNT, R = N / 2, KF = 4;
  constexpr uint32_t kLBO = C::kTok * 16;
  const int warp = threadIdx.x >> 5;
  const uint32_t ab = smem_addr(stage), xb = smem_addr(stage + C::kA);
  const uint8_t* M = stage + C::kA + C::kXSparse;
  auto& d = reinterpret_cast<float(&)[MT][R]>(acc);
  uint32_t e[KF][MT];
  if constexpr (SPARSE) {
#pragma unroll
    for (int f = 0; f < KF; ++f)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) e[f][mt] = meta_frag_e4m3<T>(M, tc_row0<T>(warp, mt), f);
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) wgmma::pin(d[mt]);
  wgmma::fence();
#pragma unroll
  for (int f = 0; f < KF; ++f)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      // this warpgroup's 64-row tile mt, 32 bytes of each row per k-step
      const uint64_t a = wgmma::smem_desc_sw128(ab + ((warp / 4) * MT + mt) * 64 * 128 + f * 32);
      const uint64_t b = wgmma::smem_desc(xb + f * (SPARSE ? 4 : 2) * kLBO, kLBO, 128);
      const uint32_t scale_d = f > 0 || !fresh;
      if constexpr (SPARSE) wgmma::Wgmma<N>::sparse_e4m3_ss(d[mt], a, b, e[f][mt], scale_d);
      else wgmma::Wgmma<N>::dense_e4m3_ss(d[mt], a, b, scale_d);
    }
  wgmma::commit();
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) wgmma::pin(d[mt]);
}

// Barrier 1 over the consumer warps only (the producer warp never joins it).
template <class C>
__device__ __forceinline__ void consumers_sync() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(C::kConsumers) : "memory");
}

// Writes unit t's tile from the consumer threads' accumulator fragments (the E4M3 wgmma C
// layout): y = acc x the token's scale x the row's scale, at the row's place. Every factor is
// loaded before the first store, so the stores wait for one round of loads. (The loop this
// replaces loaded each element's tile value and factors behind a branch, one memory latency per
// element: the last epilogue of every block, which nothing streams behind, then grew with the
// token tile by about 0.6 us per 128 elements, the fixed cost per launch of docs/perf.md.)
template <class C>
__device__ __forceinline__ void stream_store(const Weights& w, const TcUnit& t, int64_t m_total, uint16_t* y,
                                             int64_t ldy, const float (&acc)[C::Tc::kMT][C::Tc::kNT][4]) {
  using T = typename C::Tc;
  constexpr int MT = T::kMT, NT = T::kNT;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g4 = lane >> 2, q4 = lane & 3;
  int64_t dst[MT][2];
  float rs[MT][2];
  bool rok[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = t.row0 + tc_row0<T>(warp, mt) + g4 + 8 * h, s = t.first + r;
      rok[mt][h] = r < t.rows;
      dst[mt][h] = rok[mt][h] && w.row_map ? int64_t(w.row_map[s]) : s;
      rs[mt][h] = rok[mt][h] && w.scales ? w.scales[s] : 1.f;  // (v * 1.f == v: the same values)
    }
  float xs[NT][2];  // (clamped: only m_total scales need exist; a clamped one is never stored)
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) xs[j][e] = w.x_scales[min(int64_t(8 * j + 2 * q4 + e), m_total - 1)];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e >> 1, tk = 8 * j + 2 * q4 + (e & 1);
        if (rok[mt][h] && tk < m_total) store_bf16(y + tk * ldy + dst[mt][h], acc[mt][j][e] * xs[j][e & 1] * rs[mt][h]);
      }
}

// The end of a run of unit p's stages [s0, p.s]: written directly when the run is the whole
// unit, else summed through the workspace (counters: one int per unit, padded to 64; then one
// fp32 kBM x kTok tile per unit, row-major); the block that counts the unit's last stages reads
// the sum back into acc (dead afterwards: the next stage starts a new sum) and writes it.
template <class C>
__device__ __forceinline__ void stream_epilogue(const Weights& w, const StreamGeom& g, const StreamPos& p, int64_t s0,
                                                int64_t m_total, uint16_t* y, int64_t ldy, void* ws,
                                                float (&acc)[C::Tc::kMT][C::Tc::kNT][4], int* last) {
  using T = typename C::Tc;
  constexpr int MT = T::kMT, NT = T::kNT, kTile = C::kBM * C::kTok;
  TcUnit t;
  t.sparse = p.sparse(g);
  t.row0 = (t.sparse ? p.rb : p.rb - g.sparse_blocks) * C::kBM;
  t.rows = t.sparse ? w.ns : w.nd;
  t.first = t.sparse ? 0 : w.ns;
  t.m0 = 0;
  t.begin = t.end = 0;
  const int64_t done = p.s + 1 - s0;
  // (uniform for ptxas through a shuffle: a branch it cannot prove uniform makes it serialize
  // the in-flight wgmmas)
  if (__shfl_sync(0xffffffffu, int(done == p.n), 0)) return stream_store<C>(w, t, m_total, y, ldy, acc);
  int* counters = static_cast<int*>(ws);
  float* tile = reinterpret_cast<float*>(counters + (g.row_blocks + 63) / 64 * 64) + p.rb * kTile;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g4 = lane >> 2, q4 = lane & 3;
  // The fragment's element e of tile (mt, j): row tc_row0 + g4 + 8 (e / 2), token 8 j + 2 q4 + e % 2.
  auto at = [&](int mt, int j, int e) {
    return tile + (tc_row0<T>(warp, mt) + g4 + 8 * (e >> 1)) * C::kTok + 8 * j + 2 * q4 + (e & 1);
  };
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) atomicAdd(at(mt, j, e), acc[mt][j][e]);
  __threadfence();  // this block's sums are visible device-wide before its stages are counted
  consumers_sync<C>();
  if (threadIdx.x == 0) {
    const int before = atomicAdd(counters + p.rb, int(done));
    *last = before + done == p.n;
    if (*last) counters[p.rb] = 0;  // every block of the unit has counted: ready for the next launch
  }
  consumers_sync<C>();
  if (!__shfl_sync(0xffffffffu, *last, 0)) return;  // (uniform for ptxas: see gemv_stream_k)
  __threadfence();
  // Every element's load is issued before any is used (see stream_store), then the tile is
  // zeroed for the next launch (graph replays find it so).
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][j][e] = __ldcg(at(mt, j, e));
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) __stcg(at(mt, j, e), 0.f);
  stream_store<C>(w, t, m_total, y, ldy, acc);
}

// xq: the E4M3 tokens chunk-major for kTok rows (quantize_rows_e4m3's chunk_rows = kTok).
template <class C>
__global__ void __launch_bounds__(C::kThreads, C::kMinBlocks) gemv_stream_k(const __grid_constant__ StreamMaps maps, Weights w,
                                                               const uint8_t* xq, int64_t m_total, uint16_t* y,
                                                               int64_t ldy, StreamGeom g, void* ws) {
#if SPENSE_WGMMA
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  constexpr int S = C::kStages, kWarps = C::kConsumers / 32;
  // full[slot]: lane 0 of the producer warp (one arrival with the stage's bytes);
  // empty[slot]: lane 0 of each consumer warp, done reading the slot.
  __shared__ __align__(8) uint64_t full[S], empty[S];
  __shared__ int last;
  const uint32_t raw = smem_addr(smem_raw), base = (raw + 1023) & ~1023u;
  uint8_t* smem = smem_raw + (base - raw);
  const int64_t g0 = g.total * blockIdx.x / gridDim.x, n = g.total * (blockIdx.x + 1) / gridDim.x - g0;
  // (the warp index through a shuffle: provably warp-uniform for ptxas, which otherwise treats the
  // producer/consumer split as a divergent path and serializes the in-flight wgmmas)
  const int warp = __shfl_sync(0xffffffffu, int(threadIdx.x >> 5), 0), lane = threadIdx.x & 31;
  if (threadIdx.x < S) {
    mbar_init(smem_addr(&full[threadIdx.x]), 1);
    mbar_init(smem_addr(&empty[threadIdx.x]), kWarps);
  }
  mbar_init_fence();
  __syncthreads();  // the only block-wide barrier: the producer warp leaves early
  StreamPos cur;
  cur.seek(g, g0);
  if (warp == kWarps) {  // producer: fills slot i % S with stage i once the consumers have freed it
    if (lane != 0) return;
    auto issue_weights = [&](const StreamPos& p, uint32_t st, uint32_t bar) {
      const bool sp = p.sparse(g);
      const int row0 = int((sp ? p.rb : p.rb - g.sparse_blocks) * C::kBM);
      mbar_expect(bar, uint32_t(C::kA + (sp ? C::kMeta + C::kXSparse : C::kXDense)));  // the tokens' bytes too
      tma_2d(st, sp ? &maps.values : &maps.dense, int(p.s * 128), row0, bar);
      if (sp) tma_2d(st + C::kA + C::kXSparse, &maps.meta, int(p.s * 32), row0, bar);
    };
    auto issue_tokens = [&](const StreamPos& p, uint32_t st, uint32_t bar) {
      const int bytes = p.sparse(g) ? C::kXSparse : C::kXDense;
      bulk_copy(st + C::kA, xq + p.s * bytes, uint32_t(bytes), bar);
    };
    StreamPos p = cur;
    // The first S stages' weights go out before the wait for the previous kernel (PDL).
    for (int i = 0; i < S && i < n; ++i, p.next(g)) issue_weights(p, base + i * C::kStage, smem_addr(&full[i]));
    griddep_wait();  // the tokens are the previous kernel's output
    p = cur;
#pragma unroll 1
    for (int64_t i = 0; i < n; ++i, p.next(g)) {
      const int slot = int(i % S);
      const uint32_t st = base + slot * C::kStage, fb = smem_addr(&full[slot]);
      if (i >= S) {
        mbar_wait(smem_addr(&empty[slot]), uint32_t((i / S - 1) & 1));
        issue_weights(p, st, fb);
      }
      issue_tokens(p, st, fb);
    }
    return;
  }
  griddep_wait();  // before the outputs and the workspace are written
  float acc[C::Tc::kMT][C::Tc::kNT][4] = {};
  int64_t s0 = cur.s;  // the first stage of the current run of the unit
  int held = -1;       // the slot the wgmmas in flight read (freed one stage later)
  bool fresh = true;   // the next stage starts a new sum
#pragma unroll 1
  for (int64_t i = 0; i < n; ++i) {
    const int slot = int(i % S);
    mbar_wait_spin(smem_addr(&full[slot]), uint32_t((i / S) & 1));
    if (cur.sparse(g)) stream_issue_ss<C, true>(smem + slot * C::kStage, acc, fresh);
    else stream_issue_ss<C, false>(smem + slot * C::kStage, acc, fresh);
    fresh = false;
    wgmma::wait<1>();  // the previous stage's group is done: its slot is free
    __syncwarp();
    mbar_arrive_if(smem_addr(&empty[held < 0 ? slot : held]), held >= 0 && lane == 0);
    held = slot;
    if (cur.s + 1 == cur.n || i + 1 == n) {
      wgmma::wait<0>();
#pragma unroll
      for (int mt = 0; mt < C::Tc::kMT; ++mt) wgmma::pin(reinterpret_cast<float(&)[4 * C::Tc::kNT]>(acc[mt]));
      __syncwarp();
      mbar_arrive_if(smem_addr(&empty[slot]), lane == 0);
      held = -1;
      fresh = true;
      stream_epilogue<C>(w, g, cur, s0, m_total, y, ldy, ws, acc, &last);
      s0 = 0;
    }
    cur.next(g);
  }
  // (nothing is in flight here, but without this wait ptxas adds one on the loop's back edge)
  wgmma::wait<0>();
#else
  __trap();  // the host launches the streamed shapes only where wgmma runs (tc_streamed)
#endif
}

StreamGeom stream_geom(const Weights& w, int bm) {
  StreamGeom g;
  g.sparse_blocks = (w.ns + bm - 1) / bm;
  g.row_blocks = g.sparse_blocks + (w.nd + bm - 1) / bm;
  g.sv = w.k / 256;
  g.sd = w.k / 128;
  g.total = g.sparse_blocks * g.sv + (g.row_blocks - g.sparse_blocks) * g.sd;
  return g;
}

// cuTensorMapEncodeTiled, from the driver through the runtime (no link to libcuda).
using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                 const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
EncodeTiled encode_tiled() {
  static const EncodeTiled fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    SPENSE_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q));
    if (!p || q != cudaDriverEntryPointSuccess) throw Error("gemv: the CUDA driver has no cuTensorMapEncodeTiled", 1);
    return reinterpret_cast<EncodeTiled>(p);
  }();
  return fn;
}

// A 2-D byte tensor of `rows` rows of `row_bytes` (ld bytes apart), boxes of box_bytes x box_rows.
CUtensorMap tensor_map(const void* base, int64_t row_bytes, int64_t rows, int64_t ld, int box_bytes, int box_rows,
                       bool swizzle128) {
  CUtensorMap m;
  const cuuint64_t dims[2] = {cuuint64_t(row_bytes), cuuint64_t(rows)}, strides[1] = {cuuint64_t(ld)};
  const cuuint32_t box[2] = {cuuint32_t(box_bytes), cuuint32_t(box_rows)}, es[2] = {1, 1};
  const CUresult r = encode_tiled()(&m, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void*>(base), dims, strides, box, es,
                                    CU_TENSOR_MAP_INTERLEAVE_NONE,
                                    swizzle128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_NONE,
                                    CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw Error("gemv: cuTensorMapEncodeTiled failed (CUresult " + std::to_string(int(r)) + ") for " +
                    std::to_string(rows) + " rows of " + std::to_string(row_bytes) + " bytes, ld " + std::to_string(ld),
                1);
  return m;
}

size_t stream_ws_bytes(const Weights& w, int bm, int64_t tok) {
  const StreamGeom g = stream_geom(w, bm);
  return size_t((g.row_blocks + 63) / 64 * 64) * sizeof(int) + size_t(g.row_blocks * bm * tok) * sizeof(float);
}

template <class C>
void launch_stream(const Weights& w, const void* xq, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  static const int resident = [] {  // blocks per SM at this shared-memory size
    SPENSE_CUDA_CHECK(cudaFuncSetAttribute(gemv_stream_k<C>, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem));
    int b = 0;
    SPENSE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, gemv_stream_k<C>, C::kThreads, C::kSmem));
    return b > 0 ? b : 1;
  }();
  const StreamGeom g = stream_geom(w, C::kBM);
  if (g.total <= 0) return;
  if (!w.stream_ws || w.stream_ws_bytes < stream_ws_bytes(w, C::kBM, C::kTok))
    throw Error("internal: the small-M kernel's streamed shape has no workspace for M=" + std::to_string(m), 1);
  StreamMaps maps;
  std::memset(&maps, 0, sizeof maps);
  if (w.ns > 0) {
    maps.values = tensor_map(w.sparse_values, w.k / 2, w.ns, w.k / 2, 128, C::kBM, true);
    maps.meta = tensor_map(w.sparse_meta, w.k / 8, w.ns, w.k / 8, 32, C::kBM, false);
  }
  if (w.nd > 0) maps.dense = tensor_map(w.dense, w.k, w.nd, w.dense_ld, 128, C::kBM, true);
  int64_t blocks = std::min<int64_t>(g.total, int64_t(tc_device().sms) * resident);
  if (w.stream_blocks > 0) blocks = std::min<int64_t>(blocks, w.stream_blocks);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(blocks));
  cfg.blockDim = dim3(C::kThreads);  // the consumer warpgroups, then the producer warp
  cfg.dynamicSmemBytes = C::kSmem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1] = {pdl_launch_attribute()};
  cfg.attrs = attr;
  cfg.numAttrs = w.pdl ? 1 : 0;
  SPENSE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, gemv_stream_k<C>, maps, w, static_cast<const uint8_t*>(xq), m,
                                       static_cast<uint16_t*>(y), ldy, g, w.stream_ws));
}

// Shape 10: one warpgroup of two 64-row tiles (128 rows), 3 slots (3 blocks per SM up to 16
// tokens, the copy-only measurement's best); 11: one warpgroup of 64 rows, 4 slots (up to 4
// blocks per SM); 12: the same kernel as 11 (it was 11 with the consumer all shapes now have;
// make_gemv_linear does not time it twice); 13: 8 slots, so one block per SM, 6-19% faster
// than 11 on every Qwen3-32B layer at M = 16 and 64 (fewer concurrent streams, a deeper ring;
// docs/perf.md). Per token tile of 8 / 16 / 32 / 64 (M <= 64).
template <int MT, int S>
void launch_stream_shape(const Weights& w, const void* xq, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  if (m <= 8) launch_stream<StreamCfg<MT, 1, 1, S>>(w, xq, m, y, ldy, s);
  else if (m <= 16) launch_stream<StreamCfg<MT, 1, 2, S>>(w, xq, m, y, ldy, s);
  else if (m <= 32) launch_stream<StreamCfg<MT, 1, 4, S>>(w, xq, m, y, ldy, s);
  else launch_stream<StreamCfg<MT, 1, 8, S>>(w, xq, m, y, ldy, s);
}

}  // namespace

void detail::launch_stream_m(const Weights& w, const void* xq, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  if (w.tc_shape == kTcFirstStreamShape) launch_stream_shape<2, 3>(w, xq, m, y, ldy, s);
  else if (w.tc_shape <= kTcFirstStreamShape + 2) launch_stream_shape<1, 4>(w, xq, m, y, ldy, s);  // 11, 12
  else launch_stream_shape<1, 8>(w, xq, m, y, ldy, s);
}

size_t tc_stream_workspace_bytes(const Weights& w, int shape, int64_t m) {
  return stream_ws_bytes(w, stream_rows(shape), tc_stream_tokens(m));
}

}  // namespace spense::cuda::gemv
