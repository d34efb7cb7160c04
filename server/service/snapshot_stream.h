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
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "pulsesync/v1/sync.grpc.pb.h"

namespace pulsesync {

class WorkerPool;

class SnapshotReactor final : public grpc::ServerWriteReactor<v1::SnapshotResponse> {
 public:
  SnapshotReactor(grpc::CallbackServerContext* context, const v1::SnapshotRequest* request,
                  WorkerPool* pool);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  static constexpr size_t kMaxQueued = 4;

  void Pump();

  const v1::SnapshotRequest request_;
  std::string user_id_;

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
