// Where attn_f8_k (the E4M3-cache decode attention, engine_kernels.cu) takes each mma operand
// from. Host and device: tests/test_engine_attn_f8_layout.cpp replays a warp step on the CPU
// through the PTX ISA's fragment layouts of mma.m16n8k16 and movmatrix.m8n8.trans, with these
// functions, against plain softmax attention.
//
// Lane l is (g, t) = (l / 4, l % 4), as in the PTX layouts. Scores S = K Q^T take the step's 16
// keys as M and the dims as K; O^T += V^T P^T takes dims as M and the 16 keys as K. An mma's k
// index may stand for any dim or key, as long as both operands agree, so the k positions
// 2t, 2t + 1, 2t + 8, 2t + 9 of lane (g, t) stand for:
//   scores: the 4 dims dim_byte(t) .. + 3 of each 16-dim span (one 32-bit load of E4M3 codes: the
//           low half holds positions 2t, 2t + 1, the high half 2t + 8, 2t + 9);
//   values: the key rows key_row(value_pos(t, j)), j = 0..3 (one byte each).
// Score row p (0..15) of the A operand is key row key_row(p), so P^T's k position p (after
// movmatrix) is that key too.
#pragma once

#if defined(__CUDACC__)
#define SPENSE_F8_HD __host__ __device__
#else
#define SPENSE_F8_HD
#endif

namespace spense::cuda::engine::f8attn {

constexpr int kStepKeys = 16;  // keys per warp step

// The key row that k position p (0..15) stands for: positions 2t, 2t + 1, 2t + 8, 2t + 9 are rows
// 4t .. 4t + 3 (so a lane's four value bytes come from consecutive rows), the pair of the lower
// positions first where t < 2 and second where t >= 2, so that the 8 rows one key load reads
// (positions 0-7, or 8-15) are distinct mod 8: with 16 + D bytes per row (D = 128: 36 words, 4
// mod 32) the 32 lanes' words then fall in 32 distinct banks.
SPENSE_F8_HD constexpr int key_row(int p) {
  const int t = (p & 7) >> 1, low = t & 2;
  return 4 * t + ((p & 8) ? 2 - low : low) + (p & 1);
}
// Byte offset, within a 16-dim span, of the 4 dims lane t's score fragments hold.
SPENSE_F8_HD constexpr int dim_byte(int t) { return 4 * t; }
// The k position of lane t's value byte j (0..3): 2t, 2t + 1, 2t + 8, 2t + 9.
SPENSE_F8_HD constexpr int value_pos(int t, int j) { return j < 2 ? 2 * t + j : 2 * t + 6 + j; }

}  // namespace spense::cuda::engine::f8attn
