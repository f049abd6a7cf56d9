// Unit tests for the coordinator's SQLite store (cluster/coordinator_store.h). Databases are real
// files, closed and reopened; what the store wrote is also read by independent readers (a
// connection of the sqlite3 C API, and the sqlite3 shell), and a writer killed by SIGKILL stands
// in for a crashed coordinator.
#include "cluster/coordinator_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <list>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "test_support.h"

namespace ptrain {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

using ::ptrain::testing::fresh_dir;
using ::ptrain::testing::user_error;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string db_path() {
  return (fresh_dir() / "coordinator.db").string();
}

// ------------------------------------------------------------------ independent readers

// The first column of the first row of `sql`, through a connection of our own ("NULL" for null).
std::string sql_value(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* statement = nullptr;
  std::string value = "<no row>";
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &statement, nullptr) == SQLITE_OK &&
      sqlite3_step(statement) == SQLITE_ROW) {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(statement, 0));
    value = text == nullptr ? "NULL" : text;
  } else {
    ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db);
  }
  sqlite3_finalize(statement);
  sqlite3_close(db);
  return value;
}

void sql_exec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* error = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error), SQLITE_OK)
      << sql << ": " << (error != nullptr ? error : "");
  sqlite3_free(error);
  sqlite3_close(db);
}

constexpr const char* kShell = "/usr/bin/sqlite3";

// What the sqlite3 shell prints for `sql` on `path`, without the last newline.
std::string shell(const std::string& path, const std::string& sql) {
  const std::string command = std::string(kShell) + " '" + path + "' '" + sql + "' 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "cannot run " << command;
    return "";
  }
  std::string out;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof(buffer), pipe)) > 0;) out.append(buffer, n);
  EXPECT_EQ(pclose(pipe), 0) << command << ": " << out;
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// ------------------------------------------------------------------------- messages

v1::Event event(const std::string& kind, const std::string& message, int rank = -1) {
  v1::Event event;
  event.set_unix_s(1.7e9 + rank);
  event.set_severity("info");
  event.set_kind(kind);
  event.set_attempt(1);
  event.set_rank(rank);
  event.set_message(message);
  return event;
}

v1::Checkpoint checkpoint(int64_t step, const std::string& dir) {
  v1::Checkpoint checkpoint;
  checkpoint.set_step(step);
  checkpoint.set_dir(dir);
  checkpoint.set_bytes(step * 1000);
  checkpoint.set_files(5);
  checkpoint.set_world(4);
  checkpoint.set_attempt(1);
  checkpoint.set_committed_unix_s(1.7e9 + static_cast<double>(step));
  return checkpoint;
}

v1::MetricPoint metric(int64_t step, double loss, double eval_loss = kNaN) {
  v1::MetricPoint point;
  point.set_step(step);
  point.set_unix_s(1.7e9 + static_cast<double>(step));
  point.set_loss(loss);
  point.set_eval_loss(eval_loss);
  point.set_learning_rate(3e-4);
  point.set_tokens_per_second(12345.5);
  point.set_mfu(0.41);
  return point;
}

v1::RankHealth rank_health(int rank, int64_t step) {
  v1::RankHealth health;
  health.set_rank(rank);
  health.set_host("node" + std::to_string(rank / 2));
  health.set_pid(1000 + rank);
  health.set_step(step);
  health.set_heartbeat_age_s(0.25);
  health.set_rss_bytes(int64_t{3} << 30);
  health.set_lost(rank == 3);
  health.set_heartbeats(step * 2);
  return health;
}

v1::Command command(int64_t id, v1::Command::Kind kind, const std::string& reason) {
  v1::Command command;
  command.set_id(id);
  command.set_kind(kind);
  command.set_reason(reason);
  command.set_requested_unix_s(1.7e9 + static_cast<double>(id));
  return command;
}

template <typename Message>
std::vector<std::string> texts(const std::vector<Message>& messages) {
  std::vector<std::string> out;
  for (const Message& message : messages) out.push_back(message.ShortDebugString());
  return out;
}

std::vector<int64_t> steps_of(const std::vector<v1::MetricPoint>& points) {
  std::vector<int64_t> steps;
  for (const v1::MetricPoint& point : points) steps.push_back(point.step());
  return steps;
}

// The whole snapshot as text (NaN prints as "nan"), so two compare with a readable difference.
std::string describe(const CoordinatorStore::Snapshot& s) {
  std::ostringstream out;
  out << "job " << s.job_id << " " << s.config_hash << "\nprogress "
      << s.progress.ShortDebugString() << "\neval_loss " << s.eval_loss << "\nnext_command_id "
      << s.next_command_id;
  for (const auto& m : s.attempts) out << "\nattempt " << m.ShortDebugString();
  for (const auto& m : s.ranks) out << "\nrank " << m.ShortDebugString();
  for (const auto& m : s.checkpoints) out << "\ncheckpoint " << m.ShortDebugString();
  for (const auto& m : s.commands) out << "\ncommand " << m.ShortDebugString();
  return out.str();
}

// Counts the fsyncs SQLite asks of its files: while it lives, the default VFS is the system's with
// every file's xSync counted. (Files of one VFS differ in their methods: a database's lock, a
// WAL's does not; each gets a counting copy of its own.)
class SyncCounter {
 public:
  SyncCounter() {
    system_ = sqlite3_vfs_find(nullptr);
    vfs_ = *system_;
    vfs_.zName = "ptrain-sync-counter";
    vfs_.xOpen = &SyncCounter::open;
    EXPECT_EQ(sqlite3_vfs_register(&vfs_, 1), SQLITE_OK);
    syncs_ = 0;
  }
  ~SyncCounter() {
    sqlite3_vfs_register(system_, 1);
    sqlite3_vfs_unregister(&vfs_);
  }
  // The syncs since the last call.
  int take() { return std::exchange(syncs_, 0); }

 private:
  struct Methods {
    const sqlite3_io_methods* system;
    sqlite3_io_methods counting;
  };

  static int open(sqlite3_vfs*, const char* name, sqlite3_file* file, int flags, int* out) {
    const int code = system_->xOpen(system_, name, file, flags, out);
    if (code != SQLITE_OK || file->pMethods == nullptr) return code;
    auto same = [&](const Methods& m) { return m.system == file->pMethods; };
    auto found = std::find_if(methods_.begin(), methods_.end(), same);
    if (found == methods_.end()) {
      Methods& added = methods_.emplace_back(Methods{file->pMethods, *file->pMethods});
      added.counting.xSync = &SyncCounter::sync;
      found = std::prev(methods_.end());
    }
    file->pMethods = &found->counting;
    return code;
  }

  static int sync(sqlite3_file* file, int flags) {
    ++syncs_;
    for (const Methods& m : methods_)
      if (&m.counting == file->pMethods) return m.system->xSync(file, flags);
    return SQLITE_IOERR_FSYNC;
  }

  static inline sqlite3_vfs* system_ = nullptr;
  static inline sqlite3_vfs vfs_{};
  static inline std::list<Methods> methods_;  // stable addresses
  static inline int syncs_ = 0;
};

// ---------------------------------------------------------------------- the snapshot

TEST(CoordinatorStore, NewDatabaseLoadsAnEmptyJob) {
  CoordinatorStore store(db_path());
  const CoordinatorStore::Snapshot snapshot = store.load();
  EXPECT_EQ(snapshot.job_id, "");
  EXPECT_TRUE(std::isnan(snapshot.eval_loss));
  EXPECT_TRUE(snapshot.attempts.empty());
  EXPECT_TRUE(snapshot.ranks.empty());
  EXPECT_TRUE(snapshot.checkpoints.empty());
  EXPECT_TRUE(snapshot.commands.empty());
  EXPECT_EQ(snapshot.next_command_id, 1);
  EXPECT_TRUE(store.metrics(0).empty());
  EXPECT_TRUE(store.events(0, 0).empty());
}

TEST(CoordinatorStore, InMemoryDatabaseHoldsTheJob) {
  CoordinatorStore store(":memory:");
  store.save_job("job", "hash");
  store.save_checkpoint(checkpoint(100, "/ckpt/100"));
  EXPECT_EQ(store.load().job_id, "job");
  EXPECT_EQ(store.checkpoints().size(), 1u);
}

TEST(CoordinatorStore, SnapshotSurvivesClosingAndReopening) {
  const std::string path = db_path();
  // What was written, as the snapshot should hold it: built from the inputs, not from the store.
  CoordinatorStore::Snapshot expected;
  expected.job_id = "llama-7b 'sft' \"run\"; DROP TABLE job; --";
  expected.config_hash = "0123456789abcdef";
  expected.progress.set_step(1200);
  expected.progress.set_total_steps(5000);
  expected.progress.set_loss(2.25);
  expected.progress.set_grad_norm(kNaN);
  expected.progress.set_epoch(3);
  expected.progress.set_step_seconds(0.75);
  expected.eval_loss = 2.5;

  v1::Attempt first;
  first.set_number(1);
  first.set_launch_id("launch-a");
  first.set_world(4);
  first.set_started_unix_s(1.7e9);
  first.set_end_reason("lost");
  v1::Attempt second = first;
  second.set_number(2);
  second.set_launch_id("launch-b");
  second.clear_end_reason();
  second.set_first_step(1000);
  {
    CoordinatorStore store(path);
    store.save_job(expected.job_id, expected.config_hash);
    store.save_progress(expected.progress, expected.eval_loss);
    store.save_attempt(first);
    store.save_attempt(second);
    first.set_end_message("rank 3 stopped sending heartbeats");  // replaces attempt 1
    store.save_attempt(first);
    store.save_ranks(1, {rank_health(0, 900), rank_health(1, 900)});
    store.save_ranks(2, {rank_health(3, 1200), rank_health(1, 1200), rank_health(0, 1150)});
    store.save_ranks(2, {rank_health(0, 1200), rank_health(2, 1190)});
    store.save_checkpoint(checkpoint(100, "/ckpt/step-100"));
    store.save_checkpoint(checkpoint(200, "/ckpt/step-200"));
    store.save_checkpoint(checkpoint(200, "/ckpt/late-duplicate"));  // the first record stays
    store.save_command(command(1, v1::Command::CHECKPOINT, "user"));
    store.save_command(command(2, v1::Command::STOP, "preempted"));
    store.save_command(command(3, v1::Command::CHECKPOINT, "dashboard"));
    store.finish_command(1);
    store.finish_command(3);
  }
  expected.attempts = {first, second};
  expected.ranks = {rank_health(0, 1200), rank_health(1, 1200), rank_health(2, 1190),
                    rank_health(3, 1200)};
  expected.checkpoints = {checkpoint(200, "/ckpt/step-200"), checkpoint(100, "/ckpt/step-100")};
  expected.commands = {command(2, v1::Command::STOP, "preempted")};
  expected.next_command_id = 4;

  CoordinatorStore reopened(path);
  EXPECT_EQ(describe(reopened.load()), describe(expected));
  EXPECT_EQ(texts(reopened.checkpoints()), texts(expected.checkpoints));
  // Command ids are never reused, even once every command is done.
  reopened.finish_command(2);
  EXPECT_TRUE(reopened.load().commands.empty());
  EXPECT_EQ(reopened.load().next_command_id, 4);
}

TEST(CoordinatorStore, ProgressWithoutEvaluationLoadsNaNEvalLoss) {
  const std::string path = db_path();
  {
    CoordinatorStore store(path);
    v1::Progress progress;
    progress.set_step(7);
    store.save_progress(progress, kNaN);
  }
  const CoordinatorStore::Snapshot snapshot = CoordinatorStore(path).load();
  EXPECT_EQ(snapshot.progress.step(), 7);
  EXPECT_TRUE(std::isnan(snapshot.eval_loss));
}

// ---------------------------------------------------------------------------- events

TEST(CoordinatorStore, EventsPageByIdOldestFirst) {
  const std::string path = db_path();
  const std::string awkward = "it's \"quoted\"; DROP TABLE events; -- \xc3\xa9t\xc3\xa9";
  {
    CoordinatorStore store(path);
    CoordinatorStore::Transaction transaction(store);
    for (int i = 1; i <= 1200; ++i) {
      v1::Event e = event("rank_registered", i == 7 ? awkward : "event " + std::to_string(i));
      store.append_event(e);
      ASSERT_EQ(e.id(), i);
    }
  }
  CoordinatorStore store(path);
  const auto ids = [](const std::vector<v1::Event>& events) {
    std::vector<int64_t> out;
    for (const v1::Event& e : events) out.push_back(e.id());
    return out;
  };
  const std::vector<v1::Event> first_page = store.events(0, 0);  // 0: a page of 100
  ASSERT_EQ(first_page.size(), 100u);
  EXPECT_EQ(first_page.front().id(), 1);
  EXPECT_EQ(first_page.back().id(), 100);
  EXPECT_EQ(first_page[6].message(), awkward);
  EXPECT_EQ(first_page[6].ShortDebugString(), [&] {
    v1::Event e = event("rank_registered", awkward);
    e.set_id(7);
    return e.ShortDebugString();
  }());
  EXPECT_THAT(ids(store.events(100, 3)), ElementsAre(101, 102, 103));
  EXPECT_EQ(store.events(0, 5000).size(), 1000u);  // at most 1000
  EXPECT_THAT(ids(store.events(0, -3)), ElementsAre(1));
  EXPECT_THAT(ids(store.events(1197, 10)), ElementsAre(1198, 1199, 1200));
  EXPECT_TRUE(store.events(1200, 10).empty());

  EXPECT_THAT(ids(store.recent_events(3)), ElementsAre(1198, 1199, 1200));
  EXPECT_TRUE(store.recent_events(0).empty());
  EXPECT_EQ(store.recent_events(5000).size(), 1200u);

  v1::Event later = event("attempt_started", "after reopening");
  store.append_event(later);
  EXPECT_EQ(later.id(), 1201);
}

// ---------------------------------------------------------------------------- metrics

double loss_at(int64_t step) {
  return 10.0 / (1.0 + static_cast<double>(step));
}

TEST(CoordinatorStore, MetricsKeepTheWholeJobAtAnEvenGrain) {
  const std::string path = db_path();
  constexpr int kMax = 64;
  constexpr int64_t kSteps = 1000;
  auto store = std::make_unique<CoordinatorStore>(path, kMax);
  for (int64_t step = 0; step < kSteps; ++step) {
    store->append_metric(metric(step, loss_at(step)));
    if (step % 97 == 0) {
      const std::vector<v1::MetricPoint> points = store->metrics(0);
      ASSERT_LE(points.size(), static_cast<size_t>(kMax)) << "after step " << step;
      ASSERT_EQ(points.back().step(), step);
    }
  }
  // The last step gets its evaluation, then its replacement without one keeps it.
  store->append_metric(metric(kSteps - 1, loss_at(kSteps - 1), 1.5));
  store->append_metric(metric(kSteps - 1, 0.125));
  store.reset();  // one coordinator per state file: this one stops before the next opens it

  store = std::make_unique<CoordinatorStore>(path, kMax);  // reopened: what the file holds
  const std::vector<v1::MetricPoint> points = store->metrics(0);
  ASSERT_LE(points.size(), static_cast<size_t>(kMax));
  ASSERT_GE(points.size(), static_cast<size_t>(kMax / 2));
  EXPECT_EQ(points.front().step(), 0);
  EXPECT_EQ(points.back().step(), kSteps - 1);
  EXPECT_EQ(points.back().loss(), 0.125);
  EXPECT_EQ(points.back().eval_loss(), 1.5);
  for (size_t i = 0; i + 1 < points.size(); ++i) {
    EXPECT_EQ(points[i].loss(), loss_at(points[i].step()));
    EXPECT_TRUE(std::isnan(points[i].eval_loss()));
    EXPECT_GT(points[i + 1].step(), points[i].step());
    // Evenly spread: no hole wider than a sixteenth of the job.
    EXPECT_LE(points[i + 1].step() - points[i].step(), kSteps / 16)
        << "between steps " << points[i].step() << " and " << points[i + 1].step();
  }

  // metrics(max_points) thins evenly, keeping the first and the last.
  const std::vector<v1::MetricPoint> thinned = store->metrics(10);
  ASSERT_EQ(thinned.size(), 10u);
  EXPECT_EQ(thinned.front().step(), 0);
  EXPECT_EQ(thinned.back().step(), kSteps - 1);
  std::vector<size_t> positions;  // of the thinned points among all
  for (const v1::MetricPoint& point : thinned) {
    const std::vector<int64_t> all = steps_of(points);
    const auto at = std::find(all.begin(), all.end(), point.step());
    ASSERT_NE(at, all.end());
    positions.push_back(static_cast<size_t>(at - all.begin()));
  }
  size_t smallest = points.size(), largest = 0;
  for (size_t i = 0; i + 1 < positions.size(); ++i) {
    smallest = std::min(smallest, positions[i + 1] - positions[i]);
    largest = std::max(largest, positions[i + 1] - positions[i]);
  }
  EXPECT_LE(largest - smallest, 1u);
  EXPECT_EQ(store->metrics(5000).size(), points.size());
}

TEST(CoordinatorStore, MetricPointOfTheSameStepReplacesTheStoredOne) {
  const std::string path = db_path();
  {
    CoordinatorStore store(path);
    store.append_metric(metric(5, 2.0));
    store.append_metric(metric(7, 1.8));
    store.append_metric(metric(6, 1.9));
    store.append_metric(metric(5, 1.95, 2.2));    // step 5 again, with an evaluation
    v1::MetricPoint eval_only = metric(5, kNaN);  // NaN fields keep the stored values
    eval_only.set_learning_rate(1e-4);
    store.append_metric(eval_only);
    store.append_metric(metric(8, kNaN));  // a non-finite step: its NaN is stored as NaN
  }
  const std::vector<v1::MetricPoint> points = CoordinatorStore(path).metrics(0);
  EXPECT_THAT(steps_of(points), ElementsAre(5, 6, 7, 8));
  EXPECT_EQ(points[0].loss(), 1.95);
  EXPECT_TRUE(std::isnan(points[3].loss()));
  EXPECT_EQ(points[0].eval_loss(), 2.2);
  EXPECT_EQ(points[0].learning_rate(), 1e-4);
  EXPECT_EQ(points[1].loss(), 1.9);
  EXPECT_TRUE(std::isnan(points[1].eval_loss()));
}

TEST(CoordinatorStore, MetricsHistoryShrinksToASmallerLimitOnReopening) {
  const std::string path = db_path();
  {
    CoordinatorStore store(path);
    CoordinatorStore::Transaction transaction(store);
    for (int64_t step = 1; step <= 500; ++step) store.append_metric(metric(step, loss_at(step)));
  }
  CoordinatorStore store(path, 16);
  store.append_metric(metric(501, loss_at(501)));
  const std::vector<v1::MetricPoint> points = store.metrics(0);
  EXPECT_LE(points.size(), 16u);
  EXPECT_EQ(points.front().step(), 1);
  EXPECT_EQ(points.back().step(), 501);
  EXPECT_THAT(user_error([&] { CoordinatorStore(path, 3); }), HasSubstr("at least 4"));
}

// ------------------------------------------------------------------------- foreign files

TEST(CoordinatorStore, TextFileIsRefused) {
  const std::string path = db_path();
  const std::string text = "step,loss\n" + std::string(200, 'x') + "\n1,2.5\n";
  std::ofstream(path) << text;
  const std::string error = user_error([&] { CoordinatorStore store(path); });
  EXPECT_THAT(error, HasSubstr(path));
  EXPECT_THAT(error, HasSubstr("not a ptrain coordinator database"));
  EXPECT_EQ(read_bytes(path), text);  // untouched
  EXPECT_FALSE(fs::exists(path + "-wal"));
}

TEST(CoordinatorStore, SqliteDatabaseOfAnotherApplicationIsRefused) {
  const std::string path = db_path();
  sql_exec(path,
           "CREATE TABLE recipes (name TEXT, minutes INTEGER);"
           "INSERT INTO recipes VALUES ('bread', 240)");
  const std::string error = user_error([&] { CoordinatorStore store(path); });
  EXPECT_THAT(error, HasSubstr(path));
  EXPECT_THAT(error, HasSubstr("not a ptrain coordinator database"));
  EXPECT_EQ(sql_value(path, "SELECT count(*) FROM sqlite_master"), "1");
  EXPECT_EQ(sql_value(path, "PRAGMA journal_mode"), "delete");  // not switched to WAL

  const std::string other = (fresh_dir() / "other.db").string();
  sql_exec(other, "PRAGMA application_id = 1234");  // another application's empty database
  EXPECT_THAT(user_error([&] { CoordinatorStore store(other); }), HasSubstr(other));
}

TEST(CoordinatorStore, NewerSchemaVersionIsRefused) {
  const std::string path = db_path();
  { CoordinatorStore store(path); }
  const int version = std::stoi(sql_value(path, "PRAGMA user_version"));
  ASSERT_GE(version, 1);
  sql_exec(path, "PRAGMA user_version = " + std::to_string(version + 1));
  const std::string error = user_error([&] { CoordinatorStore store(path); });
  EXPECT_THAT(error, HasSubstr(path));
  EXPECT_THAT(error, HasSubstr("schema version " + std::to_string(version + 1) + ", newer"));
}

TEST(CoordinatorStore, EmptyFileGetsTheSchema) {
  const std::string path = db_path();
  std::ofstream(path).close();
  ASSERT_EQ(fs::file_size(path), 0u);
  { CoordinatorStore(path).save_job("job", "hash"); }
  EXPECT_EQ(CoordinatorStore(path).load().job_id, "job");
  EXPECT_NE(sql_value(path, "PRAGMA application_id"), "0");
}

TEST(CoordinatorStore, DamagedRecordIsCorruptData) {
  const std::string path = db_path();
  {
    CoordinatorStore store(path);
    v1::Attempt attempt;
    attempt.set_number(1);
    store.save_attempt(attempt);
  }
  sql_exec(path, "UPDATE attempts SET attempt = x'ffffffff'");
  try {
    CoordinatorStore(path).load();
    ADD_FAILURE() << "a damaged attempt loaded";
  } catch (const CorruptData& e) {
    EXPECT_THAT(e.what(), HasSubstr(path));
    EXPECT_THAT(e.what(), HasSubstr("ptrain.v1.Attempt"));
  }
}

// --------------------------------------------------------------------------- transactions

TEST(CoordinatorStore, TransactionRollsBackWhenAnExceptionLeavesIt) {
  const std::string path = db_path();
  CoordinatorStore store(path);
  v1::Event kept = event("attempt_started", "kept");
  store.append_event(kept);
  EXPECT_THROW(
      {
        CoordinatorStore::Transaction transaction(store);
        v1::Event lost = event("checkpoint_committed", "rolled back");
        store.append_event(lost);
        store.save_checkpoint(checkpoint(100, "/ckpt/100"));
        store.append_metric(metric(100, 1.0));
        store.save_ranks(1, {rank_health(0, 100)});
        throw std::runtime_error("the caller failed");
      },
      std::runtime_error);
  EXPECT_THAT(texts(store.events(0, 0)), ElementsAre(kept.ShortDebugString()));
  EXPECT_TRUE(store.checkpoints().empty());
  EXPECT_TRUE(store.metrics(0).empty());
  EXPECT_TRUE(store.load().ranks.empty());
  EXPECT_EQ(sql_value(path, "SELECT count(*) FROM events"), "1");
  // The store writes on.
  store.save_checkpoint(checkpoint(200, "/ckpt/200"));
  EXPECT_EQ(sql_value(path, "SELECT count(*) FROM checkpoints"), "1");
}

TEST(CoordinatorStore, NestedTransactionsCommitOnceAtTheOutermost) {
  const std::string path = db_path();
  CoordinatorStore store(path);
  {
    CoordinatorStore::Transaction outer(store);
    v1::Event e = event("attempt_started", "outer");
    store.append_event(e);
    {
      CoordinatorStore::Transaction inner(store);
      store.save_checkpoint(checkpoint(100, "/ckpt/100"));
    }
    try {
      CoordinatorStore::Transaction inner(store);
      store.save_checkpoint(checkpoint(200, "/ckpt/200"));
      throw std::runtime_error("the inner group failed");
    } catch (const std::runtime_error&) {
    }
    // Nothing is committed before the outermost transaction ends.
    EXPECT_EQ(sql_value(path, "SELECT count(*) FROM events"), "0");
    EXPECT_EQ(sql_value(path, "SELECT count(*) FROM checkpoints"), "0");
  }
  EXPECT_EQ(sql_value(path, "SELECT count(*) FROM events"), "1");
  EXPECT_EQ(sql_value(path, "SELECT group_concat(step) FROM checkpoints"), "100");
  EXPECT_EQ(store.checkpoints().size(), 1u);
}

// ------------------------------------------------------------------ durability and readers

TEST(CoordinatorStore, HeartbeatWritesSkipTheFsyncOfCommittedRecords) {
  SyncCounter counter;
  CoordinatorStore store(db_path());
  counter.take();
  for (int64_t step = 1; step <= 50; ++step) {
    store.save_ranks(1, {rank_health(0, step), rank_health(1, step)});
    v1::Progress progress;
    progress.set_step(step);
    store.save_progress(progress, kNaN);
    store.append_metric(metric(step, loss_at(step)));
    CoordinatorStore::Transaction transaction(store);
    store.save_ranks(1, {rank_health(0, step)});
  }
  EXPECT_EQ(counter.take(), 0);

  v1::Event e = event("checkpoint_committed", "durable");
  store.append_event(e);
  EXPECT_GE(counter.take(), 1);
  store.save_checkpoint(checkpoint(100, "/ckpt/100"));
  EXPECT_GE(counter.take(), 1);
  store.save_command(command(1, v1::Command::STOP, "user"));
  EXPECT_GE(counter.take(), 1);
  {
    CoordinatorStore::Transaction transaction(store);
    store.save_ranks(1, {rank_health(0, 60)});
    store.append_event(e);
  }
  EXPECT_GE(counter.take(), 1);
  // A rolled-back durable write leaves the next heartbeat write cheap.
  try {
    CoordinatorStore::Transaction transaction(store);
    store.append_event(e);
    throw std::runtime_error("the caller failed");
  } catch (const std::runtime_error&) {
  }
  store.save_ranks(1, {rank_health(0, 61)});
  EXPECT_EQ(counter.take(), 0);
}

TEST(CoordinatorStore, SqliteShellReadsTheDatabase) {
  if (!fs::exists(kShell)) GTEST_SKIP() << "no sqlite3 shell at " << kShell;
  const std::string path = db_path();
  CoordinatorStore store(path);
  for (int i = 0; i < 3; ++i) {
    v1::Event e = event("rank_registered", "rank " + std::to_string(i), i);
    store.append_event(e);
  }
  store.save_checkpoint(checkpoint(200, "/ckpt/200"));
  store.save_checkpoint(checkpoint(100, "/ckpt/100"));
  store.append_metric(metric(10, 2.5));
  // Read while the store holds the database open: the committed rows are in the WAL.
  EXPECT_EQ(shell(path, "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(shell(path, "SELECT count(*) FROM events"), "3");
  EXPECT_EQ(shell(path, "SELECT message FROM events WHERE id = 2"), "rank 1");
  EXPECT_EQ(shell(path,
                  "SELECT group_concat(step) FROM (SELECT step FROM checkpoints ORDER BY "
                  "step)"),
            "100,200");
  EXPECT_EQ(shell(path, "SELECT loss FROM metrics WHERE step = 10"), "2.5");
  EXPECT_EQ(shell(path, "PRAGMA application_id"), sql_value(path, "PRAGMA application_id"));
}

TEST(CoordinatorStore, KilledWriterLosesNoCommit) {
  const std::string path = db_path();
  {
    CoordinatorStore store(path);
    v1::Event e = event("attempt_started", "before the crash");
    store.append_event(e);
    store.save_checkpoint(checkpoint(100, "/ckpt/100"));
  }
  std::fflush(nullptr);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The child writes and dies by SIGKILL, closing nothing. No gtest assertion runs here.
    try {
      CoordinatorStore store(path);
      store.save_checkpoint(checkpoint(200, "/ckpt/200"));
      v1::Event e = event("checkpoint_committed", "just before the crash");
      store.append_event(e);
      kill(getpid(), SIGKILL);
    } catch (...) {
      _exit(3);
    }
    _exit(4);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child status " << status;
  // A clean close would have checkpointed and removed the WAL: the writes are only there.
  EXPECT_TRUE(fs::exists(path + "-wal"));

  EXPECT_EQ(sql_value(path,
                      "SELECT group_concat(step) FROM (SELECT step FROM checkpoints ORDER BY "
                      "step)"),
            "100,200");
  CoordinatorStore store(path);
  EXPECT_EQ(store.checkpoints().size(), 2u);
  const std::vector<v1::Event> events = store.recent_events(10);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events.back().message(), "just before the crash");
}

TEST(CoordinatorStore, OneCoordinatorPerStateFile) {
  const std::string path = db_path();
  auto first = std::make_unique<CoordinatorStore>(path);
  const std::string message = user_error([&] { CoordinatorStore second(path); });
  EXPECT_THAT(message, HasSubstr("in use by another coordinator"));
  EXPECT_THAT(message, HasSubstr(std::to_string(::getpid())));
  first.reset();
  CoordinatorStore again(path);  // free once the first is gone
}

}  // namespace
}  // namespace ptrain
