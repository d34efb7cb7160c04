// GrpcTransport: the Transport over gRPC to a pulsesyncd server.
#ifndef PULSESYNC_CLIENT_TRANSPORT_GRPC_TRANSPORT_H_
#define PULSESYNC_CLIENT_TRANSPORT_GRPC_TRANSPORT_H_

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "client/core/transport.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace pulsesync {

struct GrpcTransportOptions {
  // Deadline of each call.
  absl::Duration deadline = absl::Seconds(30);
  // Sent as "authorization: Bearer <token>" when not empty (a Supabase Auth
  // JWT, as the server expects).
  std::string bearer_token;
  // Wait for the channel to connect (up to the deadline) instead of failing
  // at once with UNAVAILABLE when the server is down.
  bool wait_for_ready = false;
};

// Calls are blocking unary RPCs on one shared channel. Channel credentials
// are insecure for now (TLS is a later step). gRPC errors become
// absl::Status with the same code and message.
//
// Thread safety: thread-safe (gRPC stubs and channels are).
class GrpcTransport final : public Transport {
 public:
  // A transport to `address` ("host:port"). The channel connects lazily, so
  // this never fails; an unreachable server shows up as kUnavailable from
  // the first call.
  static std::unique_ptr<GrpcTransport> Create(const std::string& address,
                                               GrpcTransportOptions options = {});
  // A transport over an existing channel (e.g. an in-process server's).
  static std::unique_ptr<GrpcTransport> FromChannel(std::shared_ptr<grpc::Channel> channel,
                                                    GrpcTransportOptions options = {});

  ~GrpcTransport() override;

  absl::StatusOr<v1::ApplyRevisionsResponse> ApplyRevisions(
      const v1::ApplyRevisionsRequest& request) override;
  absl::StatusOr<v1::PullChangesResponse> PullChanges(
      const v1::PullChangesRequest& request) override;
  absl::StatusOr<v1::GetServerInfoResponse> GetServerInfo(
      const v1::GetServerInfoRequest& request) override;

 private:
  struct Impl;
  explicit GrpcTransport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pulsesync

#endif  // PULSESYNC_CLIENT_TRANSPORT_GRPC_TRANSPORT_H_
