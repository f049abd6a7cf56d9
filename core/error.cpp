#include "core/error.h"

#include <cstring>

namespace ptrain::detail {

std::string with_location(const std::string& message, const char* file, int line) {
  // Strip the build-machine prefix so messages read "core/config.cpp:12" wherever we were built.
  const char* shown = file;
  for (const char* root : {"/core/", "/parallel/", "/launcher/", "/bench/", "/tests/", "/trainer/",
                           "/checkpoint/", "/cluster/"}) {
    if (const char* at = std::strstr(file, root)) {
      shown = at + 1;
      break;
    }
  }
  return fmt::format("{} ({}:{})", message, shown, line);
}

}  // namespace ptrain::detail
