// Safetensors reader (mmap, header validated before any tensor is touched), checkpoint
// directories (single file or sharded with an index), and the writer.
//
// File format (https://github.com/huggingface/safetensors, "Format"): 8 bytes little-endian
// u64 N, then N bytes of UTF-8 JSON: an object mapping tensor names to
// {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]} (offsets relative to the
// data section that follows the header) plus an optional "__metadata__" string->string map.
// The reader does not depend on key order or header padding (trailing spaces), and accepts
// gaps between tensors; it refuses overlapping tensors and anything out of range.
#include "spense/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <system_error>

#include "spense/error.h"
#include "spense/fs.h"
#include "io/json_util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using spense::detail::parse_json_strict;
using spense::detail::read_text_file;

namespace spense {

namespace {

// The reference implementation's limit on the header size.
constexpr uint64_t kMaxHeader = 100'000'000;

std::string errno_str(int e) { return std::error_code(e, std::generic_category()).message(); }

std::string q(const std::string& s) { return "'" + s + "'"; }

// numel of a shape, false on a negative dim or int64 overflow.
bool checked_numel(const std::vector<int64_t>& shape, int64_t* out) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return false;
  }
  *out = n;
  return true;
}

bool is_regular(const std::string& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// ---- SafetensorsFile -----------------------------------------------------------------------

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open: " + errno_str(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw Error(path + ": cannot stat: " + errno_str(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw Error(path + ": file is " + std::to_string(size) +
                " bytes, too short for the 8-byte header length (truncated or not a safetensors file)");
  }
  void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (m == MAP_FAILED) throw Error(path + ": mmap failed: " + errno_str(map_errno), 1);
  f->map_ = static_cast<const uint8_t*>(m);
  f->size_ = size;

  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | f->map_[i];  // little-endian u64
  if (n > kMaxHeader)
    throw Error(path + ": header length " + std::to_string(n) + " exceeds the limit of " +
                std::to_string(kMaxHeader) + " bytes (corrupt or not a safetensors file)");
  if (n > size - 8)
    throw Error(path + ": header length " + std::to_string(n) + " goes past the end of the file (" +
                std::to_string(size) + " bytes; truncated?)");
  const uint64_t data_start = 8 + n;
  const uint64_t data_size = size - data_start;
  f->data_ = f->map_ + data_start;

  // Trailing spaces (the padding writers add) are fine for the JSON parser; also tolerate
  // NUL padding, which some writers use.
  std::string_view text(reinterpret_cast<const char*>(f->map_ + 8), n);
  while (!text.empty() && text.back() == '\0') text.remove_suffix(1);
  const json h = parse_json_strict(text, path + ": header");
  if (!h.is_object())
    throw Error(path + ": header is a JSON " + std::string(h.type_name()) + ", expected an object");

  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (v.is_null()) continue;
      if (!v.is_object())
        throw Error(path + ": __metadata__ is a " + std::string(v.type_name()) +
                    ", expected an object of strings");
      for (auto m2 = v.begin(); m2 != v.end(); ++m2) {
        if (!m2.value().is_string())
          throw Error(path + ": __metadata__ " + q(m2.key()) + " is a " +
                      std::string(m2.value().type_name()) + ", expected a string");
        f->metadata_[m2.key()] = m2.value().get<std::string>();
      }
      continue;
    }
    const std::string where = path + ": tensor " + q(name);
    if (!v.is_object())
      throw Error(where + ": entry is a " + std::string(v.type_name()) + ", expected an object");
    TensorInfo t;
    t.name = name;

    const auto dt = v.find("dtype");
    if (dt == v.end()) throw Error(where + ": missing \"dtype\"");
    if (!dt->is_string()) throw Error(where + ": \"dtype\" is not a string");
    if (!dtype_parse(dt->get<std::string>(), &t.dtype))
      throw Error(where + ": unknown dtype \"" + dt->get<std::string>() +
                  "\" (supported: F64 F32 F16 BF16 F8_E4M3 I64 I32 I16 I8 U8 BOOL)");

    const auto sh = v.find("shape");
    if (sh == v.end()) throw Error(where + ": missing \"shape\"");
    if (!sh->is_array()) throw Error(where + ": \"shape\" is not an array");
    for (const json& d : *sh) {
      if (d.is_number_unsigned()) {
        const uint64_t u = d.get<uint64_t>();
        if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          throw Error(where + ": shape " + sh->dump() + " has a dimension too large");
        t.shape.push_back(static_cast<int64_t>(u));
      } else if (d.is_number_integer()) {
        throw Error(where + ": shape " + sh->dump() + " has a negative dimension");
      } else {
        throw Error(where + ": shape " + sh->dump() + " has a non-integer dimension");
      }
    }

    const auto off = v.find("data_offsets");
    if (off == v.end()) throw Error(where + ": missing \"data_offsets\"");
    if (!off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      throw Error(where + ": \"data_offsets\" is " + off->dump() +
                  ", expected [begin, end] (two non-negative integers)");
    t.begin = (*off)[0].get<uint64_t>();
    t.end = (*off)[1].get<uint64_t>();
    if (t.begin > t.end)
      throw Error(where + ": data_offsets [" + std::to_string(t.begin) + "," + std::to_string(t.end) +
                  "] end before begin");
    if (t.end > data_size)
      throw Error(where + ": data_offsets [" + std::to_string(t.begin) + "," + std::to_string(t.end) +
                  "] go past the end of the data section (" + std::to_string(data_size) +
                  " bytes; file truncated?)");

    int64_t numel = 0;
    uint64_t want = 0;
    if (!checked_numel(t.shape, &numel) ||
        __builtin_mul_overflow(static_cast<uint64_t>(numel), dtype_size(t.dtype), &want))
      throw Error(where + ": shape " + shape_str(t.shape) + " is too large");
    if (want != t.nbytes())
      throw Error(where + ": " + std::to_string(t.nbytes()) + " bytes in data_offsets, expected " +
                  std::to_string(want) + " for " + dtype_name(t.dtype) + " " + shape_str(t.shape));
    f->tensors_.push_back(std::move(t));
  }

  // File order; ties (empty tensors) by name, so the order never depends on the JSON.
  std::sort(f->tensors_.begin(), f->tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  const TensorInfo* last = nullptr;  // the non-empty tensor reaching furthest so far
  for (const TensorInfo& t : f->tensors_) {
    if (t.nbytes() == 0) continue;
    if (last && t.begin < last->end)
      throw Error(path + ": tensors " + q(last->name) + " [" + std::to_string(last->begin) + "," +
                  std::to_string(last->end) + ") and " + q(t.name) + " [" + std::to_string(t.begin) +
                  "," + std::to_string(t.end) + ") overlap");
    if (!last || t.end > last->end) last = &t;
  }
  for (size_t i = 0; i < f->tensors_.size(); ++i) f->index_[f->tensors_[i].name] = i;
  return f;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

// ---- Checkpoint ----------------------------------------------------------------------------

Checkpoint Checkpoint::open(const std::string& dir_or_file) {
  Checkpoint c;
  std::error_code ec;
  const fs::file_status st = fs::status(dir_or_file, ec);
  if (ec || st.type() == fs::file_type::not_found)
    throw Error(dir_or_file + ": no such file or directory (expected a checkpoint directory or a "
                ".safetensors file)");

  auto add_file = [&c](std::shared_ptr<SafetensorsFile> f) {
    const size_t idx = c.files_.size();
    c.files_.push_back(f);
    for (const TensorInfo& t : f->tensors()) {
      auto [it, inserted] = c.where_.emplace(t.name, std::make_pair(idx, &t));
      if (!inserted)
        throw Error(f->path() + ": tensor " + q(t.name) + " is also in " +
                    c.files_[it->second.first]->path());
    }
  };

  std::string index_path, single;
  if (fs::is_directory(st)) {
    c.dir_ = dir_or_file;
    const std::string one = (fs::path(dir_or_file) / "model.safetensors").string();
    const std::string idx = (fs::path(dir_or_file) / "model.safetensors.index.json").string();
    // Like transformers: a single model.safetensors wins over an index.
    if (is_regular(one))
      single = one;
    else if (is_regular(idx))
      index_path = idx;
    else
      throw Error(dir_or_file + ": no model.safetensors or model.safetensors.index.json in the directory");
  } else if (ends_with(dir_or_file, ".index.json")) {
    index_path = dir_or_file;
    c.dir_ = fs::path(dir_or_file).parent_path().string();
    if (c.dir_.empty()) c.dir_ = ".";
  } else {
    single = dir_or_file;
    c.dir_ = dir_or_file;
  }

  if (!single.empty()) {
    add_file(std::shared_ptr<SafetensorsFile>(SafetensorsFile::open(single)));
    return c;
  }

  const json idx = parse_json_strict(read_text_file(index_path), index_path);
  if (!idx.is_object()) throw Error(index_path + ": expected a JSON object");
  const auto wm = idx.find("weight_map");
  if (wm == idx.end()) throw Error(index_path + ": missing \"weight_map\"");
  if (!wm->is_object()) throw Error(index_path + ": \"weight_map\" is not an object");
  if (wm->empty()) throw Error(index_path + ": \"weight_map\" is empty");

  const fs::path base = fs::path(index_path).parent_path();
  std::map<std::string, std::vector<std::string>> by_shard;  // shard -> tensors listed
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string())
      throw Error(index_path + ": weight_map entry " + q(it.key()) + " is not a string (shard file name)");
    const std::string shard = it.value().get<std::string>();
    const fs::path sp(shard);
    bool bad = shard.empty() || sp.is_absolute();
    for (const auto& part : sp) bad = bad || part == "..";
    if (bad)
      throw Error(index_path + ": tensor " + q(it.key()) + " is mapped to shard " + q(shard) +
                  ", expected a file name inside the checkpoint directory");
    by_shard[shard].push_back(it.key());
  }
  // Open every shard first, so a tensor listed in the wrong shard can be located.
  for (const auto& [shard, names] : by_shard) {
    const std::string sp = (base / shard).string();
    if (!is_regular(sp))
      throw Error(index_path + ": shard " + q(shard) + " (listed for tensor " + q(names.front()) +
                  ") does not exist: " + sp);
    add_file(std::shared_ptr<SafetensorsFile>(SafetensorsFile::open(sp)));
  }
  size_t i = 0;
  for (const auto& [shard, names] : by_shard) {
    const SafetensorsFile& f = *c.files_[i++];
    for (const std::string& n : names) {
      if (f.find(n)) continue;
      std::string also;
      auto w = c.where_.find(n);
      if (w != c.where_.end()) also = " (it is in " + c.files_[w->second.first]->path() + ")";
      throw Error(index_path + ": tensor " + q(n) + " is listed in shard " + q(shard) +
                  " but is not in " + f.path() + also);
    }
  }
  return c;
}

bool Checkpoint::has(const std::string& name) const { return where_.count(name) != 0; }

TensorRef Checkpoint::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw Error(dir_ + ": missing tensor " + q(name));
  const SafetensorsFile& f = *files_[it->second.first];
  TensorRef r;
  r.info = it->second.second;
  r.data = f.data(*r.info);
  r.file = &f.path();
  return r;
}

TensorRef Checkpoint::get(const std::string& name, const std::vector<int64_t>& expected_shape) const {
  TensorRef r = get(name);
  if (r.info->shape != expected_shape)
    throw Error(*r.file + ": " + q(name) + " shape " + shape_str(r.info->shape) + ", expected " +
                shape_str(expected_shape));
  return r;
}

TensorRef Checkpoint::check_float(const std::string& name, const std::vector<int64_t>& expected_shape) const {
  TensorRef r = get(name, expected_shape);
  if (!dtype_is_float(r.info->dtype))
    throw Error(*r.file + ": " + q(name) + " has dtype " + dtype_name(r.info->dtype) +
                ", expected a floating-point dtype (F64, F32, F16, BF16, F8_E4M3)");
  return r;
}

void Checkpoint::drop_pages(const std::string& name) const {
  auto it = where_.find(name);
  if (it != where_.end()) files_[it->second.first]->drop_pages(*it->second.second);
}

void SafetensorsFile::drop_pages(const TensorInfo& t) const {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t b = reinterpret_cast<uintptr_t>(data_ + t.begin), e = reinterpret_cast<uintptr_t>(data_ + t.end);
  const uintptr_t b2 = (b + page - 1) / page * page, e2 = e / page * page;
  // Advisory: a failure only means the pages stay resident.
  if (e2 > b2) (void)madvise(reinterpret_cast<void*>(b2), e2 - b2, MADV_DONTNEED);
}

std::vector<float> Checkpoint::load_f32(const std::string& name,
                                        const std::vector<int64_t>& expected_shape) const {
  const TensorRef r = check_float(name, expected_shape);
  std::vector<float> out(static_cast<size_t>(r.info->numel()));
  convert_to_f32(r.info->dtype, r.data, out.data(), out.size());
  return out;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> v;
  v.reserve(where_.size());
  for (const auto& kv : where_) v.push_back(kv.first);  // std::map: already sorted
  return v;
}

uint64_t Checkpoint::size_on_disk() const {
  uint64_t s = 0;
  for (const auto& f : files_) s += f->file_size();
  return s;
}

// ---- SafetensorsWriter ---------------------------------------------------------------------

namespace {

void check_utf8(const std::string& s, const std::string& what) {
  try {
    (void)json(s).dump();
  } catch (const json::exception&) {
    throw Error("SafetensorsWriter: " + what + " is not valid UTF-8");
  }
}

}  // namespace

struct SafetensorsWriter::Spool {
  int fd = -1;
  uint64_t size = 0;
  ~Spool() {
    if (fd >= 0) ::close(fd);
  }
};

SafetensorsWriter::SafetensorsWriter() = default;
SafetensorsWriter::~SafetensorsWriter() = default;
SafetensorsWriter::SafetensorsWriter(SafetensorsWriter&&) noexcept = default;
SafetensorsWriter& SafetensorsWriter::operator=(SafetensorsWriter&&) noexcept = default;

void SafetensorsWriter::spool_to(const std::string& dir) { spool_dir_ = dir; }

SafetensorsWriter::Entry SafetensorsWriter::make_entry(const std::string& name, DType dtype,
                                                       const std::vector<int64_t>& shape, const void* data,
                                                       size_t nbytes, bool planned) const {
  const std::string where = "SafetensorsWriter: tensor " + q(name);
  if (name.empty()) throw Error("SafetensorsWriter: empty tensor name");
  if (name == "__metadata__") throw Error(where + ": reserved name");
  check_utf8(name, "tensor name " + q(name));
  if (names_.count(name)) throw Error(where + ": added twice");
  int64_t numel = 0;
  uint64_t want = 0;
  if (!checked_numel(shape, &numel))
    throw Error(where + ": invalid shape " + shape_str(shape) + " (negative or too large)");
  if (__builtin_mul_overflow(static_cast<uint64_t>(numel), dtype_size(dtype), &want))
    throw Error(where + ": shape " + shape_str(shape) + " is too large");
  if (!planned && want != nbytes)
    throw Error(where + ": " + std::to_string(nbytes) + " bytes given, expected " +
                std::to_string(want) + " for " + dtype_name(dtype) + " " + shape_str(shape));
  if (!planned && nbytes && !data) throw Error(where + ": null data");
  Entry e;
  e.name = name;
  e.dtype = dtype;
  e.shape = shape;
  e.nbytes = want;
  e.planned = planned;
  return e;
}

void SafetensorsWriter::add(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                            const void* data, size_t nbytes) {
  const auto it = names_.find(name);
  if (it != names_.end() && entries_[it->second].planned) {
    // A planned tensor: written in place into the begun file.
    Entry& e = entries_[it->second];
    const std::string where = "SafetensorsWriter: tensor " + q(name);
    if (!direct_) throw Error(where + ": planned, but added before begin()", 1);
    if (e.written) throw Error(where + ": added twice");
    if (e.dtype != dtype || e.shape != shape)
      throw Error(where + ": added as " + dtype_name(dtype) + " " + shape_str(shape) + ", planned as " +
                  dtype_name(e.dtype) + " " + shape_str(e.shape));
    if (nbytes != e.nbytes)
      throw Error(where + ": " + std::to_string(nbytes) + " bytes given, expected " + std::to_string(e.nbytes));
    if (nbytes && !data) throw Error(where + ": null data");
    direct_->pwrite(direct_offsets_[it->second], data, nbytes);
    e.written = true;
    return;
  }
  if (direct_) throw Error(direct_path_ + ": tensor " + q(name) + " was not planned before begin()", 1);
  Entry e = make_entry(name, dtype, shape, data, nbytes, false);
  if (spool_dir_.empty()) {
    e.bytes.assign(static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + nbytes);
  } else {
    std::unique_ptr<Spool>& sp = spools_[dtype_size(dtype)];
    if (!sp) {
      std::string tmpl = spool_dir_ + "/.spool-XXXXXX";
      const int fd = ::mkstemp(tmpl.data());
      if (fd < 0) throw Error(spool_dir_ + ": cannot create a temporary file: " + errno_str(errno));
      ::unlink(tmpl.c_str());
      sp = std::make_unique<Spool>();
      sp->fd = fd;
    }
    write_all_at(sp->fd, sp->size, data, nbytes, spool_dir_ + ": temporary spool file");
    e.spooled = true;
    e.spool_offset = sp->size;
    sp->size += nbytes;
  }
  names_[name] = entries_.size();
  entries_.push_back(std::move(e));
}

void SafetensorsWriter::add_f32(const std::string& name, const std::vector<int64_t>& shape,
                                const float* data) {
  int64_t numel = 0;
  if (!checked_numel(shape, &numel))
    throw Error("SafetensorsWriter: tensor " + q(name) + ": invalid shape " + shape_str(shape));
  add(name, DType::F32, shape, data, static_cast<size_t>(numel) * 4);
}

void SafetensorsWriter::add_from_f32(const std::string& name, DType dtype,
                                     const std::vector<int64_t>& shape, const float* data) {
  if (!dtype_is_float(dtype))
    throw Error("SafetensorsWriter: tensor " + q(name) + ": cannot convert fp32 to " + dtype_name(dtype));
  int64_t numel = 0;
  if (!checked_numel(shape, &numel))
    throw Error("SafetensorsWriter: tensor " + q(name) + ": invalid shape " + shape_str(shape));
  std::vector<uint8_t> buf(static_cast<size_t>(numel) * dtype_size(dtype));
  convert_from_f32(dtype, data, buf.data(), static_cast<size_t>(numel));
  add(name, dtype, shape, buf.data(), buf.size());
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  if (direct_) throw Error(direct_path_ + ": metadata set after begin()", 1);
  check_utf8(key, "metadata key " + q(key));
  check_utf8(value, "metadata value for " + q(key));
  metadata_[key] = value;
}

std::string SafetensorsWriter::layout(const std::string& path, std::vector<size_t>* order,
                                      std::vector<uint64_t>* offsets) const {
  // Data order: element size descending, insertion order (or name) within a size. Every tensor
  // then starts at a multiple of its element size (all earlier tensors have sizes that are
  // multiples of a larger or equal power of two), without gaps.
  order->resize(entries_.size());
  for (size_t i = 0; i < order->size(); ++i) (*order)[i] = i;
  std::stable_sort(order->begin(), order->end(), [this](size_t a, size_t b) {
    const size_t sa = dtype_size(entries_[a].dtype), sb = dtype_size(entries_[b].dtype);
    if (sa != sb) return sa > sb;
    return sort_by_name_ && entries_[a].name < entries_[b].name;
  });
  offsets->assign(entries_.size(), 0);
  std::string h = "{";
  uint64_t off = 0;
  bool first = true;
  for (size_t i : *order) {
    const Entry& e = entries_[i];
    if (!first) h += ",";
    first = false;
    h += json(e.name).dump();
    h += ":{\"dtype\":\"";
    h += dtype_name(e.dtype);
    h += "\",\"shape\":";
    h += shape_str(e.shape);
    h += ",\"data_offsets\":[" + std::to_string(off) + "," + std::to_string(off + e.nbytes) + "]}";
    (*offsets)[i] = off;
    off += e.nbytes;
  }
  if (!metadata_.empty()) {
    if (!first) h += ",";
    h += "\"__metadata__\":{";
    bool f2 = true;
    for (const auto& [k, v] : metadata_) {
      if (!f2) h += ",";
      f2 = false;
      h += json(k).dump() + ":" + json(v).dump();
    }
    h += "}";
  }
  h += "}";
  h.append((8 - h.size() % 8) % 8, ' ');  // data section starts at 8 + h.size(), 8-aligned
  if (h.size() > kMaxHeader)
    throw Error(path + ": header of " + std::to_string(h.size()) + " bytes exceeds the " +
                std::to_string(kMaxHeader) + "-byte limit");
  std::string out(8, '\0');
  const uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = static_cast<char>(uint8_t(n >> (8 * i)));
  return out + h;
}

void SafetensorsWriter::plan(const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
  if (direct_) throw Error("SafetensorsWriter: tensor " + q(name) + " planned after begin()", 1);
  Entry e = make_entry(name, dtype, shape, nullptr, 0, true);
  names_[name] = entries_.size();
  entries_.push_back(std::move(e));
}

void SafetensorsWriter::begin(const std::string& path) {
  if (direct_) throw Error(path + ": SafetensorsWriter::begin called twice", 1);
  for (const Entry& e : entries_)
    if (!e.planned) throw Error(path + ": begin() needs every tensor planned; " + q(e.name) + " was added", 1);
  std::vector<size_t> order;
  const std::string head = layout(path, &order, &direct_offsets_);
  direct_ = std::make_unique<AtomicFile>(path);
  direct_path_ = path;
  direct_->write(head.data(), head.size());
  for (uint64_t& o : direct_offsets_) o += head.size();
}

void SafetensorsWriter::write(const std::string& path) const {
  if (direct_) {
    if (path != direct_path_) throw Error(path + ": write() of a file begun as " + direct_path_, 1);
    for (const Entry& e : entries_)
      if (!e.written) throw Error(path + ": tensor " + q(e.name) + " was planned but never added", 1);
    direct_->commit();
    return;
  }
  for (const Entry& e : entries_)
    if (e.planned) throw Error(path + ": tensor " + q(e.name) + " was planned but begin() was not called", 1);
  std::vector<size_t> order;
  std::vector<uint64_t> offsets;
  const std::string head = layout(path, &order, &offsets);
  AtomicFile out(path);
  out.write(head.data(), head.size());
  std::vector<uint8_t> buf;
  for (size_t i : order) {
    const Entry& e = entries_[i];
    if (!e.spooled) {
      out.write(e.bytes.data(), e.bytes.size());
      continue;
    }
    const int fd = spools_.at(dtype_size(e.dtype))->fd;
    buf.resize(size_t(std::min<uint64_t>(e.nbytes, uint64_t{64} << 20)));
    for (uint64_t done = 0; done < e.nbytes;) {
      const size_t chunk = size_t(std::min<uint64_t>(e.nbytes - done, buf.size()));
      const ssize_t r = ::pread(fd, buf.data(), chunk, static_cast<off_t>(e.spool_offset + done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0)
        throw Error(path + ": reading back a temporary file failed: " + (r < 0 ? errno_str(errno) : "unexpected end"));
      out.write(buf.data(), size_t(r));
      done += uint64_t(r);
    }
  }
  out.commit();
}

}  // namespace spense
