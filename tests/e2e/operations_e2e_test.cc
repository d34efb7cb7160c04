// Operating pulsesyncd as a real process: the Prometheus endpoint moves with
// real calls, calls carry request ids (in the response and in the logs),
// `pulsesyncd health` answers for probes, and SIGTERM drains gracefully:
// streams end with UNAVAILABLE, accepted writes commit, and the process
// exits within --shutdown_grace even when a write cannot finish.
#include <signal.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/uuid.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "pqxx/pqxx"
#include "pulsesync/v1/sync.grpc.pb.h"
#include "tests/testing/http_get.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_proxy.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::HttpGet;
using ::pulsesync::testing::PrometheusSample;
using ::pulsesync::testing::ServerProcess;
using ::pulsesync::testing::TestDatabase;
using ::pulsesync::testing::WaitFor;
using ::testing::HasSubstr;

constexpr char kTeam[] = "20000000-0000-4000-8000-000000000002";

v1::Revision MakeRevision(const std::string& type, const std::string& object_id,
                          const std::string& payload, int64_t seq) {
  v1::Revision r;
  r.set_id(NewUuid());
  r.set_object_type(type);
  r.set_object_id(object_id);
  r.set_origin_id("device-ops");
  r.set_seq(seq);
  r.set_op(v1::OPERATION_UPSERT);
  r.set_payload(payload);
  r.set_created_at(1700000000000 + seq);
  r.mutable_clock()->set_physical_ms(1700000000000 + seq);
  r.set_schema_version(1);
  return r;
}

// The port in the server's "serving metrics" log line, 0 if not there yet.
int MetricsPortFromLog(const std::string& log) {
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (line.find("\"msg\":\"serving metrics\"") == absl::string_view::npos) continue;
    const size_t at = line.find("\"port\":");
    if (at == absl::string_view::npos) continue;
    absl::string_view rest = line.substr(at + 7);
    int port = 0;
    if (absl::SimpleAtoi(rest.substr(0, rest.find_first_of(",}")), &port)) return port;
  }
  return 0;
}

class OperationsE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
  }

  void StartServer(std::vector<std::string> flags, std::string url = "") {
    server_ = std::make_unique<ServerProcess>(url.empty() ? db_->url() : url,
                                              testing::MakeTempDir("ops") + "/pulsesyncd.log",
                                              std::move(flags));
    ASSERT_OK(server_->Start());
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = v1::SyncService::NewStub(channel_);
  }

  std::unique_ptr<grpc::ClientContext> Context() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return ctx;
  }

  grpc::Status Apply(const std::vector<v1::Revision>& revisions,
                     v1::ApplyRevisionsResponse* out, grpc::ClientContext* ctx = nullptr) {
    v1::ApplyRevisionsRequest req;
    for (const auto& r : revisions) *req.add_revisions() = r;
    std::unique_ptr<grpc::ClientContext> own;
    if (ctx == nullptr) {
      own = Context();
      ctx = own.get();
    }
    return stub_->ApplyRevisions(ctx, req, out);
  }

  // Creates the team and one task in it; returns the task id.
  std::string SeedTask() {
    const std::string task = NewUuid();
    v1::ApplyRevisionsResponse resp;
    grpc::Status s = Apply({MakeRevision("team", kTeam, R"({"name":"Ops"})", 1),
                            MakeRevision("task", task,
                                         absl::StrCat(R"({"team_id":")", kTeam,
                                                      R"(","title":"Drain"})"),
                                         2)},
                           &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return task;
  }

  std::string Scrape() {
    absl::StatusOr<std::string> text = HttpGet(metrics_port_, "/metrics");
    EXPECT_OK(text);
    return text.ok() ? *text : "";
  }

  double Sample(const std::string& name, const std::map<std::string, std::string>& labels = {}) {
    return PrometheusSample(Scrape(), name, labels).value_or(-1);
  }

  void FindMetricsPort() {
    ASSERT_TRUE(WaitFor([&] { return (metrics_port_ = MetricsPortFromLog(server_->ReadLog())) > 0; },
                        absl::Seconds(10)))
        << server_->ReadLog();
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::SyncService::Stub> stub_;
  int metrics_port_ = 0;
};

std::map<std::string, std::string> Call(const std::string& method, const std::string& code) {
  return {{"grpc_service", "pulsesync.v1.SyncService"},
          {"grpc_method", method},
          {"grpc_code", code}};
}

TEST_F(OperationsE2eTest, MetricsMoveWithCallsRevisionsStreamsAndDatabaseErrors) {
  // The database is reached through a proxy, to take it away later.
  ASSERT_OK_AND_ASSIGN(std::string port_text,
                       db_->QueryValue("SELECT setting FROM pg_settings WHERE name = 'port'"));
  int pg_port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(port_text, &pg_port));
  ASSERT_OK_AND_ASSIGN(auto proxy, testing::TcpProxy::Start("127.0.0.1", pg_port));
  const std::string proxied_url =
      absl::StrCat("postgresql://postgres@127.0.0.1:", proxy->port(), "/", db_->name());
  StartServer({"--metrics_listen=127.0.0.1:0", "--pool_size=3"}, proxied_url);
  FindMetricsPort();

  const std::string before = Scrape();
  EXPECT_THAT(before, HasSubstr("# TYPE pulsesync_revisions_total counter"));
  EXPECT_EQ(PrometheusSample(before, "pulsesync_pool_workers"), 3);
  EXPECT_EQ(PrometheusSample(before, "pulsesync_revisions_total", {{"outcome", "applied"}}), 0);

  // Two applied, then the same two again (duplicates), then one rejected.
  const std::string task = NewUuid();
  std::vector<v1::Revision> revisions = {
      MakeRevision("team", kTeam, R"({"name":"Ops"})", 1),
      MakeRevision("task", task, absl::StrCat(R"({"team_id":")", kTeam, R"(","title":"x"})"), 2)};
  v1::ApplyRevisionsResponse resp;
  ASSERT_TRUE(Apply(revisions, &resp).ok());
  ASSERT_TRUE(Apply(revisions, &resp).ok());
  EXPECT_EQ(resp.results(0).outcome(), v1::RevisionResult::OUTCOME_DUPLICATE);
  ASSERT_TRUE(Apply({MakeRevision("task", NewUuid(), "not json", 3)}, &resp).ok());
  EXPECT_EQ(resp.results(0).outcome(), v1::RevisionResult::OUTCOME_REJECTED);
  // A request the server refuses before any work.
  v1::ApplyRevisionsRequest bad;
  bad.set_encoding(v1::PAYLOAD_ENCODING_BROTLI);
  bad.set_compressed_batch("not brotli");
  v1::ApplyRevisionsResponse bad_resp;
  EXPECT_EQ(stub_->ApplyRevisions(Context().get(), bad, &bad_resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // A stream, open while we scrape.
  grpc::ClientContext stream_ctx;
  v1::StreamChangesRequest stream_req;
  stream_req.set_from_now(true);
  auto reader = stub_->StreamChanges(&stream_ctx, stream_req);
  v1::StreamChangesResponse first;
  ASSERT_TRUE(reader->Read(&first));  // the checkpoint on going live

  std::string text = Scrape();
  EXPECT_EQ(PrometheusSample(text, "grpc_server_handled_total", Call("ApplyRevisions", "OK")), 3);
  EXPECT_EQ(PrometheusSample(text, "grpc_server_handled_total",
                             Call("ApplyRevisions", "INVALID_ARGUMENT")),
            1);
  EXPECT_EQ(PrometheusSample(text, "grpc_server_started_total",
                             {{"grpc_method", "StreamChanges"}, {"grpc_type", "server_stream"}}),
            1);
  EXPECT_EQ(PrometheusSample(text, "pulsesync_streams_open", {{"grpc_method", "StreamChanges"}}),
            1);
  EXPECT_EQ(PrometheusSample(text, "grpc_server_handling_seconds_count",
                             {{"grpc_method", "ApplyRevisions"}}),
            4);
  EXPECT_EQ(PrometheusSample(text, "pulsesync_revisions_total", {{"outcome", "applied"}}), 2);
  EXPECT_EQ(PrometheusSample(text, "pulsesync_revisions_total", {{"outcome", "duplicate"}}), 2);
  EXPECT_EQ(PrometheusSample(text, "pulsesync_revisions_total", {{"outcome", "rejected"}}), 1);
  EXPECT_GE(PrometheusSample(text, "pulsesync_pool_busy_workers"), 0);
  EXPECT_GE(PrometheusSample(text, "pulsesync_pool_queued_jobs"), 0);
  // The hub read both changes, and is caught up.
  EXPECT_TRUE(WaitFor([&] { return Sample("pulsesync_feed_changes_read_total") >= 2; },
                      absl::Seconds(10)));
  text = Scrape();
  EXPECT_GE(PrometheusSample(text, "pulsesync_feed_read_delay_seconds_count"), 2);
  const double lag = PrometheusSample(text, "pulsesync_feed_lag_seconds").value_or(-1);
  EXPECT_GE(lag, 0);
  EXPECT_LT(lag, 10);
  EXPECT_EQ(PrometheusSample(text, "pulsesync_database_errors_total"), std::nullopt);

  // The stream's end is counted and the gauge falls back.
  stream_ctx.TryCancel();
  while (reader->Read(&first)) {
  }
  (void)reader->Finish();
  EXPECT_TRUE(WaitFor(
      [&] { return Sample("pulsesync_streams_open", {{"grpc_method", "StreamChanges"}}) == 0; },
      absl::Seconds(10)));
  EXPECT_EQ(Sample("grpc_server_handled_total",
                   {{"grpc_method", "StreamChanges"}, {"grpc_code", "CANCELLED"}}),
            1);

  // PostgreSQL goes away: calls fail UNAVAILABLE, errors are counted, and
  // the feed lag grows.
  proxy->SetUp(false);
  v1::GetServerInfoResponse info;
  EXPECT_EQ(stub_->GetServerInfo(Context().get(), v1::GetServerInfoRequest(), &info).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  text = Scrape();
  EXPECT_GE(PrometheusSample(text, "pulsesync_database_errors_total", {{"code", "UNAVAILABLE"}})
                .value_or(0),
            1);
  EXPECT_EQ(PrometheusSample(text, "grpc_server_handled_total",
                             Call("GetServerInfo", "UNAVAILABLE")),
            1);
  EXPECT_TRUE(
      WaitFor([&] { return Sample("pulsesync_feed_lag_seconds") >= 1.0; }, absl::Seconds(10)));
  proxy->SetUp(true);
  EXPECT_TRUE(WaitFor([&] { return Sample("pulsesync_feed_lag_seconds") < 1.0; },
                      absl::Seconds(20)));
  EXPECT_EQ(*server_->Stop(), 0);
}

TEST_F(OperationsE2eTest, CallsCarryRequestIdsInResponsesAndLogs) {
  StartServer({});
  // A client's own id is kept, returned, and logged with the call.
  v1::ApplyRevisionsRequest bad;
  bad.set_encoding(v1::PAYLOAD_ENCODING_BROTLI);
  bad.set_compressed_batch("not brotli");
  v1::ApplyRevisionsResponse resp;
  auto ctx = Context();
  ctx->AddMetadata("x-request-id", "client-chosen-42");
  EXPECT_EQ(stub_->ApplyRevisions(ctx.get(), bad, &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  auto returned = ctx->GetServerInitialMetadata().find("x-request-id");
  ASSERT_NE(returned, ctx->GetServerInitialMetadata().end());
  EXPECT_EQ(std::string(returned->second.data(), returned->second.size()), "client-chosen-42");
  EXPECT_TRUE(WaitFor(
      [&] {
        const std::string log = server_->ReadLog();
        return log.find("\"msg\":\"call\"") != std::string::npos &&
               log.find("\"code\":\"INVALID_ARGUMENT\"") != std::string::npos &&
               log.find("\"request_id\":\"client-chosen-42\"") != std::string::npos;
      },
      absl::Seconds(10)))
      << server_->ReadLog();

  // Without one (or with an unusable one) the server makes one up.
  for (const char* sent : {"", "bad id with spaces"}) {
    auto c = Context();
    if (*sent != '\0') c->AddMetadata("x-request-id", sent);
    v1::GetServerInfoResponse info;
    ASSERT_TRUE(stub_->GetServerInfo(c.get(), v1::GetServerInfoRequest(), &info).ok());
    auto made = c->GetServerInitialMetadata().find("x-request-id");
    ASSERT_NE(made, c->GetServerInitialMetadata().end());
    const std::string id(made->second.data(), made->second.size());
    EXPECT_EQ(id.size(), 36u) << id;  // a UUID
  }
}

TEST_F(OperationsE2eTest, SigtermLetsAcceptedWritesCommitAndEndsStreamsUnavailable) {
  StartServer({"--shutdown_grace=20s"});
  const std::string task = SeedTask();
  ASSERT_OK_AND_ASSIGN(auto health, testing::RunCommand({testing::PulsesyncdPath(), "health",
                                                         "--address=" + server_->address()}));
  EXPECT_EQ(health.exit_code, 0) << health.errors;
  EXPECT_EQ(health.output, "SERVING\n");

  // A live stream.
  grpc::ClientContext stream_ctx;
  v1::StreamChangesRequest stream_req;
  stream_req.set_from_now(true);
  auto reader = stub_->StreamChanges(&stream_ctx, stream_req);
  v1::StreamChangesResponse msg;
  ASSERT_TRUE(reader->Read(&msg));

  // A write that is in flight when SIGTERM comes: it waits on a row lock.
  pqxx::connection locker(db_->url());
  pqxx::work lock_tx(locker);
  lock_tx.exec(absl::StrCat("SELECT 1 FROM tasks WHERE id = '", task, "' FOR UPDATE"));
  v1::ApplyRevisionsResponse write_resp;
  grpc::Status write_status;
  absl::Notification write_done;
  std::thread writer([&] {
    write_status = Apply({MakeRevision("task", task, R"({"status":"done"})", 3)}, &write_resp);
    write_done.Notify();
  });
  ASSERT_TRUE(WaitFor(
      [&] {
        return *db_->QueryValue(absl::StrCat(
                   "SELECT count(*) FROM pg_stat_activity WHERE datname = '", db_->name(),
                   "' AND wait_event_type = 'Lock'")) == "1";
      },
      absl::Seconds(10)));

  ASSERT_OK(server_->Signal(SIGTERM));
  // The stream ends at once, with a status that sends the client elsewhere.
  while (reader->Read(&msg)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  // New work is refused; the health probe reports the server out.
  v1::GetServerInfoResponse info;
  EXPECT_EQ(stub_->GetServerInfo(Context().get(), v1::GetServerInfoRequest(), &info).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  ASSERT_OK_AND_ASSIGN(health, testing::RunCommand({testing::PulsesyncdPath(), "health",
                                                    "--address=" + server_->address()}));
  EXPECT_EQ(health.exit_code, 1);
  EXPECT_FALSE(write_done.HasBeenNotified());
  EXPECT_TRUE(server_->running());

  // The write finishes once the lock goes, and is answered; then the
  // process exits cleanly.
  lock_tx.commit();
  writer.join();
  ASSERT_TRUE(write_status.ok()) << write_status.error_message();
  ASSERT_EQ(write_resp.results_size(), 1);
  EXPECT_EQ(write_resp.results(0).outcome(), v1::RevisionResult::OUTCOME_APPLIED);
  EXPECT_EQ(*db_->QueryValue(absl::StrCat("SELECT status FROM tasks WHERE id = '", task, "'")),
            "done");
  EXPECT_EQ(*server_->WaitForExit(absl::Seconds(20)), 0);
}

TEST_F(OperationsE2eTest, SigtermExitsWithinTheGraceWhenAWriteCannotFinish) {
  StartServer({"--shutdown_grace=2s"});
  const std::string task = SeedTask();
  pqxx::connection locker(db_->url());
  pqxx::work lock_tx(locker);
  lock_tx.exec(absl::StrCat("SELECT 1 FROM tasks WHERE id = '", task, "' FOR UPDATE"));
  v1::ApplyRevisionsResponse write_resp;
  grpc::Status write_status;
  std::thread writer([&] {
    write_status = Apply({MakeRevision("task", task, R"({"status":"done"})", 3)}, &write_resp);
  });
  ASSERT_TRUE(WaitFor(
      [&] {
        return *db_->QueryValue(absl::StrCat(
                   "SELECT count(*) FROM pg_stat_activity WHERE datname = '", db_->name(),
                   "' AND wait_event_type = 'Lock'")) == "1";
      },
      absl::Seconds(10)));
  const absl::Time sent = absl::Now();
  ASSERT_OK(server_->Signal(SIGTERM));
  ASSERT_OK_AND_ASSIGN(int code, server_->WaitForExit(absl::Seconds(15)));
  const absl::Duration took = absl::Now() - sent;
  EXPECT_EQ(code, 1);
  EXPECT_GE(took, absl::Milliseconds(1900));
  EXPECT_LT(took, absl::Seconds(6));
  writer.join();
  EXPECT_EQ(write_status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << write_status.error_message();
  lock_tx.commit();
  // Nothing half-done: the write did not commit, and a retry applies it.
  EXPECT_EQ(*db_->QueryValue(absl::StrCat("SELECT status FROM tasks WHERE id = '", task, "'")),
            "todo");
}

}  // namespace
}  // namespace pulsesync
