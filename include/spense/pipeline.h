// Whole-model one-shot pruning (design.md section 3): sequential, block-wise calibration as
// in SparseGPT. Calibration windows are embedded once; then for each decoder layer:
//   1. every window runs through the DENSE block with a hook that accumulates one Hessian
//      per distinct linear input (qkv shared by q/k/v, gate_up shared by gate/up, o, down);
//   2. the seven projections are pruned with prune_layer() from those Hessians. As in the
//      SparseGPT reference (non-"true-sequential" mode), O and DOWN are pruned from inputs
//      captured with the dense q/k/v and gate/up of the same block, not the pruned ones;
//   3. the pruned weights (rounded to the checkpoint dtype, so memory holds exactly what is
//      written) replace the block's weights, and the block is run again with them on every
//      window to produce the next layer's inputs.
// Embeddings, norms and the LM head are never pruned. Memory: the model (fp32), one copy of
// the calibration activations plus one window of scratch, four Hessians, and the packed
// tensors of the layers done so far.
//
// Streaming (a Model with streams_layers()): layer l+1 is read from its source on a
// background thread while layer l is calibrated and pruned, and layer l is dropped again
// once on_layer_done has seen it, so the model costs two layers of fp32 instead of all of
// them. on_layer_done may also take the packed tensors out of the result (writing them to
// disk), which bounds the memory of the whole run by two layers plus the activations.
//
// The forwards and Hessians run on a CalibrationRunner (the CPU one by default, the GPU one
// from spense/cuda/prune_gpu.h) and prune_layer's arithmetic on PruneOptions::compute.
//
// Not here: tokenization and file output (src/cli/cmd_prune.cpp).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "spense/dtype.h"
#include "spense/format.h"
#include "spense/model.h"
#include "spense/prune.h"

namespace spense {

// nsamples windows of seqlen tokens starting at uniformly random offsets in
// [0, ids.size() - seqlen] (std::mt19937_64 seeded with seed; the same call gives the same
// windows). Throws spense::Error when ids holds fewer than seqlen tokens, or seqlen < 2,
// or nsamples < 1.
std::vector<std::vector<int32_t>> sample_calibration_windows(const std::vector<int32_t>& ids,
                                                             int64_t nsamples, int64_t seqlen,
                                                             uint64_t seed);

// Runs decoder blocks of a Model over the calibration windows, holding their activations
// (S windows x T tokens x hidden, fp32) wherever it computes.
class CalibrationRunner {
 public:
  virtual ~CalibrationRunner() = default;
  virtual const char* name() const = 0;
  // Start from these embedded windows (S x T x hidden, row-major).
  virtual void reset(const Model& model, std::vector<float> acts, int64_t S, int64_t T) = 0;
  // Run layer l (the model's current weights) over every window, leaving the activations as
  // they are, and return the Hessians of its four linear inputs in LinearInput order, named
  // "model.layers.<l>.<input>". on_window() is called after each window.
  virtual std::vector<Hessian> hessians(const Model& model, int64_t l,
                                        const std::function<void()>& on_window) = 0;
  // Run layer l over every window, replacing the activations by its outputs.
  virtual void advance(const Model& model, int64_t l, const std::function<void()>& on_window) = 0;
};
// The CPU runner: Model::block_forward() and HessianAccumulator, window by window;
// fp32_hessian: HessianAccumulator's fp32_batches (one ssyrk per window and input);
// linear_dtype: the forwards' linear products (BF16 needs a build with oneDNN).
std::unique_ptr<CalibrationRunner> make_cpu_calibration_runner(bool fp32_hessian = false,
                                                               MatmulDType linear_dtype = MatmulDType::F32);

struct PipelineOptions {
  // Template for every projection; `layer` is overwritten with the projection's HF name.
  PruneOptions prune;
  // ECMAScript regex searched (std::regex_search, i.e. a partial match) in each projection's
  // name, e.g. "model.layers.3.mlp.down_proj"; matching projections stay dense. Empty: none.
  std::string skip_regex;
  // Storage dtype of each projection's weight (F32, BF16 or F16), indexed [layer*7 + proj];
  // empty means F32 for all. Pruned weights are rounded to it before they replace the model's.
  std::vector<DType> dtypes;
  // Global dense budget (SpenseGPT only, 0 < d < 1): instead of round(d * tiles) dense tiles
  // in every projection, the dense tiles of the whole model are chosen together. A first pass
  // runs the DENSE model over the calibration windows and scores every tile of every
  // projection with the strategy (prune_layer's tile_scores), each divided by the
  // projection's output energy tr(W H W^T) (so scores are relative errors, comparable across
  // layers). Tiles are then taken greedily by score per stored element until the extra dense
  // elements reach d times the sparse-prunable elements (the same average density as uniform
  // d, up to one tile). The second pass is the normal sequential pipeline with those tiles
  // fixed. Costs one extra forward and prune pass, and a second copy of the activations.
  bool global_budget = false;
  // SpenseGPT's axis per projection instead of prune.axis for all: in (dense input columns)
  // for o_proj and down_proj, out (dense output rows) for q/k/v and gate/up. The layout of
  // bench-decode --axis mixed: cuSPARSELt + cuBLASLt ran the FP8 o and down hybrids faster at
  // axis in (H100, M = 16: 19.8 vs 27.2 us and 46.6 vs 53.6 us; docs/perf.md), and q/k/v and
  // gate/up keep axis out, which fuses them and runs on our small-M kernel.
  bool mixed_axis = false;
  // Progress bar on stderr even when it is not a terminal.
  bool progress_force = false;
  // One line per finished layer (e.g. to stderr); may be empty.
  std::function<void(const std::string&)> log;
  // Where the forwards and Hessians run; nullptr = a CPU runner (with fp32_hessian). Not owned.
  CalibrationRunner* runner = nullptr;
  bool fp32_hessian = false;
  MatmulDType linear_dtype = MatmulDType::F32;  // the CPU runner's forwards
};

// The Spense axis opts gives projection p (PipelineOptions::mixed_axis, else prune.axis).
SpenseAxis pipeline_axis(const PipelineOptions& opts, Proj p);

struct PrunedProjection;
// Called once per decoder layer after its pruned outputs were computed, with the layer's
// weights still resident (pruned, dtype-rounded) and its seven entries of
// PipelineResult::projections (kAllProjs order); it may move the packed tensors out.
using LayerDoneFn = std::function<void(const Model& model, int64_t layer, PrunedProjection* projs)>;

struct PrunedProjection {
  int64_t layer = 0;
  Proj proj = Proj::Q;
  std::string name;       // "model.layers.3.mlp.down_proj"
  bool skipped = false;   // matched skip_regex (weights untouched, no report)
  bool packed = false;    // tensor holds the packed Spense layer (false: dense method or skipped)
  SpenseTensor tensor;    // valid when packed
  PruneReport report;     // valid when !skipped
  double seconds = 0;     // prune_layer wall time
};

struct PipelineResult {
  std::vector<PrunedProjection> projections;  // layer-major, kAllProjs order within a layer
  int64_t nsamples = 0, seqlen = 0;
  double calib_seconds = 0;   // forward passes (dense + pruned) and Hessian accumulation
  double prune_seconds = 0;   // prune_layer calls
  double total_seconds = 0;
  std::vector<double> layer_seconds;  // per decoder layer: both passes and its prune_layer calls
};

// Prune model in place. windows: token ids, all of one length (at most the model's
// max_position_embeddings). Throws spense::Error (naming the layer) on an invalid regex,
// a layout that does not fit a projection's shape, or any prune_layer failure.
// A streaming model's layers are dropped after on_layer_done, so that is where their
// weights must be saved.
PipelineResult prune_model(Model& model, const std::vector<std::vector<int32_t>>& windows,
                           const PipelineOptions& opts, const LayerDoneFn& on_layer_done = {});

// Host memory a streaming prune_model needs, by part. The activations and the embedding are
// exact (their sum is a lower bound of the run's peak); the rest is an upper estimate from the
// shapes (the H200 runs of docs/perf.md peaked at 60-90% of the total).
struct PruneMemoryEstimate {
  uint64_t activations = 0;  // nsamples x seqlen x hidden fp32 (a second copy with the global budget)
  uint64_t embedding = 0;    // vocab x hidden fp32
  uint64_t layers = 0;       // two decoder layers in fp32: the current one and the one being read
  uint64_t hessians = 0;     // one layer's four fp64 Hessians
  uint64_t working = 0;      // prune_layer's fp64 copies of the largest projection and its factor,
                             // and one window's forward scratch per thread
  // The program itself: libraries and their buffers, the tokenizer, the calibration text
  // (`spense prune` of a 2-layer tiny model peaked at 317 MB, 280 MB of it not the model's).
  static constexpr uint64_t kProgram = uint64_t(300) << 20;
  uint64_t lower_bound() const { return activations + embedding; }
  uint64_t total() const { return kProgram + activations + embedding + layers + hessians + working; }
};
PruneMemoryEstimate estimate_prune_memory(const ModelConfig& cfg, int64_t nsamples, int64_t seqlen,
                                          bool global_budget, int threads);

// MemTotal and MemAvailable of /proc/meminfo in bytes (0, 0 when it cannot be read).
std::pair<uint64_t, uint64_t> host_memory_bytes();

// Peak resident set size of this process in bytes (getrusage ru_maxrss).
uint64_t peak_rss_bytes();

// Process-wide (glibc mallopt): large blocks allocated by the main thread come from the heap
// and stay there when freed (other threads' arenas still map blocks above 64 MB), so
// the pipeline's per-projection buffers (hundreds of MB each, allocated and freed 7 times a
// layer) reuse memory whose pages are already mapped. With glibc's default every such block
// is a fresh mmap whose pages fault in on first write, at 1-4 GB/s in a VM: on the GPU machine
// it made a Qwen3-8B block 17.7 s instead of 12.1 s (docs/perf.md). Costs: freed memory is
// not handed back to the system (peak RSS stays the peak). Call before the pipeline.
void keep_freed_memory_mapped();

}  // namespace spense
