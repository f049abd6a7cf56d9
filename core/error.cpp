#include "core/error.h"

#include <cstring>

namespace ptrain::detail {

std::string with_location(const std::string& message, const char* file, int line) {
  // Strip the source-tree prefix (PTRAIN_SOURCE_DIR, set by CMake) so messages read
  // "core/config.cpp:12" wherever the tree was built.
  const char* shown = file;
  const size_t root = std::strlen(PTRAIN_SOURCE_DIR);
  if (std::strncmp(file, PTRAIN_SOURCE_DIR, root) == 0) shown = file + root;
  return fmt::format("{} ({}:{})", message, shown, line);
}

}  // namespace ptrain::detail
