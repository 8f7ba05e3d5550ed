// config.json parsing: realistic configs of each architecture in both transformers
// spellings (4.x: rope_theta / rope_scaling / torch_dtype; 5.x: rope_parameters / dtype),
// defaults for absent fields, and every refusal naming the file and the field.
//
// The sample configs reproduce the published config.json files of Qwen3-0.6B,
// Llama-3.1-8B, Qwen2.5-0.5B and Mistral-7B-v0.3 (values as on the Hugging Face Hub);
// the 5.x variants move rope_theta/rope_scaling into rope_parameters and rename
// torch_dtype to dtype, as transformers 5 writes them. Default values are those of the
// transformers config classes (LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "spense/config.h"
#include "spense/error.h"

using namespace spense;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const char* kQwen3_06B_v4 = R"({
  "architectures": ["Qwen3ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "head_dim": 128,
  "hidden_act": "silu",
  "hidden_size": 1024,
  "initializer_range": 0.02,
  "intermediate_size": 3072,
  "max_position_embeddings": 40960,
  "max_window_layers": 28,
  "model_type": "qwen3",
  "num_attention_heads": 16,
  "num_hidden_layers": 28,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06,
  "rope_scaling": null,
  "rope_theta": 1000000,
  "sliding_window": null,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.51.0",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
})";

const char* kLlama31_8B_v4 = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": 128001,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

const char* kQwen25_05B_v4 = R"({
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 896,
  "initializer_range": 0.02,
  "intermediate_size": 4864,
  "max_position_embeddings": 32768,
  "max_window_layers": 24,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
})";

const char* kMistral7B_v03_v4 = R"({
  "architectures": ["MistralForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 1000000.0,
  "sliding_window": null,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.42.0.dev0",
  "use_cache": true,
  "vocab_size": 32768
})";

// The transformers 5.x spelling of a 4.x config: rope_theta and rope_scaling folded into
// rope_parameters (rope_type "default" when there was no scaling), torch_dtype -> dtype,
// and layer_types written out for the Qwen models.
json to_v5(const char* v4) {
  json j = json::parse(v4);
  json rp = j.contains("rope_scaling") && !j["rope_scaling"].is_null() ? j["rope_scaling"]
                                                                       : json{{"rope_type", "default"}};
  rp["rope_theta"] = j["rope_theta"];
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j["rope_parameters"] = rp;
  j["dtype"] = j["torch_dtype"];
  j.erase("torch_dtype");
  if (j["model_type"] == "qwen2" || j["model_type"] == "qwen3")
    j["layer_types"] = std::vector<std::string>(j["num_hidden_layers"].get<size_t>(), "full_attention");
  j["transformers_version"] = "5.0.0";
  return j;
}

ModelConfig parse(const json& j) { return config_parse(j.dump(2), "/ckpt/config.json"); }

// Expects config_parse to throw an Error whose message has the file name and all parts.
void expect_refused(const json& j, std::initializer_list<std::string> parts) {
  try {
    parse(j);
    ADD_FAILURE() << "accepted: " << j.dump();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.rfind("/ckpt/config.json: ", 0), 0u) << m;
    for (const auto& p : parts) EXPECT_NE(m.find(p), std::string::npos) << "'" << p << "' not in: " << m;
    EXPECT_EQ(e.exit_code(), 2);
  }
}

json minimal(const std::string& model_type) {
  return json{{"model_type", model_type}, {"hidden_size", 4096},       {"num_hidden_layers", 2},
              {"num_attention_heads", 32}, {"intermediate_size", 11008}, {"vocab_size", 1000}};
}

}  // namespace

TEST(io_Config, Qwen3_06B_BothSpellings) {
  for (const json& j : {json::parse(kQwen3_06B_v4), to_v5(kQwen3_06B_v4)}) {
    SCOPED_TRACE(j.dump());
    const ModelConfig c = parse(j);
    EXPECT_EQ(c.arch, Arch::QWEN3);
    EXPECT_STREQ(arch_name(c.arch), "Qwen3ForCausalLM");
    EXPECT_EQ(c.model_type, "qwen3");
    EXPECT_EQ(c.hidden_size, 1024);
    EXPECT_EQ(c.num_layers, 28);
    EXPECT_EQ(c.num_heads, 16);
    EXPECT_EQ(c.num_kv_heads, 8);
    EXPECT_EQ(c.head_dim, 128);  // explicit; != 1024 / 16
    EXPECT_EQ(c.intermediate_size, 3072);
    EXPECT_EQ(c.vocab_size, 151936);
    EXPECT_EQ(c.max_position_embeddings, 40960);
    EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
    EXPECT_DOUBLE_EQ(c.rope.theta, 1e6);
    EXPECT_EQ(c.rope.type, RopeType::DEFAULT);
    EXPECT_TRUE(c.tie_word_embeddings);
    EXPECT_FALSE(c.attention_bias);
    EXPECT_FALSE(c.o_proj_bias);
    EXPECT_TRUE(c.qk_norm);
    EXPECT_EQ(c.dtype, DType::BF16);
    EXPECT_EQ(c.sliding_window, 0);
  }
}

TEST(io_Config, Llama31_8B_Llama3RopeBothSpellings) {
  for (const json& j : {json::parse(kLlama31_8B_v4), to_v5(kLlama31_8B_v4)}) {
    SCOPED_TRACE(j.dump());
    const ModelConfig c = parse(j);
    EXPECT_EQ(c.arch, Arch::LLAMA);
    EXPECT_STREQ(arch_name(c.arch), "LlamaForCausalLM");
    EXPECT_EQ(c.model_type, "llama");
    EXPECT_EQ(c.hidden_size, 4096);
    EXPECT_EQ(c.num_layers, 32);
    EXPECT_EQ(c.num_heads, 32);
    EXPECT_EQ(c.num_kv_heads, 8);
    EXPECT_EQ(c.head_dim, 128);  // 4096 / 32
    EXPECT_EQ(c.intermediate_size, 14336);
    EXPECT_EQ(c.vocab_size, 128256);
    EXPECT_EQ(c.max_position_embeddings, 131072);
    EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
    EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
    EXPECT_EQ(c.rope.type, RopeType::LLAMA3);
    EXPECT_DOUBLE_EQ(c.rope.factor, 8.0);
    EXPECT_DOUBLE_EQ(c.rope.low_freq_factor, 1.0);
    EXPECT_DOUBLE_EQ(c.rope.high_freq_factor, 4.0);
    EXPECT_EQ(c.rope.original_max_position_embeddings, 8192);
    EXPECT_FALSE(c.tie_word_embeddings);
    EXPECT_FALSE(c.attention_bias);
    EXPECT_FALSE(c.o_proj_bias);
    EXPECT_FALSE(c.qk_norm);
    EXPECT_EQ(c.dtype, DType::BF16);
  }
  // The legacy key "type" instead of "rope_type" (older Llama 3.1 exports).
  json j = json::parse(kLlama31_8B_v4);
  j["rope_scaling"].erase("rope_type");
  j["rope_scaling"]["type"] = "llama3";
  EXPECT_EQ(parse(j).rope.type, RopeType::LLAMA3);
}

TEST(io_Config, Qwen25_05B_BothSpellings) {
  for (const json& j : {json::parse(kQwen25_05B_v4), to_v5(kQwen25_05B_v4)}) {
    SCOPED_TRACE(j.dump());
    const ModelConfig c = parse(j);
    EXPECT_EQ(c.arch, Arch::QWEN2);
    EXPECT_STREQ(arch_name(c.arch), "Qwen2ForCausalLM");
    EXPECT_EQ(c.model_type, "qwen2");
    EXPECT_EQ(c.hidden_size, 896);
    EXPECT_EQ(c.num_layers, 24);
    EXPECT_EQ(c.num_heads, 14);
    EXPECT_EQ(c.num_kv_heads, 2);
    EXPECT_EQ(c.head_dim, 64);  // 896 / 14
    EXPECT_EQ(c.intermediate_size, 4864);
    EXPECT_EQ(c.vocab_size, 151936);
    EXPECT_EQ(c.max_position_embeddings, 32768);
    EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
    EXPECT_DOUBLE_EQ(c.rope.theta, 1e6);
    EXPECT_EQ(c.rope.type, RopeType::DEFAULT);
    EXPECT_TRUE(c.tie_word_embeddings);
    EXPECT_TRUE(c.attention_bias);  // Qwen2: q/k/v biases always
    EXPECT_FALSE(c.o_proj_bias);
    EXPECT_FALSE(c.qk_norm);
    EXPECT_EQ(c.dtype, DType::BF16);
    EXPECT_EQ(c.sliding_window, 0);  // sliding_window is ignored while use_sliding_window is false
  }
}

TEST(io_Config, Mistral7B_BothSpellings) {
  for (const json& j : {json::parse(kMistral7B_v03_v4), to_v5(kMistral7B_v03_v4)}) {
    SCOPED_TRACE(j.dump());
    const ModelConfig c = parse(j);
    EXPECT_EQ(c.arch, Arch::MISTRAL);
    EXPECT_STREQ(arch_name(c.arch), "MistralForCausalLM");
    EXPECT_EQ(c.model_type, "mistral");
    EXPECT_EQ(c.hidden_size, 4096);
    EXPECT_EQ(c.num_layers, 32);
    EXPECT_EQ(c.num_heads, 32);
    EXPECT_EQ(c.num_kv_heads, 8);
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.intermediate_size, 14336);
    EXPECT_EQ(c.vocab_size, 32768);
    EXPECT_EQ(c.max_position_embeddings, 32768);
    EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
    EXPECT_DOUBLE_EQ(c.rope.theta, 1e6);
    EXPECT_EQ(c.rope.type, RopeType::DEFAULT);
    EXPECT_FALSE(c.tie_word_embeddings);
    EXPECT_FALSE(c.attention_bias);
    EXPECT_FALSE(c.o_proj_bias);
    EXPECT_FALSE(c.qk_norm);
    EXPECT_EQ(c.dtype, DType::BF16);
    EXPECT_EQ(c.sliding_window, 0);
  }
}

TEST(io_Config, DefaultsForAbsentFields) {
  {  // LlamaConfig: kv heads = heads, head_dim = hidden / heads, max_pos 2048.
    const ModelConfig c = parse(minimal("llama"));
    EXPECT_EQ(c.num_kv_heads, 32);
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.max_position_embeddings, 2048);
    EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
    EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
    EXPECT_EQ(c.rope.type, RopeType::DEFAULT);
    EXPECT_FALSE(c.tie_word_embeddings);
    EXPECT_FALSE(c.attention_bias);
    EXPECT_EQ(c.dtype, DType::F32);  // no torch_dtype: transformers loads fp32
  }
  {  // MistralConfig: kv heads 8, max_pos 4096*32 (sliding_window must be given as null).
    json j = minimal("mistral");
    j["sliding_window"] = nullptr;
    const ModelConfig c = parse(j);
    EXPECT_EQ(c.num_kv_heads, 8);
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.max_position_embeddings, 131072);
  }
  {  // Qwen2Config: kv heads 32, max_pos 32768, q/k/v biases.
    const ModelConfig c = parse(minimal("qwen2"));
    EXPECT_EQ(c.num_kv_heads, 32);
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.max_position_embeddings, 32768);
    EXPECT_TRUE(c.attention_bias);
    EXPECT_FALSE(c.tie_word_embeddings);
  }
  {  // Qwen3Config: kv heads 32, head_dim 128 regardless of hidden / heads.
    json j = minimal("qwen3");
    j["hidden_size"] = 2048;  // 2048 / 32 = 64, but Qwen3's default head_dim is 128
    const ModelConfig c = parse(j);
    EXPECT_EQ(c.num_kv_heads, 32);
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.max_position_embeddings, 32768);
    EXPECT_TRUE(c.qk_norm);
    EXPECT_FALSE(c.tie_word_embeddings);
  }
  {  // Explicit nulls mean "use heads" / "derive".
    json j = minimal("qwen3");
    j["num_key_value_heads"] = nullptr;
    j["head_dim"] = nullptr;
    j["rope_scaling"] = nullptr;
    j["rope_parameters"] = nullptr;
    const ModelConfig c = parse(j);
    EXPECT_EQ(c.num_kv_heads, 32);
    EXPECT_EQ(c.head_dim, 128);
  }
  {  // 5.x rope_parameters without rope_theta: the top-level one or 10000.
    json j = minimal("llama");
    j["rope_parameters"] = {{"rope_type", "default"}};
    EXPECT_DOUBLE_EQ(parse(j).rope.theta, 10000.0);
    j["rope_theta"] = 250000.0;
    EXPECT_DOUBLE_EQ(parse(j).rope.theta, 250000.0);
  }
  {  // Llama / Qwen3 with attention_bias: q/k/v and o_proj biases.
    json j = minimal("llama");
    j["attention_bias"] = true;
    EXPECT_TRUE(parse(j).attention_bias);
    EXPECT_TRUE(parse(j).o_proj_bias);
    j = minimal("qwen3");
    j["attention_bias"] = true;
    EXPECT_TRUE(parse(j).o_proj_bias);
  }
  {  // dtype spellings; a Llama with an explicit head_dim that is not hidden / heads.
    json j = minimal("llama");
    j["torch_dtype"] = "float16";
    EXPECT_EQ(parse(j).dtype, DType::F16);
    j["dtype"] = "float16";
    EXPECT_EQ(parse(j).dtype, DType::F16);
    j.erase("torch_dtype");
    j["dtype"] = "float32";
    EXPECT_EQ(parse(j).dtype, DType::F32);
    j["head_dim"] = 64;
    EXPECT_EQ(parse(j).head_dim, 64);
    j["hidden_size"] = 4000.0;  // integral floats are tolerated
    EXPECT_EQ(parse(j).hidden_size, 4000);
  }
}

TEST(io_Config, RefusesUnsupportedAndInvalid) {
  const json llama = json::parse(kLlama31_8B_v4);
  const json qwen3 = json::parse(kQwen3_06B_v4);
  const json qwen2 = json::parse(kQwen25_05B_v4);
  const json mistral = json::parse(kMistral7B_v03_v4);
  auto with = [](json j, const std::string& k, const json& v) {
    j[k] = v;
    return j;
  };
  auto without = [](json j, const std::string& k) {
    j.erase(k);
    return j;
  };

  // Architecture.
  expect_refused(with(llama, "model_type", "gemma2"), {"'model_type'", "\"gemma2\"", "not a supported"});
  expect_refused(without(llama, "model_type"), {"missing required field 'model_type'"});
  expect_refused(with(qwen3, "architectures", json::array({"Qwen3MoeForCausalLM"})),
                 {"'architectures'", "Qwen3MoeForCausalLM", "expected [\"Qwen3ForCausalLM\"]"});
  expect_refused(with(llama, "model_type", "mistral"), {"'architectures'", "LlamaForCausalLM"});
  expect_refused(with(llama, "architectures", json::array()), {"'architectures'"});
  expect_refused(with(llama, "quantization_config", {{"quant_method", "gptq"}}),
                 {"'quantization_config'", "gptq", "not supported"});
  expect_refused(with(llama, "mlp_bias", true), {"'mlp_bias'"});

  // Rope.
  json j = qwen2;
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  expect_refused(j, {"'rope_scaling.type'", "\"yarn\"", "not supported"});
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  expect_refused(j, {"'rope_scaling.rope_type'", "\"linear\""});
  j = to_v5(kLlama31_8B_v4);
  j["rope_parameters"]["rope_type"] = "dynamic";
  expect_refused(j, {"'rope_parameters.rope_type'", "\"dynamic\""});
  j = llama;
  j["rope_scaling"].erase("factor");
  expect_refused(j, {"missing required field 'rope_scaling.factor'"});
  j = to_v5(kLlama31_8B_v4);
  j["rope_parameters"].erase("original_max_position_embeddings");
  expect_refused(j, {"missing required field 'rope_parameters.original_max_position_embeddings'"});
  j = llama;
  j["rope_scaling"]["high_freq_factor"] = 1.0;
  expect_refused(j, {"'rope_scaling.high_freq_factor'", "greater than low_freq_factor"});
  j = llama;
  j["rope_scaling"]["type"] = "yarn";
  expect_refused(j, {"'rope_scaling.rope_type'", "\"llama3\"", "\"yarn\""});
  j = llama;
  j["rope_scaling"].erase("rope_type");
  expect_refused(j, {"missing required field 'rope_scaling.rope_type'"});
  j = to_v5(kLlama31_8B_v4);
  j["rope_scaling"] = llama["rope_scaling"];
  expect_refused(j, {"'rope_parameters'", "'rope_scaling'"});
  j = to_v5(kQwen3_06B_v4);
  j["rope_theta"] = 10000;
  expect_refused(j, {"'rope_theta'", "'rope_parameters.rope_theta'", "disagree"});
  expect_refused(with(qwen3, "rope_theta", -1), {"'rope_theta'", "positive"});
  expect_refused(with(qwen3, "rope_scaling", "llama3"), {"'rope_scaling'", "expected an object"});
  expect_refused(with(qwen3, "partial_rotary_factor", 0.5), {"'partial_rotary_factor'"});

  // Sliding windows.
  expect_refused(with(qwen2, "use_sliding_window", true), {"'use_sliding_window'", "not supported"});
  expect_refused(with(qwen3, "use_sliding_window", true), {"'use_sliding_window'"});
  expect_refused(with(mistral, "sliding_window", 4096), {"'sliding_window'", "4096", "not supported"});
  expect_refused(without(mistral, "sliding_window"), {"'sliding_window'", "absent", "4096"});
  j = to_v5(kQwen3_06B_v4);
  j["layer_types"][3] = "sliding_attention";
  expect_refused(j, {"'layer_types'", "entry 3", "sliding_attention"});
  j = to_v5(kQwen3_06B_v4);
  j["layer_types"].erase(0);
  expect_refused(j, {"'layer_types'", "27 entries", "28"});

  // Sizes.
  for (const char* k : {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"}) {
    expect_refused(without(qwen3, k), {std::string("missing required field '") + k + "'"});
    expect_refused(with(qwen3, k, nullptr), {std::string("missing required field '") + k + "'"});
    expect_refused(with(qwen3, k, 0), {std::string("'") + k + "'", "is 0, expected a positive integer"});
    expect_refused(with(qwen3, k, -4), {std::string("'") + k + "'", "is -4"});
    expect_refused(with(qwen3, k, "1024"), {std::string("'") + k + "'", "expected an integer"});
  }
  expect_refused(with(qwen3, "num_key_value_heads", 0), {"'num_key_value_heads'", "positive"});
  expect_refused(with(qwen3, "num_key_value_heads", 3), {"'num_key_value_heads'", "is 3", "divisor of num_attention_heads 16"});
  expect_refused(with(qwen3, "head_dim", 0), {"'head_dim'"});
  expect_refused(with(qwen3, "head_dim", 127), {"'head_dim'", "even"});
  expect_refused(with(qwen3, "max_position_embeddings", 0), {"'max_position_embeddings'"});
  expect_refused(with(qwen3, "rms_norm_eps", 0), {"'rms_norm_eps'"});
  expect_refused(with(llama, "num_attention_heads", 24), {"'num_attention_heads'", "divisor of hidden_size 4096"});
  // Qwen3 default of 32 kv heads does not divide 16 heads: refused as transformers would fail.
  expect_refused(without(qwen3, "num_key_value_heads"), {"'num_key_value_heads'", "is 32 (default)"});

  // Activation, dtype, types.
  expect_refused(with(llama, "hidden_act", "gelu"), {"'hidden_act'", "\"gelu\"", "silu"});
  expect_refused(with(llama, "torch_dtype", "int8"), {"'torch_dtype'", "\"int8\""});
  expect_refused(with(llama, "dtype", "float16"), {"'dtype'", "'torch_dtype'", "disagree"});
  expect_refused(with(llama, "tie_word_embeddings", "yes"), {"'tie_word_embeddings'", "true or false"});
  expect_refused(with(llama, "num_hidden_layers", 2.5), {"'num_hidden_layers'", "expected an integer"});
}

TEST(io_Config, BadJsonAndFiles) {
  try {
    config_parse("{\"model_type\": ", "/x/config.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/x/config.json: not valid JSON"), std::string::npos) << e.what();
  }
  EXPECT_THROW(config_parse("[1]", "/x/config.json"), Error);
  try {
    config_parse(R"({"model_type":"llama","hidden_size":1,"hidden_size":2})", "/x/config.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'hidden_size' appears more than once"), std::string::npos) << e.what();
  }

  char tmpl[] = "/tmp/spense_cfg_test_XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  {
    std::ofstream(dir + "/config.json") << kQwen3_06B_v4;
  }
  EXPECT_EQ(config_load(dir).hidden_size, 1024);
  EXPECT_EQ(config_load(dir + "/config.json").num_layers, 28);
  try {
    config_load(dir + "/missing");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir + "/missing"), std::string::npos) << e.what();
  }
  {  // Errors from a loaded file name the file, also when given the directory.
    std::ofstream(dir + "/config.json") << R"({"model_type": "gpt2"})";
  }
  try {
    config_load(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(dir + "/config.json: field 'model_type'", 0), 0u) << e.what();
  }
  fs::remove_all(dir);
}
