// spense inspect DIR: what a checkpoint holds (architecture, shapes, parameter counts per
// module type, dtypes, size on disk), read from config.json and the safetensors headers
// alone; no weight is converted. Also validates that every tensor the architecture needs is
// present with the expected shape, so it doubles as a checkpoint checker.
#include <cstdio>
#include <map>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/util.h"
#include "model/arch.h"
#include "spense/config.h"
#include "spense/error.h"
#include "spense/model.h"
#include "spense/safetensors.h"

namespace spense::cli {
namespace {

struct InspectArgs {
  std::string dir;
  bool json = false;
};

const char* rope_type_name(RopeType t) { return t == RopeType::LLAMA3 ? "llama3" : "default"; }

void run_inspect(const InspectArgs& a) {
  require_dir(a.dir);
  const ModelConfig cfg = config_load(a.dir);
  arch::validate_config(cfg, a.dir + "/config.json");
  const Checkpoint ckpt = Checkpoint::open(a.dir);
  for (const auto& spec : arch::model_tensors(cfg)) (void)ckpt.get(spec.name, spec.shape);

  std::map<ModuleKind, int64_t> params;
  std::map<std::string, int64_t> dtype_tensors, dtype_params;
  int64_t total = 0;
  const auto names = ckpt.names();
  for (const auto& name : names) {
    const TensorRef t = ckpt.get(name);
    const int64_t n = t.info->numel();
    params[tensor_module_kind(name)] += n;
    dtype_tensors[dtype_name(t.info->dtype)] += 1;
    dtype_params[dtype_name(t.info->dtype)] += n;
    total += n;
  }
  const ModuleKind kinds[] = {ModuleKind::EMBEDDING, ModuleKind::ATTENTION, ModuleKind::MLP,
                              ModuleKind::NORM, ModuleKind::LM_HEAD, ModuleKind::OTHER};
  const bool qkv_bias = arch::has_qkv_bias(cfg), o_bias = arch::has_o_bias(cfg),
             qk_norm = arch::has_qk_norm(cfg);

  if (a.json) {
    nlohmann::ordered_json j;
    j["model"] = a.dir;
    j["architecture"] = arch_name(cfg.arch);
    j["model_type"] = cfg.model_type;
    j["num_layers"] = cfg.num_layers;
    j["hidden_size"] = cfg.hidden_size;
    j["num_heads"] = cfg.num_heads;
    j["num_kv_heads"] = cfg.num_kv_heads;
    j["head_dim"] = cfg.head_dim;
    j["intermediate_size"] = cfg.intermediate_size;
    j["vocab_size"] = cfg.vocab_size;
    j["max_position_embeddings"] = cfg.max_position_embeddings;
    j["rope_type"] = rope_type_name(cfg.rope.type);
    j["rope_theta"] = cfg.rope.theta;
    j["rms_norm_eps"] = cfg.rms_norm_eps;
    j["tie_word_embeddings"] = cfg.tie_word_embeddings;
    j["qkv_bias"] = qkv_bias;
    j["o_bias"] = o_bias;
    j["qk_norm"] = qk_norm;
    j["config_dtype"] = dtype_name(cfg.dtype);
    nlohmann::ordered_json p;
    for (ModuleKind k : kinds) p[module_kind_name(k)] = params[k];
    p["total"] = total;
    j["parameters"] = p;
    nlohmann::ordered_json d;
    for (const auto& [name, cnt] : dtype_tensors) d[name] = {{"tensors", cnt}, {"parameters", dtype_params[name]}};
    j["dtypes"] = d;
    j["tensors"] = names.size();
    j["files"] = ckpt.files().size();
    j["size_on_disk"] = ckpt.size_on_disk();
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }

  std::printf("model:         %s\n", a.dir.c_str());
  std::printf("architecture:  %s (model_type %s)\n", arch_name(cfg.arch), cfg.model_type.c_str());
  std::printf("shape:         %lld layers, hidden %lld, %lld heads (%lld kv), head_dim %lld, intermediate %lld, vocab %lld\n",
              (long long)cfg.num_layers, (long long)cfg.hidden_size, (long long)cfg.num_heads,
              (long long)cfg.num_kv_heads, (long long)cfg.head_dim, (long long)cfg.intermediate_size,
              (long long)cfg.vocab_size);
  std::printf("context:       %lld positions, rope %s theta %g", (long long)cfg.max_position_embeddings,
              rope_type_name(cfg.rope.type), cfg.rope.theta);
  if (cfg.rope.type == RopeType::LLAMA3)
    std::printf(" (factor %g, low %g, high %g, original %lld)", cfg.rope.factor, cfg.rope.low_freq_factor,
                cfg.rope.high_freq_factor, (long long)cfg.rope.original_max_position_embeddings);
  std::printf("\n");
  std::printf("features:      tied embeddings %s, qkv bias %s, o bias %s, qk norm %s, rms_norm_eps %g\n",
              cfg.tie_word_embeddings ? "yes" : "no", qkv_bias ? "yes" : "no", o_bias ? "yes" : "no",
              qk_norm ? "yes" : "no", cfg.rms_norm_eps);
  std::printf("config dtype:  %s\n", dtype_name(cfg.dtype));
  std::printf("parameters:\n");
  for (ModuleKind k : kinds) {
    if (k == ModuleKind::OTHER && params[k] == 0) continue;
    std::string note;
    if (k == ModuleKind::LM_HEAD && cfg.tie_word_embeddings && params[k] == 0) note = "  (tied to embedding)";
    std::printf("  %-11s %16s%s\n", module_kind_name(k), with_commas(params[k]).c_str(), note.c_str());
  }
  std::printf("  %-11s %16s\n", "total", with_commas(total).c_str());
  std::printf("tensors:       %zu", names.size());
  std::string sep = " (";
  for (const auto& [name, cnt] : dtype_tensors) {
    std::printf("%s%s: %lld tensors, %s params", sep.c_str(), name.c_str(), (long long)cnt,
                with_commas(dtype_params[name]).c_str());
    sep = "; ";
  }
  std::printf(")\n");
  std::printf("on disk:       %s in %zu file%s\n", human_bytes(ckpt.size_on_disk()).c_str(),
              ckpt.files().size(), ckpt.files().size() == 1 ? "" : "s");
}

}  // namespace

void register_inspect(CLI::App& app) {
  auto args = std::make_shared<InspectArgs>();
  auto* sub = app.add_subcommand(
      "inspect",
      "Describe a Hugging Face checkpoint directory: architecture and shapes from config.json, "
      "parameter counts per module type (embedding, attention, mlp, norms, lm_head) and in total, "
      "dtypes and size on disk from the safetensors headers. Also checks every tensor the "
      "architecture needs is present with the expected shape (exit 2 otherwise).");
  sub->add_option("dir", args->dir,
                  "Model directory holding config.json and model.safetensors (or sharded "
                  "model-*.safetensors with model.safetensors.index.json)")
      ->required();
  sub->add_flag("--json", args->json, "Print one JSON object instead of the text summary");
  sub->callback([args] { run_inspect(*args); });
}

}  // namespace spense::cli
