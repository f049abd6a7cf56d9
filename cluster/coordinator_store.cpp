#include "cluster/coordinator_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cluster/sqlite_check.h"
#include "core/error.h"

namespace ptrain {
namespace {

// One coordinator per state file: `<path>.lock`, held with flock() while the store lives (the
// kernel drops it when the process dies), names the holder's pid. UserError when another holds it.
int lock_exclusively(const std::string& path) {
  const std::string lock_path = path + ".lock";
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  PTRAIN_CHECK(fd >= 0, "cannot open {}: {}", lock_path, std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    char pid[32] = {};
    const ssize_t n = ::pread(fd, pid, sizeof pid - 1, 0);
    ::close(fd);
    PTRAIN_CHECK(error != EWOULDBLOCK,
                 "the coordinator database {} is in use by another coordinator (pid {}): one "
                 "coordinator per state file; stop it, or give this one another --state",
                 path, n > 0 ? std::string(pid, static_cast<size_t>(n)) : "unknown");
    PTRAIN_CHECK(false, "cannot lock {}: {}", lock_path, std::strerror(error));
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // The pid is only a hint in a refusal: the lock itself holds.
  }
  return fd;
}

// ------------------------------------------------------------------------------------ schema

// PRAGMA application_id of a coordinator database: "ptrc" in ASCII.
constexpr int64_t kApplicationId = 0x70747263;
// PRAGMA user_version: the schema below. A change of it raises this (and migrates older files).
constexpr int64_t kSchemaVersion = 1;
constexpr int kBusyTimeoutMs = 10000;
constexpr int kMinMetricPoints = 4;

// [Note: columns and blobs]
// Checkpoints, events, metrics and commands are columns: they are queried by step, id and state,
// and the sqlite3 shell reads them as they are. The progress, the attempts and the ranks' health
// are protobuf messages replaced and read back whole: they are stored serialized, so a field
// ptrain.v1 adds to them needs no new schema. SQLite has no NaN: a NaN double is stored as NULL
// and read back as NaN. metrics.ordinal counts the points appended (the downsampling keeps those
// whose ordinal is a multiple of job.metric_stride, see append_metric).
constexpr const char* kSchema = R"sql(
CREATE TABLE job (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  job_id TEXT NOT NULL DEFAULT '',
  config_hash TEXT NOT NULL DEFAULT '',
  progress BLOB,
  eval_loss REAL,
  metric_stride INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE attempts (number INTEGER PRIMARY KEY, attempt BLOB NOT NULL);
CREATE TABLE ranks (
  attempt INTEGER NOT NULL,
  rank INTEGER NOT NULL,
  health BLOB NOT NULL,
  PRIMARY KEY (attempt, rank)
) WITHOUT ROWID;
CREATE TABLE checkpoints (
  step INTEGER PRIMARY KEY,
  dir TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  files INTEGER NOT NULL,
  world INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  committed_unix_s REAL
);
CREATE TABLE events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  unix_s REAL,
  severity TEXT NOT NULL,
  kind TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  rank INTEGER NOT NULL,
  message TEXT NOT NULL
);
CREATE TABLE metrics (
  step INTEGER PRIMARY KEY,
  ordinal INTEGER NOT NULL,
  unix_s REAL,
  loss REAL,
  eval_loss REAL,
  learning_rate REAL,
  tokens_per_second REAL,
  mfu REAL
);
CREATE TABLE commands (
  id INTEGER PRIMARY KEY,
  kind INTEGER NOT NULL,
  reason TEXT NOT NULL,
  requested_unix_s REAL,
  done INTEGER NOT NULL DEFAULT 0
);
)sql";

// ------------------------------------------------------------------------------------- rows

// A stored message (the [Note: columns and blobs]); one that does not parse is a damaged database.
template <typename Message>
Message stored_message(const SqliteQuery& row, int column, const std::string& path) {
  Message message;
  if (!message.ParseFromString(row.blob(column))) {
    throw CorruptData(detail::with_location(
        fmt::format("the coordinator database {} holds a {} that does not parse", path,
                    message.GetTypeName()),
        __FILE__, __LINE__));
  }
  return message;
}

v1::Checkpoint checkpoint_of(const SqliteQuery& row) {
  v1::Checkpoint checkpoint;
  checkpoint.set_step(row.integer(0));
  checkpoint.set_dir(row.text(1));
  checkpoint.set_bytes(row.integer(2));
  checkpoint.set_files(static_cast<int32_t>(row.integer(3)));
  checkpoint.set_world(static_cast<int32_t>(row.integer(4)));
  checkpoint.set_attempt(static_cast<int32_t>(row.integer(5)));
  checkpoint.set_committed_unix_s(row.real(6));
  return checkpoint;
}

v1::Event event_of(const SqliteQuery& row) {
  v1::Event event;
  event.set_id(row.integer(0));
  event.set_unix_s(row.real(1));
  event.set_severity(row.text(2));
  event.set_kind(row.text(3));
  event.set_attempt(static_cast<int32_t>(row.integer(4)));
  event.set_rank(static_cast<int32_t>(row.integer(5)));
  event.set_message(row.text(6));
  return event;
}

v1::MetricPoint metric_of(const SqliteQuery& row) {
  v1::MetricPoint point;
  point.set_step(row.integer(0));
  point.set_unix_s(row.real(1));
  point.set_loss(row.real(2));
  point.set_eval_loss(row.real(3));
  point.set_learning_rate(row.real(4));
  point.set_tokens_per_second(row.real(5));
  point.set_mfu(row.real(6));
  return point;
}

// ------------------------------------------------------------------------------ opening a file

// The first column of the first row of `sql` as text. A file that is not an SQLite database shows
// here, before anything has written to it.
std::string read_value(sqlite3* db, const std::string& path, const char* sql) {
  sqlite3_stmt* raw = nullptr;
  int code = sqlite3_prepare_v2(db, sql, -1, &raw, nullptr);
  std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> statement(raw, sqlite3_finalize);
  if (code == SQLITE_OK) code = sqlite3_step(raw);
  PTRAIN_CHECK(code != SQLITE_NOTADB,
               "{} is not a ptrain coordinator database (not an SQLite file): give the "
               "coordinator the path of its own database, or of a new file",
               path);
  if (code == SQLITE_CORRUPT) {
    throw CorruptData(detail::with_location(
        fmt::format("the coordinator database {} is damaged: {}", path, sqlite3_errmsg(db)),
        __FILE__, __LINE__));
  }
  check_sqlite(code, db, sql, path, __FILE__, __LINE__);
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(raw, 0));
  return code == SQLITE_ROW && text != nullptr ? text : "";
}

int64_t read_integer(sqlite3* db, const std::string& path, const char* sql) {
  return std::stoll(read_value(db, path, sql));
}

// True for a new, empty database; refuses anything but a coordinator database of a schema this
// ptrain reads.
bool is_new_database(sqlite3* db, const std::string& path) {
  const int64_t application = read_integer(db, path, "PRAGMA application_id");
  const int64_t version = read_integer(db, path, "PRAGMA user_version");
  const int64_t objects = read_integer(db, path, "SELECT count(*) FROM sqlite_master");
  if (application == 0 && version == 0 && objects == 0) return true;
  PTRAIN_CHECK(application == kApplicationId,
               "{} is not a ptrain coordinator database (an SQLite database of another "
               "application: its application_id is {:#x}, a coordinator database's {:#x}): give "
               "the coordinator the path of its own database, or of a new file",
               path, application, kApplicationId);
  PTRAIN_CHECK(version <= kSchemaVersion,
               "the coordinator database {} has schema version {}, newer than the {} this ptrain "
               "reads: run the newer ptrain that wrote it, or give the coordinator a new file",
               path, version, kSchemaVersion);
  if (version < 1) {
    throw CorruptData(detail::with_location(
        fmt::format("the coordinator database {} has schema version {}, which no ptrain writes",
                    path, version),
        __FILE__, __LINE__));
  }
  return false;
}

bool is_file(const std::string& path) {
  return !path.empty() && path != ":memory:";
}

}  // namespace

struct CoordinatorStore::Statements {
  Statements(sqlite3* db, const std::string& path)
      : begin(db, path, "BEGIN IMMEDIATE"),
        commit(db, path, "COMMIT"),
        rollback(db, path, "ROLLBACK"),
        savepoint(db, path, "SAVEPOINT nested"),
        release(db, path, "RELEASE nested"),
        rollback_to(db, path, "ROLLBACK TO nested"),
        save_job(db, path, "UPDATE job SET job_id = ?, config_hash = ? WHERE id = 1"),
        save_progress(db, path, "UPDATE job SET progress = ?, eval_loss = ? WHERE id = 1"),
        load_job(db, path, "SELECT job_id, config_hash, progress, eval_loss FROM job WHERE id = 1"),
        save_attempt(db, path, "INSERT OR REPLACE INTO attempts (number, attempt) VALUES (?, ?)"),
        load_attempts(db, path, "SELECT attempt FROM attempts ORDER BY number"),
        save_rank(db, path,
                  "INSERT OR REPLACE INTO ranks (attempt, rank, health) VALUES (?, ?, ?)"),
        load_ranks(db, path,
                   "SELECT health FROM ranks WHERE attempt = (SELECT max(a) FROM (SELECT number "
                   "AS a FROM attempts UNION ALL SELECT attempt FROM ranks)) ORDER BY rank"),
        save_checkpoint(db, path,
                        "INSERT INTO checkpoints (step, dir, bytes, files, world, attempt, "
                        "committed_unix_s) VALUES (?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (step) DO NOTHING"),
        load_checkpoints(db, path,
                         "SELECT step, dir, bytes, files, world, attempt, committed_unix_s "
                         "FROM checkpoints ORDER BY step DESC"),
        append_event(db, path,
                     "INSERT INTO events (unix_s, severity, kind, attempt, rank, message) "
                     "VALUES (?, ?, ?, ?, ?, ?)"),
        events_after(db, path,
                     "SELECT id, unix_s, severity, kind, attempt, rank, message FROM events "
                     "WHERE id > ? ORDER BY id LIMIT ?"),
        recent_events(db, path,
                      "SELECT * FROM (SELECT id, unix_s, severity, kind, attempt, rank, message "
                      "FROM events ORDER BY id DESC LIMIT ?) ORDER BY id"),
        upsert_metric(db, path,
                      "INSERT INTO metrics (step, ordinal, unix_s, loss, eval_loss, "
                      "learning_rate, tokens_per_second, mfu) VALUES (?1, (SELECT "
                      "coalesce(max(ordinal), -1) + 1 FROM metrics), ?2, ?3, ?4, ?5, ?6, ?7) "
                      "ON CONFLICT (step) DO UPDATE SET unix_s = excluded.unix_s, "
                      "loss = coalesce(excluded.loss, metrics.loss), "
                      "eval_loss = coalesce(excluded.eval_loss, metrics.eval_loss), "
                      "learning_rate = coalesce(excluded.learning_rate, metrics.learning_rate), "
                      "tokens_per_second = coalesce(excluded.tokens_per_second, "
                      "metrics.tokens_per_second), mfu = coalesce(excluded.mfu, metrics.mfu)"),
        metric_stride(db, path, "SELECT metric_stride FROM job WHERE id = 1"),
        set_metric_stride(db, path, "UPDATE job SET metric_stride = ? WHERE id = 1"),
        drop_off_stride_metrics(db, path,
                                "DELETE FROM metrics WHERE ordinal % ?1 != 0 "
                                "AND step != (SELECT max(step) FROM metrics) "
                                "AND step != (SELECT min(step) FROM metrics)"),
        count_metrics(db, path, "SELECT count(*) FROM metrics"),
        load_metrics(db, path,
                     "SELECT step, unix_s, loss, eval_loss, learning_rate, tokens_per_second, "
                     "mfu FROM metrics ORDER BY step"),
        save_command(db, path,
                     "INSERT INTO commands (id, kind, reason, requested_unix_s) "
                     "VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, "
                     "reason = excluded.reason, requested_unix_s = excluded.requested_unix_s"),
        finish_command(db, path, "UPDATE commands SET done = 1 WHERE id = ?"),
        pending_commands(db, path,
                         "SELECT id, kind, reason, requested_unix_s FROM commands "
                         "WHERE done = 0 ORDER BY id"),
        next_command_id(db, path, "SELECT coalesce(max(id), 0) + 1 FROM commands") {}

  SqliteStatement begin, commit, rollback, savepoint, release, rollback_to;
  SqliteStatement save_job, save_progress, load_job;
  SqliteStatement save_attempt, load_attempts, save_rank, load_ranks;
  SqliteStatement save_checkpoint, load_checkpoints;
  SqliteStatement append_event, events_after, recent_events;
  SqliteStatement upsert_metric, metric_stride, set_metric_stride, drop_off_stride_metrics;
  SqliteStatement count_metrics, load_metrics;
  SqliteStatement save_command, finish_command, pending_commands, next_command_id;
};

// --------------------------------------------------------------------------- open and close

CoordinatorStore::CoordinatorStore(const std::string& path, int max_metric_points)
    : path_(path), max_metric_points_(max_metric_points) {
  PTRAIN_CHECK(max_metric_points >= kMinMetricPoints,
               "the coordinator keeps at least {} metrics points (asked for {})", kMinMetricPoints,
               max_metric_points);
  if (path != ":memory:") lock_fd_ = lock_exclusively(path);
  const int opened =
      sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (opened != SQLITE_OK) {
    const std::string why = db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(opened);
    sqlite3_close(db_);
    if (lock_fd_ >= 0) ::close(lock_fd_);
    throw UserError(detail::with_location(
        fmt::format("cannot open the coordinator database {}: {}", path, why), __FILE__, __LINE__));
  }
  try {
    PTRAIN_SQLITE_CHECK(db_, path_, sqlite3_busy_timeout(db_, kBusyTimeoutMs));
    is_new_database(db_, path_);  // refuses a foreign file before WAL rewrites its header
    const std::string journal = read_value(db_, path_, "PRAGMA journal_mode = WAL");
    if (is_file(path_) && journal != "wal") {
      throw RuntimeFailure(detail::with_location(
          fmt::format("the coordinator database {} cannot use a WAL journal (SQLite kept {})",
                      path_, journal),
          __FILE__, __LINE__));
    }
    exec("PRAGMA synchronous = NORMAL");
    exec("BEGIN IMMEDIATE");
    // Asked again under the write lock: another process may have created it meanwhile.
    if (is_new_database(db_, path_)) {
      exec(kSchema);
      // Constants, not input: PRAGMA takes no bound parameters.
      exec(fmt::format("PRAGMA application_id = {}", kApplicationId).c_str());
      exec(fmt::format("PRAGMA user_version = {}", kSchemaVersion).c_str());
    }
    exec("INSERT OR IGNORE INTO job (id) VALUES (1)");
    exec("COMMIT");
    statements_ = std::make_unique<Statements>(db_, path_);
  } catch (...) {
    statements_.reset();
    sqlite3_close(db_);  // rolls back an open transaction
    throw;
  }
}

CoordinatorStore::~CoordinatorStore() {
  statements_.reset();
  sqlite3_close(db_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

void CoordinatorStore::exec(const char* sql) {
  check_sqlite(sqlite3_exec(db_, sql, nullptr, nullptr, nullptr), db_, sql, path_, __FILE__,
               __LINE__);
}

// ------------------------------------------------------------------------------ transactions

CoordinatorStore::Transaction::Transaction(CoordinatorStore& store)
    : store_(store), uncaught_(std::uncaught_exceptions()) {
  store_.begin();
}

CoordinatorStore::Transaction::~Transaction() noexcept(false) {
  store_.end(std::uncaught_exceptions() == uncaught_);
}

void CoordinatorStore::begin() {
  SqliteQuery(transaction_depth_ == 0 ? statements_->begin : statements_->savepoint).run();
  ++transaction_depth_;
}

void CoordinatorStore::end(bool commit) {
  // After some errors SQLite has already rolled the whole transaction back itself.
  const auto quietly = [this](SqliteStatement& statement) {
    if (sqlite3_get_autocommit(db_) == 0) {
      sqlite3_step(statement.get());
      sqlite3_reset(statement.get());
    }
  };
  --transaction_depth_;
  if (transaction_depth_ > 0) {
    if (commit) {
      SqliteQuery(statements_->release).run();
    } else {
      quietly(statements_->rollback_to);
      quietly(statements_->release);
    }
    return;
  }
  const bool durable = durable_commit_;
  durable_commit_ = false;
  if (!commit) {
    quietly(statements_->rollback);
    return;
  }
  try {
    SqliteQuery(statements_->commit).run();
  } catch (...) {
    quietly(statements_->rollback);
    throw;
  }
  if (durable) sync_journal();
}

// [Note: durable commits]
// The connection runs synchronous=NORMAL: in WAL mode a commit then writes the WAL without an
// fsync, so a killed coordinator loses nothing and a power cut at most the last commits. That
// suits the heartbeat-rate writes (ranks, progress, metrics). A transaction holding a write that
// must survive a power cut (the job, an attempt, a checkpoint, an event, a command) fsyncs the WAL
// after its commit, as synchronous=FULL would at every commit. The choice is made per transaction
// at its commit, because SQLite changes PRAGMA synchronous only outside a transaction and a
// Transaction may group both kinds.
void CoordinatorStore::sync_journal() {
  sqlite3_file* wal = nullptr;
  PTRAIN_SQLITE_CHECK(db_, path_,
                      sqlite3_file_control(db_, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal));
  if (wal == nullptr || wal->pMethods == nullptr) return;  // an in-memory database
  // The sync's error is not the connection's: db is null so the message is the code's.
  PTRAIN_SQLITE_CHECK(nullptr, path_, wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL));
}

// ------------------------------------------------------------------------- job and attempts

CoordinatorStore::Snapshot CoordinatorStore::load() const {
  Statements& s = *statements_;
  Snapshot snapshot;
  snapshot.eval_loss = std::numeric_limits<double>::quiet_NaN();
  {
    SqliteQuery job(s.load_job);
    if (job.next()) {
      snapshot.job_id = job.text(0);
      snapshot.config_hash = job.text(1);
      if (!job.is_null(2)) snapshot.progress = stored_message<v1::Progress>(job, 2, path_);
      snapshot.eval_loss = job.real(3);
    }
  }
  for (SqliteQuery attempts(s.load_attempts); attempts.next();) {
    snapshot.attempts.push_back(stored_message<v1::Attempt>(attempts, 0, path_));
  }
  for (SqliteQuery ranks(s.load_ranks); ranks.next();) {
    snapshot.ranks.push_back(stored_message<v1::RankHealth>(ranks, 0, path_));
  }
  snapshot.checkpoints = checkpoints();
  for (SqliteQuery commands(s.pending_commands); commands.next();) {
    v1::Command& command = snapshot.commands.emplace_back();
    command.set_id(commands.integer(0));
    command.set_kind(static_cast<v1::Command::Kind>(commands.integer(1)));
    command.set_reason(commands.text(2));
    command.set_requested_unix_s(commands.real(3));
  }
  SqliteQuery next_id(s.next_command_id);
  next_id.next();
  snapshot.next_command_id = next_id.integer(0);
  return snapshot;
}

void CoordinatorStore::save_job(const std::string& job_id, const std::string& config_hash) {
  Transaction transaction(*this);
  durable_commit_ = true;
  SqliteQuery(statements_->save_job).bind(job_id).bind(config_hash).run();
}

void CoordinatorStore::save_progress(const v1::Progress& progress, double eval_loss) {
  Transaction transaction(*this);
  SqliteQuery(statements_->save_progress)
      .bind_blob(progress.SerializeAsString())
      .bind(eval_loss)
      .run();
}

void CoordinatorStore::save_attempt(const v1::Attempt& attempt) {
  Transaction transaction(*this);
  durable_commit_ = true;
  SqliteQuery(statements_->save_attempt)
      .bind(attempt.number())
      .bind_blob(attempt.SerializeAsString())
      .run();
}

void CoordinatorStore::save_ranks(int attempt, const std::vector<v1::RankHealth>& ranks) {
  Transaction transaction(*this);
  for (const v1::RankHealth& health : ranks) {
    SqliteQuery(statements_->save_rank)
        .bind(attempt)
        .bind(health.rank())
        .bind_blob(health.SerializeAsString())
        .run();
  }
}

// ------------------------------------------------------------------------ checkpoints, events

void CoordinatorStore::save_checkpoint(const v1::Checkpoint& checkpoint) {
  Transaction transaction(*this);
  durable_commit_ = true;
  SqliteQuery(statements_->save_checkpoint)
      .bind(checkpoint.step())
      .bind(checkpoint.dir())
      .bind(checkpoint.bytes())
      .bind(checkpoint.files())
      .bind(checkpoint.world())
      .bind(checkpoint.attempt())
      .bind(checkpoint.committed_unix_s())
      .run();
}

std::vector<v1::Checkpoint> CoordinatorStore::checkpoints() const {
  std::vector<v1::Checkpoint> checkpoints;
  for (SqliteQuery rows(statements_->load_checkpoints); rows.next();) {
    checkpoints.push_back(checkpoint_of(rows));
  }
  return checkpoints;
}

void CoordinatorStore::append_event(v1::Event& event) {
  Transaction transaction(*this);
  durable_commit_ = true;
  SqliteQuery(statements_->append_event)
      .bind(event.unix_s())
      .bind(event.severity())
      .bind(event.kind())
      .bind(event.attempt())
      .bind(event.rank())
      .bind(event.message())
      .run();
  event.set_id(sqlite3_last_insert_rowid(db_));
}

std::vector<v1::Event> CoordinatorStore::events(int64_t after_id, int limit) const {
  const int rows_wanted = limit == 0 ? 100 : std::clamp(limit, 1, 1000);
  std::vector<v1::Event> events;
  SqliteQuery rows(statements_->events_after);
  rows.bind(after_id).bind(rows_wanted);
  while (rows.next()) events.push_back(event_of(rows));
  return events;
}

std::vector<v1::Event> CoordinatorStore::recent_events(int limit) const {
  std::vector<v1::Event> events;
  if (limit <= 0) return events;
  SqliteQuery rows(statements_->recent_events);
  rows.bind(limit);
  while (rows.next()) events.push_back(event_of(rows));
  return events;
}

// ----------------------------------------------------------------------------------- metrics

// [Note: metrics downsampling]
// Each point gets an ordinal (the points appended before it) and the history keeps the points
// whose ordinal is a multiple of the stride, plus the first and the newest by step. Over
// max_metric_points the stride doubles, dropping every other point: the history always spans the
// whole job at one even grain, coarser as the job grows. (Thinning only the older half, and
// keeping every new point, would leave the first point and the last few: the older part is
// halved again at every overflow.)
void CoordinatorStore::append_metric(const v1::MetricPoint& point) {
  Statements& s = *statements_;
  Transaction transaction(*this);
  SqliteQuery(s.upsert_metric)
      .bind(point.step())
      .bind(point.unix_s())
      .bind(point.loss())
      .bind(point.eval_loss())
      .bind(point.learning_rate())
      .bind(point.tokens_per_second())
      .bind(point.mfu())
      .run();
  int64_t stride = 1;
  {
    SqliteQuery stride_row(s.metric_stride);
    if (stride_row.next()) stride = stride_row.integer(0);
  }
  SqliteQuery(s.drop_off_stride_metrics).bind(stride).run();
  for (;;) {
    SqliteQuery count(s.count_metrics);
    count.next();
    if (count.integer(0) <= max_metric_points_) break;
    stride *= 2;
    SqliteQuery(s.set_metric_stride).bind(stride).run();
    SqliteQuery(s.drop_off_stride_metrics).bind(stride).run();
  }
}

std::vector<v1::MetricPoint> CoordinatorStore::metrics(int max_points) const {
  std::vector<v1::MetricPoint> points;
  for (SqliteQuery rows(statements_->load_metrics); rows.next();) points.push_back(metric_of(rows));
  const size_t n = points.size();
  if (max_points <= 0 || n <= static_cast<size_t>(max_points)) return points;
  if (max_points == 1) return {points.back()};
  // Indices i * (n - 1) / (max_points - 1): the first, the last, and even steps between, all
  // distinct because n > max_points.
  std::vector<v1::MetricPoint> thinned;
  const size_t wanted = static_cast<size_t>(max_points);
  for (size_t i = 0; i < wanted; ++i) thinned.push_back(points[i * (n - 1) / (wanted - 1)]);
  return thinned;
}

// ---------------------------------------------------------------------------------- commands

void CoordinatorStore::save_command(const v1::Command& command) {
  Transaction transaction(*this);
  durable_commit_ = true;
  SqliteQuery(statements_->save_command)
      .bind(command.id())
      .bind(static_cast<int>(command.kind()))
      .bind(command.reason())
      .bind(command.requested_unix_s())
      .run();
}

void CoordinatorStore::finish_command(int64_t id) {
  Transaction transaction(*this);
  durable_commit_ = true;
  SqliteQuery(statements_->finish_command).bind(id).run();
}

}  // namespace ptrain
