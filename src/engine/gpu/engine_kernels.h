// The decoder's non-GEMM kernels (src/engine/gpu/engine_kernels.cu). Activations between
// GEMMs are BF16; the residual stream is fp32 (more precise than HF's BF16 residual, so GPU
// logits track the fp32 CPU reference). Every launcher checks its launch. Rows are tokens;
// row r belongs to KV-cache slot row_slot[r] (nullptr: slot r) at position row_pos[r]
// (device arrays, so a captured decode graph reads fresh positions on every replay).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace spense::cuda::engine {

using bf16_t = uint16_t;  // raw BF16 bits on the host side of the interface

// Element type of the KV cache: BF16, or E4M3 codes with no scale (values saturate at +-448;
// half the bytes, which decode attention streams once per step). Caches are passed as void*.
enum class KvCache { BF16, E4M3 };
inline size_t kv_cache_bytes(KvCache kv) { return kv == KvCache::E4M3 ? 1 : 2; }

// h[r, :] = E[ids[r], :] (BF16 -> fp32). ids outside [0, vocab) are clamped (the host
// checks prompt ids; decode ids come from argmax).
void embed_rows(const int32_t* ids, const bf16_t* E, int64_t vocab, int64_t H, int64_t rows, float* h,
                cudaStream_t s);

// Fused residual add + RMSNorm: if delta: h[r, :] += delta[r, :] (+ bias); then
// out[r, :] = bf16(h[r, :] * rsqrt(mean(h^2) + eps) * w). delta/bias nullable.
void residual_rmsnorm(float* h, const bf16_t* delta, const float* bias, const float* w, float eps, bf16_t* out,
                      int64_t rows, int64_t H, cudaStream_t s);

struct QkvView {
  const bf16_t* q; int64_t ldq;  // [rows, NH*D] at stride ldq
  const bf16_t* k; int64_t ldk;  // [rows, NKV*D]
  const bf16_t* v; int64_t ldv;
};

// Per row: q/k/v biases (nullable, fp32 [NH*D | NKV*D | NKV*D]), per-head RMSNorm of q and k
// (q_norm/k_norm nullable, fp32 [D]), RoPE at position row_pos[r] (HF rotate_half), then q to
// q_out (fp32 [rows, NH*D]) and k, v into the cache at (slot, position).
// Cache layout per layer: [slot][kv_head][pos][D] of kv elements.
void qkv_rope_cache(QkvView in, const float* bias, const float* q_norm, const float* k_norm, float eps,
                    const float* inv_freq, const int32_t* row_slot, const int32_t* row_pos, int64_t rows,
                    int64_t NH, int64_t NKV, int64_t D, float* q_out, void* k_cache, void* v_cache,
                    int64_t max_ctx, cudaStream_t s, KvCache kv = KvCache::BF16);

// Causal attention of each row's queries over its slot's keys 0..row_pos[r] (flash-decoding:
// the KV range is cut into splits of `chunk` keys or more, at most 32 per row; each split's
// partial softmax is computed by its own block, and the last block of each (row, kv head) to
// finish combines them). q: fp32 [rows, NH*D]; out: BF16 [rows, NH*D]. workspace:
// attention_workspace_floats(rows, NH, D, max_ctx, chunk) floats; counters: rows x NKV ints, zero
// before the first call (each call leaves them zero). Supports D in {16, 32, 64, 128, 256} and
// NH / NKV <= 16.
//
// rope (decode only, row_slot null so that row r is slot r and owns one new key): attention also
// does qkv_rope_cache's work, one launch fewer per layer. Each block norms and rotates its G query
// heads from rope.in straight into shared memory (q is not read), and the block whose split holds
// position row_pos[r] first writes that row's new k (normed, rotated) and v into the cache.
struct DecodeRope {
  QkvView in{};
  const float* bias = nullptr;    // fp32 [NH*D | NKV*D | NKV*D], nullable
  const float* q_norm = nullptr;  // fp32 [D], nullable (with k_norm)
  const float* k_norm = nullptr;
  float eps = 0.f;
  const float* inv_freq = nullptr;
  void* k_cache = nullptr;        // the k_cache / v_cache attention reads; nullptr: no fused rope
  void* v_cache = nullptr;
};
// Whether attention runs on the tensor cores for G query heads per KV head and head size D
// (G <= 8 and D a multiple of 16); else on CUDA cores.
bool attention_uses_tensor_cores(int64_t G, int64_t D);
// Whether an E4M3 cache's attention (but the fused decode RoPE's) runs on the warp-step kernel
// (FP16 tensor cores, E4M3 converted in registers): G <= 8 and D a multiple of 16 up to 128,
// unless the environment sets SPENSE_ATTN_F8_LEGACY=1 (the BF16-tile kernel, for timing).
bool attention_uses_f8_warp_kernel(int64_t G, int64_t D);
size_t attention_workspace_floats(int64_t rows, int64_t NH, int64_t D, int64_t max_ctx, int64_t chunk);
void attention(const float* q, const void* k_cache, const void* v_cache, const int32_t* row_slot,
               const int32_t* row_pos, int64_t rows, int64_t NH, int64_t NKV, int64_t D, int64_t max_ctx,
               int64_t chunk, float* workspace, int* counters, bf16_t* out, cudaStream_t s,
               const DecodeRope* rope = nullptr, KvCache kv = KvCache::BF16);

// act[r, i] = bf16(silu(gate[r, i]) * up[r, i]) for i < I.
void silu_mul(const bf16_t* gate, int64_t ldg, const bf16_t* up, int64_t ldu, int64_t rows, int64_t I, bf16_t* act,
              cudaStream_t s);

// out[r] = argmax_j logits[r, j] (lowest index on ties).
void argmax_rows(const float* logits, int64_t V, int64_t rows, int32_t* out, cudaStream_t s);

// lens[r] += 1 for r < rows.
void advance(int32_t* lens, int64_t rows, cudaStream_t s);

}  // namespace spense::cuda::engine
