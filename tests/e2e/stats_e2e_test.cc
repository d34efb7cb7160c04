// GetStats: per-project task counts from the server's in-memory counters,
// checked against the same aggregate computed by PostgreSQL after writes of
// every kind (gRPC revisions and plain SQL: inserts, status and assignee
// changes, moves between projects, tombstones, hard deletes).
#include <map>
#include <memory>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/uuid.h"
#include "gmock/gmock.h"
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

class StatsE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    team_ = NewUuid();
    for (std::string* p : {&project_a_, &project_b_}) *p = NewUuid();
    member_ = NewUuid();
    outsider_ = NewUuid();
    ASSERT_OK(db_->Execute(absl::StrCat(
        "INSERT INTO teams (id, name) VALUES ('", team_, "', 'T');",
        "INSERT INTO users (id) VALUES ('", member_, "'), ('", outsider_, "');",
        "INSERT INTO team_members (id, team_id, user_id) VALUES (gen_random_uuid(), '", team_,
        "', '", member_, "');",
        "INSERT INTO projects (id, team_id, name) VALUES ('", project_a_, "', '", team_,
        "', 'A'), ('", project_b_, "', '", team_, "', 'B');")));
    server_ = std::make_unique<ServerProcess>(
        db_->url(), testing::MakeTempDir("stats") + "/pulsesyncd.log");
    ASSERT_OK(server_->Start());
    stub_ = v1::SyncService::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }

  grpc::Status Stats(const std::string& project, v1::GetStatsResponse* out,
                     const std::string& user = "") {
    grpc::ClientContext ctx;
    if (!user.empty()) ctx.AddMetadata("x-pulsesync-user-id", user);
    v1::GetStatsRequest req;
    req.set_project_id(project);
    return stub_->GetStats(&ctx, req, out);
  }

  // "status=n,..." and "assignee=n,..." from a map, sorted.
  static std::string Render(const google::protobuf::Map<std::string, int64_t>& m) {
    std::map<std::string, int64_t> sorted(m.begin(), m.end());
    std::string out;
    for (const auto& [k, n] : sorted) absl::StrAppend(&out, out.empty() ? "" : ",", k, "=", n);
    return out;
  }
  // The same figures by SQL over the tasks table.
  std::string Sql(const std::string& project, const std::string& key) {
    absl::StatusOr<std::string> v = db_->QueryValue(absl::StrCat(
        "SELECT coalesce(string_agg(k || '=' || n, ',' ORDER BY k), '') FROM (SELECT ", key,
        " AS k, count(*) AS n FROM tasks WHERE project_id = '", project,
        "' AND NOT deleted GROUP BY 1) s"));
    EXPECT_OK(v.status());
    return v.ok() ? *v : "";
  }
  void ExpectAgrees(const std::string& project) {
    v1::GetStatsResponse r;
    const grpc::Status st = Stats(project, &r);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(Render(r.by_status()), Sql(project, "status")) << project;
    EXPECT_EQ(Render(r.by_assignee()), Sql(project, "coalesce(assignee_id::text, '')"));
    EXPECT_EQ(Render(r.by_archived()), Sql(project, "is_archived::text"));
    EXPECT_EQ(absl::StrCat(r.total()),
              *db_->QueryValue(absl::StrCat("SELECT count(*) FROM tasks WHERE project_id = '",
                                            project, "' AND NOT deleted")));
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::SyncService::Stub> stub_;
  std::string team_, project_a_, project_b_, member_, outsider_;
};

TEST_F(StatsE2eTest, CountsFollowEveryKindOfWrite) {
  ExpectAgrees(project_a_);
  std::mt19937 rng(42);
  const char* statuses[] = {"todo", "doing", "done"};
  std::vector<std::string> tasks;
  for (int round = 0; round < 12; ++round) {
    std::string sql;
    for (int i = 0; i < 8; ++i) {
      const int what = static_cast<int>(rng() % 6);
      if (what <= 1 || tasks.empty()) {
        tasks.push_back(NewUuid());
        absl::StrAppend(&sql, "INSERT INTO tasks (id, team_id, project_id, title, status, "
                              "assignee_id) VALUES ('", tasks.back(), "', '", team_, "', '",
                        rng() % 2 ? project_a_ : project_b_, "', 't', '", statuses[rng() % 3],
                        "', ", rng() % 2 ? absl::StrCat("'", member_, "'") : "NULL", ");");
        continue;
      }
      const std::string& t = tasks[rng() % tasks.size()];
      switch (what) {
        case 2:
          absl::StrAppend(&sql, "UPDATE tasks SET status = '", statuses[rng() % 3],
                          "' WHERE id = '", t, "';");
          break;
        case 3:
          absl::StrAppend(&sql, "UPDATE tasks SET project_id = '",
                          rng() % 2 ? project_a_ : project_b_, "', is_archived = ",
                          rng() % 2 ? "true" : "false", " WHERE id = '", t, "';");
          break;
        case 4:
          absl::StrAppend(&sql, "UPDATE tasks SET deleted = NOT deleted WHERE id = '", t, "';");
          break;
        default:
          absl::StrAppend(&sql, "DELETE FROM tasks WHERE id = '", t, "';");
          break;
      }
    }
    ASSERT_OK(db_->Execute(sql));
    // GetStats is current to every write committed before the call.
    ExpectAgrees(project_a_);
    ExpectAgrees(project_b_);
  }
}

TEST_F(StatsE2eTest, OnlyTheProjectsTeamSeesItsStats) {
  ASSERT_OK(db_->Execute(absl::StrCat("INSERT INTO tasks (id, team_id, project_id, title) VALUES ('",
                                      NewUuid(), "', '", team_, "', '", project_a_, "', 'x')")));
  v1::GetStatsResponse r;
  ASSERT_TRUE(Stats(project_a_, &r, member_).ok());
  EXPECT_EQ(r.total(), 1);
  v1::GetStatsResponse hidden;
  const grpc::Status st = Stats(project_a_, &hidden, outsider_);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  // The same answer as for a project that does not exist.
  v1::GetStatsResponse none;
  EXPECT_EQ(Stats(NewUuid(), &none, outsider_).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Stats("not-a-uuid", &none).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(StatsE2eTest, CountsSurviveARestartAndTheWritesMadeWhileDown) {
  ASSERT_OK(db_->Execute(absl::StrCat("INSERT INTO tasks (id, team_id, project_id, title) VALUES ('",
                                      NewUuid(), "', '", team_, "', '", project_a_, "', 'x')")));
  ExpectAgrees(project_a_);
  server_->Kill();
  ASSERT_OK(db_->Execute(absl::StrCat(
      "INSERT INTO tasks (id, team_id, project_id, title, status) VALUES ('", NewUuid(), "', '",
      team_, "', '", project_a_, "', 'y', 'done')")));
  ASSERT_OK(server_->Start());
  // A new channel: the old one's connection died with the process.
  stub_ = v1::SyncService::NewStub(
      grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  ExpectAgrees(project_a_);
}

}  // namespace
}  // namespace pulsesync
