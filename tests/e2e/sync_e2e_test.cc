// End to end, real processes: pulsesync CLI clients with their own SQLite
// files syncing through a running pulsesyncd over a real PostgreSQL.
#include <sqlite3.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/core/sync_engine.h"
#include "client/store/local_store.h"
#include "client/transport/grpc_transport.h"
#include "common/json.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::CommandResult;
using ::pulsesync::testing::ServerProcess;
using ::pulsesync::testing::TestDatabase;
using ::testing::HasSubstr;

// Columns compared between clients and PostgreSQL: the user's data and the
// server's version and tombstone. (Timestamps are compared by the clients
// among themselves.)
const std::vector<std::string> kTaskColumns = {"id",     "team_id",  "project_id", "title",
                                               "status", "priority", "version",    "deleted"};

class SyncE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    dir_ = testing::MakeTempDir("sync");
    server_ = std::make_unique<ServerProcess>(db_->url(), dir_ + "/pulsesyncd.log");
    ASSERT_OK(server_->Start());
  }

  std::string DbPath(const std::string& client) const { return dir_ + "/" + client + ".db"; }

  // Runs the CLI as `client`; returns stdout (trimmed). Expects success
  // unless `expect_ok` is false.
  CommandResult Cli(const std::string& client, std::vector<std::string> args,
                    bool expect_ok = true) {
    std::vector<std::string> argv = {testing::PulsesyncCliPath(), "--db=" + DbPath(client),
                                     "--server=" + server_->address()};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<CommandResult> r = testing::RunCommand(argv);
    EXPECT_OK(r);
    if (!r.ok()) return CommandResult();
    if (expect_ok) {
      EXPECT_EQ(r->exit_code, 0) << absl::StrJoin(args, " ") << ": " << r->errors;
    }
    r->output = std::string(absl::StripAsciiWhitespace(r->output));
    return *r;
  }

  // `list TYPE --deleted` as parsed rows keyed by id.
  std::map<std::string, JsonValue> ClientRows(const std::string& client, const std::string& type) {
    std::map<std::string, JsonValue> rows;
    CommandResult r = Cli(client, {"list", "--deleted", type});
    for (absl::string_view line : absl::StrSplit(r.output, '\n', absl::SkipEmpty())) {
      absl::StatusOr<JsonValue> row = ParseJson(line);
      EXPECT_OK(row) << line;
      if (row.ok()) rows[row->Find("id")->text()] = *row;
    }
    return rows;
  }

  // The tasks table in PostgreSQL, as JSON rows keyed by id.
  std::map<std::string, JsonValue> ServerTasks() {
    std::map<std::string, JsonValue> rows;
    absl::StatusOr<std::string> all = db_->QueryValue(
        "SELECT coalesce(string_agg(to_jsonb(t)::text, E'\\n'), '') FROM tasks t");
    EXPECT_OK(all);
    for (absl::string_view line : absl::StrSplit(*all, '\n', absl::SkipEmpty())) {
      absl::StatusOr<JsonValue> row = ParseJson(line);
      EXPECT_OK(row);
      if (row.ok()) rows[row->Find("id")->text()] = *row;
    }
    return rows;
  }

  static JsonValue Project(const JsonValue& row, const std::vector<std::string>& columns) {
    JsonValue out = JsonValue::Object();
    for (const std::string& c : columns) {
      const JsonValue* v = row.Find(c);
      out.Set(c, v == nullptr ? JsonValue() : *v);
    }
    return out;
  }

  void ExpectClientMatchesServer(const std::string& client) {
    std::map<std::string, JsonValue> local = ClientRows(client, "task");
    std::map<std::string, JsonValue> server = ServerTasks();
    ASSERT_EQ(local.size(), server.size()) << client;
    for (const auto& [id, row] : server) {
      ASSERT_TRUE(local.count(id)) << client << " lacks task " << id;
      EXPECT_EQ(Project(local[id], kTaskColumns), Project(row, kTaskColumns))
          << client << " task " << id << "\nlocal:  " << local[id].Serialize()
          << "\nserver: " << row.Serialize();
    }
  }

  std::unique_ptr<TestDatabase> db_;
  std::string dir_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(SyncE2eTest, TwoClientsSyncATaskBothWays) {
  Cli("a", {"init"});
  Cli("b", {"init"});
  const std::string team = Cli("a", {"create", "team", "name=Core"}).output;
  const std::string task =
      Cli("a", {"create", "task", "team_id=" + team, "title=Write docs", "priority=2"}).output;
  EXPECT_THAT(Cli("a", {"sync"}).output, HasSubstr("applied 2"));
  Cli("b", {"sync"});

  absl::StatusOr<JsonValue> seen = ParseJson(Cli("b", {"get", "task", task}).output);
  ASSERT_OK(seen);
  EXPECT_EQ(seen->Find("title")->text(), "Write docs");
  EXPECT_EQ(*seen->Find("priority")->AsInt64(), 2);

  Cli("b", {"update", "task", task, "status=done"});
  Cli("b", {"sync"});
  Cli("a", {"sync"});
  absl::StatusOr<JsonValue> back = ParseJson(Cli("a", {"get", "task", task}).output);
  ASSERT_OK(back);
  EXPECT_EQ(back->Find("status")->text(), "done");
  EXPECT_EQ(*db_->QueryValue("SELECT status FROM tasks WHERE id = '" + task + "'"), "done");
  ExpectClientMatchesServer("a");
  ExpectClientMatchesServer("b");
  EXPECT_EQ(ClientRows("a", "task").begin()->second, ClientRows("b", "task").begin()->second);
}

TEST_F(SyncE2eTest, OfflineEditsReachTheOtherClientAfterTheServerComesBack) {
  Cli("a", {"init"});
  Cli("b", {"init"});
  const std::string team = Cli("a", {"create", "team", "name=Core"}).output;
  const std::string kept = Cli("a", {"create", "task", "team_id=" + team, "title=Kept"}).output;
  const std::string doomed = Cli("a", {"create", "task", "team_id=" + team, "title=Doomed"}).output;
  Cli("a", {"sync"});
  Cli("b", {"sync"});

  ASSERT_OK(server_->Stop().status());
  // A works offline: reads see its writes at once.
  const std::string fresh =
      Cli("a", {"create", "task", "team_id=" + team, "title=Written offline"}).output;
  Cli("a", {"update", "task", kept, "title=Kept and edited", "priority=5"});
  Cli("a", {"delete", "task", doomed});
  EXPECT_THAT(Cli("a", {"get", "task", fresh}).output, HasSubstr("Written offline"));
  CommandResult failed = Cli("a", {"sync"}, /*expect_ok=*/false);
  EXPECT_NE(failed.exit_code, 0);
  EXPECT_THAT(failed.errors, HasSubstr("still pending"));
  EXPECT_THAT(Cli("a", {"status"}).output, HasSubstr("pending: 3"));
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM tasks"), "2");  // nothing reached the server

  ASSERT_OK(server_->Restart());
  Cli("a", {"sync"});
  EXPECT_THAT(Cli("a", {"status"}).output, HasSubstr("pending: 0"));
  Cli("b", {"sync"});

  EXPECT_EQ(*db_->QueryValue("SELECT title || ':' || priority FROM tasks WHERE id = '" + kept + "'"),
            "Kept and edited:5");
  EXPECT_EQ(*db_->QueryValue("SELECT deleted FROM tasks WHERE id = '" + doomed + "'"), "t");
  ExpectClientMatchesServer("a");
  ExpectClientMatchesServer("b");
  // B's view equals A's, row for row and field for field.
  EXPECT_EQ(ClientRows("a", "task"), ClientRows("b", "task"));
  EXPECT_EQ(ClientRows("a", "team"), ClientRows("b", "team"));
  EXPECT_THAT(Cli("b", {"get", "task", doomed}, /*expect_ok=*/false).exit_code, 1);
}

TEST_F(SyncE2eTest, ServerRestartsAndRetriedPushesLoseNothingAndDuplicateNothing) {
  // In-process library client for volume; a CLI client on the other side.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<LocalStore> store, LocalStore::Open(DbPath("a")));
  std::unique_ptr<GrpcTransport> transport = GrpcTransport::Create(server_->address());
  SyncEngine engine(store.get(), transport.get());

  ASSERT_OK_AND_ASSIGN(std::string team,
                       store->Create("team", JsonValue::Object({{"name", JsonValue::String("Core")}})));
  std::vector<std::string> tasks;
  for (int i = 0; i < 250; ++i) {
    ASSERT_OK_AND_ASSIGN(
        std::string id,
        store->Create("task", JsonValue::Object({{"team_id", JsonValue::String(team)},
                                                 {"title", JsonValue::String(absl::StrCat("t", i))},
                                                 {"priority", JsonValue::Number(i % 4)}})));
    tasks.push_back(id);
  }
  ASSERT_OK_AND_ASSIGN(SyncSummary first, engine.Sync());
  EXPECT_EQ(first.push.applied, 251);
  EXPECT_EQ(first.push.batches, 3);

  // The server crashes; the client keeps editing; the server comes back.
  server_->Kill();
  for (int i = 0; i < 10; ++i) {
    ASSERT_OK(store->Update("task", tasks[i], JsonValue::Object({{"status", JsonValue::String("doing")}})));
  }
  EXPECT_FALSE(engine.Sync().ok());
  ASSERT_OK(server_->Restart());
  transport = GrpcTransport::Create(server_->address());
  SyncEngine engine2(store.get(), transport.get());
  ASSERT_OK_AND_ASSIGN(SyncSummary second, engine2.Sync());
  EXPECT_EQ(second.push.applied, 10);

  // Every answer was "lost": all revisions pending again. The retry changes
  // nothing on the server.
  const std::string log_before = *db_->QueryValue("SELECT count(*) FROM pulsesync.change_log");
  {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(DbPath("a").c_str(), &raw), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(raw, "UPDATE revisions SET synced = 0 WHERE origin_id = "
                                "(SELECT origin_id FROM revisions WHERE seq > 0 LIMIT 1) AND seq > 0",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(raw);
  }
  ASSERT_OK_AND_ASSIGN(SyncSummary retry, engine2.Sync());
  EXPECT_EQ(retry.push.duplicate, 261);
  EXPECT_EQ(retry.push.applied, 0);
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM pulsesync.change_log"), log_before);
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM pulsesync.applied_revisions"), "261");
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM tasks"), "250");
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM tasks WHERE status = 'doing'"), "10");

  // A second client, from scratch, after one more clean restart.
  ASSERT_OK(server_->Stop().status());
  ASSERT_OK(server_->Restart());
  Cli("b", {"init"});
  Cli("b", {"sync"});
  ExpectClientMatchesServer("b");
  ExpectClientMatchesServer("a");
}

}  // namespace
}  // namespace pulsesync
