// RAII over the SQLite C API, and the one place where SQLite result codes
// become absl::Status.
//
// Everything here is a thin owner: SqliteDb owns a sqlite3*, Statement a
// sqlite3_stmt*, Transaction an open transaction (rolled back unless
// committed). None of these classes is thread-safe; LocalStore serializes
// access to them.
#ifndef PULSESYNC_CLIENT_STORE_SQLITE_H_
#define PULSESYNC_CLIENT_STORE_SQLITE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct sqlite3;
struct sqlite3_stmt;

namespace pulsesync {
namespace sqlite {

// Translates a SQLite (extended) result code into a Status:
//   BUSY -> kUnavailable (another connection holds the write lock past the
//           busy timeout; retry later), BUSY_SNAPSHOT / LOCKED -> kAborted,
//   CONSTRAINT_PRIMARYKEY / UNIQUE -> kAlreadyExists, other CONSTRAINT ->
//   kFailedPrecondition, CANTOPEN -> kNotFound, PERM / READONLY / AUTH ->
//   kPermissionDenied, FULL / NOMEM -> kResourceExhausted, CORRUPT / NOTADB
//   -> kDataLoss, TOOBIG / RANGE / MISMATCH -> kInvalidArgument, anything
//   else -> kInternal. The message is "<context>: <sqlite message>".
absl::Status StatusFromSqlite(int rc, absl::string_view context, sqlite3* db = nullptr);

class Statement;

// An open database connection. Move-only.
class SqliteDb {
 public:
  // Opens (creating if `create` is true) the database file at `path`.
  // kNotFound if it does not exist and `create` is false.
  [[nodiscard]] static absl::StatusOr<SqliteDb> Open(const std::string& path, bool create);

  SqliteDb(SqliteDb&& other) noexcept;
  SqliteDb& operator=(SqliteDb&& other) noexcept;
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;
  ~SqliteDb();

  // Runs one or more statements that return no rows.
  [[nodiscard]] absl::Status Exec(absl::string_view sql);
  [[nodiscard]] absl::StatusOr<Statement> Prepare(absl::string_view sql);
  // `sql` prepared once per connection and kept, for statements run per
  // row: reset and ready to bind (bind every parameter: old bindings stay).
  // Owned by this SqliteDb; one user at a time.
  [[nodiscard]] absl::StatusOr<Statement*> Cached(absl::string_view sql);

  int64_t changes() const;
  // True if the last statement that failed here broke a PRIMARY KEY (both
  // that and another UNIQUE constraint are kAlreadyExists). Ask right after
  // the failure.
  bool primary_key_refused() const;
  sqlite3* get() const { return db_; }

 private:
  explicit SqliteDb(sqlite3* db) : db_(db) {}
  void Close();
  sqlite3* db_ = nullptr;
  absl::flat_hash_map<std::string, std::unique_ptr<Statement>> cache_;  // looked up by view
};

// A prepared statement. Bind indexes are 1-based, column indexes 0-based.
class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  [[nodiscard]] absl::Status BindText(int index, absl::string_view value);
  [[nodiscard]] absl::Status BindInt64(int index, int64_t value);
  [[nodiscard]] absl::Status BindDouble(int index, double value);
  [[nodiscard]] absl::Status BindNull(int index);

  // Advances: true if a row is available, false when done.
  [[nodiscard]] absl::StatusOr<bool> Step();
  // Steps to completion, for statements that return no rows.
  [[nodiscard]] absl::Status Run();
  // Makes the statement ready to run again; bindings are kept.
  void Reset();

  enum class ColumnKind { kNull, kInteger, kFloat, kText, kBlob };
  int column_count() const;
  std::string column_name(int col) const;
  ColumnKind column_kind(int col) const;
  bool IsNull(int col) const { return column_kind(col) == ColumnKind::kNull; }
  int64_t ColumnInt64(int col) const;
  double ColumnDouble(int col) const;
  std::string ColumnText(int col) const;

 private:
  friend class SqliteDb;
  Statement(sqlite3_stmt* stmt, sqlite3* db) : stmt_(stmt), db_(db) {}
  absl::Status CheckBind(int rc, int index);

  sqlite3_stmt* stmt_ = nullptr;
  sqlite3* db_ = nullptr;  // not owned
};

// An open transaction. Rolls back in the destructor unless Commit() succeeded.
class Transaction {
 public:
  // BEGIN IMMEDIATE: takes the write lock now (waiting up to the busy
  // timeout), so a read-then-write inside never fails with BUSY halfway.
  [[nodiscard]] static absl::StatusOr<Transaction> BeginImmediate(SqliteDb* db);
  // BEGIN DEFERRED: for consistent multi-statement reads.
  [[nodiscard]] static absl::StatusOr<Transaction> BeginRead(SqliteDb* db);

  Transaction(Transaction&& other) noexcept;
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  // On failure the transaction has been rolled back.
  [[nodiscard]] absl::Status Commit();

 private:
  explicit Transaction(SqliteDb* db) : db_(db) {}
  SqliteDb* db_;  // not owned; null once finished or moved from
};

}  // namespace sqlite
}  // namespace pulsesync

#endif  // PULSESYNC_CLIENT_STORE_SQLITE_H_
