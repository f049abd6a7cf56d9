#include "parallel/half_reduce.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace ptrain {
namespace {

constexpr int64_t kBlock = 2048;  // fp32 accumulator block that stays in L1

template <class T>
inline float to_float(uint16_t bits) {
  T value;
  std::memcpy(&value, &bits, sizeof(bits));
  return static_cast<float>(value);
}

template <class T>
inline uint16_t from_float(float value) {
  T rounded(value);  // round to nearest even
  uint16_t bits;
  std::memcpy(&bits, &rounded, sizeof(bits));
  return bits;
}

template <class T>
void reduce_rows(const uint16_t* in, int rows, int64_t row_stride, int64_t n, ReduceOp op,
                 int divisor, uint16_t* out) {
  float acc[kBlock];
  const float scale = op == ReduceOp::kAvg ? 1.0f / static_cast<float>(divisor) : 1.0f;
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t len = std::min(kBlock, n - begin);
    const uint16_t* first = in + begin;
    for (int64_t k = 0; k < len; ++k) acc[k] = to_float<T>(first[k]);
    for (int r = 1; r < rows; ++r) {
      const uint16_t* row = in + r * row_stride + begin;
      if (op == ReduceOp::kMax) {
        for (int64_t k = 0; k < len; ++k) acc[k] = std::max(acc[k], to_float<T>(row[k]));
      } else {
        for (int64_t k = 0; k < len; ++k) acc[k] += to_float<T>(row[k]);
      }
    }
    uint16_t* dst = out + begin;
    for (int64_t k = 0; k < len; ++k) dst[k] = from_float<T>(acc[k] * scale);
  }
}

}  // namespace

bool is_16bit_float(c10::ScalarType dtype) {
  return dtype == c10::ScalarType::BFloat16 || dtype == c10::ScalarType::Half;
}

void reduce_16bit_rows(const uint16_t* in, int rows, int64_t row_stride, int64_t n,
                       c10::ScalarType dtype, ReduceOp op, int divisor, uint16_t* out) {
  PTRAIN_ASSERT(is_16bit_float(dtype), "reduce_16bit_rows on {}", c10::toString(dtype));
  if (dtype == c10::ScalarType::BFloat16) {
    reduce_rows<c10::BFloat16>(in, rows, row_stride, n, op, divisor, out);
  } else {
    reduce_rows<c10::Half>(in, rows, row_stride, n, op, divisor, out);
  }
}

void widen_16bit(const uint16_t* in, int64_t n, c10::ScalarType dtype, float* out) {
  if (dtype == c10::ScalarType::BFloat16) {
    for (int64_t k = 0; k < n; ++k) out[k] = to_float<c10::BFloat16>(in[k]);
  } else {
    for (int64_t k = 0; k < n; ++k) out[k] = to_float<c10::Half>(in[k]);
  }
}

void narrow_to_16bit(const float* in, int64_t n, c10::ScalarType dtype, float scale, uint16_t* out) {
  if (dtype == c10::ScalarType::BFloat16) {
    for (int64_t k = 0; k < n; ++k) out[k] = from_float<c10::BFloat16>(in[k] * scale);
  } else {
    for (int64_t k = 0; k < n; ++k) out[k] = from_float<c10::Half>(in[k] * scale);
  }
}

}  // namespace ptrain
