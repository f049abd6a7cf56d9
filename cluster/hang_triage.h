// Hang triage: when the collective watchdog fires, each rank that can still run sends its last
// collectives to the coordinator (a "hang" event, ReportEventRequest.HANG). From those reports
// this names the collective the job is stuck in, the ranks waiting in it, and the rank that fell
// behind: the one that never entered it (its newest collective is an earlier one) or that sent
// nothing at all (stopped, or busy outside collectives) — instead of every rank reporting the
// same timeout.
#pragma once

#include <string>
#include <vector>

#include "ptrain/v1/coordinator.pb.h"

namespace ptrain {

struct HangTriage {
  bool found = false;                // at least one hang report
  std::string summary;               // one line for the supervisor's summary and the attempt
  std::vector<std::string> details;  // a line per finding
  double stuck_since_unix_s = 0;     // when the first waiting rank entered the stuck collective
};

// `events`: the attempt's "hang" events (others are ignored); `world`: its ranks; `ranks`: their
// health as the coordinator knows it (may be partial or empty).
HangTriage triage_hang(const std::vector<v1::Event>& events, int world,
                       const std::vector<v1::RankHealth>& ranks);

// "0-3, 5, 7-8": sorted ranks as ranges.
std::string rank_ranges(std::vector<int> ranks);

}  // namespace ptrain
