#include "cluster/sqlite_check.h"

#include <sqlite3.h>

#include <limits>

#include "core/error.h"

namespace ptrain {
namespace {

bool succeeded(int code) {
  return code == SQLITE_OK || code == SQLITE_ROW || code == SQLITE_DONE;
}

// The connection's message says more than the code's ("no such table: x"); a failed open may leave
// no connection to ask.
std::string message_of(int code, sqlite3* db) {
  return db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(code);
}

}  // namespace

int check_sqlite(int code, sqlite3* db, const char* call, const std::string& path, const char* file,
                 int line) {
  if (succeeded(code)) return code;
  throw RuntimeFailure(detail::with_location(
      fmt::format("SQLite call {} failed: {} (database {})", call, message_of(code, db), path),
      file, line));
}

int step_sqlite(sqlite3_stmt* statement, const std::string& path, const char* file, int line) {
  const int code = sqlite3_step(statement);
  if (succeeded(code)) return code;
  throw RuntimeFailure(detail::with_location(
      fmt::format("SQLite statement `{}` failed: {} (database {})", sqlite3_sql(statement),
                  message_of(code, sqlite3_db_handle(statement)), path),
      file, line));
}

// ------------------------------------------------------------------------------ statements

SqliteStatement::SqliteStatement(sqlite3* db, const std::string& path, const std::string& sql)
    : path_(path) {
  PTRAIN_SQLITE_CHECK(
      db, path,
      sqlite3_prepare_v3(db, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &statement_, nullptr));
}

SqliteStatement::~SqliteStatement() {
  sqlite3_finalize(statement_);
}

SqliteQuery::SqliteQuery(SqliteStatement& statement) : statement_(statement) {}

SqliteQuery::~SqliteQuery() {
  sqlite3_reset(statement_.get());
  sqlite3_clear_bindings(statement_.get());
}

SqliteQuery& SqliteQuery::bind(int64_t value) {
  return checked(sqlite3_bind_int64(statement_.get(), ++bound_, value));
}

SqliteQuery& SqliteQuery::bind(double value) {
  return checked(sqlite3_bind_double(statement_.get(), ++bound_, value));
}

SqliteQuery& SqliteQuery::bind(const std::string& text) {
  return checked(sqlite3_bind_text64(statement_.get(), ++bound_, text.data(), text.size(),
                                     SQLITE_TRANSIENT, SQLITE_UTF8));
}

SqliteQuery& SqliteQuery::bind_blob(const std::string& bytes) {
  return checked(sqlite3_bind_blob64(statement_.get(), ++bound_, bytes.data(), bytes.size(),
                                     SQLITE_TRANSIENT));
}

SqliteQuery& SqliteQuery::checked(int code) {
  if (code != SQLITE_OK) {
    const std::string call =
        fmt::format("binding parameter {} of `{}`", bound_, sqlite3_sql(statement_.get()));
    check_sqlite(code, sqlite3_db_handle(statement_.get()), call.c_str(), statement_.path(),
                 __FILE__, __LINE__);
  }
  return *this;
}

bool SqliteQuery::next() {
  return PTRAIN_SQLITE_STEP(statement_.get(), statement_.path()) == SQLITE_ROW;
}

bool SqliteQuery::is_null(int column) const {
  return sqlite3_column_type(statement_.get(), column) == SQLITE_NULL;
}

int64_t SqliteQuery::integer(int column) const {
  return sqlite3_column_int64(statement_.get(), column);
}

double SqliteQuery::real(int column) const {
  if (is_null(column)) return std::numeric_limits<double>::quiet_NaN();
  return sqlite3_column_double(statement_.get(), column);
}

std::string SqliteQuery::text(int column) const {
  const auto* data = reinterpret_cast<const char*>(sqlite3_column_text(statement_.get(), column));
  if (data == nullptr) return "";
  return std::string(data, sqlite3_column_bytes(statement_.get(), column));
}

std::string SqliteQuery::blob(int column) const {
  const auto* data = static_cast<const char*>(sqlite3_column_blob(statement_.get(), column));
  if (data == nullptr) return "";
  return std::string(data, sqlite3_column_bytes(statement_.get(), column));
}

}  // namespace ptrain
