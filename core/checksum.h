// XXH3-64 checksums as the stored formats record them (prepared data's meta.json, a checkpoint's
// manifest.json): 16 lowercase hex digits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace ptrain {

// XXH3-64 over data fed in pieces.
class Xxh3Stream {
 public:
  Xxh3Stream();
  ~Xxh3Stream();
  Xxh3Stream(Xxh3Stream&&) noexcept;
  Xxh3Stream& operator=(Xxh3Stream&&) noexcept;
  Xxh3Stream(const Xxh3Stream&) = delete;
  Xxh3Stream& operator=(const Xxh3Stream&) = delete;
  void update(const void* data, size_t size);
  uint64_t digest() const;
  std::string hex() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// The 16 hex digits of XXH3-64 over `data`.
std::string xxh3_hex(const void* data, size_t size);

// The 16 hex digits of XXH3-64 over a whole file, read in large pieces (not mapped: a file larger
// than memory is fine). UserError naming the path when it cannot be read.
std::string xxh3_file_hex(const std::string& path);

}  // namespace ptrain
