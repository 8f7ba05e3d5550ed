// Atomic outputs: a file or a whole directory is written under a temporary name next to
// its final path, and renamed into place only once complete, so an interrupted or failed
// run never leaves a partial output behind under the final name.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace spense {

// A file written through "<path>.tmp-<pid>" in the same directory: write() appends,
// commit() fsyncs, renames over path and fsyncs the directory. Destroying it without a
// successful commit() closes and removes the temporary file. Throws spense::Error naming
// the path on any failure (and removes the temporary file before throwing from commit()).
// Writes all nbytes at offset of fd (retrying short writes and EINTR); throws spense::Error
// "<what>: write failed: <reason>".
void write_all_at(int fd, uint64_t offset, const void* data, size_t nbytes, const std::string& what);

class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t nbytes);
  // Writes at an absolute offset (the file grows as needed; the append position is unchanged).
  void pwrite(uint64_t offset, const void* data, size_t nbytes);
  void commit();
  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return tmp_; }

 private:
  void abandon() noexcept;
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t end_ = 0;  // where write() appends
  bool committed_ = false;
};

// An output directory built under "<final>.tmp-<pid>" (path() names it; write into it),
// then renamed to final_path by commit(). The constructor refuses an existing final_path
// unless force is set (then commit() replaces it; the old one is removed only after the
// new one is in place); it creates missing parent directories. Destroying it without a
// successful commit() removes the temporary directory and everything in it.
class AtomicDir {
 public:
  AtomicDir(const std::string& final_path, bool force);
  ~AtomicDir();
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;

  const std::string& path() const { return tmp_; }         // the temporary directory
  const std::string& final_path() const { return final_; }
  void commit();
  bool committed() const { return committed_; }

 private:
  std::string final_, tmp_;
  bool force_ = false;
  bool committed_ = false;
};

// Fsync a directory (so a rename inside it is durable). Throws spense::Error on failure.
void fsync_dir(const std::string& dir);

}  // namespace spense
