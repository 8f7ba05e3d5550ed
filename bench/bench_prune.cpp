// bench_prune: time to prune one layer on the CPU, by phase, with achieved GFLOP/s.
//
//   build-prune/bench_prune            4096x4096 and 11008x4096 (Llama-7B q/o and up/gate)
//   build-prune/bench_prune --small    1024x1024 and 2752x1024
//   options: --tokens N (calibration rows, default K), --threads N (OpenBLAS + OpenMP),
//            --no-fp32 (skip the fp32 OBS run), --error (also time the direct error)
//
// Phases: Hessian accumulation (dsyrk, n K^2 flops), inverse (dpotrf + dtrtri, 2/3 K^3),
// tile selection (strategy A, axis OUT), OBS pass (2 N K^2 for the block GEMMs plus the
// in-block updates, counted exactly), packing to BF16. Random W; H from random correlated X
// with outlier channels (src/prune/synth.h). The numbers go to stdout only.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <cblas.h>
#include <sys/resource.h>

#include "../src/prune/synth.h"
#include "spense/format.h"
#include "spense/prune.h"
#include "model/ops.h"

extern "C" void openblas_set_num_threads(int);
extern "C" char* openblas_get_config(void);
extern "C" int openblas_get_num_threads(void);

using namespace spense;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

std::string loadavg() {
  std::ifstream f("/proc/loadavg");
  std::string a;
  std::getline(f, a);
  return a;
}

void run_shape(int64_t N, int64_t K, const Hessian& H, double hess_s, bool fp32, bool error) {
  Matrix W(N, K);
  detail::NormalRng rng(42 + uint64_t(N));
  for (auto& w : W.data) w = 0.02 * rng.normal();
  const auto wall0 = Clock::now();
  const double cpu0 = cpu_seconds();
  std::printf("\n== layer %lld x %lld (N x K), SpenseGPT d=0.25 axis out, strategy saliency, g=64, B=128\n",
              (long long)N, (long long)K);
  std::printf("%-10s %-28s %9s %9s %9s\n", "obs", "phase", "seconds", "GFLOP", "GFLOP/s");
  const double Kd = double(K);
  const double hess_flops = double(H.n_rows) * Kd * (Kd + 1);
  std::printf("%-10s %-28s %9.3f %9.1f %9.1f\n", "-", "hessian accumulate (dsyrk)", hess_s,
              hess_flops * 1e-9, hess_flops * 1e-9 / hess_s);
  for (ObsPrecision p : {ObsPrecision::F64, ObsPrecision::F32}) {
    if (p == ObsPrecision::F32 && !fp32) continue;
    const char* pn = p == ObsPrecision::F64 ? "fp64" : "fp32";
    PruneOptions o;
    o.layer = "bench";
    o.method = PruneMethod::SPENSEGPT;
    o.axis = SpenseAxis::OUT;
    o.strategy = DenseStrategy::SALIENCY;
    o.dense_ratio = 0.25;
    o.tile = 64;
    o.precision = p;
    o.compute_error = error;
    const auto r = prune_layer(o, W, H);
    const auto& t = r.report.time;
    const double inv_flops = 2.0 / 3.0 * Kd * Kd * Kd;
    std::printf("%-10s %-28s %9.3f %9.1f %9.1f\n", pn, "inverse (dpotrf+dtrtri)", t.inverse_s,
                inv_flops * 1e-9, inv_flops * 1e-9 / t.inverse_s);
    std::printf("%-10s %-28s %9.3f %9s %9s\n", pn, "selection (saliency A)", t.select_s, "", "");
    std::printf("%-10s %-28s %9.3f %9.1f %9.1f\n", pn, "OBS pass (GEMM-batched)", t.obs_s,
                r.report.obs_flops * 1e-9, r.report.obs_flops * 1e-9 / t.obs_s);
    if (error)
      std::printf("%-10s %-28s %9.3f %9.1f %9.1f\n", pn, "error tr(E H E^T)+tr(W H W^T)", t.error_s,
                  4.0 * double(N) * Kd * Kd * 1e-9, 4.0 * double(N) * Kd * Kd * 1e-9 / t.error_s);
    const auto t0 = Clock::now();
    const auto packed = spense_pack_f64("bench", DType::BF16, N, K, r.W.data.data(), r.layout);
    const double pack_s = since(t0);
    std::printf("%-10s %-28s %9.3f %9s %9s   (%.0f MB in, %.0f MB out)\n", pn, "pack to BF16", pack_s, "", "",
                double(N) * Kd * 8 / 1e6,
                double(packed.values.size() + packed.meta.size() + packed.dense.size()) / 1e6);
    std::printf("%-10s %-28s %9.3f   (prune_layer + pack; error %.4e from %s)\n", pn, "total",
                t.total_s + pack_s, r.report.error, error ? "tr(E H E^T)" : "the OBS identity");
  }
  // On a shared machine the process may get much less than its cores: say how much it got.
  const double wall = since(wall0), cpu = cpu_seconds() - cpu0;
  std::printf("shape wall %.2f s, process CPU %.2f s = %.0f%% of %d threads' wall time\n", wall, cpu,
              100.0 * cpu / (wall * openblas_get_num_threads()), openblas_get_num_threads());
}

}  // namespace

int main(int argc, char** argv) {
  spense::ops::use_fast_blas_kernels(argv);  // may restart the process (see ops.h)
  bool small = false, fp32 = true, error = false;
  int64_t tokens = 0;
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--small") small = true;
    else if (a == "--no-fp32") fp32 = false;
    else if (a == "--error") error = true;
    else if (a == "--tokens" && i + 1 < argc) tokens = std::atoll(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench_prune [--small] [--tokens N] [--threads N] [--no-fp32] [--error]\n");
      return 2;
    }
  }
  if (threads > 0) {
    openblas_set_num_threads(threads);
    setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);
  }
  const int64_t K = small ? 1024 : 4096;
  const std::vector<int64_t> Ns = small ? std::vector<int64_t>{1024, 2752} : std::vector<int64_t>{4096, 11008};
  const int64_t n = tokens > 0 ? tokens : K;
  std::printf("bench_prune: OpenBLAS %s, %d threads; load average %s\n", openblas_get_config(),
              openblas_get_num_threads(), loadavg().c_str());
  // What plain BLAS achieves right now (the machine may be shared): a 1536^3 GEMM each.
  {
    const int m = 1536;
    std::vector<double> a(size_t(m) * m, 1.0), b(size_t(m) * m, 0.5), c(size_t(m) * m);
    std::vector<float> af(a.begin(), a.end()), bf(b.begin(), b.end()), cf(c.size());
    const double fl = 2.0 * m * m * m;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, m, m, 1, a.data(), m, b.data(), m, 0, c.data(), m);
    auto t = Clock::now();
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, m, m, 1, a.data(), m, b.data(), m, 0, c.data(), m);
    const double dg = fl / since(t) * 1e-9;
    t = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, m, m, 1, af.data(), m, bf.data(), m, 0, cf.data(), m);
    const double sg = fl / since(t) * 1e-9;
    std::printf("reference GEMM %dx%dx%d now: dgemm %.1f GFLOP/s, sgemm %.1f GFLOP/s\n", m, m, m, dg, sg);
  }
  // Calibration inputs shared by both shapes (same K).
  const auto t_gen = Clock::now();
  auto s = detail::synth_layer(1, K, n, 7, 16);
  std::printf("inputs: %lld x %lld correlated activations generated in %.2f s\n", (long long)n,
              (long long)K, since(t_gen));
  const auto t0 = Clock::now();
  HessianAccumulator acc("bench", K);
  acc.add(s.X.data(), n);
  const Hessian H = acc.finalize();
  const double hess_s = since(t0);
  s.X.clear();
  s.X.shrink_to_fit();
  for (int64_t N : Ns) run_shape(N, K, H, hess_s, fp32, error);
  return 0;
}
