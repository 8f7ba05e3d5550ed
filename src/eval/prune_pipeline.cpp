// Whole-model sequential pruning (see spense/pipeline.h).
#include <malloc.h>
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <numeric>
#include <random>
#include <regex>
#include <string>

#include "model/ops.h"
#include "spense/error.h"
#include "spense/pipeline.h"
#include "spense/progress.h"

namespace spense {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

int input_index(LinearInput r) { return static_cast<int>(r); }

// The fp64 copy prune_layer works on (threads: a 32B-class projection has 10^8 elements).
Matrix to_matrix(const Linear& lin) {
  Matrix W(lin.out, lin.in);
  const int64_t n = lin.out * lin.in;
#pragma omp parallel for schedule(static) if (n >= (int64_t(1) << 20))
  for (int64_t i = 0; i < n; ++i) W.data[size_t(i)] = lin.weight[size_t(i)];
  return W;
}

// Brings the layers of a streaming model into memory in order, reading the next one on a
// background thread while the current one is in use (no-op for a resident model).
class LayerStream {
 public:
  explicit LayerStream(Model& m) : m_(m) {}
  ~LayerStream() {
    if (next_.valid()) next_.wait();  // never leave the reader running; its error is moot now
  }
  LayerStream(const LayerStream&) = delete;
  LayerStream& operator=(const LayerStream&) = delete;
  // Layer l resident, and l+1 being read.
  void acquire(int64_t l) {
    if (!m_.streams_layers()) return;
    if (!m_.layer_resident(l)) {
      if (next_l_ == l && next_.valid()) {
        next_l_ = -1;
        m_.set_layer(l, next_.get());  // rethrows the reader's error (naming the file)
      } else {
        m_.set_layer(l, m_.read_layer(l));
      }
    }
    if (l + 1 < m_.num_layers() && next_l_ != l + 1 && !m_.layer_resident(l + 1)) {
      if (next_.valid()) next_.wait();
      next_l_ = l + 1;
      const Model* m = &m_;
      next_ = std::async(std::launch::async, [m, l] {
        omp_set_num_threads(1);  // the generator's OpenMP loops must not compete with the main thread's
        return m->read_layer(l + 1);
      });
    }
  }
  void release(int64_t l) {
    if (m_.streams_layers()) m_.drop_layer(l);
  }

 private:
  Model& m_;
  std::future<LayerWeights> next_;
  int64_t next_l_ = -1;
};

class CpuCalibrationRunner final : public CalibrationRunner {
 public:
  CpuCalibrationRunner(bool fp32_hessian, MatmulDType linear_dtype)
      : fp32_hessian_(fp32_hessian), linear_dtype_(linear_dtype) {}
  const char* name() const override { return "cpu"; }
  void reset(const Model& model, std::vector<float> acts, int64_t S, int64_t T) override {
    if (int64_t(acts.size()) != S * T * model.hidden_size())
      throw Error("calibration runner: " + std::to_string(acts.size()) + " activations, expected " +
                  std::to_string(S) + " x " + std::to_string(T) + " x " + std::to_string(model.hidden_size()), 1);
    acts_ = std::move(acts);
    S_ = S;
    T_ = T;
    Hd_ = model.hidden_size();
    scratch_.assign(static_cast<size_t>(T * Hd_), 0.0f);
  }
  std::vector<Hessian> hessians(const Model& model, int64_t l, const std::function<void()>& on_window) override {
    const LayerWeights& lw = model.layer(l);
    const int64_t in_dims[4] = {lw.q.in, lw.o.in, lw.gate.in, lw.down.in};
    std::vector<HessianAccumulator> acc;
    for (int r = 0; r < 4; ++r)
      acc.emplace_back("model.layers." + std::to_string(l) + "." + linear_input_name(static_cast<LinearInput>(r)),
                       in_dims[r], 0, fp32_hessian_);
    const LinearHook hook = [&](int64_t, LinearInput role, const float* x, int64_t rows, int64_t) {
      acc[size_t(input_index(role))].add(x, rows);  // spreads its products over the OpenMP threads
    };
    for (int64_t s = 0; s < S_; ++s) {
      std::copy_n(acts_.data() + s * T_ * Hd_, T_ * Hd_, scratch_.data());
      model.block_forward(l, scratch_.data(), T_, hook, /*need_output=*/false, linear_dtype_);  // scratch is discarded
      if (on_window) on_window();
    }
    std::vector<Hessian> hs;
    for (auto& a : acc) hs.push_back(a.finalize());
    return hs;
  }
  void advance(const Model& model, int64_t l, const std::function<void()>& on_window) override {
    for (int64_t s = 0; s < S_; ++s) {
      model.block_forward(l, acts_.data() + s * T_ * Hd_, T_, {}, true, linear_dtype_);
      if (on_window) on_window();
    }
  }

 private:
  std::vector<float> acts_, scratch_;
  int64_t S_ = 0, T_ = 0, Hd_ = 0;
  bool fp32_hessian_ = false;
  MatmulDType linear_dtype_ = MatmulDType::F32;
};

// Explicit dense tiles per projection [layer*7 + proj] for the global budget (pipeline.h).
std::vector<std::vector<int64_t>> global_dense_tiles(Model& model, CalibrationRunner& runner,
                                                     const std::vector<float>& acts0, int64_t S, int64_t T,
                                                     const PipelineOptions& opts, const std::regex* skip) {
  const int64_t L = model.num_layers();
  runner.reset(model, acts0, S, T);
  struct Cand {
    size_t proj;
    int64_t tile;
    double value;  // relative-error score per element
    int64_t cost;  // elements of the tile
  };
  std::vector<Cand> cands;
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(L * 7));
  double prunable = 0;
  ProgressBar bar("budget", L, "layer", opts.progress_force);
  LayerStream stream(model);
  for (int64_t l = 0; l < L; ++l) {
    stream.acquire(l);
    const LayerWeights& lw = model.layer(l);
    std::vector<Hessian> hs = runner.hessians(model, l, {});
    InverseFactorCache factors;  // q/k/v and gate/up share their Hessian's factor
    for (Proj p : kAllProjs) {
      const std::string name = proj_module(l, p);
      if (skip && std::regex_search(name, *skip)) continue;
      const Linear& lin = lw.proj(p);
      const Hessian& H = hs[size_t(static_cast<int>(proj_input(p)))];
      Matrix W = to_matrix(lin);
      const double energy = reconstruction_error(W, Matrix(lin.out, lin.in), H, opts.prune.compute);
      PruneOptions po = opts.prune;
      po.layer = name;
      po.axis = pipeline_axis(opts, p);
      po.compute_error = false;
      po.factor_cache = &factors;
      const int64_t dim = po.axis == SpenseAxis::OUT ? lin.out : lin.in;
      const int64_t ntiles = dim / po.tile;
      const int64_t tile_elems = po.tile * (po.axis == SpenseAxis::OUT ? lin.in : lin.out);
      prunable += double(lin.out) * double(lin.in);
      std::vector<double> scores;
      if (ntiles >= 2) {
        po.dense_ratio = 1.0 / double(ntiles);  // one dense tile: scores are computed
        scores = prune_layer(po, W, H).report.tile_scores;
      } else {
        // A single tile: its score is the error of plain 2:4 on the whole projection.
        po.method = PruneMethod::SPARSEGPT;
        po.compute_error = true;
        scores = {prune_layer(po, W, H).report.error};
      }
      for (int64_t t = 0; t < static_cast<int64_t>(scores.size()); ++t)
        cands.push_back({size_t(l * 7 + static_cast<int>(p)), t,
                         energy > 0 ? scores[size_t(t)] / energy / double(tile_elems) : 0.0, tile_elems});
    }
    runner.advance(model, l, {});
    stream.release(l);
    bar.update(l + 1);
  }
  bar.finish();
  // A dense tile costs its elements * 0.5 extra stored values over 2:4; uniform d costs
  // d * prunable * 0.5, so the budget in tile elements is d * prunable.
  std::stable_sort(cands.begin(), cands.end(), [](const Cand& a, const Cand& b) { return a.value > b.value; });
  double budget = opts.prune.dense_ratio * prunable;
  for (const Cand& c : cands) {
    if (double(c.cost) > budget + 0.5 * double(c.cost)) continue;  // round to the nearest tile
    out[c.proj].push_back(c.tile);
    budget -= double(c.cost);
  }
  for (auto& v : out) std::sort(v.begin(), v.end());
  return out;
}

}  // namespace

SpenseAxis pipeline_axis(const PipelineOptions& opts, Proj p) {
  if (!opts.mixed_axis) return opts.prune.axis;
  return p == Proj::O || p == Proj::DOWN ? SpenseAxis::IN : SpenseAxis::OUT;
}

std::unique_ptr<CalibrationRunner> make_cpu_calibration_runner(bool fp32_hessian, MatmulDType linear_dtype) {
  return std::make_unique<CpuCalibrationRunner>(fp32_hessian, linear_dtype);
}

std::vector<std::vector<int32_t>> sample_calibration_windows(const std::vector<int32_t>& ids,
                                                             int64_t nsamples, int64_t seqlen,
                                                             uint64_t seed) {
  if (seqlen < 2) throw Error("calibration --seqlen must be at least 2, got " + std::to_string(seqlen));
  if (nsamples < 1) throw Error("calibration --nsamples must be at least 1, got " + std::to_string(nsamples));
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n < seqlen)
    throw Error("calibration text has " + std::to_string(n) + " tokens, fewer than one window of --seqlen " +
                std::to_string(seqlen));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> pick(0, n - seqlen);
  std::vector<std::vector<int32_t>> out;
  out.reserve(static_cast<size_t>(nsamples));
  for (int64_t s = 0; s < nsamples; ++s) {
    const int64_t o = pick(rng);
    out.emplace_back(ids.begin() + o, ids.begin() + o + seqlen);
  }
  return out;
}

PruneMemoryEstimate estimate_prune_memory(const ModelConfig& cfg, int64_t nsamples, int64_t seqlen,
                                          bool global_budget, int threads) {
  const uint64_t H = uint64_t(cfg.hidden_size), QD = uint64_t(cfg.num_heads * cfg.head_dim),
                 KVD = uint64_t(cfg.num_kv_heads * cfg.head_dim), I = uint64_t(cfg.intermediate_size),
                 T = uint64_t(seqlen);
  PruneMemoryEstimate e;
  // Saturating: absurd --nsamples must give a huge estimate, not a wrapped small one.
  uint64_t acts = uint64_t(std::max<int64_t>(nsamples, 0));
  for (uint64_t f : {T, H, uint64_t(4), uint64_t(global_budget ? 2 : 1)})
    if (__builtin_mul_overflow(acts, f, &acts)) acts = UINT64_MAX / 8;
  e.activations = acts;
  e.embedding = uint64_t(cfg.vocab_size) * H * 4;
  const uint64_t layer_params = QD * H + 2 * KVD * H + H * QD + 3 * H * I + 4 * H;
  e.layers = 2 * layer_params * 4;
  e.hessians = (2 * H * H + QD * QD + I * I) * 8;
  const uint64_t nk = std::max({QD * H, H * QD, I * H}), kmax = std::max({H, QD, I});
  e.working = 4 * nk * 8 + 2 * kmax * kmax * 8 +
              uint64_t(std::max(threads, 1)) * T * (2 * H + 4 * QD + 2 * I) * 4;
  return e;
}

std::pair<uint64_t, uint64_t> host_memory_bytes() {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return {0, 0};
  uint64_t total = 0, avail = 0;
  char line[256];
  while (std::fgets(line, sizeof line, f)) {
    unsigned long long kb = 0;
    if (std::sscanf(line, "MemTotal: %llu kB", &kb) == 1) total = uint64_t(kb) * 1024;
    else if (std::sscanf(line, "MemAvailable: %llu kB", &kb) == 1) avail = uint64_t(kb) * 1024;
  }
  std::fclose(f);
  return {total, avail};
}

void keep_freed_memory_mapped() {
  mallopt(M_MMAP_MAX, 0);                // main-thread blocks come from the sbrk heap (mmap only as a fallback)
  mallopt(M_TRIM_THRESHOLD, 1 << 30);    // a free top of the heap is returned only above 1 GiB
}

uint64_t peak_rss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_maxrss) * 1024;  // Linux: kilobytes
}

PipelineResult prune_model(Model& model, const std::vector<std::vector<int32_t>>& windows,
                           const PipelineOptions& opts, const LayerDoneFn& on_layer_done) {
  const auto t_start = Clock::now();
  if (windows.empty()) throw Error("prune_model: no calibration windows", 1);
  const int64_t T = static_cast<int64_t>(windows[0].size());
  for (const auto& w : windows)
    if (static_cast<int64_t>(w.size()) != T) throw Error("prune_model: calibration windows differ in length", 1);
  const ModelConfig& cfg = model.config();
  if (cfg.max_position_embeddings > 0 && T > cfg.max_position_embeddings)
    throw Error("calibration --seqlen " + std::to_string(T) + " exceeds the model's max_position_embeddings " +
                std::to_string(cfg.max_position_embeddings));
  std::regex skip;
  const bool use_skip = !opts.skip_regex.empty();
  if (use_skip) {
    try {
      skip = std::regex(opts.skip_regex, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      throw Error("--skip '" + opts.skip_regex + "': invalid regular expression (" + e.what() + ")");
    }
  }
  const int64_t L = model.num_layers(), Hd = model.hidden_size();
  const int64_t S = static_cast<int64_t>(windows.size());
  if (!opts.dtypes.empty() && static_cast<int64_t>(opts.dtypes.size()) != L * 7)
    throw Error("prune_model: dtypes must have 7 entries per layer", 1);

  PipelineResult res;
  res.nsamples = S;
  res.seqlen = T;

  // Calibration activations: S x T x hidden, updated layer by layer.
  std::vector<float> acts(static_cast<size_t>(S * T * Hd));
  for (int64_t s = 0; s < S; ++s) model.embed(windows[size_t(s)].data(), T, acts.data() + s * T * Hd);
  std::unique_ptr<CalibrationRunner> own_runner;
  CalibrationRunner* runner = opts.runner;
  if (!runner) own_runner = make_cpu_calibration_runner(opts.fp32_hessian, opts.linear_dtype), runner = own_runner.get();

  std::vector<std::vector<int64_t>> global_tiles;
  const bool global = opts.global_budget && opts.prune.method == PruneMethod::SPENSEGPT &&
                      opts.prune.dense_ratio > 0 && opts.prune.dense_ratio < 1;
  if (global) global_tiles = global_dense_tiles(model, *runner, acts, S, T, opts, use_skip ? &skip : nullptr);
  runner->reset(model, std::move(acts), S, T);

  const int64_t steps_per_layer = 2 * S + 7;
  ProgressBar bar("prune", L * steps_per_layer, "step", opts.progress_force);
  auto log = [&](const std::string& line) {
    if (!opts.log) return;
    if (bar.enabled()) std::fputs("\r\033[K", stderr);
    opts.log(line);
  };

  LayerStream stream(model);
  for (int64_t l = 0; l < L; ++l) {
    const auto t_layer = Clock::now();
    int64_t step = l * steps_per_layer;
    stream.acquire(l);
    LayerWeights& lw = model.layer(l);
    // 1. Hessians from the dense block.
    auto t0 = Clock::now();
    std::vector<Hessian> hs = runner->hessians(model, l, [&] { bar.update(++step); });
    res.calib_seconds += since(t0);

    // 2. Prune the seven projections.
    double layer_err = 0, layer_energy = 0;
    int pruned = 0;
    InverseFactorCache factors;  // q/k/v and gate/up share their Hessian's factor
    for (Proj p : kAllProjs) {
      PrunedProjection pp;
      pp.layer = l;
      pp.proj = p;
      pp.name = proj_module(l, p);
      Linear& lin = lw.proj(p);
      const DType dt = opts.dtypes.empty() ? DType::F32 : opts.dtypes[size_t(l * 7 + static_cast<int>(p))];
      if (use_skip && std::regex_search(pp.name, skip)) {
        pp.skipped = true;
        res.projections.push_back(std::move(pp));
        bar.update(++step);
        continue;
      }
      Matrix W = to_matrix(lin);
      PruneOptions po = opts.prune;
      po.layer = pp.name;
      po.axis = pipeline_axis(opts, p);
      po.factor_cache = &factors;
      if (global) po.dense_tiles = global_tiles[size_t(l * 7 + static_cast<int>(p))];
      const auto tp = Clock::now();
      PruneResult pr = prune_layer(po, W, hs[size_t(input_index(proj_input(p)))]);
      pp.seconds = since(tp);
      res.prune_seconds += pp.seconds;
      pp.report = pr.report;
      if (po.method == PruneMethod::DENSE) {
        // Unchanged weights, no packed form (the layer stays a plain dense tensor).
        pp.packed = false;
      } else {
        SpenseLayout lay = pr.layout;
        if (lay.dense_tiles.empty()) {
          // No dense tiles: any tile size dividing the tiled dimension describes the layout.
          const int64_t dim = lay.axis == SpenseAxis::OUT ? lin.out : lin.in;
          if (dim % lay.g != 0) lay.g = std::gcd(dim, lay.g);
        }
        pp.tensor = with_context(pp.name, [&] {
          return spense_pack_f64(pp.name, dt, lin.out, lin.in, pr.W.data.data(), lay);
        });
        pp.packed = true;
        // The model holds exactly what is stored: the unpacked (dtype-rounded) weights.
        lin.weight = spense_unpack_f32(pp.tensor);
        ++pruned;
        layer_err += pr.report.error;
        if (pr.report.error_rel > 0) layer_energy += pr.report.error / pr.report.error_rel;
      }
      res.projections.push_back(std::move(pp));
      bar.update(++step);
    }
    factors = {};
    hs.clear();

    // 3. The pruned block's outputs become the next layer's inputs.
    t0 = Clock::now();
    runner->advance(model, l, [&] { bar.update(++step); });
    res.calib_seconds += since(t0);
    if (on_layer_done) on_layer_done(model, l, &res.projections[res.projections.size() - 7]);
    stream.release(l);
    res.layer_seconds.push_back(since(t_layer));
    char buf[256];
    std::snprintf(buf, sizeof buf, "layer %lld/%lld: %d projections pruned, relative error %.4g, %.2f s",
                  static_cast<long long>(l + 1), static_cast<long long>(L), pruned,
                  layer_energy > 0 ? layer_err / layer_energy : 0.0, res.layer_seconds.back());
    log(buf);
  }
  bar.finish();
  res.total_seconds = since(t_start);
  return res;
}

}  // namespace spense
