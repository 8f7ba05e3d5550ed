// Safetensors reader/writer, checkpoints (single file and sharded), atomic file/dir output.
//
// Format reference: the safetensors README ("Format"): 8-byte little-endian u64 header
// length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
// "__metadata__": {str: str}}, then the data section; offsets are relative to the data
// section. Byte patterns below are written out by hand from IEEE 754 (1.0f = 0x3f800000,
// little-endian bytes 00 00 80 3f; bf16 1.0 = 0x3f80).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "spense/error.h"
#include "spense/fs.h"
#include "spense/safetensors.h"

using namespace spense;
namespace fs = std::filesystem;

namespace {

class TmpDir {
 public:
  TmpDir() {
    char tmpl[] = "/tmp/spense_io_test_XXXXXX";
    const char* d = mkdtemp(tmpl);
    if (!d) throw std::runtime_error("mkdtemp failed");
    path_ = d;
  }
  ~TmpDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& str() const { return path_; }

 private:
  std::string path_;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void put(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// A raw safetensors file: length prefix (the header's true length unless overridden),
// header text as given, data bytes.
void put_raw(const std::string& path, const std::string& header, const std::string& data,
             int64_t length_override = -1) {
  put(path, le64(length_override >= 0 ? static_cast<uint64_t>(length_override) : header.size()) +
                header + data);
}

// Names in dir containing ".tmp-" or ".old-" (leftovers of atomic writes).
std::vector<std::string> leftovers(const std::string& dir) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.find(".tmp-") != std::string::npos || n.find(".old-") != std::string::npos) v.push_back(n);
  }
  return v;
}

// Runs fn, expects a spense::Error whose message contains every one of `parts`.
template <class Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected spense::Error containing '" << *parts.begin() << "'";
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const auto& p : parts) EXPECT_NE(m.find(p), std::string::npos) << "'" << p << "' not in: " << m;
  }
}

std::string f32_bytes(std::initializer_list<float> v) {
  std::string s;
  for (float f : v) s.append(reinterpret_cast<const char*>(&f), 4);
  return s;
}

}  // namespace

// ---- writer: layout -------------------------------------------------------------------------

TEST(io_Safetensors, HeaderLayoutIsByteExact) {
  TmpDir d;
  SafetensorsWriter w;
  const float a[2] = {1.0f, 2.0f};
  const uint16_t b[3] = {0x3f80, 0xc000, 0x0000};  // bf16 1, -2, 0
  w.add("a", DType::F32, {2}, a, 8);
  w.add("b", DType::BF16, {3}, b, 6);
  w.set_metadata("format", "pt");
  EXPECT_EQ(w.size(), 2u);
  const std::string p = d / "x.safetensors";
  w.write(p);

  std::string want_header =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[8,14]},)"
      R"("__metadata__":{"format":"pt"}})";
  while ((8 + want_header.size()) % 8) want_header += ' ';  // spec'd padding: spaces
  const std::string want_data = std::string("\x00\x00\x80\x3f\x00\x00\x00\x40", 8) +  // 1.0f, 2.0f
                                std::string("\x80\x3f\x00\xc0\x00\x00", 6);            // bf16 1, -2, 0
  EXPECT_EQ(slurp(p), le64(want_header.size()) + want_header + want_data);
  EXPECT_EQ(want_header.size() % 8, 0u);
  EXPECT_TRUE(leftovers(d.str()).empty());
}

TEST(io_Safetensors, NoMetadataAndNoTensors) {
  TmpDir d;
  SafetensorsWriter w;
  w.write(d / "empty.safetensors");
  // "{}" padded to 8 bytes: header length 8, file size 16.
  EXPECT_EQ(slurp(d / "empty.safetensors"), le64(8) + "{}      ");
  auto f = SafetensorsFile::open(d / "empty.safetensors");
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_TRUE(f->metadata().empty());
}

TEST(io_Safetensors, DataOrderedBySizeContiguousAndAligned) {
  TmpDir d;
  SafetensorsWriter w;
  const uint8_t bytes[64] = {};
  w.add("x_bf16", DType::BF16, {3}, bytes, 6);    // 6 bytes: would misalign what follows
  w.add("y_f32", DType::F32, {1}, bytes, 4);
  w.add("z_f8", DType::F8_E4M3, {1}, bytes, 1);
  w.add("w_i64", DType::I64, {1}, bytes, 8);
  w.add("v_f16", DType::F16, {1}, bytes, 2);
  w.add("u_f32", DType::F32, {3}, bytes, 12);
  w.write(d / "o.safetensors");
  auto f = SafetensorsFile::open(d / "o.safetensors");
  // Element size descending, insertion order within a size:
  // w_i64 [0,8) y_f32 [8,12) u_f32 [12,24) x_bf16 [24,30) v_f16 [30,32) z_f8 [32,33)
  const std::vector<std::pair<std::string, std::pair<uint64_t, uint64_t>>> want = {
      {"w_i64", {0, 8}},   {"y_f32", {8, 12}},  {"u_f32", {12, 24}},
      {"x_bf16", {24, 30}}, {"v_f16", {30, 32}}, {"z_f8", {32, 33}}};
  ASSERT_EQ(f->tensors().size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const TensorInfo& t = f->tensors()[i];
    EXPECT_EQ(t.name, want[i].first);
    EXPECT_EQ(t.begin, want[i].second.first) << t.name;
    EXPECT_EQ(t.end, want[i].second.second) << t.name;
    // Aligned in memory too: the mapping is page-aligned and the data section 8-aligned.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(f->data(t)) % dtype_size(t.dtype), 0u) << t.name;
  }
  // Contiguous: the data section is exactly 33 bytes, after 8 + an 8-aligned header.
  const std::string raw = slurp(d / "o.safetensors");
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | static_cast<uint8_t>(raw[i]);
  EXPECT_EQ(raw.size(), 8 + hlen + 33);
  EXPECT_EQ(hlen % 8, 0u);
}

// ---- round trips -----------------------------------------------------------------------------

TEST(io_Safetensors, RoundTripEveryDTypeAndMetadata) {
  TmpDir d;
  const DType all[] = {DType::F64, DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::I64,
                       DType::I32, DType::I16, DType::I8,  DType::U8,   DType::BOOL};
  SafetensorsWriter w;
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<uint8_t>>> ref;
  int k = 0;
  for (DType t : all) {
    const std::vector<int64_t> shape = {2, 3 + k % 3};
    const size_t nb = static_cast<size_t>(shape[0] * shape[1]) * dtype_size(t);
    std::vector<uint8_t> bytes(nb);
    for (size_t i = 0; i < nb; ++i) bytes[i] = static_cast<uint8_t>(i * 7 + k * 13 + 1);
    if (t == DType::BOOL)
      for (auto& b : bytes) b &= 1;
    const std::string name = std::string("model.layers.") + std::to_string(k) + ".t_" + dtype_name(t);
    w.add(name, t, shape, bytes.data(), nb);
    ref[name] = {shape, bytes};
    ++k;
  }
  // Scalars and empty tensors are legal safetensors.
  const float s = 3.5f;
  w.add_f32("scalar", {}, &s);
  ref["scalar"] = {{}, std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(&s),
                                            reinterpret_cast<const uint8_t*>(&s) + 4)};
  w.add("empty", DType::BF16, {0, 4}, nullptr, 0);
  ref["empty"] = {{0, 4}, {}};
  w.set_metadata("format", "pt");
  w.set_metadata("spense.note", "quotes \" and \\ and ünïcödé");
  const std::string p = d / "model.safetensors";
  w.write(p);

  auto f = SafetensorsFile::open(p);
  EXPECT_EQ(f->path(), p);
  EXPECT_EQ(f->file_size(), fs::file_size(p));
  ASSERT_EQ(f->tensors().size(), ref.size());
  for (const auto& [name, sb] : ref) {
    const TensorInfo* t = f->find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->shape, sb.first) << name;
    ASSERT_EQ(t->nbytes(), sb.second.size()) << name;
    if (!sb.second.empty()) {
      EXPECT_EQ(std::memcmp(f->data(*t), sb.second.data(), sb.second.size()), 0) << name;
    }
  }
  EXPECT_EQ(f->find("scalar")->numel(), 1);
  EXPECT_EQ(f->find("empty")->numel(), 0);
  EXPECT_EQ(f->find("nope"), nullptr);
  const std::map<std::string, std::string> md = {{"format", "pt"},
                                                 {"spense.note", "quotes \" and \\ and ünïcödé"}};
  EXPECT_EQ(f->metadata(), md);

  // The same through Checkpoint, by directory and by file.
  for (const std::string& path : {d.str(), p}) {
    Checkpoint c = Checkpoint::open(path);
    const std::vector<std::string> names = c.names();
    EXPECT_EQ(names.size(), ref.size());
    EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
    EXPECT_EQ(c.size_on_disk(), fs::file_size(p));
    const TensorRef r = c.get("model.layers.1.t_F32", {2, 4});
    EXPECT_EQ(*r.file, p);
    EXPECT_EQ(std::memcmp(r.data, ref["model.layers.1.t_F32"].second.data(), 32), 0);
  }
}

TEST(io_Safetensors, AddFromF32AndLoadF32) {
  TmpDir d;
  const std::vector<float> v = {1.0f, -2.5f, 3.14159f, 1e-3f, 448.0f, -0.0f};
  SafetensorsWriter w;
  w.add_from_f32("bf", DType::BF16, {2, 3}, v.data());
  w.add_from_f32("h", DType::F16, {6}, v.data());
  w.add_from_f32("e", DType::F8_E4M3, {3, 2}, v.data());
  w.add_from_f32("d", DType::F64, {6}, v.data());
  w.add_f32("f", {6}, v.data());
  const int32_t ints[6] = {};
  w.add("i", DType::I32, {6}, ints, sizeof ints);
  EXPECT_THROW(w.add_from_f32("bad", DType::I32, {6}, v.data()), Error);
  w.write(d / "model.safetensors");
  Checkpoint c = Checkpoint::open(d.str());
  const auto bf = c.load_f32("bf", {2, 3});
  const auto h = c.load_f32("h", {6});
  const auto e = c.load_f32("e", {3, 2});
  const auto dd = c.load_f32("d", {6});
  const auto ff = c.load_f32("f", {6});
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_EQ(bf[i], bf16_to_f32(f32_to_bf16(v[i])));
    EXPECT_EQ(h[i], f16_to_f32(f32_to_f16(v[i])));
    EXPECT_EQ(e[i], fp8_e4m3_to_f32(f32_to_fp8_e4m3(v[i])));
    EXPECT_EQ(dd[i], v[i]);
    EXPECT_EQ(ff[i], v[i]);
  }
  // Stored bytes are the bf16 encodings: 1.0 -> 0x3f80.
  const TensorRef r = c.get("bf");
  EXPECT_EQ(r.data[0], 0x80);
  EXPECT_EQ(r.data[1], 0x3f);
  expect_error([&] { c.load_f32("i", {6}); }, {d / "model.safetensors", "'i'", "I32", "floating-point"});
}

TEST(io_Safetensors, ReaderIgnoresKeyOrderPaddingAndGaps) {
  TmpDir d;
  // Metadata first, keys inside entries in another order, whitespace, NUL padding, a
  // 4-byte gap between the tensors, and 3 trailing bytes after the data.
  const std::string header =
      "{\n  \"__metadata__\" : {\"format\": \"pt\"},\n"
      "  \"second\": {\"data_offsets\": [12, 16], \"shape\": [1], \"dtype\": \"F32\"},\n"
      "  \"first\" : {\"shape\": [2], \"dtype\": \"F32\", \"data_offsets\": [0, 8]}\n}" +
      std::string(5, '\0');
  put_raw(d / "t.safetensors", header, f32_bytes({1, 2}) + std::string(4, 'x') + f32_bytes({3}) + "abc");
  Checkpoint c = Checkpoint::open(d / "t.safetensors");
  EXPECT_EQ(c.load_f32("first", {2}), (std::vector<float>{1, 2}));
  EXPECT_EQ(c.load_f32("second", {1}), (std::vector<float>{3}));
  EXPECT_EQ(c.files()[0]->metadata().at("format"), "pt");
  EXPECT_EQ(c.files()[0]->tensors()[0].name, "first");  // tensors() is in file order
}

// ---- bad files --------------------------------------------------------------------------------

struct BadCase {
  const char* what;
  std::string header;  // full header text
  std::string data;
  std::vector<std::string> expect;  // substrings of the message (besides the file name)
  int64_t length_override = -1;
};

TEST(io_Safetensors, BadHeadersNameFileTensorAndProblem) {
  TmpDir d;
  const std::string ok_data = f32_bytes({1, 2, 3, 4, 5, 6});  // 24 bytes
  const std::vector<BadCase> cases = {
      {"header length beyond the file", "{}", "", {"header length 1000", "past the end of the file"}, 1000},
      {"absurd header length", "{}", "", {"header length 200000000", "exceeds the limit"}, 200000000},
      {"not JSON", "{\"a\": ", "", {"not valid JSON"}},
      {"binary garbage", std::string("\xff\xfe\x00\x01", 4), "", {"not valid JSON"}},
      {"not an object", "[1,2,3]", "", {"header is a JSON array, expected an object"}},
      {"duplicate tensor", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       ok_data, {"'w'", "more than once"}},
      {"entry not an object", R"({"w": 5})", "", {"'w'", "expected an object"}},
      {"missing dtype", R"({"w":{"shape":[2,3],"data_offsets":[0,24]}})", ok_data, {"'w'", "missing \"dtype\""}},
      {"missing shape", R"({"w":{"dtype":"F32","data_offsets":[0,24]}})", ok_data, {"'w'", "missing \"shape\""}},
      {"missing offsets", R"({"w":{"dtype":"F32","shape":[2,3]}})", ok_data, {"'w'", "missing \"data_offsets\""}},
      {"unknown dtype", R"({"w":{"dtype":"F8_E5M2","shape":[24],"data_offsets":[0,24]}})", ok_data,
       {"'w'", "unknown dtype \"F8_E5M2\""}},
      {"dtype not a string", R"({"w":{"dtype":4,"shape":[6],"data_offsets":[0,24]}})", ok_data, {"'w'", "dtype"}},
      {"negative dim", R"({"w":{"dtype":"F32","shape":[-2,-3],"data_offsets":[0,24]}})", ok_data,
       {"'w'", "negative dimension"}},
      {"fractional dim", R"({"w":{"dtype":"F32","shape":[2.5,3],"data_offsets":[0,24]}})", ok_data,
       {"'w'", "non-integer dimension"}},
      {"offsets one number", R"({"w":{"dtype":"F32","shape":[6],"data_offsets":[0]}})", ok_data,
       {"'w'", "\"data_offsets\" is [0]"}},
      {"negative offset", R"({"w":{"dtype":"F32","shape":[6],"data_offsets":[-4,20]}})", ok_data,
       {"'w'", "data_offsets"}},
      {"offsets past data", R"({"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", ok_data,
       {"'w'", "[0,32]", "past the end of the data section (24 bytes"}},
      {"end before begin", R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", ok_data,
       {"'w'", "end before begin"}},
      {"size mismatch", R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,24]}})", ok_data,
       {"'w'", "24 bytes in data_offsets, expected 12 for BF16 [2,3]"}},
      {"overlap", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[3],"data_offsets":[12,24]}})",
       ok_data, {"'a' [0,16)", "'b' [12,24)", "overlap"}},
      {"metadata not strings", R"({"__metadata__":{"n":3}})", "", {"__metadata__", "'n'", "expected a string"}},
      {"metadata not object", R"({"__metadata__":[1]})", "", {"__metadata__", "expected an object"}},
  };
  int i = 0;
  for (const BadCase& bc : cases) {
    SCOPED_TRACE(bc.what);
    const std::string p = d / ("bad" + std::to_string(i++) + ".safetensors");
    put_raw(p, bc.header, bc.data, bc.length_override);
    try {
      SafetensorsFile::open(p);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_EQ(m.rfind(p + ": ", 0), 0u) << m;  // starts with the file name
      for (const auto& s : bc.expect) EXPECT_NE(m.find(s), std::string::npos) << "'" << s << "' not in: " << m;
      EXPECT_EQ(e.exit_code(), 2);
    }
    // Checkpoint::open reports the same.
    EXPECT_THROW(Checkpoint::open(p), Error);
  }
}

TEST(io_Safetensors, ShortAndMissingFiles) {
  TmpDir d;
  put(d / "zero.safetensors", "");
  put(d / "five.safetensors", "abcde");
  expect_error([&] { SafetensorsFile::open(d / "zero.safetensors"); },
               {d / "zero.safetensors", "0 bytes, too short"});
  expect_error([&] { SafetensorsFile::open(d / "five.safetensors"); },
               {d / "five.safetensors", "5 bytes, too short"});
  expect_error([&] { SafetensorsFile::open(d / "absent.safetensors"); },
               {d / "absent.safetensors", "cannot open"});
  expect_error([&] { SafetensorsFile::open(d.str()); }, {d.str(), "not a regular file"});
  // A truncated real file: the last tensor's bytes are cut off.
  SafetensorsWriter w;
  const std::vector<float> v(100, 1.0f);
  w.add_f32("w", {100}, v.data());
  w.write(d / "full.safetensors");
  const std::string full = slurp(d / "full.safetensors");
  put(d / "cut.safetensors", full.substr(0, full.size() - 10));
  expect_error([&] { SafetensorsFile::open(d / "cut.safetensors"); },
               {d / "cut.safetensors", "'w'", "past the end of the data section"});
}

// ---- checkpoints ----------------------------------------------------------------------------

namespace {

// Two shards and an index, the way transformers' save_pretrained lays them out.
void write_sharded(const TmpDir& d, const std::string& index_json = "") {
  const std::vector<float> a = {1, 2, 3, 4, 5, 6}, b = {7, 8}, c = {9};
  SafetensorsWriter s1, s2;
  s1.add_from_f32("model.embed_tokens.weight", DType::BF16, {2, 3}, a.data());
  s1.add_f32("model.norm.weight", {2}, b.data());
  s2.add_f32("lm_head.weight", {1, 1}, c.data());
  s1.set_metadata("format", "pt");
  s2.set_metadata("format", "pt");
  s1.write(d / "model-00001-of-00002.safetensors");
  s2.write(d / "model-00002-of-00002.safetensors");
  put(d / "model.safetensors.index.json",
      index_json.empty() ? R"({
  "metadata": {"total_size": 20},
  "weight_map": {
    "lm_head.weight": "model-00002-of-00002.safetensors",
    "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
    "model.norm.weight": "model-00001-of-00002.safetensors"
  }
})"
                         : index_json);
}

}  // namespace

TEST(io_Checkpoint, ShardedWithIndex) {
  TmpDir d;
  write_sharded(d);
  for (const std::string& path : {d.str(), d / "model.safetensors.index.json"}) {
    Checkpoint c = Checkpoint::open(path);
    EXPECT_EQ(c.names(), (std::vector<std::string>{"lm_head.weight", "model.embed_tokens.weight",
                                                   "model.norm.weight"}));
    EXPECT_EQ(c.files().size(), 2u);
    EXPECT_EQ(c.size_on_disk(), fs::file_size(d / "model-00001-of-00002.safetensors") +
                                    fs::file_size(d / "model-00002-of-00002.safetensors"));
    EXPECT_TRUE(c.has("lm_head.weight"));
    EXPECT_FALSE(c.has("model.layers.0.mlp.up_proj.weight"));
    EXPECT_EQ(c.load_f32("model.embed_tokens.weight", {2, 3}), (std::vector<float>{1, 2, 3, 4, 5, 6}));
    EXPECT_EQ(c.load_f32("lm_head.weight", {1, 1}), (std::vector<float>{9}));
    const TensorRef r = c.get("model.norm.weight");
    EXPECT_EQ(fs::path(*r.file).filename(), "model-00001-of-00002.safetensors");
    EXPECT_EQ(r.info->dtype, DType::F32);
  }
}

TEST(io_Checkpoint, LookupErrorsNameFileTensorAndShapes) {
  TmpDir d;
  write_sharded(d);
  Checkpoint c = Checkpoint::open(d.str());
  try {
    c.get("model.embed_tokens.weight", {3, 2});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), d / "model-00001-of-00002.safetensors" +
                                         ": 'model.embed_tokens.weight' shape [2,3], expected [3,2]");
  }
  try {
    c.get("model.layers.3.mlp.up_proj.weight");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), d.str() + ": missing tensor 'model.layers.3.mlp.up_proj.weight'");
  }
  expect_error([&] { c.load_f32("model.norm.weight", {3}); }, {"'model.norm.weight' shape [2], expected [3]"});
}

TEST(io_Checkpoint, BadIndexes) {
  const std::string s1 = "model-00001-of-00002.safetensors", s2 = "model-00002-of-00002.safetensors";
  struct Case {
    const char* what;
    std::string index;
    std::vector<std::string> expect;
  } cases[] = {
      {"shard missing",
       R"({"weight_map":{"lm_head.weight":"model-00003-of-00003.safetensors"}})",
       {"shard 'model-00003-of-00003.safetensors'", "'lm_head.weight'", "does not exist"}},
      {"tensor in the other shard",
       R"({"weight_map":{"lm_head.weight":")" + s1 + R"(","model.norm.weight":")" + s2 + R"("}})",
       {"'lm_head.weight'", "listed in shard '" + s1 + "'", "not in", "(it is in"}},
      {"tensor nowhere",
       R"({"weight_map":{"ghost.weight":")" + s2 + R"(","lm_head.weight":")" + s2 + R"("}})",
       {"'ghost.weight'", "listed in shard '" + s2 + "'", "not in"}},
      {"not JSON", "{weight_map", {"not valid JSON"}},
      {"no weight_map", R"({"metadata":{}})", {"missing \"weight_map\""}},
      {"weight_map not an object", R"({"weight_map":[]})", {"\"weight_map\" is not an object"}},
      {"empty weight_map", R"({"weight_map":{}})", {"\"weight_map\" is empty"}},
      {"shard not a string", R"({"weight_map":{"lm_head.weight":1}})", {"'lm_head.weight'", "not a string"}},
      {"path escapes the directory", R"({"weight_map":{"lm_head.weight":"../model-00002-of-00002.safetensors"}})",
       {"'lm_head.weight'", "expected a file name inside the checkpoint directory"}},
      {"absolute path", R"({"weight_map":{"lm_head.weight":"/etc/passwd"}})", {"inside the checkpoint directory"}},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.what);
    TmpDir d;
    write_sharded(d, k.index);
    std::vector<std::string> parts = k.expect;
    parts.push_back(d / "model.safetensors.index.json");
    try {
      Checkpoint::open(d.str());
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      const std::string m = e.what();
      for (const auto& s : parts) EXPECT_NE(m.find(s), std::string::npos) << "'" << s << "' not in: " << m;
    }
  }
}

TEST(io_Checkpoint, DuplicateTensorAcrossShards) {
  TmpDir d;
  write_sharded(d);
  SafetensorsWriter w;  // rewrite shard 2 with a tensor that shard 1 also has
  const float x[2] = {0, 0}, y = 1;
  w.add_f32("model.norm.weight", {2}, x);
  w.add_f32("lm_head.weight", {1, 1}, &y);
  w.write(d / "model-00002-of-00002.safetensors");
  expect_error([&] { Checkpoint::open(d.str()); }, {"'model.norm.weight'", "is also in", "model-0000"});
}

TEST(io_Checkpoint, DirectoryResolution) {
  TmpDir d;
  expect_error([&] { Checkpoint::open(d.str()); },
               {d.str(), "no model.safetensors or model.safetensors.index.json"});
  expect_error([&] { Checkpoint::open(d / "nothing"); }, {d / "nothing", "no such file or directory"});
  // Both present: model.safetensors wins (as in transformers).
  write_sharded(d);
  SafetensorsWriter w;
  const float one = 1;
  w.add_f32("only.here", {1}, &one);
  w.write(d / "model.safetensors");
  Checkpoint c = Checkpoint::open(d.str());
  EXPECT_EQ(c.names(), std::vector<std::string>{"only.here"});
  // A bad shard is reported with the shard's own name.
  fs::remove(d / "model.safetensors");
  put(d / "model-00002-of-00002.safetensors", "xyz");
  expect_error([&] { Checkpoint::open(d.str()); }, {d / "model-00002-of-00002.safetensors", "too short"});
}

// ---- writer validation and atomicity --------------------------------------------------------

TEST(io_Writer, RefusesBadTensorsBeforeWriting) {
  TmpDir d;
  SafetensorsWriter w;
  const float v[6] = {};
  w.add_f32("ok", {2, 3}, v);
  expect_error([&] { w.add_f32("ok", {6}, v); }, {"'ok'", "added twice"});
  expect_error([&] { w.add("n", DType::F32, {2, 3}, v, 20); }, {"'n'", "20 bytes given, expected 24 for F32 [2,3]"});
  expect_error([&] { w.add("n", DType::F32, {-1, 3}, v, 12); }, {"'n'", "invalid shape [-1,3]"});
  expect_error([&] { w.add("__metadata__", DType::F32, {1}, v, 4); }, {"reserved"});
  expect_error([&] { w.add("", DType::F32, {1}, v, 4); }, {"empty tensor name"});
  expect_error([&] { w.add(std::string("bad\xff", 4), DType::F32, {1}, v, 4); }, {"not valid UTF-8"});
  expect_error([&] { w.add("n", DType::F32, {1LL << 40, 1LL << 40}, v, 4); }, {"'n'"});
  EXPECT_EQ(w.size(), 1u);
  EXPECT_TRUE(fs::is_empty(d.str()));

  // A failing write (directory does not exist) leaves nothing behind and names the path.
  expect_error([&] { w.write(d / "no/such/dir/x.safetensors"); }, {d / "no/such/dir/x.safetensors"});
  // Writing over a directory is refused.
  fs::create_directory(d / "adir");
  expect_error([&] { w.write(d / "adir"); }, {d / "adir", "is a directory"});
  EXPECT_TRUE(leftovers(d.str()).empty());

  // Success leaves exactly the file.
  w.write(d / "x.safetensors");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(d.str())) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"adir", "x.safetensors"}));
}

TEST(io_Writer, OverwriteReplacesWholeFile) {
  TmpDir d;
  const std::string p = d / "m.safetensors";
  put(p, std::string(10000, 'z'));  // an older, longer file
  SafetensorsWriter w;
  const float v = 2;
  w.add_f32("v", {1}, &v);
  w.write(p);
  auto f = SafetensorsFile::open(p);
  EXPECT_EQ(f->file_size(), fs::file_size(p));
  EXPECT_LT(f->file_size(), 10000u);
  EXPECT_TRUE(leftovers(d.str()).empty());
}

TEST(io_Writer, WriteFileAtomic) {
  TmpDir d;
  const std::string p = d / "a.bin";
  write_file_atomic(p, "hello", 5);
  EXPECT_EQ(slurp(p), "hello");
  write_file_atomic(p, "bye", 3);
  EXPECT_EQ(slurp(p), "bye");
  write_file_atomic(d / "empty.bin", nullptr, 0);
  EXPECT_EQ(fs::file_size(d / "empty.bin"), 0u);
  expect_error([&] { write_file_atomic(d / "missing/a.bin", "x", 1); }, {d / "missing/a.bin"});
  EXPECT_TRUE(leftovers(d.str()).empty());
}

TEST(io_Writer, AtomicFileTempNameAndAbandon) {
  TmpDir d;
  const std::string p = d / "f.bin";
  {
    AtomicFile f(p);
    EXPECT_EQ(f.temp_path(), p + ".tmp-" + std::to_string(getpid()));
    f.write("abc", 3);
    EXPECT_TRUE(fs::exists(f.temp_path()));
    EXPECT_FALSE(fs::exists(p));
  }  // not committed: removed
  EXPECT_FALSE(fs::exists(p));
  EXPECT_TRUE(fs::is_empty(d.str()));
  {
    AtomicFile f(p);
    f.write("abc", 3);
    f.commit();
  }
  EXPECT_EQ(slurp(p), "abc");
  EXPECT_TRUE(leftovers(d.str()).empty());
}

TEST(io_AtomicDir, CommitAbandonForce) {
  TmpDir d;
  const std::string out = d / "sub/out";  // parent does not exist yet
  {
    AtomicDir a(out, false);
    EXPECT_EQ(a.path(), out + ".tmp-" + std::to_string(getpid()));
    EXPECT_TRUE(fs::is_directory(a.path()));
    write_file_atomic(a.path() + "/config.json", "{}", 2);
    EXPECT_FALSE(fs::exists(out));
  }  // not committed: temp dir and its contents removed, no output
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(leftovers(d / "sub").empty());

  {
    AtomicDir a(out + "/", false);  // trailing slash tolerated
    write_file_atomic(a.path() + "/config.json", "{\"v\":1}", 7);
    a.commit();
    EXPECT_TRUE(a.committed());
  }
  EXPECT_EQ(slurp(out + "/config.json"), "{\"v\":1}");
  EXPECT_TRUE(leftovers(d / "sub").empty());

  // Existing output: refused without force, untouched.
  expect_error([&] { AtomicDir a(out, false); }, {out, "already exists"});
  EXPECT_EQ(slurp(out + "/config.json"), "{\"v\":1}");
  EXPECT_TRUE(leftovers(d / "sub").empty());

  // With force: replaced as a whole (the old file that the new output lacks is gone).
  put(out + "/stale.bin", "old");
  {
    AtomicDir a(out, true);
    EXPECT_EQ(slurp(out + "/config.json"), "{\"v\":1}");  // old one intact until commit
    write_file_atomic(a.path() + "/config.json", "{\"v\":2}", 7);
    a.commit();
  }
  EXPECT_EQ(slurp(out + "/config.json"), "{\"v\":2}");
  EXPECT_FALSE(fs::exists(out + "/stale.bin"));
  EXPECT_TRUE(leftovers(d / "sub").empty());

  // Force over a regular file.
  put(d / "file_out", "x");
  {
    AtomicDir a(d / "file_out", true);
    a.commit();
  }
  EXPECT_TRUE(fs::is_directory(d / "file_out"));
  expect_error([&] { AtomicDir a("/", true); }, {"not a usable output path"});
}

// Corrupted files: every truncation and many random byte flips in the header either open
// (when the damage happens to leave a valid file) or throw spense::Error; never anything
// else (no crash, no other exception type). Run under ASan/UBSan for full value.
// ---- writer: spooled to disk -----------------------------------------------------------------

TEST(io_Writer, SpooledWriterWritesTheSameBytes) {
  // The same tensors added to an in-memory writer and to one that spools (part before and
  // part after spool_to) give byte-identical files, and the spool leaves no file behind.
  TmpDir d;
  const std::string spool = d / "spool";
  fs::create_directories(spool);
  std::mt19937 rng(3);
  SafetensorsWriter mem, sp;
  const DType kinds[] = {DType::BF16, DType::F32, DType::U8, DType::I64, DType::F16};
  for (int i = 0; i < 20; ++i) {
    const DType t = kinds[i % 5];
    const std::vector<int64_t> shape = {1 + i % 7, 3 + (i * 5) % 11};
    std::vector<uint8_t> bytes(size_t(shape[0] * shape[1]) * dtype_size(t));
    for (auto& b : bytes) b = static_cast<uint8_t>(rng());
    const std::string name = "t" + std::to_string(i);
    mem.add(name, t, shape, bytes.data(), bytes.size());
    if (i == 4) sp.spool_to(spool);
    sp.add(name, t, shape, bytes.data(), bytes.size());
  }
  std::vector<float> big(300000);
  for (auto& x : big) x = std::uniform_real_distribution<float>(-1, 1)(rng);
  mem.add_from_f32("big", DType::BF16, {300, 1000}, big.data());
  sp.add_from_f32("big", DType::BF16, {300, 1000}, big.data());
  mem.set_metadata("format", "pt");
  sp.set_metadata("format", "pt");
  EXPECT_TRUE(sp.has("t7"));
  EXPECT_FALSE(sp.has("t99"));
  EXPECT_TRUE(fs::is_empty(spool));  // unlinked at creation
  EXPECT_THROW(sp.add("t3", DType::U8, {1}, "x", 1), Error);  // a repeated name, spooled or not
  mem.write(d / "mem.safetensors");
  sp.write(d / "spool.safetensors");
  const std::string a = slurp(d / "mem.safetensors"), b = slurp(d / "spool.safetensors");
  EXPECT_GT(a.size(), 600000u);
  EXPECT_TRUE(a == b) << "spooled output differs (" << a.size() << " vs " << b.size() << " bytes)";
  // A moved writer keeps its spool.
  SafetensorsWriter moved = std::move(sp);
  moved.write(d / "moved.safetensors");
  EXPECT_TRUE(slurp(d / "moved.safetensors") == a);
  EXPECT_TRUE(fs::is_empty(spool));
}

TEST(io_Writer, PlannedInPlaceWritingGivesTheSameFile) {
  // plan() + begin() + add() in any order writes the file an in-memory writer would, and
  // refuses what does not fit the plan.
  TmpDir d;
  struct T {
    std::string name;
    DType dt;
    std::vector<int64_t> shape;
  };
  const std::vector<T> ts = {{"w.b", DType::BF16, {3, 5}}, {"w.a", DType::F32, {7}}, {"x", DType::U8, {9}},
                             {"y", DType::I64, {2}}, {"empty", DType::F16, {0}}};
  std::mt19937 rng(5);
  std::map<std::string, std::vector<uint8_t>> data;
  for (const auto& t : ts) {
    std::vector<uint8_t> b(size_t(std::max<int64_t>(t.shape[0] * (t.shape.size() > 1 ? t.shape[1] : 1), 0)) *
                           dtype_size(t.dt));
    for (auto& x : b) x = uint8_t(rng());
    data[t.name] = b;
  }
  SafetensorsWriter mem, inplace;
  mem.sort_by_name();
  inplace.sort_by_name();
  mem.set_metadata("format", "pt");
  inplace.set_metadata("format", "pt");
  for (const auto& t : ts) mem.add(t.name, t.dt, t.shape, data[t.name].data(), data[t.name].size());
  for (const auto& t : ts) inplace.plan(t.name, t.dt, t.shape);
  EXPECT_THROW(inplace.add("w.a", DType::F32, {7}, data["w.a"].data(), 28), Error);  // before begin()
  inplace.begin(d / "inplace.safetensors");
  EXPECT_THROW(inplace.plan("late", DType::U8, {1}), Error);
  EXPECT_THROW(inplace.add("unplanned", DType::U8, {1}, "z", 1), Error);
  EXPECT_THROW(inplace.add("w.a", DType::F16, {7}, data["w.a"].data(), 14), Error);  // wrong dtype
  EXPECT_THROW(inplace.set_metadata("k", "v"), Error);
  EXPECT_THROW(inplace.write(d / "inplace.safetensors"), Error);  // nothing added yet
  for (auto it = ts.rbegin(); it != ts.rend(); ++it)
    inplace.add(it->name, it->dt, it->shape, data[it->name].data(), data[it->name].size());
  EXPECT_THROW(inplace.add("x", DType::U8, {9}, data["x"].data(), 9), Error);  // twice
  EXPECT_THROW(inplace.write(d / "other.safetensors"), Error);                  // not the begun path
  inplace.write(d / "inplace.safetensors");
  mem.write(d / "mem.safetensors");
  EXPECT_TRUE(slurp(d / "inplace.safetensors") == slurp(d / "mem.safetensors"));
  EXPECT_TRUE(leftovers(d.str()).empty());
  // Abandoned after begin(): no file, no temporary.
  {
    SafetensorsWriter w;
    w.plan("a", DType::U8, {4});
    w.begin(d / "abandoned.safetensors");
  }
  EXPECT_FALSE(fs::exists(d / "abandoned.safetensors"));
  EXPECT_TRUE(leftovers(d.str()).empty());
}

TEST(io_Writer, SortByNameIgnoresInsertionOrder) {
  TmpDir d;
  const std::vector<std::string> names = {"b", "model.layers.10.x", "a", "model.layers.2.x", "c"};
  SafetensorsWriter shuffled, sorted_in;
  shuffled.sort_by_name();
  std::vector<std::string> order = names;
  std::sort(order.begin(), order.end());
  for (const auto& n : names) {
    const uint16_t v[2] = {uint16_t(n.size()), uint16_t(n[0])};
    shuffled.add(n, n == "c" ? DType::F16 : DType::BF16, {2}, v, 4);
  }
  for (const auto& n : order) {
    const uint16_t v[2] = {uint16_t(n.size()), uint16_t(n[0])};
    sorted_in.add(n, n == "c" ? DType::F16 : DType::BF16, {2}, v, 4);
  }
  shuffled.write(d / "a.safetensors");
  sorted_in.write(d / "b.safetensors");
  EXPECT_TRUE(slurp(d / "a.safetensors") == slurp(d / "b.safetensors"));
  auto f = SafetensorsFile::open(d / "a.safetensors");
  std::vector<std::string> got;
  for (const auto& t : f->tensors()) got.push_back(t.name);
  EXPECT_EQ(got, order);
}

TEST(io_Checkpoint, DroppedPagesReadBackTheSameData) {
  TmpDir d;
  std::vector<float> v(1 << 20);
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i % 977) * 0.5f;
  SafetensorsWriter w;
  w.add_f32("a", {int64_t(v.size())}, v.data());
  w.add_f32("b", {3}, v.data());
  w.write(d / "model.safetensors");
  Checkpoint c = Checkpoint::open(d.str());
  EXPECT_EQ(c.load_f32("a", {int64_t(v.size())}), v);
  c.drop_pages("a");
  c.drop_pages("b");
  c.drop_pages("absent");  // not an error: nothing to drop
  EXPECT_EQ(c.load_f32("a", {int64_t(v.size())}), v);
  EXPECT_EQ(c.load_f32("b", {3}), std::vector<float>(v.begin(), v.begin() + 3));
  EXPECT_NO_THROW(c.check_float("a", {int64_t(v.size())}));
  EXPECT_THROW(c.check_float("a", {3}), Error);
}

TEST(io_Safetensors, CorruptionNeverCrashes) {
  TmpDir d;
  SafetensorsWriter w;
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  w.add_from_f32("model.layers.0.self_attn.q_proj.weight", DType::BF16, {2, 3}, v.data());
  w.add_f32("model.norm.weight", {6}, v.data());
  w.set_metadata("format", "pt");
  w.write(d / "good.safetensors");
  const std::string good = slurp(d / "good.safetensors");
  const std::string p = d / "bad.safetensors";
  auto attempt = [&](const std::string& bytes) {
    put(p, bytes);
    try {
      auto f = SafetensorsFile::open(p);
      uint8_t acc = 0;
      for (const TensorInfo& t : f->tensors())  // touch every byte the header claims
        for (uint64_t i = 0; i < t.nbytes(); ++i) acc ^= f->data(t)[i];
      asm volatile("" : : "r"(acc));  // keep the reads
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  };
  for (size_t n = 0; n < good.size(); ++n) attempt(good.substr(0, n));
  std::mt19937 rng(7);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | static_cast<uint8_t>(good[i]);
  for (int k = 0; k < 500; ++k) {
    std::string b = good;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int j = 0; j < flips; ++j) {
      const size_t pos = rng() % (8 + hlen);  // length prefix or header
      b[pos] = (rng() % 2) ? static_cast<char>(rng()) : "0123456789[]{},\":-"[rng() % 18];
    }
    attempt(b);
  }
}
