// The feed's in-memory scope (TeamScope) and the Row Level Security policies
// of migrations/0005_row_level_security.sql must show a user the same rows.
// A user in two teams, with teammates (one shared through both teams, one
// removed, one tombstoned) and strangers (other teams, no team): table by
// table, the live rows seen through Snapshot and through PullChanges (the
// log folded to current state) equal what plain SQL shows under
// `role = authenticated` + `request.jwt.claims`, as PostgREST runs it.
#include <map>
#include <memory>
#include <pqxx/pqxx>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
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

using Rows = std::map<std::string, std::set<std::string>>;  // table -> ids

const char* const kTables[] = {"users", "teams", "team_members", "projects", "tasks"};

class ScopeAgreementE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    server_ = std::make_unique<ServerProcess>(
        db_->url(), testing::MakeTempDir("scope") + "/pulsesyncd.log");
    ASSERT_OK(server_->Start());
    stub_ = v1::SyncService::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }

  std::string Sql(const std::string& sql) {
    absl::Status s = db_->Execute(sql);
    EXPECT_TRUE(s.ok()) << s << " in " << sql;
    return sql;
  }

  void AddUser(const std::string& id) {
    Sql(absl::StrCat("INSERT INTO users (id, email) VALUES ('", id, "','", id, "@x')"));
  }
  std::string AddTeam() {
    const std::string id = NewUuid();
    Sql(absl::StrCat("INSERT INTO teams (id, name) VALUES ('", id, "','t')"));
    return id;
  }
  std::string Join(const std::string& team, const std::string& user) {
    const std::string id = NewUuid();
    Sql(absl::StrCat("INSERT INTO team_members (id, team_id, user_id) VALUES ('", id, "','", team,
                     "','", user, "')"));
    return id;
  }
  void AddWork(const std::string& team) {
    const std::string project = NewUuid();
    Sql(absl::StrCat("INSERT INTO projects (id, team_id, name) VALUES ('", project, "','", team,
                     "','p');",
                     "INSERT INTO tasks (id, team_id, project_id, title) VALUES (gen_random_uuid(),'",
                     team, "','", project, "','a'), (gen_random_uuid(),'", team, "','", project,
                     "','b');",
                     "UPDATE tasks SET deleted = true WHERE id = (SELECT id FROM tasks WHERE "
                     "team_id = '", team, "' AND title = 'b')"));
  }

  Rows SqlAs(const std::string& user) {
    pqxx::connection conn(db_->url());
    pqxx::work tx(conn);
    tx.exec_params("SELECT set_config('role', 'authenticated', true), "
                   "set_config('request.jwt.claims', $1, true)",
                   absl::StrCat(R"({"sub":")", user, R"(","role":"authenticated"})"));
    Rows rows;
    for (const char* table : kTables) {
      rows[table];
      for (const auto& row :
           tx.exec(absl::StrCat("SELECT id::text FROM public.", table, " WHERE NOT deleted"))) {
        rows[table].insert(row[0].as<std::string>());
      }
    }
    return rows;
  }

  Rows SnapshotAs(const std::string& user) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-pulsesync-user-id", user);
    v1::SnapshotRequest req;
    req.set_rows_per_message(3);  // several pages per table
    auto reader = stub_->Snapshot(&ctx, req);
    v1::SnapshotResponse msg;
    Rows rows;
    for (const char* table : kTables) rows[table];
    while (reader->Read(&msg)) {
      for (const auto& r : msg.rows().records()) {
        rows[msg.rows().table()].insert(ParseJson(r)->Find("id")->text());
      }
    }
    const grpc::Status s = reader->Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
    return rows;
  }

  // The whole log through PullChanges, folded: a row is present if its last
  // change left it live.
  Rows PullAs(const std::string& user) {
    std::map<std::pair<std::string, std::string>, bool> live;
    std::string cursor;
    for (int i = 0; i < 1000; ++i) {
      grpc::ClientContext ctx;
      ctx.AddMetadata("x-pulsesync-user-id", user);
      v1::PullChangesRequest req;
      req.set_cursor(cursor);
      req.set_limit(7);  // several pages: each reloads the scope
      v1::PullChangesResponse resp;
      const grpc::Status s = stub_->PullChanges(&ctx, req, &resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      for (const v1::Change& c : resp.changes()) {
        bool alive = c.event() != v1::EVENT_TYPE_DELETE;
        if (alive) {
          const JsonValue* deleted = ParseJson(c.new_record())->Find("deleted");
          alive = !(deleted != nullptr && deleted->type() == JsonValue::Type::kBool &&
                    deleted->bool_value());
        }
        live[{c.table(), c.object_id()}] = alive;
      }
      cursor = resp.next_cursor();
      if (!resp.has_more()) break;
    }
    Rows rows;
    for (const char* table : kTables) rows[table];
    for (const auto& [key, alive] : live) {
      if (alive) rows[key.first].insert(key.second);
    }
    return rows;
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::SyncService::Stub> stub_;
};

TEST_F(ScopeAgreementE2eTest, SnapshotPullAndSqlShowTheSameRowsTableByTable) {
  const std::string me = NewUuid(), carol = NewUuid(), dave = NewUuid(), erin = NewUuid(),
                    frank = NewUuid(), sam = NewUuid(), sue = NewUuid(), tom = NewUuid();
  for (const std::string& u : {me, carol, dave, erin, frank, sam, sue, tom}) AddUser(u);
  const std::string t1 = AddTeam(), t2 = AddTeam(), t3 = AddTeam(), t4 = AddTeam();
  Join(t1, me);
  Join(t2, me);
  Join(t1, carol);
  Join(t2, carol);  // a teammate through two teams
  const std::string dave1 = Join(t1, dave);
  const std::string erin2 = Join(t2, erin);
  Join(t2, frank);
  Join(t3, sam);    // strangers: other teams
  Join(t3, sue);
  Join(t4, sue);    // tom: no team at all
  for (const std::string& t : {t1, t2, t3, t4}) AddWork(t);
  // Dave removed, Erin's membership tombstoned: neither is a teammate now.
  // Carol leaves team 1 but stays a teammate through team 2.
  Sql(absl::StrCat("DELETE FROM team_members WHERE id = '", dave1, "'"));
  Sql(absl::StrCat("UPDATE team_members SET deleted = true WHERE id = '", erin2, "'"));
  Sql(absl::StrCat("DELETE FROM team_members WHERE team_id = '", t1, "' AND user_id = '", carol,
                   "'"));
  // Later edits of users rows, seen by the feed with the scope as it is then.
  for (const std::string& u : {me, carol, dave, erin, frank, sam, tom}) {
    Sql(absl::StrCat("UPDATE users SET display_name = 'edited' WHERE id = '", u, "'"));
  }

  const Rows sql = SqlAs(me);
  ASSERT_EQ(sql.at("users"), (std::set<std::string>{me, carol, frank}));
  ASSERT_EQ(sql.at("teams"), (std::set<std::string>{t1, t2}));
  ASSERT_EQ(sql.at("team_members").size(), 4u);  // me x2, carol in t2, frank
  ASSERT_EQ(sql.at("projects").size(), 2u);
  ASSERT_EQ(sql.at("tasks").size(), 2u);

  const Rows pulled = PullAs(me);
  const Rows snap = SnapshotAs(me);
  for (const char* table : kTables) {
    SCOPED_TRACE(table);
    EXPECT_EQ(pulled.at(table), sql.at(table));
    EXPECT_EQ(snap.at(table), sql.at(table));
  }

  // A stranger and a user of no team see their own slices the same way.
  for (const std::string& who : {sam, tom}) {
    SCOPED_TRACE(who);
    const Rows theirs = SqlAs(who);
    const Rows theirs_pulled = PullAs(who);
    for (const char* table : kTables) {
      SCOPED_TRACE(table);
      EXPECT_EQ(theirs_pulled.at(table), theirs.at(table));
    }
    EXPECT_EQ(theirs.at("users").count(who), 1u);
    EXPECT_EQ(theirs.at("users").count(me), 0u);
  }
}

}  // namespace
}  // namespace pulsesync
