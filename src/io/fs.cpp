// AtomicFile, AtomicDir, write_file_atomic.
#include "spense/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <system_error>

#include "spense/error.h"
#include "spense/safetensors.h"

namespace fs = std::filesystem;

namespace spense {

namespace {

std::string errno_str(int e) { return std::error_code(e, std::generic_category()).message(); }

std::string parent_dir(const std::string& path) {
  fs::path p = fs::path(path).parent_path();
  return p.empty() ? std::string(".") : p.string();
}

std::string strip_trailing_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

}  // namespace

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw Error(dir + ": cannot open directory to sync it: " + errno_str(errno), 1);
  const int rc = ::fsync(fd);
  const int e = errno;
  ::close(fd);
  // Some filesystems do not support fsync on directories; that is not a failure to write.
  if (rc != 0 && e != EINVAL && e != ENOTSUP)
    throw Error(dir + ": fsync of the directory failed: " + errno_str(e), 1);
}

// ---- AtomicFile ------------------------------------------------------------------------

AtomicFile::AtomicFile(const std::string& path)
    : path_(path), tmp_(path + ".tmp-" + std::to_string(::getpid())) {
  if (path.empty()) throw Error("cannot write a file with an empty path");
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    throw Error(path + ": is a directory, expected a file path to write");
  // A leftover with our exact name can only come from an earlier process with this pid.
  ::unlink(tmp_.c_str());
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(path + ": cannot create temporary file " + tmp_ + ": " + errno_str(errno));
}

AtomicFile::~AtomicFile() {
  if (!committed_) abandon();
}

void AtomicFile::abandon() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  ::unlink(tmp_.c_str());
}

void write_all_at(int fd, uint64_t offset, const void* data, size_t nbytes, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (nbytes > 0) {
    const size_t chunk = nbytes < (size_t{1} << 30) ? nbytes : (size_t{1} << 30);
    const ssize_t w = ::pwrite(fd, p, chunk, static_cast<off_t>(offset));
    if (w <= 0) {
      if (w < 0 && errno == EINTR) continue;
      throw Error(what + ": write failed: " + errno_str(w < 0 ? errno : EIO), 1);
    }
    p += w;
    offset += static_cast<uint64_t>(w);
    nbytes -= static_cast<size_t>(w);
  }
}

void AtomicFile::write(const void* data, size_t nbytes) {
  pwrite(end_, data, nbytes);
  end_ += nbytes;
}

void AtomicFile::pwrite(uint64_t offset, const void* data, size_t nbytes) {
  if (fd_ < 0) throw Error(path_ + ": write after commit or failure", 1);
  try {
    write_all_at(fd_, offset, data, nbytes, path_);
  } catch (const Error&) {
    abandon();
    throw;
  }
}

void AtomicFile::commit() {
  if (committed_) return;
  if (fd_ < 0) throw Error(path_ + ": commit after a failed write", 1);
  if (::fsync(fd_) != 0) {
    const int e = errno;
    abandon();
    throw Error(path_ + ": fsync failed: " + errno_str(e), 1);
  }
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) {
    const int e = errno;
    abandon();
    throw Error(path_ + ": close failed: " + errno_str(e), 1);
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int e = errno;
    abandon();
    throw Error(path_ + ": cannot rename " + tmp_ + " into place: " + errno_str(e));
  }
  committed_ = true;
  fsync_dir(parent_dir(path_));
}

void write_file_atomic(const std::string& path, const void* data, size_t nbytes) {
  AtomicFile f(path);
  f.write(data, nbytes);
  f.commit();
}

// ---- AtomicDir -------------------------------------------------------------------------

AtomicDir::AtomicDir(const std::string& final_path, bool force)
    : final_(strip_trailing_slashes(final_path)), force_(force) {
  if (final_.empty() || final_ == "/" || final_ == "." || final_ == "..")
    throw Error("output directory '" + final_path + "': not a usable output path");
  std::error_code ec;
  const bool exists = fs::symlink_status(final_, ec).type() != fs::file_type::not_found && !ec;
  if (exists && !force)
    throw Error(final_ + ": already exists (refusing to overwrite; pass --force to replace it)");
  const std::string parent = parent_dir(final_);
  fs::create_directories(parent, ec);
  if (ec) throw Error(final_ + ": cannot create parent directory " + parent + ": " + ec.message());
  tmp_ = final_ + ".tmp-" + std::to_string(::getpid());
  fs::remove_all(tmp_, ec);  // a leftover of an earlier process with this pid
  if (::mkdir(tmp_.c_str(), 0755) != 0)
    throw Error(final_ + ": cannot create temporary directory " + tmp_ + ": " + errno_str(errno));
}

AtomicDir::~AtomicDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
}

void AtomicDir::commit() {
  if (committed_) return;
  fsync_dir(tmp_);
  const std::string parent = parent_dir(final_);
  std::error_code ec;
  const bool exists = fs::symlink_status(final_, ec).type() != fs::file_type::not_found && !ec;
  if (!exists) {
    if (::rename(tmp_.c_str(), final_.c_str()) != 0)
      throw Error(final_ + ": cannot rename " + tmp_ + " into place: " + errno_str(errno));
  } else {
    if (!force_)
      throw Error(final_ + ": appeared while the output was being written (refusing to overwrite)");
    // rename(2) cannot replace a non-empty directory: move the old one aside first, and
    // remove it only once the new one is in place.
    const std::string old = final_ + ".old-" + std::to_string(::getpid());
    fs::remove_all(old, ec);
    if (::rename(final_.c_str(), old.c_str()) != 0)
      throw Error(final_ + ": cannot move the existing output aside to " + old + ": " +
                  errno_str(errno));
    if (::rename(tmp_.c_str(), final_.c_str()) != 0) {
      const int e = errno;
      ::rename(old.c_str(), final_.c_str());  // best effort: put the old output back
      throw Error(final_ + ": cannot rename " + tmp_ + " into place: " + errno_str(e));
    }
    fs::remove_all(old, ec);
  }
  committed_ = true;
  fsync_dir(parent);
}

}  // namespace spense
