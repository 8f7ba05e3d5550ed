// Safetensors checkpoints: a memory-mapped reader (one file, or shards listed in
// model.safetensors.index.json) that validates the header before any data is touched,
// and an atomic writer (temporary file, then rename).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "spense/dtype.h"

namespace spense {

class AtomicFile;  // spense/fs.h

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets relative to the start of the data section
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

std::string shape_str(const std::vector<int64_t>& shape);  // "[4096,11008]"

// One .safetensors file mapped read-only. Throws spense::Error naming the file on a
// truncated file, a header length beyond the file, bad JSON, unknown dtype, offsets out of
// range or overlapping, or a byte size that does not match shape x dtype. Key order,
// header padding and gaps between tensors do not matter; tensors() lists the tensors in
// file (data offset) order. The mapping is MAP_PRIVATE: a file truncated by another
// process while mapped makes later reads of its data fault (SIGBUS), as with any mmap.
class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* find(const std::string& name) const;  // nullptr if absent
  const uint8_t* data(const TensorInfo& t) const { return data_ + t.begin; }
  uint64_t file_size() const { return size_; }
  // Hands the mapped pages lying wholly inside t back to the kernel (madvise DONTNEED);
  // the data stays readable (read again from the file on the next access).
  void drop_pages(const TensorInfo& t) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
  const uint8_t* map_ = nullptr;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// A tensor found in a checkpoint: where it lives and its raw bytes (mapped, read-only).
struct TensorRef {
  const TensorInfo* info = nullptr;
  const uint8_t* data = nullptr;
  const std::string* file = nullptr;  // the shard it lives in, for error messages
};

// A checkpoint directory (or a single .safetensors file, or a *.index.json file):
// model.safetensors (preferred when both exist, as in transformers), or the shards listed by
// model.safetensors.index.json (validated: shard names stay inside the directory, every
// listed shard exists, every tensor is in the shard the index names, no tensor is in two
// shards; tensors a shard holds beyond the index are available too).
class Checkpoint {
 public:
  static Checkpoint open(const std::string& dir_or_file);
  bool has(const std::string& name) const;
  // Throws "<dir>: missing tensor '<name>'".
  TensorRef get(const std::string& name) const;
  // get() plus a shape check; throws "<file>: '<name>' shape [a,b], expected [c,d]".
  TensorRef get(const std::string& name, const std::vector<int64_t>& expected_shape) const;
  // Converted to fp32 (float dtypes only), with the shape check.
  std::vector<float> load_f32(const std::string& name, const std::vector<int64_t>& expected_shape) const;
  // The checks of load_f32 (present, shape, float dtype) without reading the data.
  TensorRef check_float(const std::string& name, const std::vector<int64_t>& expected_shape) const;
  // SafetensorsFile::drop_pages of the tensor (after a one-time read of a large tensor).
  void drop_pages(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  const std::string& dir() const { return dir_; }
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }
  uint64_t size_on_disk() const;

 private:
  std::string dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<size_t, const TensorInfo*>> where_;
};

// Collects tensors, then writes one safetensors file: 8-byte little-endian header length,
// JSON header padded with spaces so the data section starts 8-byte aligned, then the tensors
// back to back with no gaps (the reference safetensors reader rejects holes between
// tensors). To keep every tensor aligned to its element size, the data is ordered by
// element size, largest first, and by insertion order within one size; the header lists
// the tensors in data order, then "__metadata__" (omitted when empty). Written to
// "<path>.tmp-<pid>" then renamed over path, so a failure leaves no partial file.
class SafetensorsWriter {
 public:
  SafetensorsWriter();
  ~SafetensorsWriter();
  SafetensorsWriter(SafetensorsWriter&&) noexcept;
  SafetensorsWriter& operator=(SafetensorsWriter&&) noexcept;
  // Keep the bytes of the tensors added from now on in temporary files in dir (one per
  // element size, unlinked at once, so nothing is left behind even on a crash) instead of
  // memory; write() copies them into place. For outputs larger than memory.
  void spool_to(const std::string& dir);
  // Order the data (and so the header) by name within each element size instead of by
  // insertion, so a file assembled in any order matches one written from a sorted list.
  void sort_by_name() { sort_by_name_ = true; }
  // Copies the bytes. Throws if the name repeats or nbytes != numel(shape) * dtype_size.
  void add(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
           const void* data, size_t nbytes);
  void add_f32(const std::string& name, const std::vector<int64_t>& shape, const float* data);
  // Stores fp32 values converted to `dtype` (a float type; rounding as convert_from_f32).
  void add_from_f32(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                    const float* data);
  void set_metadata(const std::string& key, const std::string& value);
  // Writing in place, for a file whose tensors are all known up front: plan() every tensor
  // (name, dtype, shape; metadata set before begin()), begin(path) writes the header to
  // "<path>.tmp-<pid>", and each add() of a planned tensor then writes its bytes at their final
  // offset (any order); write(path) checks every planned tensor arrived and renames the file
  // into place. Nothing is held in memory or spooled; the order is the one write() would use.
  void plan(const std::string& name, DType dtype, const std::vector<int64_t>& shape);
  void begin(const std::string& path);
  void write(const std::string& path) const;
  size_t size() const { return entries_.size(); }
  bool has(const std::string& name) const { return names_.count(name) != 0; }

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t nbytes = 0;
    std::vector<uint8_t> bytes;  // empty when spooled
    bool spooled = false;
    uint64_t spool_offset = 0;   // in the spool of its element size
    bool planned = false;        // plan(): bytes go to the begun file
    bool written = false;        // planned and added
  };
  struct Spool;
  Entry make_entry(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data,
                   size_t nbytes, bool planned) const;
  // The 8-byte length and the header; order: entries in data order; offsets: per entry,
  // from the start of the data section.
  std::string layout(const std::string& path, std::vector<size_t>* order, std::vector<uint64_t>* offsets) const;
  std::vector<Entry> entries_;
  std::map<std::string, size_t> names_;
  std::map<std::string, std::string> metadata_;
  std::string spool_dir_;
  bool sort_by_name_ = false;
  std::map<size_t, std::unique_ptr<Spool>> spools_;  // by element size
  std::unique_ptr<AtomicFile> direct_;               // begin(): the file being written in place
  std::string direct_path_;
  std::vector<uint64_t> direct_offsets_;             // per entry, from the start of the file
};

// Write a whole file atomically (temporary file in the same directory, fsync, rename).
void write_file_atomic(const std::string& path, const void* data, size_t nbytes);

}  // namespace spense
