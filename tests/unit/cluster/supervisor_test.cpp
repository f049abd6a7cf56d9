// The supervisor's pieces without a coordinator: hang triage from hand-built HANG reports (every
// expected line worked out by hand from the rules in cluster/hang_triage.h), the verdict on a
// command's wait status, and the job command's session (its members found by a /proc scan
// written here, independent of cluster/job_process.cpp).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cluster/hang_triage.h"
#include "cluster/job_process.h"
#include "cluster/supervisor.h"
#include "test_support.h"

extern char** environ;

namespace ptrain {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// ------------------------------------------------------------------------------ hang triage

struct Collective {
  std::string comm = "world", op = "all_reduce";
  uint64_t seq = 0;
  int64_t step = -1;  // -1: left out of the report
  bool running = false;
  double started = 0;  // 0: 100 s plus the record's index
};

Collective done(uint64_t seq, int64_t step, const std::string& comm = "world") {
  return {comm, "all_reduce", seq, step, false};
}
Collective waiting(uint64_t seq, int64_t step, const std::string& comm = "world") {
  return {comm, "all_reduce", seq, step, true};
}

// A rank's HANG event as the coordinator stores it (ReportEventRequest.HANG's message).
v1::Event hang_event(int rank, const std::vector<Collective>& recent,
                     const std::string& kind = "hang") {
  nlohmann::json records = nlohmann::json::array();
  double t = 100;
  for (const Collective& c : recent) {
    const double started = c.started > 0 ? c.started : t;
    nlohmann::json r = {{"comm", c.comm},     {"op", c.op},
                        {"seq", c.seq},       {"bytes", 4096},
                        {"started", started}, {"finished", c.running ? 0.0 : started + 0.5}};
    if (c.step >= 0) r["step"] = c.step;
    records.push_back(r);
    t += 1;
  }
  v1::Event event;
  event.set_kind(kind);
  event.set_severity("error");
  event.set_attempt(1);
  event.set_rank(rank);
  event.set_message(nlohmann::json{{"report", "watchdog fired"}, {"recent", records}}.dump());
  return event;
}

v1::RankHealth health(int rank, double age_s, int64_t step, bool lost) {
  v1::RankHealth h;
  h.set_rank(rank);
  h.set_heartbeat_age_s(age_s);
  h.set_step(step);
  h.set_lost(lost);
  return h;
}

TEST(RankRanges, RunsOfConsecutiveRanks) {
  EXPECT_EQ(rank_ranges({5, 0, 1, 2, 7, 8, 3}), "0-3, 5, 7-8");
  EXPECT_EQ(rank_ranges({4}), "4");
  EXPECT_EQ(rank_ranges({2, 1, 2, 1}), "1-2");
  EXPECT_EQ(rank_ranges({0, 2, 4}), "0, 2, 4");
  EXPECT_EQ(rank_ranges({}), "");
}

TEST(HangTriage, ASilentRankFellBehind) {
  // Ranks 0 and 1 wait in world all_reduce #57 (step 10); rank 2 sent nothing.
  const std::vector<v1::Event> events = {
      hang_event(0, {done(56, 9), waiting(57, 10)}),
      hang_event(1, {done(55, 9), done(56, 9), waiting(57, 10)}),
  };
  const std::vector<v1::RankHealth> ranks = {health(0, 0.5, 9, false), health(1, 0.7, 9, false),
                                             health(2, 42.46, 9, false)};
  const HangTriage triage = triage_hang(events, 3, ranks);
  EXPECT_TRUE(triage.found);
  EXPECT_EQ(triage.summary,
            "rank 2 fell behind: never entered world all_reduce #57 (step 10), which ranks 0-1 "
            "waited in");
  EXPECT_THAT(triage.details,
              ElementsAre("ranks 0-1 wait in world all_reduce #57 (step 10)",
                          "rank 2 sent no report (stopped, dead, or busy outside collectives): "
                          "its last heartbeat 42.5 s before at step 9"));

  // A lost rank says so; without its health, only that it sent nothing.
  EXPECT_EQ(triage_hang(events, 3, {health(2, 75, 8, true)}).details.at(1),
            "rank 2 sent no report (stopped, dead, or busy outside collectives): its last "
            "heartbeat 75.0 s before at step 8, lost");
  EXPECT_EQ(triage_hang(events, 3, {}).details.at(1),
            "rank 2 sent no report (stopped, dead, or busy outside collectives)");
}

TEST(HangTriage, ARankWhoseNewestIsEarlierNeverEnteredIt) {
  // Rank 2 finished #56 on 'world' and never entered #57; its higher sequence numbers on another
  // communicator do not count.
  const std::vector<v1::Event> events = {
      hang_event(0, {done(56, 9), waiting(57, 10)}),
      hang_event(1, {done(56, 9), waiting(57, 10)}),
      hang_event(2, {done(55, 9), done(56, 9), done(80, 9, "tp")}),
  };
  const HangTriage triage = triage_hang(events, 3, {});
  EXPECT_TRUE(triage.found);
  EXPECT_EQ(triage.summary,
            "rank 2 fell behind: never entered world all_reduce #57 (step 10), which ranks 0-1 "
            "waited in");
  EXPECT_THAT(triage.details, ElementsAre("ranks 0-1 wait in world all_reduce #57 (step 10)",
                                          "rank 2 never entered world all_reduce #57 (step 10): "
                                          "its newest on 'world' is world all_reduce #56 (step "
                                          "9) (finished)"));
}

TEST(HangTriage, EveryRankWaitingInTheSameCollectiveLeavesNoneBehind) {
  const std::vector<v1::Event> events = {
      hang_event(2, {done(56, 9), waiting(57, 10)}),
      hang_event(0, {done(56, 9), waiting(57, 10)}),
      hang_event(1, {waiting(57, 10)}),
  };
  const HangTriage triage = triage_hang(events, 3, {});
  EXPECT_TRUE(triage.found);
  EXPECT_EQ(triage.summary,
            "ranks 0-2 all wait in world all_reduce #57 (step 10): none fell behind (the "
            "collective itself or the network hangs)");
  EXPECT_THAT(triage.details, ElementsAre("ranks 0-2 wait in world all_reduce #57 (step 10)"));
}

TEST(HangTriage, ARankPastItIsNotBehind) {
  // Rank 2 finished #57 and waits in nothing: it is not the one that fell behind.
  const std::vector<v1::Event> events = {
      hang_event(0, {waiting(57, 10)}),
      hang_event(1, {waiting(57, 10)}),
      hang_event(2, {done(56, 9), done(57, 10)}),
  };
  const HangTriage triage = triage_hang(events, 3, {});
  EXPECT_EQ(triage.summary,
            "ranks 0-1 all wait in world all_reduce #57 (step 10): none fell behind (the "
            "collective itself or the network hangs)");
  EXPECT_THAT(triage.details, ElementsAre("ranks 0-1 wait in world all_reduce #57 (step 10)",
                                          "rank 2 is past it or elsewhere: waiting in nothing"));
}

TEST(HangTriage, SeveralRanksBehindAreOneRange) {
  // World of 5: ranks 0, 1 and 4 wait in #57; rank 2 never entered it, rank 3 sent nothing.
  const std::vector<v1::Event> events = {
      hang_event(0, {waiting(57, 10)}),
      hang_event(1, {waiting(57, 10)}),
      hang_event(4, {waiting(57, 10)}),
      hang_event(2, {done(56, 9)}),
  };
  const HangTriage triage = triage_hang(events, 5, {});
  EXPECT_EQ(triage.summary,
            "ranks 2-3 fell behind: never entered world all_reduce #57 (step 10), which ranks "
            "0-1, 4 waited in");
  EXPECT_THAT(triage.details,
              ElementsAre("ranks 0-1, 4 wait in world all_reduce #57 (step 10)",
                          "rank 2 never entered world all_reduce #57 (step 10): its newest on "
                          "'world' is world all_reduce #56 (step 9) (finished)",
                          "rank 3 sent no report (stopped, dead, or busy outside collectives)"));
}

TEST(HangTriage, MalformedReportsAndOtherEventsAreIgnored) {
  std::vector<v1::Event> events = {hang_event(0, {waiting(57, 10)})};
  v1::Event text = hang_event(1, {waiting(57, 10)});
  text.set_message("collective watchdog: all_reduce #57 did not complete");  // an older rank's
  events.push_back(text);
  v1::Event no_recent = hang_event(1, {});
  no_recent.set_message(R"({"report": "x", "recent": 3})");
  events.push_back(no_recent);
  events.push_back(hang_event(1, {waiting(57, 10)}, "rank_lost"));  // not a hang report
  events.push_back(hang_event(-1, {waiting(57, 10)}));              // the job, not a rank
  const HangTriage triage = triage_hang(events, 2, {});
  EXPECT_TRUE(triage.found);
  EXPECT_EQ(triage.summary,
            "rank 1 fell behind: never entered world all_reduce #57 (step 10), which rank 0 "
            "waited in");
  EXPECT_THAT(triage.details,
              ElementsAre("rank 0 waits in world all_reduce #57 (step 10)",
                          "rank 1 sent no report (stopped, dead, or busy outside collectives)"));

  // Nothing but those: no finding at all.
  events.erase(events.begin());
  const HangTriage none = triage_hang(events, 2, {});
  EXPECT_FALSE(none.found);
  EXPECT_EQ(none.summary, "");
  EXPECT_TRUE(none.details.empty());
}

TEST(HangTriage, OnlyEachRanksFirstReportCounts) {
  const std::vector<v1::Event> events = {
      hang_event(0, {waiting(57, 10)}), hang_event(1, {done(56, 9)}),
      hang_event(1, {waiting(57, 10)}),  // a second report: ignored
  };
  EXPECT_EQ(triage_hang(events, 2, {}).summary,
            "rank 1 fell behind: never entered world all_reduce #57 (step 10), which rank 0 "
            "waited in");
}

TEST(HangTriage, TheCollectiveMostRanksWaitInWinsTheLowestOnATie) {
  // Ranks 0-1 in #58, 2-3 in #57: a tie of two, so #57 is the one; 0-1 are past it.
  const std::vector<v1::Event> events = {
      hang_event(0, {done(57, 10), waiting(58, 10)}),
      hang_event(1, {done(57, 10), waiting(58, 10)}),
      hang_event(2, {waiting(57, 10)}),
      hang_event(3, {waiting(57, 10)}),
  };
  HangTriage triage = triage_hang(events, 4, {});
  EXPECT_THAT(triage.details,
              ElementsAre("ranks 2-3 wait in world all_reduce #57 (step 10)",
                          "rank 0 is past it or elsewhere: waiting in world all_reduce #58 (step "
                          "10)",
                          "rank 1 is past it or elsewhere: waiting in world all_reduce #58 (step "
                          "10)"));
  // A third rank in #58 outweighs them; the oldest running collective of each rank is its own,
  // and a record without a step is named without one.
  std::vector<v1::Event> more = events;
  more.push_back(hang_event(4, {waiting(58, -1), waiting(59, -1)}));
  triage = triage_hang(more, 5, {});
  EXPECT_EQ(triage.details.at(0), "ranks 0-1, 4 wait in world all_reduce #58 (step 10)");
  EXPECT_EQ(triage.summary,
            "ranks 2-3 fell behind: never entered world all_reduce #58 (step 10), which ranks "
            "0-1, 4 waited in");
  EXPECT_EQ(triage.details.at(1),
            "rank 2 never entered world all_reduce #58 (step 10): its newest on 'world' is world "
            "all_reduce #57 (step 10) (running)");
  more.push_back(hang_event(5, {waiting(3, -1, "pp")}));
  EXPECT_EQ(triage_hang(more, 6, {}).details.back(),
            "rank 5 never entered world all_reduce #58 (step 10): its newest on 'world' is none");
}

// Hybrid sharding on 4 ranks: shard groups {0,1} {2,3} (the first split of world), replica
// groups {0,2} {1,3} (the second). Rank 1 is stopped: rank 0 waits for it in its shard group,
// rank 3 in its replica group, rank 2 in the other replica group (for rank 0, which is busy). No
// reporting rank is a member of another's group, so none "never entered" anything: the silent rank
// is the suspect, and the summary says so without naming a collective it skipped.
TEST(HangTriage, SplitGroupsJudgeOnlyTheirMembers) {
  const std::string shard0 = "world/split1(color=0)", replica0 = "world/split2(color=0)",
                    replica1 = "world/split2(color=1)";
  const std::vector<v1::Event> events = {
      hang_event(0, {done(40, 12), done(24, 12, shard0), waiting(25, 12, shard0)}),
      hang_event(2, {done(40, 12), done(30, 12, replica0), waiting(31, 12, replica0)}),
      hang_event(3, {done(40, 12), done(30, 12, replica1), waiting(31, 12, replica1)})};
  const HangTriage triage = triage_hang(events, 4, {});
  EXPECT_EQ(triage.summary,
            "rank 1 sent no report (stopped, dead, or busy outside collectives) while ranks 0, "
            "2-3 wait in collectives (world/split1(color=0) all_reduce #25 (step 12) among them)");
  for (const std::string& line : triage.details)
    EXPECT_THAT(line, ::testing::Not(HasSubstr("never entered"))) << line;
}

// Rank 2 was stopped inside the collective: every rank entered it, but its heartbeats stopped
// while the others' went on. It is named; with fresh heartbeats everywhere, nobody is.
TEST(HangTriage, ARankWhoseHeartbeatsStoppedInsideTheCollectiveIsNamed) {
  std::vector<v1::Event> events;
  for (int rank = 0; rank < 3; ++rank)
    events.push_back(hang_event(rank, {done(377, 31), waiting(378, 31)}));
  const HangTriage triage = triage_hang(
      events, 3, {health(0, 0.4, 30, false), health(1, 0.6, 30, false), health(2, 5.5, 30, false)});
  EXPECT_EQ(triage.summary,
            "rank 2 stopped heartbeating (up to 5.5 s before) while ranks 0-2 all wait in world "
            "all_reduce #378 (step 31): the likely cause (a stopped process, a hung host)");
  const HangTriage fresh = triage_hang(
      events, 3, {health(0, 0.4, 30, false), health(1, 0.6, 30, false), health(2, 0.9, 30, false)});
  EXPECT_THAT(fresh.summary, HasSubstr("none fell behind"));
}

Collective at(Collective c, double started) {
  c.started = started;
  return c;
}

TEST(HangTriage, TheHangIsDatedFromTheFirstRankToWaitInIt) {
  // Rank 1 entered #57 first (at 1000.25); rank 2's earlier #57 is a finished one of a rank not
  // waiting, and rank 0's at 900 is on another communicator: neither counts.
  const std::vector<v1::Event> events = {
      hang_event(0, {at(done(57, 10, "tp"), 900), at(waiting(57, 10), 1000.5)}),
      hang_event(1, {at(done(56, 9), 999), at(waiting(57, 10), 1000.25)}),
      hang_event(2, {at(done(56, 9), 998), at(done(57, 10), 990)}),
      hang_event(3, {at(done(56, 9), 997)}),
  };
  EXPECT_DOUBLE_EQ(triage_hang(events, 4, {}).stuck_since_unix_s, 1000.25);
  // Nothing running, or no report: no date.
  EXPECT_DOUBLE_EQ(triage_hang({events[3]}, 4, {}).stuck_since_unix_s, 0);
  EXPECT_DOUBLE_EQ(triage_hang({}, 4, {}).stuck_since_unix_s, 0);
}

TEST(HangTriage, ReportsWithNothingRunning) {
  const std::vector<v1::Event> events = {hang_event(0, {done(56, 9)}),
                                         hang_event(1, {done(56, 9)})};
  const HangTriage triage = triage_hang(events, 3, {});
  EXPECT_TRUE(triage.found);
  EXPECT_EQ(triage.summary, "ranks 0-1 reported a hang but none was inside a collective");
  EXPECT_TRUE(triage.details.empty());
}

// ------------------------------------------------------------------------------ the verdict

TEST(SupervisorVerdict, ExitCodesAndSignals) {
  Supervisor::Verdict v = Supervisor::judge_exit(W_EXITCODE(0, 0));
  EXPECT_EQ(v.cause, "finished");
  EXPECT_FALSE(v.retry);
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_EQ(v.message, "the command ended with exit code 0");

  v = Supervisor::judge_exit(W_EXITCODE(2, 0));
  EXPECT_EQ(v.cause, "bad_input");
  EXPECT_FALSE(v.retry);
  EXPECT_EQ(v.exit_code, 2);
  EXPECT_THAT(v.message, HasSubstr("exit code 2 (bad input"));

  v = Supervisor::judge_exit(W_EXITCODE(4, 0));
  EXPECT_EQ(v.cause, "requeue");
  EXPECT_FALSE(v.retry);
  EXPECT_EQ(v.exit_code, 4);
  EXPECT_THAT(v.message, HasSubstr("exit code 4 (stopped for a requeue"));

  v = Supervisor::judge_exit(W_EXITCODE(3, 0));
  EXPECT_EQ(v.cause, "runtime_failure");
  EXPECT_TRUE(v.retry);
  EXPECT_EQ(v.exit_code, 3);
  EXPECT_EQ(v.message, "the command ended with exit code 3");

  for (int code : {1, 5, 86, 137, 255}) {
    v = Supervisor::judge_exit(W_EXITCODE(code, 0));
    EXPECT_EQ(v.cause, "exit") << code;
    EXPECT_TRUE(v.retry) << code;
    EXPECT_EQ(v.exit_code, 3) << code;  // if the supervisor stops here, it gave up
    EXPECT_EQ(v.message, "the command ended with exit code " + std::to_string(code));
  }

  v = Supervisor::judge_exit(W_EXITCODE(0, SIGKILL));
  EXPECT_EQ(v.cause, "signal");
  EXPECT_TRUE(v.retry);
  EXPECT_EQ(v.exit_code, 3);
  EXPECT_EQ(v.message, "the command ended with killed by signal 9 (Killed)");
  v = Supervisor::judge_exit(W_EXITCODE(0, SIGSEGV));
  EXPECT_EQ(v.cause, "signal");
  EXPECT_TRUE(v.retry);
}

// ------------------------------------------------------------------------------ the job's session

// Waits for `condition`, looking every 10 ms, at most `timeout_s`; answers whether it held.
template <typename Condition>
bool eventually(Condition condition, double timeout_s = 10) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

struct ProcStat {
  bool alive = false;  // exists and is not a zombie
  std::string comm;
  pid_t pgrp = -1, session = -1;
};

// /proc/PID/stat, read here: "pid (comm) state ppid pgrp session ...".
ProcStat proc_stat(pid_t pid) {
  ProcStat s;
  std::ifstream file("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const size_t open = text.find('('), close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos) return s;
  s.comm = text.substr(open + 1, close - open - 1);
  std::istringstream rest(text.substr(close + 1));
  std::string state;
  long ppid = 0, pgrp = 0, session = 0;
  if (!(rest >> state >> ppid >> pgrp >> session)) return s;
  s.alive = state != "Z" && state != "X";
  s.pgrp = static_cast<pid_t>(pgrp);
  s.session = static_cast<pid_t>(session);
  return s;
}

// The live processes of session `sid`, sorted.
std::vector<pid_t> session_members(pid_t sid) {
  std::vector<pid_t> found;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(name));
    const ProcStat s = proc_stat(pid);
    if (s.alive && s.session == sid) found.push_back(pid);
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::vector<pid_t> sorted(std::vector<pid_t> pids) {
  std::sort(pids.begin(), pids.end());
  return pids;
}

// Ends `job`'s command: polls until it has ended; false after `timeout_s`.
bool wait_ended(JobProcess& job, double timeout_s = 10) {
  return eventually([&] { return job.poll(); }, timeout_s);
}

// A process this test starts itself, outside any JobProcess (in the test's own session).
pid_t spawn_outsider() {
  char sh[] = "/bin/sh", c[] = "-c", script[] = "exec sleep 60";
  char* argv[] = {sh, c, script, nullptr};
  pid_t pid = -1;
  EXPECT_EQ(posix_spawn(&pid, "/bin/sh", nullptr, nullptr, argv, environ), 0);
  return pid;
}

TEST(JobProcess, KillAllEndsEveryProcessGroupOfTheSession) {
  if (access("/bin/bash", X_OK) != 0)
    GTEST_SKIP() << "needs /bin/bash (dash has no job control "
                    "without a terminal)";
  const pid_t outsider = spawn_outsider();
  ASSERT_GT(outsider, 0);
  // `set -m`: each background job in a process group of its own, as Open MPI starts its ranks;
  // the subshell's sleep is orphaned (reparented to this process, the subreaper).
  JobProcess job({"/bin/bash", "-c", "set -m; sleep 60 & sleep 60 & (sleep 60 &); wait"}, {});
  const pid_t sid = job.pid();
  EXPECT_EQ(proc_stat(sid).session, sid);  // a session of its own
  // bash and its three sleeps (the subshell gone).
  ASSERT_TRUE(eventually([&] {
    const std::vector<pid_t> members = session_members(sid);
    return members.size() == 4 && std::count_if(members.begin(), members.end(), [](pid_t p) {
                                    return proc_stat(p).comm == "sleep";
                                  }) == 3;
  })) << "the job's processes did not start";
  const std::vector<pid_t> members = session_members(sid);
  EXPECT_EQ(sorted(job.members()), members);
  std::vector<pid_t> groups;
  for (pid_t p : members) groups.push_back(proc_stat(p).pgrp);
  std::sort(groups.begin(), groups.end());
  EXPECT_EQ(std::unique(groups.begin(), groups.end()) - groups.begin(), 4)
      << "the background jobs should be in process groups of their own";
  EXPECT_FALSE(job.poll());

  EXPECT_TRUE(job.kill_all(10));
  EXPECT_TRUE(job.members().empty());
  for (pid_t p : members) EXPECT_FALSE(proc_stat(p).alive) << "pid " << p << " survived";
  EXPECT_TRUE(job.poll());
  EXPECT_TRUE(job.ended());
  ASSERT_TRUE(WIFSIGNALED(job.wait_status()));
  EXPECT_EQ(WTERMSIG(job.wait_status()), SIGKILL);
  EXPECT_EQ(JobProcess::describe(job.wait_status()), "killed by signal 9 (Killed)");
  EXPECT_EQ(JobProcess::shell_code(job.wait_status()), 137);

  // The process outside the session lives on.
  EXPECT_TRUE(proc_stat(outsider).alive);
  EXPECT_NE(proc_stat(outsider).session, sid);
  ASSERT_EQ(kill(outsider, SIGKILL), 0);
  int status = 0;
  EXPECT_EQ(waitpid(outsider, &status, 0), outsider);
}

TEST(JobProcess, ExitCodesAsTheShellSaysThem) {
  JobProcess job({"/bin/sh", "-c", "exit 3"}, {});
  ASSERT_TRUE(wait_ended(job));
  ASSERT_TRUE(WIFEXITED(job.wait_status()));
  EXPECT_EQ(WEXITSTATUS(job.wait_status()), 3);
  EXPECT_EQ(JobProcess::describe(job.wait_status()), "exit code 3");
  EXPECT_EQ(JobProcess::shell_code(job.wait_status()), 3);
  EXPECT_EQ(Supervisor::judge_exit(job.wait_status()).cause, "runtime_failure");

  // The verdicts on real wait statuses, as on the macros' above.
  JobProcess finished({"/bin/sh", "-c", "exit 0"}, {});
  ASSERT_TRUE(wait_ended(finished));
  EXPECT_EQ(Supervisor::judge_exit(finished.wait_status()).cause, "finished");
  JobProcess bad({"/bin/sh", "-c", "exit 2"}, {});
  ASSERT_TRUE(wait_ended(bad));
  EXPECT_EQ(Supervisor::judge_exit(bad.wait_status()).cause, "bad_input");
  JobProcess killed({"/bin/sh", "-c", "kill -9 $$"}, {});
  ASSERT_TRUE(wait_ended(killed));
  EXPECT_EQ(JobProcess::shell_code(killed.wait_status()), 137);
  const Supervisor::Verdict v = Supervisor::judge_exit(killed.wait_status());
  EXPECT_EQ(v.cause, "signal");
  EXPECT_TRUE(v.retry);
}

TEST(JobProcess, AProgramThatCannotRunIsAUserError) {
  EXPECT_THAT(testing::user_error([] { JobProcess({"ptrain-no-such-program"}, {}); }),
              HasSubstr("cannot run 'ptrain-no-such-program'"));
  const std::string script = testing::fresh_dir().string() + "/not-executable.sh";
  std::ofstream(script) << "#!/bin/sh\nexit 0\n";
  EXPECT_THAT(testing::user_error([&] { JobProcess({script}, {}); }),
              HasSubstr("cannot run '" + script + "'"));
  EXPECT_THAT(testing::user_error([] { JobProcess({}, {}); }), HasSubstr("no command to run"));
}

TEST(JobProcess, TheCommandGetsTheLaunchEnvironment) {
  const std::string dir = testing::fresh_dir().string();
  ASSERT_EQ(setenv("PTRAIN_TEST_VAR", "from-the-parent", 1), 0);
  ASSERT_EQ(setenv("PTRAIN_TEST_KEPT", "kept", 1), 0);
  // Written whole, then renamed: the file is there complete or not at all.
  JobProcess job(
      {"/bin/sh", "-c",
       "printf '%s|%s|%s' \"$PTRAIN_TEST_VAR\" \"$PTRAIN_TEST_KEPT\" \"$PTRAIN_TEST_NEW\" "
       "> \"$OUT.tmp\" && mv \"$OUT.tmp\" \"$OUT\""},
      {{"PTRAIN_TEST_VAR", "from-the-launch"},
       {"PTRAIN_TEST_NEW", "new"},
       {"OUT", dir + "/env.txt"}});
  unsetenv("PTRAIN_TEST_VAR");
  unsetenv("PTRAIN_TEST_KEPT");
  ASSERT_TRUE(eventually([&] { return std::filesystem::exists(dir + "/env.txt"); }));
  std::ifstream file(dir + "/env.txt");
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "from-the-launch|kept|new");
  ASSERT_TRUE(wait_ended(job));
  EXPECT_EQ(JobProcess::describe(job.wait_status()), "exit code 0");
}

}  // namespace
}  // namespace ptrain
