// Spense v1 in safetensors: four tensors per layer plus a JSON description stored in the
// file's __metadata__ under "<layer>.spense" (docs/format.md). Reading cross-checks the
// JSON against the tensors' dtypes and shapes, then runs spense_validate().
// This file is apart from pack24.cpp so that packing works without the safetensors reader.
#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "spense/error.h"
#include "spense/format.h"
#include "spense/safetensors.h"

namespace spense {

namespace {

constexpr int kVersion = 1;
const std::string kSuffix = ".spense";

std::string tag(const std::string& name) { return "layer '" + name + "'"; }

std::vector<int64_t> dense_shape(const SpenseTensor& t) {
  if (t.layout.axis == SpenseAxis::OUT) return {t.dense_count(), t.K};
  return {t.N, t.dense_count()};
}

nlohmann::json layer_json(const SpenseTensor& t) {
  const int64_t T = spense_num_tiles(t.name, t.N, t.K, t.layout);
  nlohmann::json j;
  j["format"] = "spense";
  j["version"] = kVersion;
  j["dtype"] = dtype_name(t.dtype);
  j["shape"] = {t.N, t.K};
  j["axis"] = spense_axis_name(t.layout.axis);
  j["g"] = t.layout.g;
  j["num_tiles"] = T;
  j["dense_tiles"] = t.layout.dense_tiles;
  j["sparse_shape"] = {t.sparse_rows(), t.sparse_cols()};
  j["dense_shape"] = dense_shape(t);
  j["density"] = t.density();
  j["tensors"] = {{"values", t.name + ".spense.values"},
                  {"meta", t.name + ".spense.meta"},
                  {"dense", t.name + ".spense.dense"},
                  {"dense_tiles", t.name + ".spense.dense_tiles"}};
  return j;
}

const TensorInfo& need(const SafetensorsFile& f, const std::string& layer, const std::string& tname,
                       DType dtype, const std::vector<int64_t>& shape) {
  const TensorInfo* ti = f.find(tname);
  if (!ti) throw Error(f.path() + ": " + tag(layer) + ": missing tensor '" + tname + "'");
  if (ti->dtype != dtype)
    throw Error(f.path() + ": '" + tname + "' dtype " + dtype_name(ti->dtype) + ", expected " +
                dtype_name(dtype));
  if (ti->shape != shape)
    throw Error(f.path() + ": '" + tname + "' shape " + shape_str(ti->shape) + ", expected " +
                shape_str(shape));
  return *ti;
}

}  // namespace

std::string spense_layer_json(const SpenseTensor& t) { return layer_json(t).dump(); }

void spense_write_tensors(SafetensorsWriter& w, const SpenseTensor& t) {
  spense_validate(t);
  const int64_t R = t.sparse_rows(), Ks = t.sparse_cols();
  const auto j = layer_json(t);
  w.add(t.name + ".spense.values", t.dtype, {R, Ks / 2}, t.values.data(), t.values.size());
  w.add(t.name + ".spense.meta", DType::U8, {R, (Ks + 7) / 8}, t.meta.data(), t.meta.size());
  w.add(t.name + ".spense.dense", t.dtype, dense_shape(t), t.dense.data(), t.dense.size());
  w.add(t.name + ".spense.dense_tiles", DType::I64, {int64_t(t.layout.dense_tiles.size())},
        t.layout.dense_tiles.data(), t.layout.dense_tiles.size() * sizeof(int64_t));
  w.set_metadata(t.name + kSuffix, j.dump());
}

std::vector<std::string> spense_list_layers(const SafetensorsFile& f) {
  std::vector<std::string> out;
  for (const auto& [k, v] : f.metadata())
    if (k.size() > kSuffix.size() && k.compare(k.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0)
      out.push_back(k.substr(0, k.size() - kSuffix.size()));
  std::sort(out.begin(), out.end());
  return out;
}

SpenseTensor spense_read_tensors(const SafetensorsFile& f, const std::string& name) {
  const std::string where = f.path() + ": " + tag(name);
  auto it = f.metadata().find(name + kSuffix);
  if (it == f.metadata().end())
    throw Error(where + ": no metadata entry '" + name + kSuffix + "'");
  SpenseTensor t;
  t.name = name;
  try {
    const auto j = nlohmann::json::parse(it->second);
    if (j.at("format").get<std::string>() != "spense")
      throw Error("\"format\" is not \"spense\"");
    const int version = j.at("version").get<int>();
    if (version != kVersion)
      throw Error("format version " + std::to_string(version) + " is not supported (this reader: " +
                  std::to_string(kVersion) + ")");
    const auto dt = j.at("dtype").get<std::string>();
    if (!dtype_parse(dt, &t.dtype)) throw Error("unknown dtype \"" + dt + "\"");
    const auto shape = j.at("shape").get<std::vector<int64_t>>();
    if (shape.size() != 2) throw Error("\"shape\" must have 2 dimensions");
    t.N = shape[0];
    t.K = shape[1];
    const auto ax = j.at("axis").get<std::string>();
    if (!spense_axis_parse(ax, &t.layout.axis)) throw Error("unknown axis \"" + ax + "\"");
    t.layout.g = j.at("g").get<int64_t>();
    t.layout.dense_tiles = j.at("dense_tiles").get<std::vector<int64_t>>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": bad JSON description: " + e.what());
  } catch (const Error& e) {
    throw Error(where + ": " + e.what());
  }
  with_context(f.path(), [&] { spense_layout_check(name, t.N, t.K, t.layout); });
  const int64_t R = t.sparse_rows(), Ks = t.sparse_cols();
  const auto& tv = need(f, name, name + ".spense.values", t.dtype, {R, Ks / 2});
  const auto& tm = need(f, name, name + ".spense.meta", DType::U8, {R, (Ks + 7) / 8});
  const auto& td = need(f, name, name + ".spense.dense", t.dtype, dense_shape(t));
  const auto& tt = need(f, name, name + ".spense.dense_tiles", DType::I64,
                        {int64_t(t.layout.dense_tiles.size())});
  std::vector<int64_t> tiles(t.layout.dense_tiles.size());
  if (!tiles.empty()) std::memcpy(tiles.data(), f.data(tt), tiles.size() * sizeof(int64_t));
  if (tiles != t.layout.dense_tiles)
    throw Error(where + ": tensor '" + tt.name + "' disagrees with the JSON \"dense_tiles\"");
  auto copy = [&](const TensorInfo& ti) {
    const uint8_t* p = f.data(ti);
    return std::vector<uint8_t>(p, p + ti.nbytes());
  };
  t.values = copy(tv);
  t.meta = copy(tm);
  t.dense = copy(td);
  with_context(f.path(), [&] { spense_validate(t); });
  return t;
}

}  // namespace spense
