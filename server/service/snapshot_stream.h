// The Snapshot call: a worker reads the rows in one snapshot (core/snapshot.h)
// and hands them over in chunks; the reactor writes one chunk at a time.
// The worker waits while a few chunks are queued (flow control), and gives
// up if the client stops reading for kStallTimeout.
//
// Thread safety: the worker thread and gRPC threads meet under mu_. The
// reactor deletes itself in OnDone once the worker is done with it.
#ifndef PULSESYNC_SERVER_SERVICE_SNAPSHOT_STREAM_H_
#define PULSESYNC_SERVER_SERVICE_SNAPSHOT_STREAM_H_

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "pulsesync/v1/sync.grpc.pb.h"
#include "server/core/principal.h"
#include "server/service/principal_limits.h"

namespace pulsesync {

class WorkerPool;
class SnapshotReactor;

// Bounds how many snapshots hold a worker at once (each holds one for its
// whole transaction), and cancels the running ones at shutdown so that the
// workers can stop. Thread-safe.
class SnapshotLimiter {
 public:
  explicit SnapshotLimiter(int max_running) : max_running_(max_running < 1 ? 1 : max_running) {}
  bool TryAdd(SnapshotReactor* reactor);
  void Remove(SnapshotReactor* reactor);
  // Cancels every running snapshot and refuses new ones.
  void CancelAll();

 private:
  const int max_running_;
  absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<SnapshotReactor*> running_ ABSL_GUARDED_BY(mu_);
};

class SnapshotReactor final : public grpc::ServerWriteReactor<v1::SnapshotResponse> {
 public:
  SnapshotReactor(const v1::SnapshotRequest* request, WorkerPool* pool,
                  SnapshotLimiter* limiter, absl::StatusOr<Principal> principal,
                  std::unique_ptr<PrincipalLimits::StreamLease> lease);

  // Stops the worker's read (it aborts its transaction) and ends the call.
  void Cancel();

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  static constexpr size_t kMaxQueued = 4;

  enum class Action { kNone, kWrite, kFinish };
  Action Decide(grpc::Status* status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Execute(Action action, const grpc::Status& status);
  void Pump();

  const v1::SnapshotRequest request_;
  SnapshotLimiter* const limiter_;
  bool limited_ = false;  // counted by limiter_; set in the constructor
  const absl::StatusOr<Principal> principal_;
  const std::unique_ptr<PrincipalLimits::StreamLease> lease_;

  absl::Mutex mu_;
  std::deque<v1::SnapshotResponse> queue_ ABSL_GUARDED_BY(mu_);
  v1::SnapshotResponse message_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool producing_ ABSL_GUARDED_BY(mu_) = false;  // a worker holds `this`
  bool produced_ ABSL_GUARDED_BY(mu_) = false;   // the worker is finished
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> error_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_SERVICE_SNAPSHOT_STREAM_H_
