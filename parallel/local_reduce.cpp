#include "parallel/local_reduce.h"

#include <c10/util/Half.h>

#include <algorithm>
#include <cstring>

#include "core/bf16.h"
#include "core/error.h"

namespace ptrain {
namespace {

constexpr int64_t kBlock = 2048;  // accumulator block that stays in L1

// Storage types, each with its accumulator and branch-free conversions (so the loops vectorise).
struct Bf16 {
  uint16_t bits;
  using Acc = float;
  static float load(Bf16 v) { return bf16_to_float(v.bits); }
  static Bf16 store(float value) { return Bf16{float_to_bf16(value)}; }
};

struct Fp16 {
  uint16_t bits;
  using Acc = float;
  static float load(Fp16 v) { return c10::detail::fp16_ieee_to_fp32_value(v.bits); }
  static Fp16 store(float value) { return Fp16{c10::detail::fp16_ieee_from_fp32_value(value)}; }
};

struct Fp32 {
  float value;
  using Acc = float;
  static float load(Fp32 v) { return v.value; }
  static Fp32 store(float value) { return Fp32{value}; }
};

struct Fp64 {
  double value;
  using Acc = double;
  static double load(Fp64 v) { return v.value; }
  static Fp64 store(double value) { return Fp64{value}; }
};

// Built for AVX-512, AVX2 and baseline x86-64; the loader picks the best the CPU has.
template <class S>
__attribute__((target_clones("avx512f", "avx2", "default"))) void reduce_block_rows(
    const S* in, int rows, int64_t row_stride, int64_t n, ReduceOp op, int divisor, S* out) {
  using Acc = typename S::Acc;
  Acc acc[kBlock];
  const Acc d = static_cast<Acc>(op == ReduceOp::kAvg ? divisor : 1);
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t len = std::min(kBlock, n - begin);
    const S* first = in + begin;
    for (int64_t k = 0; k < len; ++k) acc[k] = S::load(first[k]);
    for (int r = 1; r < rows; ++r) {
      const S* row = in + r * row_stride + begin;
      if (op == ReduceOp::kMax) {
        for (int64_t k = 0; k < len; ++k) {  // a NaN wins whichever rank it came from
          const Acc x = S::load(row[k]);
          acc[k] = (x != x || x > acc[k]) ? x : acc[k];
        }
      } else {
        for (int64_t k = 0; k < len; ++k) acc[k] += S::load(row[k]);
      }
    }
    S* dst = out + begin;
    if (op == ReduceOp::kAvg) {
      for (int64_t k = 0; k < len; ++k) dst[k] = S::store(acc[k] / d);
    } else {
      for (int64_t k = 0; k < len; ++k) dst[k] = S::store(acc[k]);
    }
  }
}

template <class S>
void reduce_typed(const void* in, int rows, int64_t row_stride, int64_t n, ReduceOp op, int divisor,
                  void* out) {
  static_assert(sizeof(S) == sizeof(S::store(0)), "storage type must be a plain wrapper");
  reduce_block_rows(static_cast<const S*>(in), rows, row_stride, n, op, divisor,
                    static_cast<S*>(out));
}

}  // namespace

bool is_16bit_float(c10::ScalarType dtype) {
  return dtype == c10::ScalarType::BFloat16 || dtype == c10::ScalarType::Half;
}

bool has_local_reduce(c10::ScalarType dtype) {
  return is_16bit_float(dtype) || dtype == c10::ScalarType::Float ||
         dtype == c10::ScalarType::Double;
}

void reduce_rows(const void* in, int rows, int64_t row_stride, int64_t n, c10::ScalarType dtype,
                 ReduceOp op, int divisor, void* out) {
  switch (dtype) {
    case c10::ScalarType::BFloat16:
      return reduce_typed<Bf16>(in, rows, row_stride, n, op, divisor, out);
    case c10::ScalarType::Half:
      return reduce_typed<Fp16>(in, rows, row_stride, n, op, divisor, out);
    case c10::ScalarType::Float:
      return reduce_typed<Fp32>(in, rows, row_stride, n, op, divisor, out);
    case c10::ScalarType::Double:
      return reduce_typed<Fp64>(in, rows, row_stride, n, op, divisor, out);
    default:
      PTRAIN_ASSERT(false, "reduce_rows on {}", c10::toString(dtype));
  }
}

void widen_16bit(const uint16_t* in, int64_t n, c10::ScalarType dtype, float* out) {
  if (dtype == c10::ScalarType::BFloat16) {
    for (int64_t k = 0; k < n; ++k) out[k] = Bf16::load(Bf16{in[k]});
  } else {
    for (int64_t k = 0; k < n; ++k) out[k] = Fp16::load(Fp16{in[k]});
  }
}

void narrow_to_16bit(const float* in, int64_t n, c10::ScalarType dtype, int divisor,
                     uint16_t* out) {
  const float d = static_cast<float>(divisor);
  if (dtype == c10::ScalarType::BFloat16) {
    for (int64_t k = 0; k < n; ++k) out[k] = Bf16::store(in[k] / d).bits;
  } else {
    for (int64_t k = 0; k < n; ++k) out[k] = Fp16::store(in[k] / d).bits;
  }
}

}  // namespace ptrain
