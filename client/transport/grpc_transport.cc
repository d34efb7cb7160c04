#include "client/transport/grpc_transport.h"

#include <grpcpp/grpcpp.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "pulsesync/v1/sync.grpc.pb.h"

namespace pulsesync {
namespace {

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  // absl and gRPC codes are the same numbers.
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace

struct GrpcTransport::Impl {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::SyncService::Stub> stub;
  GrpcTransportOptions options;

  void Prepare(grpc::ClientContext* context) const {
    context->set_deadline(absl::ToChronoTime(absl::Now() + options.deadline));
    context->set_wait_for_ready(options.wait_for_ready);
    if (!options.bearer_token.empty()) {
      context->AddMetadata("authorization", absl::StrCat("Bearer ", options.bearer_token));
    }
  }
};

std::unique_ptr<GrpcTransport> GrpcTransport::Create(const std::string& address,
                                                     GrpcTransportOptions options) {
  return FromChannel(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()),
                     std::move(options));
}

std::unique_ptr<GrpcTransport> GrpcTransport::FromChannel(std::shared_ptr<grpc::Channel> channel,
                                                          GrpcTransportOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->stub = v1::SyncService::NewStub(channel);
  impl->channel = std::move(channel);
  impl->options = std::move(options);
  return std::unique_ptr<GrpcTransport>(new GrpcTransport(std::move(impl)));
}

GrpcTransport::GrpcTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GrpcTransport::~GrpcTransport() = default;

absl::StatusOr<v1::ApplyRevisionsResponse> GrpcTransport::ApplyRevisions(
    const v1::ApplyRevisionsRequest& request) {
  grpc::ClientContext context;
  impl_->Prepare(&context);
  v1::ApplyRevisionsResponse response;
  absl::Status st = FromGrpc(impl_->stub->ApplyRevisions(&context, request, &response));
  if (!st.ok()) return st;
  return response;
}

absl::StatusOr<v1::PullChangesResponse> GrpcTransport::PullChanges(
    const v1::PullChangesRequest& request) {
  grpc::ClientContext context;
  impl_->Prepare(&context);
  v1::PullChangesResponse response;
  absl::Status st = FromGrpc(impl_->stub->PullChanges(&context, request, &response));
  if (!st.ok()) return st;
  return response;
}

absl::StatusOr<v1::GetServerInfoResponse> GrpcTransport::GetServerInfo(
    const v1::GetServerInfoRequest& request) {
  grpc::ClientContext context;
  impl_->Prepare(&context);
  v1::GetServerInfoResponse response;
  absl::Status st = FromGrpc(impl_->stub->GetServerInfo(&context, request, &response));
  if (!st.ok()) return st;
  return response;
}

}  // namespace pulsesync
