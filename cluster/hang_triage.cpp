#include "cluster/hang_triage.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <tuple>

namespace ptrain {
namespace {

struct Record {
  std::string comm, op;
  uint64_t seq = 0;
  int64_t step = -1;
  double started = 0, finished = 0;
  bool running() const { return finished == 0; }
  std::string name() const {
    return fmt::format("{} {} #{}{}", comm, op, seq,
                       step >= 0 ? fmt::format(" (step {})", step) : std::string());
  }
};

// One rank's report; nullopt when the message is not one (an older rank's text, say).
std::optional<std::vector<Record>> parse_report(const std::string& message) {
  const nlohmann::json report = nlohmann::json::parse(message, nullptr, /*allow_exceptions=*/false);
  if (!report.is_object() || !report.contains("recent") || !report["recent"].is_array())
    return std::nullopt;
  std::vector<Record> records;
  for (const nlohmann::json& r : report["recent"]) {
    if (!r.is_object()) continue;
    Record record;
    record.comm = r.value("comm", "?");
    record.op = r.value("op", "?");
    record.seq = r.value("seq", uint64_t{0});
    record.step = r.value("step", int64_t{-1});
    record.started = r.value("started", 0.0);
    record.finished = r.value("finished", 0.0);
    records.push_back(record);
  }
  return records;
}

}  // namespace

std::string rank_ranges(std::vector<int> ranks) {
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  std::string text;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    if (!text.empty()) text += ", ";
    text += j == i ? fmt::format("{}", ranks[i]) : fmt::format("{}-{}", ranks[i], ranks[j]);
    i = j + 1;
  }
  return text;
}

HangTriage triage_hang(const std::vector<v1::Event>& events, int world,
                       const std::vector<v1::RankHealth>& ranks) {
  HangTriage triage;
  std::map<int, std::vector<Record>> reports;  // by rank, the first report of each
  for (const v1::Event& event : events) {
    if (event.kind() != "hang" || event.rank() < 0 || reports.count(event.rank())) continue;
    if (auto records = parse_report(event.message())) reports[event.rank()] = std::move(*records);
  }
  if (reports.empty()) return triage;
  triage.found = true;

  // The collective the job is stuck in: the one most reporting ranks wait in (the oldest running
  // collective of each), the lowest sequence number on a tie.
  using Key = std::tuple<std::string, uint64_t, std::string>;  // comm, seq, op
  std::map<Key, std::vector<int>> waiting;
  std::map<Key, Record> stuck_records;
  for (const auto& [rank, records] : reports) {
    auto oldest =
        std::find_if(records.begin(), records.end(), [](const Record& r) { return r.running(); });
    if (oldest == records.end()) continue;
    const Key key{oldest->comm, oldest->seq, oldest->op};
    waiting[key].push_back(rank);
    stuck_records.emplace(key, *oldest);
  }
  if (waiting.empty()) {
    triage.summary =
        fmt::format("ranks {} reported a hang but none was inside a collective", rank_ranges([&] {
                      std::vector<int> r;
                      for (const auto& entry : reports) r.push_back(entry.first);
                      return r;
                    }()));
    return triage;
  }
  auto stuck = std::max_element(waiting.begin(), waiting.end(), [](const auto& a, const auto& b) {
    if (a.second.size() != b.second.size()) return a.second.size() < b.second.size();
    return std::get<1>(a.first) > std::get<1>(b.first);
  });
  const Record& target = stuck_records.at(stuck->first);
  const std::vector<int>& in_it = stuck->second;
  for (int rank : in_it)
    for (const Record& r : reports.at(rank))
      if (r.comm == target.comm && r.seq == target.seq && r.started > 0 &&
          (triage.stuck_since_unix_s == 0 || r.started < triage.stuck_since_unix_s))
        triage.stuck_since_unix_s = r.started;
  triage.details.push_back(fmt::format("rank{} {} wait{} in {}", in_it.size() > 1 ? "s" : "",
                                       rank_ranges(in_it), in_it.size() > 1 ? "" : "s",
                                       target.name()));

  // Every rank belongs to a world communicator ("world", "world.nccl"); a split's groups hold
  // some ranks only, and a rank with no record of one is taken for a member of another group.
  const bool whole_world = target.comm.find('/') == std::string::npos;
  std::map<int, const v1::RankHealth*> health;
  for (const v1::RankHealth& h : ranks) health[h.rank()] = &h;
  std::vector<int> behind, silent, elsewhere;
  for (int rank = 0; rank < world; ++rank) {
    if (std::find(in_it.begin(), in_it.end(), rank) != in_it.end()) continue;
    auto report = reports.find(rank);
    if (report == reports.end()) {
      silent.push_back(rank);
      std::string seen;
      if (auto h = health.find(rank); h != health.end())
        seen = fmt::format(": its last heartbeat {:.1f} s before at step {}{}",
                           h->second->heartbeat_age_s(), h->second->step(),
                           h->second->lost() ? ", lost" : "");
      triage.details.push_back(fmt::format(
          "rank {} sent no report (stopped, dead, or busy outside collectives){}", rank, seen));
      continue;
    }
    // Its newest collective on the stuck one's communicator.
    const Record* newest = nullptr;
    for (const Record& r : report->second)
      if (r.comm == target.comm && (newest == nullptr || r.seq > newest->seq)) newest = &r;
    if ((newest == nullptr && whole_world) || (newest != nullptr && newest->seq < target.seq)) {
      behind.push_back(rank);
      triage.details.push_back(fmt::format(
          "rank {} never entered {}: its newest on '{}' is {}", rank, target.name(), target.comm,
          newest == nullptr ? std::string("none")
                            : fmt::format("{} ({})", newest->name(),
                                          newest->running() ? "running" : "finished")));
    } else {
      elsewhere.push_back(rank);
      auto running = std::find_if(report->second.begin(), report->second.end(),
                                  [](const Record& r) { return r.running(); });
      triage.details.push_back(
          fmt::format("rank {} is past it or elsewhere: waiting in {}", rank,
                      running == report->second.end() ? "nothing" : running->name()));
    }
  }
  std::vector<int> laggards = behind;
  if (whole_world || behind.empty()) laggards.insert(laggards.end(), silent.begin(), silent.end());
  if (!whole_world && behind.empty() && !silent.empty()) {
    std::vector<int> reporting;
    for (const auto& entry : reports) reporting.push_back(entry.first);
    triage.summary = fmt::format(
        "rank{} {} sent no report (stopped, dead, or busy outside collectives) while rank{} {} "
        "wait in collectives ({} among them)",
        silent.size() > 1 ? "s" : "", rank_ranges(silent), reporting.size() > 1 ? "s" : "",
        rank_ranges(reporting), target.name());
  } else if (laggards.empty()) {
    // Every rank entered it. One whose heartbeats had stopped while the others' went on (a
    // process stopped inside the collective, a hung host) is then the likely cause.
    double freshest = -1;
    for (const v1::RankHealth& h : ranks)
      if (freshest < 0 || h.heartbeat_age_s() < freshest) freshest = h.heartbeat_age_s();
    std::vector<int> stale;
    double oldest = 0;
    for (const v1::RankHealth& h : ranks)
      if (h.heartbeat_age_s() > 3.0 && h.heartbeat_age_s() > 3 * freshest) {
        stale.push_back(h.rank());
        oldest = std::max(oldest, h.heartbeat_age_s());
      }
    if (!stale.empty()) {
      triage.summary = fmt::format(
          "rank{} {} stopped heartbeating (up to {:.1f} s before) while ranks {} all wait in {}: "
          "the likely cause (a stopped process, a hung host)",
          stale.size() > 1 ? "s" : "", rank_ranges(stale), oldest, rank_ranges(in_it),
          target.name());
      triage.details.push_back(triage.summary);
    } else {
      triage.summary = fmt::format(
          "ranks {} all wait in {}: none fell behind (the collective itself or the network "
          "hangs)",
          rank_ranges(in_it), target.name());
    }
  } else {
    triage.summary =
        fmt::format("rank{} {} fell behind: never entered {}, which rank{} {} waited in",
                    laggards.size() > 1 ? "s" : "", rank_ranges(laggards), target.name(),
                    in_it.size() > 1 ? "s" : "", rank_ranges(in_it));
  }
  return triage;
}

}  // namespace ptrain
