#include "server/storage/pg_session.h"

#include <poll.h>

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

struct PgSession::Receiver final : public pqxx::notification_receiver {
  Receiver(pqxx::connection_base& c, const std::string& channel, int* counter)
      : pqxx::notification_receiver(c, channel), counter_(counter) {}
  void operator()(const std::string&, int) override { ++*counter_; }
  int* counter_;
};

absl::Status PgSession::Report(absl::Status status) {
  if (options_.on_database_error) options_.on_database_error(status);
  return status;
}

absl::Status PgSession::DatabaseError(const std::exception& e) {
  return Report(StatusFromException(e));
}

PgSession::PgSession(PgSessionOptions options) : options_(std::move(options)) {}

PgSession::~PgSession() { Disconnect(); }

void PgSession::Disconnect() {
  receivers_.clear();
  conn_.reset();
}

absl::Status PgSession::Listen(const std::string& channel) {
  channels_.push_back(channel);
  if (conn_ == nullptr) return EnsureConnected();  // listens on connect
  try {
    receivers_.push_back(std::make_unique<Receiver>(*conn_, channel, &notifications_));
    return absl::OkStatus();
  } catch (const std::exception& e) {
    Disconnect();
    return DatabaseError(e);
  }
}

absl::StatusOr<int> PgSession::WaitForNotification(absl::Duration timeout, int wake_fd) {
  absl::Status status = EnsureConnected();
  if (!status.ok()) return status;
  try {
    notifications_ = 0;
    conn_->get_notifs();  // some may have arrived during earlier work
    if (notifications_ > 0) return notifications_;
    pollfd fds[2] = {{conn_->sock(), POLLIN, 0}, {wake_fd, POLLIN, 0}};
    const int n = ::poll(fds, wake_fd >= 0 ? 2 : 1,
                         static_cast<int>(absl::ToInt64Milliseconds(timeout)));
    if (n > 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      conn_->get_notifs();
      if (!conn_->is_open()) {
        Disconnect();
        return absl::UnavailableError("database unavailable: connection closed");
      }
    }
    return notifications_;
  } catch (const std::exception& e) {
    Disconnect();
    return DatabaseError(e);
  }
}

absl::Status PgSession::EnsureConnected() {
  if (conn_ != nullptr && conn_->is_open()) return absl::OkStatus();
  Disconnect();
  try {
    auto conn = std::make_unique<pqxx::connection>(options_.database_url);
    for (const PreparedStatement& s : options_.statements) conn->prepare(s.name, s.sql);
    conn_ = std::move(conn);
    for (const std::string& channel : channels_) {
      receivers_.push_back(std::make_unique<Receiver>(*conn_, channel, &notifications_));
    }
    return absl::OkStatus();
  } catch (const std::exception& e) {
    Disconnect();
    absl::Status s = StatusFromException(e);
    if (s.code() == absl::StatusCode::kInternal) {
      // A connection that cannot be made is unavailability, whatever libpq said.
      s = absl::UnavailableError(absl::StrCat("database unavailable: ", s.message()));
    }
    return Report(std::move(s));
  }
}

absl::Status PgSession::RunTransaction(
    TxMode mode, const TxIdentity& identity,
    const std::function<absl::Status(pqxx::transaction_base&)>& body) {
  if (identity.role.empty()) return RunTransaction(mode, body);
  if (identity.role != "anon" && identity.role != "authenticated" &&
      identity.role != "service_role") {
    return absl::PermissionDeniedError(
        absl::StrCat("role \"", identity.role, "\" is not one a request may take"));
  }
  return RunTransaction(mode, [&](pqxx::transaction_base& tx) -> absl::Status {
    tx.exec_params("SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
                   identity.role, identity.claims_json);
    return body(tx);
  });
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
      status = DatabaseError(e);
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
