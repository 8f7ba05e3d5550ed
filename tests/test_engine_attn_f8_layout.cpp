// The operand layout of attn_f8_k (src/engine/gpu/attn_f8_layout.h), CPU only: one warp's 16-key
// step replayed lane by lane the way the kernel builds its fragments, with mma.m16n8k16 and
// movmatrix.m8n8.trans emulated from the PTX ISA's fragment layouts (lane (g, t): A a0 = (g, 2t..),
// a1 = (g + 8, 2t..), a2 = (g, 2t + 8..), a3 = (g + 8, 2t + 8..); B b0 = (2t.., g), b1 = (2t + 8.., g);
// C c0, c1 = (g, 2t..), c2, c3 = (g + 8, 2t..); movmatrix: lane (g, t) holds row g, columns 2t, 2t + 1).
// Reference: softmax(q k^T) v in double over the step's valid keys. The GPU kernel itself is
// tested by EngineKernels.AttentionMatchesDoubleReference (tests/cuda), on a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "engine/gpu/attn_f8_layout.h"

namespace f8 = spense::cuda::engine::f8attn;

namespace {

using Pair = std::pair<double, double>;  // a 32-bit register's (low, high) 16-bit elements
struct Lane { std::array<Pair, 4> a; std::array<Pair, 2> b; std::array<double, 4> c{}; };

// d = a (16 x 16) * b (16 x 8) + c, from each lane's fragments.
void mma(std::vector<Lane>& w) {
  double A[16][16] = {}, B[16][8] = {};
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    const auto& a = w[l].a;
    A[g][2 * t] = a[0].first, A[g][2 * t + 1] = a[0].second;
    A[g + 8][2 * t] = a[1].first, A[g + 8][2 * t + 1] = a[1].second;
    A[g][2 * t + 8] = a[2].first, A[g][2 * t + 9] = a[2].second;
    A[g + 8][2 * t + 8] = a[3].first, A[g + 8][2 * t + 9] = a[3].second;
    B[2 * t][g] = w[l].b[0].first, B[2 * t + 1][g] = w[l].b[0].second;
    B[2 * t + 8][g] = w[l].b[1].first, B[2 * t + 9][g] = w[l].b[1].second;
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
      for (int k = 0; k < 16; ++k) w[l].c[i] += A[row][k] * B[k][col];
    }
  }
}

// movmatrix.m8n8.trans: lane (g, t) holds (row g, columns 2t, 2t + 1) before and after.
std::vector<Pair> movmatrix_trans(const std::vector<Pair>& v) {
  double m[8][8];
  for (int l = 0; l < 32; ++l) m[l / 4][2 * (l % 4)] = v[l].first, m[l / 4][2 * (l % 4) + 1] = v[l].second;
  std::vector<Pair> r(32);
  for (int l = 0; l < 32; ++l) r[l] = {m[2 * (l % 4)][l / 4], m[2 * (l % 4) + 1][l / 4]};
  return r;
}

}  // namespace

TEST(AttnF8Layout, KeyRowsArePermutationsWithConflictFreeLoads) {
  std::set<int> rows;
  for (int p = 0; p < 16; ++p) rows.insert(f8::key_row(p));
  EXPECT_EQ(rows.size(), 16u);
  EXPECT_EQ(*rows.begin(), 0);
  EXPECT_EQ(*rows.rbegin(), 15);
  for (int half : {0, 8}) {  // one key load: lanes g = 0..7 read rows key_row(g + half)
    std::set<int> mod8;
    for (int g = 0; g < 8; ++g) mod8.insert(f8::key_row(g + half) % 8);
    EXPECT_EQ(mod8.size(), 8u) << "half " << half;
  }
  for (int t = 0; t < 4; ++t) {  // a lane's value bytes: 4 consecutive rows
    std::set<int> r;
    for (int j = 0; j < 4; ++j) r.insert(f8::key_row(f8::value_pos(t, j)));
    EXPECT_EQ(*r.begin(), 4 * t);
    EXPECT_EQ(*r.rbegin(), 4 * t + 3);
    EXPECT_EQ(r.size(), 4u);
  }
}

TEST(AttnF8Layout, WarpStepMatchesSoftmaxAttention) {
  std::mt19937 rng(11);
  std::normal_distribution<double> nd(0.0, 1.0);
  constexpr int D = 32, KT = D / 16;
  for (const int G : {8, 4, 1})
    for (const int n : {16, 11, 5, 1}) {  // valid keys in the step; rows past n are zero-filled
      std::vector<std::array<double, D>> K(16), V(16), Q(8);
      for (int k = 0; k < 16; ++k)
        for (int d = 0; d < D; ++d) K[k][d] = k < n ? nd(rng) : 0.0, V[k][d] = k < n ? nd(rng) : 0.0;
      for (int h = 0; h < 8; ++h)
        for (int d = 0; d < D; ++d) Q[h][d] = h < G ? nd(rng) : 0.0;
      // Scores: A = key rows key_row(g), key_row(g + 8) at dims dim_byte(t) .. + 3 of each span.
      std::vector<Lane> w(32);
      for (int kt = 0; kt < KT; ++kt) {
        for (int l = 0; l < 32; ++l) {
          const int g = l / 4, t = l % 4, d0 = 16 * kt + f8::dim_byte(t);
          const auto& k0 = K[f8::key_row(g)];
          const auto& k1 = K[f8::key_row(g + 8)];
          w[l].a = {Pair{k0[d0], k0[d0 + 1]}, Pair{k1[d0], k1[d0 + 1]}, Pair{k0[d0 + 2], k0[d0 + 3]},
                    Pair{k1[d0 + 2], k1[d0 + 3]}};
          w[l].b = {Pair{Q[g][d0], Q[g][d0 + 1]}, Pair{Q[g][d0 + 2], Q[g][d0 + 3]}};
        }
        mma(w);
      }
      // Mask, softmax over the 16 keys per head column (the kernel's xor 4, 8, 16 reduction).
      const double ninf = -std::numeric_limits<double>::infinity();
      std::vector<std::array<double, 4>> p(32);
      for (int l = 0; l < 32; ++l) {
        const int g = l / 4;
        if (f8::key_row(g) >= n) w[l].c[0] = w[l].c[1] = ninf;
        if (f8::key_row(g + 8) >= n) w[l].c[2] = w[l].c[3] = ninf;
      }
      double colmax[8];
      std::fill(colmax, colmax + 8, ninf);
      for (int l = 0; l < 32; ++l)
        for (int i = 0; i < 4; ++i) colmax[2 * (l % 4) + i % 2] = std::max(colmax[2 * (l % 4) + i % 2], w[l].c[i]);
      double L[8] = {};
      for (int l = 0; l < 32; ++l)
        for (int i = 0; i < 4; ++i) {
          const int h = 2 * (l % 4) + i % 2;
          p[l][i] = std::exp(w[l].c[i] - colmax[h]);
          L[h] += p[l][i];
        }
      std::vector<Pair> p01(32), p23(32);
      for (int l = 0; l < 32; ++l) p01[l] = {p[l][0], p[l][1]}, p23[l] = {p[l][2], p[l][3]};
      const std::vector<Pair> b0 = movmatrix_trans(p01), b1 = movmatrix_trans(p23);
      // Values: A = dims 16mt + g (+ 8) at the key rows of positions value_pos(t, 0..3).
      double O[8][D] = {};
      for (int mt = 0; mt < KT; ++mt) {
        std::vector<Lane> v(32);
        for (int l = 0; l < 32; ++l) {
          const int g = l / 4, t = l % 4;
          double lo[4], hi[4];
          for (int j = 0; j < 4; ++j) {
            const auto& row = V[f8::key_row(f8::value_pos(t, j))];
            lo[j] = row[16 * mt + g];
            hi[j] = row[16 * mt + g + 8];
          }
          v[l].a = {Pair{lo[0], lo[1]}, Pair{hi[0], hi[1]}, Pair{lo[2], lo[3]}, Pair{hi[2], hi[3]}};
          v[l].b = {b0[l], b1[l]};
        }
        mma(v);
        for (int l = 0; l < 32; ++l)
          for (int i = 0; i < 4; ++i) O[2 * (l % 4) + i % 2][16 * mt + l / 4 + 8 * (i / 2)] = v[l].c[i];
      }
      for (int h = 0; h < G; ++h) {
        double s[16], mx = ninf, den = 0;
        for (int k = 0; k < n; ++k) {
          s[k] = 0;
          for (int d = 0; d < D; ++d) s[k] += Q[h][d] * K[k][d];
          mx = std::max(mx, s[k]);
        }
        for (int k = 0; k < n; ++k) den += (s[k] = std::exp(s[k] - mx));
        for (int d = 0; d < D; ++d) {
          double ref = 0;
          for (int k = 0; k < n; ++k) ref += s[k] * V[k][d];
          EXPECT_NEAR(O[h][d] / L[h], ref / den, 1e-12) << "G " << G << " n " << n << " head " << h << " dim " << d;
        }
      }
    }
}
