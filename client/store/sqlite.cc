#include "client/store/sqlite.h"

#include <sqlite3.h>

#include <cerrno>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace pulsesync {
namespace sqlite {

absl::Status StatusFromSqlite(int rc, absl::string_view context, sqlite3* db) {
  if (rc == SQLITE_OK || rc == SQLITE_ROW || rc == SQLITE_DONE) return absl::OkStatus();
  std::string message =
      absl::StrCat(context, ": ", db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  // A full disk (or the database's size limit) fails the statement and
  // rolls its transaction back; say so plainly, whichever way SQLite
  // reports it (SQLITE_FULL, or an I/O error whose errno is ENOSPC).
  const int sys_errno = db != nullptr ? sqlite3_system_errno(db) : 0;
  if ((rc & 0xff) == SQLITE_FULL ||
      ((rc & 0xff) == SQLITE_IOERR && (sys_errno == ENOSPC || sys_errno == EDQUOT))) {
    return absl::ResourceExhaustedError(absl::StrCat(
        message, " (the local database is full: free disk space or raise its size limit, "
                 "then retry; nothing of this write was stored)"));
  }
  switch (rc) {
    case SQLITE_BUSY_SNAPSHOT:
      return absl::AbortedError(message);
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_UNIQUE:
      return absl::AlreadyExistsError(message);
    default:
      break;
  }
  switch (rc & 0xff) {
    case SQLITE_BUSY:
      return absl::UnavailableError(message);
    case SQLITE_LOCKED:
      return absl::AbortedError(message);
    case SQLITE_CONSTRAINT:
      return absl::FailedPreconditionError(message);
    case SQLITE_CANTOPEN:
      return absl::NotFoundError(message);
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_AUTH:
      return absl::PermissionDeniedError(message);
    case SQLITE_FULL:
    case SQLITE_NOMEM:
      return absl::ResourceExhaustedError(message);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(message);
    case SQLITE_TOOBIG:
    case SQLITE_RANGE:
    case SQLITE_MISMATCH:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

// --- SqliteDb ---

absl::StatusOr<SqliteDb> SqliteDb::Open(const std::string& path, bool create) {
  sqlite3* db = nullptr;
  // NOMUTEX: the owner serializes access (see LocalStore).
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
  if (create) flags |= SQLITE_OPEN_CREATE;
  const int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  SqliteDb owner(db);  // sqlite3_open_v2 may allocate a handle even on error
  if (rc != SQLITE_OK) {
    return StatusFromSqlite(rc, absl::StrCat("cannot open database ", path), db);
  }
  sqlite3_extended_result_codes(db, 1);
  return owner;
}

SqliteDb::SqliteDb(SqliteDb&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)), cache_(std::move(other.cache_)) {}

SqliteDb& SqliteDb::operator=(SqliteDb&& other) noexcept {
  if (this != &other) {
    Close();
    db_ = std::exchange(other.db_, nullptr);
    cache_ = std::move(other.cache_);
  }
  return *this;
}

SqliteDb::~SqliteDb() { Close(); }

void SqliteDb::Close() {
  cache_.clear();  // finalized before the connection closes
  if (db_ != nullptr) sqlite3_close_v2(db_);
  db_ = nullptr;
}

absl::StatusOr<Statement*> SqliteDb::Cached(absl::string_view sql) {
  auto it = cache_.find(sql);
  if (it == cache_.end()) {
    PS_ASSIGN_OR_RETURN(Statement st, Prepare(sql));
    it = cache_.emplace(std::string(sql), std::make_unique<Statement>(std::move(st))).first;
  }
  it->second->Reset();
  return it->second.get();
}

bool SqliteDb::primary_key_refused() const {
  return sqlite3_extended_errcode(db_) == SQLITE_CONSTRAINT_PRIMARYKEY;
}

absl::Status SqliteDb::Exec(absl::string_view sql) {
  std::string text(sql);
  char* err = nullptr;
  const int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &err);
  if (rc == SQLITE_OK) return absl::OkStatus();
  std::string detail = err != nullptr ? err : sqlite3_errstr(rc);
  sqlite3_free(err);
  absl::Status st = StatusFromSqlite(rc, "exec", nullptr);
  return absl::Status(st.code(), absl::StrCat("exec: ", detail));
}

absl::StatusOr<Statement> SqliteDb::Prepare(absl::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return StatusFromSqlite(rc, absl::StrCat("prepare \"", sql, "\""), db_);
  }
  return Statement(stmt, db_);
}

int64_t SqliteDb::changes() const { return sqlite3_changes64(db_); }

// --- Statement ---

Statement::Statement(Statement&& other) noexcept
    : stmt_(std::exchange(other.stmt_, nullptr)), db_(other.db_) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    sqlite3_finalize(stmt_);
    stmt_ = std::exchange(other.stmt_, nullptr);
    db_ = other.db_;
  }
  return *this;
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

absl::Status Statement::CheckBind(int rc, int index) {
  if (rc == SQLITE_OK) return absl::OkStatus();
  return StatusFromSqlite(rc, absl::StrCat("bind parameter ", index), db_);
}

absl::Status Statement::BindText(int index, absl::string_view value) {
  return CheckBind(
      sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT, SQLITE_UTF8),
      index);
}

absl::Status Statement::BindInt64(int index, int64_t value) {
  return CheckBind(sqlite3_bind_int64(stmt_, index, value), index);
}

absl::Status Statement::BindDouble(int index, double value) {
  return CheckBind(sqlite3_bind_double(stmt_, index, value), index);
}

absl::Status Statement::BindNull(int index) {
  return CheckBind(sqlite3_bind_null(stmt_, index), index);
}

absl::StatusOr<bool> Statement::Step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return StatusFromSqlite(rc, absl::StrCat("step \"", sqlite3_sql(stmt_), "\""), db_);
}

absl::Status Statement::Run() {
  while (true) {
    absl::StatusOr<bool> row = Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
  }
}

void Statement::Reset() { sqlite3_reset(stmt_); }

int Statement::column_count() const { return sqlite3_column_count(stmt_); }

std::string Statement::column_name(int col) const {
  const char* name = sqlite3_column_name(stmt_, col);
  return name != nullptr ? name : "";
}

Statement::ColumnKind Statement::column_kind(int col) const {
  switch (sqlite3_column_type(stmt_, col)) {
    case SQLITE_INTEGER:
      return ColumnKind::kInteger;
    case SQLITE_FLOAT:
      return ColumnKind::kFloat;
    case SQLITE_TEXT:
      return ColumnKind::kText;
    case SQLITE_BLOB:
      return ColumnKind::kBlob;
    default:
      return ColumnKind::kNull;
  }
}

int64_t Statement::ColumnInt64(int col) const { return sqlite3_column_int64(stmt_, col); }

double Statement::ColumnDouble(int col) const { return sqlite3_column_double(stmt_, col); }

std::string Statement::ColumnText(int col) const {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  if (text == nullptr) return std::string();
  return std::string(text, static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
}

// --- Transaction ---

absl::StatusOr<Transaction> Transaction::BeginImmediate(SqliteDb* db) {
  absl::Status st = db->Exec("BEGIN IMMEDIATE");
  if (!st.ok()) return st;
  return Transaction(db);
}

absl::StatusOr<Transaction> Transaction::BeginRead(SqliteDb* db) {
  absl::Status st = db->Exec("BEGIN DEFERRED");
  if (!st.ok()) return st;
  return Transaction(db);
}

Transaction::Transaction(Transaction&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}

Transaction::~Transaction() {
  if (db_ != nullptr) {
    // Best effort: if ROLLBACK fails the connection closes the transaction
    // itself when it is closed; there is nobody to report to here.
    (void)db_->Exec("ROLLBACK");
  }
}

absl::Status Transaction::Commit() {
  if (db_ == nullptr) return absl::FailedPreconditionError("transaction already finished");
  absl::Status st = db_->Exec("COMMIT");
  if (st.ok()) {
    db_ = nullptr;
  }
  // On failure db_ stays set and the destructor rolls back.
  return st;
}

}  // namespace sqlite
}  // namespace pulsesync
