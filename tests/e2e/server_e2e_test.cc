// pulsesyncd as a real process on loopback, over a real PostgreSQL: the gRPC
// contract, standard tooling (health, reflection), database outages, and
// restarts.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/brotli_codec.h"
#include "common/uuid.h"
#include "google/protobuf/unknown_field_set.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "pulsesync/v1/sync.grpc.pb.h"
#include "server/core/migrator.h"
#include "server/service/server.h"
#include "tests/testing/grpc_probes.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_proxy.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::ServerProcess;
using ::pulsesync::testing::TestDatabase;
using ::testing::HasSubstr;

constexpr char kTeam[] = "10000000-0000-4000-8000-000000000001";

v1::Revision MakeRevision(const std::string& type, const std::string& object_id,
                          const std::string& payload, int64_t seq,
                          v1::Operation op = v1::OPERATION_UPSERT) {
  v1::Revision r;
  r.set_id(NewUuid());
  r.set_object_type(type);
  r.set_object_id(object_id);
  r.set_origin_id("device-e2e");
  r.set_seq(seq);
  r.set_op(op);
  r.set_payload(payload);
  r.set_created_at(1700000000000 + seq);
  r.mutable_clock()->set_physical_ms(1700000000000 + seq);
  r.set_schema_version(1);
  return r;
}

class ServerE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
  }

  void StartServer(std::vector<std::string> flags = {}, std::string url = "") {
    server_ = std::make_unique<ServerProcess>(url.empty() ? db_->url() : url,
                                              testing::MakeTempDir("server") + "/pulsesyncd.log",
                                              std::move(flags));
    ASSERT_OK(server_->Start());
    Connect();
  }

  void Connect() {
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = v1::SyncService::NewStub(channel_);
  }

  std::unique_ptr<grpc::ClientContext> Context() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return ctx;
  }

  grpc::Status Apply(const std::vector<v1::Revision>& revisions, v1::ApplyRevisionsResponse* out,
                     bool brotli = false) {
    v1::ApplyRevisionsRequest req;
    if (brotli) {
      v1::RevisionBatch batch;
      for (const auto& r : revisions) *batch.add_revisions() = r;
      req.set_encoding(v1::PAYLOAD_ENCODING_BROTLI);
      req.set_compressed_batch(BrotliCompress(batch.SerializeAsString()));
    } else {
      for (const auto& r : revisions) *req.add_revisions() = r;
    }
    return stub_->ApplyRevisions(Context().get(), req, out);
  }

  // Follows the feed from `cursor` to its end; returns every change.
  std::vector<v1::Change> PullAll(std::string* cursor, bool brotli = false, uint32_t limit = 2) {
    std::vector<v1::Change> all;
    for (int page = 0; page < 1000; ++page) {
      v1::PullChangesRequest req;
      req.set_cursor(*cursor);
      req.set_limit(limit);
      if (brotli) req.set_accept_encoding(v1::PAYLOAD_ENCODING_BROTLI);
      v1::PullChangesResponse resp;
      grpc::Status s = stub_->PullChanges(Context().get(), req, &resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      if (resp.encoding() == v1::PAYLOAD_ENCODING_BROTLI) {
        auto raw = BrotliDecompress(resp.compressed_changes(), 64 << 20);
        EXPECT_OK(raw);
        v1::ChangeBatch batch;
        EXPECT_TRUE(batch.ParseFromString(*raw));
        for (const auto& c : batch.changes()) all.push_back(c);
      } else {
        for (const auto& c : resp.changes()) all.push_back(c);
      }
      *cursor = resp.next_cursor();
      if (!resp.has_more()) break;
    }
    return all;
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::SyncService::Stub> stub_;
};

TEST_F(ServerE2eTest, AppliesRevisionsAndStreamsThemBackAsChanges) {
  StartServer();
  const std::string task = NewUuid();
  std::vector<v1::Revision> revs = {
      MakeRevision("team", kTeam, R"({"name":"Core"})", 1),
      MakeRevision("task", task, absl::StrCat(R"({"team_id":")", kTeam, R"(","title":"Ship it"})"), 2),
      MakeRevision("task", task, R"({"status":"doing"})", 3),
  };
  v1::ApplyRevisionsResponse resp;
  ASSERT_TRUE(Apply(revs, &resp).ok());
  ASSERT_EQ(resp.results_size(), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(resp.results(i).revision_id(), revs[i].id());
    EXPECT_EQ(resp.results(i).outcome(), v1::RevisionResult::OUTCOME_APPLIED);
    EXPECT_GT(resp.results(i).version(), 0);
  }
  EXPECT_EQ(*db_->QueryValue(absl::StrCat("SELECT title || '/' || status FROM tasks WHERE id = '",
                                          task, "'")),
            "Ship it/doing");

  std::string cursor;
  std::vector<v1::Change> changes = PullAll(&cursor);
  ASSERT_EQ(changes.size(), 3u);
  EXPECT_EQ(changes[0].object_type(), "team");
  EXPECT_EQ(changes[0].event(), v1::EVENT_TYPE_INSERT);
  EXPECT_EQ(changes[1].event(), v1::EVENT_TYPE_INSERT);
  EXPECT_EQ(changes[2].event(), v1::EVENT_TYPE_UPDATE);
  EXPECT_EQ(changes[2].revision_id(), revs[2].id());
  EXPECT_EQ(changes[2].origin_id(), "device-e2e");
  EXPECT_EQ(changes[2].version(), resp.results(2).version());
  EXPECT_THAT(changes[2].new_record(), HasSubstr(R"("status": "doing")"));
  EXPECT_THAT(changes[2].old_record(), HasSubstr(R"("status": "todo")"));
  EXPECT_EQ(changes[2].team_id(), kTeam);

  // Nothing new: an empty page, and the cursor stays usable.
  EXPECT_TRUE(PullAll(&cursor).empty());
}

TEST_F(ServerE2eTest, BrotliBatchesAndPagesRoundTrip) {
  StartServer();
  std::vector<v1::Revision> revs = {MakeRevision("team", kTeam, R"({"name":"Core"})", 1)};
  for (int i = 0; i < 30; ++i) {
    revs.push_back(MakeRevision(
        "task", NewUuid(),
        absl::StrCat(R"({"team_id":")", kTeam, R"(","title":"Task number )", i,
                     R"(","description":"the same words again and again and again"})"),
        i + 2));
  }
  v1::ApplyRevisionsResponse resp;
  ASSERT_TRUE(Apply(revs, &resp, /*brotli=*/true).ok());
  ASSERT_EQ(resp.results_size(), 31);
  for (const auto& r : resp.results()) EXPECT_EQ(r.outcome(), v1::RevisionResult::OUTCOME_APPLIED);
  std::string cursor;
  std::vector<v1::Change> changes = PullAll(&cursor, /*brotli=*/true, /*limit=*/7);
  EXPECT_EQ(changes.size(), 31u);
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM tasks"), "30");
}

TEST_F(ServerE2eTest, MalformedRequestsGetInvalidArgumentNamingTheProblem) {
  StartServer({"--max_batch_revisions=3"});
  v1::ApplyRevisionsResponse resp;
  grpc::Status s = Apply({}, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("no revisions"));

  std::vector<v1::Revision> four;
  for (int i = 0; i < 4; ++i) four.push_back(MakeRevision("team", NewUuid(), "{}", i));
  s = Apply(four, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("limit is 3"));

  v1::ApplyRevisionsRequest bad;
  bad.set_encoding(v1::PAYLOAD_ENCODING_BROTLI);
  bad.set_compressed_batch("definitely not brotli");
  s = stub_->ApplyRevisions(Context().get(), bad, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("compressed_batch"));

  v1::PullChangesRequest pull;
  pull.set_cursor("c1.!!!");
  v1::PullChangesResponse pulled;
  s = stub_->PullChanges(Context().get(), pull, &pulled);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("malformed cursor"));

  // None of it wrote anything.
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM pulsesync.change_log"), "0");
}

TEST_F(ServerE2eTest, RejectedRevisionsLeaveNothingAndTheRestApplies) {
  StartServer();
  const std::string good = NewUuid();
  std::vector<v1::Revision> revs = {
      MakeRevision("team", kTeam, R"({"name":"Core"})", 1),
      MakeRevision("task", NewUuid(), R"({"team_id":")" + std::string(kTeam) + R"(","title":"x","priority":"high"})", 2),
      MakeRevision("widget", NewUuid(), R"({"a":1})", 3),
      MakeRevision("task", NewUuid(), R"({"title":)", 4),
      MakeRevision("task", good, R"({"team_id":")" + std::string(kTeam) + R"(","title":"ok"})", 5),
  };
  revs[2].set_id("not-a-uuid");
  v1::ApplyRevisionsResponse resp;
  ASSERT_TRUE(Apply(revs, &resp).ok());
  ASSERT_EQ(resp.results_size(), 5);
  EXPECT_EQ(resp.results(0).outcome(), v1::RevisionResult::OUTCOME_APPLIED);
  EXPECT_EQ(resp.results(1).outcome(), v1::RevisionResult::OUTCOME_REJECTED);
  EXPECT_THAT(resp.results(1).reason(), HasSubstr("integer"));
  EXPECT_EQ(resp.results(2).outcome(), v1::RevisionResult::OUTCOME_REJECTED);
  EXPECT_THAT(resp.results(2).reason(), HasSubstr("not a UUID"));
  EXPECT_EQ(resp.results(3).outcome(), v1::RevisionResult::OUTCOME_REJECTED);
  EXPECT_THAT(resp.results(3).reason(), HasSubstr("invalid JSON"));
  EXPECT_EQ(resp.results(4).outcome(), v1::RevisionResult::OUTCOME_APPLIED);
  EXPECT_EQ(*db_->QueryValue("SELECT string_agg(title, ',') FROM tasks"), "ok");
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM pulsesync.applied_revisions"), "2");
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM pulsesync.change_log"), "2");
}

// grpc.health.v1.Health/Check over a generic stub: the request is an empty
// HealthCheckRequest; SERVING is field 1 = 1.
TEST_F(ServerE2eTest, HealthCheckReportsServing) {
  StartServer();
  ASSERT_OK_AND_ASSIGN(std::string response, testing::HealthCheck(channel_));
  EXPECT_EQ(response, std::string("\x08\x01", 2));  // status: SERVING
}

// grpc.reflection.v1alpha.ServerReflection: list_services names our service,
// which is what grpcurl does first.
TEST_F(ServerE2eTest, ReflectionListsTheSyncService) {
  StartServer();
  grpc::GenericStub generic(channel_);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  auto call = generic.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok;
  auto next = [&](intptr_t want) {
    ASSERT_TRUE(cq.Next(&tag, &ok));
    ASSERT_EQ(reinterpret_cast<intptr_t>(tag), want);
  };
  call->StartCall(reinterpret_cast<void*>(1));
  next(1);
  ASSERT_TRUE(ok);
  // ServerReflectionRequest{list_services: ""}: field 7, length 0.
  grpc::Slice req_slice(std::string("\x3a\x00", 2));
  grpc::ByteBuffer req(&req_slice, 1);
  call->Write(req, reinterpret_cast<void*>(2));
  next(2);
  ASSERT_TRUE(ok);
  grpc::ByteBuffer resp;
  call->Read(&resp, reinterpret_cast<void*>(3));
  next(3);
  ASSERT_TRUE(ok);
  call->WritesDone(reinterpret_cast<void*>(4));
  next(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  next(5);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }

  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(resp.Dump(&slices).ok());
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  // ServerReflectionResponse.list_services_response (6) -> service (1) -> name (1).
  google::protobuf::UnknownFieldSet top;
  ASSERT_TRUE(top.ParseFromString(bytes));
  std::vector<std::string> names;
  for (int i = 0; i < top.field_count(); ++i) {
    if (top.field(i).number() != 6) continue;
    google::protobuf::UnknownFieldSet list;
    ASSERT_TRUE(list.ParseFromString(top.field(i).length_delimited()));
    for (int j = 0; j < list.field_count(); ++j) {
      google::protobuf::UnknownFieldSet service;
      ASSERT_TRUE(service.ParseFromString(list.field(j).length_delimited()));
      names.push_back(service.field(0).length_delimited());
    }
  }
  EXPECT_THAT(names, ::testing::Contains("pulsesync.v1.SyncService"));
  EXPECT_THAT(names, ::testing::Contains("grpc.health.v1.Health"));
}

TEST_F(ServerE2eTest, DatabaseOutageIsUnavailableAndTheServerRecoversByItself) {
  // pulsesyncd -> proxy -> PostgreSQL; the proxy plays the outage.
  const std::string admin = testing::AdminDatabaseUrl();
  const size_t at = admin.find('@');
  const size_t colon = admin.find(':', at);
  const size_t slash = admin.find('/', colon);
  ASSERT_NE(at, std::string::npos);
  ASSERT_NE(colon, std::string::npos);
  const int pg_port = std::stoi(admin.substr(colon + 1, slash - colon - 1));
  ASSERT_OK_AND_ASSIGN(auto proxy, testing::TcpProxy::Start("127.0.0.1", pg_port));
  std::string via_proxy = db_->url();
  via_proxy.replace(colon + 1, slash - colon - 1, std::to_string(proxy->port()));
  StartServer({}, via_proxy);

  v1::ApplyRevisionsResponse resp;
  ASSERT_TRUE(Apply({MakeRevision("team", kTeam, R"({"name":"Core"})", 1)}, &resp).ok());

  proxy->SetUp(false);
  const v1::Revision during = MakeRevision("team", NewUuid(), R"({"name":"Ops"})", 2);
  grpc::Status s = Apply({during}, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("database unavailable"));
  v1::PullChangesRequest pull;
  v1::PullChangesResponse pulled;
  s = stub_->PullChanges(Context().get(), pull, &pulled);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();

  proxy->SetUp(true);
  // The same revision, retried as a client would, applies once the database
  // is back, with no restart of the server.
  EXPECT_TRUE(testing::WaitFor(
      [&] {
        v1::ApplyRevisionsResponse r;
        return Apply({during}, &r).ok() && r.results(0).outcome() ==
                                                  v1::RevisionResult::OUTCOME_APPLIED;
      },
      absl::Seconds(30), absl::Milliseconds(100)));
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM teams"), "2");
  EXPECT_TRUE(server_->running());
}

TEST_F(ServerE2eTest, RestartLosesNothingAndDuplicatesNothing) {
  StartServer();
  std::vector<v1::Revision> revs = {MakeRevision("team", kTeam, R"({"name":"Core"})", 1)};
  for (int i = 0; i < 5; ++i) {
    revs.push_back(MakeRevision("task", NewUuid(),
                                absl::StrCat(R"({"team_id":")", kTeam, R"(","title":"t)", i, "\"}"),
                                i + 2));
  }
  v1::ApplyRevisionsResponse first;
  ASSERT_TRUE(Apply(revs, &first).ok());
  std::string cursor;
  ASSERT_EQ(PullAll(&cursor).size(), 6u);

  stub_.reset();
  channel_.reset();
  ASSERT_OK_AND_ASSIGN(int code, server_->Stop());
  EXPECT_EQ(code, 0) << server_->ReadLog();
  EXPECT_THAT(server_->ReadLog(), HasSubstr("shutting down"));
  ASSERT_OK(server_->Restart());
  Connect();

  // The answer lost before the restart is asked for again: all duplicates,
  // same versions, nothing new in the log.
  v1::ApplyRevisionsResponse again;
  ASSERT_TRUE(Apply(revs, &again).ok());
  ASSERT_EQ(again.results_size(), 6);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(again.results(i).outcome(), v1::RevisionResult::OUTCOME_DUPLICATE);
    EXPECT_EQ(again.results(i).version(), first.results(i).version());
  }
  EXPECT_TRUE(PullAll(&cursor).empty());  // the old cursor still works
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM tasks"), "5");

  // A crash (SIGKILL) is no different.
  server_->Kill();
  ASSERT_OK(server_->Restart());
  Connect();
  std::string fresh;
  EXPECT_EQ(PullAll(&fresh).size(), 6u);
}

TEST_F(ServerE2eTest, ServeRefusesAStaleSchema) {
  ASSERT_OK_AND_ASSIGN(auto bare, TestDatabase::Create(/*migrated=*/false));
  ASSERT_OK_AND_ASSIGN(
      auto result,
      testing::RunCommand({testing::PulsesyncdPath(), "serve", "--database_url=" + bare->url(),
                           "--listen=127.0.0.1:0", "--plaintext"}));
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.errors, HasSubstr("pulsesyncd migrate"));

  ASSERT_OK_AND_ASSIGN(
      auto migrated,
      testing::RunCommand({testing::PulsesyncdPath(), "migrate", "--database_url=" + bare->url()}));
  EXPECT_EQ(migrated.exit_code, 0) << migrated.errors;
  ASSERT_OK_AND_ASSIGN(std::vector<Migration> files, LoadMigrations(DefaultMigrationsDir()));
  EXPECT_EQ(*bare->QueryValue("SELECT count(*) FROM pulsesync.schema_migrations"),
            std::to_string(files.size()));
}

}  // namespace
}  // namespace pulsesync
