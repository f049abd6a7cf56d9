#include "core/file_util.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace ptrain {
namespace {

void fail(const std::string& what, const std::string& path, int error = errno) {
  throw RuntimeFailure(fmt::format("{} '{}' failed: {}", what, path, std::strerror(error)));
}

void fsync_path(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) fail("open", path);
  if (::fsync(fd) != 0) {
    ::close(fd);
    fail("fsync", path);
  }
  ::close(fd);
}

}  // namespace

std::vector<std::string> proc_stat_fields(long pid) {
  std::ifstream in(pid == 0 ? std::string("/proc/self/stat")
                            : "/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> fields;
  const size_t end_of_name = stat.rfind(')');
  if (end_of_name == std::string::npos) return fields;
  std::istringstream rest(stat.substr(end_of_name + 1));
  for (std::string field; rest >> field;) fields.push_back(field);
  return fields;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(fmt::format("cannot read '{}': {}", path, std::strerror(errno)));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

AtomicFileWriter::AtomicFileWriter(std::string path) : path_(std::move(path)) {
  namespace fs = std::filesystem;
  fs::path target(path_);
  if (target.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(target.parent_path(), ec);
    if (ec)
      throw RuntimeFailure(fmt::format("cannot create directory '{}': {}",
                                       target.parent_path().string(), ec.message()));
  }
  tmp_ = fmt::format("{}.tmp.{}", path_, ::getpid());
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("open", tmp_);
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFileWriter::write(const void* data, size_t size) {
  PTRAIN_ASSERT(fd_ >= 0, "write to '{}' after commit", path_);
  // In pieces that stay in cache between the checksum reading them and write() copying them.
  constexpr size_t kPiece = size_t{4} << 20;
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const size_t piece = std::min(size, kPiece);
    checksum_.update(p, piece);
    size_t left = piece;
    while (left > 0) {
      ssize_t n = ::write(fd_, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail("write", tmp_);
      p += n;
      left -= static_cast<size_t>(n);
      written_ += static_cast<uint64_t>(n);
    }
    size -= piece;
  }
}

void AtomicFileWriter::commit() {
  PTRAIN_ASSERT(fd_ >= 0, "commit of '{}' twice", path_);
  if (::fsync(fd_) != 0) fail("fsync", tmp_);
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    int error = errno;
    ::unlink(tmp_.c_str());
    fail("close", tmp_, error);
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    int error = errno;
    ::unlink(tmp_.c_str());
    fail("rename to " + path_ + " from", tmp_, error);
  }
  std::filesystem::path target(path_);
  fsync_path(target.has_parent_path() ? target.parent_path().string() : ".",
             O_RDONLY | O_DIRECTORY);
}

void create_directory_durably(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(dir, ec)) return;
  fs::create_directories(dir, ec);
  if (ec) throw RuntimeFailure(fmt::format("cannot create directory '{}': {}", dir, ec.message()));
  const fs::path parent = fs::path(dir).lexically_normal().parent_path();
  fsync_path(parent.empty() ? "." : parent.string(), O_RDONLY | O_DIRECTORY);
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  AtomicFileWriter writer(path);
  writer.write(bytes.data(), bytes.size());
  writer.commit();
}

bool publish_directory(const std::string& from, const std::string& to) {
  namespace fs = std::filesystem;
  if (::rename(from.c_str(), to.c_str()) != 0) {
    if (errno == ENOTEMPTY || errno == EEXIST) return false;
    fail("rename to " + to + " from", from);
  }
  for (const fs::path& path : {fs::path(to), fs::path(from)}) {
    fs::path parent = path.has_parent_path() ? path.parent_path() : fs::path(".");
    fsync_path(parent.string(), O_RDONLY | O_DIRECTORY);
  }
  return true;
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw UserError(fmt::format("cannot open '{}': {}", path, std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw UserError(fmt::format("cannot stat '{}': {}", path, std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw UserError(fmt::format("'{}' is not a regular file", path));
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    // Copy-on-write: tensors over the mapping may be modified in place without touching the file.
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw RuntimeFailure(fmt::format("mmap of '{}' failed: {}", path, std::strerror(errno)));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

OutputDirectory::OutputDirectory(const std::string& path, bool force, const std::string& flag)
    : path_(path) {
  namespace fs = std::filesystem;
  if (path.empty())
    throw UserError(fmt::format("{}: expected a directory, got an empty path", flag));
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (fs::exists(status)) {
    if (!fs::is_directory(status))
      throw UserError(fmt::format("{} '{}' exists and is not a directory", flag, path));
    const bool empty = fs::is_empty(path, ec);
    if (ec)
      throw UserError(
          fmt::format("{} '{}': cannot read the directory: {}", flag, path, ec.message()));
    if (!empty && !force)
      throw UserError(fmt::format("{} '{}' exists and is not empty (pass --force to write into it)",
                                  flag, path));
  } else {
    fs::path level = fs::path(path).lexically_normal();
    if (!level.has_filename()) level = level.parent_path();  // "dir/"
    for (; !level.empty() && !fs::exists(level, ec); level = level.parent_path())
      created_.push_back(level.string());
    fs::create_directories(path, ec);
    if (ec) {
      remove_created();
      throw UserError(
          fmt::format("{} '{}': cannot create the directory: {}", flag, path, ec.message()));
    }
  }
  if (::access(path.c_str(), W_OK | X_OK) != 0) {
    const int error = errno;
    remove_created();
    throw UserError(fmt::format("{} '{}': the directory is not writable: {}", flag, path,
                                std::strerror(error)));
  }
}

OutputDirectory::~OutputDirectory() {
  if (!keep_) remove_created();
}

void OutputDirectory::remove_created() {
  // Deepest first; a level that is not empty (something was written) stays, and so do its parents.
  for (const std::string& level : created_) {
    std::error_code ec;
    if (!std::filesystem::remove(level, ec) || ec) break;
  }
  created_.clear();
}

}  // namespace ptrain
