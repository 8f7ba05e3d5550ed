// Spense v1: pack a materialised weight into its 2:4 sparse + dense-tile parts, unpack it
// back, and validate packed buffers. Works on raw dtype bits (F32, BF16, F16) so the round
// trip is exact; no arithmetic touches a value. Serialisation lives in serialize.cpp.
//
// Layout (docs/format.md): groups of 4 consecutive columns of the sparse part; per group two
// kept values in position order and a nibble p0 | p1 << 2 (p0 < p1); two groups per byte,
// even group in the low nibble.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <string>
#include <vector>

#include "spense/error.h"
#include "spense/format.h"

namespace spense {

namespace {

std::string layer_tag(const std::string& name) {
  return "layer '" + (name.empty() ? std::string("?") : name) + "'";
}

bool dtype_packable(DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16; }

void check_dtype(const std::string& name, DType d) {
  if (!dtype_packable(d))
    throw Error(layer_tag(name) + ": dtype " + dtype_name(d) +
                " is not supported by the Spense format (F32, BF16, F16)");
}

// Bit tests on one element of each dtype.
template <class E>
struct Bits {
  E abs_mask;  // all bits but the sign
  E exp_mask;  // exponent all ones = Inf/NaN
};
template <class E>
Bits<E> bits_of(DType d);
template <>
Bits<uint32_t> bits_of<uint32_t>(DType) {
  return {0x7fffffffu, 0x7f800000u};
}
template <>
Bits<uint16_t> bits_of<uint16_t>(DType d) {
  if (d == DType::BF16) return {0x7fff, 0x7f80};
  return {0x7fff, 0x7c00};  // F16
}

// body(r) for every row r in [0, n) on OpenMP threads (when there are at least `elems`
// 2^20 elements of work); rows are independent. An exception is rethrown after the loop, the
// one of the lowest failing row, so errors read as the serial loop's first one would.
template <class F>
void for_rows(int64_t n, int64_t elems, F body) {
  std::exception_ptr err;
  int64_t err_row = std::numeric_limits<int64_t>::max();
#pragma omp parallel for schedule(static) if (elems >= (int64_t(1) << 20))
  for (int64_t r = 0; r < n; ++r) {
    try {
      body(r);
    } catch (...) {
#pragma omp critical(spense_pack_error)
      if (r < err_row) err_row = r, err = std::current_exception();
    }
  }
  if (err) std::rethrow_exception(err);
}

// Axis OUT: index of each row within its part (dense rows and sparse rows counted apart).
std::vector<int64_t> part_rows(const std::vector<uint8_t>& dflag) {
  std::vector<int64_t> idx(dflag.size());
  int64_t s = 0, d = 0;
  for (size_t r = 0; r < dflag.size(); ++r) idx[r] = dflag[r] ? d++ : s++;
  return idx;
}

// Column c belongs to a dense tile (axis IN) / row r belongs to a dense tile (axis OUT).
std::vector<uint8_t> dense_flags(int64_t dim, const SpenseLayout& l) {
  std::vector<uint8_t> f(size_t(dim), 0);
  for (int64_t t : l.dense_tiles)
    for (int64_t i = t * l.g; i < (t + 1) * l.g; ++i) f[size_t(i)] = 1;
  return f;
}

template <class E>
void pack_impl(SpenseTensor& t, const E* W) {
  const Bits<E> b = bits_of<E>(t.dtype);
  const int64_t N = t.N, K = t.K;
  const bool out = t.layout.axis == SpenseAxis::OUT;
  const auto dflag = dense_flags(out ? N : K, t.layout);
  const int64_t R = t.sparse_rows(), Ks = t.sparse_cols(), Dc = t.dense_count();
  const int64_t meta_row = (Ks + 7) / 8;
  t.values.assign(size_t(R * (Ks / 2)) * sizeof(E), 0);
  t.meta.assign(size_t(R * meta_row), 0);
  t.dense.assign(size_t(out ? Dc * K : N * Dc) * sizeof(E), 0);
  E* vals = reinterpret_cast<E*>(t.values.data());
  E* dense = reinterpret_cast<E*>(t.dense.data());

  const std::vector<int64_t> prow = out ? part_rows(dflag) : std::vector<int64_t>();
  for_rows(N, N * K, [&](int64_t r) {
    const E* w = W + r * K;
    for (int64_t c = 0; c < K; ++c)
      if ((w[c] & b.exp_mask) == b.exp_mask)
        throw Error(layer_tag(t.name) + ": weight [" + std::to_string(r) + "," +
                    std::to_string(c) + "] is NaN or Inf; refusing to pack");
    if (out && dflag[size_t(r)]) {
      std::memcpy(dense + prow[size_t(r)] * K, w, size_t(K) * sizeof(E));
      return;
    }
    const int64_t pr = out ? prow[size_t(r)] : r;  // row of the sparse part
    E* v = vals + pr * (Ks / 2);
    uint8_t* m = t.meta.data() + pr * meta_row;
    E* d = out ? nullptr : dense + r * Dc;
    int64_t grp = 0;  // group index within the sparse row
    for (int64_t c = 0; c < K; c += 4) {
      if (!out && dflag[size_t(c)]) {  // a dense tile's 4 columns (tiles are multiples of 4)
        std::memcpy(d, w + c, 4 * sizeof(E));
        d += 4;
        continue;
      }
      // Slots: numerically non-zero values first, then -0.0 (bits != +0), then the lowest
      // free positions; the two chosen positions are stored in increasing order.
      int nz = 0, nbits = 0;
      for (int k = 0; k < 4; ++k) {
        nz += (w[c + k] & b.abs_mask) != 0;
        nbits += w[c + k] != 0;
      }
      if (nz > 2)
        throw Error(layer_tag(t.name) + ": row " + std::to_string(r) + ", columns " +
                    std::to_string(c) + ".." + std::to_string(c + 3) + " hold " +
                    std::to_string(nz) + " non-zero values; a 2:4 group allows at most 2");
      bool take[4] = {false, false, false, false};
      int n = 0;
      for (int k = 0; k < 4 && n < 2; ++k)
        if ((w[c + k] & b.abs_mask) != 0) take[k] = true, ++n;
      for (int k = 0; k < 4 && n < 2 && nbits > nz; ++k)
        if (!take[k] && w[c + k] != 0) take[k] = true, ++n;
      for (int k = 0; k < 4 && n < 2; ++k)
        if (!take[k]) take[k] = true, ++n;
      int p[2], j = 0;
      for (int k = 0; k < 4; ++k)
        if (take[k]) p[j++] = k;
      v[0] = w[c + p[0]];
      v[1] = w[c + p[1]];
      v += 2;
      const uint8_t nib = uint8_t(p[0] | (p[1] << 2));
      m[grp >> 1] |= uint8_t((grp & 1) ? nib << 4 : nib);
      ++grp;
    }
  });
}

template <class E>
void unpack_impl(const SpenseTensor& t, E* W) {
  const int64_t N = t.N, K = t.K;
  const bool out = t.layout.axis == SpenseAxis::OUT;
  const auto dflag = dense_flags(out ? N : K, t.layout);
  const int64_t Ks = t.sparse_cols(), Dc = t.dense_count();
  const int64_t meta_row = (Ks + 7) / 8;
  const E* vals = reinterpret_cast<const E*>(t.values.data());
  const E* dense = reinterpret_cast<const E*>(t.dense.data());
  const std::vector<int64_t> prow = out ? part_rows(dflag) : std::vector<int64_t>();
  for_rows(N, N * K, [&](int64_t r) {
    E* w = W + r * K;
    if (out && dflag[size_t(r)]) {
      std::memcpy(w, dense + prow[size_t(r)] * K, size_t(K) * sizeof(E));
      return;
    }
    const int64_t pr = out ? prow[size_t(r)] : r;
    const E* v = vals + pr * (Ks / 2);
    const uint8_t* m = t.meta.data() + pr * meta_row;
    const E* d = out ? nullptr : dense + r * Dc;
    int64_t grp = 0;
    for (int64_t c = 0; c < K; c += 4) {
      if (!out && dflag[size_t(c)]) {
        std::memcpy(w + c, d, 4 * sizeof(E));
        d += 4;
        continue;
      }
      const uint8_t nib = (grp & 1) ? (m[grp >> 1] >> 4) : (m[grp >> 1] & 0xf);
      w[c] = w[c + 1] = w[c + 2] = w[c + 3] = 0;
      w[c + (nib & 3)] = v[0];
      w[c + (nib >> 2)] = v[1];
      v += 2;
      ++grp;
    }
  });
}

}  // namespace

const char* spense_axis_name(SpenseAxis a) { return a == SpenseAxis::OUT ? "out" : "in"; }

bool spense_axis_parse(const std::string& s, SpenseAxis* out) {
  if (s == "out") return *out = SpenseAxis::OUT, true;
  if (s == "in") return *out = SpenseAxis::IN, true;
  return false;
}

int64_t spense_num_tiles(const std::string& name, int64_t N, int64_t K, const SpenseLayout& l) {
  const bool out = l.axis == SpenseAxis::OUT;
  const int64_t dim = out ? N : K;
  if (l.g <= 0 || l.g % 4 != 0)
    throw Error(layer_tag(name) + ": tile size g = " + std::to_string(l.g) +
                " must be a positive multiple of 4");
  if (dim % l.g != 0)
    throw Error(layer_tag(name) + ": " + (out ? "N = " : "K = ") + std::to_string(dim) +
                " (axis " + spense_axis_name(l.axis) + ") is not a multiple of the tile size g = " +
                std::to_string(l.g));
  return dim / l.g;
}

void spense_layout_check(const std::string& name, int64_t N, int64_t K, const SpenseLayout& l) {
  if (N <= 0 || K <= 0)
    throw Error(layer_tag(name) + ": shape [" + std::to_string(N) + "," + std::to_string(K) +
                "] must be positive");
  if (K % 4 != 0)
    throw Error(layer_tag(name) + ": K = " + std::to_string(K) +
                " is not a multiple of 4, so the 2:4 groups along K do not fit");
  const int64_t T = spense_num_tiles(name, N, K, l);
  for (size_t i = 0; i < l.dense_tiles.size(); ++i) {
    const int64_t t = l.dense_tiles[i];
    if (t < 0 || t >= T)
      throw Error(layer_tag(name) + ": dense tile index " + std::to_string(t) +
                  " out of range [0," + std::to_string(T) + ")");
    if (i > 0 && t <= l.dense_tiles[i - 1])
      throw Error(layer_tag(name) + ": dense tile indices must be sorted and unique; " +
                  std::to_string(l.dense_tiles[i - 1]) + " is followed by " + std::to_string(t));
  }
}

int64_t SpenseTensor::dense_count() const { return int64_t(layout.dense_tiles.size()) * layout.g; }
int64_t SpenseTensor::sparse_rows() const {
  return layout.axis == SpenseAxis::OUT ? N - dense_count() : N;
}
int64_t SpenseTensor::sparse_cols() const {
  return layout.axis == SpenseAxis::OUT ? K : K - dense_count();
}
double SpenseTensor::density() const {
  const double dense_elems = double(dense_count()) * double(layout.axis == SpenseAxis::OUT ? K : N);
  return (double(sparse_rows()) * double(sparse_cols()) / 2 + dense_elems) / (double(N) * double(K));
}
double SpenseTensor::storage_ratio() const {
  const double es = double(dtype_size(dtype));
  const double bytes = double(values.size() + meta.size() + dense.size());
  return bytes / (double(N) * double(K) * es);
}

SpenseTensor spense_pack(const std::string& name, DType dtype, int64_t N, int64_t K,
                         const void* W, const SpenseLayout& layout) {
  check_dtype(name, dtype);
  spense_layout_check(name, N, K, layout);
  SpenseTensor t;
  t.name = name;
  t.dtype = dtype;
  t.N = N;
  t.K = K;
  t.layout = layout;
  if (dtype_size(dtype) == 4)
    pack_impl<uint32_t>(t, static_cast<const uint32_t*>(W));
  else
    pack_impl<uint16_t>(t, static_cast<const uint16_t*>(W));
  return t;
}

SpenseTensor spense_pack_f64(const std::string& name, DType dtype, int64_t N, int64_t K,
                             const double* W, const SpenseLayout& layout) {
  check_dtype(name, dtype);
  spense_layout_check(name, N, K, layout);
  const size_t es = dtype_size(dtype);
  std::vector<uint8_t> raw(size_t(N) * size_t(K) * es);
  auto bad = [&](int64_t r, int64_t c, const char* what) {
    throw Error(layer_tag(name) + ": weight [" + std::to_string(r) + "," + std::to_string(c) +
                "] = " + std::to_string(W[r * K + c]) + " " + what);
  };
  const uint16_t exp16 = dtype == DType::BF16 ? 0x7f80 : 0x7c00;
  for_rows(N, N * K, [&](int64_t r) {
    thread_local std::vector<float> f;  // one row at a time: no fp32 copy of W
    f.resize(size_t(K));
    const double* w = W + r * K;
    for (int64_t c = 0; c < K; ++c) {
      if (!std::isfinite(w[c])) bad(r, c, "is NaN or Inf; refusing to pack");
      f[size_t(c)] = float(w[c]);
    }
    uint8_t* dst = raw.data() + size_t(r) * size_t(K) * es;
    convert_from_f32(dtype, f.data(), dst, size_t(K));
    // A finite value that became Inf overflowed the dtype: an error, not a silent Inf.
    if (dtype == DType::F32) {
      for (int64_t c = 0; c < K; ++c)
        if (std::isinf(f[size_t(c)])) bad(r, c, (std::string("overflows ") + dtype_name(dtype)).c_str());
    } else {
      for (int64_t c = 0; c < K; ++c) {
        uint16_t h;
        std::memcpy(&h, dst + c * 2, 2);
        if ((h & exp16) == exp16) bad(r, c, (std::string("overflows ") + dtype_name(dtype)).c_str());
      }
    }
  });
  return spense_pack(name, dtype, N, K, raw.data(), layout);
}

std::vector<uint8_t> spense_unpack(const SpenseTensor& t) {
  spense_validate(t);
  std::vector<uint8_t> out(size_t(t.N) * size_t(t.K) * dtype_size(t.dtype));
  if (dtype_size(t.dtype) == 4)
    unpack_impl<uint32_t>(t, reinterpret_cast<uint32_t*>(out.data()));
  else
    unpack_impl<uint16_t>(t, reinterpret_cast<uint16_t*>(out.data()));
  return out;
}

std::vector<float> spense_unpack_f32(const SpenseTensor& t) {
  const auto raw = spense_unpack(t);
  std::vector<float> f(size_t(t.N) * size_t(t.K));
  const size_t es = dtype_size(t.dtype);
  for_rows(t.N, t.N * t.K, [&](int64_t r) {
    convert_to_f32(t.dtype, raw.data() + size_t(r) * size_t(t.K) * es, f.data() + size_t(r) * size_t(t.K), size_t(t.K));
  });
  return f;
}

namespace {

template <class E>
void check_values_finite(const SpenseTensor& t, const std::vector<uint8_t>& buf, const char* what) {
  const Bits<E> b = bits_of<E>(t.dtype);
  const int64_t n = int64_t(buf.size() / sizeof(E)), chunk = 1 << 16;
  for_rows((n + chunk - 1) / chunk, n, [&](int64_t ci) {
    for (int64_t i = ci * chunk; i < std::min(n, (ci + 1) * chunk); ++i) {
      E v;
      std::memcpy(&v, buf.data() + i * sizeof(E), sizeof(E));
      if ((v & b.exp_mask) == b.exp_mask)
        throw Error(layer_tag(t.name) + ": packed " + what + " element " + std::to_string(i) +
                    " is NaN or Inf");
    }
  });
}

void check_size(const SpenseTensor& t, const char* what, size_t have, int64_t rows, int64_t cols,
                size_t es) {
  const size_t want = size_t(rows) * size_t(cols) * es;
  if (have != want)
    throw Error(layer_tag(t.name) + ": packed " + what + " has " + std::to_string(have) +
                " bytes, expected " + std::to_string(want) + " ([" + std::to_string(rows) + "," +
                std::to_string(cols) + "] x " + std::to_string(es) + " bytes)");
}

}  // namespace

void spense_validate(const SpenseTensor& t) {
  check_dtype(t.name, t.dtype);
  spense_layout_check(t.name, t.N, t.K, t.layout);
  const size_t es = dtype_size(t.dtype);
  const int64_t R = t.sparse_rows(), Ks = t.sparse_cols(), Dc = t.dense_count();
  const int64_t meta_row = (Ks + 7) / 8;
  check_size(t, "values", t.values.size(), R, Ks / 2, es);
  check_size(t, "meta", t.meta.size(), R, meta_row, 1);
  if (t.layout.axis == SpenseAxis::OUT)
    check_size(t, "dense", t.dense.size(), Dc, t.K, es);
  else
    check_size(t, "dense", t.dense.size(), t.N, Dc, es);
  const int64_t groups = Ks / 4;
  for (int64_t r = 0; r < R; ++r) {
    const uint8_t* m = t.meta.data() + r * meta_row;
    for (int64_t g = 0; g < groups; ++g) {
      const uint8_t nib = (g & 1) ? (m[g >> 1] >> 4) : (m[g >> 1] & 0xf);
      const int p0 = nib & 3, p1 = nib >> 2;
      if (p0 >= p1)
        throw Error(layer_tag(t.name) + ": sparse row " + std::to_string(r) + ", group " +
                    std::to_string(g) + ": metadata nibble 0x" + "0123456789abcdef"[nib] +
                    " gives positions " + std::to_string(p0) + "," + std::to_string(p1) +
                    "; the two kept positions must be strictly increasing");
    }
    if (groups & 1) {
      if ((m[meta_row - 1] >> 4) != 0)
        throw Error(layer_tag(t.name) + ": sparse row " + std::to_string(r) +
                    ": padding nibble after the last group must be 0");
    }
  }
  if (es == 4) {
    check_values_finite<uint32_t>(t, t.values, "values");
    check_values_finite<uint32_t>(t, t.dense, "dense");
  } else {
    check_values_finite<uint16_t>(t, t.values, "values");
    check_values_finite<uint16_t>(t, t.dense, "dense");
  }
}

}  // namespace spense
