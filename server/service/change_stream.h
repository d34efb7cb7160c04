// The StreamChanges call: one reactor per stream.
//
// Design note. A stream is in one of four modes:
//
//   mode        what it does                               leaves when
//   kStarting   worker job: load the scope and filters     loaded -> kJoining (or kLive
//                                                          with from_now)
//   kJoining    waits for the hub's next poll, then takes  hub advanced -> kCatchingUp
//               its head as the join point (a point after
//               the client's cursor was issued)
//   kCatchingUp worker jobs read the log by the stream's   cursor reaches the join
//               own cursor, bounded by the join point      point -> kLive
//   kLive       writes events of hub batches from the      batch evicted from the ring
//               ring, in order                             -> kJoining
//
// Invariants:
// 1. Exactly one write in flight; at most one worker job in flight.
// 2. The stream's cursor only moves past an event once that event was
//    written or filtered out; every change carries the cursor after it.
// 3. On going live the stream sends a checkpoint with its cursor (unless it
//    just sent that cursor): the client learns that it has caught up, and a
//    from_now stream gets a cursor to resume from.
// 4. Memory per stream is one batch reference plus one message: a slow
//    client is never buffered for, it falls out of the ring and catches up
//    from the log. A message is its changes' encodings side by side, each
//    encoded once for all streams (FeedEvent::wire) and copied, not
//    serialized again, per stream.
// 5. The reactor deletes itself in OnDone, only after its hub listener is
//    removed and no worker job refers to it.
//
// Thread safety: gRPC threads (OnWriteDone, OnCancel, OnDone), the hub
// thread (OnFeedAdvanced) and worker threads (job completions) all enter
// through Pump(), which takes mu_; writes and Finish are started outside it.
#ifndef PULSESYNC_SERVER_SERVICE_CHANGE_STREAM_H_
#define PULSESYNC_SERVER_SERVICE_CHANGE_STREAM_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "pulsesync/v1/sync.grpc.pb.h"
#include "server/core/change_filter.h"
#include "server/core/cursor.h"
#include "server/core/feed_hub.h"
#include "server/core/principal.h"
#include "server/core/team_scope.h"
#include "server/service/principal_limits.h"

namespace pulsesync {

class WorkerPool;

struct ChangeStreamOptions {
  uint32_t catch_up_page = 500;
  absl::Duration checkpoint_interval = absl::Seconds(1);
  int max_changes_per_message = 256;
  // Approximate, from the records' sizes. Each stream has at most one
  // message in flight, so this bounds per-stream memory.
  size_t max_message_bytes = 64 << 10;
};

// Writes encoded StreamChangesResponse messages (the method is registered
// raw, sync_service.h): each message is its changes' encodings side by
// side, a valid StreamChangesResponse to any client.
class ChangeStreamReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                                  private FeedHub::Listener {
 public:
  // `lease` holds the caller's stream slot until the reactor is gone.
  ChangeStreamReactor(const v1::StreamChangesRequest* request, WorkerPool* pool, FeedHub* hub,
                      absl::StatusOr<Principal> principal,
                      std::unique_ptr<PrincipalLimits::StreamLease> lease,
                      ChangeStreamOptions options);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  enum class Mode { kStarting, kJoining, kCatchingUp, kLive };
  enum class Action { kNone, kWrite, kFinish, kReadLog };

  void OnFeedAdvanced(bool closing) override;
  void Pump();
  // The next thing to do; marks the stream finished when that is Finish.
  Action Decide(grpc::Status* status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Execute(Action action, const grpc::Status& status) ABSL_LOCKS_EXCLUDED(mu_);
  void SubmitFailed(const absl::Status& why) ABSL_LOCKS_EXCLUDED(mu_);
  // Ends a worker job: under mu_, counts it done and, unless the reactor is
  // being deleted, runs `apply` (the job's result) and decides what to do
  // next; then deletes the reactor or does that outside the lock. `this`
  // must not be touched by the caller afterwards.
  void CompleteJob(const std::function<void()>& apply) ABSL_LOCKS_EXCLUDED(mu_);
  Action NextAction() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Packs the source's ready changes into parts_; true when that filled a
  // message and started its write.
  bool NextFromSource() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The packed changes as the message to write.
  void WritePacked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A checkpoint with the stream's cursor as the message to write.
  void WriteCheckpoint() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // WriteCheckpoint, if the cursor moved past what the client has and the
  // interval passed since the last write.
  bool WriteCheckpointIfDue() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartJob();
  void ReadLogPage();
  void FinishWith(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Worker job bookkeeping; returns true if the reactor may be deleted.
  bool EndJob() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  WorkerPool* const pool_;
  FeedHub* const hub_;
  const ChangeStreamOptions options_;
  const v1::StreamChangesRequest request_;
  const absl::StatusOr<Principal> principal_;
  const std::unique_ptr<PrincipalLimits::StreamLease> lease_;

  absl::Mutex mu_;
  Mode mode_ ABSL_GUARDED_BY(mu_) = Mode::kStarting;
  std::optional<ChangeFilter> filter_ ABSL_GUARDED_BY(mu_);
  std::optional<TeamScope> scope_ ABSL_GUARDED_BY(mu_);
  std::string cursor_ ABSL_GUARDED_BY(mu_);  // encoded; what has been passed
  Cursor join_ ABSL_GUARDED_BY(mu_);         // kCatchingUp target
  uint64_t join_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;  // kLive: next hub batch
  bool caught_up_ ABSL_GUARDED_BY(mu_) = false;
  bool announce_live_ ABSL_GUARDED_BY(mu_) = false;  // checkpoint on going live
  std::shared_ptr<const FeedBatch> source_ ABSL_GUARDED_BY(mu_);
  bool source_live_ ABSL_GUARDED_BY(mu_) = false;
  size_t index_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_sent_cursor_ ABSL_GUARDED_BY(mu_);
  absl::Time last_write_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // The next message's changes (encodings in the batches held), not yet
  // written, and the cursor after the last of them.
  std::vector<const std::string*> parts_ ABSL_GUARDED_BY(mu_);
  size_t parts_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::shared_ptr<const FeedBatch>> held_ ABSL_GUARDED_BY(mu_);
  std::string packed_cursor_ ABSL_GUARDED_BY(mu_);
  grpc::ByteBuffer message_ ABSL_GUARDED_BY(mu_);          // the write in flight
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  int jobs_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<grpc::Status> finish_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool listening_ = false;  // set in the constructor, before any callback can run
};

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_SERVICE_CHANGE_STREAM_H_
