// Spense tensors in safetensors: write several layers, read them back through the mapped
// reader (bit-exact), and reject files whose JSON and tensors disagree.
// References: round-trip identity, and the tensor names/JSON keys of docs/format.md.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "spense/error.h"
#include "spense/format.h"
#include "spense/safetensors.h"

using namespace spense;
namespace fs = std::filesystem;

namespace {

std::string temp_path(const std::string& tag) {
  return (fs::temp_directory_path() / ("spense_test_format_" + std::to_string(getpid()) + "_" + tag +
                                       ".safetensors")).string();
}

// A random 2:4 (outside dense tiles) matrix in dtype d.
std::vector<uint8_t> random_w(DType d, int64_t N, int64_t K, const SpenseLayout& l, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> f(size_t(N * K), 0.f);
  for (int64_t r = 0; r < N; ++r)
    for (int64_t c = 0; c < K; c += 4) {
      bool dense = false;
      for (int64_t t : l.dense_tiles) {
        const int64_t i = l.axis == SpenseAxis::OUT ? r : c;
        dense |= i >= t * l.g && i < (t + 1) * l.g;
      }
      const int p = int(rng() % 3);  // kept: positions p and 3
      for (int k = 0; k < 4; ++k)
        if (dense || k == p || k == 3) f[size_t(r * K + c + k)] = nd(rng);
    }
  std::vector<uint8_t> out(f.size() * dtype_size(d));
  convert_from_f32(d, f.data(), out.data(), f.size());
  return out;
}

struct Case {
  std::string name;
  DType d;
  int64_t N, K;
  SpenseLayout l;
};

}  // namespace

TEST(FormatSafetensors, WriteReadRoundTrip) {
  const std::vector<Case> cases = {
      {"model.layers.0.self_attn.q_proj", DType::BF16, 32, 48, {SpenseAxis::OUT, 8, {1, 3}}},
      {"model.layers.0.mlp.down_proj", DType::F16, 16, 64, {SpenseAxis::IN, 16, {0, 2}}},
      {"model.layers.1.mlp.up_proj", DType::F32, 8, 24, {SpenseAxis::OUT, 4, {}}},
      {"model.layers.1.mlp.gate_proj", DType::BF16, 8, 16, {SpenseAxis::IN, 4, {0, 1, 2, 3}}},
  };
  SafetensorsWriter w;
  std::vector<std::vector<uint8_t>> dense_in;
  std::vector<SpenseTensor> packed;
  uint32_t seed = 11;
  for (const auto& c : cases) {
    dense_in.push_back(random_w(c.d, c.N, c.K, c.l, seed++));
    packed.push_back(spense_pack(c.name, c.d, c.N, c.K, dense_in.back().data(), c.l));
    spense_write_tensors(w, packed.back());
  }
  const std::string path = temp_path("rt");
  w.write(path);
  {
    auto f = SafetensorsFile::open(path);
    std::vector<std::string> names;
    for (const auto& c : cases) names.push_back(c.name);
    std::sort(names.begin(), names.end());
    EXPECT_EQ(spense_list_layers(*f), names);
    for (size_t i = 0; i < cases.size(); ++i) {
      const auto& c = cases[i];
      const auto t = spense_read_tensors(*f, c.name);
      EXPECT_EQ(t.dtype, c.d);
      EXPECT_EQ(t.layout.axis, c.l.axis);
      EXPECT_EQ(t.layout.g, c.l.g);
      EXPECT_EQ(t.layout.dense_tiles, c.l.dense_tiles);
      EXPECT_EQ(t.values, packed[i].values);
      EXPECT_EQ(t.meta, packed[i].meta);
      EXPECT_EQ(t.dense, packed[i].dense);
      EXPECT_EQ(spense_unpack(t), dense_in[i]) << c.name;
      // The JSON description names the tensors and the layout (docs/format.md "JSON").
      const auto j = nlohmann::json::parse(f->metadata().at(c.name + ".spense"));
      EXPECT_EQ(j.at("format"), "spense");
      EXPECT_EQ(j.at("version"), 1);
      EXPECT_EQ(j.at("dtype"), dtype_name(c.d));
      EXPECT_EQ(j.at("shape"), (std::vector<int64_t>{c.N, c.K}));
      EXPECT_EQ(j.at("tensors").at("meta"), c.name + ".spense.meta");
      const TensorInfo* meta = f->find(c.name + ".spense.meta");
      ASSERT_NE(meta, nullptr);
      EXPECT_EQ(meta->dtype, DType::U8);
      EXPECT_EQ(f->find(c.name + ".spense.dense_tiles")->dtype, DType::I64);
    }
  }
  fs::remove(path);
}

TEST(FormatSafetensors, RejectsInconsistentFiles) {
  const SpenseLayout l{SpenseAxis::OUT, 4, {1}};
  const auto W = random_w(DType::BF16, 8, 16, l, 5);
  const auto t = spense_pack("lay", DType::BF16, 8, 16, W.data(), l);
  const std::string path = temp_path("bad");
  auto expect_read_error = [&](const SafetensorsWriter& w, const char* fragment) {
    w.write(path);
    auto f = SafetensorsFile::open(path);
    try {
      spense_read_tensors(*f, "lay");
      ADD_FAILURE() << "no error for: " << fragment;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("lay"), std::string::npos) << e.what();
    }
  };
  {  // JSON says other dense tiles than the tensor
    SafetensorsWriter w;
    spense_write_tensors(w, t);
    auto j = nlohmann::json::parse(spense_layer_json(t));
    j["dense_tiles"] = {0};
    w.set_metadata("lay.spense", j.dump());
    expect_read_error(w, "disagrees");
  }
  {  // a missing tensor
    SafetensorsWriter w;
    w.add("lay.spense.values", DType::BF16, {4, 8}, t.values.data(), t.values.size());
    w.set_metadata("lay.spense", spense_layer_json(t));
    expect_read_error(w, "missing tensor 'lay.spense.meta'");
  }
  {  // wrong shape of values
    SafetensorsWriter w;
    w.add("lay.spense.values", DType::BF16, {8, 4}, t.values.data(), t.values.size());
    w.set_metadata("lay.spense", spense_layer_json(t));
    expect_read_error(w, "shape [8,4], expected [4,8]");
  }
  {  // a corrupt nibble
    SafetensorsWriter w;
    auto bad = t;
    bad.meta[0] = 0x00;
    w.add("lay.spense.values", DType::BF16, {4, 8}, bad.values.data(), bad.values.size());
    w.add("lay.spense.meta", DType::U8, {4, 2}, bad.meta.data(), bad.meta.size());
    w.add("lay.spense.dense", DType::BF16, {4, 16}, bad.dense.data(), bad.dense.size());
    const int64_t tile = 1;
    w.add("lay.spense.dense_tiles", DType::I64, {1}, &tile, 8);
    w.set_metadata("lay.spense", spense_layer_json(t));
    expect_read_error(w, "strictly increasing");
  }
  {  // unsupported version
    SafetensorsWriter w;
    spense_write_tensors(w, t);
    auto j = nlohmann::json::parse(spense_layer_json(t));
    j["version"] = 2;
    w.set_metadata("lay.spense", j.dump());
    expect_read_error(w, "version 2");
  }
  fs::remove(path);
}
