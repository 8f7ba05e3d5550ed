// Element types and scalar / bulk conversions to and from fp32.
//
// All narrowing conversions round to nearest, ties to even, done in integer arithmetic on
// the IEEE-754 bit pattern (no dependence on the FPU rounding mode except where noted).
// The bulk loops are written so that GCC/Clang vectorize them at -O3: element loads go
// through memcpy (source pointers inside a mapped checkpoint need not be aligned) and the
// per-element work is branch-free selects.
#include "spense/dtype.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "spense/error.h"

namespace spense {

namespace {

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct DTypeRow {
  DType t;
  const char* name;
  size_t size;
  bool is_float;
};
constexpr DTypeRow kDTypes[] = {
    {DType::F64, "F64", 8, true},       {DType::F32, "F32", 4, true},
    {DType::F16, "F16", 2, true},       {DType::BF16, "BF16", 2, true},
    {DType::F8_E4M3, "F8_E4M3", 1, true}, {DType::I64, "I64", 8, false},
    {DType::I32, "I32", 4, false},      {DType::I16, "I16", 2, false},
    {DType::I8, "I8", 1, false},        {DType::U8, "U8", 1, false},
    {DType::BOOL, "BOOL", 1, false},
};

const DTypeRow& row(DType t) {
  for (const auto& r : kDTypes)
    if (r.t == t) return r;
  throw Error("invalid DType value " + std::to_string(static_cast<int>(t)), 1);
}

// fp8 e4m3fn decode from the format definition (OCP FP8: bias 7, 3 mantissa bits, no inf,
// S.1111.111 is NaN), evaluated at compile time into a 256-entry table.
constexpr float fp8_e4m3_decode(uint8_t v) {
  const uint32_t exp = (v >> 3) & 0xfu, man = v & 0x7u;
  const uint32_t sign = static_cast<uint32_t>(v & 0x80u) << 24;
  if ((v & 0x7fu) == 0x7fu) return std::bit_cast<float>(sign | 0x7fc00000u);  // NaN
  if (exp == 0)  // subnormal: man/8 * 2^-6 = man * 2^-9 (exact)
    return std::bit_cast<float>(sign | std::bit_cast<uint32_t>(static_cast<float>(man) / 512.0f));
  return std::bit_cast<float>(sign | ((exp + 120u) << 23) | (man << 20));  // rebias 7 -> 127
}

struct Fp8Table {
  float v[256];
};
constexpr Fp8Table make_fp8_table() {
  Fp8Table t{};
  for (int i = 0; i < 256; ++i) t.v[i] = fp8_e4m3_decode(static_cast<uint8_t>(i));
  return t;
}
constexpr Fp8Table kFp8 = make_fp8_table();

template <class T>
inline T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
template <class T>
inline void store(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

[[noreturn]] void not_float(DType t, const char* what) {
  throw Error(std::string(what) + ": dtype " + dtype_name(t) +
              " is not a floating-point type (expected F64, F32, F16, BF16 or F8_E4M3)");
}

}  // namespace

size_t dtype_size(DType t) { return row(t).size; }
const char* dtype_name(DType t) { return row(t).name; }
bool dtype_is_float(DType t) { return row(t).is_float; }

bool dtype_parse(std::string_view name, DType* out) {
  for (const auto& r : kDTypes) {
    if (name == r.name) {
      if (out) *out = r.t;
      return true;
    }
  }
  return false;
}

// ---- bf16 ----------------------------------------------------------------------------

float bf16_to_f32(uint16_t h) { return bits_f32(static_cast<uint32_t>(h) << 16); }

uint16_t f32_to_bf16(float f) {
  const uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)  // NaN: keep sign and top payload, force quiet
    return static_cast<uint16_t>((u >> 16) | 0x0040u);
  // Round to nearest even on the 16 dropped bits; a carry into the exponent is correct
  // (rounds up to the next binade, or to inf past the largest finite bf16).
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// ---- f16 -----------------------------------------------------------------------------

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  // Three candidates, selected without branches so the bulk loop vectorizes.
  const uint32_t normal = ((exp + 112u) << 23) | (man << 13);        // rebias 15 -> 127
  const uint32_t special = 0x7f800000u | (man << 13);                 // inf / NaN
  const uint32_t sub = f32_bits(static_cast<float>(man) * 0x1p-24f);  // exact: man < 2^10
  // All-ones / all-zeros masks rather than ?: so GCC if-converts and vectorizes the loop.
  const uint32_t m_sub = 0u - static_cast<uint32_t>(exp == 0);
  const uint32_t m_spec = 0u - static_cast<uint32_t>(exp == 31);
  const uint32_t mag = (sub & m_sub) | (special & m_spec) | (normal & ~(m_sub | m_spec));
  return bits_f32(sign | mag);
}

// Rounds v in [0, 2^22] to the nearest integer, ties to even, in plain fp32 arithmetic:
// adding 2^23 leaves a unit in the last place of 1, so the hardware's round-to-nearest-even
// does the rounding (default rounding mode assumed, as everywhere in C++). Exact products
// (v scaled by a power of two) keep this correct under FMA contraction too.
inline uint32_t round_small(float v) { return f32_bits(v + 0x1p23f) - 0x4b000000u; }

namespace {
[[gnu::always_inline]] inline uint16_t f16_encode(float f) {
  // Every case is computed and the right one selected with masks: no branches, so the bulk
  // loop vectorizes. Out-of-range intermediate values in the unused cases are harmless.
  const uint32_t u = f32_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t x = u & 0x7fffffffu;
  // NaN: keep the top payload bits, force quiet.
  const uint32_t nan = 0x7e00u | ((x >> 13) & 0x3ffu);
  // Normal f16 (x >= 2^-14): round to nearest even on the 13 dropped bits, rebias 127 -> 15.
  // A carry into the exponent is correct, up to 0x7c00 (inf) for x in [65520, 2^16).
  const uint32_t normal = (x + 0xfffu + ((x >> 13) & 1u) - (112u << 23)) >> 13;
  // Subnormal f16: the value in units of 2^-24 (exact scaling), rounded to [0, 1024];
  // 1024 is the encoding of the smallest normal, so rounding up across the boundary works.
  const uint32_t sub = round_small(bits_f32(x) * 0x1p24f);
  const uint32_t m_nan = 0u - static_cast<uint32_t>(x > 0x7f800000u);
  const uint32_t m_inf = (0u - static_cast<uint32_t>(x >= 0x47800000u)) & ~m_nan;  // >= 2^16, inf
  const uint32_t m_norm = (0u - static_cast<uint32_t>(x >= 0x38800000u)) & ~(m_nan | m_inf);
  const uint32_t m_sub = ~(m_nan | m_inf | m_norm);
  return static_cast<uint16_t>(sign | (nan & m_nan) | (0x7c00u & m_inf) | (normal & m_norm) |
                               (sub & m_sub));
}
}  // namespace

uint16_t f32_to_f16(float f) { return f16_encode(f); }

// ---- fp8 e4m3fn ----------------------------------------------------------------------

float fp8_e4m3_to_f32(uint8_t v) { return kFp8.v[v]; }

namespace {
[[gnu::always_inline]] inline uint8_t fp8_encode(float f) {
  // Branch-free like f32_to_f16.
  const uint32_t u = f32_bits(f);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t x = u & 0x7fffffffu;
  // Normal (x >= 2^-6): round to nearest even on the 20 dropped mantissa bits, rebias
  // 127 -> 7. Below 448 the result rounds up to at most 448 (0x7e), never to the NaN code:
  // the next value above 448 would be 480.
  const uint32_t normal = (x + 0x7ffffu + ((x >> 20) & 1u) - (120u << 23)) >> 20;
  // Subnormal: units of 2^-9, rounded to [0, 8]; 8 encodes 2^-6 (0x08).
  const uint32_t sub = round_small(bits_f32(x) * 0x1p9f);
  const uint32_t m_nan = 0u - static_cast<uint32_t>(x > 0x7f800000u);
  const uint32_t m_sat = (0u - static_cast<uint32_t>(x >= 0x43e00000u)) & ~m_nan;  // >= 448, inf
  const uint32_t m_norm = (0u - static_cast<uint32_t>(x >= 0x3c800000u)) & ~(m_nan | m_sat);
  const uint32_t m_sub = ~(m_nan | m_sat | m_norm);
  const uint32_t mag = (0x7eu & m_sat) | (normal & m_norm) | (sub & m_sub);
  return static_cast<uint8_t>((0x7fu & m_nan) | ((sign | mag) & ~m_nan));  // NaN -> 0x7f
}
}  // namespace

uint8_t f32_to_fp8_e4m3(float f) { return fp8_encode(f); }

// ---- bulk ----------------------------------------------------------------------------

void convert_to_f32(DType t, const void* src_v, float* dst, size_t n) {
  const uint8_t* src = static_cast<const uint8_t*>(src_v);
  switch (t) {
    case DType::F32:
      if (n) std::memcpy(dst, src, n * 4);
      return;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load<double>(src + 8 * i));
      return;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i)
        dst[i] = bits_f32(static_cast<uint32_t>(load<uint16_t>(src + 2 * i)) << 16);
      return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load<uint16_t>(src + 2 * i));
      return;
    case DType::F8_E4M3: {
      const float* tab = kFp8.v;
      for (size_t i = 0; i < n; ++i) dst[i] = tab[src[i]];
      return;
    }
    default:
      not_float(t, "convert_to_f32");
  }
}

void convert_from_f32(DType t, const float* src, void* dst_v, size_t n) {
  uint8_t* dst = static_cast<uint8_t*>(dst_v);
  switch (t) {
    case DType::F32:
      if (n) std::memcpy(dst, src, n * 4);
      return;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) store<double>(dst + 8 * i, static_cast<double>(src[i]));
      return;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) store<uint16_t>(dst + 2 * i, f32_to_bf16(src[i]));
      return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) store<uint16_t>(dst + 2 * i, f16_encode(src[i]));
      return;
    case DType::F8_E4M3:
      for (size_t i = 0; i < n; ++i) dst[i] = fp8_encode(src[i]);
      return;
    default:
      not_float(t, "convert_from_f32");
  }
}

}  // namespace spense
