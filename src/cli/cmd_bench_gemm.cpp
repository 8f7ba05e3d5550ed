// `spense bench-gemm`: dense (cuBLASLt) vs 2:4 (cuSPARSELt) vs Spense hybrid GEMMs on model
// layer shapes (src/cuda/bench_gemm.cpp does the work; the standalone spense_bench_gemm runs
// the same code). Without cuSPARSELt in the build it says so and measures dense only.
#ifdef SPENSE_HAVE_CUDA

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "spense/cuda/bench.h"

namespace spense::cli {

void register_bench_gemm(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "bench-gemm",
      "GPU GEMM benchmark: dense / 2:4 / Spense hybrid linear layers on Qwen3 layer shapes "
      "(CUDA-graph replays, CUDA-event medians, weights rotated so they stream from HBM)");
  auto o = std::make_shared<cuda::BenchGemmOptions>();
  auto ms = std::make_shared<std::vector<int64_t>>(o->ms);
  cmd->add_option("--models", o->models, "layer-shape sets: qwen3-32b, qwen3-8b")->delimiter(',')->capture_default_str();
  cmd->add_option("--layers", o->layers, "subset of qkv,o,gate_up,down (default: all)")->delimiter(',');
  cmd->add_option("--m", *ms, "token counts M")->delimiter(',')->capture_default_str();
  cmd->add_option("--dtypes", o->dtypes, "bf16, fp16, fp8 (E4M3 weights, per-token activations)")
      ->delimiter(',')->capture_default_str();
  cmd->add_option("--d", o->ds, "dense ratios for spense-out / spense-in")->delimiter(',')->capture_default_str();
  cmd->add_option("--formats", o->formats,
                  "dense, 2:4, spense-out, spense-in, spense-out-folded, spense-out-serial, spense-in-serial "
                  "(cuBLASLt / cuSPARSELt); dense-gemv, 2:4-gemv, spense-out-gemv, spense-in-gemv (our small-M kernel)")
      ->delimiter(',')->capture_default_str();
  cmd->add_option("--variant-d", o->variant_d, "dense ratio of the -folded / -serial variants")->capture_default_str();
  cmd->add_option("--tile", o->tile, "rows/columns per dense tile (multiple of 16)")->capture_default_str();
  cmd->add_option("--iters", o->iters, "timed graph replays (median)")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "untimed replays first")->capture_default_str();
  cmd->add_option("--rotate-mb", o->rotate_mb, "weights (MB) of rotated layer replicas per replay")->capture_default_str();
  cmd->add_option("--max-replicas", o->max_replicas, "cap on replicas")->capture_default_str();
  cmd->add_option("--dense-search", o->dense_search, "cuBLASLt heuristic candidates timed per M (0: first)")
      ->capture_default_str();
  cmd->add_flag("!--no-sparse-search", o->sparse_search, "use cuSPARSELt's default algorithm (no search)");
  cmd->add_flag("!--no-split-sms", o->split_sms, "hybrid: plan the dense GEMM for the whole GPU");
  cmd->add_flag("!--no-graph", o->graph, "time plain stream launches instead of graph replays");
  auto small_m = std::make_shared<std::string>(small_m_kernel_name(o->small_m_kernel));
  cmd->add_option("--small-m-kernel", *small_m,
                  "*-gemv formats, paths of our small-M kernel: auto (time them per M, keep the fastest), "
                  "cuda-cores or tensor-cores")
      ->check(CLI::IsMember({"auto", "cuda-cores", "tensor-cores"}))
      ->capture_default_str();
  cmd->add_option("--small-m-tc-shape", o->small_m_tc_shape,
                  "*-gemv formats: only this block shape of the tensor-core path (0-13; -1: time every shape; "
                  "for profiling one kernel)")
      ->capture_default_str();
  cmd->add_option("--small-m-stream-blocks", o->small_m_stream_blocks,
                  "*-gemv formats, streamed block shapes 10-13: cap on their persistent blocks (0: every resident "
                  "slot; for profiling)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_flag("--e4m3-tokens", o->e4m3_tokens,
                "*-gemv formats, FP8 on Hopper: also time the E4M3-token block shapes (tokens quantized per token, "
                "E4M3 x E4M3 warpgroup MMAs)");
  cmd->add_option("--csv", o->csv, "output CSV")->capture_default_str();
  cmd->add_option("--seed", o->seed, "random seed")->capture_default_str();
  cmd->callback([o, ms, small_m] {
    o->ms = *ms;
    o->small_m_kernel = cuda::small_m_kernel_parse(*small_m, "bench-gemm");
    cuda::run_bench_gemm(*o);  // says so itself when the build has no cuSPARSELt
  });
}

}  // namespace spense::cli

#endif  // SPENSE_HAVE_CUDA
