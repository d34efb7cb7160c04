// Transport: how the client reaches a pulsesync server. GrpcTransport
// (client/transport) is the real one; tests use fakes of this interface.
#ifndef PULSESYNC_CLIENT_CORE_TRANSPORT_H_
#define PULSESYNC_CLIENT_CORE_TRANSPORT_H_

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pulsesync/v1/audit.pb.h"
#include "pulsesync/v1/sync.pb.h"

namespace pulsesync {

// The client's end of one server-streaming call (StreamChanges, Snapshot).
//
// Protocol: call Read until it returns false, then Finish exactly once for
// the call's status. Cancel may be called at any time from any thread.
//
// Thread safety: Read and Finish belong to one thread (the consumer);
// Cancel is thread-safe and may race with them. The destructor cancels a
// call that has not finished and waits for it to wind down; it must not
// race with Cancel (whoever cancels from another thread must be done
// before the consumer destroys the stream).
template <typename Response>
class ResponseStream {
 public:
  virtual ~ResponseStream() = default;

  // Blocks until the next message and stores it in `*response`: true.
  // False when the stream has ended (the server finished it, it failed, or
  // it was cancelled); then call Finish.
  virtual bool Read(Response* response) = 0;

  // The call's final status, after Read returned false: OK when the server
  // ended the stream normally; kCancelled after Cancel; otherwise the
  // server's or the network's code and message (see sync.proto). Calling it
  // before Read returned false cancels the call first.
  [[nodiscard]] virtual absl::Status Finish() = 0;

  // Asks the call to end: a blocked Read returns false promptly, and Finish
  // reports kCancelled (unless the call already ended otherwise). Idempotent.
  virtual void Cancel() = 0;
};

using ChangeStream = ResponseStream<v1::StreamChangesResponse>;
using SnapshotStream = ResponseStream<v1::SnapshotResponse>;
using AuditStream = ResponseStream<v1::GetAuditTrailResponse>;

// One call per method of pulsesync.v1.SyncService. Errors carry the server's
// status code and message (see sync.proto for what each code means);
// kUnavailable / kDeadlineExceeded when the server cannot be reached in time.
// Implementations must be safe to call from one thread at a time at least,
// and say if they allow more. Not always the same thread: SyncEngine's push
// makes each ApplyRevisions call on a thread of its own (one call at a
// time), so a transport, and a token provider it calls, must not depend on
// the thread that created it.
class Transport {
 public:
  virtual ~Transport() = default;

  virtual absl::StatusOr<v1::ApplyRevisionsResponse> ApplyRevisions(
      const v1::ApplyRevisionsRequest& request) = 0;
  virtual absl::StatusOr<v1::PullChangesResponse> PullChanges(
      const v1::PullChangesRequest& request) = 0;
  virtual absl::StatusOr<v1::GetServerInfoResponse> GetServerInfo(
      const v1::GetServerInfoRequest& request) = 0;

  // Protocol v1.1. Opening a stream does not wait for the server: a server
  // that is down or refuses the request shows up as Read returning false
  // and Finish returning the error. An error here means the call could not
  // even be started. The stream may outlive nothing: it must be destroyed
  // before the transport.
  //
  // The defaults answer kUnimplemented, so that transports written for
  // protocol v1 (and test fakes that need no stream) keep compiling.
  virtual absl::StatusOr<std::unique_ptr<ChangeStream>> StreamChanges(
      const v1::StreamChangesRequest& request) {
    return absl::UnimplementedError("this transport does not support StreamChanges");
  }
  virtual absl::StatusOr<std::unique_ptr<SnapshotStream>> Snapshot(
      const v1::SnapshotRequest& request) {
    return absl::UnimplementedError("this transport does not support Snapshot");
  }
  // Protocol v1.2: AuditService.GetAuditTrail (audit.proto), as the streams above.
  virtual absl::StatusOr<std::unique_ptr<AuditStream>> GetAuditTrail(
      const v1::GetAuditTrailRequest& request) {
    return absl::UnimplementedError("this transport does not support GetAuditTrail");
  }
};

}  // namespace pulsesync

#endif  // PULSESYNC_CLIENT_CORE_TRANSPORT_H_
