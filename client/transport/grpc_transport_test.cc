#include "client/transport/grpc_transport.h"

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "pulsesync/v1/sync.grpc.pb.h"

namespace pulsesync {
namespace {

// An in-process SyncService that echoes what it saw and fails on request.
class ScriptedService final : public v1::SyncService::Service {
 public:
  grpc::Status ApplyRevisions(grpc::ServerContext* context,
                              const v1::ApplyRevisionsRequest* request,
                              v1::ApplyRevisionsResponse* response) override {
    auto it = context->client_metadata().find("authorization");
    if (it != context->client_metadata().end()) {
      authorization = std::string(it->second.data(), it->second.size());
    }
    for (const v1::Revision& r : request->revisions()) {
      v1::RevisionResult* res = response->add_results();
      res->set_revision_id(r.id());
      res->set_outcome(v1::RevisionResult::OUTCOME_APPLIED);
      res->set_version(42);
    }
    return grpc::Status::OK;
  }
  grpc::Status PullChanges(grpc::ServerContext*, const v1::PullChangesRequest* request,
                           v1::PullChangesResponse*) override {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "cursor " + request->cursor() + " belongs to another database");
  }
  grpc::Status GetServerInfo(grpc::ServerContext*, const v1::GetServerInfoRequest*,
                             v1::GetServerInfoResponse* response) override {
    response->set_protocol_version(1);
    response->add_object_types("task");
    return grpc::Status::OK;
  }

  std::string authorization;
};

class GrpcTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override { server_->Shutdown(); }
  std::string Address() const { return "127.0.0.1:" + std::to_string(port_); }

  ScriptedService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(GrpcTransportTest, CallsTheServerWithTheBearerToken) {
  GrpcTransportOptions options;
  options.bearer_token = "secret.jwt";
  std::unique_ptr<GrpcTransport> t = GrpcTransport::Create(Address(), options);
  v1::ApplyRevisionsRequest request;
  request.add_revisions()->set_id("r1");
  absl::StatusOr<v1::ApplyRevisionsResponse> response = t->ApplyRevisions(request);
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->results_size(), 1);
  EXPECT_EQ(response->results(0).revision_id(), "r1");
  EXPECT_EQ(response->results(0).version(), 42);
  EXPECT_EQ(service_.authorization, "Bearer secret.jwt");

  absl::StatusOr<v1::GetServerInfoResponse> info = t->GetServerInfo({});
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->protocol_version(), 1u);
}

TEST_F(GrpcTransportTest, ServerErrorsKeepTheirCodeAndMessage) {
  std::unique_ptr<GrpcTransport> t =
      GrpcTransport::FromChannel(server_->InProcessChannel(grpc::ChannelArguments()));
  v1::PullChangesRequest request;
  request.set_cursor("abc");
  absl::StatusOr<v1::PullChangesResponse> response = t->PullChanges(request);
  EXPECT_EQ(response.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(response.status().message(), "cursor abc belongs to another database");
}

TEST(GrpcTransportUnreachableTest, ANonListeningAddressIsUnavailable) {
  // Port 1 on loopback: nothing listens there in a test environment.
  GrpcTransportOptions options;
  options.deadline = absl::Seconds(5);
  std::unique_ptr<GrpcTransport> t = GrpcTransport::Create("127.0.0.1:1", options);
  absl::StatusOr<v1::GetServerInfoResponse> info = t->GetServerInfo({});
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnavailable) << info.status();
}

}  // namespace
}  // namespace pulsesync
