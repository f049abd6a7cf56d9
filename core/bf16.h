// bf16 <-> fp32 on raw bits, branch-free so loops over them vectorise. The NaN test works on the
// integer bits, so it also holds in files compiled with -ffast-math.
#pragma once

#include <cstdint>
#include <cstring>

namespace ptrain {

inline float bf16_to_float(uint16_t bits) {
  const uint32_t word = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}

// Rounds to nearest even; NaN stays NaN (0x7FC0).
inline uint16_t float_to_bf16(float value) {
  uint32_t word;
  std::memcpy(&word, &value, sizeof(word));
  const uint32_t rounded = (word + 0x7FFFu + ((word >> 16) & 1u)) >> 16;
  const bool is_nan = (word & 0x7FFFFFFFu) > 0x7F800000u;
  return static_cast<uint16_t>(is_nan ? 0x7FC0u : rounded);
}

}  // namespace ptrain
