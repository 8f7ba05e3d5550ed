// bench_forward: how close the CPU reference forward pass gets to the machine's sgemm peak.
//
// 1. Measures the sgemm peak: OpenBLAS's own multi-threaded cblas_sgemm on large square
//    fp32 matrices (best of several runs), the ceiling for a GEMM-bound forward pass.
// 2. Builds a Qwen3-0.6B-shaped random model in memory (hidden 1024, 16/8 heads, head_dim
//    128, intermediate 3072, vocab 151936, tied head; --layers to shorten from 28) and times
//    one forward pass at --seqlen tokens (default 2048): embedding, every decoder block, and
//    the LM head over all positions in row chunks (as perplexity evaluation runs it, so the
//    1.2 GB [2048 x 151936] logits matrix is never materialised).
// 3. Prints tokens/s, achieved GFLOP/s (matrix-product FLOPs of Model::forward_flops, causal
//    attention counted once) and the fraction of the sgemm peak.
//
//   build-model/bench_forward [--seqlen 2048] [--layers 28] [--peak-n 2048] [--reps 1]
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "spense/model.h"
#include "model/ops.h"

using namespace spense;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double sgemm_peak_gflops(int n, int runs) {
  std::vector<float> a(static_cast<size_t>(n) * n), b(a.size()), c(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = static_cast<float>((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    b[i] = static_cast<float>((i * 40503u) % 1000) / 1000.0f - 0.5f;
  }
  double best = 1e30;
  for (int r = 0; r < runs + 1; ++r) {  // first run warms up (thread pool, page faults)
    const auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f,
                c.data(), n);
    const double s = seconds_since(t0);
    if (r > 0) best = std::min(best, s);
  }
  return 2.0 * n * static_cast<double>(n) * n / best / 1e9;
}

int64_t arg_int(int argc, char** argv, const char* name, int64_t def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::atoll(argv[i + 1]);
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  spense::ops::use_fast_blas_kernels(argv);  // may restart the process (see ops.h)
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      std::printf(
          "bench_forward [--seqlen T (2048)] [--layers L (28)] [--peak-n N (2048)] [--reps R (1)]\n"
          "Times the CPU fp32 forward pass of a Qwen3-0.6B-shaped random model at T tokens\n"
          "against the machine's OpenBLAS sgemm peak (N x N x N).\n");
      return 0;
    }
  const int64_t T = arg_int(argc, argv, "--seqlen", 2048);
  const int64_t layers = arg_int(argc, argv, "--layers", 28);
  const int peak_n = static_cast<int>(arg_int(argc, argv, "--peak-n", 2048));
  const int reps = static_cast<int>(std::max<int64_t>(1, arg_int(argc, argv, "--reps", 1)));

  std::printf("threads: OpenMP %d, OpenBLAS %d (kernels: %s)\n", omp_get_max_threads(), openblas_get_num_threads(),
              openblas_get_corename());
  const double peak = sgemm_peak_gflops(peak_n, 3);
  std::printf("sgemm peak (OpenBLAS, %dx%dx%d, best of 3): %.1f GFLOP/s\n", peak_n, peak_n, peak_n, peak);

  ModelConfig c;
  c.arch = Arch::QWEN3;
  c.model_type = "qwen3";
  c.hidden_size = 1024;
  c.num_layers = layers;
  c.num_heads = 16;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.intermediate_size = 3072;
  c.vocab_size = 151936;
  c.max_position_embeddings = 40960;
  c.rope.theta = 1e6;
  c.qk_norm = true;
  c.tie_word_embeddings = true;
  auto t0 = Clock::now();
  const Model m = Model::random(c, 0);
  std::printf("model: Qwen3-0.6B shapes, %lld layers, %.1f M params, built in %.1f s\n",
              static_cast<long long>(layers), m.num_params() / 1e6, seconds_since(t0));

  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) ids[t] = static_cast<int32_t>((t * 7919) % c.vocab_size);
  const int64_t H = c.hidden_size, V = c.vocab_size;
  const int64_t chunk = 256;
  std::vector<float> hidden(static_cast<size_t>(T * H)), logits(static_cast<size_t>(chunk * V));

  // Where a block's time goes, from timestamps taken in the linear-input hook:
  // [start, qkv) input norm | [qkv, o) q/k/v products, q/k norm, RoPE, attention |
  // [o, gate_up) o product, residual, norm | [gate_up, down) gate/up products, SwiGLU |
  // [down, end) down product, residual.
  double seg[5] = {0, 0, 0, 0, 0};
  Clock::time_point mark;
  const LinearHook hook = [&](int64_t, LinearInput role, const float*, int64_t, int64_t) {
    const auto now = Clock::now();
    seg[static_cast<int>(role)] += std::chrono::duration<double>(now - mark).count();
    mark = now;
  };

  double best_total = 1e30, best_blocks = 0, best_head = 0;
  for (int r = 0; r < reps; ++r) {
    std::fill(seg, seg + 5, 0.0);
    const auto ta = Clock::now();
    m.embed(ids.data(), T, hidden.data());
    for (int64_t l = 0; l < layers; ++l) {
      mark = Clock::now();
      m.block_forward(l, hidden.data(), T, hook);
      seg[4] += seconds_since(mark);
    }
    const double blocks = seconds_since(ta);
    const auto tb = Clock::now();
    for (int64_t r0 = 0; r0 < T; r0 += chunk)
      m.final_norm_and_head(hidden.data() + r0 * H, std::min(chunk, T - r0), logits.data());
    const double head = seconds_since(tb);
    if (blocks + head < best_total) {
      best_total = blocks + head;
      best_blocks = blocks;
      best_head = head;
    }
  }
  // The machine may be shared: measure the peak again and keep the better of the two.
  const double peak_after = sgemm_peak_gflops(peak_n, 3);
  std::printf("sgemm peak again after the forward: %.1f GFLOP/s\n", peak_after);
  const double peak_used = std::max(peak, peak_after);
  const double flops = m.forward_flops(T);
  const double head_flops = 2.0 * T * static_cast<double>(V) * H;
  const double block_flops = flops - head_flops;
  const double gf = flops / best_total / 1e9;
  std::printf("forward T=%lld: %.2f s (blocks %.2f s = %.3f s/layer, head %.2f s)\n", static_cast<long long>(T),
              best_total, best_blocks, best_blocks / layers, best_head);
  std::printf("  blocks: %.1f GFLOP/s (%.0f%% of peak)   head: %.1f GFLOP/s (%.0f%% of peak, a pure sgemm: the\n"
              "  in-situ ceiling; blocks reach %.0f%% of it)\n",
              block_flops / best_blocks / 1e9, 100.0 * block_flops / best_blocks / 1e9 / peak_used,
              head_flops / best_head / 1e9, 100.0 * head_flops / best_head / 1e9 / peak_used,
              100.0 * (block_flops / best_blocks) / (head_flops / best_head));
  std::printf("  per layer (last rep): norm %.3f s | qkv+rope+attention %.3f s | o+norm %.3f s | gate/up+swiglu %.3f s | down %.3f s\n",
              seg[0] / layers, seg[1] / layers, seg[2] / layers, seg[3] / layers, seg[4] / layers);
  const double attn_flops = 2.0 * 2.0 * c.num_heads * c.head_dim * (static_cast<double>(T) * (T + 1) / 2);
  const double qkv_flops = 2.0 * T * static_cast<double>(H) * (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
  const double gu_flops = 2.0 * 2.0 * T * static_cast<double>(H) * c.intermediate_size;
  std::printf("  GFLOP/s per segment: qkv+attention %.1f | o %.1f | gate/up %.1f | down %.1f\n",
              (qkv_flops + attn_flops) / (seg[1] / layers) / 1e9,
              2.0 * T * static_cast<double>(H) * c.num_heads * c.head_dim / (seg[2] / layers) / 1e9,
              gu_flops / (seg[3] / layers) / 1e9, gu_flops / 2 / (seg[4] / layers) / 1e9);
  std::printf("RESULT tokens/s %.1f  GFLOP/s %.1f  fraction_of_sgemm_peak %.2f  (%.1f GFLOP per forward)\n",
              T / best_total, gf, gf / peak_used, flops / 1e9);
  return 0;
}
