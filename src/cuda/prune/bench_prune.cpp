// bench-prune: time the whole pruning pipeline (spense/pipeline.h) on random weights of a
// real model's shapes, on the GPU back ends or the CPU. Shared by `spense bench-prune` and
// the standalone `spense_gpu bench-prune`.
#include "spense/cuda/prune_gpu.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/ops.h"
#include "spense/cuda/bench.h"
#include "spense/cuda/runtime.h"
#include "spense/engine_plan.h"
#include "spense/error.h"
#include "spense/model.h"

namespace spense::cuda {

std::string bench_prune_usage() {
  return "usage: bench-prune [--synthetic qwen3-8b | --model DIR] [--arch qwen3] [--layers 2] [--nsamples 128]\n"
         "                   [--seqlen 2048] [--method spensegpt] [--dense-ratio 0.25] [--axis out]\n"
         "                   [--strategy saliency] [--tile 64] [--fp32-obs] [--device cuda|cpu] [--seed 0]\n"
         "                   [--fp32-hessian] [--forward-dtype f32|bf16] [--json FILE]\n"
         "Prunes the first --layers decoder blocks of a random-weight model with the shapes of --synthetic\n"
         "(tiny, qwen3-0.6b, qwen3-8b, qwen3-14b, qwen3-32b), or of the checkpoint in --model DIR (its\n"
         "layers streamed from disk as in `spense prune`), from --nsamples random windows of --seqlen\n"
         "tokens, and prints the seconds of each block, the total extrapolated to the full depth (every\n"
         "block has the same shapes), and peak GPU and host memory. Layers are produced one at a time\n"
         "(the next one generated or read in the background) and dropped once pruned. With --synthetic\n"
         "the vocabulary is cut to 4096: embeddings and the LM head are neither pruned nor run during\n"
         "calibration. --json FILE appends one JSON line with the numbers. --forward-dtype bf16 runs the\n"
         "forwards' linear products with BF16 inputs and fp32 accumulation (CPU: oneDNN; GPU: cuBLAS; as in\n"
         "`spense prune`). CPU only: --fp32-hessian forms each window's X^T X in fp32 (ssyrk) instead of fp64.\n";
}

bool parse_bench_prune_args(const std::vector<std::string>& args, BenchPruneOptions* o) {
  auto count = [](const std::string& flag, const std::string& v) { return bench_count("bench-prune", flag, v); };
  bool synthetic = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") return false;
    if (args[i] == "--fp32-obs") {
      o->prune.precision = ObsPrecision::F32;
      continue;
    }
    if (args[i] == "--fp32-hessian") {
      o->fp32_hessian = true;
      continue;
    }
    std::string k, v;
    bench_next_flag(args, i, true, "bench-prune", &k, &v);
    if (k == "--synthetic") o->preset = v, synthetic = true;
    else if (k == "--model") o->model_dir = v;
    else if (k == "--arch") o->arch = v;
    else if (k == "--layers") o->layers = count(k, v);
    else if (k == "--nsamples") o->nsamples = count(k, v);
    else if (k == "--seqlen") o->seqlen = count(k, v);
    else if (k == "--tile") o->prune.tile = count(k, v);
    else if (k == "--seed") o->seed = uint64_t(bench_count("bench-prune", k, v, 0));
    else if (k == "--json") o->json = v;
    else if (k == "--forward-dtype") {
      if (v != "f32" && v != "bf16") throw Error("bench-prune: --forward-dtype must be f32 or bf16, got '" + v + "'");
      o->linear_dtype = v == "bf16" ? MatmulDType::BF16 : MatmulDType::F32;
    }
    else if (k == "--device") {
      if (v != "cuda" && v != "cpu") throw Error("bench-prune: --device must be cuda or cpu, got '" + v + "'");
      o->device = v;
    } else if (k == "--method") {
      if (!prune_method_parse(v, &o->prune.method)) throw Error("bench-prune: unknown --method '" + v + "'");
    } else if (k == "--axis") {
      if (!spense_axis_parse(v, &o->prune.axis)) throw Error("bench-prune: --axis must be in or out");
    } else if (k == "--strategy") {
      if (!dense_strategy_parse(v, &o->prune.strategy)) throw Error("bench-prune: --strategy must be saliency or error");
    } else if (k == "--dense-ratio") {
      o->prune.dense_ratio = bench_number("bench-prune", k, v);
      if (!(o->prune.dense_ratio >= 0 && o->prune.dense_ratio <= 1))
        throw Error("bench-prune: --dense-ratio must be in [0, 1]");
    } else {
      throw Error("bench-prune: unknown flag '" + k + "' (see --help)");
    }
  }
  if (synthetic && !o->model_dir.empty()) throw Error("bench-prune: give --synthetic or --model, not both");
  if (o->fp32_hessian && o->device == "cuda")
    throw Error("bench-prune: --fp32-hessian applies to --device cpu (the GPU accumulates its Hessians in fp64)");
  return true;
}

namespace {

// GiB/s of a 512 MiB host-to-device copy from pageable memory: plain cudaMemcpy, and
// copy_to_device (pinned staging, runtime.h), best of three each.
std::pair<double, double> upload_rates() {
  const size_t bytes = size_t(512) << 20;
  std::vector<char> host(bytes, 1);
  DeviceBuffer dev(bytes);
  auto best = [&](const std::function<void()>& copy) {
    double b = 1e30;
    for (int r = 0; r < 3; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      copy();
      b = std::min(b, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return double(bytes) / double(1 << 30) / b;
  };
  const double plain = best([&] { SPENSE_CUDA_CHECK(cudaMemcpy(dev.get(), host.data(), bytes, cudaMemcpyHostToDevice)); });
  const double staged = best([&] { copy_to_device(dev.get(), host.data(), bytes); });
  return {plain, staged};
}

}  // namespace

void run_bench_prune(const BenchPruneOptions& o) {
  using Clock = std::chrono::steady_clock;
  keep_freed_memory_mapped();
  const bool from_disk = !o.model_dir.empty();
  const std::string source = from_disk ? o.model_dir : o.preset;
  ModelConfig cfg = from_disk ? config_load(o.model_dir) : model_preset(o.arch, o.preset);
  const int64_t full_layers = cfg.num_layers;
  if (o.layers > full_layers)
    throw Error("bench-prune: --layers " + std::to_string(o.layers) + " exceeds " + source + "'s " +
                std::to_string(full_layers) + " layers");
  const auto t_gen = Clock::now();
  Model model;
  if (from_disk) {
    ModelLoadOptions lo;
    lo.stream_layers = true;
    lo.max_layers = o.layers;
    lo.lm_head = false;
    model = Model::load(o.model_dir, lo);
    cfg = model.config();
    if (cfg.max_position_embeddings > 0 && cfg.max_position_embeddings < o.seqlen)
      throw Error("bench-prune: --seqlen " + std::to_string(o.seqlen) + " exceeds " + o.model_dir +
                  "'s max_position_embeddings " + std::to_string(cfg.max_position_embeddings));
  } else {
    cfg.num_layers = o.layers;
    cfg.vocab_size = 4096;
    cfg.tie_word_embeddings = true;
    if (cfg.max_position_embeddings < o.seqlen) cfg.max_position_embeddings = o.seqlen;
    model = Model::random(cfg, o.seed, /*stream_layers=*/true);
  }
  const double gen_s = std::chrono::duration<double>(Clock::now() - t_gen).count();
  std::mt19937_64 rng(o.seed + 1);
  std::uniform_int_distribution<int32_t> tok(0, int32_t(cfg.vocab_size - 1));
  std::vector<std::vector<int32_t>> windows(size_t(o.nsamples), std::vector<int32_t>(size_t(o.seqlen)));
  for (auto& w : windows)
    for (auto& t : w) t = tok(rng);

  PipelineOptions opts;
  opts.prune = o.prune;
  opts.fp32_hessian = o.fp32_hessian;
  opts.linear_dtype = o.linear_dtype;
  std::unique_ptr<PruneCompute> compute;
  std::unique_ptr<CalibrationRunner> runner;
  if (o.device == "cuda") {
    compute = make_gpu_prune_compute();
    runner = make_gpu_calibration_runner(ActivationPlacement::AUTO, o.linear_dtype);
    opts.prune.compute = compute.get();
    opts.runner = runner.get();
  }
  opts.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  std::fprintf(stderr, "bench-prune: %s shapes (hidden %lld, intermediate %lld, %lld/%lld heads), %lld of %lld layers, "
               "%lld x %lld calibration tokens, %s on %s (embedding and head %s in %.1f s; layers streamed)\n",
               source.c_str(), (long long)cfg.hidden_size, (long long)cfg.intermediate_size,
               (long long)cfg.num_heads, (long long)cfg.num_kv_heads, (long long)o.layers, (long long)full_layers,
               (long long)o.nsamples, (long long)o.seqlen, prune_method_name(o.prune.method),
               o.device == "cuda" ? gpu_device_name().c_str() : "cpu", from_disk ? "loaded" : "generated", gen_s);
  std::pair<double, double> upload{0, 0};
  if (o.device == "cuda") {
    upload = upload_rates();
    std::fprintf(stderr, "host-to-device copies of 512 MiB from pageable memory: cudaMemcpy %.1f GiB/s, "
                         "through pinned staging %.1f GiB/s\n", upload.first, upload.second);
  }
  const auto t0 = Clock::now();
  // Like `spense prune`, which writes each finished layer out: nothing packed is kept.
  const PipelineResult res = prune_model(model, windows, opts, [](const Model&, int64_t, PrunedProjection* projs) {
    for (int i = 0; i < 7; ++i) projs[i].tensor = SpenseTensor{};
  });
  const double total = std::chrono::duration<double>(Clock::now() - t0).count();
  const std::vector<double>& block_s = res.layer_seconds;
  double sum_blocks = 0;
  for (double s : block_s) sum_blocks += s;
  // The first block also pays one-time costs (handles, first allocations); the per-block figure
  // for extrapolation is the mean of the others when there are at least two. Setup: the run's
  // time outside the blocks (embedding, activation upload) plus block 0's excess.
  double per_block = block_s.empty() ? 0 : sum_blocks / double(block_s.size());
  if (block_s.size() >= 2) per_block = (sum_blocks - block_s[0]) / double(block_s.size() - 1);
  const double setup = total - sum_blocks + (block_s.empty() ? 0 : block_s[0] - per_block);
  const double extrapolated = setup + per_block * double(full_layers);
  const uint64_t peak_gpu = o.device == "cuda" ? gpu_prune_peak_bytes() : 0;
  PruneTimings sum;
  for (const auto& pp : res.projections) {
    sum.inverse_s += pp.report.time.inverse_s;
    sum.select_s += pp.report.time.select_s;
    sum.obs_s += pp.report.time.obs_s;
    sum.error_s += pp.report.time.error_s;
    sum.total_s += pp.report.time.total_s;
  }
  const double other = total - res.calib_seconds - res.prune_seconds;
  std::printf("%-6s %10s\n", "block", "seconds");
  for (size_t i = 0; i < block_s.size(); ++i) std::printf("%-6zu %10.2f\n", i, block_s[i]);
  std::printf("total %.1f s for %lld blocks (calibration %.1f s, prune_layer %.1f s); per block %.2f s; "
              "extrapolated to %lld blocks: %.1f s (%.1f min)\n",
              total, (long long)o.layers, res.calib_seconds, res.prune_seconds, per_block, (long long)full_layers,
              extrapolated, extrapolated / 60);
  std::printf("prune_layer: inverse %.1f s, tile selection %.1f s, OBS %.1f s, errors %.1f s, rest %.1f s; "
              "outside calibration and prune_layer (embedding, packing, unpacking): %.1f s\n",
              sum.inverse_s, sum.select_s, sum.obs_s, sum.error_s,
              sum.total_s - sum.inverse_s - sum.select_s - sum.obs_s - sum.error_s, other);
  std::printf("peak GPU memory in use (all processes) %.2f GB, peak host RSS %.2f GB\n", double(peak_gpu) * 1e-9,
              double(peak_rss_bytes()) * 1e-9);
  if (!o.json.empty()) {
    nlohmann::ordered_json j;
    j["preset"] = from_disk ? cfg.model_type : o.preset;
    j["source"] = from_disk ? "checkpoint " + o.model_dir : "random";
    j["device"] = o.device == "cuda" ? gpu_device_name() : "cpu";
    j["method"] = prune_method_name(o.prune.method);
    j["axis"] = spense_axis_name(o.prune.axis);
    j["strategy"] = dense_strategy_name(o.prune.strategy);
    j["dense_ratio"] = o.prune.dense_ratio;
    j["obs_precision"] = o.prune.precision == ObsPrecision::F32 ? "f32" : "f64";
    j["hessian_precision"] = o.fp32_hessian ? "f32 per window, f64 sum" : "f64";
    j["forward_dtype"] = o.linear_dtype == MatmulDType::BF16 ? "bf16" : "f32";
    j["nsamples"] = o.nsamples;
    j["seqlen"] = o.seqlen;
    j["layers_run"] = o.layers;
    j["layers_full"] = full_layers;
    j["block_seconds"] = block_s;
    j["calib_seconds"] = res.calib_seconds;
    j["prune_seconds"] = res.prune_seconds;
    j["total_seconds"] = total;
    j["per_block_seconds"] = per_block;
    j["extrapolated_seconds"] = extrapolated;
    j["prune_layer_seconds"] = {{"inverse", sum.inverse_s}, {"select", sum.select_s}, {"obs", sum.obs_s},
                                {"error", sum.error_s}, {"total", sum.total_s}};
    j["other_seconds"] = other;
    j["peak_gpu_bytes"] = peak_gpu;
    j["peak_rss_bytes"] = peak_rss_bytes();
    if (o.device == "cuda") j["upload_gib_s"] = {{"pageable", upload.first}, {"staged", upload.second}};
    std::ofstream f(o.json, std::ios::app);
    if (!f) throw Error(o.json + ": cannot open for appending");
    f << j.dump() << "\n";
  }
}

}  // namespace spense::cuda
