// Transport: how the SyncEngine reaches a pulsesync server. GrpcTransport
// (client/transport) is the real one; tests use fakes of this interface.
#ifndef PULSESYNC_CLIENT_CORE_TRANSPORT_H_
#define PULSESYNC_CLIENT_CORE_TRANSPORT_H_

#include "absl/status/statusor.h"
#include "pulsesync/v1/sync.pb.h"

namespace pulsesync {

// One call per method of pulsesync.v1.SyncService. Errors carry the server's
// status code and message (see sync.proto for what each code means);
// kUnavailable / kDeadlineExceeded when the server cannot be reached in time.
// Implementations must be safe to call from one thread at a time at least,
// and say if they allow more.
class Transport {
 public:
  virtual ~Transport() = default;

  virtual absl::StatusOr<v1::ApplyRevisionsResponse> ApplyRevisions(
      const v1::ApplyRevisionsRequest& request) = 0;
  virtual absl::StatusOr<v1::PullChangesResponse> PullChanges(
      const v1::PullChangesRequest& request) = 0;
  virtual absl::StatusOr<v1::GetServerInfoResponse> GetServerInfo(
      const v1::GetServerInfoRequest& request) = 0;
};

}  // namespace pulsesync

#endif  // PULSESYNC_CLIENT_CORE_TRANSPORT_H_
