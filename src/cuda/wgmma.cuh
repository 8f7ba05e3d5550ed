// Hopper warpgroup MMAs (wgmma, sm_90a) for the small-M kernel's warpgroup block shapes
// (src/cuda/gemv_tc.cuh): the weights' A fragments come from registers (the same per-warp layout as
// mma.sync's m16n8k16 / mma.sp's m16n8k32 A, warp w of the warpgroup holding rows 16w..16w+15),
// the tokens' B tile from shared memory through a matrix descriptor, and the 64 x N fp32
// accumulators stay in registers in mma.sync's C layout (thread: rows g, g + 8 of its warp's 16,
// tokens 8j + 2t, 8j + 2t + 1 in d[4j .. 4j + 3]). Why: with mma.sync every warp loads the whole
// token tile from shared memory per k-step, four times per warpgroup; wgmma reads it once per
// warpgroup and issues one instruction where mma.sync needs N / 8.
// The asm bodies exist only in sm_90a code (__CUDA_ARCH_FEAT_SM90_ALL); the host launches the
// warpgroup shapes only where gemv::tc_wgmma_ok() says so (an sm_90 GPU, sm_90a code built).
#pragma once
#include <cstdint>

namespace spense::cuda::wgmma {

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SPENSE_WGMMA 1
#else
#define SPENSE_WGMMA 0
#endif

// Shared-memory matrix descriptor (PTX ISA, "matrix descriptor" of wgmma), no swizzle: the
// matrix is made of 8-row x 16-byte core matrices, each 128 contiguous bytes; lbo = bytes
// between core matrices adjacent along K, sbo = bytes between core matrices adjacent along the
// 8-row (M or N) dimension. Fields in 16-byte units: start address bits 0-13, lbo 16-29, sbo
// 32-45; base offset 0 and layout type 0 (no swizzle) in the high bits.
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t((lbo >> 4) & 0x3FFF) << 16) |
         (uint64_t((sbo >> 4) & 0x3FFF) << 32);
}

// The same for a K-major tile stored with the TMA's 128-byte swizzle (16-byte chunk c of row r at
// chunk c ^ (r % 8); 8-row groups of 1024 bytes, 1024-byte aligned): layout type 1 (bits 62-63),
// stride between 8-row groups 1024 bytes, the leading offset unused. A k-step further along K
// starts `addr` that many bytes further into the 128-byte rows.
__device__ __forceinline__ uint64_t smem_desc_sw128(uint32_t addr) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}

// Orders this thread's earlier register writes (A fragments, accumulators) before the wgmmas
// that read them.
__device__ __forceinline__ void fence() {
#if SPENSE_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void commit() {
#if SPENSE_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
// Waits until at most N of this warpgroup's committed wgmma groups are in flight.
template <int N>
__device__ __forceinline__ void wait() {
#if SPENSE_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// Makes this thread's generic-proxy writes to shared memory (cp.async, st.shared) visible to the
// async proxy that wgmma reads B through.
__device__ __forceinline__ void fence_proxy_async_smem() {
#if SPENSE_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// Keeps the compiler from moving accumulator reads or writes across the asynchronous MMAs.
template <int R>
__device__ __forceinline__ void pin(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// Wgmma<N>: the m64nNk32 2:4 (sparse) and m64nNk16 dense BF16 MMAs with A from registers, B
// K-major (not transposed), fp32 accumulation (scale-d 1: d += A B). Sparse metadata e: as
// mma.sp's m16n8k32 for the thread's warp (sparsity selector 0).
// sparse_e4m3 / dense_e4m3: the E4M3 x E4M3 ones (m64nNk64 2:4, m64nNk32 dense; E4M3 runs
// natively on Hopper only through wgmma). Their A fragments hold the same bytes as the BF16
// ones (per warp: rows g, g + 8, bytes 4t.. and 16 + 4t.. of a 32-byte k-step), so ldmatrix
// loads both; 8-bit sparse metadata covers 64 columns per row, all four threads of a quad
// supplying 32 bits (gemv_tc.cuh, meta_frag_e4m3).
// sparse_e4m3_ss / dense_e4m3_ss: the E4M3 ones with A from shared memory too (a: smem_desc_sw128
// of the kept 64 x 32 bytes of the k-step) and scale_d 0 (d = A B: a new sum starts without the
// accumulators being zeroed by other instructions, which would make ptxas wait for the wgmmas in
// flight) or 1 (d += A B).
template <int N>
struct Wgmma;

#if SPENSE_WGMMA
template <>
struct Wgmma<8> {
  // d (64 x 8, fp32) += A (64 x 32, 2:4: the kept 64 x 16 in registers) * B (32 x 8, shared memory).
  static __device__ __forceinline__ void sparse(float (&d)[4], const uint32_t (&a)[4], uint64_t b, uint32_t e) {
    asm volatile(
        "wgmma.mma_async.sp.sync.aligned.m64n8k32.f32.bf16.bf16 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, %8, %9, 0, 1, 1, 1, 0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(e));
  }
  // d (64 x 8) += A (64 x 16, registers) * B (16 x 8, shared memory).
  static __device__ __forceinline__ void dense(float (&d)[4], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, %8, 1, 1, 1, 0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
  }
  // d (64 x 8, fp32) += A (64 x 64 E4M3, 2:4: the kept 64 x 32 in registers) * B (64 x 8 E4M3, shared memory).
  static __device__ __forceinline__ void sparse_e4m3(float (&d)[4], const uint32_t (&a)[4], uint64_t b, uint32_t e) {
    asm volatile(
        "wgmma.mma_async.sp.sync.aligned.m64n8k64.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, %8, %9, 0, 1, 1, 1;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(e));
  }
  // d (64 x 8) += A (64 x 32 E4M3, registers) * B (32 x 8 E4M3, shared memory).
  static __device__ __forceinline__ void dense_e4m3(float (&d)[4], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n8k32.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, %8, 1, 1, 1;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
  }
  static __device__ __forceinline__ void sparse_e4m3_ss(float (&d)[4], uint64_t a, uint64_t b, uint32_t e,
                                                        uint32_t scale_d) {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.u32 p, %7, 0;\n"
        "wgmma.mma_async.sp.sync.aligned.m64n8k64.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3}, %4, %5, %6, 0, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "l"(a), "l"(b), "r"(e), "r"(scale_d));
  }
  static __device__ __forceinline__ void dense_e4m3_ss(float (&d)[4], uint64_t a, uint64_t b, uint32_t scale_d) {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.u32 p, %6, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n8k32.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3}, %4, %5, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "l"(a), "l"(b), "r"(scale_d));
  }
};

template <>
struct Wgmma<16> {
  // d (64 x 16, fp32) += A (64 x 32, 2:4: the kept 64 x 16 in registers) * B (32 x 16, shared memory).
  static __device__ __forceinline__ void sparse(float (&d)[8], const uint32_t (&a)[4], uint64_t b, uint32_t e) {
    asm volatile(
        "wgmma.mma_async.sp.sync.aligned.m64n16k32.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, %13, 0, 1, 1, 1, 0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(e));
  }
  // d (64 x 16) += A (64 x 16, registers) * B (16 x 16, shared memory).
  static __device__ __forceinline__ void dense(float (&d)[8], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, 1, 1, 1, 0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
  }
  // d (64 x 16, fp32) += A (64 x 64 E4M3, 2:4: the kept 64 x 32 in registers) * B (64 x 16 E4M3, shared memory).
  static __device__ __forceinline__ void sparse_e4m3(float (&d)[8], const uint32_t (&a)[4], uint64_t b, uint32_t e) {
    asm volatile(
        "wgmma.mma_async.sp.sync.aligned.m64n16k64.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, %13, 0, 1, 1, 1;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(e));
  }
  // d (64 x 16) += A (64 x 32 E4M3, registers) * B (32 x 16 E4M3, shared memory).
  static __device__ __forceinline__ void dense_e4m3(float (&d)[8], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n16k32.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, 1, 1, 1;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
  }
  static __device__ __forceinline__ void sparse_e4m3_ss(float (&d)[8], uint64_t a, uint64_t b, uint32_t e,
                                                        uint32_t scale_d) {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.u32 p, %11, 0;\n"
        "wgmma.mma_async.sp.sync.aligned.m64n16k64.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, %10, 0, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "l"(a), "l"(b), "r"(e), "r"(scale_d));
  }
  static __device__ __forceinline__ void dense_e4m3_ss(float (&d)[8], uint64_t a, uint64_t b, uint32_t scale_d) {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.u32 p, %10, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k32.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "l"(a), "l"(b), "r"(scale_d));
  }
};

template <>
struct Wgmma<32> {
  // d (64 x 32, fp32) += A (64 x 32, 2:4: the kept 64 x 16 in registers) * B (32 x 32, shared memory).
  static __device__ __forceinline__ void sparse(float (&d)[16], const uint32_t (&a)[4], uint64_t b, uint32_t e) {
    asm volatile(
        "wgmma.mma_async.sp.sync.aligned.m64n32k32.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, %21, 0, 1, 1, 1, 0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(e));
  }
  // d (64 x 32) += A (64 x 16, registers) * B (16 x 32, shared memory).
  static __device__ __forceinline__ void dense(float (&d)[16], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, 1, 1, 1, 0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
  }
  // d (64 x 32, fp32) += A (64 x 64 E4M3, 2:4: the kept 64 x 32 in registers) * B (64 x 32 E4M3, shared memory).
  static __device__ __forceinline__ void sparse_e4m3(float (&d)[16], const uint32_t (&a)[4], uint64_t b, uint32_t e) {
    asm volatile(
        "wgmma.mma_async.sp.sync.aligned.m64n32k64.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, %21, 0, 1, 1, 1;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(e));
  }
  // d (64 x 32) += A (64 x 32 E4M3, registers) * B (32 x 32 E4M3, shared memory).
  static __device__ __forceinline__ void dense_e4m3(float (&d)[16], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n32k32.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, 1, 1, 1;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
  }
  static __device__ __forceinline__ void sparse_e4m3_ss(float (&d)[16], uint64_t a, uint64_t b, uint32_t e,
                                                        uint32_t scale_d) {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.u32 p, %19, 0;\n"
        "wgmma.mma_async.sp.sync.aligned.m64n32k64.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, %18, 0, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "l"(a), "l"(b), "r"(e), "r"(scale_d));
  }
  static __device__ __forceinline__ void dense_e4m3_ss(float (&d)[16], uint64_t a, uint64_t b, uint32_t scale_d) {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.u32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k32.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "l"(a), "l"(b), "r"(scale_d));
  }
};

template <>
struct Wgmma<64> {
  // d (64 x 64, fp32) += A (64 x 32, 2:4: the kept 64 x 16 in registers) * B (32 x 64, shared memory).
  static __device__ __forceinline__ void sparse(float (&d)[32], const uint32_t (&a)[4], uint64_t b, uint32_t e) {
    asm volatile(
        "wgmma.mma_async.sp.sync.aligned.m64n64k32.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, %37, 0, 1, 1, 1, 0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(e));
  }
  // d (64 x 64) += A (64 x 16, registers) * B (16 x 64, shared memory).
  static __device__ __forceinline__ void dense(float (&d)[32], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, 1, 1, 1, 0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
  }
  // d (64 x 64, fp32) += A (64 x 64 E4M3, 2:4: the kept 64 x 32 in registers) * B (64 x 64 E4M3, shared memory).
  static __device__ __forceinline__ void sparse_e4m3(float (&d)[32], const uint32_t (&a)[4], uint64_t b, uint32_t e) {
    asm volatile(
        "wgmma.mma_async.sp.sync.aligned.m64n64k64.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, %37, 0, 1, 1, 1;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(e));
  }
  // d (64 x 64) += A (64 x 32 E4M3, registers) * B (32 x 64 E4M3, shared memory).
  static __device__ __forceinline__ void dense_e4m3(float (&d)[32], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, 1, 1, 1;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
  }
  static __device__ __forceinline__ void sparse_e4m3_ss(float (&d)[32], uint64_t a, uint64_t b, uint32_t e,
                                                        uint32_t scale_d) {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.u32 p, %35, 0;\n"
        "wgmma.mma_async.sp.sync.aligned.m64n64k64.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, %34, 0, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(a), "l"(b), "r"(e), "r"(scale_d));
  }
  static __device__ __forceinline__ void dense_e4m3_ss(float (&d)[32], uint64_t a, uint64_t b, uint32_t scale_d) {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.u32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(a), "l"(b), "r"(scale_d));
  }
};

#else
template <int N>
struct Wgmma {
  template <int R>
  static __device__ __forceinline__ void sparse(float (&)[R], const uint32_t (&)[4], uint64_t, uint32_t) {
#ifdef __CUDA_ARCH__
    __trap();
#endif
  }
  template <int R>
  static __device__ __forceinline__ void dense(float (&)[R], const uint32_t (&)[4], uint64_t) {
#ifdef __CUDA_ARCH__
    __trap();
#endif
  }
  template <int R>
  static __device__ __forceinline__ void sparse_e4m3(float (&)[R], const uint32_t (&)[4], uint64_t, uint32_t) {
#ifdef __CUDA_ARCH__
    __trap();
#endif
  }
  template <int R>
  static __device__ __forceinline__ void dense_e4m3(float (&)[R], const uint32_t (&)[4], uint64_t) {
#ifdef __CUDA_ARCH__
    __trap();
#endif
  }
  template <int R>
  static __device__ __forceinline__ void sparse_e4m3_ss(float (&)[R], uint64_t, uint64_t, uint32_t, uint32_t) {
#ifdef __CUDA_ARCH__
    __trap();
#endif
  }
  template <int R>
  static __device__ __forceinline__ void dense_e4m3_ss(float (&)[R], uint64_t, uint64_t, uint32_t) {
#ifdef __CUDA_ARCH__
    __trap();
#endif
  }
};
#endif

}  // namespace spense::cuda::wgmma
