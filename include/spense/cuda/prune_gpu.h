// Pruning on the GPU (issue #8): the two pluggable halves of the pruning pipeline.
//  - make_gpu_prune_compute(): prune_layer's arithmetic (PruneCompute, spense/prune.h) with
//    cuSOLVER (Cholesky, triangular inverse) and cuBLAS (OBS trailing updates, errors) in fp64
//    and our warp-per-row kernel for the column-by-column OBS recursion inside a block.
//  - make_gpu_calibration_runner(): the calibration forwards (CalibrationRunner,
//    spense/pipeline.h) with cuBLAS: the linear products in fp32 SGEMM (no TF32) or, with
//    MatmulDType::BF16, on BF16-rounded inputs with fp32 accumulation (tensor cores; the
//    CPU's --forward-dtype bf16 arithmetic), kernels that follow the CPU reference operation by
//    operation, and the Hessians as fp64 SYRK on the GPU. The
//    activations stay on the GPU when they fit in 90% of its free memory beside one block's
//    needs, else in host memory (one window on the GPU at a time); see ActivationPlacement.
// The OBS column block on the GPU is 128 whatever PruneOptions::blocksize says (lazy
// batching is exact for any width; only the rounding differs). Both objects use one cuBLAS
// / cuSOLVER handle and are not thread-safe: one per thread.
// Every choice is still made by prune_layer / prune_model on the host, so the CPU and GPU
// paths differ only by floating-point rounding (tests/cuda/test_cuda_prune.cpp).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "spense/pipeline.h"
#include "spense/prune.h"

namespace spense::cuda {

std::unique_ptr<PruneCompute> make_gpu_prune_compute();
// Where the GPU runner keeps the calibration activations between blocks.
enum class ActivationPlacement : uint8_t {
  AUTO,    // on the GPU when they fit in 90% of its free memory beside the block's needs, else HOST
  DEVICE,  // on the GPU (cudaMalloc fails with a clear error if they do not fit)
  HOST,    // in host memory, one window copied to the GPU at a time
};
std::unique_ptr<CalibrationRunner> make_gpu_calibration_runner(ActivationPlacement p = ActivationPlacement::AUTO,
                                                               MatmulDType linear_dtype = MatmulDType::F32);

// Largest device memory in use (total - free, all processes) seen by the GPU pruning code
// since the process started: sampled after each of its own allocations (library workspaces
// allocated later inside cuBLAS / cuSOLVER calls are not seen).
uint64_t gpu_prune_peak_bytes();
// The device's name, for reports.
std::string gpu_device_name();

// bench-prune (`spense bench-prune`, `spense_gpu bench-prune`): the pipeline on random
// weights of a preset's shapes, timed per block.
struct BenchPruneOptions {
  std::string preset = "qwen3-8b", arch = "qwen3", device = "cuda", json;
  std::string model_dir;  // --model: stream the layers of this checkpoint instead of random ones
  int64_t layers = 2, nsamples = 128, seqlen = 2048;
  uint64_t seed = 0;
  bool fp32_hessian = false;  // CPU runner: PipelineOptions::fp32_hessian
  MatmulDType linear_dtype = MatmulDType::F32;  // both runners: precision of the linear products
  PruneOptions prune;  // method, axis, strategy, d, tile, precision
};
// False when --help was asked for (print bench_prune_usage()); throws spense::Error on bad flags.
bool parse_bench_prune_args(const std::vector<std::string>& args, BenchPruneOptions* o);
std::string bench_prune_usage();
void run_bench_prune(const BenchPruneOptions& o);

}  // namespace spense::cuda
