// Failpoints: places where a test makes a process die the way a crash or a kill would, to check
// that what was committed survives (docs/development.md, "Failpoints").
//
// PTRAIN_FAILPOINT=name[@rank][#hit][,...] in the environment arms them; failpoint("name",
// rank) then ends the process the hit-th time it is reached (default the first) at once with
// exit code 86 (std::_Exit: no destructors, no flushing, as a kill would), after one line on
// stderr naming it. Unarmed, a failpoint costs one cached lookup.
#pragma once

namespace ptrain {

constexpr int kFailpointExitCode = 86;

// Ends the process when `name` is armed for every rank or for `rank`.
void failpoint(const char* name, int rank);

}  // namespace ptrain
