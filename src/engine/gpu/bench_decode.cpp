// End-to-end decode benchmark (include/spense/cuda/bench.h). Per dtype and format it builds
// one engine (the formats one after another, freeing the previous one, so a 32B-shaped model
// fits once at a time), and per batch size: fills the KV caches of the batch's slots to `ctx`
// random tokens, captures the decode step into a graph, replays it `warmup` times, then times
// `steps` replays back to back with an event between replays and reports the median.
// Roofline: (weight bytes + KV bytes read per step) / copy bandwidth measured at start.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <tuple>
#include <memory>

#include "spense/config.h"
#include "spense/cuda/bench.h"
#include "spense/cuda/engine.h"
#include "spense/error.h"

namespace spense::cuda {
namespace {

double to_number(const std::string& flag, const std::string& v) { return bench_number("bench-decode", flag, v); }

LinearPrecision parse_dtype(const std::string& s) {
  const LinearPrecision p = bench_precision(s, "bench-decode");
  if (p == LinearPrecision::FP16) throw Error("bench-decode: the engine runs bf16 or fp8, not fp16");
  return p;
}

struct ProfileRow {
  std::string dtype, format, backend;
  int64_t batch;
  std::string op;
  double ms, step_ms;
};

struct Row {
  std::string dtype, format, backend;
  int64_t batch;
  double ms, tok_s, weight_gb, kv_gb, gbps, roofline_frac, speedup, speedup_best;
  size_t device_bytes, weight_bytes_total;
};

}  // namespace

std::string bench_decode_usage() {
  return "usage: bench-decode (--model DIR | --synthetic PRESET) [options]\n"
         "  --model DIR          a checkpoint (dense, or pruned by spense prune); --format forces a format\n"
         "  --synthetic PRESET   random weights of a real model's shapes: " + model_preset_names() + "\n"
         "  --layers N           synthetic: use N decoder layers (default: the preset's)\n"
         "  --dtype LIST         bf16, fp8 (comma-separated; default bf16)\n"
         "  --format LIST        dense, 24, spense (default dense)\n"
         "  --compare            same as --format dense,24,spense: speedups side by side\n"
         "  --backend LIST       auto, library (cuBLASLt / cuSPARSELt), spense (our small-M kernel);\n"
         "                       auto: per layer, whichever is faster at the largest batch (default auto)\n"
         "  --auto-timing T      eager|graph: auto times the two candidates as eager launches or as a\n"
         "                       replayed CUDA graph, as a decode step runs them (default eager)\n"
         "  --dense-ratio D      spense: fraction of dense tiles (default 0.25)\n"
         "  --axis out|in|mixed  spense: tiles of output rows or input columns; mixed: out for q/k/v and\n"
         "                       gate/up, in for o and down (default out)\n"
         "  --tile G             spense: rows/columns per tile (default 64)\n"
         "  --batch LIST         batch sizes (default 1)\n"
         "  --ctx L              tokens already in each KV cache when timing starts (default 1024)\n"
         "  --steps N            timed decode steps, median reported (default 64)\n"
         "  --warmup N           untimed steps first (default 8)\n"
         "  --kv-cache bf16|fp8  KV-cache elements: bf16, or fp8 (E4M3, no scale; half the bytes)\n"
         "                       (default bf16)\n"
         "  --kv-chunk N         keys per attention block at decode (default: 64, or 256 with\n"
         "                       --kv-cache fp8 once batch x KV heads reaches 128); more than 64: each\n"
         "                       block pipelines its tiles of 64 keys, and a row has fewer splits\n"
         "  --no-graph           launch steps without CUDA graphs\n"
         "  --profile [N]        also time every operation of the step (event after each, N replays,\n"
         "                       default 16): per kind ms/step, printed and written to <csv>_profile.csv\n"
         "  --no-sparse-search   cuSPARSELt default algorithm instead of its search\n"
         "  --dense-search N     cuBLASLt: time the heuristic's first N candidates per layer and batch\n"
         "                       and keep the fastest (every format in the run; default 0: its first)\n"
         "  --no-pdl             launch our small-M kernel without programmatic dependent launch\n"
         "  --no-e4m3-tokens     FP8: our small-M kernel runs only its BF16-token shapes. By default it\n"
         "                       may also run its E4M3-token shapes (tokens quantized per token as the\n"
         "                       library FP8 GEMMs take them, E4M3 x E4M3 warpgroup MMAs; Hopper)\n"
         "  --e4m3-tokens        the default (the last of the two flags given wins)\n"
         "  --hybrid-streams N   library Spense layers: 1 runs their 2:4 and dense GEMMs one after the\n"
         "                       other on one stream, 2 on two streams with a fork and a join (default 2)\n"
         "  --small-m-kernel K   auto|cuda-cores|tensor-cores: paths of our small-M kernel; auto times\n"
         "                       them per layer and batch and keeps the fastest (default auto)\n"
         "  --verbose            per layer built (on stderr): its back end, its time alone at the largest\n"
         "                       batch (weights from device memory; eager launches, and replayed as a\n"
         "                       CUDA graph) and its plan\n"
         "  --csv PATH           results (default bench/results/decode.csv)\n"
         "  --seed S             random seed (default 0)\n";
}

bool parse_bench_decode_args(const std::vector<std::string>& args, BenchDecodeOptions* o) {
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") return false;
    if (args[i] == "--profile" || args[i].rfind("--profile=", 0) == 0) {  // optional count
      auto count = [](const std::string& v) { return static_cast<int>(bench_count("bench-decode", "--profile", v, 1)); };
      o->profile_reps = 16;
      if (args[i] != "--profile") o->profile_reps = count(args[i].substr(10));
      else if (i + 1 < args.size() && !args[i + 1].empty() && args[i + 1][0] != '-') o->profile_reps = count(args[++i]);
      continue;
    }
    const bool flag = args[i] == "--compare" || args[i] == "--no-graph" || args[i] == "--no-sparse-search" ||
                      args[i] == "--no-pdl" || args[i] == "--verbose" || args[i] == "--e4m3-tokens" ||
                      args[i] == "--no-e4m3-tokens";
    static const char* kValueFlags[] = {"--model", "--synthetic", "--layers", "--dtype", "--dtypes", "--format",
                                        "--formats", "--backend", "--backends", "--dense-ratio", "--axis", "--tile",
                                        "--batch", "--ctx", "--steps", "--warmup", "--csv", "--seed",
                                        "--small-m-kernel", "--hybrid-streams", "--kv-cache", "--kv-chunk",
                                        "--dense-search", "--auto-timing"};
    const std::string name = args[i].substr(0, args[i].find('='));
    if (!flag && std::find(std::begin(kValueFlags), std::end(kValueFlags), name) == std::end(kValueFlags))
      throw Error("bench-decode: unknown flag '" + name + "'\n" + bench_decode_usage());
    std::string a, val;
    bench_next_flag(args, i, !flag, "bench-decode", &a, &val);
    if (a == "--model") o->model = val;
    else if (a == "--synthetic") o->synthetic = val;
    else if (a == "--layers") o->layers = static_cast<int64_t>(to_number(a, val));
    else if (a == "--dtype" || a == "--dtypes") o->dtypes = bench_split_list(val);
    else if (a == "--format" || a == "--formats") o->formats = bench_split_list(val);
    else if (a == "--compare") o->formats = {"dense", "24", "spense"};
    else if (a == "--small-m-kernel") o->small_m_kernel = small_m_kernel_parse(val, "bench-decode");
    else if (a == "--backend" || a == "--backends") o->backends = bench_split_list(val);
    else if (a == "--dense-ratio") o->dense_ratio = to_number(a, val);
    else if (a == "--axis") o->axis = val;
    else if (a == "--tile") o->tile = static_cast<int64_t>(to_number(a, val));
    else if (a == "--batch") {
      o->batches.clear();
      for (const auto& t : bench_split_list(val)) o->batches.push_back(static_cast<int64_t>(to_number(a, t)));
    } else if (a == "--ctx") o->ctx = static_cast<int64_t>(to_number(a, val));
    else if (a == "--steps") o->steps = static_cast<int>(to_number(a, val));
    else if (a == "--warmup") o->warmup = static_cast<int>(to_number(a, val));
    else if (a == "--no-graph") o->graphs = false;
    else if (a == "--no-sparse-search") o->sparse_search = false;
    else if (a == "--dense-search") {
      o->dense_search = static_cast<int>(to_number(a, val));
      if (o->dense_search < 0) throw Error("bench-decode: --dense-search takes a count of candidates (0 or more)");
    }
    else if (a == "--no-pdl") o->pdl = false;
    else if (a == "--e4m3-tokens") o->e4m3_tokens = true;
    else if (a == "--no-e4m3-tokens") o->e4m3_tokens = false;
    else if (a == "--verbose") o->verbose = true;
    else if (a == "--auto-timing") {
      if (val != "eager" && val != "graph") throw Error("bench-decode: --auto-timing takes eager or graph, not '" + val + "'");
      o->auto_time_graphs = val == "graph";
    }
    else if (a == "--kv-cache") {
      if (val != "bf16" && val != "fp8") throw Error("bench-decode: --kv-cache takes bf16 or fp8, not '" + val + "'");
      o->kv_fp8 = val == "fp8";
    }
    else if (a == "--kv-chunk") {
      o->kv_chunk = static_cast<int64_t>(to_number(a, val));
      if (o->kv_chunk < 1) throw Error("bench-decode: --kv-chunk must be a positive number of keys");
    }
    else if (a == "--hybrid-streams") {
      if (val != "1" && val != "2") throw Error("bench-decode: --hybrid-streams takes 1 or 2, not '" + val + "'");
      o->concurrent = val == "2";
    }
    else if (a == "--csv") o->csv = val;
    else if (a == "--seed") o->seed = static_cast<uint64_t>(to_number(a, val));
    else throw Error("bench-decode: unknown flag '" + a + "'\n" + bench_decode_usage());
  }
  if (o->model.empty() == o->synthetic.empty())
    throw Error("bench-decode: give exactly one of --model DIR and --synthetic PRESET");
  if (o->batches.empty() || *std::min_element(o->batches.begin(), o->batches.end()) <= 0)
    throw Error("bench-decode: --batch needs positive batch sizes");
  if (o->ctx < 1 || o->steps < 1 || o->warmup < 0)
    throw Error("bench-decode: --ctx and --steps must be positive, --warmup non-negative");
  if (o->axis != "out" && o->axis != "in" && o->axis != "mixed")
    throw Error("bench-decode: --axis must be out, in or mixed, got '" + o->axis + "'");
  for (const auto& f : o->formats) {
    WeightFormat wf;
    if (!weight_format_parse(f, &wf) || wf == WeightFormat::AUTO)
      throw Error("bench-decode: unknown format '" + f + "' (dense, 24, spense)");
  }
  for (const auto& d : o->dtypes) parse_dtype(d);
  for (const auto& b : o->backends) {
    GemmBackend g;
    if (!gemm_backend_parse(b, &g)) throw Error("bench-decode: unknown backend '" + b + "' (auto, library, spense)");
  }
  return true;
}

void run_bench_decode(const BenchDecodeOptions& o) {
  Context ctx;
  Stream copy_stream;
  const double copy_gbps = measure_copy_gbps(copy_stream.get());
  ModelConfig cfg;
  if (!o.synthetic.empty()) {
    cfg = model_preset("qwen3", o.synthetic);
    if (o.layers > 0) cfg.num_layers = o.layers;
  } else {
    cfg = config_load(o.model);
  }
  std::printf("bench-decode: %s (%d SMs), copy %.0f GB/s; %s: %lld layers, hidden %lld, %lld/%lld heads, "
              "intermediate %lld, vocab %lld; ctx %lld (KV cache %s, %s keys per attention block), %d steps (median), graphs %s, PDL %s, E4M3 tokens %s, library hybrids %s\n",
              ctx.gpu_name().c_str(), ctx.props().multiProcessorCount, copy_gbps,
              o.synthetic.empty() ? o.model.c_str() : ("synthetic " + o.synthetic).c_str(),
              (long long)cfg.num_layers, (long long)cfg.hidden_size, (long long)cfg.num_heads,
              (long long)cfg.num_kv_heads, (long long)cfg.intermediate_size, (long long)cfg.vocab_size,
              (long long)o.ctx, o.kv_fp8 ? "fp8" : "bf16", o.kv_chunk ? std::to_string(o.kv_chunk).c_str() : "auto", o.steps, o.graphs ? "on" : "off", o.pdl ? "on" : "off",
              o.e4m3_tokens ? "on" : "off", o.concurrent ? "on two streams" : "serial");
  const int64_t max_b = *std::max_element(o.batches.begin(), o.batches.end());
  std::vector<std::string> formats = o.formats;
  std::stable_partition(formats.begin(), formats.end(), [](const std::string& f) { return f == "dense"; });
  std::vector<Row> rows;
  std::vector<ProfileRow> prof_rows;
  std::map<std::tuple<std::string, std::string, int64_t>, double> dense_ms;  // (dtype, backend, batch)
  std::map<std::pair<std::string, int64_t>, double> best_dense_ms;          // (dtype, batch)
  for (const auto& dt : o.dtypes) {
    for (const auto& be : o.backends)
    for (const auto& fmt : formats) {
      EngineOptions eo;
      gemm_backend_parse(be, &eo.backend);
      eo.precision = parse_dtype(dt);
      weight_format_parse(fmt, &eo.plan.format);
      eo.plan.dense_ratio = o.dense_ratio;
      eo.plan.axis = o.axis == "in" ? SpenseAxis::IN : SpenseAxis::OUT;
      eo.plan.mixed_axis = o.axis == "mixed";
      eo.plan.tile = o.tile;
      eo.max_batch = max_b;
      eo.max_ctx = o.ctx + o.warmup + o.steps + o.profile_reps + 8;
      eo.prefill_chunk = 16;  // no prefill here: keep activation buffers small
      eo.graphs = o.graphs;
      eo.sparse_search = o.sparse_search;
      eo.dense_search = o.dense_search;
      eo.verbose = o.verbose;
      eo.auto_time_graphs = o.auto_time_graphs;
      eo.small_m_kernel = o.small_m_kernel;
      eo.pdl = o.pdl;
      eo.e4m3_tokens = o.e4m3_tokens;
      eo.kv_fp8 = o.kv_fp8;
      eo.decode_kv_chunk = o.kv_chunk;
      eo.concurrent = o.concurrent;
      eo.seed = o.seed;
      // The auto backend tunes each layer for the engine's largest batch, so it gets one
      // engine per batch size; the other back ends serve every batch from one engine.
      const bool per_batch = eo.backend == GemmBackend::AUTO && o.batches.size() > 1;
      std::unique_ptr<Engine> e;
      EngineMemory mem;
      for (int64_t b : o.batches) {
        if (!e || per_batch) {
          e.reset();
          if (per_batch) eo.max_batch = b;
          e = o.synthetic.empty() ? Engine::load(ctx, o.model, eo) : Engine::synthetic(ctx, cfg, eo);
          mem = e->memory();
          std::printf("\n[%s %s %s, %lld slots] weights %.2f GB (projections %.2f GB), KV cache %.2f GB, device memory "
                      "in use %.2f GB\n%s",
                      dt.c_str(), be.c_str(), fmt.c_str(), (long long)eo.max_batch,
                      (mem.linear_weight_bytes + mem.other_weight_bytes) / 1e9, mem.linear_weight_bytes / 1e9,
                      mem.kv_cache_bytes / 1e9, mem.device_used_bytes / 1e9, e->describe().c_str());
        }
        e->fill_cache_random(b, o.ctx, o.seed + 17);
        e->prepare_step(b);
        cudaStream_t s = e->stream();
        for (int i = 0; i < o.warmup; ++i) e->step(b);
        std::vector<std::unique_ptr<Event>> ev;
        for (int i = 0; i <= o.steps; ++i) ev.push_back(std::make_unique<Event>(true));
        SPENSE_CUDA_CHECK(cudaEventRecord(ev[0]->get(), s));
        size_t kv_bytes = 0;
        for (int i = 0; i < o.steps; ++i) {
          kv_bytes += e->kv_bytes_per_step(b);
          e->step(b);
          SPENSE_CUDA_CHECK(cudaEventRecord(ev[i + 1]->get(), s));
        }
        SPENSE_CUDA_CHECK(cudaEventSynchronize(ev[o.steps]->get()));
        std::vector<float> t;
        for (int i = 0; i < o.steps; ++i) {
          float ms = 0;
          SPENSE_CUDA_CHECK(cudaEventElapsedTime(&ms, ev[i]->get(), ev[i + 1]->get()));
          t.push_back(ms);
        }
        (void)e->tokens(b);  // surfaces any asynchronous error of the steps
        Row r;
        r.dtype = dt;
        r.format = fmt;
        r.backend = be;
        r.batch = b;
        r.ms = bench_median(t);
        r.tok_s = b / (r.ms * 1e-3);
        r.weight_gb = e->weight_bytes_per_step() / 1e9;
        r.kv_gb = kv_bytes / 1e9 / o.steps;
        r.gbps = (r.weight_gb + r.kv_gb) / (r.ms * 1e-3);
        r.roofline_frac = r.gbps / copy_gbps;
        if (fmt == "dense") {
          dense_ms[{dt, be, b}] = r.ms;
          auto& best = best_dense_ms[{dt, b}];
          best = best > 0 ? std::min(best, r.ms) : r.ms;
        }
        const auto it = dense_ms.find({dt, be, b});
        r.speedup = it != dense_ms.end() ? it->second / r.ms : 0;
        r.speedup_best = 0;
        r.device_bytes = mem.device_used_bytes;
        r.weight_bytes_total = mem.linear_weight_bytes + mem.other_weight_bytes;
        std::printf("%-5s %-7s %-7s batch %-4lld %8.3f ms/step %9.1f tok/s  weights %.2f GB + KV %.3f GB per step  "
                    "%6.0f GB/s (%.2f of copy)  %s\n",
                    dt.c_str(), be.c_str(), fmt.c_str(), (long long)b, r.ms, r.tok_s, r.weight_gb, r.kv_gb, r.gbps,
                    r.roofline_frac, r.speedup > 0 ? (std::to_string(r.speedup).substr(0, 5) + "x vs dense").c_str() : "");
        std::fflush(stdout);
        rows.push_back(r);
        if (o.profile_reps > 0) {
          const auto prof = e->profile_step(b, o.profile_reps);
          double sum = 0;
          for (const auto& p : prof) sum += p.second;
          std::printf("  profile (ms/step, median of %d replays with an event after every operation; sum %.3f ms "
                      "vs %.3f plain):\n   ", o.profile_reps, sum, r.ms);
          for (const auto& p : prof) {
            std::printf(" %s %.3f (%.0f%%)", p.first.c_str(), p.second, 100 * p.second / sum);
            prof_rows.push_back({dt, fmt, be, b, p.first, p.second, r.ms});
          }
          std::printf("\n");
          std::fflush(stdout);
        }
      }
    }
  }
  // Speedups against the faster dense path of the same dtype (whichever backend won).
  for (auto& r : rows) {
    const auto it = best_dense_ms.find({r.dtype, r.batch});
    if (it != best_dense_ms.end()) r.speedup_best = it->second / r.ms;
  }
  std::printf("\nsummary: tokens/s (speedup over the fastest dense of the same dtype)\n%-6s %-8s %-7s", "dtype",
              "backend", "format");
  for (int64_t b : o.batches) std::printf(" %18s", ("batch " + std::to_string(b)).c_str());
  std::printf("\n");
  for (const auto& dt : o.dtypes)
    for (const auto& be : o.backends)
      for (const auto& fmt : formats) {
        std::printf("%-6s %-8s %-7s", dt.c_str(), be.c_str(), fmt.c_str());
        for (int64_t b : o.batches)
          for (const auto& r : rows)
            if (r.dtype == dt && r.backend == be && r.format == fmt && r.batch == b)
              std::printf(" %10.1f (%.2fx)", r.tok_s, r.speedup_best);
        std::printf("\n");
      }
  if (!o.csv.empty()) {
    const auto parent = std::filesystem::path(o.csv).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    std::ofstream f(o.csv);
    if (!f) throw Error("bench-decode: cannot write " + o.csv);
    f << "device,model,layers,dtype,backend,format,dense_ratio,axis,batch,ctx,ms_per_step,tokens_per_s,"
         "weight_gb_per_step,kv_gb_per_step,gbps,copy_gbps,roofline_frac,speedup_vs_dense_same_backend,"
         "speedup_vs_best_dense,weight_gb_total,device_gb_used,kv_cache,kv_chunk,e4m3_tokens\n";
    for (const auto& r : rows)
      f << ctx.gpu_name() << "," << (o.synthetic.empty() ? o.model : o.synthetic) << "," << cfg.num_layers << ","
        << r.dtype << "," << r.backend << "," << r.format << "," << (r.format == "spense" ? o.dense_ratio : r.format == "dense" ? 1.0 : 0.0)
        << "," << o.axis << "," << r.batch << "," << o.ctx << "," << r.ms << "," << r.tok_s << "," << r.weight_gb << ","
        << r.kv_gb << "," << r.gbps << "," << copy_gbps << "," << r.roofline_frac << "," << r.speedup << "," << r.speedup_best << ","
        << r.weight_bytes_total / 1e9 << "," << r.device_bytes / 1e9 << "," << (o.kv_fp8 ? "fp8" : "bf16") << "," << (o.kv_chunk ? std::to_string(o.kv_chunk) : "auto") << ","
        << (o.e4m3_tokens ? "on" : "off") << "\n";
    std::printf("wrote %s\n", o.csv.c_str());
    if (!prof_rows.empty()) {
      std::string pc = o.csv;
      if (pc.size() > 4 && pc.substr(pc.size() - 4) == ".csv") pc.resize(pc.size() - 4);
      pc += "_profile.csv";
      std::ofstream pf(pc);
      if (!pf) throw Error("bench-decode: cannot write " + pc);
      pf << "device,model,layers,dtype,backend,format,batch,ctx,op,ms_per_step,plain_step_ms\n";
      for (const auto& p : prof_rows)
        pf << ctx.gpu_name() << "," << (o.synthetic.empty() ? o.model : o.synthetic) << "," << cfg.num_layers << ","
           << p.dtype << "," << p.backend << "," << p.format << "," << p.batch << "," << o.ctx << "," << p.op << ","
           << p.ms << "," << p.step_ms << "\n";
      std::printf("wrote %s\n", pc.c_str());
    }
  }
}

}  // namespace spense::cuda
