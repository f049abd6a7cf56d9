// SQLite for cluster/: the check macros, the one check-macro header of this runtime (STYLE.md,
// practice 5), and the prepared statement whose every bind and step goes through them.
//
// A failed call throws RuntimeFailure
//   "SQLite call <call> failed: <SQLite's message> (database <path>) (file:line)"
// and a failed step of a prepared statement
//   "SQLite statement `<its SQL>` failed: <SQLite's message> (database <path>) (file:line)".
// SQLITE_OK, SQLITE_ROW and SQLITE_DONE are successes, and the check returns the code, so a step
// can tell a row from the end. `path` names the database file (":memory:" for an in-memory one);
// the messages are built only on failure, so a check costs nothing on the heartbeat path.
#pragma once

#include <cstdint>
#include <string>

struct sqlite3;
struct sqlite3_stmt;

namespace ptrain {

int check_sqlite(int code, sqlite3* db, const char* call, const std::string& path, const char* file,
                 int line);
// sqlite3_step(statement), checked: SQLITE_ROW or SQLITE_DONE.
int step_sqlite(sqlite3_stmt* statement, const std::string& path, const char* file, int line);

// A statement prepared once (SQLITE_PREPARE_PERSISTENT) and reused by every SqliteQuery of it.
// `path` is the database's, kept by reference: its owner outlives the statement.
class SqliteStatement {
 public:
  SqliteStatement(sqlite3* db, const std::string& path, const std::string& sql);
  ~SqliteStatement();
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;

  sqlite3_stmt* get() const { return statement_; }
  const std::string& path() const { return path_; }

 private:
  const std::string& path_;
  sqlite3_stmt* statement_ = nullptr;
};

// One use of a SqliteStatement: binds its parameters in order, steps it, reads the current row,
// and resets the statement when it ends (a read left open would hold back the WAL checkpoint).
// SQLite has no NaN: a NaN binds as NULL, and real() reads NULL as NaN.
class SqliteQuery {
 public:
  explicit SqliteQuery(SqliteStatement& statement);
  ~SqliteQuery();
  SqliteQuery(const SqliteQuery&) = delete;
  SqliteQuery& operator=(const SqliteQuery&) = delete;

  SqliteQuery& bind(int64_t value);
  SqliteQuery& bind(int value) { return bind(static_cast<int64_t>(value)); }
  SqliteQuery& bind(double value);
  SqliteQuery& bind(const std::string& text);
  SqliteQuery& bind_blob(const std::string& bytes);

  // Steps: true on a row, false at the end.
  bool next();
  void run() { next(); }

  bool is_null(int column) const;
  int64_t integer(int column) const;
  double real(int column) const;
  std::string text(int column) const;
  std::string blob(int column) const;

 private:
  SqliteQuery& checked(int code);

  SqliteStatement& statement_;
  int bound_ = 0;
};

}  // namespace ptrain

#define PTRAIN_SQLITE_CHECK(db, path, call) \
  ::ptrain::check_sqlite((call), (db), #call, (path), __FILE__, __LINE__)
#define PTRAIN_SQLITE_STEP(statement, path) \
  ::ptrain::step_sqlite((statement), (path), __FILE__, __LINE__)
