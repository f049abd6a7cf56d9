// CollectiveWatchdog without MPI: the history ring against the collectives the test issued, the
// text of format_history for hand-built records, and the order of what happens when it fires
// (report and history, fire hooks, grace, abort hooks, abort action), with an abort action that
// records instead of ending the process. Waits are on futures with bounded timeouts.
#include "parallel/collective_watchdog.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace ptrain {
namespace {

using Seconds = CollectiveWatchdog::Seconds;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr auto kBound = std::chrono::seconds(30);  // how long a test waits for the watchdog

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

CollectiveWatchdog::Collective collective(const std::string& communicator, uint64_t seq,
                                          int64_t bytes, int64_t step = 3) {
  CollectiveWatchdog::Collective c;
  c.communicator = &communicator;
  c.backend = "test";
  c.op = "all_reduce";
  c.seq = seq;
  c.step = step;
  c.reduce = "sum";
  c.dtype = "Float";
  c.numel = bytes / 4;
  c.bytes = bytes;
  return c;
}

// A watchdog that must not fire within the test.
std::unique_ptr<CollectiveWatchdog> quiet_watchdog(size_t history) {
  return std::make_unique<CollectiveWatchdog>(
      Seconds(600), 0, 1, "host", nullptr,
      [](const std::string& report) { ADD_FAILURE() << "unexpected abort: " << report; },
      Seconds(0), history);
}

// Everything that happens when a watchdog fires, in order, and the abort's report.
struct FireLog {
  std::mutex mu;
  std::vector<std::string> events;
  std::string abort_report;
  std::chrono::steady_clock::time_point aborted_at;
  std::promise<void> aborted;

  void add(const std::string& event) {
    std::lock_guard<std::mutex> lock(mu);
    events.push_back(event);
  }
  CollectiveWatchdog::AbortAction abort_action() {
    return [this](const std::string& report) {
      {
        std::lock_guard<std::mutex> lock(mu);
        events.push_back("abort");
        abort_report = report;
        aborted_at = std::chrono::steady_clock::now();
      }
      aborted.set_value();
    };
  }
};

// ---------------------------------------------------------------- the ring

TEST(CollectiveWatchdogHistory, KeepsTheLastCollectivesOldestFirstAcrossWrapAround) {
  auto watchdog = quiet_watchdog(4);
  EXPECT_TRUE(watchdog->recent().empty());
  const std::string world = "world", dp = "dp";
  const double before = unix_now();
  for (uint64_t i = 1; i <= 6; ++i) {
    uint64_t token = watchdog->start(collective(i % 2 ? world : dp, i, 100 * i));
    watchdog->finish(token);
  }
  const double after = unix_now();

  auto records = watchdog->recent();
  ASSERT_EQ(records.size(), 4u);
  for (size_t k = 0; k < 4; ++k) {
    const uint64_t seq = 3 + k;
    SCOPED_TRACE(seq);
    EXPECT_EQ(records[k].communicator, seq % 2 ? "world" : "dp");
    EXPECT_EQ(records[k].op, "all_reduce");
    EXPECT_EQ(records[k].seq, seq);
    EXPECT_EQ(records[k].step, 3);
    EXPECT_EQ(records[k].bytes, static_cast<int64_t>(100 * seq));
    EXPECT_GE(records[k].started_unix_s, before);
    EXPECT_LE(records[k].finished_unix_s, after);
    EXPECT_GE(records[k].finished_unix_s, records[k].started_unix_s);
    if (k > 0) {
      EXPECT_GE(records[k].started_unix_s, records[k - 1].finished_unix_s);
    }
  }

  // One more, still running: the oldest drops out, the newest is last and has no end.
  watchdog->start(collective(world, 7, 700));
  records = watchdog->recent();
  ASSERT_EQ(records.size(), 4u);
  EXPECT_EQ(records.front().seq, 4u);
  EXPECT_EQ(records.back().seq, 7u);
  EXPECT_EQ(records.back().finished_unix_s, 0.0);
}

TEST(CollectiveWatchdogHistory, TellsRunningFromFinishedWhateverTheOrderOfCompletion) {
  auto watchdog = quiet_watchdog(CollectiveWatchdog::kDefaultHistory);
  const std::string world = "world";
  uint64_t first = watchdog->start(collective(world, 1, 8));
  uint64_t second = watchdog->start(collective(world, 2, 16));
  uint64_t third = watchdog->start(collective(world, 3, 32));
  watchdog->finish(second);

  auto records = watchdog->recent();
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].finished_unix_s, 0.0);
  EXPECT_GT(records[1].finished_unix_s, 0.0);
  EXPECT_EQ(records[2].finished_unix_s, 0.0);

  watchdog->finish(third);
  watchdog->finish(first);
  for (const auto& record : watchdog->recent()) EXPECT_GT(record.finished_unix_s, 0.0);
}

TEST(CollectiveWatchdogHistory, CopiesTheCommunicatorName) {
  auto watchdog = quiet_watchdog(2);
  auto name = std::make_unique<std::string>("world/split(color=1)");
  watchdog->finish(watchdog->start(collective(*name, 1, 4)));
  *name = "reused";  // a finished collective's communicator may be gone or its memory reused
  name.reset();
  auto records = watchdog->recent();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].communicator, "world/split(color=1)");
}

TEST(CollectiveWatchdogHistory, FormatsOneLinePerRecord) {
  // 2024-05-01 10:00:01.123 local time, built independently of the formatter.
  std::tm local{};
  local.tm_year = 2024 - 1900;
  local.tm_mon = 4;
  local.tm_mday = 1;
  local.tm_hour = 10;
  local.tm_min = 0;
  local.tm_sec = 1;
  local.tm_isdst = -1;
  const double started = static_cast<double>(std::mktime(&local)) + 0.123;

  CollectiveRecord running{"world", "all_reduce", 57, 12, 4096, started, 0};
  CollectiveRecord finished{"dp", "all_gather", 9, -1, 2, started, started + 0.0008};
  CollectiveRecord slow{"world", "barrier", 3, 0, 0, started, started + 2.31};
  CollectiveRecord quick{"world", "broadcast", 4, 1, 8, started, started + 0.000035};
  EXPECT_EQ(CollectiveWatchdog::format_history({finished, quick, slow, running}, started + 600.2),
            "dp all_gather #9 no step, 2 B, started 10:00:01.123, finished in 0.8 ms\n"
            "world broadcast #4 step 1, 8 B, started 10:00:01.123, finished in 35 us\n"
            "world barrier #3 step 0, 0 B, started 10:00:01.123, finished in 2.3 s\n"
            "world all_reduce #57 step 12, 4096 B, started 10:00:01.123, running 600.2 s\n");
  EXPECT_EQ(CollectiveWatchdog::format_history({}, started), "");
}

// ---------------------------------------------------------------- firing

TEST(CollectiveWatchdogFire, HooksGetTheHistoryWithTheStuckCollectiveLastThenTheAbortRuns) {
  FireLog log;
  std::string hook_report;
  std::vector<CollectiveRecord> hook_history;
  const std::string world = "world";
  // A ring of exactly the two collectives: the stuck one is the oldest still in it.
  CollectiveWatchdog watchdog(Seconds(0.2), 2, 3, "host", nullptr, log.abort_action(), Seconds(0),
                              2);
  watchdog.add_fire_hook([&](const std::string& report, const std::vector<CollectiveRecord>& r) {
    log.add("fire hook 1");
    hook_report = report;
    hook_history = r;
  });
  watchdog.add_fire_hook(
      [&](const std::string&, const std::vector<CollectiveRecord>&) { log.add("fire hook 2"); });
  watchdog.add_abort_hook([&] { log.add("abort hook"); });

  watchdog.finish(watchdog.start(collective(world, 1, 4, 7)));
  watchdog.start(collective(world, 2, 4096, 7));  // never finishes
  ASSERT_EQ(log.aborted.get_future().wait_for(kBound), std::future_status::ready);

  std::lock_guard<std::mutex> lock(log.mu);
  EXPECT_THAT(log.events, ElementsAre("fire hook 1", "fire hook 2", "abort hook", "abort"));
  EXPECT_EQ(hook_report, log.abort_report);
  EXPECT_THAT(hook_report, HasSubstr("all_reduce #2 (sum, Float, 1024 elements) on communicator "
                                     "'world' (test) did not complete within 0.2 s (step 7); "
                                     "rank 2 of 3"));
  ASSERT_EQ(hook_history.size(), 2u);
  EXPECT_EQ(hook_history[0].seq, 1u);
  EXPECT_GT(hook_history[0].finished_unix_s, 0.0);
  EXPECT_EQ(hook_history[1].seq, 2u);
  EXPECT_EQ(hook_history[1].bytes, 4096);
  EXPECT_EQ(hook_history[1].finished_unix_s, 0.0);
}

// The history handed to the fire hooks when a collective on 'world' hangs in a ring of two and
// `later` collectives on 'dp' start and finish after it.
std::vector<CollectiveRecord> history_when_fired(uint64_t later) {
  FireLog log;
  std::promise<std::vector<CollectiveRecord>> history;
  const std::string world = "world", dp = "dp";
  CollectiveWatchdog watchdog(Seconds(0.2), 0, 1, "host", nullptr, log.abort_action(), Seconds(0),
                              2);
  watchdog.add_fire_hook([&](const std::string&, const std::vector<CollectiveRecord>& recent) {
    history.set_value(recent);
  });
  watchdog.start(collective(world, 1, 64));  // never finishes
  for (uint64_t seq = 1; seq <= later; ++seq) {
    watchdog.finish(watchdog.start(collective(dp, seq, 8)));
  }
  auto fired = history.get_future();
  if (fired.wait_for(kBound) != std::future_status::ready) {
    ADD_FAILURE() << "the watchdog did not fire";
    return {};
  }
  EXPECT_EQ(log.aborted.get_future().wait_for(kBound), std::future_status::ready);
  return fired.get();
}

TEST(CollectiveWatchdogFire, TheStuckCollectiveIsInTheHistoryEvenAfterLaterOnesPushedItOut) {
  for (uint64_t later : {1, 3}) {
    SCOPED_TRACE(later);
    auto records = history_when_fired(later);
    // Still in the ring after one later collective; put back in front of the ring after three.
    ASSERT_EQ(records.size(), later == 1 ? 2u : 3u);
    EXPECT_EQ(records[0].communicator, "world");
    EXPECT_EQ(records[0].seq, 1u);
    EXPECT_EQ(records[0].bytes, 64);
    EXPECT_EQ(records[0].finished_unix_s, 0.0);
    EXPECT_EQ(records[1].communicator, "dp");
    EXPECT_EQ(records[1].seq, later == 1 ? 1u : 2u);
    EXPECT_EQ(records.back().seq, later);
    EXPECT_GT(records.back().finished_unix_s, 0.0);
    EXPECT_LE(records[0].started_unix_s, records[1].started_unix_s);
  }
}

TEST(CollectiveWatchdogFire, AHookThatThrowsDoesNotStopTheAbort) {
  FireLog log;
  const std::string world = "world";
  CollectiveWatchdog watchdog(Seconds(0.2), 0, 1, "host", nullptr, log.abort_action(), Seconds(0));
  watchdog.add_fire_hook([&](const std::string&, const std::vector<CollectiveRecord>&) {
    log.add("fire hook");
    throw std::runtime_error("coordinator unreachable");
  });
  watchdog.add_abort_hook([&] {
    log.add("abort hook");
    throw std::runtime_error("already aborted");
  });
  watchdog.start(collective(world, 1, 4));
  ASSERT_EQ(log.aborted.get_future().wait_for(kBound), std::future_status::ready);
  std::lock_guard<std::mutex> lock(log.mu);
  EXPECT_THAT(log.events, ElementsAre("fire hook", "abort hook", "abort"));
}

TEST(CollectiveWatchdogFire, TheAbortWaitsForTheGraceAfterTheDeadline) {
  FireLog log;
  const std::string world = "world";
  const Seconds timeout(0.2), grace(0.6);
  CollectiveWatchdog watchdog(timeout, 0, 1, "host", nullptr, log.abort_action(), grace);
  EXPECT_DOUBLE_EQ(watchdog.grace_seconds(), 0.6);
  const auto started = std::chrono::steady_clock::now();
  watchdog.start(collective(world, 1, 4));
  ASSERT_EQ(log.aborted.get_future().wait_for(kBound), std::future_status::ready);
  std::lock_guard<std::mutex> lock(log.mu);
  // It fires no earlier than the deadline and aborts no earlier than `grace` after firing.
  EXPECT_GE(Seconds(log.aborted_at - started).count(), (timeout + grace).count());
}

TEST(CollectiveWatchdogFire, DestroyingItDuringTheGraceCutsTheGraceShortAndStillAborts) {
  FireLog log;
  std::promise<void> fired;
  const std::string world = "world";
  auto watchdog = std::make_unique<CollectiveWatchdog>(Seconds(0.2), 0, 1, "host", nullptr,
                                                       log.abort_action(), Seconds(20));
  watchdog->add_fire_hook(
      [&](const std::string&, const std::vector<CollectiveRecord>&) { fired.set_value(); });
  watchdog->start(collective(world, 1, 4));
  ASSERT_EQ(fired.get_future().wait_for(kBound), std::future_status::ready);
  const auto destroying = std::chrono::steady_clock::now();
  watchdog.reset();
  EXPECT_LT(Seconds(std::chrono::steady_clock::now() - destroying).count(), 10.0);
  std::lock_guard<std::mutex> lock(log.mu);
  EXPECT_THAT(log.events, ElementsAre("abort"));
}

TEST(CollectiveWatchdogFire, DefaultGraceIsAQuarterOfTheTimeoutWithinHalfASecondToFiveSeconds) {
  EXPECT_DOUBLE_EQ(CollectiveWatchdog::default_grace(Seconds(1)).count(), 0.5);
  EXPECT_DOUBLE_EQ(CollectiveWatchdog::default_grace(Seconds(8)).count(), 2.0);
  EXPECT_DOUBLE_EQ(CollectiveWatchdog::default_grace(Seconds(600)).count(), 5.0);
  CollectiveWatchdog watchdog(Seconds(8), 0, 1, "host", nullptr, [](const std::string&) {});
  EXPECT_DOUBLE_EQ(watchdog.grace_seconds(), 2.0);
}

}  // namespace
}  // namespace ptrain
