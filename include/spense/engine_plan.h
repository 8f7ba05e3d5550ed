// How the GPU decode engine lays a model out in linear layers, decided on the host (no CUDA
// here, so CI tests it): which format each projection runs in (dense, 2:4, Spense hybrid),
// read from a pruned checkpoint's spense.json or forced by the user, and which projections
// are fused into one GEMM (q|k|v and gate|up, concatenated along the output dimension, when
// their formats allow it). Also host-side token sampling (temperature, top-p).
#pragma once
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "spense/config.h"
#include "spense/format.h"
#include "spense/model.h"

namespace spense {

// What the user asks the engine to run.
//   AUTO:     what the checkpoint says (spense.json when present, else dense);
//   DENSE:    every projection dense (a pruned checkpoint runs its materialised weights);
//   SPARSE24: every projection 2:4 (weights that are not 2:4 are magnitude-pruned on load);
//   SPENSE:   spense.json when present; otherwise dense tiles spread evenly at the requested
//             dense ratio and the rest magnitude-pruned (for speed measurements only).
enum class WeightFormat : uint8_t { AUTO, DENSE, SPARSE24, SPENSE };
const char* weight_format_name(WeightFormat f);  // "auto", "dense", "24", "spense"
// Accepts auto, dense, 24, 2:4, spense. Returns false for anything else.
bool weight_format_parse(const std::string& s, WeightFormat* out);

// The format of one projection (or of a fused group of projections).
struct ProjFormat {
  enum Kind : uint8_t { DENSE, SPARSE24, HYBRID } kind = DENSE;
  SpenseLayout layout;  // HYBRID: axis, g and dense tiles (sorted); others: unused
  // True when the weights must be 2:4-pruned by magnitude on load (forced formats on
  // checkpoints that are not pruned that way).
  bool prune_on_load = false;
};
const char* proj_kind_name(ProjFormat::Kind k);  // "dense", "2:4", "spense"

// One GPU linear layer: one projection, or several concatenated along N (in `projs` order)
// with the tile indices of an axis=out layout shifted by each part's row offset.
struct LinearPlan {
  std::string name;          // HF module path, e.g. "model.layers.3.self_attn.q_proj", or
                             // "model.layers.3.self_attn.qkv_proj" for a fused group
  std::vector<Proj> projs;   // which projections, in concatenation order
  int64_t n = 0, k = 0;      // fused output features, input features
  ProjFormat format;
};

// The linear layers of one decoder layer: q/k/v as 1 or 3 linears, o, gate/up as 1 or 2, down.
struct LayerPlan {
  std::vector<LinearPlan> qkv;
  LinearPlan o;
  std::vector<LinearPlan> gate_up;
  LinearPlan down;
};

// Per projection formats from <dir>/spense.json (keys: HF module paths such as
// "model.layers.0.mlp.up_proj"). An absent file gives an empty map. Throws spense::Error
// naming the file and layer on bad JSON, unknown axis, shapes that disagree with cfg, or
// tiles out of range. A layer whose dense tiles cover it entirely, or marked
// {"dense": true}, is DENSE; one with no dense tiles is SPARSE24.
std::map<std::string, ProjFormat> read_spense_json(const std::string& dir, const ModelConfig& cfg);

struct PlanOptions {
  WeightFormat format = WeightFormat::AUTO;
  // SPENSE on a checkpoint without spense.json (and synthetic models): dense ratio, axis, tile.
  double dense_ratio = 0.25;
  SpenseAxis axis = SpenseAxis::OUT;
  // Instead of `axis`: axis=out for q/k/v and gate/up, axis=in for o and down (the faster axis
  // of each Qwen3-32B shape in FP8 on an H200, docs/perf.md).
  bool mixed_axis = false;
  int64_t tile = 64;
  bool fuse = true;  // allow q|k|v and gate|up fusion
};

// The whole model's plan. `from_checkpoint` are the formats read from spense.json (may be
// empty). Throws spense::Error when a requested format cannot be laid out (a tile that does
// not divide a projection).
std::vector<LayerPlan> plan_model(const ModelConfig& cfg, const std::map<std::string, ProjFormat>& from_checkpoint,
                                  const PlanOptions& opts);

// proj_shape() and proj_module(): spense/model.h.

// Dense tiles spread evenly for a dense ratio d (round(d * tiles) of them, deterministic).
std::vector<int64_t> spread_dense_tiles(int64_t tiles, double d);

// Draws a token from logits[0..V): temperature <= 0 gives the argmax (lowest index on ties);
// otherwise softmax(logits / temperature) restricted to the smallest set of most likely
// tokens whose probability reaches top_p (top_p >= 1: all tokens).
int32_t sample_token(const float* logits, int64_t V, float temperature, float top_p, std::mt19937_64& rng);

// A model of architecture arch ("qwen3", "qwen2", "llama") with the shapes of a preset
// (model_preset_names(): tiny, qwen3-0.6b, qwen3-8b, qwen3-14b, qwen3-32b). Throws on unknown names.
ModelConfig model_preset(const std::string& arch, const std::string& preset);
std::string model_preset_names();

}  // namespace spense
