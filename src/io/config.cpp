// config.json -> ModelConfig for Llama, Mistral, Qwen2, Qwen3 (transformers 4.x and 5.x
// spellings). Defaults follow the transformers config classes of each model_type.
#include "spense/config.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "io/json_util.h"
#include "spense/error.h"

using nlohmann::json;

namespace spense {

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::LLAMA: return "LlamaForCausalLM";
    case Arch::MISTRAL: return "MistralForCausalLM";
    case Arch::QWEN2: return "Qwen2ForCausalLM";
    case Arch::QWEN3: return "Qwen3ForCausalLM";
  }
  return "?";
}

namespace {

struct ArchRow {
  Arch arch;
  const char* model_type;
  int64_t default_kv_heads;      // absent num_key_value_heads; 0 = num_attention_heads
  int64_t default_head_dim;      // absent head_dim; 0 = hidden_size / num_attention_heads
  int64_t default_max_pos;       // absent max_position_embeddings
};
// From the transformers config classes (LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config).
constexpr ArchRow kArchs[] = {
    {Arch::LLAMA, "llama", 0, 0, 2048},
    {Arch::MISTRAL, "mistral", 8, 0, 4096 * 32},
    {Arch::QWEN2, "qwen2", 32, 0, 32768},
    {Arch::QWEN3, "qwen3", 32, 128, 32768},
};

// Field access with messages naming the file and the field. `obj_name` prefixes nested
// fields ("rope_scaling.factor").
class Fields {
 public:
  Fields(const json& j, std::string source, std::string prefix = "")
      : j_(j), src_(std::move(source)), prefix_(std::move(prefix)) {}

  std::string name(const std::string& k) const { return "'" + prefix_ + k + "'"; }
  [[noreturn]] void fail(const std::string& k, const std::string& what) const {
    throw Error(src_ + ": field " + name(k) + " " + what);
  }
  [[noreturn]] void fail_msg(const std::string& what) const { throw Error(src_ + ": " + what); }

  // nullptr when absent or null.
  const json* get(const std::string& k) const {
    auto it = j_.find(k);
    if (it == j_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool present(const std::string& k) const { return j_.contains(k); }
  bool is_null(const std::string& k) const { return j_.contains(k) && j_.at(k).is_null(); }

  std::optional<int64_t> opt_int(const std::string& k) const {
    const json* v = get(k);
    if (!v) return std::nullopt;
    if (v->is_number_integer()) {
      if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
        fail(k, "is " + v->dump() + ", too large");
      return v->get<int64_t>();
    }
    if (v->is_number_float()) {  // tolerate 4096.0
      const double d = v->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15)
        return static_cast<int64_t>(d);
    }
    fail(k, "is " + v->dump() + ", expected an integer");
  }
  int64_t req_int(const std::string& k) const {
    auto v = opt_int(k);
    if (!v) fail_missing(k);
    return *v;
  }
  int64_t positive(const std::string& k, int64_t v) const {
    if (v <= 0) fail(k, "is " + std::to_string(v) + ", expected a positive integer");
    return v;
  }
  std::optional<double> opt_num(const std::string& k) const {
    const json* v = get(k);
    if (!v) return std::nullopt;
    if (!v->is_number()) fail(k, "is " + v->dump() + ", expected a number");
    return v->get<double>();
  }
  double req_num(const std::string& k) const {
    auto v = opt_num(k);
    if (!v) fail_missing(k);
    return *v;
  }
  std::optional<bool> opt_bool(const std::string& k) const {
    const json* v = get(k);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) fail(k, "is " + v->dump() + ", expected true or false");
    return v->get<bool>();
  }
  std::optional<std::string> opt_str(const std::string& k) const {
    const json* v = get(k);
    if (!v) return std::nullopt;
    if (!v->is_string()) fail(k, "is " + v->dump() + ", expected a string");
    return v->get<std::string>();
  }
  [[noreturn]] void fail_missing(const std::string& k) const {
    throw Error(src_ + ": missing required field " + name(k));
  }

 private:
  const json& j_;
  std::string src_, prefix_;
};

std::string fmt_num(double d) {
  json j = d;
  return j.dump();
}

// Rope settings from either rope_parameters (5.x) or rope_theta + rope_scaling (4.x).
RopeConfig parse_rope(const Fields& top, const std::string& src) {
  RopeConfig r;
  const json* params = top.get("rope_parameters");
  const json* scaling = top.get("rope_scaling");
  if (params && scaling)
    top.fail_msg("both 'rope_parameters' and 'rope_scaling' are set; expected one of them "
                 "(rope_parameters in transformers 5.x configs, rope_scaling in 4.x)");
  const std::optional<double> top_theta = top.opt_num("rope_theta");

  const json* obj = params ? params : scaling;
  const std::string obj_name = params ? "rope_parameters" : "rope_scaling";
  if (obj && !obj->is_object())
    top.fail(obj_name, "is " + obj->dump() + ", expected an object or null");

  r.theta = top_theta.value_or(10000.0);
  std::string type = "default";
  if (obj) {
    Fields f(*obj, src, obj_name + ".");
    if (params) {
      if (auto t = f.opt_num("rope_theta")) {
        if (top_theta && *top_theta != *t)
          top.fail_msg("'rope_theta' " + fmt_num(*top_theta) + " and 'rope_parameters.rope_theta' " +
                       fmt_num(*t) + " disagree");
        r.theta = *t;
      }
    }
    const auto rt = f.opt_str("rope_type");
    const auto legacy = f.opt_str("type");
    if (rt && legacy && *rt != *legacy)
      f.fail("rope_type", "is \"" + *rt + "\" but '" + obj_name + ".type' is \"" + *legacy + "\"");
    if (rt) type = *rt;
    else if (legacy) type = *legacy;
    else if (!params) f.fail_missing("rope_type");
    const std::string type_field = rt || !legacy ? "rope_type" : "type";

    if (type == "default") {
      r.type = RopeType::DEFAULT;
    } else if (type == "llama3") {
      r.type = RopeType::LLAMA3;
      r.factor = f.req_num("factor");
      r.low_freq_factor = f.req_num("low_freq_factor");
      r.high_freq_factor = f.req_num("high_freq_factor");
      r.original_max_position_embeddings = f.positive(
          "original_max_position_embeddings", f.req_int("original_max_position_embeddings"));
      if (!(r.factor > 0)) f.fail("factor", "is " + fmt_num(r.factor) + ", expected > 0");
      if (!(r.low_freq_factor > 0))
        f.fail("low_freq_factor", "is " + fmt_num(r.low_freq_factor) + ", expected > 0");
      if (!(r.high_freq_factor > r.low_freq_factor))
        f.fail("high_freq_factor", "is " + fmt_num(r.high_freq_factor) +
                                       ", expected greater than low_freq_factor " +
                                       fmt_num(r.low_freq_factor));
    } else {
      f.fail(type_field, "is \"" + type + "\": this rope type is not supported (supported: "
                         "\"default\", \"llama3\")");
    }
    if (auto p = f.opt_num("partial_rotary_factor"); p && *p != 1.0)
      f.fail("partial_rotary_factor", "is " + fmt_num(*p) + ", only 1.0 is supported");
  }
  if (auto p = top.opt_num("partial_rotary_factor"); p && *p != 1.0)
    top.fail("partial_rotary_factor", "is " + fmt_num(*p) + ", only 1.0 is supported");
  if (!(r.theta > 0) || !std::isfinite(r.theta))
    top.fail(params ? "rope_parameters.rope_theta" : "rope_theta",
             "is " + fmt_num(r.theta) + ", expected a positive number");
  return r;
}

DType parse_dtype_field(const Fields& f) {
  const auto d5 = f.opt_str("dtype");
  const auto d4 = f.opt_str("torch_dtype");
  if (d5 && d4 && *d5 != *d4)
    f.fail_msg("'dtype' \"" + *d5 + "\" and 'torch_dtype' \"" + *d4 + "\" disagree");
  if (!d5 && !d4) return DType::F32;  // transformers' default when unspecified
  const std::string s = d5 ? *d5 : *d4;
  const std::string field = d5 ? "dtype" : "torch_dtype";
  if (s == "bfloat16") return DType::BF16;
  if (s == "float16" || s == "half") return DType::F16;
  if (s == "float32" || s == "float") return DType::F32;
  f.fail(field, "is \"" + s + "\", expected \"bfloat16\", \"float16\" or \"float32\"");
}

}  // namespace

ModelConfig config_parse(const std::string& json_text, const std::string& source) {
  const json root = detail::parse_json_strict(json_text, source);
  if (!root.is_object())
    throw Error(source + ": expected a JSON object, found a " + std::string(root.type_name()));
  Fields f(root, source);
  ModelConfig c;

  // ---- architecture
  const auto mt = f.opt_str("model_type");
  if (!mt) f.fail_missing("model_type");
  const ArchRow* row = nullptr;
  for (const auto& r : kArchs)
    if (*mt == r.model_type) row = &r;
  if (!row)
    f.fail("model_type", "is \"" + *mt + "\": not a supported model type (supported: llama, "
                         "mistral, qwen2, qwen3)");
  c.arch = row->arch;
  c.model_type = row->model_type;
  if (const json* a = f.get("architectures")) {
    if (!a->is_array() || a->empty())
      f.fail("architectures", "is " + a->dump() + ", expected a list with one class name");
    for (const json& e : *a) {
      if (!e.is_string() || e.get<std::string>() != arch_name(c.arch))
        f.fail("architectures", "is " + a->dump() + ", expected [\"" + arch_name(c.arch) +
                                    "\"] for model_type \"" + c.model_type + "\"");
    }
  }
  if (const json* qc = f.get("quantization_config"))
    f.fail("quantization_config", "is present (" + qc->value("quant_method", std::string("?")) +
                                      "): quantized checkpoints are not supported");

  // ---- sizes
  c.hidden_size = f.positive("hidden_size", f.req_int("hidden_size"));
  c.num_layers = f.positive("num_hidden_layers", f.req_int("num_hidden_layers"));
  c.num_heads = f.positive("num_attention_heads", f.req_int("num_attention_heads"));
  c.intermediate_size = f.positive("intermediate_size", f.req_int("intermediate_size"));
  c.vocab_size = f.positive("vocab_size", f.req_int("vocab_size"));

  if (auto kv = f.opt_int("num_key_value_heads"))
    c.num_kv_heads = *kv;
  else if (f.is_null("num_key_value_heads") || row->default_kv_heads == 0)
    c.num_kv_heads = c.num_heads;
  else
    c.num_kv_heads = row->default_kv_heads;
  f.positive("num_key_value_heads", c.num_kv_heads);
  if (c.num_heads % c.num_kv_heads != 0)
    f.fail("num_key_value_heads",
           "is " + std::to_string(c.num_kv_heads) + (f.present("num_key_value_heads") ? "" : " (default)") +
               ", expected a divisor of num_attention_heads " + std::to_string(c.num_heads));

  if (auto hd = f.opt_int("head_dim")) {
    c.head_dim = f.positive("head_dim", *hd);
  } else if (row->default_head_dim && !f.is_null("head_dim")) {
    c.head_dim = row->default_head_dim;
  } else {
    if (c.hidden_size % c.num_heads != 0)
      f.fail("num_attention_heads", "is " + std::to_string(c.num_heads) +
                                        ", expected a divisor of hidden_size " +
                                        std::to_string(c.hidden_size) + " (no head_dim given)");
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.head_dim % 2 != 0)
    f.fail("head_dim", "is " + std::to_string(c.head_dim) + ", expected an even number (rotary pairs)");

  c.max_position_embeddings =
      f.positive("max_position_embeddings", f.opt_int("max_position_embeddings").value_or(row->default_max_pos));

  c.rms_norm_eps = f.opt_num("rms_norm_eps").value_or(1e-6);
  if (!(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps))
    f.fail("rms_norm_eps", "is " + fmt_num(c.rms_norm_eps) + ", expected a positive number");

  // ---- activation, biases, norms
  const std::string act = f.opt_str("hidden_act").value_or("silu");
  if (act != "silu") f.fail("hidden_act", "is \"" + act + "\", only \"silu\" is supported");

  c.tie_word_embeddings = f.opt_bool("tie_word_embeddings").value_or(false);
  switch (c.arch) {
    case Arch::LLAMA:
      c.attention_bias = c.o_proj_bias = f.opt_bool("attention_bias").value_or(false);
      if (f.opt_bool("mlp_bias").value_or(false))
        f.fail("mlp_bias", "is true: MLP biases are not supported");
      break;
    case Arch::MISTRAL:
      break;  // MistralAttention has no biases (an attention_bias field is ignored, as in transformers)
    case Arch::QWEN2:
      c.attention_bias = true;  // Qwen2 always has q/k/v biases, never an o_proj bias
      break;
    case Arch::QWEN3:
      c.attention_bias = c.o_proj_bias = f.opt_bool("attention_bias").value_or(false);
      c.qk_norm = true;
      break;
  }

  // ---- sliding window
  if (c.arch == Arch::QWEN2 || c.arch == Arch::QWEN3) {
    if (f.opt_bool("use_sliding_window").value_or(false))
      f.fail("use_sliding_window", "is true: sliding-window attention is not supported");
  } else if (c.arch == Arch::MISTRAL) {
    if (!f.present("sliding_window"))
      f.fail("sliding_window", "is absent, which transformers reads as 4096 for Mistral: sliding-window "
                               "attention is not supported (a config with \"sliding_window\": null is)");
    if (auto sw = f.opt_int("sliding_window"))
      f.fail("sliding_window", "is " + std::to_string(*sw) +
                                   ": sliding-window attention is not supported (expected null)");
  }
  if (const json* lt = f.get("layer_types")) {
    if (!lt->is_array() || lt->size() != static_cast<size_t>(c.num_layers))
      f.fail("layer_types", "has " + std::to_string(lt->is_array() ? lt->size() : 0) +
                                " entries, expected a list of num_hidden_layers " +
                                std::to_string(c.num_layers) + " strings");
    for (size_t i = 0; i < lt->size(); ++i) {
      const json& e = (*lt)[i];
      if (!e.is_string() || e.get<std::string>() != "full_attention")
        f.fail("layer_types", "entry " + std::to_string(i) + " is " + e.dump() +
                                  ", only \"full_attention\" is supported");
    }
  }
  c.sliding_window = 0;

  c.rope = parse_rope(f, source);
  c.dtype = parse_dtype_field(f);
  return c;
}

ModelConfig config_load(const std::string& path) {
  std::error_code ec;
  std::string file = path;
  if (std::filesystem::is_directory(path, ec))
    file = (std::filesystem::path(path) / "config.json").string();
  return config_parse(detail::read_text_file(file), file);
}

}  // namespace spense
