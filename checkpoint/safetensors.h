// safetensors files (the Hugging Face weight format), read and written without libtorch.
//
// Format (../shared/reference/FORMATS.md): u64 little-endian header length N; N bytes of UTF-8 JSON
// {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}; then
// the byte buffer, offsets relative to its start.
//
// SafetensorsFile maps a file read-only and validates every rule a reader must enforce; a
// violation is a UserError naming the file, the tensor (when there is one) and the rule. Tensor
// bytes are views into the mapping (zero-copy), valid while the SafetensorsFile (or a copy of its
// shared mapping, see mapping()) lives. write_safetensors() writes a file atomically with the
// header padded to a multiple of 8 bytes, so tensor data is 8-byte aligned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/file_util.h"

namespace ptrain {

// Every dtype of the safetensors spec.
enum class StDtype {
  kBool,
  kU8,
  kI8,
  kF8_E5M2,
  kF8_E4M3,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
};

const char* dtype_name(StDtype dtype);  // "BF16"
size_t dtype_size(StDtype dtype);       // bytes per element
bool parse_dtype(const std::string& name, StDtype* out);

struct TensorInfo {
  std::string name;
  StDtype dtype = StDtype::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data buffer; end exclusive
  uint64_t end = 0;

  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// The parsed, validated header of a file of `file_size` bytes whose first bytes are `bytes`
// (at least the 8-byte length and the header itself). `label` names the file in errors.
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in data order (ascending offsets)
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + N
};
SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, size_t available,
                                           uint64_t file_size, const std::string& label);

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return mapping_->path(); }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorInfo* find(const std::string& name) const;
  // The tensor named `name`; UserError naming the file when it is absent.
  const TensorInfo& at(const std::string& name) const;
  const uint8_t* bytes(const TensorInfo& tensor) const {
    return mapping_->data() + header_.data_start + tensor.begin;
  }
  std::shared_ptr<const MappedFile> mapping() const { return mapping_; }

 private:
  std::shared_ptr<const MappedFile> mapping_;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;
};

// Reads the safetensors file at `path` front to back once, with read() into one buffer of `piece`
// bytes (no mapping, so a file larger than memory streams through), validating its header as
// SafetensorsFile does, and hands every tensor's bytes to `sink(tensor, offset, data, size)` in
// order, `offset` counting from the tensor's first byte. Returns the XXH3-64 of every byte of the
// file (16 hex digits: what a checkpoint manifest records), computed on the same pass. UserError
// naming the file for a malformed header, a short read, or what `sink` throws.
using TensorSink = std::function<void(const TensorInfo& tensor, uint64_t offset,
                                      const uint8_t* data, size_t size)>;
std::string stream_safetensors(const std::string& path, const TensorSink& sink,
                               size_t piece = size_t{8} << 20);

// One tensor to write: its bytes are borrowed until the write returns. Instead of `data`, a tensor
// may give `produce`, called when the writer reaches it to fill `nbytes` bytes (so a model can be
// written one tensor at a time, e.g. dequantized and merged, without holding all of it).
struct TensorBytes {
  std::string name;
  StDtype dtype = StDtype::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  uint64_t nbytes = 0;
  std::function<void(void* out)> produce;
};

// A file as written: its size and the XXH3-64 of its bytes (16 hex digits).
struct WrittenFile {
  std::string path;
  uint64_t bytes = 0;
  std::string xxh3;
};

// Writes `tensors` (in the given order) to `path` atomically (fsynced, then renamed into place);
// `metadata` gets "format": "pt" unless it sets "format" itself. UserError on a duplicate name or a
// byte size that does not match the shape and dtype; RuntimeFailure naming the file when the
// system refuses (a full disk), with `path` untouched. Tensor bytes stream from where they are:
// nothing is copied but a `produce`d tensor.
WrittenFile write_safetensors(const std::string& path, const std::vector<TensorBytes>& tensors,
                              std::map<std::string, std::string> metadata = {});

// The header bytes write_safetensors() would produce (length prefix included, padded).
std::string encode_safetensors_header(const std::vector<TensorBytes>& tensors,
                                      std::map<std::string, std::string> metadata);

}  // namespace ptrain
