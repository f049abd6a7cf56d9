// Shared pieces of ptrain-bench suites: the machine description every result line carries.
#pragma once

#include <nlohmann/json.hpp>

namespace ptrain::bench {

// {"cores": N, "cpu": "model name"} of this host.
nlohmann::json machine_json();

}  // namespace ptrain::bench
