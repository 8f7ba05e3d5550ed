// The small-M kernel's streamed E4M3-token shapes (gemv.h: tc_streamed), in their own unit.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/gemv_tc.cuh"

namespace spense::cuda::gemv {
namespace {

// ---- Streamed E4M3 shapes (10-15): persistent blocks, TMA tiles, stream-K over the stages ----
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

// Experiment knobs of the streamed shapes (SPENSE_STREAM_EXP, bits; read once per process):
//   1  the producer lets the next kernel launch (PDL) once it has issued its last copies
//   2  runs of equal weight bytes (a 2:4 stage moves 10 KB per 64 rows, a dense one 8 KB)
//      instead of equal stage counts
//   4  the producer prefetches the tensor maps before its first copies
//   8  a unit cut between runs is written by the block holding its first stages (the last it
//      reaches), from its registers plus what the others summed in the workspace, so that a
//      block's last epilogue waits for no atomics of its own
enum : uint32_t { kStreamEarlyLaunch = 1, kStreamByteRuns = 2, kStreamPrefetchMaps = 4, kStreamHeadWrites = 8 };

// SPENSE_STREAM_TRACE: per block, global-timer stamps (ns) of the events below, for the last
// kStreamTraceSlots launches (gemv::stream_trace_dump prints them).
enum StreamEvent { kEvStart, kEvTokens, kEvFirstStage, kEvProducerDone, kEvLastStage, kEvEnd, kStreamEvents = 8 };
constexpr int kStreamTraceSlots = 8, kStreamTraceBlocks = 1024;

// Writes the global timer to event `ev` of a block's stamps `tr` where pred holds (predicated:
// no branch near in-flight wgmmas; tr may be null where pred is false).
__device__ __forceinline__ void trace_stamp(unsigned long long* tr, int ev, bool pred) {
#if SPENSE_SM90
  const uint64_t at = reinterpret_cast<uint64_t>(tr) + uint64_t(ev) * sizeof(unsigned long long);
  asm volatile(
      "{\n .reg .pred p;\n .reg .u64 t;\n setp.ne.u32 p, %1, 0;\n @p mov.u64 t, %%globaltimer;\n"
      " @p st.global.u64 [%0], t;\n}\n" ::"l"(at),
      "r"(uint32_t(pred))
      : "memory");
#endif
}
__device__ __forceinline__ void prefetch_tensormap(const CUtensorMap* map) {
#if SPENSE_SM90
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
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
// ONE: at most one block per SM even where more fit (shape 15: room for the next kernel's block).
template <int MT, int WGS, int NT, int S, bool ONE = false>
struct StreamCfg {
  using Tc = TcCfg<MT, NT, 4 * WGS, 2, true, true, false, true>;  // the E4M3-token compute and epilogue layout
  static constexpr bool kOnePerSm = ONE;
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
  static_assert(kSmem <= 227 * 1024, "more shared memory than a Hopper block can have");
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

// Block b's run [*g0, *g0 + *n) of the B blocks' share of the stage sequence: equal stage
// counts, or (byte_runs) equal weight bytes, a 2:4 stage weighing 5 and a dense one 4.
__device__ __forceinline__ void stream_run(const StreamGeom& g, int64_t b, int64_t B, bool byte_runs, int64_t* g0,
                                           int64_t* n) {
  if (!byte_runs) {
    *g0 = g.total * b / B;
    *n = g.total * (b + 1) / B - *g0;
    return;
  }
  const int64_t ssp = g.sparse_blocks * g.sv, cost = 5 * ssp + 4 * (g.total - ssp);
  auto stage_at = [&](int64_t c) { return c <= 5 * ssp ? (c + 4) / 5 : ssp + (c - 5 * ssp + 3) / 4; };
  *g0 = stage_at(cost * b / B);
  *n = stage_at(cost * (b + 1) / B) - *g0;
}

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
  float xs[NT][2];  // (the scales hold the padded tile's tokens; clamped all the same)
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

__device__ __forceinline__ int ld_acquire(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// The end of a run of unit p's stages [s0, p.s]: written directly when the run is the whole
// unit, else summed through the workspace (counters: one int per unit, padded to 64; then one
// fp32 kBM x kTok tile per unit, row-major); the block that counts the unit's last stages reads
// the sum back into acc (dead afterwards: the next stage starts a new sum) and writes it.
// head_writes (experiment bit 8): the block holding a cut unit's first stages writes it instead.
template <class C>
__device__ __forceinline__ void stream_epilogue(const Weights& w, const StreamGeom& g, const StreamPos& p, int64_t s0,
                                                int64_t m_total, uint16_t* y, int64_t ldy, void* ws,
                                                float (&acc)[C::Tc::kMT][C::Tc::kNT][4], int* last,
                                                bool head_writes) {
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
  if (__shfl_sync(0xffffffffu, int(head_writes && s0 == 0), 0)) {
    // This block holds the unit's first stages, the last ones of its run: once the others have
    // counted theirs, their sums are in the tile; add ours and write the unit. (The others run
    // in the same wave: the grid never exceeds the blocks that fit at once. A contributor that
    // never counts, a bug, traps after about 10 s instead of hanging the GPU.)
    if (threadIdx.x == 0) {
      const long long t0 = clock64();
      while (ld_acquire(counters + p.rb) != int(p.n - done))
        if (clock64() - t0 > (1ll << 34)) __trap();
    }
    consumers_sync<C>();
    __threadfence();
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][j][e] += __ldcg(at(mt, j, e));
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) __stcg(at(mt, j, e), 0.f);
    if (threadIdx.x == 0) counters[p.rb] = 0;  // no one else counts this unit again in this launch
    return stream_store<C>(w, t, m_total, y, ldy, acc);
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) atomicAdd(at(mt, j, e), acc[mt][j][e]);
  __threadfence();  // this block's sums are visible device-wide before its stages are counted
  consumers_sync<C>();
  if (__shfl_sync(0xffffffffu, int(head_writes), 0)) {  // the block holding the unit's first stages writes it
    if (threadIdx.x == 0) atomicAdd(counters + p.rb, int(done));
    return;
  }
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
                                                               int64_t ldy, StreamGeom g, void* ws, uint32_t exp,
                                                               unsigned long long* trace) {
#if SPENSE_WGMMA
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  constexpr int S = C::kStages, kWarps = C::kConsumers / 32;
  // full[slot]: lane 0 of the producer warp (one arrival with the stage's bytes);
  // empty[slot]: lane 0 of each consumer warp, done reading the slot.
  __shared__ __align__(8) uint64_t full[S], empty[S];
  __shared__ int last;
  const uint32_t raw = smem_addr(smem_raw), base = (raw + 1023) & ~1023u;
  uint8_t* smem = smem_raw + (base - raw);
  int64_t g0, n;
  stream_run(g, blockIdx.x, gridDim.x, exp & kStreamByteRuns, &g0, &n);
  unsigned long long* tr = trace ? trace + blockIdx.x * kStreamEvents : nullptr;
  if (tr && threadIdx.x == 0)  // a slot is reused, and a block without stages stamps no stage events
    for (int e = 0; e < kStreamEvents; ++e) tr[e] = 0;
  trace_stamp(tr, kEvStart, tr && threadIdx.x == 0);
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
    if (exp & kStreamPrefetchMaps) {
      if (g.sparse_blocks > 0) prefetch_tensormap(&maps.values), prefetch_tensormap(&maps.meta);
      if (g.row_blocks > g.sparse_blocks) prefetch_tensormap(&maps.dense);
    }
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
    // The next kernel may launch (its blocks land as ours leave, or beside them where they fit)
    // and start its own weight copies; it still waits for this grid to finish before it reads
    // what this one writes.
    if (exp & kStreamEarlyLaunch) griddep_launch_dependents();
    trace_stamp(tr, kEvProducerDone, tr != nullptr);
    return;
  }
  griddep_wait();  // before the outputs and the workspace are written
  trace_stamp(tr, kEvTokens, tr && threadIdx.x == 0);
  float acc[C::Tc::kMT][C::Tc::kNT][4] = {};
  int64_t s0 = cur.s;  // the first stage of the current run of the unit
  int held = -1;       // the slot the wgmmas in flight read (freed one stage later)
  bool fresh = true;   // the next stage starts a new sum
#pragma unroll 1
  for (int64_t i = 0; i < n; ++i) {
    const int slot = int(i % S);
    mbar_wait_spin(smem_addr(&full[slot]), uint32_t((i / S) & 1));
    trace_stamp(tr, kEvFirstStage, tr && threadIdx.x == 0 && i == 0);
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
      trace_stamp(tr, kEvLastStage, tr && threadIdx.x == 0 && i + 1 == n);
      __syncwarp();
      mbar_arrive_if(smem_addr(&empty[slot]), lane == 0);
      held = -1;
      fresh = true;
      stream_epilogue<C>(w, g, cur, s0, m_total, y, ldy, ws, acc, &last, exp & kStreamHeadWrites);
      s0 = 0;
    }
    cur.next(g);
  }
  // (nothing is in flight here, but without this wait ptxas adds one on the loop's back edge)
  wgmma::wait<0>();
  trace_stamp(tr, kEvEnd, tr && threadIdx.x == 0);
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

// SPENSE_STREAM_EXP (see kStreamEarlyLaunch): the experiment bits, 0 without it.
uint32_t stream_exp() {
  static const uint32_t v = [] {
    const char* e = std::getenv("SPENSE_STREAM_EXP");
    return e ? uint32_t(std::strtoul(e, nullptr, 0)) : 0u;
  }();
  return v;
}

// SPENSE_STREAM_TRACE set: a device buffer of kStreamTraceSlots launches' stamps, filled in
// launch order (the slot of a launch captured in a graph is fixed at capture). Allocated by the
// first stream_trace_dump or launch, whichever comes first: the benchmarks call the dump once
// before they capture anything (cudaMalloc may not run inside a capture).
struct StreamTrace {
  unsigned long long* buf = nullptr;
  int next = 0;
  int blocks[kStreamTraceSlots] = {};
};
StreamTrace& stream_trace() {
  static StreamTrace t = [] {
    StreamTrace r;
    if (std::getenv("SPENSE_STREAM_TRACE")) {
      const size_t bytes = size_t(kStreamTraceSlots) * kStreamTraceBlocks * kStreamEvents * sizeof(unsigned long long);
      SPENSE_CUDA_CHECK(cudaMalloc(&r.buf, bytes));
      SPENSE_CUDA_CHECK(cudaMemset(r.buf, 0, bytes));
    }
    return r;
  }();
  return t;
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
  if (C::kOnePerSm) blocks = std::min<int64_t>(blocks, tc_device().sms);
  if (w.stream_blocks > 0) blocks = std::min<int64_t>(blocks, w.stream_blocks);
  StreamTrace& tr = stream_trace();
  unsigned long long* trace = nullptr;
  if (tr.buf && blocks <= kStreamTraceBlocks) {
    const int slot = tr.next++ % kStreamTraceSlots;
    tr.blocks[slot] = int(blocks);
    trace = tr.buf + size_t(slot) * kStreamTraceBlocks * kStreamEvents;
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(blocks));
  cfg.blockDim = dim3(C::kThreads);  // the consumer warpgroups, then the producer warp
  cfg.dynamicSmemBytes = C::kSmem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1] = {pdl_launch_attribute()};
  cfg.attrs = attr;
  cfg.numAttrs = w.pdl ? 1 : 0;
  SPENSE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, gemv_stream_k<C>, maps, w, static_cast<const uint8_t*>(xq), m,
                                       static_cast<uint16_t*>(y), ldy, g, w.stream_ws, stream_exp(), trace));
}

// Shape 10: one warpgroup of two 64-row tiles (128 rows), 3 slots (3 blocks per SM up to 16
// tokens, the copy-only measurement's best); 11: one warpgroup of 64 rows, 4 slots (up to 4
// blocks per SM); 12: the same kernel as 11 (it was 11 with the consumer all shapes now have;
// make_gemv_linear does not time it twice); 13: 8 slots, so one block per SM, 6-19% faster
// than 11 on every Qwen3-32B layer at M = 16 and 64 (fewer concurrent streams, a deeper ring;
// docs/perf.md); 14-15: below. Per token tile of 8 / 16 / 32 / 64 (M <= 64).
template <int MT, int S>
void launch_stream_shape(const Weights& w, const void* xq, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  if (m <= 8) launch_stream<StreamCfg<MT, 1, 1, S>>(w, xq, m, y, ldy, s);
  else if (m <= 16) launch_stream<StreamCfg<MT, 1, 2, S>>(w, xq, m, y, ldy, s);
  else if (m <= 32) launch_stream<StreamCfg<MT, 1, 4, S>>(w, xq, m, y, ldy, s);
  else launch_stream<StreamCfg<MT, 1, 8, S>>(w, xq, m, y, ldy, s);
}
// Shape 14: shape 13's block with the deepest ring that fits one block per SM at each token
// tile (18 / 16 / 12 / 8 slots: 209-217 KB; at 64 tokens the same kernel as shape 13).
void launch_stream_deep(const Weights& w, const void* xq, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  if (m <= 8) launch_stream<StreamCfg<1, 1, 1, 18>>(w, xq, m, y, ldy, s);
  else if (m <= 16) launch_stream<StreamCfg<1, 1, 2, 16>>(w, xq, m, y, ldy, s);
  else if (m <= 32) launch_stream<StreamCfg<1, 1, 4, 12>>(w, xq, m, y, ldy, s);
  else launch_stream<StreamCfg<1, 1, 8, 8>>(w, xq, m, y, ldy, s);
}
// Shape 15: shape 13's block with a ring that leaves room for a second block on the SM (8 / 7 /
// 6 / 4 slots: 97-113 KB), one block per SM, so that the next kernel's blocks (launched early by
// SPENSE_STREAM_EXP bit 1) can land beside it and start their copies during its last stages.
void launch_stream_half(const Weights& w, const void* xq, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  if (m <= 8) launch_stream<StreamCfg<1, 1, 1, 8, true>>(w, xq, m, y, ldy, s);
  else if (m <= 16) launch_stream<StreamCfg<1, 1, 2, 7, true>>(w, xq, m, y, ldy, s);
  else if (m <= 32) launch_stream<StreamCfg<1, 1, 4, 6, true>>(w, xq, m, y, ldy, s);
  else launch_stream<StreamCfg<1, 1, 8, 4, true>>(w, xq, m, y, ldy, s);
}

}  // namespace

void detail::launch_stream_m(const Weights& w, const void* xq, int64_t m, void* y, int64_t ldy, cudaStream_t s) {
  if (w.tc_shape == kTcFirstStreamShape + 5) return launch_stream_half(w, xq, m, y, ldy, s);
  if (w.tc_shape == kTcFirstStreamShape + 4) return launch_stream_deep(w, xq, m, y, ldy, s);
  if (w.tc_shape == kTcFirstStreamShape) launch_stream_shape<2, 3>(w, xq, m, y, ldy, s);
  else if (w.tc_shape <= kTcFirstStreamShape + 2) launch_stream_shape<1, 4>(w, xq, m, y, ldy, s);  // 11, 12
  else launch_stream_shape<1, 8>(w, xq, m, y, ldy, s);
}

size_t tc_stream_workspace_bytes(const Weights& w, int shape, int64_t m) {
  return stream_ws_bytes(w, stream_rows(shape), tc_stream_tokens(m));
}

void stream_trace_dump(const std::string& label) {
  StreamTrace& tr = stream_trace();
  if (!tr.buf) return;
  SPENSE_CUDA_CHECK(cudaDeviceSynchronize());
  const size_t per = size_t(kStreamTraceBlocks) * kStreamEvents;
  std::vector<unsigned long long> h(per * kStreamTraceSlots);
  SPENSE_CUDA_CHECK(cudaMemcpy(h.data(), tr.buf, h.size() * sizeof(h[0]), cudaMemcpyDeviceToHost));
  struct Launch {
    double t0 = 0;                         // earliest start (ns)
    double q[kStreamEvents][3] = {};       // per event: min, median, max (us after t0)
    int blocks = 0;
  };
  std::vector<Launch> ls;
  for (int sl = 0; sl < kStreamTraceSlots; ++sl) {
    const int B = tr.blocks[sl];
    if (B <= 0) continue;
    const unsigned long long* b = h.data() + sl * per;
    Launch L;
    L.blocks = B;
    unsigned long long t0 = ~0ull;
    for (int i = 0; i < B; ++i) t0 = std::min(t0, b[i * kStreamEvents + kEvStart] ? b[i * kStreamEvents + kEvStart] : ~0ull);
    if (t0 == ~0ull) continue;
    L.t0 = double(t0);
    for (int e = 0; e < kStreamEvents; ++e) {
      std::vector<double> v;
      for (int i = 0; i < B; ++i)
        if (b[i * kStreamEvents + e]) v.push_back((double(b[i * kStreamEvents + e]) - L.t0) / 1e3);
      if (v.empty()) continue;
      std::sort(v.begin(), v.end());
      L.q[e][0] = v.front(), L.q[e][1] = v[v.size() / 2], L.q[e][2] = v.back();
    }
    ls.push_back(L);
  }
  std::sort(ls.begin(), ls.end(), [](const Launch& a, const Launch& b) { return a.t0 < b.t0; });
  static const char* names[] = {"start", "tokens", "first", "issued", "last", "end"};
  for (size_t i = 0; i < ls.size(); ++i) {
    const Launch& L = ls[i];
    std::printf("trace %s #%zu blocks %d at %+.2f us (gap %.2f)", label.c_str(), i, L.blocks,
                (L.t0 - ls[0].t0) / 1e3, i ? (L.t0 - ls[i - 1].t0) / 1e3 - ls[i - 1].q[kEvEnd][2] : 0.0);
    for (int e = 0; e < 6; ++e) std::printf(" %s %.2f/%.2f/%.2f", names[e], L.q[e][0], L.q[e][1], L.q[e][2]);
    std::printf("\n");
  }
  std::fflush(stdout);
  SPENSE_CUDA_CHECK(cudaMemset(tr.buf, 0, h.size() * sizeof(h[0])));
  std::fill(std::begin(tr.blocks), std::end(tr.blocks), 0);
  tr.next = 0;
}

}  // namespace spense::cuda::gemv
