// CPU fp32 kernels (see ops.h).
#include "model/ops.h"

#include "model/vmath.h"

#include <cblas.h>

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

namespace spense::ops {

void use_fast_blas_kernels(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE")) return;
  const char* core = openblas_get_corename();
  const std::string c = core ? core : "";
  if (c != "Prescott" && c != "Core2" && c != "Nehalem") return;
  const char* target = nullptr;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    target = "SkylakeX";
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    target = "Haswell";
  if (!target) return;
  // Started through the dynamic loader (ld-linux... ./spense): /proc/self/exe is the loader,
  // and re-running it with our argv would not run this program.
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return;
  exe[n] = '\0';
  const char* base = std::strrchr(exe, '/');
  if (std::strncmp(base ? base + 1 : exe, "ld-", 3) == 0) return;
  setenv("OPENBLAS_CORETYPE", target, 1);
  execv("/proc/self/exe", argv);
  // exec failed: carry on with the generic kernels (slower, same results up to rounding).
  unsetenv("OPENBLAS_CORETYPE");
}

std::string blas_description() {
  const char* config = openblas_get_config();
  const char* core = openblas_get_corename();
  return std::string(config ? config : "OpenBLAS") + ", kernels " + (core ? core : "?") + ", " +
         std::to_string(openblas_get_num_threads()) + " threads";
}


namespace {

// Y[:, n0:n1] = X W[n0:n1]^T: one single-threaded sgemm on a column slice.
void sgemm_nt_slice(const float* x, int64_t T, const float* W, int64_t n0, int64_t n1, int64_t K,
                    float* y, int64_t ldy, float beta) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(T), static_cast<int>(n1 - n0),
              static_cast<int>(K), 1.0f, x, static_cast<int>(K), W + n0 * K, static_cast<int>(K), beta,
              y + n0, static_cast<int>(ldy));
}

}  // namespace

void matmul_nt(const float* x, int64_t T, const float* W, int64_t N, int64_t K, float* y,
               float beta) {
  if (T == 0 || N == 0) return;
  const int threads = omp_get_max_threads();
  // Slices of at least 64 columns, multiples of 16 (sgemm kernels' register tiles); small
  // products stay on one thread, a parallel region costs more than they do.
  const double flops = 2.0 * static_cast<double>(T) * static_cast<double>(N) * static_cast<double>(K);
  const int64_t slices = std::min<int64_t>(threads, N / 64);
  if (slices <= 1 || flops < kParallelMinFlops) {
    sgemm_nt_slice(x, T, W, 0, N, K, y, N, beta);
    return;
  }
  const int64_t per = (N + slices - 1) / slices;
  const int64_t step = (per + 15) / 16 * 16;
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(slices))
  for (int64_t s = 0; s < slices; ++s) {
    const int64_t n0 = s * step, n1 = std::min(N, n0 + step);
    if (n0 < n1) sgemm_nt_slice(x, T, W, n0, n1, K, y, N, beta);
  }
}

void linear(const float* x, int64_t T, const Linear& L, float* y, bool accumulate, MatmulDType dtype) {
  if (T == 0) return;
  const bool bias = !L.bias.empty();
  if (dtype == MatmulDType::BF16) matmul_nt_bf16(x, T, L.weight.data(), L.out, L.in, y, accumulate ? 1.0f : 0.0f);
  else matmul_nt(x, T, L.weight.data(), L.out, L.in, y, accumulate ? 1.0f : 0.0f);
  if (bias) {
    const float* b = L.bias.data();
    const int64_t n = L.out;
#pragma omp parallel for schedule(static) if (T * n >= kParallelMinElems)
    for (int64_t t = 0; t < T; ++t) {
      float* row = y + t * n;
      for (int64_t j = 0; j < n; ++j) row[j] += b[j];
    }
  }
}

void rmsnorm(const float* x, int64_t rows, int64_t dim, const float* w, double eps, float* y) {
#pragma omp parallel for schedule(static) if (rows * dim >= kParallelMinElems)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    double ss = 0.0;
    for (int64_t j = 0; j < dim; ++j) ss += static_cast<double>(xr[j]) * xr[j];
    // HF: variance (fp32) + eps, rsqrt in fp32, x * rsqrt rounded, then weight * that.
    const float var = static_cast<float>(ss / static_cast<double>(dim));
    const float inv = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var + static_cast<float>(eps))));
    for (int64_t j = 0; j < dim; ++j) yr[j] = w[j] * (xr[j] * inv);
  }
}

void rope_tables(const std::vector<float>& inv_freq, int64_t T, std::vector<float>& cos,
                 std::vector<float>& sin) {
  const int64_t half = static_cast<int64_t>(inv_freq.size());
  cos.resize(static_cast<size_t>(T * half));
  sin.resize(static_cast<size_t>(T * half));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      // HF: freqs = inv_freq (fp32) * position (fp32), one fp32 product; cos/sin of it.
      const float ang = inv_freq[i] * static_cast<float>(t);
      cos[t * half + i] = static_cast<float>(std::cos(static_cast<double>(ang)));
      sin[t * half + i] = static_cast<float>(std::sin(static_cast<double>(ang)));
    }
  }
}

void rope_apply(float* x, int64_t T, int64_t heads, int64_t head_dim, const float* cos,
                const float* sin) {
  const int64_t half = head_dim / 2;
#pragma omp parallel for schedule(static) if (T * heads * head_dim >= kParallelMinElems)
  for (int64_t t = 0; t < T; ++t) {
    const float* c = cos + t * half;
    const float* s = sin + t * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        // x*cos + rotate_half(x)*sin, rotate_half(x) = cat(-x2, x1)
        v[i] = a * c[i] + (-b) * s[i];
        v[i + half] = b * c[i] + a * s[i];
      }
    }
  }
}

void head_rmsnorm(float* x, int64_t T, int64_t heads, int64_t head_dim, const float* w, double eps) {
  rmsnorm(x, T * heads, head_dim, w, eps, x);
}

void attention_causal(const float* q, const float* k, const float* v, int64_t T, int64_t heads,
                      int64_t kv_heads, int64_t head_dim, float* out) {
  if (T == 0) return;
  const int64_t group = heads / kv_heads;  // query heads sharing one k/v head
  const int64_t qld = heads * head_dim, kld = kv_heads * head_dim;
  // Query block of BQ positions: the group's heads are stacked into one [group*bq, hd]
  // operand so K and V are packed once per (kv head, block), and each product sees only the
  // keys the block can reach. BQ = 256 measured fastest at T = 2048, head_dim 128, group 2
  // (64: 0.7x, 512: 0.9x); the causal waste inside the diagonal block is BQ/(2T) of the work.
  // Larger groups keep about 512 stacked rows (BQ = 64 for Qwen2.5-0.5B's group of 7), so the
  // [rows, T] score block stays near the size measured best.
  const int64_t BQ = std::min<int64_t>(T, std::clamp<int64_t>(512 / group / 16 * 16, 64, 256));
  const int64_t blocks = (T + BQ - 1) / BQ;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  // Per-thread scratch kept between calls (see BlockWorkspace in model.cpp for why).
  struct Scratch {
    std::vector<float> qg, s, og, inv;
  };
  const double flops = 2.0 * static_cast<double>(T) * static_cast<double>(T) * static_cast<double>(heads * head_dim);
  // Largest blocks first (dynamic schedule) so the threads finish together.
#pragma omp parallel for schedule(dynamic, 1) if (flops >= kParallelMinFlops)
  for (int64_t job = 0; job < kv_heads * blocks; ++job) {
    const int64_t b = blocks - 1 - job / kv_heads, g = job % kv_heads;
    thread_local Scratch sc;
    auto grow = [](std::vector<float>& v, int64_t n) {
      if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
    };
    grow(sc.qg, group * BQ * head_dim);
    grow(sc.s, group * BQ * T);
    grow(sc.og, group * BQ * head_dim);
    grow(sc.inv, group * BQ);
    const int64_t i0 = b * BQ;
    const int64_t bq = std::min(BQ, T - i0);
    const int64_t nk = i0 + bq;  // keys 0..nk-1 are visible to some query of the block
    const int64_t rows = group * bq;
    // gather Q rows of the group's heads: row gi*bq + r = head g*group+gi, position i0+r
    float* Qg = sc.qg.data();
    for (int64_t gi = 0; gi < group; ++gi)
      for (int64_t r = 0; r < bq; ++r)
        std::copy_n(q + (i0 + r) * qld + (g * group + gi) * head_dim, head_dim, Qg + (gi * bq + r) * head_dim);
    float* S = sc.s.data();
    // S[rows, nk] = (Qg K^T) * scale
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(nk),
                static_cast<int>(head_dim), scale, Qg, static_cast<int>(head_dim), k + g * head_dim,
                static_cast<int>(kld), 0.0f, S, static_cast<int>(nk));
    // Unnormalised softmax: P = exp(S - rowmax) (0 past the causal edge); the division by
    // the row sum is applied to the [rows, hd] output instead of the [rows, nk] scores,
    // which saves a pass over the largest buffer. Row by row so the row stays in L1.
    float* inv_sum = sc.inv.data();
    for (int64_t row_i = 0; row_i < rows; ++row_i) {
      float* row = S + row_i * nk;
      const int64_t visible = i0 + row_i % bq + 1;  // causal: keys 0..position
      const float mx = vmath::max_value(row, visible);
      inv_sum[row_i] = 1.0f / vmath::exp_shifted_sum(row, visible, mx);
      std::fill(row + visible, row + nk, 0.0f);
    }
    // Og[rows, hd] = P[rows, nk] V[nk, hd], scattered back to each head's columns
    float* Og = sc.og.data();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(head_dim),
                static_cast<int>(nk), 1.0f, S, static_cast<int>(nk), v + g * head_dim, static_cast<int>(kld), 0.0f,
                Og, static_cast<int>(head_dim));
    for (int64_t gi = 0; gi < group; ++gi)
      for (int64_t r = 0; r < bq; ++r) {
        const float* src = Og + (gi * bq + r) * head_dim;
        float* dst = out + (i0 + r) * qld + (g * group + gi) * head_dim;
        const float inv = inv_sum[gi * bq + r];
        for (int64_t d = 0; d < head_dim; ++d) dst[d] = src[d] * inv;
      }
  }
}

void silu_mul(float* gate, const float* up, int64_t n) {
  // Chunks of 64 Ki elements (multiples of every vector width) spread over the threads.
  constexpr int64_t chunk = int64_t(1) << 16;
  const int64_t chunks = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * chunk;
    vmath::silu_mul(gate + i0, up + i0, std::min(chunk, n - i0));
  }
}

}  // namespace spense::ops
