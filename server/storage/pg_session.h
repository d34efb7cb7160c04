// PgSession: one PostgreSQL connection, owned by one thread, with the
// statements it prepares once per connection; and the one place where
// libpqxx exceptions become absl::Status.
//
// Thread safety: none. A PgSession belongs to one worker thread (see
// WorkerPool); libpqxx connections must not be shared between threads.
#ifndef PULSESYNC_SERVER_STORAGE_PG_SESSION_H_
#define PULSESYNC_SERVER_STORAGE_PG_SESSION_H_

#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace pqxx {
class connection_base;
class transaction_base;
}  // namespace pqxx

namespace pulsesync {

// A statement prepared on every connection a PgSession opens.
struct PreparedStatement {
  std::string name;
  std::string sql;
};

struct PgSessionOptions {
  std::string database_url;
  std::vector<PreparedStatement> statements;
  // Retries of a transaction that failed with a serialization failure or a
  // deadlock (SQLSTATE 40001 / 40P01) before kAborted is returned.
  int max_transaction_attempts = 3;
  // Called on the session's thread with each error that PostgreSQL or libpq
  // raised (a failed connect, a failed statement, a lost connection), once
  // per occurrence, retried ones included. For metrics; must not block.
  std::function<void(const absl::Status&)> on_database_error;
};

// Who the transaction runs as (PostgREST style): `role` is set with
// set_config('role', ..., true) and `claims_json` as request.jwt.claims,
// both transaction-local. An empty role keeps the session's own role.
struct TxIdentity {
  std::string role;
  std::string claims_json;
};

enum class TxMode {
  kReadWrite,           // READ COMMITTED, read-write
  kRepeatableReadOnly,  // REPEATABLE READ, read-only: one snapshot throughout
};

// Translates a libpqxx or std exception into a Status:
//   broken connection -> kUnavailable, serialization failure/deadlock ->
//   kAborted, unique violation -> kAlreadyExists, other integrity and data
//   errors -> kInvalidArgument or kFailedPrecondition, commit outcome unknown
//   -> kUnknown, anything else -> kInternal. Messages include the SQLSTATE.
absl::Status StatusFromException(const std::exception& e);

class PgSession {
 public:
  explicit PgSession(PgSessionOptions options);
  ~PgSession();
  PgSession(const PgSession&) = delete;
  PgSession& operator=(const PgSession&) = delete;

  // Runs `body` in a transaction and commits it if `body` returns OK;
  // otherwise (or if `body` throws) the transaction rolls back and the error
  // is returned. Connects (or reconnects) first when needed. Retries the
  // whole transaction, body included, after a serialization failure or
  // deadlock, and once after a connection that turned out broken before
  // commit; `body` must therefore be safe to run again.
  //
  // Errors: kUnavailable when PostgreSQL cannot be reached; kAborted when
  // retries ran out; kUnknown when the connection broke during COMMIT (the
  // transaction may or may not have committed); body's own errors as is.
  absl::Status RunTransaction(TxMode mode,
                              const std::function<absl::Status(pqxx::transaction_base&)>& body);
  // The same, as `identity` (see TxIdentity). Only the Supabase roles anon,
  // authenticated and service_role are accepted (kPermissionDenied else).
  absl::Status RunTransaction(TxMode mode, const TxIdentity& identity,
                              const std::function<absl::Status(pqxx::transaction_base&)>& body);

  // Opens the connection now if it is not open. kUnavailable on failure.
  absl::Status EnsureConnected();

  // Drops the connection (the next use reconnects).
  void Disconnect();

  // LISTENs on `channel` now and after every reconnect. kUnavailable if the
  // database cannot be reached (the channel is still remembered).
  absl::Status Listen(const std::string& channel);

  // Waits until a notification arrives on a LISTENed channel, `wake_fd`
  // (an eventfd or pipe, -1 for none) becomes readable, or `timeout` passes.
  // Returns the number of notifications received (0 on timeout or wake).
  // kUnavailable when the connection is lost (the next call reconnects).
  absl::StatusOr<int> WaitForNotification(absl::Duration timeout, int wake_fd = -1);

  bool connected() const { return conn_ != nullptr; }

 private:
  struct Receiver;
  // StatusFromException(e), reported to options_.on_database_error.
  absl::Status DatabaseError(const std::exception& e);
  absl::Status Report(absl::Status status);

  PgSessionOptions options_;
  std::unique_ptr<pqxx::connection_base> conn_;
  std::vector<std::string> channels_;
  // Destroyed before conn_ (they refer to it): see Disconnect().
  std::vector<std::unique_ptr<Receiver>> receivers_;
  int notifications_ = 0;
};

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_STORAGE_PG_SESSION_H_
