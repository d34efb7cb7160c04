#include "server/service/snapshot_stream.h"

#include <algorithm>
#include <utility>

#include "absl/time/time.h"
#include "server/core/snapshot.h"
#include "server/core/team_scope.h"
#include "server/service/change_stream.h"
#include "server/service/sync_service.h"
#include "server/storage/worker_pool.h"

namespace pulsesync {
namespace {
constexpr absl::Duration kStallTimeout = absl::Minutes(5);
}  // namespace

bool SnapshotLimiter::TryAdd(SnapshotReactor* reactor) {
  absl::MutexLock lock(&mu_);
  if (closed_ || static_cast<int>(running_.size()) >= max_running_) return false;
  running_.push_back(reactor);
  return true;
}

void SnapshotLimiter::Remove(SnapshotReactor* reactor) {
  absl::MutexLock lock(&mu_);
  running_.erase(std::remove(running_.begin(), running_.end(), reactor), running_.end());
}

void SnapshotLimiter::CancelAll() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
  for (SnapshotReactor* r : running_) r->Cancel();
}

SnapshotReactor::SnapshotReactor(const v1::SnapshotRequest* request, WorkerPool* pool,
                                 SnapshotLimiter* limiter, absl::StatusOr<Principal> principal,
                                 std::unique_ptr<PrincipalLimits::StreamLease> lease)
    : request_(*request),
      limiter_(limiter),
      principal_(std::move(principal)),
      lease_(std::move(lease)) {
  limited_ = principal_.ok() && limiter_->TryAdd(this);
  if (!limited_) {
    {
      absl::MutexLock lock(&mu_);
      produced_ = true;
      error_ = !principal_.ok()
                   ? ToGrpcStatus(principal_.status())
                   : grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                  "too many snapshots in progress (or shutting down): retry "
                                  "with backoff");
    }
    Pump();
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    producing_ = true;
  }
  const absl::Status queued = pool->Submit([this](PgSession& session) {
    SnapshotOptions options;
    options.tables.assign(request_.tables().begin(), request_.tables().end());
    options.rows_per_chunk = request_.rows_per_message();
    options.include_deleted = request_.include_deleted();
    absl::Status status;
    absl::StatusOr<TeamScope> scope = TeamScope::For(session, *principal_);
    status = scope.status();
    if (scope.ok() && scope->restricted()) {
      options.restricted = true;
      options.teams = scope->teams();
      options.visible_users = scope->teammates();
      if (!principal_->user_id.empty()) options.visible_users.insert(principal_->user_id);
    }
    absl::StatusOr<std::string> cursor = std::string();
    if (!status.ok()) {
      cursor = status;
    } else {
      cursor = ReadSnapshot(session, options, [this](SnapshotChunk chunk) -> absl::Status {
        v1::SnapshotResponse msg;
        v1::SnapshotResponse::Rows* rows = msg.mutable_rows();
        rows->set_table(std::move(chunk.table));
        rows->set_object_type(std::move(chunk.object_type));
        for (std::string& r : chunk.records) rows->add_records(std::move(r));
        {
          absl::MutexLock lock(&mu_);
          const bool room = mu_.AwaitWithTimeout(
              absl::Condition(
                  +[](SnapshotReactor* r) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                    return r->cancelled_ || r->queue_.size() < kMaxQueued;
                  },
                  this),
              kStallTimeout);
          if (cancelled_) return absl::CancelledError("client went away");
          if (!room) return absl::DeadlineExceededError("client stopped reading the snapshot");
          queue_.push_back(std::move(msg));
        }
        Pump();
        return absl::OkStatus();
      });
    }
    bool delete_now;
    Action action = Action::kNone;
    grpc::Status finish_status;
    {
      absl::MutexLock lock(&mu_);
      if (cursor.ok()) {
        v1::SnapshotResponse last;
        last.set_cursor(*cursor);
        queue_.push_back(std::move(last));
      } else if (!error_.has_value()) {
        error_ = ToGrpcStatus(cursor.status());
      }
      producing_ = false;
      produced_ = true;
      delete_now = done_;
      if (!delete_now) action = Decide(&finish_status);
    }
    if (delete_now) {
      delete this;
      return;
    }
    Execute(action, finish_status);
  });
  if (!queued.ok()) {
    bool delete_now;
    Action action = Action::kNone;
    grpc::Status finish_status;
    {
      absl::MutexLock lock(&mu_);
      producing_ = false;
      produced_ = true;
      error_ = ToGrpcStatus(queued);
      delete_now = done_;
      if (!delete_now) action = Decide(&finish_status);
    }
    if (delete_now) {
      delete this;
      return;
    }
    Execute(action, finish_status);
  }
}

void SnapshotReactor::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  if (!error_.has_value()) {
    error_ = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "server shutting down: take the snapshot again elsewhere or later");
  }
}

SnapshotReactor::Action SnapshotReactor::Decide(grpc::Status* status) {
  if (finished_ || write_in_flight_) return Action::kNone;
  if (cancelled_ || (error_.has_value() && produced_)) {
    finished_ = true;
    *status = error_.value_or(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
    return Action::kFinish;
  }
  if (!queue_.empty()) {
    message_ = std::move(queue_.front());
    queue_.pop_front();
    write_in_flight_ = true;
    return Action::kWrite;
  }
  if (produced_) {
    finished_ = true;
    *status = error_.value_or(grpc::Status::OK);
    return Action::kFinish;
  }
  return Action::kNone;
}

// Outside mu_; after kNone the caller must not touch `this`.
void SnapshotReactor::Execute(Action action, const grpc::Status& status) {
  if (action == Action::kWrite) StartWrite(&message_);
  if (action == Action::kFinish) Finish(status);
}

// Only from gRPC reactions and from the worker while it holds `producing_`,
// when the reactor cannot be deleted underneath.
void SnapshotReactor::Pump() {
  grpc::Status status;
  Action action;
  {
    absl::MutexLock lock(&mu_);
    action = Decide(&status);
  }
  Execute(action, status);
}

void SnapshotReactor::OnWriteDone(bool ok) {
  {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    if (!ok) cancelled_ = true;
  }
  Pump();
}

void SnapshotReactor::OnCancel() {
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
  }
  Pump();
}

void SnapshotReactor::OnDone() {
  if (limited_) limiter_->Remove(this);
  bool delete_now;
  {
    absl::MutexLock lock(&mu_);
    done_ = true;
    cancelled_ = true;  // releases a waiting worker
    delete_now = !producing_;
  }
  if (delete_now) delete this;
}

}  // namespace pulsesync
