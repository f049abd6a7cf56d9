#include "core/failpoint.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

namespace ptrain {
namespace {

struct Armed {
  std::string name;
  int rank = -1;  // -1: every rank
  int hit = 1;    // fires when reached for the hit-th time
  mutable std::atomic<int> reached{0};
  Armed() = default;
  Armed(const Armed& o) : name(o.name), rank(o.rank), hit(o.hit) {}
};

const std::vector<Armed>& armed() {
  static const std::vector<Armed> points = [] {
    std::vector<Armed> out;
    const char* env = std::getenv("PTRAIN_FAILPOINT");
    if (env == nullptr) return out;
    std::stringstream list(env);
    std::string item;
    while (std::getline(list, item, ',')) {
      if (item.empty()) continue;
      // name, then "@rank" and "#hit" in either order.
      Armed a;
      const size_t end = item.find_first_of("@#");
      a.name = item.substr(0, end);
      if (const size_t at = item.find('@'); at != std::string::npos)
        a.rank = std::atoi(item.c_str() + at + 1);
      if (const size_t hash = item.find('#'); hash != std::string::npos)
        a.hit = std::max(1, std::atoi(item.c_str() + hash + 1));
      out.push_back(a);
    }
    return out;
  }();
  return points;
}

}  // namespace

void failpoint(const char* name, int rank) {
  for (const Armed& a : armed())
    if (a.name == name && (a.rank < 0 || a.rank == rank) && ++a.reached == a.hit) {
      std::fprintf(stderr, "failpoint %s: rank %d exits with code %d\n", name, rank,
                   kFailpointExitCode);
      std::fflush(stderr);
      std::_Exit(kFailpointExitCode);
    }
}

}  // namespace ptrain
