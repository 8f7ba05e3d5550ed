// CPU fp32 kernels of the reference forward pass: linear layers and attention scores go
// through cblas_sgemm, elementwise work through OpenMP loops. All threading is OpenMP: each
// thread calls a single-threaded sgemm on its own slice (see BlasSingleThread for why). Every
// function follows transformers' eager PyTorch code in operation order and fp32 rounding
// points, so the reference matches HF to ~1e-6 relative; speed comes from BLAS, not tricks.
// These are the "plain CPU twins" that CUDA kernels are tested against.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/blas_threads.h"
#include "spense/model.h"

namespace spense::ops {

using spense::BlasThreads;  // common/blas_threads.h

// OpenBLAS (the Debian pthread build) keeps its own pool of spinning threads; alternating
// its sgemm with OpenMP loops makes the two pools fight for the cores (measured 10-50x
// slowdowns on a 2-core machine). So the forward pass sets OpenBLAS to one thread for its
// duration, parallelises each product itself across OpenMP threads, and restores the previous
// setting on exit so other code (e.g. LAPACK in pruning) keeps its threads. Not re-entrant
// across threads: construct it on the calling thread, outside OpenMP regions.
struct BlasSingleThread : BlasThreads {
  BlasSingleThread() : BlasThreads(1) {}
};

// OpenBLAS's DYNAMIC_ARCH build picks its kernels from the CPU model when the library loads.
// A CPU newer than the build (Debian 12's 0.3.21 on a 5th-generation Xeon, model 207) gets the
// generic "Prescott" SSE3 kernels: sgemm 30 instead of 196 GFLOP/s on this project's 2-core
// development machine (docs/perf.md), and every CPU command 3-6x slower. Call first thing in
// main(): when the kernels are generic but the CPU has AVX-512 (or AVX2 + FMA), it sets
// OPENBLAS_CORETYPE to SkylakeX (Haswell) and re-executes the program (/proc/self/exe, same
// argv), since the choice cannot be changed after load. Does nothing when OPENBLAS_CORETYPE is
// already set (the user's choice, or the second start), when the program was started through
// the dynamic loader, or when the exec fails. Other kernels sum in another order, so CPU results
// are the same up to rounding.
void use_fast_blas_kernels(char** argv);
// "OpenBLAS <its build config>, kernels <core>, <n> threads", for --version and reports.
std::string blas_description();

// y[T, N] = x[T, K] W^T (+ beta * y) with W row-major [N, K] (the PyTorch linear layout).
// Split over N across OpenMP threads, one single-threaded sgemm per slice (call it inside a
// BlasSingleThread scope).
void matmul_nt(const float* x, int64_t T, const float* W, int64_t N, int64_t K, float* y,
               float beta = 0.0f);

// The same product with x and W rounded to BF16 (nearest even) and fp32 accumulation: through
// oneDNN (AMX / AVX-512 BF16) where bf16_matmul_onednn(), otherwise through sgemm on rounded
// copies (same arithmetic, fp32 speed; bf16_matmul.cpp). beta: 0 or 1. Call it outside OpenMP
// regions.
void matmul_nt_bf16(const float* x, int64_t T, const float* W, int64_t N, int64_t K, float* y,
                    float beta = 0.0f);
// True when matmul_nt_bf16 runs on oneDNN's BF16 kernels (built with oneDNN, CPU supported).
bool bf16_matmul_onednn();
// matmul_nt_bf16's path without oneDNN (public so that tests cover it on every machine).
void matmul_nt_bf16_sgemm(const float* x, int64_t T, const float* W, int64_t N, int64_t K, float* y,
                          float beta = 0.0f);

// y[T, L.out] = x[T, L.in] W^T + b. accumulate: y += x W^T + b (residual add fused into
// the product via beta = 1).
void linear(const float* x, int64_t T, const Linear& L, float* y, bool accumulate = false,
            MatmulDType dtype = MatmulDType::F32);

// HF RMSNorm per row: y = w * (x * rsqrt(mean(x^2) + eps)). y may alias x.
void rmsnorm(const float* x, int64_t rows, int64_t dim, const float* w, double eps, float* y);

// HF rotary tables for positions 0..T-1: cos/sin [T, head_dim/2] (the second half of HF's
// cat(freqs, freqs) repeats the first, so half is stored).
void rope_tables(const std::vector<float>& inv_freq, int64_t T, std::vector<float>& cos,
                 std::vector<float>& sin);

// Rotate x [T, heads * head_dim] in place (HF rotate_half convention: pairs (i, i + d/2)).
void rope_apply(float* x, int64_t T, int64_t heads, int64_t head_dim, const float* cos,
                const float* sin);

// Per-head RMSNorm of x [T, heads * head_dim] with weight w [head_dim] (Qwen3 q/k norm).
void head_rmsnorm(float* x, int64_t T, int64_t heads, int64_t head_dim, const float* w, double eps);

// Causal grouped-query attention, positions 0..T-1, scale 1/sqrt(head_dim):
// q [T, heads*hd], k/v [T, kv_heads*hd] -> out [T, heads*hd]. Per head and block of
// queries, scores and the weighted sum of values are two sgemm calls over only the keys the
// block can see; softmax in fp32 as HF does. (head, block) pairs are spread over OpenMP
// threads, each with its own score buffer.
void attention_causal(const float* q, const float* k, const float* v, int64_t T, int64_t heads,
                      int64_t kv_heads, int64_t head_dim, float* out);

// gate[i] = silu(gate[i]) * up[i] (SwiGLU).
void silu_mul(float* gate, const float* up, int64_t n);

// Below these sizes work runs on the calling thread: waking the OpenMP team costs ~10 us on
// an idle machine, and a full scheduler slice (ms) when the cores are oversubscribed, where
// 2 threads on tiny shapes measured 10x slower than 1. Roughly 0.5 ms of serial work each.
inline constexpr int64_t kParallelMinElems = 1 << 17;  // elementwise loops
inline constexpr double kParallelMinFlops = 2e7;       // sgemm-based kernels

// Uninitialised float buffer (std::vector would zero-fill large activations needlessly).
struct Buffer {
  explicit Buffer(size_t n) : p(n ? new float[n] : nullptr) {}
  ~Buffer() { delete[] p; }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  float* get() const { return p; }
  float* p;
};

}  // namespace spense::ops
