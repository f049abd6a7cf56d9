// Private to the prepared dataset's reader and builder: file names, the format version and the
// XXH3 checksums.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "core/checksum.h"
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

}  // namespace ptrain
