// Wall-clock time as the coordinator, the supervisor and the ranks exchange it.
#pragma once

#include <chrono>

namespace ptrain {

// Seconds since the Unix epoch (the system clock: comparable across hosts up to their skew).
inline double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace ptrain
