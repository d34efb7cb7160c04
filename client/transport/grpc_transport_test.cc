#include "client/transport/grpc_transport.h"

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
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

  // Sends two changes (and a checkpoint), then holds the stream open until
  // the client cancels it, or ends it with `stream_status` if set.
  grpc::Status StreamChanges(grpc::ServerContext* context,
                             const v1::StreamChangesRequest* request,
                             grpc::ServerWriter<v1::StreamChangesResponse>* writer) override {
    {
      absl::MutexLock lock(&mu);
      auto it = context->client_metadata().find("x-pulsesync-user-id");
      if (it != context->client_metadata().end()) {
        user_id = std::string(it->second.data(), it->second.size());
      }
      last_stream_request = *request;
    }
    if (!stream_status.ok()) {
      return grpc::Status(static_cast<grpc::StatusCode>(stream_status.code()),
                          std::string(stream_status.message()));
    }
    // Two changes in one message, then one in its own.
    v1::StreamChangesResponse r;
    for (int i = 1; i <= 3; ++i) {
      v1::Change* c = r.add_changes();
      c->set_object_id("obj-" + std::to_string(i));
      c->set_cursor(request->cursor() + "+" + std::to_string(i));
      if (i >= 2) {
        writer->Write(r);
        r.Clear();
      }
    }
    v1::StreamChangesResponse checkpoint;
    checkpoint.set_checkpoint("checkpoint-3");
    writer->Write(checkpoint);
    // Until the client goes away (bounded, so a broken test cannot hang).
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (!context->IsCancelled() && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(2));
    }
    server_saw_cancel.Notify();
    return grpc::Status::OK;
  }

  grpc::Status Snapshot(grpc::ServerContext*, const v1::SnapshotRequest* request,
                        grpc::ServerWriter<v1::SnapshotResponse>* writer) override {
    if (request->tables_size() > 0 && request->tables(0) == "refuse") {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "re-snapshot: try later");
    }
    v1::SnapshotResponse rows;
    rows.mutable_rows()->set_table("tasks");
    rows.mutable_rows()->add_records("{\"id\":\"a\"}");
    writer->Write(rows);
    v1::SnapshotResponse cursor;
    cursor.set_cursor("snap-cursor");
    writer->Write(cursor);
    return grpc::Status::OK;
  }

  std::string authorization;
  absl::Mutex mu;
  std::string user_id;
  v1::StreamChangesRequest last_stream_request;
  absl::Status stream_status;
  absl::Notification server_saw_cancel;
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

TEST_F(GrpcTransportTest, AsksTheTokenProviderForEachCall) {
  int calls = 0;
  absl::Status provider_error;
  GrpcTransportOptions options;
  options.bearer_token = "static.jwt";  // the provider takes precedence
  options.token_provider = [&]() -> absl::StatusOr<std::string> {
    if (!provider_error.ok()) return provider_error;
    return "fresh-" + std::to_string(++calls);
  };
  std::unique_ptr<GrpcTransport> t = GrpcTransport::Create(Address(), options);
  v1::ApplyRevisionsRequest request;
  request.add_revisions()->set_id("r1");
  ASSERT_TRUE(t->ApplyRevisions(request).ok());
  EXPECT_EQ(service_.authorization, "Bearer fresh-1");
  ASSERT_TRUE(t->ApplyRevisions(request).ok());
  EXPECT_EQ(service_.authorization, "Bearer fresh-2");

  // A provider that fails fails the call, which never reaches the server.
  provider_error = absl::UnauthenticatedError("signed out");
  service_.authorization.clear();
  absl::StatusOr<v1::ApplyRevisionsResponse> response = t->ApplyRevisions(request);
  EXPECT_EQ(response.status(), provider_error);
  EXPECT_EQ(service_.authorization, "");
  absl::StatusOr<std::unique_ptr<ChangeStream>> stream = t->StreamChanges({});
  EXPECT_EQ(stream.status(), provider_error);
  EXPECT_EQ(calls, 2);
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

TEST_F(GrpcTransportTest, StreamsChangesWithTheUserIdUntilCancelled) {
  GrpcTransportOptions options;
  options.user_id = "user-7";
  std::unique_ptr<GrpcTransport> t = GrpcTransport::Create(Address(), options);
  v1::StreamChangesRequest request;
  request.set_cursor("c");
  request.add_subscriptions()->set_table("tasks");
  absl::StatusOr<std::unique_ptr<ChangeStream>> stream = t->StreamChanges(request);
  ASSERT_TRUE(stream.ok()) << stream.status();
  v1::StreamChangesResponse r;
  ASSERT_TRUE((*stream)->Read(&r));
  ASSERT_EQ(r.changes_size(), 2);
  EXPECT_EQ(r.changes(0).object_id(), "obj-1");
  EXPECT_EQ(r.changes(0).cursor(), "c+1");
  EXPECT_EQ(r.changes(1).object_id(), "obj-2");
  EXPECT_EQ(r.changes(1).cursor(), "c+2");
  EXPECT_EQ(r.checkpoint(), "");
  ASSERT_TRUE((*stream)->Read(&r));
  ASSERT_EQ(r.changes_size(), 1);
  EXPECT_EQ(r.changes(0).cursor(), "c+3");
  ASSERT_TRUE((*stream)->Read(&r));
  EXPECT_EQ(r.changes_size(), 0);
  EXPECT_EQ(r.checkpoint(), "checkpoint-3");
  {
    absl::MutexLock lock(&service_.mu);
    EXPECT_EQ(service_.user_id, "user-7");
    EXPECT_EQ(service_.last_stream_request.subscriptions(0).table(), "tasks");
  }

  // Read now blocks (the server holds the stream open); Cancel from another
  // thread unblocks it.
  absl::Notification read_returned;
  bool read_result = true;
  std::thread reader([&] {
    v1::StreamChangesResponse more;
    read_result = (*stream)->Read(&more);
    read_returned.Notify();
  });
  EXPECT_FALSE(read_returned.WaitForNotificationWithTimeout(absl::Milliseconds(50)));
  (*stream)->Cancel();
  EXPECT_TRUE(read_returned.WaitForNotificationWithTimeout(absl::Seconds(10)));
  reader.join();
  EXPECT_FALSE(read_result);
  EXPECT_EQ((*stream)->Finish().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(service_.server_saw_cancel.WaitForNotificationWithTimeout(absl::Seconds(10)));
}

TEST_F(GrpcTransportTest, StreamErrorsArriveThroughFinish) {
  service_.stream_status = absl::FailedPreconditionError("re-snapshot: cursor too old");
  std::unique_ptr<GrpcTransport> t =
      GrpcTransport::FromChannel(server_->InProcessChannel(grpc::ChannelArguments()));
  absl::StatusOr<std::unique_ptr<ChangeStream>> stream = t->StreamChanges({});
  ASSERT_TRUE(stream.ok());
  v1::StreamChangesResponse r;
  EXPECT_FALSE((*stream)->Read(&r));
  absl::Status st = (*stream)->Finish();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(st.message(), "re-snapshot: cursor too old");
}

TEST_F(GrpcTransportTest, DestroyingAnOpenStreamDoesNotWaitForTheServer) {
  std::unique_ptr<GrpcTransport> t = GrpcTransport::Create(Address());
  absl::StatusOr<std::unique_ptr<ChangeStream>> stream = t->StreamChanges({});
  ASSERT_TRUE(stream.ok());
  v1::StreamChangesResponse r;
  ASSERT_TRUE((*stream)->Read(&r));
  stream->reset();  // cancels and finishes
  EXPECT_TRUE(service_.server_saw_cancel.WaitForNotificationWithTimeout(absl::Seconds(10)));
}

TEST_F(GrpcTransportTest, SnapshotStreamsRowsThenTheCursor) {
  std::unique_ptr<GrpcTransport> t = GrpcTransport::Create(Address());
  absl::StatusOr<std::unique_ptr<SnapshotStream>> stream = t->Snapshot({});
  ASSERT_TRUE(stream.ok());
  v1::SnapshotResponse r;
  ASSERT_TRUE((*stream)->Read(&r));
  EXPECT_EQ(r.rows().table(), "tasks");
  ASSERT_TRUE((*stream)->Read(&r));
  EXPECT_EQ(r.cursor(), "snap-cursor");
  EXPECT_FALSE((*stream)->Read(&r));
  EXPECT_TRUE((*stream)->Finish().ok());

  v1::SnapshotRequest refused;
  refused.add_tables("refuse");
  stream = t->Snapshot(refused);
  ASSERT_TRUE(stream.ok());
  EXPECT_FALSE((*stream)->Read(&r));
  EXPECT_EQ((*stream)->Finish().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(GrpcTransportUnreachableTest, AStreamToANonListeningAddressEndsUnavailable) {
  std::unique_ptr<GrpcTransport> t = GrpcTransport::Create("127.0.0.1:1");
  absl::StatusOr<std::unique_ptr<ChangeStream>> stream = t->StreamChanges({});
  ASSERT_TRUE(stream.ok());
  v1::StreamChangesResponse r;
  EXPECT_FALSE((*stream)->Read(&r));
  EXPECT_EQ((*stream)->Finish().code(), absl::StatusCode::kUnavailable);
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
