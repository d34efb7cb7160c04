// Row Level Security of TeamPulse's tables beyond team membership
// (migrations/0008): who may manage memberships, and what a task may
// reference. Writes go through the merge as the server runs it, under the
// caller's role and claims.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/uuid.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pulsesync/v1/sync.pb.h"
#include "server/core/revision_applier.h"
#include "server/storage/pg_session.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::TestDatabase;
using ::testing::HasSubstr;
using Outcome = v1::RevisionResult;

class RlsPgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    PgSessionOptions options;
    options.database_url = db_->url();
    options.statements = RevisionApplierStatements();
    session_ = std::make_unique<PgSession>(options);
    team_a_ = NewUuid();
    team_b_ = NewUuid();
    owner_ = NewUuid();
    member_ = NewUuid();
    stranger_ = NewUuid();
    other_ = NewUuid();
    project_b_ = NewUuid();
    ASSERT_OK(db_->Execute(absl::StrCat(
        "INSERT INTO teams (id, name) VALUES ('", team_a_, "', 'A'), ('", team_b_, "', 'B');",
        "INSERT INTO users (id) VALUES ('", owner_, "'), ('", member_, "'), ('", stranger_,
        "'), ('", other_, "');",
        "INSERT INTO team_members (id, team_id, user_id, role) VALUES (gen_random_uuid(), '",
        team_a_, "', '", owner_, "', 'owner'), (gen_random_uuid(), '", team_a_, "', '", member_,
        "', 'member'), (gen_random_uuid(), '", team_b_, "', '", other_, "', 'owner');",
        "INSERT INTO projects (id, team_id, name) VALUES ('", project_b_, "', '", team_b_,
        "', 'B secret')")));
  }

  v1::RevisionResult ApplyAs(const std::string& user, const std::string& type,
                             const std::string& id, const std::string& payload) {
    v1::Revision r;
    r.set_id(NewUuid());
    r.set_object_type(type);
    r.set_object_id(id);
    r.set_origin_id("device-of-" + user);
    r.set_seq(++seqs_[user]);
    r.set_op(v1::OPERATION_UPSERT);
    r.set_payload(payload);
    r.set_created_at(1'700'000'000'000 + r.seq());
    const TxIdentity identity{"authenticated",
                              absl::StrCat(R"({"sub":")", user, R"(","role":"authenticated"})")};
    absl::StatusOr<std::vector<v1::RevisionResult>> res =
        ApplyRevisionBatch(*session_, {r}, ApplyLimits(), identity);
    EXPECT_OK(res.status());
    return res.ok() ? (*res)[0] : v1::RevisionResult();
  }
  std::string Query(const std::string& sql) {
    absl::StatusOr<std::string> v = db_->QueryValue(sql);
    EXPECT_OK(v.status()) << sql;
    return v.ok() ? *v : "";
  }
  std::string Membership(const std::string& team, const std::string& user) {
    return absl::StrCat(R"({"team_id":")", team, R"(","user_id":")", user, R"("})");
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<PgSession> session_;
  std::map<std::string, int64_t> seqs_;
  std::string team_a_, team_b_, owner_, member_, stranger_, other_, project_b_;
};

TEST_F(RlsPgTest, OnlyOwnersAndAdminsAddMembers) {
  const auto by_member = ApplyAs(member_, "team_member", NewUuid(), Membership(team_a_, stranger_));
  EXPECT_EQ(by_member.outcome(), Outcome::OUTCOME_REJECTED);
  EXPECT_THAT(by_member.reason(), HasSubstr("row-level security"));
  EXPECT_EQ(Query(absl::StrCat("SELECT count(*) FROM team_members WHERE user_id = '", stranger_,
                               "'")),
            "0");
  const auto by_owner = ApplyAs(owner_, "team_member", NewUuid(), Membership(team_a_, stranger_));
  EXPECT_EQ(by_owner.outcome(), Outcome::OUTCOME_APPLIED) << by_owner.reason();
  EXPECT_EQ(Query(absl::StrCat("SELECT count(*) FROM team_members WHERE user_id = '", stranger_,
                               "'")),
            "1");
}

TEST_F(RlsPgTest, AMemberMayLeaveButNotChangeTheirRole) {
  const std::string row = Query(absl::StrCat("SELECT id FROM team_members WHERE user_id = '",
                                             member_, "'"));
  const auto promote = ApplyAs(member_, "team_member", row, R"({"role":"owner"})");
  EXPECT_EQ(promote.outcome(), Outcome::OUTCOME_REJECTED);
  EXPECT_EQ(Query(absl::StrCat("SELECT role FROM team_members WHERE id = '", row, "'")), "member");
  v1::Revision leave;
  leave.set_id(NewUuid());
  leave.set_object_type("team_member");
  leave.set_object_id(row);
  leave.set_origin_id("device-of-" + member_);
  leave.set_seq(++seqs_[member_]);
  leave.set_op(v1::OPERATION_DELETE);
  leave.set_created_at(1'800'000'000'000);
  const TxIdentity identity{"authenticated",
                            absl::StrCat(R"({"sub":")", member_, R"(","role":"authenticated"})")};
  ASSERT_OK_AND_ASSIGN(auto res, ApplyRevisionBatch(*session_, {leave}, ApplyLimits(), identity));
  EXPECT_EQ(res[0].outcome(), Outcome::OUTCOME_APPLIED) << res[0].reason();
  EXPECT_EQ(Query(absl::StrCat("SELECT deleted FROM team_members WHERE id = '", row, "'")), "t");
}

TEST_F(RlsPgTest, ATaskReferencesOnlyItsOwnTeamsProjectsAndMembers) {
  auto task = [&](const std::string& extra) {
    return absl::StrCat(R"({"team_id":")", team_a_, R"(","title":"t")", extra, "}");
  };
  // Another team's project and a missing one answer alike: no oracle.
  const auto foreign = ApplyAs(member_, "task", NewUuid(),
                               task(absl::StrCat(R"(,"project_id":")", project_b_, "\"")));
  const auto missing = ApplyAs(member_, "task", NewUuid(),
                               task(absl::StrCat(R"(,"project_id":")", NewUuid(), "\"")));
  EXPECT_EQ(foreign.outcome(), Outcome::OUTCOME_REJECTED);
  EXPECT_EQ(missing.outcome(), Outcome::OUTCOME_REJECTED);
  EXPECT_THAT(foreign.reason(), HasSubstr("row-level security"));
  EXPECT_THAT(missing.reason(), HasSubstr("row-level security"));
  // An assignee outside the team, likewise; a teammate is fine.
  const auto outsider = ApplyAs(member_, "task", NewUuid(),
                                task(absl::StrCat(R"(,"assignee_id":")", other_, "\"")));
  EXPECT_EQ(outsider.outcome(), Outcome::OUTCOME_REJECTED);
  EXPECT_THAT(outsider.reason(), HasSubstr("row-level security"));
  const auto teammate = ApplyAs(member_, "task", NewUuid(),
                                task(absl::StrCat(R"(,"assignee_id":")", owner_, "\"")));
  EXPECT_EQ(teammate.outcome(), Outcome::OUTCOME_APPLIED) << teammate.reason();
  EXPECT_EQ(Query(absl::StrCat("SELECT count(*) FROM tasks WHERE project_id = '", project_b_,
                               "'")),
            "0");
}

}  // namespace
}  // namespace pulsesync
