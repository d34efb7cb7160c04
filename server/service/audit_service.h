// pulsesync.v1.AuditService on the callback API: GetAuditTrail (a stream of
// pages, read one page per worker job while the client reads, at most two
// pages queued: no worker is held while the client is slow, and memory
// stays bounded) and ListOrigins.
//
// Thread safety: gRPC threads and worker threads meet under each reactor's
// mutex; the service itself holds no mutable state.
#ifndef PULSESYNC_SERVER_SERVICE_AUDIT_SERVICE_H_
#define PULSESYNC_SERVER_SERVICE_AUDIT_SERVICE_H_

#include "grpcpp/grpcpp.h"
#include "pulsesync/v1/audit.grpc.pb.h"
#include "server/core/principal.h"
#include "server/service/principal_limits.h"

namespace pulsesync {

class WorkerPool;

class AuditServiceImpl final : public v1::AuditService::CallbackService {
 public:
  // `pool`, `auth` and `limits` (shared with SyncService: one stream budget
  // per user) must outlive the service.
  AuditServiceImpl(WorkerPool* pool, const Authenticator* auth, PrincipalLimits* limits)
      : pool_(pool), auth_(auth), limits_(limits) {}

  grpc::ServerWriteReactor<v1::GetAuditTrailResponse>* GetAuditTrail(
      grpc::CallbackServerContext* context, const v1::GetAuditTrailRequest* request) override;
  grpc::ServerUnaryReactor* ListOrigins(grpc::CallbackServerContext* context,
                                        const v1::ListOriginsRequest* request,
                                        v1::ListOriginsResponse* response) override;

 private:
  WorkerPool* const pool_;
  const Authenticator* const auth_;
  PrincipalLimits* const limits_;
};

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_SERVICE_AUDIT_SERVICE_H_
