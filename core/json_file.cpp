#include "core/json_file.h"

#include <fmt/format.h>

#include "core/error.h"
#include "core/file_util.h"

namespace ptrain {

nlohmann::json read_json_file(const std::string& path) {
  try {
    return nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw UserError(fmt::format("'{}': not valid JSON: {}", path, e.what()));
  }
}

}  // namespace ptrain
