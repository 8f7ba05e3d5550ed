// The architecture table (src/model/arch.cpp): walks every supported architecture and checks
// the tensor list it expects, with the HF names and shapes, and the module classification
// used by `spense inspect`.
#include <gtest/gtest.h>

#include <set>

#include "model/arch.h"
#include "spense/model.h"

using namespace spense;

namespace {

ModelConfig config_for(Arch a) {
  ModelConfig c;
  c.arch = a;
  c.hidden_size = 64;
  c.num_layers = 3;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 32;
  c.intermediate_size = 96;
  c.vocab_size = 128;
  c.max_position_embeddings = 256;
  return c;
}

TEST(Arch, EveryArchitectureHasACompleteTensorList) {
  for (Arch a : arch::all_archs()) {
    for (bool tied : {false, true}) {
      for (bool bias : {false, true}) {
        ModelConfig c = config_for(a);
        c.tie_word_embeddings = tied;
        c.attention_bias = bias || a == Arch::QWEN2;
        c.qk_norm = a == Arch::QWEN3;
        SCOPED_TRACE(std::string(arch::arch_traits(a).model_type) + (tied ? " tied" : "") + (bias ? " bias" : ""));
        arch::validate_config(c, "test");
        const auto specs = arch::model_tensors(c);
        std::set<std::string> names;
        for (const auto& s : specs) {
          EXPECT_TRUE(names.insert(s.name).second) << "duplicate " << s.name;
          EXPECT_NE(tensor_module_kind(s.name), ModuleKind::OTHER) << s.name;
        }
        const bool qkv_bias = arch::has_qkv_bias(c), o_bias = arch::has_o_bias(c), qk = arch::has_qk_norm(c);
        const size_t per_layer = 9 + (qkv_bias ? 3 : 0) + (o_bias ? 1 : 0) + (qk ? 2 : 0);
        EXPECT_EQ(specs.size(), 2 + (tied ? 0 : 1) + c.num_layers * per_layer);
        EXPECT_EQ(names.count("lm_head.weight"), tied ? 0u : 1u);
        EXPECT_TRUE(names.count("model.layers.2.mlp.down_proj.weight"));
        for (const auto& s : specs) {
          if (s.name == "model.layers.1.self_attn.q_proj.weight") {
            EXPECT_EQ(s.shape, (std::vector<int64_t>{4 * 32, 64}));
          }
          if (s.name == "model.layers.1.self_attn.k_proj.weight") {
            EXPECT_EQ(s.shape, (std::vector<int64_t>{2 * 32, 64}));
          }
          if (s.name == "model.layers.1.self_attn.o_proj.weight") {
            EXPECT_EQ(s.shape, (std::vector<int64_t>{64, 4 * 32}));
          }
          if (s.name == "model.layers.1.mlp.down_proj.weight") {
            EXPECT_EQ(s.shape, (std::vector<int64_t>{64, 96}));
          }
          if (s.name == "model.embed_tokens.weight") {
            EXPECT_EQ(s.shape, (std::vector<int64_t>{128, 64}));
          }
        }
      }
    }
  }
}

TEST(Arch, QuirksPerArchitecture) {
  ModelConfig q2 = config_for(Arch::QWEN2);
  EXPECT_TRUE(arch::has_qkv_bias(q2));  // always, whatever the config says
  EXPECT_FALSE(arch::has_o_bias(q2));
  ModelConfig q3 = config_for(Arch::QWEN3);
  EXPECT_TRUE(arch::has_qk_norm(q3));
  EXPECT_FALSE(arch::has_qkv_bias(q3));
  q3.attention_bias = true;
  EXPECT_TRUE(arch::has_o_bias(q3));
  ModelConfig ll = config_for(Arch::LLAMA);
  EXPECT_FALSE(arch::has_qk_norm(ll));
  ll.attention_bias = true;
  EXPECT_TRUE(arch::has_qkv_bias(ll));
  EXPECT_TRUE(arch::has_o_bias(ll));
  ModelConfig mi = config_for(Arch::MISTRAL);
  mi.attention_bias = true;
  EXPECT_FALSE(arch::has_qkv_bias(mi));
}

TEST(Arch, ModuleKinds) {
  EXPECT_EQ(tensor_module_kind("model.embed_tokens.weight"), ModuleKind::EMBEDDING);
  EXPECT_EQ(tensor_module_kind("lm_head.weight"), ModuleKind::LM_HEAD);
  EXPECT_EQ(tensor_module_kind("model.norm.weight"), ModuleKind::NORM);
  EXPECT_EQ(tensor_module_kind("model.layers.10.input_layernorm.weight"), ModuleKind::NORM);
  EXPECT_EQ(tensor_module_kind("model.layers.0.self_attn.q_norm.weight"), ModuleKind::NORM);
  EXPECT_EQ(tensor_module_kind("model.layers.0.self_attn.v_proj.bias"), ModuleKind::ATTENTION);
  EXPECT_EQ(tensor_module_kind("model.layers.0.mlp.up_proj.weight"), ModuleKind::MLP);
  EXPECT_EQ(tensor_module_kind("model.layers.0.self_attn.rotary_emb.inv_freq"), ModuleKind::OTHER);
  EXPECT_EQ(tensor_module_kind("something.else"), ModuleKind::OTHER);
}

TEST(Arch, InvalidShapesAreRefused) {
  ModelConfig c = config_for(Arch::LLAMA);
  c.num_kv_heads = 3;
  EXPECT_THROW(arch::validate_config(c, "cfg"), std::exception);
  c = config_for(Arch::LLAMA);
  c.head_dim = 15;
  EXPECT_THROW(arch::validate_config(c, "cfg"), std::exception);
  c = config_for(Arch::LLAMA);
  c.vocab_size = 0;
  EXPECT_THROW(arch::validate_config(c, "cfg"), std::exception);
}

TEST(Arch, ProjectionRoles) {
  EXPECT_EQ(proj_input(Proj::K), LinearInput::QKV);
  EXPECT_EQ(proj_input(Proj::UP), LinearInput::GATE_UP);
  EXPECT_EQ(proj_input(Proj::DOWN), LinearInput::DOWN);
  EXPECT_STREQ(proj_name(Proj::O), "self_attn.o_proj");
  LayerWeights L;
  EXPECT_EQ(&L.proj(Proj::GATE), &L.gate);
}

}  // namespace
