// Host-side layout of the GPU engine (include/spense/engine_plan.h): per projection formats
// from spense.json or forced, q|k|v and gate|up fusion, and token sampling.
#include "spense/engine_plan.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "spense/error.h"

namespace spense {

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::AUTO: return "auto";
    case WeightFormat::DENSE: return "dense";
    case WeightFormat::SPARSE24: return "24";
    case WeightFormat::SPENSE: return "spense";
  }
  return "?";
}

bool weight_format_parse(const std::string& s, WeightFormat* out) {
  if (s == "auto") *out = WeightFormat::AUTO;
  else if (s == "dense") *out = WeightFormat::DENSE;
  else if (s == "24" || s == "2:4") *out = WeightFormat::SPARSE24;
  else if (s == "spense") *out = WeightFormat::SPENSE;
  else return false;
  return true;
}

const char* proj_kind_name(ProjFormat::Kind k) {
  return k == ProjFormat::DENSE ? "dense" : k == ProjFormat::SPARSE24 ? "2:4" : "spense";
}

std::vector<int64_t> spread_dense_tiles(int64_t tiles, double d) {
  const int64_t nd = std::clamp<int64_t>(std::llround(d * static_cast<double>(tiles)), 0, tiles);
  std::vector<int64_t> v;
  for (int64_t i = 0; i < nd; ++i) v.push_back((2 * i + 1) * tiles / (2 * nd));
  return v;
}

namespace {

// Classifies a validated layout: all tiles dense -> DENSE, none -> SPARSE24, else HYBRID.
ProjFormat from_layout(const SpenseLayout& l, int64_t tiles, bool prune_on_load) {
  ProjFormat f;
  f.prune_on_load = prune_on_load;
  if (static_cast<int64_t>(l.dense_tiles.size()) == tiles) {
    f.kind = ProjFormat::DENSE;
    f.prune_on_load = false;
  } else if (l.dense_tiles.empty()) {
    f.kind = ProjFormat::SPARSE24;
  } else {
    f.kind = ProjFormat::HYBRID;
    f.layout = l;
  }
  return f;
}

}  // namespace

std::map<std::string, ProjFormat> read_spense_json(const std::string& dir, const ModelConfig& cfg) {
  std::map<std::string, ProjFormat> out;
  const std::string path = dir + "/spense.json";
  std::ifstream in(path);
  if (!in) return out;
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const std::exception& e) {
    throw Error(path + ": not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object() || !j.contains("layers") || !j["layers"].is_object())
    throw Error(path + ": no \"layers\" object (not a spense.json written by spense prune?)");
  static const std::regex name_re(R"(^model\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)$)");
  for (const auto& [name, v] : j["layers"].items()) {
    std::smatch m;
    if (!std::regex_match(name, m, name_re))
      throw Error(path + ": layer '" + name + "' is not a decoder projection this engine knows");
    const int64_t layer = std::stoll(m[1].str());
    if (layer >= cfg.num_layers)
      throw Error(path + ": layer '" + name + "' is beyond the model's " + std::to_string(cfg.num_layers) + " layers");
    Proj p = Proj::Q;
    for (Proj q : kAllProjs)
      if (m[2].str() == proj_name(q)) p = q;
    const auto [N, K] = proj_shape(cfg, p);
    const std::string where = path + ": layer '" + name + "': ";
    try {
      if (v.value("dense", false)) {
        out[name] = ProjFormat{};
        continue;
      }
      const auto shape = v.at("shape").get<std::vector<int64_t>>();
      if (shape != std::vector<int64_t>{N, K})
        throw Error("shape [" + std::to_string(shape.size() > 0 ? shape[0] : -1) + "," +
                    std::to_string(shape.size() > 1 ? shape[1] : -1) + "] does not match config.json ([" +
                    std::to_string(N) + "," + std::to_string(K) + "])");
      SpenseLayout l;
      if (!spense_axis_parse(v.at("axis").get<std::string>(), &l.axis))
        throw Error("unknown axis '" + v.at("axis").get<std::string>() + "'");
      l.g = v.at("g").get<int64_t>();
      l.dense_tiles = v.at("dense_tiles").get<std::vector<int64_t>>();
      spense_layout_check(name, N, K, l);
      out[name] = from_layout(l, spense_num_tiles(name, N, K, l), false);
    } catch (const Error& e) {
      throw Error(where + e.what());
    } catch (const nlohmann::json::exception& e) {
      throw Error(where + "bad entry (" + e.what() + ")");
    }
  }
  return out;
}

namespace {

ProjFormat choose_format(const ModelConfig& cfg, int64_t layer, Proj p,
                         const std::map<std::string, ProjFormat>& ck, const PlanOptions& o) {
  const auto it = ck.find(proj_module(layer, p));
  const bool have = it != ck.end();
  switch (o.format) {
    case WeightFormat::AUTO: return have ? it->second : ProjFormat{};
    case WeightFormat::DENSE: return ProjFormat{};
    case WeightFormat::SPARSE24: {
      ProjFormat f;
      f.kind = ProjFormat::SPARSE24;
      f.prune_on_load = !(have && it->second.kind == ProjFormat::SPARSE24);
      return f;
    }
    case WeightFormat::SPENSE: {
      if (have) return it->second;
      const auto [N, K] = proj_shape(cfg, p);
      SpenseLayout l;
      l.axis = o.mixed_axis ? (p == Proj::O || p == Proj::DOWN ? SpenseAxis::IN : SpenseAxis::OUT) : o.axis;
      l.g = o.tile;
      const std::string name = proj_module(layer, p);
      const int64_t tiles = spense_num_tiles(name, N, K, l);
      l.dense_tiles = spread_dense_tiles(tiles, o.dense_ratio);
      return from_layout(l, tiles, true);
    }
  }
  return ProjFormat{};
}

// Fuses the projections of a group into one linear when their formats allow, else one linear each.
std::vector<LinearPlan> group(const ModelConfig& cfg, int64_t layer, const std::vector<Proj>& projs,
                              const std::vector<ProjFormat>& fmts, const std::string& fused_name, bool fuse) {
  std::vector<LinearPlan> out;
  bool can = fuse && projs.size() > 1;
  const ProjFormat& f0 = fmts[0];
  for (const auto& f : fmts) {
    if (f.kind != f0.kind) can = false;
    if (f.kind == ProjFormat::HYBRID &&
        (f.layout.axis != f0.layout.axis || f.layout.g != f0.layout.g ||
         (f.layout.axis == SpenseAxis::IN && f.layout.dense_tiles != f0.layout.dense_tiles)))
      can = false;
  }
  if (!can) {
    for (size_t i = 0; i < projs.size(); ++i) {
      const auto [N, K] = proj_shape(cfg, projs[i]);
      out.push_back(LinearPlan{proj_module(layer, projs[i]), {projs[i]}, N, K, fmts[i]});
    }
    return out;
  }
  LinearPlan lp;
  lp.name = "model.layers." + std::to_string(layer) + "." + fused_name;
  lp.projs = projs;
  lp.k = proj_shape(cfg, projs[0]).second;
  lp.format.kind = f0.kind;
  lp.format.layout.axis = f0.layout.axis;
  lp.format.layout.g = f0.layout.g;
  for (size_t i = 0; i < projs.size(); ++i) {
    const int64_t N = proj_shape(cfg, projs[i]).first;
    lp.format.prune_on_load = lp.format.prune_on_load || fmts[i].prune_on_load;
    if (f0.kind == ProjFormat::HYBRID) {
      if (f0.layout.axis == SpenseAxis::OUT) {
        for (int64_t t : fmts[i].layout.dense_tiles) lp.format.layout.dense_tiles.push_back(t + lp.n / f0.layout.g);
      } else if (i == 0) {
        lp.format.layout.dense_tiles = f0.layout.dense_tiles;
      }
    }
    lp.n += N;
  }
  out.push_back(std::move(lp));
  return out;
}

}  // namespace

std::vector<LayerPlan> plan_model(const ModelConfig& cfg, const std::map<std::string, ProjFormat>& ck,
                                  const PlanOptions& o) {
  if (o.dense_ratio < 0 || o.dense_ratio > 1)
    throw Error("dense ratio " + std::to_string(o.dense_ratio) + " is outside [0, 1]");
  if (o.tile <= 0 || o.tile % 16 != 0)
    throw Error("tile " + std::to_string(o.tile) + " is not a positive multiple of 16");
  std::vector<LayerPlan> plan(static_cast<size_t>(cfg.num_layers));
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    auto fmt = [&](Proj p) { return choose_format(cfg, l, p, ck, o); };
    auto single = [&](Proj p) {
      const auto [N, K] = proj_shape(cfg, p);
      return LinearPlan{proj_module(l, p), {p}, N, K, fmt(p)};
    };
    LayerPlan& lp = plan[static_cast<size_t>(l)];
    lp.qkv = group(cfg, l, {Proj::Q, Proj::K, Proj::V}, {fmt(Proj::Q), fmt(Proj::K), fmt(Proj::V)},
                   "self_attn.qkv_proj", o.fuse);
    lp.o = single(Proj::O);
    lp.gate_up = group(cfg, l, {Proj::GATE, Proj::UP}, {fmt(Proj::GATE), fmt(Proj::UP)}, "mlp.gate_up_proj", o.fuse);
    lp.down = single(Proj::DOWN);
  }
  return plan;
}

int32_t sample_token(const float* logits, int64_t V, float temperature, float top_p, std::mt19937_64& rng) {
  if (V <= 0) throw Error("sample_token: empty vocabulary", 1);
  if (temperature <= 0.f) return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  const float mx = *std::max_element(logits, logits + V);
  std::vector<double> p(static_cast<size_t>(V));
  for (int64_t i = 0; i < V; ++i) p[i] = std::exp((static_cast<double>(logits[i]) - mx) / temperature);
  std::vector<int32_t> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  double total = std::accumulate(p.begin(), p.end(), 0.0);
  size_t keep = idx.size();
  if (top_p < 1.f) {
    std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    double acc = 0;
    for (keep = 0; keep < idx.size();) {
      acc += p[idx[keep++]];
      if (acc >= top_p * total) break;
    }
    total = acc;
  }
  std::uniform_real_distribution<double> u(0.0, total);
  double r = u(rng), acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += p[idx[i]];
    if (r < acc) return idx[i];
  }
  return idx[keep - 1];
}

}  // namespace spense
