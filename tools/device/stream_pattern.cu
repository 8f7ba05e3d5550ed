// How fast can the small-M kernel's block pipeline stream its weights, with no arithmetic?
// Times copy-only kernels over the bytes of a BF16 2:4 layer (kept values only) in the stored
// layouts and pipelines we could use, to tell whether the kernel's 55-73% of the copy
// bandwidth at M = 16-64 (docs/perf.md) is lost in the memory system or in the compute:
//   layout rows : row-major kept values, a stage = 128 bytes of each of the unit's 128 rows
//                 (today's layout: 128 separate 128-byte pieces, row_bytes apart)
//   layout tiled: the same stage stored as one contiguous 16 KB piece
//   engine cp   : cp.async 16-byte copies by every thread (today's pipeline)
//   engine bulk : cp.async.bulk (the copy engine) completing on an mbarrier; rows: one
//                 128-byte copy per row, tiled: one 16 KB copy per stage
//   grid unit   : one block per unit (row block x K slice), as today
//   grid pers   : persistent blocks (all resident slots), each streaming an equal, contiguous
//                 share of the flattened (unit, stage) sequence without draining between units
// Each stage also copies M token rows' stage columns (256 bytes each) from a small L2-resident
// buffer, as the kernel does. Every stage's bytes are read from shared memory and folded into
// a sink so that nothing is optimised away.
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -o /tmp/sp tools/device/stream_pattern.cu && /tmp/sp
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CK(x)                                                                                       \
  do {                                                                                              \
    cudaError_t e_ = (x);                                                                           \
    if (e_ != cudaSuccess) {                                                                        \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));       \
      std::exit(1);                                                                                 \
    }                                                                                               \
  } while (0)

constexpr int kThreads = 256, kBM = 128, kRowBytes = 128, kStageW = kBM * kRowBytes;  // 16 KB
constexpr int kTokBytes = 256;  // a token row's columns of one BF16 2:4 stage (128 columns)

struct Job {
  const uint8_t* w;   // this replica's weights
  int64_t row_bytes;  // bytes of one full weight row
  int64_t row_blocks, slices, slice_steps;
  const uint8_t* x;   // token rows, x_pitch bytes apart
  int64_t x_pitch;
  int m;              // tokens
  bool tiled;
  unsigned* sink;
};

__device__ __forceinline__ uint32_t saddr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void cp16(uint32_t d, const void* s) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(s));
}
__device__ __forceinline__ void bulk(uint32_t d, const void* s, uint32_t bytes, uint32_t bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(d),
               "l"(s), "r"(bytes), "r"(bar)
               : "memory");
}
__device__ __forceinline__ void bar_init(uint32_t bar, int n) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(n));
}
__device__ __forceinline__ void bar_expect(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void bar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n .reg .pred p;\n W: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra W;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

// Global address of 16-byte chunk c (0..1023) of global stage g (unit g / slice_steps).
__device__ __forceinline__ const uint8_t* w_chunk(const Job& j, int64_t g, int c) {
  const int64_t u = g / j.slice_steps, s = g % j.slice_steps;
  const int64_t rb = u / j.slices, sl = u % j.slices;
  const int64_t steps = j.row_bytes / kRowBytes, step = steps * sl / j.slices + s;
  const int r = c / 8, piece = c % 8;
  if (j.tiled) return j.w + ((rb * steps + step) * kBM + r) * kRowBytes + 16 * piece;
  return j.w + (rb * kBM + r) * j.row_bytes + step * kRowBytes + 16 * piece;
}
__device__ __forceinline__ const uint8_t* x_row(const Job& j, int64_t g, int tk) {
  const int64_t u = g / j.slice_steps, s = g % j.slice_steps, sl = u % j.slices;
  const int64_t steps = j.row_bytes / kRowBytes, step = steps * sl / j.slices + s;
  return j.x + tk * j.x_pitch + step * kTokBytes;
}

// Stages [g0, g1) through S slots of kStageW + m * kTokBytes bytes.
template <int S, bool BULK>
__device__ void stream(const Job& j, int64_t g0, int64_t g1, uint8_t* smem, uint64_t* bars) {
  const int tid = threadIdx.x;
  const int stage_bytes = kStageW + j.m * kTokBytes;
  const uint32_t base = saddr(smem);
  auto issue = [&](int64_t g, int slot) {
    const uint32_t dst = base + slot * stage_bytes;
    if constexpr (BULK) {
      if (tid < 32) {  // warp 0: lane 0 arms the barrier, then the lanes share the copies
        const uint32_t bar = saddr(&bars[slot]);
        if (tid == 0) bar_expect(bar, stage_bytes);
        __syncwarp();
        if (j.tiled) {
          if (tid == 0) bulk(dst, w_chunk(j, g, 0), kStageW, bar);
        } else {
          for (int r = tid; r < kBM; r += 32) bulk(dst + r * kRowBytes, w_chunk(j, g, 8 * r), kRowBytes, bar);
        }
        for (int tk = tid; tk < j.m; tk += 32) bulk(dst + kStageW + tk * kTokBytes, x_row(j, g, tk), kTokBytes, bar);
      }
    } else {
      for (int c = tid; c < kStageW / 16; c += kThreads) cp16(dst + 16 * c, w_chunk(j, g, c));
      for (int c = tid; c < j.m * kTokBytes / 16; c += kThreads)
        cp16(dst + kStageW + 16 * c, x_row(j, g, c / (kTokBytes / 16)) + 16 * (c % (kTokBytes / 16)));
      asm volatile("cp.async.commit_group;\n" ::);
    }
  };
  const int64_t n = g1 - g0;
  for (int i = 0; i < S - 1; ++i) {
    if (i < n) issue(g0 + i, i);
    else if (!BULK) asm volatile("cp.async.commit_group;\n" ::);
  }
  uint4 acc = {0, 0, 0, 0};
  for (int64_t i = 0; i < n; ++i) {
    const int slot = int(i % S);
    if constexpr (BULK) bar_wait(saddr(&bars[slot]), uint32_t((i / S) & 1));
    else asm volatile("cp.async.wait_group %0;\n" ::"n"(S - 2));
    __syncthreads();  // stage i landed for all; stage i - 1's slot is free
    if (i + S - 1 < n) issue(g0 + i + S - 1, int((i + S - 1) % S));
    else if (!BULK) asm volatile("cp.async.commit_group;\n" ::);
    const uint4* st = reinterpret_cast<const uint4*>(smem + slot * stage_bytes);
    for (int c = tid; c < stage_bytes / 16; c += kThreads) {
      const uint4 v = st[c];
      acc.x ^= v.x;
      acc.y ^= v.y;
      acc.z ^= v.z;
      acc.w ^= v.w;
    }
  }
  if ((acc.x ^ acc.y ^ acc.z ^ acc.w) == 0x9e3779b9u) atomicAdd(j.sink, 1u);  // keeps the reads
}

template <int S, bool BULK, bool PERS>
__global__ void __launch_bounds__(kThreads) stream_k(Job j) {
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ uint64_t bars[S];
  if (BULK && threadIdx.x < S) bar_init(saddr(&bars[threadIdx.x]), 1);
  if (BULK) asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  __syncthreads();
  const int64_t total = j.row_blocks * j.slices * j.slice_steps;
  if constexpr (PERS) {
    const int64_t g0 = total * blockIdx.x / gridDim.x, g1 = total * (blockIdx.x + 1) / gridDim.x;
    stream<S, BULK>(j, g0, g1, smem, bars);
  } else {
    stream<S, BULK>(j, int64_t(blockIdx.x) * j.slice_steps, int64_t(blockIdx.x + 1) * j.slice_steps, smem, bars);
  }
}

// Reference: every thread reads 4 independent 16-byte vectors per iteration, grid-stride.
__global__ void read_k(const uint4* p, int64_t n, unsigned* sink) {
  uint4 acc = {0, 0, 0, 0};
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = i + u * stride < n ? __ldcs(p + i + u * stride) : uint4{0, 0, 0, 0};
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      acc.x ^= v[u].x;
      acc.y ^= v[u].y;
      acc.z ^= v[u].z;
      acc.w ^= v[u].w;
    }
  }
  if ((acc.x ^ acc.y ^ acc.z ^ acc.w) == 0x9e3779b9u) atomicAdd(sink, 1u);
}

template <class F>
float median_us(F launch, int reps = 40) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < 5; ++i) launch(i);
  CK(cudaGetLastError());
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(a));
    launch(i);
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1000.f);
  }
  CK(cudaGetLastError());
  std::sort(t.begin(), t.end());
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return t[t.size() / 2];
}

int g_sms = 0;
uint8_t *g_w = nullptr, *g_x = nullptr;
unsigned* g_sink = nullptr;
constexpr size_t kPool = size_t(800) << 20;

template <int S, bool BULK, bool PERS>
void run(const char* layer, int64_t rows, int64_t row_bytes, int slices, int m, bool tiled) {
  auto kern = stream_k<S, BULK, PERS>;
  const int smem = S * (kStageW + m * kTokBytes);
  CK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  int per_sm = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, kThreads, smem));
  Job j{};
  j.row_bytes = row_bytes;
  j.row_blocks = rows / kBM;
  j.slices = slices;
  j.slice_steps = row_bytes / kRowBytes / slices;
  j.x = g_x;
  j.x_pitch = row_bytes * 2;  // a token row holds the layer's K columns in BF16
  j.m = m;
  j.tiled = tiled;
  j.sink = g_sink;
  const size_t bytes = size_t(rows) * row_bytes;
  const int replicas = int(std::max<size_t>(1, std::min<size_t>(3, kPool / bytes)));
  const int64_t units = j.row_blocks * slices;
  const unsigned grid = PERS ? unsigned(std::min<int64_t>(int64_t(g_sms) * per_sm, units * j.slice_steps)) : unsigned(units);
  const float us = median_us([&](int i) {
    Job ji = j;
    ji.w = g_w + size_t(i % replicas) * bytes;
    kern<<<grid, kThreads, smem>>>(ji);
  });
  std::printf("%-8s m=%-3d %-5s %-4s %-4s S=%d slices=%d blocks/SM=%d grid=%u  %8.2f us  %7.1f GB/s (weights)\n", layer,
              m, tiled ? "tiled" : "rows", BULK ? "bulk" : "cp", PERS ? "pers" : "unit", S, slices, per_sm, grid, us,
              bytes / us / 1e3);
}

template <int S>
void sweep(const char* layer, int64_t rows, int64_t row_bytes, int slices, int m) {
  for (int tiled = 0; tiled < 2; ++tiled) {
    run<S, false, false>(layer, rows, row_bytes, slices, m, tiled);
    run<S, true, false>(layer, rows, row_bytes, slices, m, tiled);
    run<S, false, true>(layer, rows, row_bytes, 1, m, tiled);
    run<S, true, true>(layer, rows, row_bytes, 1, m, tiled);
  }
}

int main() {
  cudaDeviceProp p{};
  CK(cudaGetDeviceProperties(&p, 0));
  g_sms = p.multiProcessorCount;
  std::printf("%s, %d SMs, L2 %d MB\n", p.name, g_sms, p.l2CacheSize >> 20);
  CK(cudaMalloc(&g_w, kPool));
  CK(cudaMemset(g_w, 1, kPool));
  CK(cudaMalloc(&g_x, size_t(64) * 25600 * 2));
  CK(cudaMemset(g_x, 2, size_t(64) * 25600 * 2));
  CK(cudaMalloc(&g_sink, 4));
  {
    const int64_t n = int64_t(kPool / 2 / 16);  // two halves, alternated
    int per_sm = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, read_k, 512, 0));
    const float us = median_us([&](int i) {
      read_k<<<g_sms * per_sm, 512>>>(reinterpret_cast<const uint4*>(g_w) + (i % 2) * n, n, g_sink);
    });
    std::printf("read reference: %zu MB in %.2f us = %.1f GB/s\n", (kPool / 2) >> 20, us, (kPool / 2) / us / 1e3);
  }
  // Qwen3-32B BF16 2:4 kept values: gate_up 51200 x 2560 (5120 B rows), down 5120 x 12800
  // (25600 B rows), qkv 10240 x 2560, o 5120 x 4096 (8192 B rows); slices as today's timing
  // tends to pick for the small layers (the persistent grid needs none).
  for (int m : {0, 16, 64}) {
    sweep<4>("gate_up", 51200, 5120, 1, m);
    sweep<4>("down", 5120, 25600, 4, m);
    sweep<4>("qkv", 10240, 5120, 4, m);
    sweep<4>("o", 5120, 8192, 4, m);
  }
  sweep<3>("gate_up", 51200, 5120, 1, 16);
  sweep<6>("gate_up", 51200, 5120, 1, 16);
  CK(cudaDeviceSynchronize());
  return 0;
}
