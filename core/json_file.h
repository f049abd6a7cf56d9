// Reading a JSON file whose errors name it.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace ptrain {

// The parsed contents of `path`. UserError "'PATH': not valid JSON: ..." when it does not parse
// (and read_text_file's error when it cannot be read).
nlohmann::json read_json_file(const std::string& path);

}  // namespace ptrain
