// Private to the prepared dataset's reader and builder: file names, the format version and the
// summary's JSON form.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>

#include "trainer/data/prepared_data.h"

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

uint64_t xxh3_of(const void* data, size_t size);

}  // namespace ptrain
