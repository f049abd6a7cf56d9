// libFuzzer target for the safetensors header parser and validator: any input must either parse
// into a header whose tensors tile the data buffer, or be rejected with a UserError; nothing else
// (crash, sanitizer report, other exception) is acceptable.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "checkpoint/safetensors.h"
#include "core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) {
    try {
      ptrain::parse_safetensors_header(data, size, size, "fuzz-input");
    } catch (const ptrain::UserError&) {
      return 0;
    }
    std::abort();  // a file shorter than 8 bytes must be rejected
  }
  try {
    ptrain::SafetensorsHeader header =
        ptrain::parse_safetensors_header(data, size, size, "fuzz-input");
    uint64_t covered = 0;
    for (const auto& t : header.tensors) {
      if (t.begin != covered || t.end < t.begin) std::abort();
      covered = t.end;
    }
    if (header.data_start + covered != size) std::abort();
  } catch (const ptrain::UserError&) {
  }
  return 0;
}
