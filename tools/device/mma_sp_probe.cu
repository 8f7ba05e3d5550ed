// Checks on the GPU which metadata arrangement mma.sp::ordered_metadata.m16n8k32 (BF16) expects,
// against a CPU product, for the fragment layouts src/cuda/gemv.cu assumes (A kept values and
// B as documented for mma.m16n8k16, per-quad metadata from the thread pair the selector names).
//   A: thread t of the pair holds groups 4t..4t+3 of rows g (bits 0-15) and g+8 (bits 16-31)
//   B: thread t of the pair holds all 8 groups of row g (t = 0) or of row g+8 (t = 1)
//   nvcc -arch=sm_90a -o /tmp/probe tools/device/mma_sp_probe.cu && /tmp/probe
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>

__global__ void probe(const uint16_t* vals, const uint8_t* idx, const uint16_t* B, int variant, int sel, float* D) {
  const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
  // vals: 16 rows x 16 kept; idx: 16 rows x 16 (position in the group of each kept value)
  auto v = [&](int r, int c) { return uint32_t(vals[r * 16 + c]) | (uint32_t(vals[r * 16 + c + 1]) << 16); };
  uint32_t a[4] = {v(g, 2 * t), v(g + 8, 2 * t), v(g, 2 * t + 8), v(g + 8, 2 * t + 8)};
  auto nib = [&](int r, int grp) { return uint32_t(idx[r * 16 + 2 * grp]) | (uint32_t(idx[r * 16 + 2 * grp + 1]) << 2); };
  const int p = t & 1;
  uint32_t e = 0;
  for (int q = 0; q < 4; ++q) {
    if (variant == 0) e |= (nib(g, 4 * p + q) << (4 * q)) | (nib(g + 8, 4 * p + q) << (16 + 4 * q));
    else e |= (nib(p ? g + 8 : g, q) << (4 * q)) | (nib(p ? g + 8 : g, 4 + q) << (16 + 4 * q));
  }
  uint32_t b[4];
  for (int i = 0; i < 4; ++i) {
    const int k = 2 * t + 8 * i;
    b[i] = uint32_t(B[g * 32 + k]) | (uint32_t(B[g * 32 + k + 1]) << 16);  // B stored token-major [8][32]
  }
  float d[4] = {0, 0, 0, 0};
  if (sel == 0)
    asm volatile("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, {%0,%1,%2,%3}, %12, 0;\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
  else
    asm volatile("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, {%0,%1,%2,%3}, %12, 1;\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
  // D stored [16 rows][8 tokens]
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

static uint16_t bf(float f) {
  __nv_bfloat16 b = __float2bfloat16(f);
  return *reinterpret_cast<uint16_t*>(&b);
}
static float fb(uint16_t u) {
  uint32_t x = uint32_t(u) << 16;
  float f;
  memcpy(&f, &x, 4);
  return f;
}

int main() {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> U(-1, 1);
  uint16_t vals[256], Bh[256];
  uint8_t idx[256];
  float Afull[16][32] = {};
  for (int r = 0; r < 16; ++r)
    for (int grp = 0; grp < 8; ++grp) {
      int i0 = rng() % 4, i1 = rng() % 4;
      while (i1 == i0) i1 = rng() % 4;
      if (i0 > i1) std::swap(i0, i1);
      for (int j = 0; j < 2; ++j) {
        const uint16_t b = bf(U(rng));
        vals[r * 16 + 2 * grp + j] = b;
        idx[r * 16 + 2 * grp + j] = uint8_t(j ? i1 : i0);
        Afull[r][4 * grp + (j ? i1 : i0)] = fb(b);
      }
    }
  for (int i = 0; i < 256; ++i) Bh[i] = bf(U(rng));
  float ref[16][8];
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) {
      double s = 0;
      for (int k = 0; k < 32; ++k) s += double(Afull[r][k]) * fb(Bh[n * 32 + k]);
      ref[r][n] = float(s);
    }
  uint16_t *dv, *dB;
  uint8_t* di;
  float* dD;
  cudaMalloc(&dv, 512);
  cudaMalloc(&dB, 512);
  cudaMalloc(&di, 256);
  cudaMalloc(&dD, 512);
  cudaMemcpy(dv, vals, 512, cudaMemcpyHostToDevice);
  cudaMemcpy(dB, Bh, 512, cudaMemcpyHostToDevice);
  cudaMemcpy(di, idx, 256, cudaMemcpyHostToDevice);
  for (int variant = 0; variant < 2; ++variant)
    for (int sel = 0; sel < 2; ++sel) {
      probe<<<1, 32>>>(dv, di, dB, variant, sel, dD);
      float D[128];
      const cudaError_t err = cudaMemcpy(D, dD, 512, cudaMemcpyDeviceToHost);
      double e = 0, n = 0;
      for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 8; ++c) e += std::pow(D[r * 8 + c] - ref[r][c], 2), n += std::pow(ref[r][c], 2);
      std::printf("metadata variant %c, selector %d: rel err %.3e %s\n", variant ? 'B' : 'A', sel, std::sqrt(e / n),
                  err == cudaSuccess ? "" : cudaGetErrorString(err));
    }
  return 0;
}
