// Private to the prepared dataset's reader and builder: file names, the format version and the
// XXH3 checksums.
#pragma once

#include <xxhash.h>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "data/prepared_data.h"

namespace ptrain {

constexpr const char* kPreparedFormat = "ptrain-prepared-data";
constexpr int kPreparedFormatVersion = 1;
constexpr const char* kMetaFile = "meta.json";
constexpr const char* kTokensFile = "tokens.bin";
constexpr const char* kSampleOffsetsFile = "sample_offsets.bin";
constexpr const char* kSampleOriginFile = "sample_origin.bin";
constexpr const char* kTrainRowOffsetsFile = "train_row_offsets.bin";
constexpr const char* kTrainRowSamplesFile = "train_row_samples.bin";
constexpr const char* kValSamplesFile = "val_samples.bin";
constexpr int kOriginFileShift = 40;

// XXH3-64 over data fed in pieces; hex() is the 16 hex digits meta.json stores.
class Xxh3Stream {
 public:
  Xxh3Stream();
  ~Xxh3Stream();
  Xxh3Stream(const Xxh3Stream&) = delete;
  Xxh3Stream& operator=(const Xxh3Stream&) = delete;
  void update(const void* data, size_t size);
  std::string hex() const;

 private:
  XXH3_state_t* state_;
};

// The 16 hex digits of XXH3-64 over `data`, as meta.json stores a file's checksum.
std::string xxh3_hex(const void* data, size_t size);

}  // namespace ptrain
