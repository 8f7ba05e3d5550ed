// Does this GPU's SASS run mma.sync with E4M3 operands natively? One m16n8k32 E4M3 MMA and one
// m16n8k16 BF16 MMA in two instances of one kernel; compile for the target and read the SASS:
//   nvcc -cubin -gencode=arch=compute_90a,code=sm_90a tools/device/mma_e4m3_sass.cu -o /tmp/p.cubin
//   cuobjdump -sass /tmp/p.cubin | grep -E "Function|MMA|F2FP|F2F"
// A native E4M3 MMA shows as one QMMA; an emulated one as conversions plus HMMAs (an H100,
// 2026-12-06: 8 F2FP.F16.E4M3.UNPACK_B and 2 HMMA.16816.F32, against one HMMA.16816.F32.BF16).
#include <cstdint>

template <bool E4M3>
__global__ void one_mma(const uint32_t* a, float* d) {
  float c[4] = {0.f, 0.f, 0.f, 0.f};
  const uint32_t x0 = a[threadIdx.x], x1 = a[threadIdx.x + 32], x2 = a[threadIdx.x + 64], x3 = a[threadIdx.x + 96];
  if constexpr (E4M3)
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(x0), "r"(x1), "r"(x2), "r"(x3), "r"(x0), "r"(x1));
  else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(x0), "r"(x1), "r"(x2), "r"(x3), "r"(x0), "r"(x1));
  d[threadIdx.x] = c[0] + c[1] + c[2] + c[3];
}

template __global__ void one_mma<true>(const uint32_t*, float*);
template __global__ void one_mma<false>(const uint32_t*, float*);
