// "[4096, 11008]": a tensor shape as messages print it. Any contiguous range of integers
// (std::vector<int64_t>, at::IntArrayRef).
#pragma once

#include <string>

namespace ptrain {

template <class Sizes>
std::string shape_string(const Sizes& sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "]";
}

}  // namespace ptrain
