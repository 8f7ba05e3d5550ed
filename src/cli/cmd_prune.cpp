// spense prune: one-shot pruning of a whole model (spense/pipeline.h) into a directory that
// holds both forms of the result (design.md section 2):
//   model.safetensors   HF-compatible checkpoint, pruned weights materialised (zeros in
//                       place) in each tensor's original dtype, every other tensor copied
//                       byte for byte (a sharded input becomes one file)
//   spense.safetensors  the packed Spense tensors of every pruned projection (docs/format.md)
//   spense.json         method, options, calibration and per-layer layouts
//   report.json         per projection: method, axis, dense tiles, density, errors, seconds
//   config.json, tokenizer.json, tokenizer_config.json, generation_config.json,
//   special_tokens_map.json (copied when present)
// Everything is written under a temporary directory and renamed into place at the end
// (AtomicDir), so a failure leaves nothing under --out. Inputs are checked before the
// weights are loaded. The layers stream (spense/pipeline.h): each finished layer's tensors go
// straight to model.safetensors (written in place) and to spense.safetensors' spool, so
// neither the model nor the output is ever whole in memory (disk: the packed tensors twice
// while spense.safetensors is assembled).
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <regex>

#include <nlohmann/json.hpp>
#include <omp.h>

#include "cli/commands.h"
#include "cli/util.h"
#include "model/ops.h"
#include "spense/config.h"
#include "spense/error.h"
#include "spense/format.h"
#include "spense/fs.h"
#include "spense/model.h"
#include "spense/pipeline.h"
#include "spense/prune.h"
#include "spense/safetensors.h"
#include "spense/tokenizer.h"
#ifdef SPENSE_HAVE_CUDA
#include "spense/cuda/prune_gpu.h"
#endif

namespace fs = std::filesystem;

namespace spense::cli {
namespace {

struct PruneArgs {
  std::string model, out;
  std::vector<std::string> calib;
  std::string method = "spensegpt", axis = "out", strategy = "saliency", budget = "uniform", skip;
  std::string save_calib;  // optional: where to write the sampled windows' token ids
  std::string device = "cpu";
  std::string forward_dtype = "f32";
  double dense_ratio = 0.25;
  int64_t tile = 64, nsamples = 128, seqlen = 2048;
  uint64_t seed = 0;
  bool force = false, log_json = false, progress = false, fp32_obs = false, fp32_hessian = false;
};

std::string canon(const std::string& p) {
  std::error_code ec;
  fs::path c = fs::weakly_canonical(fs::absolute(p), ec);
  if (ec) c = fs::absolute(p).lexically_normal();
  std::string s = c.string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}
bool inside_or_same(const std::string& child, const std::string& parent) {
  return child == parent || (child.size() > parent.size() && child.compare(0, parent.size(), parent) == 0 &&
                             child[parent.size()] == '/');
}

void run_prune(const PruneArgs& a) {
  // --- cheap checks first ---
  PruneOptions po;
  if (!prune_method_parse(a.method, &po.method))
    throw Error("--method '" + a.method + "': unknown method (expected spensegpt, sparsegpt, wanda, magnitude or dense)");
  PipelineOptions axes;  // the axis of each projection (pipeline_axis), for the checks below
  axes.mixed_axis = a.axis == "mixed";
  if (!axes.mixed_axis && !spense_axis_parse(a.axis, &po.axis))
    throw Error("--axis '" + a.axis + "': expected out, in or mixed");
  axes.prune.axis = po.axis;
  if (!dense_strategy_parse(a.strategy, &po.strategy))
    throw Error("--strategy '" + a.strategy + "': expected saliency or error");
  if (!(a.dense_ratio >= 0.0 && a.dense_ratio <= 1.0))
    throw Error("--dense-ratio " + std::to_string(a.dense_ratio) + " is outside [0, 1]");
  if (a.tile <= 0 || a.tile % 4 != 0)
    throw Error("--tile " + std::to_string(a.tile) + " must be a positive multiple of 4");
  if (a.nsamples < 1) throw Error("--nsamples must be at least 1, got " + std::to_string(a.nsamples));
  if (a.seqlen < 2) throw Error("--seqlen must be at least 2, got " + std::to_string(a.seqlen));
  if (a.budget != "uniform" && a.budget != "global")
    throw Error("--budget '" + a.budget + "': expected uniform or global");
  if (a.budget == "global" && po.method != PruneMethod::SPENSEGPT)
    throw Error("--budget global applies to --method spensegpt only");
  if (!a.skip.empty()) {
    try {
      std::regex r(a.skip, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      throw Error("--skip '" + a.skip + "': invalid regular expression (" + e.what() + ")");
    }
  }
  if (a.calib.empty()) throw Error("--calib: at least one calibration text file is required");
  if (a.device != "cpu" && a.device != "cuda") throw Error("--device '" + a.device + "': expected cpu or cuda");
  if (a.fp32_hessian && a.device == "cuda")
    throw Error("--fp32-hessian applies to --device cpu (the GPU accumulates its Hessians in fp64)");
  if (a.forward_dtype != "f32" && a.forward_dtype != "bf16")
    throw Error("--forward-dtype '" + a.forward_dtype + "': expected f32 or bf16");
  if (a.forward_dtype == "bf16" && a.device == "cpu" && !ops::bf16_matmul_onednn())
    std::fprintf(stderr, "note: --forward-dtype bf16 without oneDNN BF16 kernels (libdnnl-dev; a CPU with AVX-512 or "
                         "AMX): the same arithmetic runs through fp32 sgemm, at fp32 speed\n");
#ifndef SPENSE_HAVE_CUDA
  if (a.device == "cuda")
    throw Error("--device cuda: this spense was built without CUDA (configure with nvcc available, SPENSE_CUDA=ON)");
#endif
  po.dense_ratio = a.dense_ratio;
  po.tile = a.tile;
  po.precision = a.fp32_obs ? ObsPrecision::F32 : ObsPrecision::F64;

  require_dir(a.model);
  const std::string model_c = canon(a.model), out_c = canon(a.out);
  if (inside_or_same(out_c, model_c))
    throw Error("--out " + a.out + " is inside the model directory " + a.model + " (choose another directory)");
  if (inside_or_same(model_c, out_c))
    throw Error("--out " + a.out + " contains the model directory " + a.model + " (choose another directory)");
  {
    std::error_code ec;
    if (fs::exists(a.out, ec) && !a.force)
      throw Error(a.out + ": output already exists (use --force to replace it)");
  }
  const ModelConfig cfg = config_load(a.model);
  const Checkpoint ckpt = with_context(a.model, [&] { return Checkpoint::open(a.model); });

  // Shapes and dtypes of the projections.
  std::vector<DType> dtypes;
  for (int64_t l = 0; l < cfg.num_layers; ++l)
    for (Proj p : kAllProjs) {
      const auto [N, K] = proj_shape(cfg, p);
      const std::string name = proj_module(l, p);
      const TensorRef t = ckpt.get(name + ".weight", {N, K});
      const DType dt = t.info->dtype;
      if (dt != DType::F32 && dt != DType::BF16 && dt != DType::F16)
        throw Error(*t.file + ": '" + name + ".weight' has dtype " + dtype_name(dt) +
                    ", expected F32, BF16 or F16 (quantized checkpoints are not supported)");
      dtypes.push_back(dt);
      if (po.method == PruneMethod::DENSE) continue;
      if (K % 4 != 0)
        throw Error(name + ": in-features " + std::to_string(K) + " is not a multiple of 4 (2:4 groups)");
      if (po.method == PruneMethod::SPENSEGPT) {
        const bool in = pipeline_axis(axes, p) == SpenseAxis::IN;
        const int64_t dim = in ? K : N;
        if (dim % a.tile != 0)
          throw Error("--tile " + std::to_string(a.tile) + " does not divide " + name + "'s " +
                      (in ? "in" : "out") + "-features " + std::to_string(dim) + " (axis " + a.axis + ")");
      }
    }
  if (cfg.max_position_embeddings > 0 && a.seqlen > cfg.max_position_embeddings)
    throw Error(a.model + "/config.json: --seqlen " + std::to_string(a.seqlen) +
                " exceeds the model's max_position_embeddings " + std::to_string(cfg.max_position_embeddings));

  // Host memory: refuse a run whose activations and embedding alone exceed the machine's memory
  // (it would fail hours in); the estimate is printed, with a warning when it exceeds what is
  // available now, once the inputs have passed every check.
  const PruneMemoryEstimate me =
      estimate_prune_memory(cfg, a.nsamples, a.seqlen, a.budget == "global", omp_get_max_threads());
  const auto [mem_total, mem_avail] = host_memory_bytes();
  const std::string mem_parts =
      "activations " + human_bytes(me.activations) + " (--nsamples " + std::to_string(a.nsamples) + " x --seqlen " +
      std::to_string(a.seqlen) + " x hidden " + std::to_string(cfg.hidden_size) + " fp32), embedding " +
      human_bytes(me.embedding) + ", two layers " + human_bytes(me.layers) + ", Hessians " +
      human_bytes(me.hessians) + ", working copies " + human_bytes(me.working) + ", the program about " +
      human_bytes(PruneMemoryEstimate::kProgram);
  if (mem_total > 0 && me.lower_bound() > mem_total)
    throw Error("pruning " + a.model + " needs more than " + human_bytes(me.lower_bound()) +
                " of host memory for the activations and the embedding alone, and this machine has " +
                human_bytes(mem_total) + " (" + mem_parts + "); lower --nsamples or --seqlen");

  // The GPU (a missing one is an input error, found before anything is written or loaded).
#ifdef SPENSE_HAVE_CUDA
  std::unique_ptr<PruneCompute> gpu_compute;
  std::unique_ptr<CalibrationRunner> gpu_runner;
  if (a.device == "cuda") {
    gpu_compute = cuda::make_gpu_prune_compute();
    gpu_runner = cuda::make_gpu_calibration_runner(cuda::ActivationPlacement::AUTO,
                                                   a.forward_dtype == "bf16" ? MatmulDType::BF16 : MatmulDType::F32);
  }
#endif

  // Calibration tokens: each file tokenized on its own, ids concatenated.
  const std::string tok_path = a.model + "/tokenizer.json";
  if (!file_exists(tok_path))
    throw Error(tok_path + ": tokenizer not found (prune tokenizes the calibration text with the model's tokenizer.json)");
  std::vector<std::string> texts;
  for (const auto& f : a.calib) {
    texts.push_back(read_text_file(f));
    if (texts.back().empty()) throw Error(f + ": calibration text file is empty");
  }
  const Tokenizer tok = Tokenizer::load(tok_path);
  std::vector<int32_t> ids;
  for (const auto& t : texts) {
    const auto v = tok.encode(t);
    ids.insert(ids.end(), v.begin(), v.end());
  }
  for (int32_t id : ids)
    if (id < 0 || id >= cfg.vocab_size)
      throw Error(tok_path + ": token id " + std::to_string(id) + " is outside the model's vocabulary [0, " +
                  std::to_string(cfg.vocab_size) + ")");
  if (static_cast<int64_t>(ids.size()) < a.seqlen)
    throw Error("calibration text (" + a.calib[0] + (a.calib.size() > 1 ? ", ..." : "") + ") has " +
                std::to_string(ids.size()) + " tokens, fewer than one window of --seqlen " + std::to_string(a.seqlen));
  const auto windows = sample_calibration_windows(ids, a.nsamples, a.seqlen, a.seed);
  if (!a.save_calib.empty()) {
    // For reproducing the run with another implementation (tools/sparsegpt_model_ref.py).
    std::string text;
    for (const auto& w : windows) {
      for (size_t i = 0; i < w.size(); ++i) text += (i ? " " : "") + std::to_string(w[i]);
      text += "\n";
    }
    write_file_atomic(a.save_calib, text.data(), text.size());
  }

  // The output directory (removed again if anything below fails).
  AtomicDir out(a.out, a.force);

  std::fprintf(stderr, "host memory estimate: about %s (%s)\n", human_bytes(me.total()).c_str(), mem_parts.c_str());
  if (mem_avail > 0 && me.total() > mem_avail)
    std::fprintf(stderr, "warning: that is more than the %s available now\n", human_bytes(mem_avail).c_str());

  // --- the work ---
  // The model streams: one decoder layer at a time is read from the checkpoint (the next
  // one in the background), and each finished layer goes straight to the output files, whose
  // bytes are spooled to disk, so memory holds about two layers plus the activations.
  keep_freed_memory_mapped();
  ModelLoadOptions lo;
  lo.stream_layers = true;
  lo.lm_head = false;  // pruning never runs the head
  Model model = with_context(a.model, [&] { return Model::load(a.model, lo); });
  PipelineOptions opts;
#ifdef SPENSE_HAVE_CUDA
  if (gpu_compute) {
    po.compute = gpu_compute.get();
    opts.runner = gpu_runner.get();
  }
#endif
  opts.prune = po;
  opts.skip_regex = a.skip;
  opts.global_budget = a.budget == "global";
  opts.mixed_axis = axes.mixed_axis;
  opts.dtypes = dtypes;
  opts.progress_force = a.progress;
  opts.fp32_hessian = a.fp32_hessian;
  opts.linear_dtype = a.forward_dtype == "bf16" ? MatmulDType::BF16 : MatmulDType::F32;
  opts.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };

  // Checkpoint tensors by decoder layer ("model.layers.<l>."); -1: everything else.
  std::map<int64_t, std::vector<std::string>> names_by_layer;
  for (const std::string& name : ckpt.names()) {
    int64_t layer = -1;
    const std::string pre = "model.layers.";
    if (name.compare(0, pre.size(), pre) == 0) {
      size_t end = pre.size();
      while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) ++end;
      if (end > pre.size() && end - pre.size() <= 9 && end < name.size() && name[end] == '.') {
        layer = std::stoll(name.substr(pre.size(), end - pre.size()));
        if (layer >= cfg.num_layers) layer = -1;
      }
    }
    names_by_layer[layer].push_back(name);
  }
  // model.safetensors has the input's tensors, names, dtypes and shapes: planned up front and
  // written in place as layers finish (sorted by name: the order of a file written from the
  // sorted ckpt.names()). The packed tensors' shapes are only known once pruned: spooled.
  SafetensorsWriter model_w, spense_w;
  model_w.sort_by_name();
  model_w.set_metadata("format", "pt");
  for (const std::string& name : ckpt.names()) {
    const TensorRef t = ckpt.get(name);
    model_w.plan(name, t.info->dtype, t.info->shape);
  }
  model_w.begin(out.path() + "/model.safetensors");
  spense_w.set_metadata("format", "spense");
  spense_w.spool_to(out.path());
  std::map<std::string, std::string> layer_json;  // packed projections: spense_layer_json
  const auto on_layer_done = [&](const Model& m, int64_t l, PrunedProjection* projs) {
    std::map<std::string, const Linear*> pruned;  // "<proj>.weight" -> its pruned weights
    for (int i = 0; i < 7; ++i) {
      PrunedProjection& pp = projs[i];
      if (!pp.packed) continue;
      pruned[pp.name + ".weight"] = &m.layer(l).proj(pp.proj);
      spense_write_tensors(spense_w, pp.tensor);
      layer_json[pp.name] = spense_layer_json(pp.tensor);
      pp.tensor = SpenseTensor{};  // on disk now
    }
    for (const std::string& name : names_by_layer[l]) {
      const TensorRef t = ckpt.get(name);
      auto it = pruned.find(name);
      if (it != pruned.end())
        model_w.add_from_f32(name, t.info->dtype, t.info->shape, it->second->weight.data());
      else
        model_w.add(name, t.info->dtype, t.info->shape, t.data, t.info->nbytes());
      ckpt.drop_pages(name);
    }
  };
  const PipelineResult res = prune_model(model, windows, opts, on_layer_done);

  // --- outputs ---
  for (const std::string& name : names_by_layer[-1]) {
    const TensorRef t = ckpt.get(name);
    model_w.add(name, t.info->dtype, t.info->shape, t.data, t.info->nbytes());
  }
  model_w.write(out.path() + "/model.safetensors");  // throws if a planned tensor never arrived

  nlohmann::ordered_json options;
  options["method"] = a.method;
  options["axis"] = a.axis;
  options["strategy"] = a.strategy;
  options["dense_ratio"] = a.dense_ratio;
  options["tile"] = a.tile;
  options["budget"] = a.budget;
  options["skip"] = a.skip;
  options["blocksize"] = po.blocksize;
  options["percdamp"] = po.percdamp;
  options["obs_precision"] = a.fp32_obs ? "f32" : "f64";
  options["hessian_precision"] = a.fp32_hessian ? "f32 per window, f64 sum" : "f64";
  options["forward_dtype"] = a.forward_dtype;
  options["device"] = a.device;
  nlohmann::ordered_json calib;
  calib["files"] = a.calib;
  calib["tokens"] = ids.size();
  calib["nsamples"] = a.nsamples;
  calib["seqlen"] = a.seqlen;
  calib["seed"] = a.seed;

  {
    nlohmann::ordered_json sj;
    sj["format"] = "spense";
    sj["version"] = 1;
    sj["method"] = a.method;
    sj["options"] = options;
    sj["calibration"] = calib;
    nlohmann::ordered_json layers = nlohmann::ordered_json::object();
    for (const auto& pp : res.projections) {
      if (pp.packed) {
        layers[pp.name] = nlohmann::ordered_json::parse(layer_json.at(pp.name));
      } else {
        nlohmann::ordered_json d;
        d["dense"] = true;
        d["reason"] = pp.skipped ? "skipped (--skip)" : "method dense";
        d["weight"] = pp.name + ".weight";
        layers[pp.name] = d;
      }
    }
    sj["layers"] = layers;
    spense_w.write(out.path() + "/spense.safetensors");
    spense_w = SafetensorsWriter();  // its spool closed before the directory is committed
    const std::string s = sj.dump(2) + "\n";
    write_file_atomic(out.path() + "/spense.json", s.data(), s.size());
  }

  nlohmann::ordered_json rep;
  rep["model"] = a.model;
  rep["options"] = options;
  rep["calibration"] = calib;
  nlohmann::ordered_json lrep = nlohmann::ordered_json::array();
  double err_sum = 0, energy_sum = 0, stored = 0, total = 0;
  for (const auto& pp : res.projections) {
    nlohmann::ordered_json j;
    if (pp.skipped) {
      j["layer"] = pp.name;
      j["skipped"] = true;
      j["density"] = 1.0;
    } else {
      j = nlohmann::ordered_json::parse(prune_report_json(pp.report));
      j["skipped"] = false;
      j["seconds"] = pp.seconds;
      // "before": tr(W H W^T), the error of dropping the layer entirely (all-zero W_hat);
      // "after": tr((W - W_hat) H (W - W_hat)^T) of the pruned weights.
      const double energy = pp.report.error_rel > 0 ? pp.report.error / pp.report.error_rel : 0.0;
      j["output_energy"] = energy;
      err_sum += pp.report.error;
      energy_sum += energy;
    }
    const auto [N, K] = proj_shape(cfg, pp.proj);
    total += double(N) * double(K);
    stored += double(N) * double(K) * (pp.skipped ? 1.0 : pp.report.density);
    lrep.push_back(j);
  }
  nlohmann::ordered_json summary;
  summary["projections"] = res.projections.size();
  summary["effective_density"] = total > 0 ? stored / total : 0.0;
  summary["relative_error"] = energy_sum > 0 ? err_sum / energy_sum : 0.0;
  summary["calib_seconds"] = res.calib_seconds;
  summary["prune_seconds"] = res.prune_seconds;
  summary["total_seconds"] = res.total_seconds;
  summary["peak_rss_bytes"] = peak_rss_bytes();
  summary["device"] = a.device;
  summary["blas"] = ops::blas_description();  // CPU results depend on the kernels' summation order
  uint64_t peak_gpu = 0;
#ifdef SPENSE_HAVE_CUDA
  if (a.device == "cuda") {
    peak_gpu = cuda::gpu_prune_peak_bytes();
    summary["gpu"] = cuda::gpu_device_name();
    summary["peak_gpu_bytes"] = peak_gpu;
  }
#endif
  rep["summary"] = summary;
  rep["layers"] = lrep;
  {
    const std::string s = rep.dump(2) + "\n";
    write_file_atomic(out.path() + "/report.json", s.data(), s.size());
  }
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                        "special_tokens_map.json"}) {
    const fs::path src = fs::path(a.model) / f;
    if (!file_exists(src.string())) continue;
    const std::string s = read_text_file(src.string());
    write_file_atomic(out.path() + "/" + f, s.data(), s.size());
  }
  out.commit();

  if (a.log_json) {
    for (const auto& j : lrep) std::printf("%s\n", j.dump().c_str());
    std::printf("%s\n", summary.dump().c_str());
  } else {
    std::printf("%-40s %-9s %-4s %7s %7s %10s %8s\n", "layer", "method", "axis", "dense", "density", "rel.err", "sec");
    for (const auto& pp : res.projections) {
      if (pp.skipped) {
        std::printf("%-40s %-9s %-4s %7s %7.3f %10s %8s\n", pp.name.c_str(), "skipped", "-", "-", 1.0, "-", "-");
        continue;
      }
      const PruneReport& r = pp.report;
      std::printf("%-40s %-9s %-4s %7zu %7.3f %10.4g %8.2f\n", pp.name.c_str(), prune_method_name(r.method),
                  spense_axis_name(r.axis), r.dense_tiles.size(), r.density, r.error_rel, pp.seconds);
    }
    std::printf("wrote %s: effective density %.4f, relative error %.4g, %.1f s, peak RSS %s\n", a.out.c_str(),
                summary["effective_density"].get<double>(), summary["relative_error"].get<double>(),
                res.total_seconds, human_bytes(peak_rss_bytes()).c_str());
  }
  std::fprintf(stderr, "peak RSS: %s\n", human_bytes(peak_rss_bytes()).c_str());
  if (peak_gpu) std::fprintf(stderr, "peak GPU memory in use (all processes): %s\n", human_bytes(peak_gpu).c_str());
}

}  // namespace

void register_prune(CLI::App& app) {
  auto a = std::make_shared<PruneArgs>();
  auto* sub = app.add_subcommand(
      "prune",
      "One-shot pruning of a whole model to 2:4 (+ dense tiles for spensegpt), block by block "
      "with calibration Hessians (SparseGPT protocol). Writes --out with an HF-compatible "
      "model.safetensors (pruned weights materialised), spense.safetensors + spense.json (packed "
      "layers), report.json and the config/tokenizer files.");
  sub->add_option("--model", a->model, "Model directory: config.json, safetensors weights, tokenizer.json")->required();
  sub->add_option("--calib", a->calib, "Calibration text file(s), tokenized with the model's tokenizer")
      ->required()
      ->expected(1, -1);
  sub->add_option("--out", a->out, "Output directory (refused if it exists, unless --force)")->required();
  sub->add_option("--method", a->method, "spensegpt | sparsegpt | wanda | magnitude | dense")->default_val("spensegpt");
  sub->add_option("--dense-ratio", a->dense_ratio, "spensegpt: fraction d of dense tiles, in [0, 1]")->default_val(0.25);
  sub->add_option("--axis", a->axis,
                  "spensegpt: dense tiles of output rows (out), of input columns (in), or mixed: in for o_proj "
                  "and down_proj, out for the others")
      ->default_val("out");
  sub->add_option("--strategy", a->strategy, "spensegpt: saliency (one pass) or error (two passes)")->default_val("saliency");
  sub->add_option("--tile", a->tile, "Tile size g: a multiple of 4 dividing the tiled dimension")->default_val(64);
  sub->add_option("--nsamples", a->nsamples, "Calibration windows")->default_val(128);
  sub->add_option("--seqlen", a->seqlen, "Tokens per calibration window")->default_val(2048);
  sub->add_option("--seed", a->seed, "Seed of the window sampler")->default_val(0);
  sub->add_option("--skip", a->skip,
                  "Regex searched in projection names (e.g. 'layers\\.0\\.|down_proj'); matches stay dense");
  sub->add_option("--budget", a->budget, "Dense budget: uniform (same d in every projection) or global (spensegpt: dense tiles chosen across the whole model by relative tile scores from a dense pre-pass, same average density)")
      ->default_val("uniform");
  sub->add_option("--save-calib", a->save_calib,
                  "Also write the sampled calibration windows to this file (token ids, one window per line), "
                  "to reproduce the run with another implementation");
  sub->add_option("--device", a->device,
                  "Where calibration and pruning run: cpu, or cuda (the GPU: forwards as --forward-dtype, fp64 "
                  "Hessians, cuSOLVER and the OBS passes there; builds with CUDA only)")
      ->default_val("cpu");
  sub->add_flag("--force", a->force, "Replace --out if it exists");
  sub->add_flag("--log-json", a->log_json, "Print one JSON line per projection and a summary line instead of the table");
  sub->add_flag("--fp32-obs", a->fp32_obs, "Run the OBS pass in fp32 (faster) instead of fp64");
  sub->add_flag("--fp32-hessian", a->fp32_hessian,
                "CPU: form each calibration window's X^T X in fp32 (ssyrk, twice dsyrk's speed: about 20% "
                "less calibration time on 2 cores; the windows are still summed in fp64) instead of fp64");
  sub->add_option("--forward-dtype", a->forward_dtype,
                  "Precision of the calibration forwards' linear products: f32, or bf16 (inputs rounded to BF16, "
                  "fp32 accumulation, as a BF16 model on a GPU computes them). CPU: oneDNN on AMX / AVX-512 BF16, "
                  "faster where the CPU has them (elsewhere the same arithmetic at fp32 speed); GPU: cuBLAS on "
                  "tensor cores, several times faster than fp32")
      ->default_val("f32");
  sub->add_flag("--progress", a->progress, "Draw the progress bar even when stderr is not a terminal");
  sub->callback([a] { run_prune(*a); });
}

}  // namespace spense::cli
