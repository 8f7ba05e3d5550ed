// The Spense v1 packed tensor: one linear layer's weight W (N x K, out x in) split into a
// 2:4 sparse part (kept values + 2-bit positions) and a dense part made of whole tiles of g
// output rows (axis OUT) or g input columns (axis IN). The byte layout is specified in
// docs/format.md; this header packs, unpacks, validates and (de)serialises it.
//
// Not here: pruning (spense/prune.h), FP8 scales, conversion to the cuSPARSELt layout (the
// GPU runtime does that on load).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "spense/dtype.h"

namespace spense {

class SafetensorsWriter;
class SafetensorsFile;

// Which dimension the dense tiles are cut from.
enum class SpenseAxis : uint8_t {
  OUT,  // tiles of g output rows: dense rows [t*g, (t+1)*g) are stored as is
  IN,   // tiles of g input columns: dense columns [t*g, (t+1)*g) are stored as is
};
const char* spense_axis_name(SpenseAxis a);               // "out" / "in"
bool spense_axis_parse(const std::string& s, SpenseAxis* out);

// Where the dense tiles are. Validated by spense_layout_check().
struct SpenseLayout {
  SpenseAxis axis = SpenseAxis::OUT;
  int64_t g = 64;                    // tile size; a positive multiple of 4 (16 for real models)
  std::vector<int64_t> dense_tiles;  // tile indices, sorted ascending, unique, < num_tiles
};

// Number of tiles along the axis (N/g or K/g). Throws if the dimension is not a multiple of g.
int64_t spense_num_tiles(const std::string& name, int64_t N, int64_t K, const SpenseLayout& l);
// Throws spense::Error naming `name` unless: K % 4 == 0, g > 0 and g % 4 == 0, the tiled
// dimension is a multiple of g, and dense_tiles is sorted, unique and in range.
void spense_layout_check(const std::string& name, int64_t N, int64_t K, const SpenseLayout& l);

// A packed layer. Byte buffers hold little-endian elements of `dtype` (F32, BF16 or F16).
//   R  = rows of the sparse part: N - |D|*g (axis OUT) or N (axis IN)
//   Ks = columns of the sparse part: K (axis OUT) or K - |D|*g (axis IN)
//   values: R x Ks/2 elements, the two kept values of each group of 4, in position order
//   meta:   R x ceil(Ks/8) bytes; one nibble per group (low nibble = even group), the nibble
//           holds the two kept positions p0 < p1 as p0 | p1 << 2; a row's unused high nibble is 0
//   dense:  |D|*g x K (axis OUT, rows of the dense tiles in order) or N x |D|*g (axis IN)
struct SpenseTensor {
  std::string name;  // layer name, e.g. "model.layers.0.mlp.up_proj" (used in messages)
  DType dtype = DType::BF16;
  int64_t N = 0, K = 0;
  SpenseLayout layout;
  std::vector<uint8_t> values;
  std::vector<uint8_t> meta;
  std::vector<uint8_t> dense;

  int64_t sparse_rows() const;  // R
  int64_t sparse_cols() const;  // Ks
  int64_t dense_count() const;  // |D| * g rows (OUT) or columns (IN)
  // Stored bytes / bytes of the dense N x K matrix (0.5625 for 16-bit plain 2:4).
  double storage_ratio() const;
  // Stored values / (N*K): 0.5 for plain 2:4, 1 for all dense.
  double density() const;
};

// Pack a materialised N x K row-major matrix given as raw `dtype` elements.
// Throws spense::Error naming the layer (and row/column) if the layout is invalid, dtype is
// not F32/BF16/F16, a value is NaN/Inf, or a group of 4 in the sparse part has more than
// 2 numerically non-zero values. Groups with fewer than 2 stored entries fill the free
// slots deterministically (docs/format.md), so unpack(pack(W)) == W bit for bit whenever each
// sparse group has at most 2 entries whose bits are not +0.0 (a third or fourth -0.0 in a
// group is stored as +0.0: numerically equal, not bit-identical).
SpenseTensor spense_pack(const std::string& name, DType dtype, int64_t N, int64_t K,
                         const void* W, const SpenseLayout& layout);
// Same from fp64 values: each value is rounded to fp32 (round to nearest even), then to
// dtype (round to nearest even); a finite value that overflows the dtype is an error.
SpenseTensor spense_pack_f64(const std::string& name, DType dtype, int64_t N, int64_t K,
                             const double* W, const SpenseLayout& layout);

// Materialise the N x K matrix as raw dtype elements (zeros at pruned positions are +0.0).
std::vector<uint8_t> spense_unpack(const SpenseTensor& t);
std::vector<float> spense_unpack_f32(const SpenseTensor& t);

// Throws spense::Error naming the layer, the row/group/tile and the problem if: the dtype is
// unsupported, the layout is invalid, a buffer's size disagrees with N, K, g and |D|, a nibble
// does not hold two strictly increasing positions, a padding nibble is not 0, or a value is
// NaN/Inf.
void spense_validate(const SpenseTensor& t);

// The per-layer JSON description (docs/format.md, "JSON"), one line.
std::string spense_layer_json(const SpenseTensor& t);

// Add the layer's four tensors "<name>.spense.values", ".meta", ".dense", ".dense_tiles" to
// a writer, and its JSON description as metadata key "<name>.spense". Validates first.
void spense_write_tensors(SafetensorsWriter& w, const SpenseTensor& t);
// Read a layer written by spense_write_tensors from a mapped file; checks that tensors,
// dtypes and shapes agree with the JSON, then validates.
SpenseTensor spense_read_tensors(const SafetensorsFile& f, const std::string& name);
// The layer names described in a file's metadata (keys ending in ".spense"), sorted.
std::vector<std::string> spense_list_layers(const SafetensorsFile& f);

}  // namespace spense
