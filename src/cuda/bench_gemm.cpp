// GEMM benchmark (include/spense/cuda/bench.h). For each model layer shape and precision it
// builds every requested format once from one random weight matrix (2:4 pruned by magnitude
// where the format needs it, quantized per channel for FP8), then for each M: prepares plans,
// captures R replicas' forwards into one CUDA graph, replays it `warmup` times and then `iters`
// times back to back with an event between replays, and reports the median replay time / R.
// Speedups are against the dense format of the same precision measured in the same run.
// Bandwidth: weight bytes / time, and its fraction of a large device-to-device copy measured at
// start (bytes read + written / time, the usual copy-bandwidth convention).
#include "spense/cuda/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "gemm_core.h"
#include "spense/cuda/kernels.h"
#include "spense/cuda/linear.h"
#include "spense/error.h"

namespace spense::cuda {
namespace {

struct LayerShape {
  std::string layer;
  int64_t n, k;
};

std::vector<LayerShape> model_shapes(const std::string& model) {
  if (model == "qwen3-32b")
    return {{"qkv", 10240, 5120}, {"o", 5120, 8192}, {"gate_up", 51200, 5120}, {"down", 5120, 25600}};
  if (model == "qwen3-8b")
    return {{"qkv", 6144, 4096}, {"o", 4096, 4096}, {"gate_up", 24576, 4096}, {"down", 4096, 12288}};
  throw Error("bench-gemm: unknown model '" + model + "' (known: qwen3-32b, qwen3-8b)");
}

struct Format {
  std::string label;  // CSV "format"
  bool dense = false, sparse24 = false;
  HybridAxis axis = HybridAxis::OUT;
  double d = 0;
  bool concurrent = true, folded = false;
  bool gemv = false;  // our small-M kernel (make_gemv_linear) instead of the libraries
};

std::vector<Format> expand_formats(const BenchGemmOptions& o) {
  std::vector<Format> v;
  for (const std::string& f : o.formats) {
    if (f == "dense") v.push_back({"dense", true, false});
    else if (f == "2:4" || f == "24") v.push_back({"2:4", false, true});
    else if (f == "dense-gemv" || f == "2:4-gemv") {
      Format x{f, f == "dense-gemv", f == "2:4-gemv"};
      x.gemv = true;
      v.push_back(x);
    } else if (f == "spense-out-gemv" || f == "spense-in-gemv") {
      for (double d : o.ds) {
        Format x{f};
        x.axis = f == "spense-out-gemv" ? HybridAxis::OUT : HybridAxis::IN;
        x.d = d;
        x.gemv = true;
        v.push_back(x);
      }
    }
    else if (f == "spense-out" || f == "spense-in") {
      for (double d : o.ds) {
        Format x{f};
        x.axis = f == "spense-out" ? HybridAxis::OUT : HybridAxis::IN;
        x.d = d;
        v.push_back(x);
      }
    } else if (f == "spense-out-folded" || f == "spense-out-serial" || f == "spense-in-serial") {
      Format x{f};
      x.axis = f == "spense-in-serial" ? HybridAxis::IN : HybridAxis::OUT;
      x.d = o.variant_d;
      x.folded = f == "spense-out-folded";
      x.concurrent = f != "spense-out-serial" && f != "spense-in-serial";
      v.push_back(x);
    } else {
      throw Error("bench-gemm: unknown format '" + f +
                  "' (known: dense, 2:4, spense-out, spense-in, spense-out-folded, spense-out-serial, "
                  "spense-in-serial, dense-gemv, 2:4-gemv, spense-out-gemv, spense-in-gemv)");
    }
  }
  // The dense baseline must be measured first for speedups.
  std::stable_partition(v.begin(), v.end(), [](const Format& f) { return f.dense; });
  return v;
}


// Median time of one forward (us), replaying `reps` back to back.
float time_forward(std::vector<std::unique_ptr<Linear>>& reps, const void* x, void* y, int64_t m,
                   const BenchGemmOptions& o, cudaStream_t s) {
  for (auto& r : reps) r->prepare(m);
  GraphExec g;
  auto enqueue = [&] {
    for (auto& r : reps) r->forward(x, y, m, s);
  };
  if (o.graph) g.capture(s, [&](cudaStream_t) { enqueue(); });
  auto once = [&] {
    if (o.graph) g.launch(s);
    else enqueue();
  };
  for (int i = 0; i < o.warmup; ++i) once();
  SPENSE_CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<std::unique_ptr<Event>> ev;
  for (int i = 0; i <= o.iters; ++i) ev.push_back(std::make_unique<Event>(true));
  SPENSE_CUDA_CHECK(cudaEventRecord(ev[0]->get(), s));
  for (int i = 0; i < o.iters; ++i) {
    once();
    SPENSE_CUDA_CHECK(cudaEventRecord(ev[i + 1]->get(), s));
  }
  SPENSE_CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<float> t;
  for (int i = 0; i < o.iters; ++i) {
    float ms;
    SPENSE_CUDA_CHECK(cudaEventElapsedTime(&ms, ev[i]->get(), ev[i + 1]->get()));
    t.push_back(ms * 1000.f);
  }
  return bench_median(t) / static_cast<float>(reps.size());
}

struct Row {
  std::string model, layer, dtype;
  int64_t n, k;
  Format fmt;
  int64_t m;
  float us;
  size_t wbytes;
  int replicas;
  std::string plan;
  double speedup = 0;
};

std::string fmt_d(double d) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3f", d);
  return b;
}

}  // namespace

LinearPrecision bench_precision(const std::string& s, const std::string& who) {
  if (s == "bf16") return LinearPrecision::BF16;
  if (s == "fp16") return LinearPrecision::FP16;
  if (s == "fp8") return LinearPrecision::FP8;
  throw Error(who + ": unknown dtype '" + s + "' (known: bf16, fp16, fp8)");
}

void bench_next_flag(const std::vector<std::string>& args, size_t& i, bool takes_value, const std::string& who,
                     std::string* key, std::string* val) {
  *key = args[i];
  val->clear();
  if (!takes_value) return;
  const size_t eq = key->find('=');
  if (eq != std::string::npos) {
    *val = key->substr(eq + 1);
    key->resize(eq);
  } else if (i + 1 < args.size()) {
    *val = args[++i];
  } else {
    throw Error(who + ": " + *key + " needs a value");
  }
}

std::vector<std::string> bench_split_list(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string t;
  while (std::getline(ss, t, ','))
    if (!t.empty()) v.push_back(t);
  return v;
}

double bench_number(const std::string& who, const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end) throw Error(who + ": " + flag + " expects a number, got '" + v + "'");
  return d;
}

int64_t bench_count(const std::string& who, const std::string& flag, const std::string& v, int64_t min) {
  const double d = bench_number(who, flag, v);
  if (d < double(min) || d != static_cast<double>(static_cast<int64_t>(d)))
    throw Error(who + ": " + flag + " must be a " + (min >= 1 ? "positive" : "non-negative") + " integer");
  return static_cast<int64_t>(d);
}

float bench_median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.f : v[v.size() / 2];
}

double measure_copy_gbps(cudaStream_t s) {
  const size_t bytes = size_t(1) << 30;
  DeviceBuffer a(bytes), b(bytes);
  fill_random(a.get(), DType::F32, bytes / 4, 3, 1.f, s);
  Event e0(true), e1(true);
  std::vector<float> t;
  for (int i = 0; i < 25; ++i) {
    SPENSE_CUDA_CHECK(cudaEventRecord(e0.get(), s));
    SPENSE_CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, s));
    SPENSE_CUDA_CHECK(cudaEventRecord(e1.get(), s));
    SPENSE_CUDA_CHECK(cudaEventSynchronize(e1.get()));
    float ms;
    SPENSE_CUDA_CHECK(cudaEventElapsedTime(&ms, e0.get(), e1.get()));
    if (i >= 5) t.push_back(ms);
  }
  return 2.0 * bytes / (bench_median(t) * 1e-3) / 1e9;
}

void run_bench_gemm(const BenchGemmOptions& o_in) {
  BenchGemmOptions o = o_in;
  std::vector<Format> formats = expand_formats(o);
  if (!have_cusparselt()) {
    std::printf("bench-gemm: this build has no cuSPARSELt, so only the dense format is measured; "
                "rebuild with -DCUSPARSELT_ROOT=<prefix holding include/cusparseLt.h and lib/> for the "
                "2:4 and Spense formats\n");
    std::fflush(stdout);
    formats.erase(std::remove_if(formats.begin(), formats.end(), [](const Format& f) { return !f.dense; }),
                  formats.end());
  }
  if (formats.empty()) throw Error("bench-gemm: no formats to measure");
  if (o.iters < 1 || o.warmup < 0) throw Error("bench-gemm: --iters must be >= 1 and --warmup >= 0");
  for (int64_t m : o.ms)
    if (m < 1) throw Error("bench-gemm: M values must be >= 1");
  std::vector<LinearPrecision> precs;
  for (const auto& d : o.dtypes) precs.push_back(bench_precision(d, "bench-gemm"));

  const auto t_start = std::chrono::steady_clock::now();
  Context ctx;
  Stream stream;
  cudaStream_t s = stream.get();
  const double copy_gbps = measure_copy_gbps(s);
  std::printf("bench-gemm: %s (cc %d.%d, %d SMs, L2 %d MB), %s, device-to-device copy %.0f GB/s (read+write)\n",
              ctx.gpu_name().c_str(), ctx.cc_major(), ctx.cc_minor(), ctx.props().multiProcessorCount,
              ctx.props().l2CacheSize >> 20, cusparselt_version().c_str(), copy_gbps);
  std::fflush(stdout);

  const int64_t max_m = *std::max_element(o.ms.begin(), o.ms.end());
  std::vector<Row> rows;
  // Rows are appended as they are measured, so a run cut short keeps what it measured.
  std::ofstream csv;
  if (!o.csv.empty()) {
    std::filesystem::path p(o.csv);
    if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
    csv.open(o.csv);
    if (!csv) throw Error("bench-gemm: cannot write " + o.csv);
    csv << "gpu,model,layer,n,k,dtype,format,axis,d,concurrent,folded,m,us,tflops,weight_gbps,copy_gbps,"
           "copy_frac,speedup_vs_dense,weight_bytes,replicas,plan\n";
  }
  auto csv_row = [&](const Row& r) {
    if (!csv.is_open()) return;
    const double gbps = double(r.wbytes) / (r.us * 1e-6) / 1e9;
    const bool hybrid = !r.fmt.dense && !r.fmt.sparse24;
    csv << '"' << ctx.gpu_name() << "\"," << r.model << ',' << r.layer << ',' << r.n << ',' << r.k << ','
        << r.dtype << ',' << r.fmt.label << ',' << (hybrid ? axis_name(r.fmt.axis) : "") << ','
        << fmt_d(r.fmt.dense ? 1.0 : r.fmt.d) << ',' << (hybrid ? (r.fmt.concurrent ? 1 : 0) : 0) << ','
        << (r.fmt.folded ? 1 : 0) << ',' << r.m << ',' << r.us << ',' << 2.0 * r.m * r.n * r.k / (r.us * 1e-6) / 1e12
        << ',' << gbps << ',' << copy_gbps << ',' << gbps / copy_gbps << ',' << r.speedup << ',' << r.wbytes
        << ',' << r.replicas << ",\"" << r.plan << "\"" << std::endl;
  };

  for (const std::string& model : o.models) {
    for (const LayerShape& L : model_shapes(model)) {
      if (!o.layers.empty() && std::find(o.layers.begin(), o.layers.end(), L.layer) == o.layers.end()) continue;
      // Activations shared by all replicas (small, L2-resident as in decoding).
      const int64_t rows_cap = rows_bucket(max_m);
      DeviceBuffer x(static_cast<size_t>(rows_cap) * L.k * 2), y(static_cast<size_t>(rows_cap) * L.n * 2);
      for (LinearPrecision prec : precs) {
        const DType act = precision_act_dtype(prec);
        const size_t nk = static_cast<size_t>(L.n) * L.k;
        DeviceBuffer base(nk * 2);
        fill_random(base.get(), act, nk, o.seed, 1.f, s);
        fill_random(x.get(), act, static_cast<size_t>(rows_cap) * L.k, o.seed + 17, 1.f, s);
        std::map<int64_t, float> dense_us;
        for (const Format& f : formats) {
          std::printf("# %s %s %s %s d=%.3f (t=%.0f s)\n", model.c_str(), L.layer.c_str(), precision_name(prec),
                      f.label.c_str(), f.d,
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());
          // Weights for this format: prune the sparse region, quantize for FP8.
          DeviceBuffer wm(nk * 2);
          SPENSE_CUDA_CHECK(cudaMemcpyAsync(wm.get(), base.get(), nk * 2, cudaMemcpyDeviceToDevice, s));
          HybridLayout layout;
          layout.tile = o.tile;
          if (!f.dense && !f.sparse24) {
            layout.axis = f.axis;
            const int64_t extent = f.axis == HybridAxis::OUT ? L.n : L.k;
            layout.dense_tiles = hybrid_spread_tiles(extent, o.tile, f.d);
            std::vector<uint8_t> map(static_cast<size_t>(extent), 0);
            for (int32_t t : layout.dense_tiles)
              std::fill_n(map.begin() + t * o.tile, o.tile, uint8_t(1));
            DeviceBuffer dmap(map.size());
            SPENSE_CUDA_CHECK(cudaMemcpy(dmap.get(), map.data(), map.size(), cudaMemcpyHostToDevice));
            prune24_16(wm.get(), act, L.n, L.k, f.axis == HybridAxis::OUT ? dmap.as<uint8_t>() : nullptr,
                       f.axis == HybridAxis::IN ? dmap.as<uint8_t>() : nullptr, s);
            SPENSE_CUDA_CHECK(cudaStreamSynchronize(s));
          } else if (f.sparse24) {
            prune24_16(wm.get(), act, L.n, L.k, nullptr, nullptr, s);
          }
          DeviceBuffer wq, wsc;
          WeightsView wv{wm.get(), act, nullptr};
          if (prec == LinearPrecision::FP8) {
            wq = DeviceBuffer(nk);
            wsc = DeviceBuffer(static_cast<size_t>(L.n) * 4);
            quantize_rows_e4m3(wm.get(), DType::BF16, L.k, L.n, L.n, L.k, nullptr, wq.as<uint8_t>(), L.k,
                               wsc.as<float>(), s);
            wv = WeightsView{wq.get(), DType::F8_E4M3, wsc.as<float>()};
          }
          SPENSE_CUDA_CHECK(cudaStreamSynchronize(s));

          LinearOptions lo;
          lo.name = model + "." + L.layer;
          lo.dense_search = o.dense_search;
          lo.sparse_search = o.sparse_search;
          lo.split_sms = o.split_sms;
          lo.concurrent = f.concurrent;
          lo.fold_permutation = f.folded;
          lo.small_m_kernel = o.small_m_kernel;
          lo.small_m_tc_shape = o.small_m_tc_shape;
          lo.small_m_stream_blocks = o.small_m_stream_blocks;
          lo.small_m_e4m3_tokens = o.e4m3_tokens;
          std::vector<std::unique_ptr<Linear>> reps;
          if (f.gemv) {
            GemvLayout gl;
            gl.all_dense = f.dense;
            gl.axis = f.axis;
            gl.tile = o.tile;
            if (!f.dense && !f.sparse24) gl.dense_tiles = layout.dense_tiles;
            reps.push_back(make_gemv_linear(ctx, L.n, L.k, prec, wv, gl, lo));
          } else if (f.dense) reps.push_back(make_dense_linear(ctx, L.n, L.k, prec, wv, lo));
          else if (f.sparse24) reps.push_back(make_sparse_linear(ctx, L.n, L.k, prec, wv, lo));
          else reps.push_back(make_hybrid_linear(ctx, L.n, L.k, prec, wv, layout, lo));
          wm.reset();
          wq.reset();
          const size_t wb = reps[0]->weight_bytes();
          const int R = static_cast<int>(std::clamp<double>(std::ceil(o.rotate_mb * 1e6 / double(wb)), 1.0,
                                                            double(o.max_replicas)));
          for (int i = 1; i < R; ++i) reps.push_back(reps[0]->replicate());

          for (int64_t m : o.ms) {
            Row r{model, L.layer, precision_name(prec), L.n, L.k, f, m, 0.f, wb, R, ""};
            r.us = time_forward(reps, x.get(), y.get(), m, o, s);
            r.plan = reps[0]->plan_info(m);
            if (f.dense && !f.gemv) dense_us[m] = r.us;
            if (dense_us.count(m)) r.speedup = dense_us[m] / r.us;
            const double gbps = double(wb) / (r.us * 1e-6) / 1e9;
            std::printf("%-9s %-7s %-4s %-17s d=%.3f M=%-5lld %9.2f us %7.1f TFLOP/s %6.0f GB/s (%.2f of copy) %5.2fx  [%s]\n",
                        model.c_str(), L.layer.c_str(), r.dtype.c_str(), f.label.c_str(), f.d, (long long)m, r.us,
                        2.0 * m * L.n * L.k / (r.us * 1e-6) / 1e12, gbps, gbps / copy_gbps, r.speedup,
                        r.plan.c_str());
            std::fflush(stdout);
            csv_row(r);
            rows.push_back(r);
          }
        }
      }
    }
  }

  if (csv.is_open()) std::printf("bench-gemm: wrote %zu rows to %s\n", rows.size(), o.csv.c_str());

  // Summary: speedup of the hybrid formats at variant_d for M = 1, 16, 64, and the dense
  // path's fraction of copy bandwidth at M = 1.
  std::printf("\nsummary (speedup over dense of the same dtype at d=%.3f; dense weight GB/s / copy GB/s at M=1)\n",
              o.variant_d);
  std::printf("%-9s %-7s %-4s %-18s %7s %7s %7s   %s\n", "model", "layer", "dt", "format", "M=1", "M=16", "M=64",
              "dense BW frac M=1");
  std::map<std::string, std::map<int64_t, double>> table;
  std::map<std::string, double> bwfrac;
  std::vector<std::string> order;
  for (const Row& r : rows) {
    if (r.fmt.dense && r.m == 1)
      bwfrac[r.model + "|" + r.layer + "|" + r.dtype] = double(r.wbytes) / (r.us * 1e-6) / 1e9 / copy_gbps;
    if (r.fmt.dense || (!r.fmt.sparse24 && std::fabs(r.fmt.d - o.variant_d) > 1e-9)) continue;
    const std::string key = r.model + "|" + r.layer + "|" + r.dtype + "|" + r.fmt.label;
    if (!table.count(key)) order.push_back(key);
    table[key][r.m] = r.speedup;
  }
  for (const std::string& key : order) {
    std::stringstream ss(key);
    std::string mo, la, dt, fo;
    std::getline(ss, mo, '|');
    std::getline(ss, la, '|');
    std::getline(ss, dt, '|');
    std::getline(ss, fo, '|');
    auto cell = [&](int64_t m) {
      char b[16];
      if (table[key].count(m)) std::snprintf(b, sizeof b, "%6.2fx", table[key][m]);
      else std::snprintf(b, sizeof b, "%7s", "-");
      return std::string(b);
    };
    const std::string bk = mo + "|" + la + "|" + dt;
    char bw[16] = "-";
    if (bwfrac.count(bk)) std::snprintf(bw, sizeof bw, "%.2f", bwfrac[bk]);
    std::printf("%-9s %-7s %-4s %-18s %s %s %s   %s\n", mo.c_str(), la.c_str(), dt.c_str(), fo.c_str(),
                cell(1).c_str(), cell(16).c_str(), cell(64).c_str(), bw);
  }
  std::fflush(stdout);
}

std::string bench_gemm_usage() {
  return "spense_bench_gemm [--models qwen3-32b,qwen3-8b] [--layers qkv,o,gate_up,down] [--m 1,16,64]\n"
         "  [--dtypes bf16,fp8] [--d 0.125,0.25,0.375] [--formats dense,2:4,spense-out,spense-in,\n"
         "  spense-out-folded,spense-out-serial,spense-in-serial,dense-gemv,2:4-gemv,spense-out-gemv,\n"
         "  spense-in-gemv] [--variant-d 0.25] [--tile 64]\n"
         "  [--iters 100] [--warmup 10] [--rotate-mb 256] [--max-replicas 32] [--dense-search 8]\n"
         "  [--no-sparse-search] [--no-split-sms] [--no-graph] [--small-m-kernel auto|cuda-cores|tensor-cores]\n"
         "  [--small-m-tc-shape N] [--small-m-stream-blocks N] [--e4m3-tokens]\n"
         "  [--csv bench/results/gemm_h100.csv] [--seed 1]\n";
}

bool parse_bench_gemm_args(int argc, char** argv, BenchGemmOptions* o) {
  auto num = [](const std::string& flag, const std::string& v) { return bench_number("bench-gemm", flag, v); };
  const std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") return false;
    const bool flag_only = args[i] == "--no-sparse-search" || args[i] == "--no-graph" || args[i] == "--e4m3-tokens" ||
                           args[i] == "--no-split-sms";
    std::string a, val;
    bench_next_flag(args, i, !flag_only, "bench-gemm", &a, &val);
    if (a == "--models") o->models = bench_split_list(val);
    else if (a == "--layers") o->layers = bench_split_list(val);
    else if (a == "--m") {
      o->ms.clear();
      for (auto& t : bench_split_list(val)) o->ms.push_back(static_cast<int64_t>(num(a, t)));
    } else if (a == "--dtypes") o->dtypes = bench_split_list(val);
    else if (a == "--d") {
      o->ds.clear();
      for (auto& t : bench_split_list(val)) o->ds.push_back(num(a, t));
    } else if (a == "--formats") o->formats = bench_split_list(val);
    else if (a == "--variant-d") o->variant_d = num(a, val);
    else if (a == "--tile") o->tile = static_cast<int64_t>(num(a, val));
    else if (a == "--iters") o->iters = static_cast<int>(num(a, val));
    else if (a == "--warmup") o->warmup = static_cast<int>(num(a, val));
    else if (a == "--rotate-mb") o->rotate_mb = num(a, val);
    else if (a == "--max-replicas") o->max_replicas = static_cast<int>(num(a, val));
    else if (a == "--dense-search") o->dense_search = static_cast<int>(num(a, val));
    else if (a == "--no-sparse-search") o->sparse_search = false;
    else if (a == "--no-graph") o->graph = false;
    else if (a == "--no-split-sms") o->split_sms = false;
    else if (a == "--small-m-kernel") o->small_m_kernel = small_m_kernel_parse(val, "bench-gemm");
    else if (a == "--small-m-tc-shape") o->small_m_tc_shape = static_cast<int>(num(a, val));
    else if (a == "--small-m-stream-blocks") o->small_m_stream_blocks = static_cast<int>(num(a, val));
    else if (a == "--e4m3-tokens") o->e4m3_tokens = true;
    else if (a == "--csv") o->csv = val;
    else if (a == "--seed") o->seed = static_cast<uint64_t>(num(a, val));
    else throw Error("bench-gemm: unknown flag '" + a + "'\n" + bench_gemm_usage());
  }
  return true;
}

}  // namespace spense::cuda
