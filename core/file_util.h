// Small filesystem helpers whose failure modes matter (partial files, lost writes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/checksum.h"

namespace ptrain {

// Reads a whole file; UserError naming the path and the OS reason when it cannot.
std::string read_text_file(const std::string& path);

// The fields of /proc/PID/stat after the command name (which may hold spaces and parentheses):
// element 0 is field 3 (the state), element 19 field 22 (the start time in clock ticks after
// boot). `pid` 0 means this process. Empty when the process is gone.
std::vector<std::string> proc_stat_fields(long pid);

// Streams a file into place so that a reader sees either the old file or the complete new one:
// writes go to "<path>.tmp.<pid>"; commit() fsyncs it, renames it over `path` and fsyncs the
// directory. Destroyed without commit() (an error), it removes the temporary file and leaves
// `path` untouched. Creates missing parent directories. RuntimeFailure naming the path and the
// failing call otherwise (a full disk: "write '<path>.tmp.<pid>' failed: No space left on device").
// The XXH3-64 of the bytes written is kept as they pass (checksum_hex()), so a caller recording a
// checksum never reads the file back.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t size);
  void commit();
  uint64_t bytes_written() const { return written_; }
  std::string checksum_hex() const { return checksum_.hex(); }

 private:
  std::string path_;
  std::string tmp_;
  int fd_ = -1;
  uint64_t written_ = 0;
  Xxh3Stream checksum_;
};

// A memory mapping of a whole file, copy-on-write: writes through data() never reach the file.
// UserError naming the path when it cannot be opened or is not a regular file.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// Publishes a directory whose files are complete and fsynced: renames `from` to `to` and fsyncs
// their parent directories, so after a crash `to` is either absent or whole. Returns false, leaving
// `from` in place, when a non-empty `to` already exists (another writer published first);
// RuntimeFailure naming both paths for any other failure.
bool publish_directory(const std::string& from, const std::string& to);

// Creates directory `dir` (and its parents) when missing and fsyncs the directory holding it, so
// its entry survives a crash. RuntimeFailure naming the path when it cannot.
void create_directory_durably(const std::string& dir);

// write_file_atomic(path, bytes): AtomicFileWriter for a small file held in memory.
void write_file_atomic(const std::string& path, const std::string& bytes);

// The directory a command writes its results into (`--out DIR`): a new path, created here with its
// parents, or an existing empty directory; an existing non-empty directory (an earlier model, a
// dataset) only with `force`. The constructor checks and creates it; UserError naming `flag` and
// the path when the path is empty, exists and is not a directory, is a non-empty directory without
// force, or cannot be created or written (permissions, a read-only or virtual filesystem). Until
// keep() is called, the destructor removes the directories the constructor created, if they are
// still empty: a command that fails after claiming its output leaves nothing behind.
class OutputDirectory {
 public:
  OutputDirectory(const std::string& path, bool force, const std::string& flag);
  ~OutputDirectory();
  OutputDirectory(const OutputDirectory&) = delete;
  OutputDirectory& operator=(const OutputDirectory&) = delete;

  const std::string& path() const { return path_; }
  // The command succeeded: the directory stays.
  void keep() { keep_ = true; }

 private:
  void remove_created();

  std::string path_;
  std::vector<std::string> created_;  // the levels the constructor created, deepest first
  bool keep_ = false;
};

}  // namespace ptrain
