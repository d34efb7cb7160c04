// StreamChanges end to end: real pulsesyncd processes, real PostgreSQL
// sessions (long and idle transactions, psql-style writes), real gRPC
// streams that disconnect, resume, filter, and fall behind.
#include <atomic>
#include <chrono>
#include <memory>
#include <pqxx/pqxx>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/json.h"
#include "common/uuid.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "pulsesync/v1/sync.grpc.pb.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::ServerProcess;
using ::pulsesync::testing::TestDatabase;
using ::pulsesync::testing::WaitFor;
using ::testing::HasSubstr;

constexpr absl::Duration kDeadline = absl::Seconds(30);

// Reads a StreamChanges call on its own thread and collects what arrives.
class StreamCollector {
 public:
  StreamCollector(v1::SyncService::Stub* stub, v1::StreamChangesRequest request,
                  std::string user_id = "", bool paused = false)
      : paused_(paused) {
    if (!user_id.empty()) context_.AddMetadata("x-pulsesync-user-id", user_id);
    reader_ = stub->StreamChanges(&context_, request);
    thread_ = std::thread([this] { Run(); });
  }
  ~StreamCollector() { Cancel(); }

  void Resume() {
    absl::MutexLock lock(&mu_);
    paused_ = false;
  }

  void Cancel() {
    if (thread_.joinable()) {
      context_.TryCancel();
      Resume();
      thread_.join();
    }
  }

  bool WaitForChanges(size_t n) {
    return WaitFor([&] { return changes().size() >= n; }, kDeadline);
  }
  // A from_now stream announces that it is live with a checkpoint.
  bool WaitForLive() {
    return WaitFor([&] { return !last_cursor().empty(); }, kDeadline);
  }
  bool WaitForEnd() {
    return WaitFor([&] {
      absl::MutexLock lock(&mu_);
      return ended_;
    }, kDeadline);
  }

  std::vector<v1::Change> changes() {
    absl::MutexLock lock(&mu_);
    return changes_;
  }
  std::string last_cursor() {
    absl::MutexLock lock(&mu_);
    return last_cursor_;
  }
  grpc::Status status() {
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  void Run() {
    mu_.LockWhen(absl::Condition(+[](bool* p) { return !*p; }, &paused_));
    mu_.Unlock();
    v1::StreamChangesResponse msg;
    while (reader_->Read(&msg)) {
      absl::MutexLock lock(&mu_);
      for (const v1::Change& c : msg.changes()) {
        changes_.push_back(c);
        last_cursor_ = c.cursor();
      }
      if (msg.changes_size() == 0) last_cursor_ = msg.checkpoint();
    }
    grpc::Status s = reader_->Finish();
    absl::MutexLock lock(&mu_);
    status_ = s;
    ended_ = true;
  }

  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::StreamChangesResponse>> reader_;
  std::thread thread_;
  absl::Mutex mu_;
  bool paused_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::Change> changes_ ABSL_GUARDED_BY(mu_);
  std::string last_cursor_ ABSL_GUARDED_BY(mu_);
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
};

class StreamE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    team_ = NewUuid();
    ASSERT_OK(db_->Execute(absl::StrCat("INSERT INTO teams (id, name) VALUES ('", team_,
                                        "', 'Core')")));
  }

  ServerProcess* StartServer(std::vector<std::string> flags = {"--feed_poll_ms=100"}) {
    servers_.push_back(std::make_unique<ServerProcess>(
        db_->url(), testing::MakeTempDir("stream") + "/pulsesyncd.log", std::move(flags)));
    EXPECT_OK(servers_.back()->Start());
    return servers_.back().get();
  }

  std::unique_ptr<v1::SyncService::Stub> Stub(ServerProcess* server) {
    return v1::SyncService::NewStub(
        grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials()));
  }

  // Creates tasks through ApplyRevisions; returns their ids.
  std::vector<std::string> CreateTasks(v1::SyncService::Stub* stub, int n,
                                       const std::string& team = "") {
    v1::ApplyRevisionsRequest req;
    std::vector<std::string> ids;
    for (int i = 0; i < n; ++i) {
      v1::Revision* r = req.add_revisions();
      r->set_id(NewUuid());
      r->set_object_type("task");
      r->set_object_id(NewUuid());
      r->set_origin_id("stream-test");
      r->set_seq(++seq_);
      r->set_op(v1::OPERATION_UPSERT);
      r->set_payload(absl::StrCat(R"({"team_id":")", team.empty() ? team_ : team,
                                  R"(","title":"task )", seq_, R"(","priority":)", seq_ % 5, "}"));
      r->set_created_at(1700000000000 + seq_);
      r->mutable_clock()->set_physical_ms(1700000000000 + seq_);
      ids.push_back(r->object_id());
    }
    grpc::ClientContext ctx;
    v1::ApplyRevisionsResponse resp;
    grpc::Status s = stub->ApplyRevisions(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    for (const auto& r : resp.results()) {
      EXPECT_EQ(r.outcome(), v1::RevisionResult::OUTCOME_APPLIED) << r.reason();
    }
    return ids;
  }

  static std::vector<std::string> Ids(const std::vector<v1::Change>& changes) {
    std::vector<std::string> ids;
    for (const auto& c : changes) ids.push_back(c.object_id());
    return ids;
  }

  std::unique_ptr<TestDatabase> db_;
  std::string team_;
  int64_t seq_ = 0;
  std::vector<std::unique_ptr<ServerProcess>> servers_;
};

TEST_F(StreamE2eTest, CatchesUpFromTheCursorThenDeliversNewChangesLive) {
  ServerProcess* server = StartServer();
  auto stub = Stub(server);
  std::vector<std::string> before = CreateTasks(stub.get(), 3);
  StreamCollector stream(stub.get(), v1::StreamChangesRequest());
  // The team row (inserted with SQL) and 3 tasks.
  ASSERT_TRUE(stream.WaitForChanges(4));
  std::vector<std::string> after = CreateTasks(stub.get(), 2);
  ASSERT_TRUE(stream.WaitForChanges(6));
  std::vector<v1::Change> got = stream.changes();
  ASSERT_EQ(got.size(), 6u);
  EXPECT_EQ(got[0].object_type(), "team");
  std::vector<std::string> want = before;
  want.insert(want.end(), after.begin(), after.end());
  const std::vector<std::string> ids = Ids(got);
  EXPECT_EQ(std::vector<std::string>(ids.begin() + 1, ids.end()), want);
  for (size_t i = 1; i < got.size(); ++i) {
    EXPECT_GT(got[i].position(), got[i - 1].position());
    EXPECT_FALSE(got[i].cursor().empty());
    EXPECT_EQ(got[i].event(), v1::EVENT_TYPE_INSERT);
    EXPECT_EQ(got[i].schema(), "public");
    EXPECT_EQ(got[i].table(), "tasks");
    EXPECT_EQ(got[i].origin_id(), "stream-test");
    EXPECT_FALSE(got[i].revision_id().empty());
  }
}

// StreamChanges is served raw (its messages are shared encoded bytes), so
// the server parses the request itself: bytes that are no request get a
// clear INVALID_ARGUMENT, and the server goes on serving.
TEST_F(StreamE2eTest, AMalformedRequestIsRefusedWithInvalidArgument) {
  ServerProcess* server = StartServer();
  auto channel = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
  grpc::GenericStub generic(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      generic.PrepareCall(&ctx, "/pulsesync.v1.SyncService/StreamChanges", &cq);
  auto step = [&](void* tag) {
    void* got = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&got, &ok));
    EXPECT_EQ(got, tag);
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(step(reinterpret_cast<void*>(1)));
  // Field 1 (cursor) declared 100 bytes long, with 3 present.
  const std::string garbage = "\x0a\x64abc";
  grpc::Slice slice(garbage.data(), garbage.size());
  grpc::ByteBuffer request(&slice, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  step(reinterpret_cast<void*>(2));
  call->WritesDone(reinterpret_cast<void*>(3));
  step(reinterpret_cast<void*>(3));
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  EXPECT_FALSE(step(reinterpret_cast<void*>(4)));  // no message: the call ends
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  ASSERT_TRUE(step(reinterpret_cast<void*>(5)));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("malformed StreamChangesRequest"));
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
  // A well-formed stream on the same server still works.
  auto stub = Stub(server);
  StreamCollector stream(stub.get(), v1::StreamChangesRequest());
  EXPECT_TRUE(stream.WaitForChanges(1));  // the team row
}

TEST_F(StreamE2eTest, ResumingFromTheLastCursorLosesNothingAndRepeatsNothing) {
  ServerProcess* server = StartServer();
  auto stub = Stub(server);
  std::vector<std::string> all = CreateTasks(stub.get(), 5);
  std::string cursor;
  std::vector<std::string> seen;
  {
    StreamCollector stream(stub.get(), v1::StreamChangesRequest());
    ASSERT_TRUE(stream.WaitForChanges(6));
    for (const auto& c : stream.changes()) {
      if (c.object_type() == "task") seen.push_back(c.object_id());
    }
    cursor = stream.last_cursor();
  }  // disconnected
  // Written while the client is away.
  std::vector<std::string> offline = CreateTasks(stub.get(), 4);
  all.insert(all.end(), offline.begin(), offline.end());
  v1::StreamChangesRequest resume;
  resume.set_cursor(cursor);
  StreamCollector stream(stub.get(), resume);
  ASSERT_TRUE(stream.WaitForChanges(4));
  std::vector<std::string> live = CreateTasks(stub.get(), 2);
  all.insert(all.end(), live.begin(), live.end());
  ASSERT_TRUE(stream.WaitForChanges(6));
  for (const auto& c : stream.changes()) seen.push_back(c.object_id());
  EXPECT_EQ(seen, all);  // each once, in order
}

TEST_F(StreamE2eTest, FromNowSkipsHistoryAndSqlWritesAreStreamed) {
  ServerProcess* server = StartServer();
  auto stub = Stub(server);
  CreateTasks(stub.get(), 3);
  v1::StreamChangesRequest req;
  req.set_from_now(true);
  StreamCollector stream(stub.get(), req);
  ASSERT_TRUE(stream.WaitForLive());
  // A write made with plain SQL, as psql or PostgREST would.
  const std::string id = NewUuid();
  ASSERT_OK(db_->Execute(absl::StrCat("INSERT INTO tasks (id, team_id, title) VALUES ('", id,
                                      "', '", team_, "', 'from psql')")));
  ASSERT_TRUE(stream.WaitForChanges(1));
  std::vector<v1::Change> got = stream.changes();
  EXPECT_EQ(got.back().object_id(), id);
  EXPECT_TRUE(got.back().origin_id().empty());
  EXPECT_TRUE(got.back().revision_id().empty());
  EXPECT_THAT(got.back().new_record(), HasSubstr("from psql"));
  for (const auto& c : got) EXPECT_EQ(c.object_id(), id) << "history leaked into a from_now stream";
}

// Migration 0017: the log's INSERT of a SQL write notifies the hubs, so
// the write reaches streams without waiting for a poll (here ten minutes,
// far beyond the test's deadline).
TEST_F(StreamE2eTest, ASqlTransactionWakesTheFeedWithoutWaitingForThePoll) {
  ServerProcess* server = StartServer({"--feed_poll_ms=600000"});
  auto stub = Stub(server);
  v1::StreamChangesRequest req;
  req.set_from_now(true);
  StreamCollector stream(stub.get(), req);
  ASSERT_TRUE(stream.WaitForLive());
  ASSERT_OK(db_->Execute(absl::StrCat(
      "INSERT INTO tasks (id, team_id, title) SELECT gen_random_uuid(), '", team_,
      "', 'bulk ' || i FROM generate_series(1, 2500) AS i")));
  ASSERT_TRUE(stream.WaitForChanges(2500)) << stream.changes().size() << " of 2500";
  EXPECT_EQ(stream.changes().size(), 2500u);
}

TEST_F(StreamE2eTest, LongTransactionIsDeliveredWhenItCommitsWithoutHoldingOthersBack) {
  ServerProcess* server = StartServer();
  auto stub = Stub(server);
  v1::StreamChangesRequest req;
  req.set_from_now(true);
  StreamCollector stream(stub.get(), req);
  ASSERT_TRUE(stream.WaitForLive());

  // An idle-in-transaction session that wrote nothing, and a long one that
  // took its log position first.
  pqxx::connection idle_conn(db_->url());
  pqxx::work idle(idle_conn);
  idle.exec("SELECT 1");
  pqxx::connection long_conn(db_->url());
  pqxx::work long_tx(long_conn);
  const std::string late = NewUuid();
  long_tx.exec(absl::StrCat("INSERT INTO tasks (id, team_id, title) VALUES ('", late, "', '",
                            team_, "', 'late')"));

  std::vector<std::string> quick = CreateTasks(stub.get(), 3);
  ASSERT_TRUE(stream.WaitForChanges(3)) << "an open transaction held back other changes";
  EXPECT_EQ(Ids(stream.changes()), quick);

  long_tx.commit();
  ASSERT_TRUE(stream.WaitForChanges(4));
  std::vector<v1::Change> got = stream.changes();
  EXPECT_EQ(got[3].object_id(), late);
  EXPECT_LT(got[3].position(), got[0].position());  // earlier position, later commit
  idle.abort();
}

TEST_F(StreamE2eTest, FiltersSelectTablesEventsAndColumnsIncludingDeletes) {
  ServerProcess* server = StartServer();
  auto stub = Stub(server);
  v1::StreamChangesRequest req;
  req.set_from_now(true);
  v1::Subscription* sub = req.add_subscriptions();
  sub->set_table("tasks");
  sub->add_events(v1::EVENT_TYPE_DELETE);
  sub->add_filters("status=eq.done");
  StreamCollector stream(stub.get(), req);
  ASSERT_TRUE(stream.WaitForLive());
  const std::string a = NewUuid(), b = NewUuid();
  ASSERT_OK(db_->Execute(absl::StrCat(
      "INSERT INTO tasks (id, team_id, title, status) VALUES ('", a, "','", team_,
      "','a','done'), ('", b, "','", team_, "','b','todo');"
      "UPDATE tasks SET title = 'a2';"
      "DELETE FROM tasks WHERE id = '", b, "';"
      "DELETE FROM tasks WHERE id = '", a, "';")));
  ASSERT_TRUE(stream.WaitForChanges(1));
  // Nothing else may follow: a marker change that matches proves the stream
  // moved past everything before it.
  const std::string marker = NewUuid();
  ASSERT_OK(db_->Execute(absl::StrCat("INSERT INTO tasks (id, team_id, title, status) VALUES ('",
                                      marker, "','", team_, "','m','done');"
                                      "DELETE FROM tasks WHERE id = '", marker, "'")));
  ASSERT_TRUE(stream.WaitForChanges(2));
  std::vector<v1::Change> got = stream.changes();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].object_id(), a);
  EXPECT_EQ(got[0].event(), v1::EVENT_TYPE_DELETE);
  EXPECT_TRUE(got[0].new_record().empty());
  EXPECT_THAT(got[0].old_record(), HasSubstr("\"a2\""));
  EXPECT_EQ(got[1].object_id(), marker);

  v1::StreamChangesRequest bad;
  bad.add_subscriptions()->add_filters("priority=like.3");
  StreamCollector rejected(stub.get(), bad);
  ASSERT_TRUE(rejected.WaitForEnd());
  EXPECT_EQ(rejected.status().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(rejected.status().error_message(), HasSubstr("like"));
}

TEST_F(StreamE2eTest, OnlyTheSubscribersTeamsAndRemovalTakesEffectMidStream) {
  ServerProcess* server = StartServer();
  auto stub = Stub(server);
  const std::string other_team = NewUuid(), user = NewUuid(), membership = NewUuid();
  ASSERT_OK(db_->Execute(absl::StrCat(
      "INSERT INTO teams (id, name) VALUES ('", other_team, "', 'Other');"
      "INSERT INTO users (id, email) VALUES ('", user, "', 'u@example.com');"
      "INSERT INTO team_members (id, team_id, user_id) VALUES ('", membership, "','", team_,
      "','", user, "');")));
  v1::StreamChangesRequest req;
  req.set_from_now(true);
  StreamCollector stream(stub.get(), req, user);
  ASSERT_TRUE(stream.WaitForLive());

  std::vector<std::string> mine = CreateTasks(stub.get(), 2);
  CreateTasks(stub.get(), 2, other_team);
  std::vector<std::string> mine2 = CreateTasks(stub.get(), 1);
  ASSERT_TRUE(stream.WaitForChanges(3));
  mine.insert(mine.end(), mine2.begin(), mine2.end());
  EXPECT_EQ(Ids(stream.changes()), mine);

  // Removed from the team: the removal is delivered, then nothing of it.
  ASSERT_OK(db_->Execute(absl::StrCat("DELETE FROM team_members WHERE id = '", membership, "'")));
  CreateTasks(stub.get(), 2);
  // The marker that proves the stream moved past those tasks must be a row
  // the users policy (users_self_or_teammate) shows this user: with no team
  // left they have no teammates, so a new stranger's users row would
  // (rightly) not flow; an update of their own users row does.
  ASSERT_OK(db_->Execute(
      absl::StrCat("UPDATE users SET display_name = 'marker' WHERE id = '", user, "'")));
  ASSERT_TRUE(stream.WaitForChanges(5));
  std::vector<v1::Change> got = stream.changes();
  ASSERT_EQ(got.size(), 5u);
  EXPECT_EQ(got[3].object_type(), "team_member");
  EXPECT_EQ(got[3].event(), v1::EVENT_TYPE_DELETE);
  EXPECT_EQ(got[4].object_type(), "user");  // their own users row still flows
  EXPECT_EQ(got[4].object_id(), user);

  // A malformed user id is refused.
  StreamCollector bad(stub.get(), req, "not-a-uuid");
  ASSERT_TRUE(bad.WaitForEnd());
  EXPECT_EQ(bad.status().error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(StreamE2eTest, AWriteThroughOneReplicaIsStreamedByAnother) {
  ServerProcess* a = StartServer();
  ServerProcess* b = StartServer();
  auto stub_a = Stub(a);
  auto stub_b = Stub(b);
  v1::StreamChangesRequest req;
  req.set_from_now(true);
  StreamCollector on_b(stub_b.get(), req);
  StreamCollector on_a(stub_a.get(), req);
  ASSERT_TRUE(on_b.WaitForLive());
  ASSERT_TRUE(on_a.WaitForLive());
  std::vector<std::string> ids = CreateTasks(stub_a.get(), 3);
  ASSERT_TRUE(on_b.WaitForChanges(3));
  ASSERT_TRUE(on_a.WaitForChanges(3));
  EXPECT_EQ(Ids(on_b.changes()), ids);

  // B's cursor resumes on A.
  const std::string cursor = on_b.last_cursor();
  on_b.Cancel();
  std::vector<std::string> more = CreateTasks(stub_b.get(), 2);
  v1::StreamChangesRequest resume;
  resume.set_cursor(cursor);
  StreamCollector on_a_again(stub_a.get(), resume);
  ASSERT_TRUE(on_a_again.WaitForChanges(2));
  EXPECT_EQ(Ids(on_a_again.changes()), more);
}

TEST_F(StreamE2eTest, ASlowConsumerFallsBackToTheLogAndMissesNothing) {
  // A tiny ring: the stalled stream is evicted from it many times over.
  ServerProcess* server = StartServer({"--feed_poll_ms=20", "--feed_ring_batches=2"});
  auto stub = Stub(server);
  v1::StreamChangesRequest req;
  req.set_from_now(true);
  StreamCollector live(stub.get(), req);
  ASSERT_TRUE(live.WaitForLive());
  // The stalled stream starts from the live one's cursor, so both see the same changes.
  v1::StreamChangesRequest from_cursor;
  from_cursor.set_cursor(live.last_cursor());
  StreamCollector stalled(stub.get(), from_cursor, "", /*paused=*/true);
  std::vector<std::string> all;
  for (int i = 0; i < 40; ++i) {
    std::vector<std::string> ids = CreateTasks(stub.get(), 25);
    all.insert(all.end(), ids.begin(), ids.end());
  }
  ASSERT_TRUE(live.WaitForChanges(all.size()));
  stalled.Resume();
  ASSERT_TRUE(stalled.WaitForChanges(all.size()));
  EXPECT_EQ(Ids(stalled.changes()), all);
  EXPECT_EQ(Ids(live.changes()), all);
}

// Streams join the live feed while the hub is in the middle of multi-page
// batches (tiny pages, big transactions). Each must receive exactly what a
// plain PullChanges reader sees from the same cursor: nothing skipped at the
// join, nothing twice.
TEST_F(StreamE2eTest, StreamsJoiningMidBatchMissNothing) {
  ServerProcess* server = StartServer({"--feed_poll_ms=10", "--feed_page_limit=7"});
  auto stub = Stub(server);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    // Until every stream has started (bounded): a stream that started after
    // the writes ended would wait for changes that never come.
    for (int i = 0; !stop && i < 20000; ++i) {
      (void)db_->Execute(absl::StrCat(
          "INSERT INTO tasks (id, team_id, title) SELECT gen_random_uuid(), '", team_,
          "', 'bulk' FROM generate_series(1, 40)"));
    }
  });
  auto pull_cursor = [&] {
    // The end of the log as PullChanges sees it now.
    std::string cursor;
    for (int page = 0; page < 10000; ++page) {
      grpc::ClientContext ctx;
      v1::PullChangesRequest req;
      req.set_cursor(cursor);
      req.set_limit(5000);
      v1::PullChangesResponse resp;
      EXPECT_TRUE(stub->PullChanges(&ctx, req, &resp).ok());
      cursor = resp.next_cursor();
      if (!resp.has_more()) break;
    }
    return cursor;
  };
  std::vector<std::string> starts;
  std::vector<std::unique_ptr<StreamCollector>> streams;
  for (int i = 0; i < 5; ++i) {
    starts.push_back(pull_cursor());
    v1::StreamChangesRequest req;
    req.set_cursor(starts.back());
    streams.push_back(std::make_unique<StreamCollector>(stub.get(), req));
    ASSERT_TRUE(WaitFor([&] { return streams.back()->changes().size() >= 40; }, kDeadline));
  }
  stop = true;
  writer.join();
  for (int i = 0; i < 5; ++i) {
    // The reference: PullChanges from the same cursor to the end.
    std::vector<std::string> want;
    std::string cursor = starts[i];
    for (int page = 0; page < 10000; ++page) {
      grpc::ClientContext ctx;
      v1::PullChangesRequest req;
      req.set_cursor(cursor);
      req.set_limit(5000);
      v1::PullChangesResponse resp;
      ASSERT_TRUE(stub->PullChanges(&ctx, req, &resp).ok());
      for (const auto& c : resp.changes()) want.push_back(c.object_id());
      cursor = resp.next_cursor();
      if (!resp.has_more()) break;
    }
    ASSERT_TRUE(streams[i]->WaitForChanges(want.size())) << "stream " << i;
    EXPECT_EQ(Ids(streams[i]->changes()), want) << "stream " << i;
  }
}

TEST_F(StreamE2eTest, ShutdownEndsStreamsWithUnavailableAndTheCursorResumes) {
  ServerProcess* server = StartServer();
  auto stub = Stub(server);
  std::vector<std::string> ids = CreateTasks(stub.get(), 2);
  StreamCollector stream(stub.get(), v1::StreamChangesRequest());
  ASSERT_TRUE(stream.WaitForChanges(3));
  ASSERT_OK(server->Stop().status());
  ASSERT_TRUE(stream.WaitForEnd());
  EXPECT_EQ(stream.status().error_code(), grpc::StatusCode::UNAVAILABLE);
  ASSERT_OK(server->Restart());
  auto stub2 = Stub(server);
  std::vector<std::string> more = CreateTasks(stub2.get(), 2);
  v1::StreamChangesRequest resume;
  resume.set_cursor(stream.last_cursor());
  StreamCollector again(stub2.get(), resume);
  ASSERT_TRUE(again.WaitForChanges(2));
  EXPECT_EQ(Ids(again.changes()), more);
}

}  // namespace
}  // namespace pulsesync
