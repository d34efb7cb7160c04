#include "server/storage/pg_session.h"

#include <pqxx/pqxx>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace pulsesync {
namespace {

std::string TrimMessage(const char* what) {
  std::string s(what);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

absl::Status StatusFromException(const std::exception& e) {
  const std::string msg = TrimMessage(e.what());
  if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr) {
    return absl::UnavailableError(absl::StrCat("database unavailable: ", msg));
  }
  if (dynamic_cast<const pqxx::in_doubt_error*>(&e) != nullptr) {
    return absl::UnknownError(absl::StrCat("commit outcome unknown: ", msg));
  }
  if (dynamic_cast<const pqxx::transaction_rollback*>(&e) != nullptr) {
    return absl::AbortedError(absl::StrCat("transaction rolled back: ", msg));
  }
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) {
    const std::string& state = sql->sqlstate();
    const std::string text = absl::StrCat(msg, " [SQLSTATE ", state, "]");
    if (state == "40001" || state == "40P01") return absl::AbortedError(text);
    if (state == "23505") return absl::AlreadyExistsError(text);
    if (absl::StartsWith(state, "23")) return absl::FailedPreconditionError(text);
    if (absl::StartsWith(state, "22")) return absl::InvalidArgumentError(text);
    if (absl::StartsWith(state, "08") || state == "57P01" || state == "57P02" ||
        state == "57P03") {
      return absl::UnavailableError(absl::StrCat("database unavailable: ", text));
    }
    if (state == "57014") return absl::DeadlineExceededError(text);
    if (absl::StartsWith(state, "53")) return absl::ResourceExhaustedError(text);
    return absl::InternalError(text);
  }
  return absl::InternalError(absl::StrCat("database error: ", msg));
}

PgSession::PgSession(PgSessionOptions options) : options_(std::move(options)) {}

PgSession::~PgSession() = default;

void PgSession::Disconnect() { conn_.reset(); }

absl::Status PgSession::EnsureConnected() {
  if (conn_ != nullptr && conn_->is_open()) return absl::OkStatus();
  conn_.reset();
  try {
    auto conn = std::make_unique<pqxx::connection>(options_.database_url);
    for (const PreparedStatement& s : options_.statements) conn->prepare(s.name, s.sql);
    conn_ = std::move(conn);
    return absl::OkStatus();
  } catch (const std::exception& e) {
    absl::Status s = StatusFromException(e);
    if (s.code() == absl::StatusCode::kInternal) {
      // A connection that cannot be made is unavailability, whatever libpq said.
      s = absl::UnavailableError(absl::StrCat("database unavailable: ", s.message()));
    }
    return s;
  }
}

absl::Status PgSession::RunTransaction(
    TxMode mode, const std::function<absl::Status(pqxx::transaction_base&)>& body) {
  bool reconnected = false;
  for (int attempt = 1;; ++attempt) {
    absl::Status status = EnsureConnected();
    if (!status.ok()) return status;
    bool committing = false;
    try {
      if (mode == TxMode::kRepeatableReadOnly) {
        pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx(*conn_);
        status = body(tx);
        if (status.ok()) {
          committing = true;
          tx.commit();
        }
      } else {
        pqxx::work tx(*conn_);
        status = body(tx);
        if (status.ok()) {
          committing = true;
          tx.commit();
        }
      }
      return status;
    } catch (const std::exception& e) {
      status = StatusFromException(e);
      if (status.code() == absl::StatusCode::kUnavailable) {
        Disconnect();
        if (committing) {
          return absl::UnknownError(
              absl::StrCat("connection lost during commit: ", status.message()));
        }
        // A connection that broke while idle in the pool (e.g. PostgreSQL
        // restarted) deserves one fresh try.
        if (!reconnected) {
          reconnected = true;
          LogInfo("reconnecting to the database", {{"reason", status.message()}});
          continue;
        }
        return status;
      }
      if (status.code() == absl::StatusCode::kAborted &&
          attempt < options_.max_transaction_attempts) {
        LogDebug("retrying transaction", {{"attempt", attempt}, {"reason", status.message()}});
        continue;
      }
      return status;
    }
  }
}

}  // namespace pulsesync
