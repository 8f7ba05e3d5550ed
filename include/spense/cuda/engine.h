// The GPU decode engine: a Llama / Mistral / Qwen2 / Qwen3 decoder on one GPU with a KV cache.
// Every projection runs through the GPU runtime's DenseLinear / SparseLinear / HybridLinear
// (include/spense/cuda/linear.h) in BF16, FP16 or FP8, laid out by the host plan
// (include/spense/engine_plan.h: formats from spense.json or forced, q|k|v and gate|up fused).
// The rest: embedding, fused residual + RMSNorm, q/k norm + RoPE + cache write, flash-decoding
// attention split over the KV length, SwiGLU, an fp32 LM head and greedy argmax on the GPU.
//
// Sequences live in slots 0 .. max_batch-1, each with its own length. prefill() appends a
// prompt to one slot (eagerly, in chunks). step(B) advances slots 0 .. B-1 by one token each:
// it embeds the tokens in the device token buffer (set_tokens(), or the previous step's
// greedy choices), runs the decoder, writes fp32 logits and the greedy next tokens back into
// the token buffer, and increments the slots' lengths on the device; with graphs on, each
// distinct B is captured once into a CUDA graph and replayed.
//
// Memory: weights (as the linear layers store them), the embedding, the LM head (a second
// copy of the embedding when tied), the KV cache 2 x layers x max_batch x kv_heads x
// max_ctx x head_dim BF16 (or E4M3 with kv_fp8), and activations for max(max_batch, prefill_chunk) rows.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "spense/config.h"
#include "spense/cuda/linear.h"
#include "spense/cuda/runtime.h"
#include "spense/engine_plan.h"

namespace spense::cuda {

// Which kernels run the projections: LIBRARY: cuBLASLt / cuSPARSELt; SPENSE: our small-M
// kernel (make_gemv_linear: dense, 2:4 and Spense of either axis; axis=in layers with tiles
// that are not a power of two >= 32 columns use the libraries), fastest at the smallest decode
// batches; AUTO: per linear layer, both are built
// at load, timed at M = max_batch, and the faster is kept (dense layers always take the small-M
// wrapper, which itself picks cuBLASLt or our kernel per M).
enum class GemmBackend : uint8_t { AUTO, LIBRARY, SPENSE };
const char* gemm_backend_name(GemmBackend b);  // "auto", "library", "spense"
bool gemm_backend_parse(const std::string& s, GemmBackend* out);

struct EngineOptions {
  LinearPrecision precision = LinearPrecision::BF16;  // of the decoder projections (the LM head is BF16)
  PlanOptions plan;             // format, and for forced/synthetic Spense: dense ratio, axis, tile
  GemmBackend backend = GemmBackend::AUTO;
  int64_t max_batch = 1;        // slots
  int64_t max_ctx = 2048;       // tokens per slot (prompt + generated)
  int64_t prefill_chunk = 256;  // rows per prefill forward
  // Keys per attention block at decode; 0: automatic, 64 (more blocks for small batches), or 256
  // with the E4M3 cache once batch x KV heads reaches 128 (faster on an H100: docs/perf.md).
  int64_t decode_kv_chunk = 0;
  int64_t prefill_kv_chunk = 256; // keys per attention block in prefill
  bool graphs = true;           // capture decode steps into CUDA graphs
  // KV cache as E4M3 codes with no scale (values saturate at +-448), as vLLM's fp8_e4m3 cache
  // with its default scale: half the cache's memory and half the bytes attention reads per step.
  bool kv_fp8 = false;
  // Library hybrid layers: their 2:4 and dense GEMMs on two streams (fork/join), or one after
  // the other on the caller's stream. The join makes the operation after each hybrid GEMM a few
  // us slower, but the overlap gains more (H100, FP8, batch 64: 23.2 vs 24.4 ms per step;
  // docs/perf.md), so two streams is the default.
  bool concurrent = true;
  bool sparse_search = true;    // cuSPARSELt algorithm search per M bucket
  int dense_search = 0;         // cuBLASLt candidates timed per M (0: heuristic's first)
  SmallMKernel small_m_kernel = SmallMKernel::AUTO;  // paths of our small-M kernel (LinearOptions)
  bool pdl = true;              // our small-M kernel with programmatic dependent launch (LinearOptions)
  // FP8: our small-M kernel's E4M3-token shapes may run (LinearOptions::small_m_e4m3_tokens).
  // On by default since the streamed shapes (10-13): with them the FP8 Spense step on an H100
  // was faster at batch 1, 16 and 64 in two A/B calls (docs/perf.md); before them, slower.
  bool e4m3_tokens = true;
  uint64_t seed = 0;            // synthetic weights
  bool verbose = false;         // one line per loaded layer on stderr
  // GemmBackend::AUTO: time the two candidates of a layer as replayed CUDA graphs, as a decode
  // step runs them, instead of as eager launches (not yet measured against eager on a GPU).
  bool auto_time_graphs = false;
};

// What the engine holds, for reports.
struct EngineMemory {
  size_t linear_weight_bytes = 0;  // decoder projections as stored on the GPU (values, metadata, scales)
  size_t other_weight_bytes = 0;   // embedding, LM head, norms, biases
  size_t kv_cache_bytes = 0;
  size_t activation_bytes = 0;     // activation buffers, attention workspace, logits
  size_t device_used_bytes = 0;    // cudaMemGetInfo total - free after loading
};

class Engine {
 public:
  // Load a Hugging Face checkpoint directory (dense, or pruned by `spense prune`: spense.json
  // then gives each projection's format). Weights of any float dtype are converted to BF16
  // (and quantized per output channel for FP8). Throws spense::Error naming the file on
  // missing tensors, wrong shapes, unsupported architectures or formats.
  static std::unique_ptr<Engine> load(Context& ctx, const std::string& dir, const EngineOptions& opts);
  // Random weights of cfg's shapes generated on the GPU (speed does not depend on values).
  // The layers share one set of plans and have distinct weight copies.
  static std::unique_ptr<Engine> synthetic(Context& ctx, const ModelConfig& cfg, const EngineOptions& opts);
  virtual ~Engine() = default;

  virtual const ModelConfig& config() const = 0;
  virtual const EngineOptions& options() const = 0;
  virtual EngineMemory memory() const = 0;
  // Bytes of weights one decode step reads (all projections, the LM head, norms; not the
  // embedding rows, which are few).
  virtual size_t weight_bytes_per_step() const = 0;
  // KV-cache bytes one decode step reads for batch B at the current lengths.
  virtual size_t kv_bytes_per_step(int64_t batch) const = 0;
  // "qkv: spense-out d=0.25 (1 linear) ..." summary of the plan of layer 0 and its algorithms.
  virtual std::string describe() const = 0;

  // Empties a slot (length 0).
  virtual void reset(int64_t slot) = 0;
  virtual int64_t length(int64_t slot) const = 0;
  // Appends ids to a slot. Returns the fp32 logits of the last token (vocab floats), or of
  // every token (n x vocab) when all_logits. Throws on ids outside the vocabulary or a
  // sequence longer than max_ctx.
  virtual std::vector<float> prefill(int64_t slot, const std::vector<int32_t>& ids, bool all_logits = false) = 0;
  // Host tokens for the next step of slots 0..B-1.
  virtual void set_tokens(const std::vector<int32_t>& tokens) = 0;
  // One decode step for slots 0..B-1 (see the file comment); asynchronous on the engine's stream.
  virtual void step(int64_t batch) = 0;
  // After step(B): the greedy next tokens (B) and the logits (B x vocab), synchronising.
  virtual std::vector<int32_t> tokens(int64_t batch) = 0;
  virtual std::vector<float> logits(int64_t batch) = 0;
  // Sets slots 0..B-1 to length len with random KV-cache contents (benchmarks), tokens to 0.
  virtual void fill_cache_random(int64_t batch, int64_t len, uint64_t seed) = 0;
  // Captures (if graphs) and warms up step(B) so that later timings exclude plan making.
  virtual void prepare_step(int64_t batch) = 0;
  virtual cudaStream_t stream() const = 0;

  // Where one decode step's GPU time goes: the step for slots 0..B-1 with a timing event after
  // every operation (embedding, each projection, norm, rope, attention, SwiGLU, LM head,
  // sampling), captured into its own graph when graphs are on (else launched eagerly), replayed
  // `reps` times; per operation kind, the median over replays of its summed time per step, in
  // ms, in the order the kinds first run. The event nodes cost a little time of their own, so
  // the sum exceeds a plain step's time; the slots' lengths and tokens advance as with step().
  virtual std::vector<std::pair<std::string, double>> profile_step(int64_t batch, int reps) = 0;
};

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  float temperature = 0.f;  // 0: greedy (argmax on the GPU); else sampled on the host
  float top_p = 1.f;
  uint64_t seed = 0;
  std::vector<int32_t> stop_ids;  // a row ends after emitting one of these
};

// Generates continuations of independent prompts of any lengths, one slot each (prompts.size()
// <= max_batch): each prompt is prefilled into its slot, then all rows advance together one
// decode step at a time until every row has max_new_tokens tokens or has emitted a stop id
// (finished rows keep stepping; their extra tokens are dropped). on_token(row, id) sees each
// kept token as it is produced. Returns the new tokens of each row.
std::vector<std::vector<int32_t>> generate(Engine& e, const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& g,
                                           const std::function<void(int64_t, int32_t)>& on_token = {});

}  // namespace spense::cuda
