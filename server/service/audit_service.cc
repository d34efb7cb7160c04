#include "server/service/audit_service.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/log.h"
#include "server/core/audit_trail.h"
#include "server/core/team_scope.h"
#include "server/service/call_interceptor.h"
#include "server/service/sync_service.h"
#include "server/storage/worker_pool.h"

namespace pulsesync {
namespace {

constexpr uint32_t kDefaultPageSize = 100;
constexpr uint32_t kMaxPageSize = 1000;
constexpr size_t kMaxQueued = 2;

// State table (all under mu_; Decide picks the next step):
//   a page is queued, no write in flight      -> write it
//   nothing queued, pages left, no job        -> submit a job for the next page
//   error (after queued pages) or exhausted   -> Finish
//   cancelled                                 -> Finish (CANCELLED)
// Deleted in OnDone, or by the job that finds OnDone already happened.
class AuditTrailReactor final : public grpc::ServerWriteReactor<v1::GetAuditTrailResponse> {
 public:
  AuditTrailReactor(const v1::GetAuditTrailRequest& request, WorkerPool* pool,
                    absl::StatusOr<Principal> principal,
                    std::unique_ptr<PrincipalLimits::StreamLease> lease, std::string request_id)
      : pool_(pool), lease_(std::move(lease)), request_id_(std::move(request_id)) {
    absl::StatusOr<AuditQuery> query = AuditQueryFrom(request);
    {
      absl::MutexLock lock(&mu_);
      if (!principal.ok()) {
        error_ = ToGrpcStatus(principal.status());
      } else if (!query.ok()) {
        error_ = ToGrpcStatus(query.status());
      } else {
        principal_ = std::move(*principal);
        query_ = std::move(*query);
        cursor_ = request.cursor();
      }
      page_size_ = request.page_size() == 0 ? kDefaultPageSize
                                            : std::min(request.page_size(), kMaxPageSize);
      remaining_ = request.limit() == 0 ? std::numeric_limits<int64_t>::max() : request.limit();
      if (error_.has_value()) exhausted_ = true;
    }
    Pump();
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      if (!ok) cancelled_ = true;
    }
    Pump();
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
    }
    Pump();
  }

  void OnDone() override {
    bool delete_now;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      delete_now = !job_running_;
    }
    if (delete_now) delete this;
  }

 private:
  enum class Action { kNone, kWrite, kSubmit, kFinish };

  Action Decide(grpc::Status* status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || write_in_flight_) return Action::kNone;
    if (cancelled_) {
      finished_ = true;
      *status = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
      return Action::kFinish;
    }
    if (!queue_.empty()) {
      message_ = std::move(queue_.front());
      queue_.pop_front();
      write_in_flight_ = true;
      return Action::kWrite;
    }
    if (error_.has_value() && !job_running_) {
      finished_ = true;
      *status = *error_;
      return Action::kFinish;
    }
    if (exhausted_ && !job_running_) {
      finished_ = true;
      *status = grpc::Status::OK;
      return Action::kFinish;
    }
    if (!exhausted_ && !job_running_ && queue_.size() < kMaxQueued) {
      job_running_ = true;
      return Action::kSubmit;
    }
    return Action::kNone;
  }

  // Outside mu_. After kFinish the caller must not touch `this`.
  void Execute(Action action, const grpc::Status& status) {
    switch (action) {
      case Action::kNone:
        return;
      case Action::kWrite:
        StartWrite(&message_);
        return;
      case Action::kFinish:
        Finish(status);
        return;
      case Action::kSubmit:
        Submit();
        return;
    }
  }

  void Pump() {
    grpc::Status status;
    Action action;
    {
      absl::MutexLock lock(&mu_);
      action = Decide(&status);
    }
    Execute(action, status);
  }

  void Submit() {
    const absl::Status queued = pool_->Submit([this](PgSession& session) { ReadPage(session); });
    if (!queued.ok()) {
      {
        absl::MutexLock lock(&mu_);
        job_running_ = false;
        error_ = ToGrpcStatus(queued);
        exhausted_ = true;
      }
      Pump();
    }
  }

  // On a worker, while job_running_ keeps `this` alive.
  void ReadPage(PgSession& session) {
    LogRequestScope log_scope(request_id_);
    AuditQuery query;
    uint32_t want;
    std::optional<AuditScope> scope;  // copied: the page is read outside mu_
    {
      absl::MutexLock lock(&mu_);
      query = query_;
      want = static_cast<uint32_t>(std::min<int64_t>(page_size_, remaining_));
      if (scope_loaded_) scope = scope_;
    }
    absl::Status status;
    if (!scope.has_value()) {
      absl::StatusOr<TeamScope> team_scope = TeamScope::For(session, principal_);
      if (team_scope.ok()) {
        scope = AuditScope::From(*team_scope, principal_.user_id);
      } else {
        status = team_scope.status();
      }
    }
    absl::StatusOr<std::vector<v1::AuditEntry>> entries =
        status.ok() ? ReadAuditPage(session, query, *scope, want)
                    : absl::StatusOr<std::vector<v1::AuditEntry>>(status);
    bool delete_now;
    Action action = Action::kNone;
    grpc::Status finish_status;
    {
      absl::MutexLock lock(&mu_);
      job_running_ = false;
      if (!scope_loaded_ && scope.has_value()) {
        scope_ = std::move(*scope);
        scope_loaded_ = true;
      }
      if (!entries.ok()) {
        error_ = ToGrpcStatus(entries.status());
        exhausted_ = true;
      } else {
        v1::GetAuditTrailResponse page;
        const int64_t n = static_cast<int64_t>(entries->size());
        for (v1::AuditEntry& e : *entries) *page.add_entries() = std::move(e);
        if (n > 0) {
          cursor_ = page.entries(static_cast<int>(n - 1)).cursor();
          query_.after_position = page.entries(static_cast<int>(n - 1)).position();
        }
        remaining_ -= n;
        page.set_next_cursor(cursor_);
        if (n < want) {
          exhausted_ = true;  // the end of the trail
        } else if (remaining_ <= 0) {
          exhausted_ = true;
          page.set_has_more(true);
        }
        if (n > 0 || exhausted_) queue_.push_back(std::move(page));
      }
      delete_now = done_;
      if (!delete_now) action = Decide(&finish_status);
    }
    if (delete_now) {
      delete this;
      return;
    }
    Execute(action, finish_status);
  }

  WorkerPool* const pool_;
  const std::unique_ptr<PrincipalLimits::StreamLease> lease_;
  const std::string request_id_;
  Principal principal_;  // set in the constructor, then read-only

  absl::Mutex mu_;
  AuditQuery query_ ABSL_GUARDED_BY(mu_);
  AuditScope scope_ ABSL_GUARDED_BY(mu_);
  bool scope_loaded_ ABSL_GUARDED_BY(mu_) = false;
  std::string cursor_ ABSL_GUARDED_BY(mu_);
  uint32_t page_size_ ABSL_GUARDED_BY(mu_) = kDefaultPageSize;
  int64_t remaining_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<v1::GetAuditTrailResponse> queue_ ABSL_GUARDED_BY(mu_);
  v1::GetAuditTrailResponse message_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool job_running_ ABSL_GUARDED_BY(mu_) = false;
  bool exhausted_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

grpc::ServerWriteReactor<v1::GetAuditTrailResponse>* AuditServiceImpl::GetAuditTrail(
    grpc::CallbackServerContext* context, const v1::GetAuditTrailRequest* request) {
  absl::StatusOr<Principal> principal = auth_->Authenticate(MetadataOf(context));
  std::unique_ptr<PrincipalLimits::StreamLease> lease;
  if (principal.ok()) {
    absl::StatusOr<std::unique_ptr<PrincipalLimits::StreamLease>> slot =
        limits_->AcquireStream(*principal);
    if (slot.ok()) {
      lease = std::move(*slot);
    } else {
      principal = slot.status();
    }
  }
  return new AuditTrailReactor(*request, pool_, std::move(principal), std::move(lease),
                               RequestIdOf(context));
}

grpc::ServerUnaryReactor* AuditServiceImpl::ListOrigins(grpc::CallbackServerContext* context,
                                                        const v1::ListOriginsRequest* request,
                                                        v1::ListOriginsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<Principal> principal = auth_->Authenticate(MetadataOf(context));
  if (!principal.ok()) {
    reactor->Finish(ToGrpcStatus(principal.status()));
    return reactor;
  }
  const absl::Status queued = pool_->Submit(
      [reactor, request, response, principal = *std::move(principal),
       request_id = RequestIdOf(context)](PgSession& session) {
        LogRequestScope log_scope(request_id);
        absl::StatusOr<TeamScope> team_scope = TeamScope::For(session, principal);
        if (!team_scope.ok()) {
          reactor->Finish(ToGrpcStatus(team_scope.status()));
          return;
        }
        absl::StatusOr<std::vector<v1::OriginInfo>> origins =
            pulsesync::ListOrigins(session, request->user_id(), request->team_id(),
                                   AuditScope::From(*team_scope, principal.user_id),
                                   principal.user_id);
        if (origins.ok()) {
          for (v1::OriginInfo& o : *origins) *response->add_origins() = std::move(o);
        }
        reactor->Finish(ToGrpcStatus(origins.status()));
      });
  if (!queued.ok()) reactor->Finish(ToGrpcStatus(queued));
  return reactor;
}

}  // namespace pulsesync
