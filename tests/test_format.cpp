// Spense v1 packed tensor: pack/unpack round trips (bit-exact, every dtype and axis), the byte
// layout of docs/format.md (worked example, derived by hand from the spec), validation errors.
// References: the spec in docs/format.md and identities (unpack(pack(W)) == W, storage ratio
// 0.5625 for 16-bit 2:4 from design.md section 1).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "spense/error.h"
#include "spense/format.h"

using namespace spense;

namespace {

// Expect fn to throw spense::Error whose message contains every fragment.
template <class Fn>
void expect_error(Fn&& fn, std::initializer_list<const char*> fragments) {
  try {
    fn();
    ADD_FAILURE() << "no spense::Error thrown (expected: " << *fragments.begin() << ")";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const char* f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "message: " << msg;
  }
}

std::vector<uint8_t> to_dtype(DType d, const std::vector<float>& f) {
  std::vector<uint8_t> out(f.size() * dtype_size(d));
  convert_from_f32(d, f.data(), out.data(), f.size());
  return out;
}

// A random N x K matrix that is 2:4 outside the dense tiles: sparse groups hold 0, 1 or 2
// values (some -0.0, some subnormal-small), dense tiles hold 4 values including -0.0.
std::vector<float> random_24(int64_t N, int64_t K, const SpenseLayout& l, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_int_distribution<int> pick(0, 9);
  std::vector<float> W(size_t(N * K), 0.f);
  auto dense = [&](int64_t r, int64_t c) {
    for (int64_t t : l.dense_tiles) {
      const int64_t i = l.axis == SpenseAxis::OUT ? r : c;
      if (i >= t * l.g && i < (t + 1) * l.g) return true;
    }
    return false;
  };
  auto value = [&]() {
    const int k = pick(rng);
    if (k == 0) return -0.0f;
    if (k == 1) return 1e-3f * nd(rng);
    return nd(rng);
  };
  for (int64_t r = 0; r < N; ++r)
    for (int64_t c = 0; c < K; c += 4) {
      if (dense(r, c)) {
        for (int k = 0; k < 4; ++k) W[size_t(r * K + c + k)] = value();
        continue;
      }
      const int nz = pick(rng) % 3;  // 0, 1 or 2 entries
      int p0 = pick(rng) % 4, p1 = (p0 + 1 + pick(rng) % 3) % 4;
      if (nz >= 1) W[size_t(r * K + c + p0)] = value();
      if (nz == 2) W[size_t(r * K + c + p1)] = value();
    }
  return W;
}

SpenseTensor small_valid(DType d = DType::BF16) {
  SpenseLayout l{SpenseAxis::OUT, 4, {1}};
  const auto W = to_dtype(d, random_24(12, 16, l, 7));
  return spense_pack("blk.0.q", d, 12, 16, W.data(), l);
}

}  // namespace

TEST(Format, RoundTripBitExactAllDtypesAndAxes) {
  // Reference: the identity unpack(pack(W)) == W, byte for byte.
  const int64_t N = 24, K = 40;
  const std::vector<SpenseLayout> layouts = {
      {SpenseAxis::OUT, 4, {}},          {SpenseAxis::OUT, 4, {0, 3, 5}},
      {SpenseAxis::OUT, 8, {0, 1, 2}},   {SpenseAxis::IN, 4, {}},
      {SpenseAxis::IN, 4, {1, 2, 9}},    {SpenseAxis::IN, 8, {0, 1, 2, 3, 4}},
      {SpenseAxis::OUT, 12, {0, 1}},     {SpenseAxis::IN, 20, {1}},
  };
  uint32_t seed = 1;
  for (DType d : {DType::F32, DType::BF16, DType::F16})
    for (const auto& l : layouts) {
      const auto W = to_dtype(d, random_24(N, K, l, seed++));
      const auto t = spense_pack("layer", d, N, K, W.data(), l);
      spense_validate(t);
      EXPECT_EQ(spense_unpack(t), W) << dtype_name(d) << " axis " << spense_axis_name(l.axis)
                                     << " g " << l.g << " dense " << l.dense_tiles.size();
      const double d_ratio = double(l.dense_tiles.size() * l.g) / double(l.axis == SpenseAxis::OUT ? N : K);
      EXPECT_NEAR(t.density(), 0.5 * (1 - d_ratio) + d_ratio, 1e-12);
    }
}

TEST(Format, NegativeZeroKeptExactly) {
  // -0.0 in a kept slot survives bit for bit; a group [-0, -0, -0, 1] (3 entries that are not
  // +0.0, 1 numerically non-zero) round-trips numerically (docs/format.md).
  std::vector<float> w = {-0.0f, 0.f, 2.f, 0.f, /**/ -0.0f, -0.0f, -0.0f, 1.f};
  const auto W = to_dtype(DType::F32, w);
  const auto t = spense_pack("z", DType::F32, 1, 8, W.data(), {SpenseAxis::IN, 4, {}});
  const auto back = spense_unpack_f32(t);
  EXPECT_TRUE(std::signbit(back[0]) && back[0] == 0.f);
  EXPECT_EQ(back[2], 2.f);
  for (int k = 4; k < 8; ++k) EXPECT_EQ(back[size_t(k)], w[size_t(k)]);  // numerically equal
  EXPECT_TRUE(std::signbit(back[4]));  // the first -0.0 takes the free slot
}

TEST(Format, WorkedExampleBytes) {
  // docs/format.md, "Worked example": one row, K = 16, axis IN, g = 4, dense tile 2.
  // Expected bytes derived by hand from the spec.
  const std::vector<float> w = {0, 1.5f, 0, -2, /**/ 0, 0, 0, 0, /**/ 1, 2, 3, 4, /**/ 0, 0, 7, 0};
  const auto W = to_dtype(DType::BF16, w);
  const auto t = spense_pack("ex", DType::BF16, 1, 16, W.data(), {SpenseAxis::IN, 4, {2}});
  const std::vector<uint8_t> values = {0xC0, 0x3F, 0x00, 0xC0, 0x00, 0x00,
                                       0x00, 0x00, 0x00, 0x00, 0xE0, 0x40};
  const std::vector<uint8_t> meta = {0x4D, 0x08};
  const std::vector<uint8_t> dense = {0x80, 0x3F, 0x00, 0x40, 0x40, 0x40, 0x80, 0x40};
  EXPECT_EQ(t.values, values);
  EXPECT_EQ(t.meta, meta);
  EXPECT_EQ(t.dense, dense);
  EXPECT_EQ(spense_unpack(t), W);
}

TEST(Format, StorageRatio) {
  // design.md section 1: 16-bit 2:4 keeps 0.5625 of the dense bytes (K/2 values + K/8 bytes).
  SpenseLayout l{SpenseAxis::OUT, 16, {}};
  const auto W = to_dtype(DType::BF16, random_24(64, 128, l, 3));
  EXPECT_DOUBLE_EQ(spense_pack("x", DType::BF16, 64, 128, W.data(), l).storage_ratio(), 0.5625);
  // Plus dense tiles: d = 0.25 -> 0.75 * 0.5625 + 0.25.
  SpenseLayout l2{SpenseAxis::OUT, 16, {1}};
  const auto W2 = to_dtype(DType::BF16, random_24(64, 128, l2, 4));
  EXPECT_DOUBLE_EQ(spense_pack("x", DType::BF16, 64, 128, W2.data(), l2).storage_ratio(),
                   0.75 * 0.5625 + 0.25);
}

TEST(Format, PackRejectsThreeNonZeros) {
  std::vector<float> w(16, 0.f);
  w[8] = 1, w[9] = 2, w[11] = 3;  // group 2 of row 0
  const auto W = to_dtype(DType::F16, w);
  expect_error([&] { spense_pack("mlp.up", DType::F16, 1, 16, W.data(), {SpenseAxis::IN, 4, {}}); },
               {"mlp.up", "row 0", "columns 8..11", "3 non-zero"});
  // The same group inside a dense tile is fine.
  EXPECT_NO_THROW(spense_pack("mlp.up", DType::F16, 1, 16, W.data(), {SpenseAxis::IN, 4, {2}}));
}

TEST(Format, PackRejectsNaNAndOverflow) {
  std::vector<float> w(8, 0.f);
  w[1] = NAN;
  const auto W = to_dtype(DType::F32, w);
  expect_error([&] { spense_pack("l", DType::F32, 1, 8, W.data(), {SpenseAxis::IN, 4, {}}); },
               {"'l'", "[0,1]", "NaN"});
  std::vector<double> wd(8, 0.0);
  wd[0] = 1e6;  // beyond F16's 65504
  expect_error([&] { spense_pack_f64("l", DType::F16, 1, 8, wd.data(), {SpenseAxis::IN, 4, {}}); },
               {"overflows F16"});
  wd[0] = INFINITY;
  expect_error([&] { spense_pack_f64("l", DType::BF16, 1, 8, wd.data(), {SpenseAxis::IN, 4, {}}); },
               {"NaN or Inf"});
}

TEST(Format, LayoutErrors) {
  std::vector<uint8_t> W(16 * 16 * 2, 0);
  auto pack = [&](SpenseLayout l, int64_t N = 16, int64_t K = 16) {
    return spense_pack("attn.o", DType::BF16, N, K, W.data(), l);
  };
  expect_error([&] { pack({SpenseAxis::OUT, 4, {2, 1}}); }, {"attn.o", "sorted"});
  expect_error([&] { pack({SpenseAxis::OUT, 4, {1, 1}}); }, {"sorted and unique"});
  expect_error([&] { pack({SpenseAxis::OUT, 4, {4}}); }, {"out of range [0,4)"});
  expect_error([&] { pack({SpenseAxis::OUT, 4, {-1}}); }, {"out of range"});
  expect_error([&] { pack({SpenseAxis::OUT, 6, {}}); }, {"multiple of 4"});
  expect_error([&] { pack({SpenseAxis::OUT, 8, {}}, 12, 16); }, {"N = 12", "multiple of the tile size g = 8"});
  expect_error([&] { pack({SpenseAxis::IN, 8, {}}, 16, 12); }, {"K = 12", "axis in"});
  expect_error([&] { pack({SpenseAxis::IN, 4, {}}, 16, 14); }, {"K = 14", "multiple of 4"});
  expect_error([&] { spense_pack("x", DType::F8_E4M3, 4, 4, W.data(), {SpenseAxis::IN, 4, {}}); },
               {"F8_E4M3", "not supported"});
}

TEST(Format, ValidateRejectsCorruptBuffers) {
  {
    auto t = small_valid();
    t.values.pop_back();
    expect_error([&] { spense_validate(t); }, {"blk.0.q", "values", "expected"});
  }
  {
    auto t = small_valid();
    t.meta.push_back(0);
    expect_error([&] { spense_validate(t); }, {"meta", "bytes, expected"});
  }
  {
    auto t = small_valid();
    t.dense.resize(t.dense.size() + 2);
    expect_error([&] { spense_validate(t); }, {"dense", "expected"});
  }
  {
    auto t = small_valid();
    t.meta[0] = (t.meta[0] & 0xf0) | 0x6;  // positions 2,1: not increasing
    expect_error([&] { spense_validate(t); }, {"group 0", "strictly increasing"});
  }
  {
    auto t = small_valid();
    t.meta[1] = (t.meta[1] & 0x0f) | 0x00;  // group 3: positions 0,0
    expect_error([&] { spense_validate(t); }, {"group 3", "strictly increasing"});
  }
  {
    auto t = small_valid();
    t.layout.dense_tiles = {2, 1};
    expect_error([&] { spense_validate(t); }, {"sorted"});
  }
  {
    auto t = small_valid();
    t.layout.dense_tiles = {0, 2};  // sizes no longer agree with |D| = 2
    expect_error([&] { spense_validate(t); }, {"bytes, expected"});
  }
  {
    auto t = small_valid(DType::F32);
    const uint32_t nan = 0x7fc00000u;
    std::memcpy(t.values.data() + 4, &nan, 4);
    expect_error([&] { spense_validate(t); }, {"NaN or Inf"});
  }
  {
    // Odd number of groups per row: the padding nibble must be 0.
    std::vector<float> w(12, 0.f);
    const auto W = to_dtype(DType::BF16, w);
    auto t = spense_pack("pad", DType::BF16, 1, 12, W.data(), {SpenseAxis::IN, 4, {}});
    ASSERT_EQ(t.meta.size(), 2u);
    EXPECT_EQ(t.meta[1] >> 4, 0);
    t.meta[1] |= 0x40;
    expect_error([&] { spense_validate(t); }, {"padding nibble"});
  }
}

TEST(Format, AllDenseAndAllSparseEdges) {
  for (auto axis : {SpenseAxis::OUT, SpenseAxis::IN}) {
    SpenseLayout all{axis, 4, {0, 1, 2, 3}};
    const auto W = to_dtype(DType::F16, random_24(16, 16, all, 9));
    const auto t = spense_pack("e", DType::F16, 16, 16, W.data(), all);
    EXPECT_TRUE(t.values.empty());
    EXPECT_TRUE(t.meta.empty());
    EXPECT_EQ(spense_unpack(t), W);
    EXPECT_DOUBLE_EQ(t.density(), 1.0);
  }
}
