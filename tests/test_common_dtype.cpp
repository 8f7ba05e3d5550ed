// dtype names/sizes and the fp32 <-> bf16 / f16 / fp8-e4m3fn conversions.
//
// Reference values come from the format definitions, not from the code under test:
//  - IEEE 754 binary16 (f16): bias 15, 10 mantissa bits. 0x3c00 = 1, 0x7bff = 65504 (largest),
//    0x0400 = 2^-14 (smallest normal), 0x0001 = 2^-24 (smallest subnormal), 0x7c00 = inf.
//  - bfloat16: the top 16 bits of an IEEE binary32. 0x3f80 = 1, 0x7f7f = (2 - 2^-7) * 2^127.
//  - OCP 8-bit floating point spec v1.0, E4M3 ("fn": no infinities): bias 7, 3 mantissa bits,
//    S.1111.111 is NaN, 0x7e = 448 (largest), 0x08 = 2^-6 (smallest normal),
//    0x01 = 2^-9 (smallest subnormal), 0x38 = 1.
// Independent oracles: GCC's _Float16 (libgcc soft-float conversions, IEEE round to nearest
// even) for f16, and brute-force nearest-value search in double precision for bf16 and fp8.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "spense/dtype.h"
#include "spense/error.h"

using namespace spense;

namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Random fp32 bit patterns plus every pattern near interesting boundaries.
std::vector<float> sample_floats(size_t n_random) {
  std::vector<float> v;
  std::mt19937 rng(12345);
  for (size_t i = 0; i < n_random; ++i) v.push_back(from_bits(static_cast<uint32_t>(rng())));
  std::uniform_real_distribution<float> u(-600.0f, 600.0f);
  for (size_t i = 0; i < n_random / 4; ++i) v.push_back(u(rng));
  std::uniform_real_distribution<float> small(-0.02f, 0.02f);
  for (size_t i = 0; i < n_random / 4; ++i) v.push_back(small(rng));
  for (float f : {0.0f, -0.0f, 1.0f, -1.0f, 448.0f, 464.0f, 480.0f, 65504.0f, 65519.0f, 65520.0f,
                  65536.0f, std::numeric_limits<float>::max(), std::numeric_limits<float>::min(),
                  std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::infinity(),
                  -std::numeric_limits<float>::infinity()})
    v.push_back(f);
  return v;
}

// Round x (finite double) to the nearest of the sorted, non-negative `values` (codes
// codes[i]), ties to the even code. `overflow_value` is the value of the code just past the
// last one for formats where overflow exists (inf), or NaN for saturating formats.
struct Grid {
  std::vector<double> values;
  std::vector<uint32_t> codes;
};
uint32_t nearest_code(const Grid& g, double ax) {
  size_t hi = std::lower_bound(g.values.begin(), g.values.end(), ax) - g.values.begin();
  if (hi < g.values.size() && g.values[hi] == ax) return g.codes[hi];
  if (hi == 0) return g.codes[0];
  if (hi == g.values.size()) return g.codes.back();  // caller handles overflow
  const size_t lo = hi - 1;
  const double dl = ax - g.values[lo], dh = g.values[hi] - ax;
  if (dl < dh) return g.codes[lo];
  if (dh < dl) return g.codes[hi];
  return (g.codes[lo] & 1) ? g.codes[hi] : g.codes[lo];
}

}  // namespace

TEST(common_DType, NamesSizesParse) {
  struct Row {
    DType t;
    const char* name;
    size_t size;
    bool is_float;
  } rows[] = {{DType::F64, "F64", 8, true},         {DType::F32, "F32", 4, true},
              {DType::F16, "F16", 2, true},         {DType::BF16, "BF16", 2, true},
              {DType::F8_E4M3, "F8_E4M3", 1, true}, {DType::I64, "I64", 8, false},
              {DType::I32, "I32", 4, false},        {DType::I16, "I16", 2, false},
              {DType::I8, "I8", 1, false},          {DType::U8, "U8", 1, false},
              {DType::BOOL, "BOOL", 1, false}};
  for (const auto& r : rows) {
    EXPECT_STREQ(dtype_name(r.t), r.name);
    EXPECT_EQ(dtype_size(r.t), r.size) << r.name;
    EXPECT_EQ(dtype_is_float(r.t), r.is_float) << r.name;
    DType parsed = DType::BOOL;
    ASSERT_TRUE(dtype_parse(r.name, &parsed)) << r.name;
    EXPECT_EQ(parsed, r.t);
  }
  DType d;
  for (const char* bad : {"", "bf16", "F8_E5M2", "U16", "float32", "BF16 ", "F8_E4M3FN"})
    EXPECT_FALSE(dtype_parse(bad, &d)) << bad;
}

// ---- bf16 ----------------------------------------------------------------------------

TEST(common_DType, Bf16HandValues) {
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(bf16_to_f32(0x3f81), 1.0f + 0x1p-7f);
  EXPECT_EQ(bf16_to_f32(0x7f7f), std::ldexp(2.0f - 0x1p-7f, 127));
  EXPECT_TRUE(std::isinf(bf16_to_f32(0x7f80)));
  EXPECT_TRUE(std::isnan(bf16_to_f32(0x7fc0)));
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  // 1 + 2^-8 lies exactly between 0x3f80 and 0x3f81: ties to even -> 0x3f80.
  EXPECT_EQ(f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
  // 1 + 3*2^-8 lies between 0x3f81 and 0x3f82: even is 0x3f82.
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
  // Just above the tie rounds up.
  EXPECT_EQ(f32_to_bf16(1.0f + 0x1p-8f + 0x1p-23f), 0x3f81);
  // FLT_MAX is above the midpoint between bf16 max and 2^128: overflows to inf.
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  // NaN stays NaN (also a signalling NaN with payload only in the low bits, which plain
  // truncation would turn into inf).
  const uint16_t n1 = f32_to_bf16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE(std::isnan(bf16_to_f32(n1)));
  const uint16_t n2 = f32_to_bf16(from_bits(0x7f800001u));
  EXPECT_TRUE(std::isnan(bf16_to_f32(n2))) << std::hex << n2;
  const uint16_t n3 = f32_to_bf16(from_bits(0xff800001u));
  EXPECT_TRUE(std::isnan(bf16_to_f32(n3)));
  EXPECT_EQ(n3 & 0x8000, 0x8000);
}

TEST(common_DType, Bf16ExhaustiveRoundTrip) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_f32(static_cast<uint16_t>(h));
    EXPECT_EQ(bits(f), h << 16);
    if (std::isnan(f))
      EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(f))));
    else
      EXPECT_EQ(f32_to_bf16(f), h) << std::hex << h;
  }
}

TEST(common_DType, Bf16RoundingMatchesNearestSearch) {
  // For a finite float, the two bf16 neighbours are the truncation t and t+1 (same sign);
  // pick the nearer in exact double arithmetic, ties to even; t+1 = 0x7f80 stands for 2^128.
  for (float f : sample_floats(1 << 20)) {
    if (std::isnan(f) || std::isinf(f)) continue;
    const uint32_t u = bits(f), sign = u & 0x80000000u, a = u & 0x7fffffffu;
    const uint32_t lo = a >> 16, hi = lo + 1;
    const double av = std::fabs(static_cast<double>(f));
    const double vlo = static_cast<double>(from_bits(lo << 16));
    const double vhi = hi == 0x7f80 ? std::ldexp(1.0, 128) : static_cast<double>(from_bits(hi << 16));
    uint32_t want;
    if (av - vlo < vhi - av) want = lo;
    else if (vhi - av < av - vlo) want = hi;
    else want = (lo & 1) ? hi : lo;
    ASSERT_EQ(f32_to_bf16(f), (sign >> 16) | want) << std::hexfloat << f;
  }
}

// ---- f16 -----------------------------------------------------------------------------

TEST(common_DType, F16HandValues) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0400), 0x1p-14f);
  EXPECT_EQ(f16_to_f32(0x0001), 0x1p-24f);
  EXPECT_EQ(f16_to_f32(0x03ff), 1023 * 0x1p-24f);
  EXPECT_EQ(f16_to_f32(0x3555), 0x1.554p-2f);  // 0.333251953125
  EXPECT_EQ(bits(f16_to_f32(0x8000)), 0x80000000u);
  EXPECT_TRUE(std::isinf(f16_to_f32(0x7c00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7c01)));

  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);  // below the midpoint 65520
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // tie: even neighbour is 2^16 = overflow -> inf
  EXPECT_EQ(f32_to_f16(-1e10f), 0xfc00);
  EXPECT_EQ(f32_to_f16(0x1p-14f), 0x0400);
  EXPECT_EQ(f32_to_f16(0x1p-24f), 0x0001);
  EXPECT_EQ(f32_to_f16(0x1p-25f), 0x0000);          // tie between 0 and 2^-24 -> 0 (even)
  EXPECT_EQ(f32_to_f16(0x1.000002p-25f), 0x0001);   // just above the tie
  EXPECT_EQ(f32_to_f16(3 * 0x1p-25f), 0x0002);      // tie between 1 and 2 units -> 2
  EXPECT_EQ(f32_to_f16(1023.5f * 0x1p-24f), 0x0400);  // tie -> 1024 units = smallest normal
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f), 0x3c00);   // tie between 0x3c00 and 0x3c01 -> even
  EXPECT_EQ(f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(from_bits(0x7f800001u)))));
}

TEST(common_DType, F16ExhaustiveRoundTrip) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_EQ(h & 0x7c00u, 0x7c00u);
      EXPECT_NE(h & 0x3ffu, 0u);
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
    } else {
      EXPECT_EQ(f32_to_f16(f), h) << std::hex << h;
    }
  }
}

#ifdef __FLT16_MAX__
TEST(common_DType, F16MatchesCompilerFloat16) {
  for (uint32_t h = 0; h < 65536; ++h) {
    _Float16 x;
    const uint16_t hb = static_cast<uint16_t>(h);
    std::memcpy(&x, &hb, 2);
    const float want = static_cast<float>(x);
    const float got = f16_to_f32(hb);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got));
    } else {
      ASSERT_EQ(bits(got), bits(want)) << std::hex << h;
    }
  }
  auto check = [](float f) {
    const _Float16 x = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &x, 2);
    const uint16_t got = f32_to_f16(f);
    if (std::isnan(f))
      ASSERT_TRUE(std::isnan(f16_to_f32(got)));
    else
      ASSERT_EQ(got, want) << std::hexfloat << f;
  };
  for (float f : sample_floats(1 << 20)) check(f);
  // Every midpoint between consecutive f16 values, and one float ulp either side.
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const double a = f16_to_f32(static_cast<uint16_t>(h));
    const double b = h + 1 == 0x7c00 ? 65536.0 : f16_to_f32(static_cast<uint16_t>(h + 1));
    const float mid = static_cast<float>((a + b) / 2);  // exact in fp32
    for (float f : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)}) {
      check(f);
      check(-f);
    }
  }
}
#endif

// ---- fp8 e4m3fn ----------------------------------------------------------------------

TEST(common_DType, Fp8HandValuesFromOcpSpec) {
  EXPECT_EQ(fp8_e4m3_to_f32(0x7e), 448.0f);   // S.1111.110 = 2^8 * 1.75
  EXPECT_EQ(fp8_e4m3_to_f32(0xfe), -448.0f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x08), 0x1p-6f);  // smallest normal
  EXPECT_EQ(fp8_e4m3_to_f32(0x01), 0x1p-9f);  // smallest subnormal
  EXPECT_EQ(fp8_e4m3_to_f32(0x07), 7 * 0x1p-9f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x38), 1.0f);     // 0.0111.000
  EXPECT_EQ(fp8_e4m3_to_f32(0x77), 240.0f);   // 0.1110.111 = 2^7 * 1.875
  EXPECT_EQ(fp8_e4m3_to_f32(0x78), 256.0f);   // 0.1111.000: e=15 is a normal binade in fn
  EXPECT_EQ(fp8_e4m3_to_f32(0x00), 0.0f);
  EXPECT_EQ(bits(fp8_e4m3_to_f32(0x80)), 0x80000000u);
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_f32(0x7f)));
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_f32(0xff)));

  EXPECT_EQ(f32_to_fp8_e4m3(448.0f), 0x7e);
  EXPECT_EQ(f32_to_fp8_e4m3(464.0f), 0x7e);   // saturating (would be the NaN code otherwise)
  EXPECT_EQ(f32_to_fp8_e4m3(1e6f), 0x7e);
  EXPECT_EQ(f32_to_fp8_e4m3(std::numeric_limits<float>::infinity()), 0x7e);
  EXPECT_EQ(f32_to_fp8_e4m3(-std::numeric_limits<float>::infinity()), 0xfe);
  EXPECT_EQ(f32_to_fp8_e4m3(std::numeric_limits<float>::quiet_NaN()), 0x7f);
  EXPECT_EQ(f32_to_fp8_e4m3(-std::numeric_limits<float>::quiet_NaN()), 0x7f);
  EXPECT_EQ(f32_to_fp8_e4m3(1.0f), 0x38);
  EXPECT_EQ(f32_to_fp8_e4m3(-0.0f), 0x80);
  EXPECT_EQ(f32_to_fp8_e4m3(1.0625f), 0x38);  // tie between 1 and 1.125 -> even code 0x38
  EXPECT_EQ(f32_to_fp8_e4m3(1.1875f), 0x3a);  // tie between 1.125 (0x39) and 1.25 (0x3a)
  EXPECT_EQ(f32_to_fp8_e4m3(432.0f), 0x7e);   // tie between 416 (0x7d) and 448 (0x7e)
  EXPECT_EQ(f32_to_fp8_e4m3(0x1p-10f), 0x00); // half the smallest subnormal: tie -> 0
  EXPECT_EQ(f32_to_fp8_e4m3(3 * 0x1p-10f), 0x02);
  EXPECT_EQ(f32_to_fp8_e4m3(7.5f * 0x1p-9f), 0x08);  // tie between 0x07 and 0x08 -> 0x08
  EXPECT_EQ(f32_to_fp8_e4m3(1e-30f), 0x00);
}

TEST(common_DType, Fp8ExhaustiveRoundTripAndOrder) {
  // Decoding is monotone over the positive codes 0x00..0x7e, and codes round-trip.
  float prev = -1;
  for (uint32_t c = 0; c < 256; ++c) {
    const float f = fp8_e4m3_to_f32(static_cast<uint8_t>(c));
    if ((c & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(f));
      continue;
    }
    // Independent decode from the spec's formula.
    const int e = (c >> 3) & 0xf, m = c & 7;
    const double mag = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1 + m / 8.0, e - 7);
    EXPECT_EQ(static_cast<double>(f), (c & 0x80) ? -mag : mag) << c;
    EXPECT_EQ(f32_to_fp8_e4m3(f), c) << c;
    if (c < 0x80) {
      EXPECT_GT(f, prev);
      prev = f;
    }
  }
}

TEST(common_DType, Fp8RoundingMatchesNearestSearch) {
  Grid g;
  for (uint32_t c = 0; c <= 0x7e; ++c) {
    const int e = (c >> 3) & 0xf, m = c & 7;
    g.values.push_back(e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1 + m / 8.0, e - 7));
    g.codes.push_back(c);
  }
  std::vector<float> fs = sample_floats(1 << 18);
  for (size_t i = 0; i + 1 < g.values.size(); ++i) {
    const float mid = static_cast<float>((g.values[i] + g.values[i + 1]) / 2);
    fs.insert(fs.end(), {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)});
  }
  for (float f : fs) {
    if (std::isnan(f)) continue;
    const double a = std::fabs(static_cast<double>(f));
    const uint32_t mag = a >= 448 ? 0x7e : nearest_code(g, a);  // saturating
    const uint32_t want = (std::signbit(f) ? 0x80 : 0) | mag;
    ASSERT_EQ(f32_to_fp8_e4m3(f), want) << std::hexfloat << f;
    ASSERT_EQ(f32_to_fp8_e4m3(-f), want ^ 0x80) << std::hexfloat << f;
  }
}

// ---- bulk ----------------------------------------------------------------------------

TEST(common_DType, BulkMatchesScalarAndHandlesUnalignedSources) {
  std::vector<float> src = sample_floats(4096);
  const size_t n = src.size();
  for (DType t : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::F8_E4M3}) {
    const size_t es = dtype_size(t);
    // Encode at an odd offset inside the buffer, so every element is misaligned.
    std::vector<uint8_t> buf(n * es + 1);
    convert_from_f32(t, src.data(), buf.data() + 1, n);
    std::vector<float> back(n);
    convert_to_f32(t, buf.data() + 1, back.data(), n);
    for (size_t i = 0; i < n; ++i) {
      float want;
      switch (t) {
        case DType::F64: want = src[i]; break;
        case DType::F32: want = src[i]; break;
        case DType::F16: want = f16_to_f32(f32_to_f16(src[i])); break;
        case DType::BF16: want = bf16_to_f32(f32_to_bf16(src[i])); break;
        default: want = fp8_e4m3_to_f32(f32_to_fp8_e4m3(src[i])); break;
      }
      if (std::isnan(want))
        ASSERT_TRUE(std::isnan(back[i])) << dtype_name(t) << " " << i;
      else
        ASSERT_EQ(bits(back[i]), bits(want)) << dtype_name(t) << " " << i;
    }
    // Encoded bytes equal the scalar encoders'.
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* p = buf.data() + 1 + i * es;
      if (t == DType::F16) {
        uint16_t h;
        std::memcpy(&h, p, 2);
        ASSERT_EQ(h, f32_to_f16(src[i]));
      } else if (t == DType::BF16) {
        uint16_t h;
        std::memcpy(&h, p, 2);
        ASSERT_EQ(h, f32_to_bf16(src[i]));
      } else if (t == DType::F8_E4M3) {
        ASSERT_EQ(*p, f32_to_fp8_e4m3(src[i]));
      }
    }
  }
  // Little-endian byte layout of a known value: bf16 1.0 = 0x3f80 -> bytes 80 3f.
  const float one = 1.0f;
  uint8_t b[2];
  convert_from_f32(DType::BF16, &one, b, 1);
  EXPECT_EQ(b[0], 0x80);
  EXPECT_EQ(b[1], 0x3f);
  // n = 0 touches nothing.
  convert_to_f32(DType::BF16, nullptr, nullptr, 0);
}

TEST(common_DType, BulkRefusesNonFloat) {
  int32_t x[2] = {1, 2};
  float f[2];
  try {
    convert_to_f32(DType::I32, x, f, 2);
    FAIL() << "expected spense::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("I32"), std::string::npos) << e.what();
  }
  EXPECT_THROW(convert_from_f32(DType::BOOL, f, x, 2), Error);
}
