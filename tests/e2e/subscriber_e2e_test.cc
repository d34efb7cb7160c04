// The client's Subscriber against real pulsesyncd processes and PostgreSQL:
// snapshot-then-stream while writes continue, offline edits that converge
// after the server comes back, team-scoped snapshots, and the CLI's watch.
#include <signal.h>

#include <atomic>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/core/subscriber.h"
#include "client/core/sync_engine.h"
#include "client/store/local_store.h"
#include "client/transport/grpc_transport.h"
#include "common/json.h"
#include "common/uuid.h"
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

constexpr absl::Duration kDeadline = absl::Seconds(60);

// One client: its SQLite file, transport, engine and subscriber.
struct Client {
  Client(const std::string& path, const std::string& address) {
    store = std::move(LocalStore::Open(path)).value();
    transport = GrpcTransport::Create(address);
    engine = std::make_unique<SyncEngine>(store.get(), transport.get());
    SubscriberOptions options;
    options.initial_backoff = absl::Milliseconds(50);
    options.max_backoff = absl::Milliseconds(500);
    options.push_debounce = absl::Milliseconds(50);
    subscriber =
        std::make_unique<Subscriber>(store.get(), transport.get(), engine.get(), options);
  }
  ~Client() { subscriber->Stop(); }

  // id -> (version, title) of every live task.
  std::map<std::string, std::pair<int64_t, std::string>> Tasks() {
    std::map<std::string, std::pair<int64_t, std::string>> out;
    auto rows = store->List("task");
    if (!rows.ok()) return out;
    for (const JsonValue& r : *rows) {
      out[r.Find("id")->text()] = {r.Find("version")->AsInt64().value_or(-1),
                                   r.Find("title")->text()};
    }
    return out;
  }

  std::unique_ptr<LocalStore> store;
  std::unique_ptr<GrpcTransport> transport;
  std::unique_ptr<SyncEngine> engine;
  std::unique_ptr<Subscriber> subscriber;
};

class SubscriberE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    dir_ = testing::MakeTempDir("subscriber");
    team_ = NewUuid();
    ASSERT_OK(db_->Execute(absl::StrCat("INSERT INTO teams (id, name) VALUES ('", team_,
                                        "', 'Core')")));
    server_ = std::make_unique<ServerProcess>(db_->url(), dir_ + "/pulsesyncd.log",
                                              std::vector<std::string>{"--feed_poll_ms=50"});
    ASSERT_OK(server_->Start());
  }

  std::map<std::string, std::pair<int64_t, std::string>> ServerTasks() {
    std::map<std::string, std::pair<int64_t, std::string>> out;
    absl::StatusOr<std::string> all = db_->QueryValue(
        "SELECT coalesce(string_agg(id || '|' || version || '|' || title, E'\\n'), '') "
        "FROM tasks WHERE NOT deleted");
    for (absl::string_view line : absl::StrSplit(*all, '\n', absl::SkipEmpty())) {
      std::vector<std::string> f = absl::StrSplit(line, absl::MaxSplits('|', 2));
      out[f[0]] = {std::stoll(f[1]), f[2]};
    }
    return out;
  }

  std::unique_ptr<TestDatabase> db_;
  std::string dir_;
  std::string team_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(SubscriberE2eTest, SnapshotThenStreamConvergesWhileWritesContinue) {
  ASSERT_OK(db_->Execute(absl::StrCat(
      "INSERT INTO tasks (id, team_id, title) SELECT gen_random_uuid(), '", team_,
      "', 'pre ' || i FROM generate_series(1, 1500) i")));
  // A writer keeps creating and renaming tasks before, during and after the
  // snapshot.
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 0; i < 400; ++i) {
      (void)db_->Execute(absl::StrCat(
          "INSERT INTO tasks (id, team_id, title) VALUES (gen_random_uuid(), '", team_,
          "', 'live ", i, "');"
          "UPDATE tasks SET title = title || '+' WHERE id = (SELECT id FROM tasks ORDER BY "
          "random() LIMIT 1);"));
      ++written;
    }
  });
  const bool writing = WaitFor([&] { return written >= 50; }, kDeadline);
  Client client(dir_ + "/a.db", server_->address());
  client.subscriber->Start();
  writer.join();
  ASSERT_TRUE(writing);
  const auto want = ServerTasks();
  EXPECT_TRUE(WaitFor([&] { return client.Tasks() == want; }, kDeadline))
      << "client has " << client.Tasks().size() << " tasks, server " << want.size();
}

TEST_F(SubscriberE2eTest, OfflineEditsConvergeAfterTheServerComesBack) {
  Client a(dir_ + "/a.db", server_->address());
  Client b(dir_ + "/b.db", server_->address());
  a.subscriber->Start();
  b.subscriber->Start();
  ASSERT_OK_AND_ASSIGN(
      std::string shared,
      a.store->Create("task", JsonValue::Object({{"team_id", JsonValue::String(team_)},
                                                 {"title", JsonValue::String("shared")}})));
  // Pushed shortly after the write, streamed to b.
  ASSERT_TRUE(WaitFor([&] { return b.Tasks().count(shared) == 1; }, kDeadline));

  ASSERT_OK(server_->Stop().status());
  ASSERT_OK_AND_ASSIGN(
      std::string offline,
      a.store->Create("task", JsonValue::Object({{"team_id", JsonValue::String(team_)},
                                                 {"title", JsonValue::String("offline")}})));
  ASSERT_OK(a.store->Update("task", shared,
                            JsonValue::Object({{"title", JsonValue::String("edited offline")}})));
  ASSERT_OK(server_->Restart());

  // Both reconnect by themselves (backoff), a pushes, b streams.
  const auto converged = [&] {
    const auto want = ServerTasks();
    return want.size() == 2 && a.Tasks() == want && b.Tasks() == want &&
           want.at(shared).second == "edited offline";
  };
  EXPECT_TRUE(WaitFor(converged, kDeadline))
      << "a: " << a.Tasks().size() << " b: " << b.Tasks().size()
      << " server: " << ServerTasks().size();
  EXPECT_EQ(b.Tasks().count(offline), 1u);
}

TEST_F(SubscriberE2eTest, AClientBehindTheCompactedLogReSnapshotsAndConverges) {
  ASSERT_OK(db_->Execute(absl::StrCat(
      "INSERT INTO tasks (id, team_id, title) SELECT gen_random_uuid(), '", team_,
      "', 'first ' || i FROM generate_series(1, 3) i")));
  {
    Client a(dir_ + "/a.db", server_->address());
    a.subscriber->Start();
    ASSERT_TRUE(WaitFor([&] { return a.Tasks() == ServerTasks(); }, kDeadline));
  }  // a goes offline with its cursor
  const std::string gone = *db_->QueryValue("SELECT id FROM tasks ORDER BY title LIMIT 1");
  ASSERT_OK(db_->Execute(absl::StrCat(
      "DELETE FROM tasks WHERE id = '", gone, "';"
      "INSERT INTO tasks (id, team_id, title) VALUES (gen_random_uuid(), '", team_,
      "', 'while away');")));
  // The feed's horizon passes everything so far (the rows stay, for the
  // audit trail): a's cursor is now behind it. (Compaction waits for older
  // transactions anywhere in the cluster, e.g. other tests': retry until the
  // horizon has passed the whole log.)
  ASSERT_TRUE(WaitFor(
      [&] {
        (void)db_->QueryValue("SELECT pulsesync.compact_change_log(interval '0')");
        return *db_->QueryValue("SELECT (SELECT passed_position FROM pulsesync.feed_horizon) >= "
                                "(SELECT max(position) FROM pulsesync.change_log)") == "t";
      },
      kDeadline));

  Client again(dir_ + "/a.db", server_->address());
  again.subscriber->Start();
  EXPECT_TRUE(WaitFor([&] { return again.Tasks() == ServerTasks(); }, kDeadline))
      << "client has " << again.Tasks().size() << " tasks, server " << ServerTasks().size();
  EXPECT_EQ(again.Tasks().count(gone), 0u);
}

TEST_F(SubscriberE2eTest, SnapshotIsLimitedToTheUsersTeams) {
  const std::string other = NewUuid(), user = NewUuid();
  ASSERT_OK(db_->Execute(absl::StrCat(
      "INSERT INTO teams (id, name) VALUES ('", other, "', 'Other');"
      "INSERT INTO users (id, email) VALUES ('", user, "', 'u@example.com');"
      "INSERT INTO team_members (id, team_id, user_id) VALUES (gen_random_uuid(), '", team_,
      "', '", user, "');"
      "INSERT INTO tasks (id, team_id, title) VALUES (gen_random_uuid(), '", team_,
      "', 'mine'), (gen_random_uuid(), '", other, "', 'theirs');")));
  auto stub = v1::SyncService::NewStub(
      grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.AddMetadata("x-pulsesync-user-id", user);
  v1::SnapshotRequest req;
  req.add_tables("tasks");
  auto reader = stub->Snapshot(&ctx, req);
  v1::SnapshotResponse msg;
  std::vector<std::string> titles;
  std::string cursor;
  while (reader->Read(&msg)) {
    if (msg.has_rows()) {
      for (const auto& r : msg.rows().records()) titles.push_back(ParseJson(r)->Find("title")->text());
    } else {
      cursor = msg.cursor();
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(titles, std::vector<std::string>{"mine"});
  EXPECT_FALSE(cursor.empty());

  grpc::ClientContext bad_ctx;
  v1::SnapshotRequest bad;
  bad.add_tables("widgets");
  auto bad_reader = stub->Snapshot(&bad_ctx, bad);
  while (bad_reader->Read(&msg)) {
  }
  grpc::Status s = bad_reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("widgets"));
}

TEST_F(SubscriberE2eTest, WatchPrintsEventsAsTheyArriveAndStopsOnSigterm) {
  const std::string out = dir_ + "/watch.out";
  testing::Subprocess::Options o;
  o.argv = {testing::PulsesyncCliPath(), "--server=" + server_->address(), "watch", "--from-now",
            "--checkpoints", "--table=tasks"};
  o.output_path = out;
  ASSERT_OK_AND_ASSIGN(auto watch, testing::Subprocess::Start(o));
  auto read_out = [&] {
    std::ifstream in(out);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  ASSERT_TRUE(WaitFor([&] { return read_out().find("checkpoint") != std::string::npos; },
                      kDeadline));
  const std::string id = NewUuid();
  ASSERT_OK(db_->Execute(absl::StrCat("INSERT INTO tasks (id, team_id, title) VALUES ('", id,
                                      "', '", team_, "', 'watched')")));
  ASSERT_TRUE(WaitFor([&] { return read_out().find(id) != std::string::npos; }, kDeadline));
  EXPECT_THAT(read_out(), HasSubstr("\"event\":\"INSERT\""));
  ASSERT_OK(watch->Signal(SIGTERM));
  ASSERT_OK_AND_ASSIGN(int code, watch->Wait(absl::Seconds(10)));
  EXPECT_EQ(code, 0);
}

}  // namespace
}  // namespace pulsesync
