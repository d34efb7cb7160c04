// The gRPC face of the sync engine: pulsesync.v1.SyncService on the
// callback API. Reactions never block: each call validates and decodes its
// request, submits a job to the WorkerPool (which owns the database
// connections), and the job finishes the call.
//
// Thread safety: gRPC calls the handlers on its threads; jobs run on worker
// threads. The service holds no mutable state of its own.
#ifndef PULSESYNC_SERVER_SERVICE_SYNC_SERVICE_H_
#define PULSESYNC_SERVER_SERVICE_SYNC_SERVICE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"
#include "pulsesync/v1/sync.grpc.pb.h"
#include "server/core/principal.h"
#include "server/core/revision_applier.h"
#include "server/service/principal_limits.h"

namespace pulsesync {

class FeedHub;
class ServerMetrics;
class SnapshotLimiter;
class TaskStats;
class WorkerPool;

struct SyncServiceOptions {
  ApplyLimits apply_limits;
  uint32_t default_pull_limit = 500;
  uint32_t max_pull_limit = 5000;
  // After a batch applied something: NOTIFY the feed channel, so that every
  // replica's hub polls now rather than at its next interval.
  bool notify_after_apply = true;
  // Also the channel migration 0017's trigger notifies for writes made
  // with SQL: with another one, those are found by the poll only.
  std::string notify_channel = "pulsesync_feed";
  int max_concurrent_snapshots = 2;  // each holds a worker for its whole read
  PrincipalLimitOptions principal_limits;
  ServerMetrics* metrics = nullptr;  // optional; must outlive the service
  // GetStats's counters; nullptr: GetStats answers UNIMPLEMENTED. Must
  // outlive the service.
  TaskStats* task_stats = nullptr;
};

// absl::Status codes are gRPC's codes one to one.
// The caller's principal from its request metadata.
MetadataLookup MetadataOf(const grpc::ServerContextBase* context);

grpc::Status ToGrpcStatus(const absl::Status& status);

// StreamChanges is registered raw: its messages are written as encoded
// bytes shared by every stream (change_stream.h); clients see the same
// StreamChangesResponse messages.
class SyncServiceImpl final
    : public v1::SyncService::WithRawCallbackMethod_StreamChanges<
          v1::SyncService::CallbackService> {
 public:
  // `pool`, `hub` and `auth` must outlive the service.
  SyncServiceImpl(WorkerPool* pool, FeedHub* hub, const Authenticator* auth,
                  SyncServiceOptions options);
  ~SyncServiceImpl() override;

  // Ends running snapshots (UNAVAILABLE) and refuses new ones: call before
  // stopping the worker pool, whose workers they hold.
  void CancelSnapshots();

  // The per-user stream and rate budget, shared with AuditService.
  PrincipalLimits* principal_limits() { return limits_.get(); }

  grpc::ServerUnaryReactor* ApplyRevisions(grpc::CallbackServerContext* context,
                                           const v1::ApplyRevisionsRequest* request,
                                           v1::ApplyRevisionsResponse* response) override;
  grpc::ServerUnaryReactor* PullChanges(grpc::CallbackServerContext* context,
                                        const v1::PullChangesRequest* request,
                                        v1::PullChangesResponse* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const v1::GetServerInfoRequest* request,
                                          v1::GetServerInfoResponse* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* StreamChanges(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<v1::SnapshotResponse>* Snapshot(
      grpc::CallbackServerContext* context, const v1::SnapshotRequest* request) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const v1::GetStatsRequest* request,
                                     v1::GetStatsResponse* response) override;

 private:
  absl::StatusOr<Principal> Authenticate(const grpc::CallbackServerContext* context) const;
  // The caller, and a stream slot for it (or the error that refuses the call).
  absl::StatusOr<Principal> AuthenticateStream(const grpc::CallbackServerContext* context,
                                               std::unique_ptr<PrincipalLimits::StreamLease>* lease);

  WorkerPool* const pool_;
  FeedHub* const hub_;
  const Authenticator* const auth_;
  const SyncServiceOptions options_;
  std::unique_ptr<SnapshotLimiter> snapshots_;
  std::unique_ptr<PrincipalLimits> limits_;
};

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_SERVICE_SYNC_SERVICE_H_
