// Checks on the GPU the wgmma conventions src/cuda/wgmma.cuh and the small-M kernel's warpgroup
// shapes assume, against a CPU product, one warpgroup, N = 16 tokens:
//   A from registers in mma.sync's per-warp fragment layout (warp w: rows 16w .. 16w + 15),
//   2:4 metadata as for mma.sp m16n8k32 (selector 0), the tokens' B tile K-major in core
//   matrices of 8 tokens x 16 bytes with the descriptor's lbo = bytes between core matrices
//   along K and sbo = along the tokens, and the accumulators in mma.sync's C layout.
// Variant 1 swaps lbo and sbo over the same bytes: if it, not variant 0, matches, the descriptor
// fields mean the other way round.
//   nvcc -std=c++17 -gencode=arch=compute_90a,code=sm_90a -I src -o /tmp/wgp tools/device/wgmma_probe.cu && /tmp/wgp
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/async_copy.cuh"
#include "cuda/wgmma.cuh"

namespace wg = spense::cuda::wgmma;
constexpr int kN = 16;

// dense == 0: A 64 x 32 2:4 (vals 64 x 16 kept, idx their positions in the group); dense == 1:
// A 64 x 16 dense (vals). B: kN tokens x 32 (or 16) columns, token-major.
__global__ void probe(const uint16_t* vals, const uint8_t* idx, const uint16_t* B, int dense, int variant, float* D) {
  __shared__ __align__(128) uint16_t bs[kN * 32];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int kc = dense ? 16 : 32;
  // Core-matrix layout: chunk q (8 columns) of token tk at 16-byte slot q * kN + tk.
  for (int i = tid; i < kN * kc; i += blockDim.x) {
    const int tk = i / kc, c = i % kc, q = c / 8;
    bs[(q * kN + tk) * 8 + c % 8] = B[tk * kc + c];
  }
  wg::fence_proxy_async_smem();
  __syncthreads();
  const int r0 = 16 * warp;
  auto v = [&](int r, int c) { return uint32_t(vals[r * 16 + c]) | (uint32_t(vals[r * 16 + c + 1]) << 16); };
  uint32_t a[4] = {v(r0 + g, 2 * t), v(r0 + g + 8, 2 * t), v(r0 + g, 2 * t + 8), v(r0 + g + 8, 2 * t + 8)};
  auto nib = [&](int r, int grp) { return uint32_t(idx[r * 16 + 2 * grp]) | (uint32_t(idx[r * 16 + 2 * grp + 1]) << 2); };
  const int p = t & 1;
  uint32_t e = 0;
  for (int q = 0; q < 4; ++q) e |= (nib(r0 + g, 4 * p + q) << (4 * q)) | (nib(r0 + g + 8, 4 * p + q) << (16 + 4 * q));
  const uint32_t lbo = kN * 16, sbo = 128;
  const uint32_t addr = spense::cuda::smem_addr(bs);
  const uint64_t desc = variant == 0 ? wg::smem_desc(addr, lbo, sbo) : wg::smem_desc(addr, sbo, lbo);
  float d[kN / 2] = {};
  wg::pin(d);
  wg::fence();
  if (dense) wg::Wgmma<kN>::dense(d, a, desc);
  else wg::Wgmma<kN>::sparse(d, a, desc, e);
  wg::commit();
  wg::wait<0>();
  wg::pin(d);
  for (int j = 0; j < kN / 8; ++j)
    for (int h = 0; h < 4; ++h) {
      const int r = r0 + g + 8 * (h >> 1), tok = 8 * j + 2 * t + (h & 1);
      D[r * kN + tok] = d[4 * j + h];
    }
}

static uint16_t bf(float f) {
  const __nv_bfloat16 b = __float2bfloat16(f);
  return *reinterpret_cast<const uint16_t*>(&b);
}
static float fl(uint16_t u) {
  uint32_t x = uint32_t(u) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

int main() {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  std::vector<uint16_t> vals(64 * 16), B(kN * 32);
  std::vector<uint8_t> idx(64 * 16);
  for (auto& x : vals) x = bf(U(rng));
  for (auto& x : B) x = bf(U(rng));
  for (int r = 0; r < 64; ++r)
    for (int grp = 0; grp < 8; ++grp) {
      static const int kPairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
      const int pr = (r * 5 + grp * 3) % 6;
      idx[r * 16 + 2 * grp] = uint8_t(kPairs[pr][0]);
      idx[r * 16 + 2 * grp + 1] = uint8_t(kPairs[pr][1]);
    }
  uint16_t *dv, *dB;
  uint8_t* di;
  float* dD;
  cudaMalloc(&dv, vals.size() * 2);
  cudaMalloc(&dB, B.size() * 2);
  cudaMalloc(&di, idx.size());
  cudaMalloc(&dD, 64 * kN * 4);
  cudaMemcpy(dv, vals.data(), vals.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(di, idx.data(), idx.size(), cudaMemcpyHostToDevice);
  int bad = 0;
  for (int dense = 0; dense < 2; ++dense) {
    const int kc = dense ? 16 : 32;
    std::vector<uint16_t> Bk(kN * kc);
    for (int tk = 0; tk < kN; ++tk)
      for (int c = 0; c < kc; ++c) Bk[tk * kc + c] = B[tk * 32 + c];
    cudaMemcpy(dB, Bk.data(), Bk.size() * 2, cudaMemcpyHostToDevice);
    std::vector<double> ref(64 * kN, 0.0);
    for (int r = 0; r < 64; ++r)
      for (int tk = 0; tk < kN; ++tk) {
        double s = 0;
        if (dense)
          for (int c = 0; c < 16; ++c) s += double(fl(vals[r * 16 + c])) * fl(Bk[tk * 16 + c]);
        else
          for (int i = 0; i < 16; ++i) s += double(fl(vals[r * 16 + i])) * fl(Bk[tk * 32 + 4 * (i / 2) + idx[r * 16 + i]]);
        ref[r * kN + tk] = s;
      }
    for (int variant = 0; variant < 2; ++variant) {
      cudaMemset(dD, 0, 64 * kN * 4);
      probe<<<1, 128>>>(dv, di, dB, dense, variant, dD);
      const cudaError_t err = cudaDeviceSynchronize();
      std::vector<float> D(64 * kN);
      cudaMemcpy(D.data(), dD, D.size() * 4, cudaMemcpyDeviceToHost);
      double num = 0, den = 0;
      for (int i = 0; i < 64 * kN; ++i) {
        num += (D[i] - ref[i]) * (D[i] - ref[i]);
        den += ref[i] * ref[i];
      }
      const double rel = std::sqrt(num / den);
      std::printf("%s variant %d (%s): %s rel err %.3g\n", dense ? "dense  m64n16k16" : "sparse m64n16k32", variant,
                  variant == 0 ? "lbo along K" : "lbo along tokens", cudaGetErrorString(err), rel);
      if (variant == 0 && !(rel < 1e-2)) bad = 1;
    }
  }
  std::printf(bad ? "WGMMA PROBE: assumed conventions WRONG\n" : "WGMMA PROBE: assumed conventions hold\n");
  return bad;
}
