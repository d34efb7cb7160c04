#include "client/transport/grpc_transport.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdint>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/net_address.h"
#include "common/status_macros.h"
#include "common/tls_files.h"
#include "pulsesync/v1/audit.grpc.pb.h"
#include "pulsesync/v1/sync.grpc.pb.h"

namespace pulsesync {
namespace {

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  // absl and gRPC codes are the same numbers.
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

// One server-streaming call. The context outlives the reader (members are
// destroyed in reverse order).
template <typename Response>
class GrpcResponseStream final : public ResponseStream<Response> {
 public:
  GrpcResponseStream() = default;
  ~GrpcResponseStream() override {
    // A ClientReader must be finished before it goes away; cancel first so
    // that this never waits for the server.
    if (reader_ != nullptr && !finished_) {
      context_.TryCancel();
      (void)Finish();
    }
  }

  bool Read(Response* response) override {
    if (read_done_) return false;
    if (reader_->Read(response)) return true;
    read_done_ = true;
    return false;
  }

  absl::Status Finish() override {
    if (finished_) return absl::FailedPreconditionError("stream already finished");
    if (!read_done_) {
      // gRPC's Finish waits for the end of the stream; end it first.
      context_.TryCancel();
      Response drained;
      while (reader_->Read(&drained)) {
      }
      read_done_ = true;
    }
    finished_ = true;
    return FromGrpc(reader_->Finish());
  }

  void Cancel() override { context_.TryCancel(); }

  grpc::ClientContext* context() { return &context_; }
  void set_reader(std::unique_ptr<grpc::ClientReader<Response>> reader) {
    reader_ = std::move(reader);
  }

 private:
  grpc::ClientContext context_;  // thread-safe TryCancel
  std::unique_ptr<grpc::ClientReader<Response>> reader_;
  bool read_done_ = false;  // consumer thread only
  bool finished_ = false;   // consumer thread only
};

// Plaintext without a CA file (to loopback, or when asked for); TLS (with a
// client certificate when one is configured) with it. Reads and checks the
// files.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const std::string& address, const GrpcTransportOptions& options) {
  const bool has_cert = !options.tls_cert_file.empty();
  const bool has_key = !options.tls_key_file.empty();
  if (has_cert != has_key) {
    return absl::InvalidArgumentError(
        "a TLS client certificate needs both a certificate file and a key file");
  }
  if (options.tls_ca_file.empty()) {
    if (has_cert || !options.tls_server_name.empty()) {
      return absl::InvalidArgumentError(
          "TLS client certificate or server name given without a TLS CA file");
    }
    if (!options.plaintext && !IsLoopbackAddress(address)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "refusing to talk plaintext to ", address,
          " (not a loopback address): tokens and data would cross the network unencrypted. "
          "Give a TLS CA file (--tls-ca), or ask for plaintext explicitly (--plaintext, "
          "GrpcTransportOptions::plaintext)"));
    }
    return grpc::InsecureChannelCredentials();
  }
  if (options.plaintext) {
    return absl::InvalidArgumentError("plaintext asked for together with a TLS CA file");
  }
  grpc::SslCredentialsOptions ssl;
  PS_ASSIGN_OR_RETURN(ssl.pem_root_certs,
                      ReadPemCertificates(options.tls_ca_file, "TLS CA file"));
  if (has_cert) {
    PS_ASSIGN_OR_RETURN(PemKeyPair pair,
                        ReadPemKeyPair(options.tls_cert_file, options.tls_key_file));
    ssl.pem_cert_chain = std::move(pair.cert_chain);
    ssl.pem_private_key = std::move(pair.private_key);
  }
  return grpc::SslCredentials(ssl);
}

// Polls a channel while it reconnects, so that it reconnects as soon as the
// server can be reached again.
//
// gRPC 1.51 handles a connection attempt's socket events (the TCP connect
// completing, the handshake's bytes) only while some thread polls the
// channel: a call waiting for it, or the client-channel backup poller, every
// 5 s. A call that fails fast (UNAVAILABLE while the channel is in
// TRANSIENT_FAILURE, wait_for_ready off) does not wait, so a client retrying
// such calls leaves the attempt unattended: measured in the soak, the
// server's side of the attempt was connected within a second while the
// client's stayed in its TCP connect until gRPC's 20 s connect timeout, and
// pushes failed for up to 58 s after a replica came back
// (grpc/grpc#28866 reports the same lost events). After a call fails with
// UNAVAILABLE, a thread waits on the channel's state, which polls it, until
// the channel is READY or kWatchFor has passed since the last failure, and
// then ends; calls still fail fast meanwhile.
class ReconnectWatcher {
 public:
  explicit ReconnectWatcher(std::shared_ptr<grpc::Channel> channel)
      : channel_(std::move(channel)) {}
  ~ReconnectWatcher() {
    std::thread watching;
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      watching = std::move(thread_);
    }
    // Not under mu_: a running thread takes it to see stopping_ (within one
    // kSlice).
    if (watching.joinable()) watching.join();
  }
  ReconnectWatcher(const ReconnectWatcher&) = delete;
  ReconnectWatcher& operator=(const ReconnectWatcher&) = delete;

  // After a call failed with UNAVAILABLE.
  void Watch() {
    absl::MutexLock lock(&mu_);
    until_ = absl::Now() + kWatchFor;
    if (running_ || stopping_) return;
    // A thread that ended: it cleared running_ under mu_ and then only
    // returns, so it can be joined while holding mu_.
    if (thread_.joinable()) thread_.join();
    running_ = true;
    thread_ = std::thread([this] { Run(); });
  }

 private:
  // Long enough for a few attempts at the longest backoff; a later failure
  // starts it again.
  static constexpr absl::Duration kWatchFor = absl::Minutes(2);
  // How long one wait may take: the destructor's bound.
  static constexpr absl::Duration kSlice = absl::Milliseconds(200);

  void Run() {
    while (true) {
      absl::Time until;
      {
        absl::MutexLock lock(&mu_);
        if (stopping_ || absl::Now() >= until_) {
          running_ = false;
          return;
        }
        until = until_;
      }
      // try_to_connect: an IDLE channel starts connecting.
      const grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
      if (state == GRPC_CHANNEL_READY || state == GRPC_CHANNEL_SHUTDOWN) {
        absl::MutexLock lock(&mu_);
        if (until_ == until) until_ = absl::InfinitePast();  // else a new failure came
        continue;
      }
      (void)channel_->WaitForStateChange(
          state, absl::ToChronoTime(std::min(absl::Now() + kSlice, until)));
    }
  }

  const std::shared_ptr<grpc::Channel> channel_;
  absl::Mutex mu_;
  absl::Time until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool running_ ABSL_GUARDED_BY(mu_) = false;  // a thread is watching
  std::thread thread_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

struct GrpcTransport::Impl {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::SyncService::Stub> stub;
  std::unique_ptr<v1::AuditService::Stub> audit_stub;
  GrpcTransportOptions options;
  // Not OK when Create() could not make the channel; then every call
  // returns it (channel and stub are null).
  absl::Status setup_error;
  // Null when there is no channel or calls wait for it (wait_for_ready).
  std::unique_ptr<ReconnectWatcher> reconnect;

  // A unary call's outcome; an UNAVAILABLE one has the channel watched.
  absl::Status Finish(const grpc::Status& status) {
    absl::Status st = FromGrpc(status);
    if (st.code() == absl::StatusCode::kUnavailable && reconnect != nullptr) reconnect->Watch();
    return st;
  }

  // `deadline`: infinite = none. Fails (and the call must not be made) when
  // the token provider does.
  absl::Status Prepare(grpc::ClientContext* context, absl::Duration deadline) const {
    std::string token;
    if (options.token_provider) {
      PS_ASSIGN_OR_RETURN(token, options.token_provider());
    } else {
      token = options.bearer_token;
    }
    if (deadline != absl::InfiniteDuration()) {
      context->set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    }
    context->set_wait_for_ready(options.wait_for_ready);
    if (!token.empty()) {
      context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
    }
    if (!options.user_id.empty()) {
      context->AddMetadata(kUserIdMetadataKey, options.user_id);
    }
    return absl::OkStatus();
  }
  absl::Status Prepare(grpc::ClientContext* context) const {
    return Prepare(context, options.deadline);
  }
};

std::unique_ptr<GrpcTransport> GrpcTransport::Create(const std::string& address,
                                                     GrpcTransportOptions options) {
  grpc::ChannelArguments args;
  if (options.keepalive_time > absl::ZeroDuration()) {
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
                static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_time)));
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_timeout)));
    // Only while a call is open (an idle channel needs no watching), but
    // then without a cap: the default stops pinging after two pings without
    // data, which would leave a quiet StreamChanges unwatched.
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  }
  if (options.max_reconnect_backoff > absl::ZeroDuration()) {
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
                static_cast<int>(std::min<int64_t>(
                    absl::ToInt64Milliseconds(options.max_reconnect_backoff), INT32_MAX)));
  }
  if (options.own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      MakeChannelCredentials(address, options);
  if (!credentials.ok()) {
    auto impl = std::make_unique<Impl>();
    impl->options = std::move(options);
    impl->setup_error = credentials.status();
    return std::unique_ptr<GrpcTransport>(new GrpcTransport(std::move(impl)));
  }
  if (!options.tls_server_name.empty()) {
    args.SetSslTargetNameOverride(options.tls_server_name);
  }
  return FromChannel(grpc::CreateCustomChannel(address, *credentials, args), std::move(options));
}

std::unique_ptr<GrpcTransport> GrpcTransport::FromChannel(std::shared_ptr<grpc::Channel> channel,
                                                          GrpcTransportOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->stub = v1::SyncService::NewStub(channel);
  impl->audit_stub = v1::AuditService::NewStub(channel);
  impl->channel = std::move(channel);
  if (!options.wait_for_ready) impl->reconnect = std::make_unique<ReconnectWatcher>(impl->channel);
  impl->options = std::move(options);
  return std::unique_ptr<GrpcTransport>(new GrpcTransport(std::move(impl)));
}

GrpcTransport::GrpcTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GrpcTransport::~GrpcTransport() = default;

absl::StatusOr<v1::ApplyRevisionsResponse> GrpcTransport::ApplyRevisions(
    const v1::ApplyRevisionsRequest& request) {
  if (!impl_->setup_error.ok()) return impl_->setup_error;
  grpc::ClientContext context;
  PS_RETURN_IF_ERROR(impl_->Prepare(&context));
  v1::ApplyRevisionsResponse response;
  absl::Status st = impl_->Finish(impl_->stub->ApplyRevisions(&context, request, &response));
  if (!st.ok()) return st;
  return response;
}

absl::StatusOr<v1::PullChangesResponse> GrpcTransport::PullChanges(
    const v1::PullChangesRequest& request) {
  if (!impl_->setup_error.ok()) return impl_->setup_error;
  grpc::ClientContext context;
  PS_RETURN_IF_ERROR(impl_->Prepare(&context));
  v1::PullChangesResponse response;
  absl::Status st = impl_->Finish(impl_->stub->PullChanges(&context, request, &response));
  if (!st.ok()) return st;
  return response;
}

absl::StatusOr<v1::GetServerInfoResponse> GrpcTransport::GetServerInfo(
    const v1::GetServerInfoRequest& request) {
  if (!impl_->setup_error.ok()) return impl_->setup_error;
  grpc::ClientContext context;
  PS_RETURN_IF_ERROR(impl_->Prepare(&context));
  v1::GetServerInfoResponse response;
  absl::Status st = impl_->Finish(impl_->stub->GetServerInfo(&context, request, &response));
  if (!st.ok()) return st;
  return response;
}

absl::StatusOr<std::unique_ptr<ChangeStream>> GrpcTransport::StreamChanges(
    const v1::StreamChangesRequest& request) {
  if (!impl_->setup_error.ok()) return impl_->setup_error;
  auto stream = std::make_unique<GrpcResponseStream<v1::StreamChangesResponse>>();
  PS_RETURN_IF_ERROR(impl_->Prepare(stream->context(), absl::InfiniteDuration()));
  stream->set_reader(impl_->stub->StreamChanges(stream->context(), request));
  return std::unique_ptr<ChangeStream>(std::move(stream));
}

absl::StatusOr<std::unique_ptr<SnapshotStream>> GrpcTransport::Snapshot(
    const v1::SnapshotRequest& request) {
  if (!impl_->setup_error.ok()) return impl_->setup_error;
  auto stream = std::make_unique<GrpcResponseStream<v1::SnapshotResponse>>();
  PS_RETURN_IF_ERROR(impl_->Prepare(stream->context(), impl_->options.snapshot_deadline));
  stream->set_reader(impl_->stub->Snapshot(stream->context(), request));
  return std::unique_ptr<SnapshotStream>(std::move(stream));
}

absl::StatusOr<std::unique_ptr<AuditStream>> GrpcTransport::GetAuditTrail(
    const v1::GetAuditTrailRequest& request) {
  if (!impl_->setup_error.ok()) return impl_->setup_error;
  auto stream = std::make_unique<GrpcResponseStream<v1::GetAuditTrailResponse>>();
  PS_RETURN_IF_ERROR(impl_->Prepare(stream->context(), impl_->options.snapshot_deadline));
  stream->set_reader(impl_->audit_stub->GetAuditTrail(stream->context(), request));
  return std::unique_ptr<AuditStream>(std::move(stream));
}

}  // namespace pulsesync
