// The GEMM benchmark behind `spense bench-gemm` and the standalone `spense_bench_gemm`
// (src/cuda/bench_gemm.cpp): dense (cuBLASLt) vs 2:4 (cuSPARSELt) vs Spense hybrid layers
// on real model layer shapes with random weights, CUDA-event medians of CUDA-graph replays,
// each replay running R replicas of the layer (distinct weight copies, R * weight bytes >=
// rotate_mb) so that weights stream from device memory as in decoding, not from L2.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "spense/cuda/linear.h"
#include <string>
#include <vector>

namespace spense::cuda {

struct BenchGemmOptions {
  std::vector<std::string> models{"qwen3-32b", "qwen3-8b"};  // layer-shape sets
  std::vector<std::string> layers;                           // subset of qkv,o,gate_up,down (empty: all)
  std::vector<int64_t> ms{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};
  std::vector<std::string> dtypes{"bf16", "fp8"};  // bf16, fp16, fp8
  std::vector<double> ds{0.125, 0.25, 0.375};      // dense ratios of spense-out / spense-in
  // dense, 2:4, spense-out, spense-in (each d of ds; concurrent, output in original order),
  // spense-out-folded, spense-out-serial, spense-in-serial (at variant_d); dense-gemv, 2:4-gemv,
  // spense-out-gemv (each d of ds): our small-M kernel (make_gemv_linear)
  std::vector<std::string> formats{"dense", "2:4", "spense-out", "spense-in", "spense-out-folded",
                                   "spense-out-serial", "spense-in-serial"};
  double variant_d = 0.25;
  int64_t tile = 64;
  int iters = 100;          // timed graph replays (median taken)
  int warmup = 10;          // untimed replays first
  double rotate_mb = 256;   // replicas until this many MB of weights per replay (L2 is 50 MB)
  int max_replicas = 32;
  int dense_search = 8;     // cuBLASLt candidates timed per M (0: heuristic's first)
  bool sparse_search = true;
  bool split_sms = true;    // hybrid: cuBLASLt SM-count target for the dense part (LinearOptions)
  bool graph = true;        // time graph replays (else plain stream launches)
  SmallMKernel small_m_kernel = SmallMKernel::AUTO;  // *-gemv formats: LinearOptions::small_m_kernel
  int small_m_tc_shape = -1;  // *-gemv formats: LinearOptions::small_m_tc_shape (-1: every shape timed)
  int small_m_stream_blocks = 0;  // *-gemv formats: LinearOptions::small_m_stream_blocks (0: all resident)
  bool e4m3_tokens = false;   // *-gemv formats, FP8: LinearOptions::small_m_e4m3_tokens
  std::string csv = "bench/results/gemm_h100.csv";
  uint64_t seed = 1;
};

// Runs the benchmark, printing one line per measurement and a summary table to stdout and
// writing the CSV. Throws spense::Error on bad options (unknown model/layer/format/dtype).
// Without cuSPARSELt it says so and measures the dense format only.
void run_bench_gemm(const BenchGemmOptions& opts);

// For the standalone binary: parse --models a,b --layers ... --m 1,16 --dtypes ... --d ...
// --formats ... --variant-d --tile --iters --warmup --rotate-mb --dense-search --no-sparse-search
// --no-split-sms --no-graph --csv PATH --seed; throws spense::Error on unknown flags. Returns false for --help.
bool parse_bench_gemm_args(int argc, char** argv, BenchGemmOptions* opts);
std::string bench_gemm_usage();

// "bf16" / "fp16" / "fp8"; throws spense::Error prefixed with `who` otherwise.
LinearPrecision bench_precision(const std::string& s, const std::string& who);
// Splits argument i of a benchmark's flags into *key and *val ("--k v" or "--k=v"; flags that
// take no value leave *val empty), advancing i past a separate value. Throws spense::Error
// "<who>: --k needs a value" when one is missing.
void bench_next_flag(const std::vector<std::string>& args, size_t& i, bool takes_value, const std::string& who,
                     std::string* key, std::string* val);
// "a,b,,c" -> {"a", "b", "c"} (empty items dropped).
std::vector<std::string> bench_split_list(const std::string& s);
// The number in v; throws spense::Error "<who>: <flag> expects a number, got '<v>'" otherwise.
double bench_number(const std::string& who, const std::string& flag, const std::string& v);
// The integer >= min (0 or 1) in v; throws "<who>: <flag> must be a positive integer" (min 1) or
// "... a non-negative integer" (min 0) otherwise.
int64_t bench_count(const std::string& who, const std::string& flag, const std::string& v, int64_t min = 1);
// Median of timings (the upper middle element for even counts; 0 for none).
float bench_median(std::vector<float> v);

// Device-to-device copy bandwidth (GB/s, bytes read + written) of a 1 GiB cudaMemcpyAsync, median of 20.
double measure_copy_gbps(cudaStream_t s);

// The end-to-end decode benchmark behind `spense bench-decode` and the standalone
// `spense_bench_decode` (src/engine/gpu/bench_decode.cpp): a model (checkpoint or synthetic
// shapes) on the GPU engine, KV caches filled to `ctx` tokens, then `steps` graph-replayed
// decode steps per (dtype, format, batch); reports ms per step, tokens/s, weight bytes per
// step and the fraction of the copy-bandwidth roofline, and speedups over dense.
struct BenchDecodeOptions {
  std::string model;                         // checkpoint directory, or
  std::string synthetic;                     // preset name (qwen3-32b, qwen3-8b, ...)
  int64_t layers = 0;                        // synthetic: override the layer count (0: the preset's)
  std::vector<std::string> dtypes{"bf16"};   // bf16, fp8
  std::vector<std::string> formats{"dense"}; // dense, 24, spense (--compare: all three)
  std::vector<std::string> backends{"auto"}; // auto, library (cuBLASLt/cuSPARSELt), spense (small-M kernel)
  double dense_ratio = 0.25;
  std::string axis = "out";                  // spense: out or in
  int64_t tile = 64;
  std::vector<int64_t> batches{1};
  int64_t ctx = 1024;                        // KV length before the timed steps
  int steps = 64;                            // timed decode steps (median taken)
  int warmup = 8;
  bool graphs = true;
  bool sparse_search = true;
  bool pdl = true;                           // EngineOptions::pdl
  bool e4m3_tokens = true;                   // EngineOptions::e4m3_tokens
  bool kv_fp8 = false;                       // EngineOptions::kv_fp8 (--kv-cache fp8)
  int64_t kv_chunk = 0;                      // EngineOptions::decode_kv_chunk (--kv-chunk; 0: automatic)
  bool concurrent = true;                    // EngineOptions::concurrent (--hybrid-streams 1: false)
  int dense_search = 0;                      // EngineOptions::dense_search (--dense-search N)
  bool verbose = false;                      // EngineOptions::verbose (--verbose)
  bool auto_time_graphs = false;             // EngineOptions::auto_time_graphs (--auto-timing graph)
  int profile_reps = 0;                      // > 0: also Engine::profile_step per run (CSV beside csv)
  SmallMKernel small_m_kernel = SmallMKernel::AUTO;  // EngineOptions::small_m_kernel
  std::string csv = "bench/results/decode.csv";
  uint64_t seed = 0;
};
void run_bench_decode(const BenchDecodeOptions& opts);
// One parser for both front ends: argv[1..] of the subcommand. Returns false for --help.
bool parse_bench_decode_args(const std::vector<std::string>& args, BenchDecodeOptions* opts);
std::string bench_decode_usage();

}  // namespace spense::cuda
