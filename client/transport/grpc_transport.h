// GrpcTransport: the Transport over gRPC to a pulsesyncd server.
#ifndef PULSESYNC_CLIENT_TRANSPORT_GRPC_TRANSPORT_H_
#define PULSESYNC_CLIENT_TRANSPORT_GRPC_TRANSPORT_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/core/transport.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace pulsesync {

// The metadata key that names the principal until JWT auth lands.
inline constexpr char kUserIdMetadataKey[] = "x-pulsesync-user-id";

struct GrpcTransportOptions {
  // Deadline of each unary call.
  absl::Duration deadline = absl::Seconds(30);
  // Deadline of a Snapshot call (the whole stream). StreamChanges has none:
  // it is meant to stay open; keepalive detects a dead connection instead.
  absl::Duration snapshot_deadline = absl::Minutes(10);
  // Sent as "authorization: Bearer <token>" when not empty (a Supabase Auth
  // JWT, as the server expects).
  std::string bearer_token;
  // When set, called at the start of every call and stream (on the calling
  // thread, possibly from several threads at once) for the bearer token to
  // send, instead of bearer_token; an empty token sends none. Tokens
  // expire: the server ends a stream with kUnauthenticated at its token's
  // expiry and refuses calls with an expired one, and the Subscriber then
  // reconnects at once, so the provider should return a token that is
  // valid now (refreshing it when it is about to expire). An error from it
  // fails that call or stream with that status (without reaching the
  // server); kUnauthenticated or kUnavailable are the natural codes.
  std::function<absl::StatusOr<std::string>()> token_provider;
  // Sent as "x-pulsesync-user-id" when not empty (see sync.proto,
  // "Principal").
  std::string user_id;
  // Wait for the channel to connect (up to the deadline) instead of failing
  // at once with UNAVAILABLE when the server is down.
  bool wait_for_ready = false;
  // HTTP/2 keepalive on channels that Create() makes: a ping after this long
  // without traffic, and the connection is declared dead (open streams fail
  // with UNAVAILABLE) when the ping is not answered within the timeout.
  // Pings are sent only while a call is open, without limit on pings
  // between data frames, so an idle StreamChanges is still watched. The
  // server must accept pings this often
  // (GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS <= keepalive_time;
  // gRPC's default is 5 minutes): otherwise, after about three pings
  // without data, it ends the connection with GOAWAY "too_many_pings" and
  // open streams fail with UNAVAILABLE "Too many pings" (measured with
  // gRPC 1.51); the Subscriber then reconnects and gRPC doubles this
  // channel's interval. Zero disables keepalive.
  absl::Duration keepalive_time = absl::Seconds(20);
  absl::Duration keepalive_timeout = absl::Seconds(10);
  // Longest wait between attempts to reconnect a channel that Create()
  // makes. gRPC backs off exponentially from 1 s up to 120 s: a client
  // whose server was down for a while could take two minutes to notice it
  // is back, failing every call with UNAVAILABLE meanwhile (wait_for_ready
  // off) or waiting (on). Zero leaves gRPC's default.
  absl::Duration max_reconnect_backoff = absl::Seconds(5);
  // A TCP connection of this transport's own. gRPC otherwise shares one
  // connection among a process's channels to the same address with the same
  // arguments; a process acting for many devices (a load generator, the
  // soak) wants one per device, as the devices would have.
  bool own_connection = false;
  // TLS, on channels that Create() makes. With a CA file (PEM: the roots the
  // server's certificate must chain to; /etc/ssl/certs/ca-certificates.crt
  // for a certificate from a public CA) the channel speaks TLS and checks
  // the server's certificate against the address's host. tls_cert_file and
  // tls_key_file (PEM, both or neither; need a CA file) are this client's
  // certificate, for servers that require one (mTLS). tls_server_name, when
  // set, is the name checked instead of the host (e.g. when connecting by an
  // IP address the certificate lacks).
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_server_name;
  // Plaintext, asked for explicitly. Without a CA file the channel is
  // plaintext, which Create() allows to a loopback address
  // (IsLoopbackAddress: 127.0.0.0/8, ::1, localhost, unix:) and to any other
  // only when this is set: otherwise every call fails with
  // kFailedPrecondition and nothing is sent, so that a bearer token never
  // crosses a network in clear by omission. Set together with TLS options:
  // kInvalidArgument.
  bool plaintext = false;
};

// Unary calls are blocking RPCs on one shared channel; streams use gRPC's
// synchronous streaming API (a ClientReader per call). The channel is TLS
// when the options name a CA file, else plaintext (see `plaintext`). gRPC errors become
// absl::Status with the same code and message. After a unary call fails
// with UNAVAILABLE (wait_for_ready off), a thread of the transport polls the
// channel until it is connected again: gRPC leaves a connection attempt
// unattended while calls fail fast (grpc_transport.cc, ReconnectWatcher).
//
// Thread safety: thread-safe (gRPC stubs and channels are). Each stream is
// as ResponseStream documents.
class GrpcTransport final : public Transport {
 public:
  // A transport to `address` ("host:port"). The channel connects lazily, so
  // this never fails; an unreachable server shows up as kUnavailable from
  // the first call. TLS files are read here: when one cannot be read
  // (kNotFound naming it) or is not valid, or the TLS options are
  // incomplete or contradict `plaintext` (kInvalidArgument), or plaintext
  // to a non-loopback address was not asked for (kFailedPrecondition), no
  // channel is made and every call returns that error.
  static std::unique_ptr<GrpcTransport> Create(const std::string& address,
                                               GrpcTransportOptions options = {});
  // A transport over an existing channel (e.g. an in-process server's). The
  // channel's own arguments and credentials apply (keepalive, TLS and
  // `plaintext` options are not used: the caller chose).
  static std::unique_ptr<GrpcTransport> FromChannel(std::shared_ptr<grpc::Channel> channel,
                                                    GrpcTransportOptions options = {});

  ~GrpcTransport() override;

  absl::StatusOr<v1::ApplyRevisionsResponse> ApplyRevisions(
      const v1::ApplyRevisionsRequest& request) override;
  absl::StatusOr<v1::PullChangesResponse> PullChanges(
      const v1::PullChangesRequest& request) override;
  absl::StatusOr<v1::GetServerInfoResponse> GetServerInfo(
      const v1::GetServerInfoRequest& request) override;
  absl::StatusOr<std::unique_ptr<ChangeStream>> StreamChanges(
      const v1::StreamChangesRequest& request) override;
  absl::StatusOr<std::unique_ptr<SnapshotStream>> Snapshot(
      const v1::SnapshotRequest& request) override;
  absl::StatusOr<std::unique_ptr<AuditStream>> GetAuditTrail(
      const v1::GetAuditTrailRequest& request) override;

 private:
  struct Impl;
  explicit GrpcTransport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pulsesync

#endif  // PULSESYNC_CLIENT_TRANSPORT_GRPC_TRANSPORT_H_
