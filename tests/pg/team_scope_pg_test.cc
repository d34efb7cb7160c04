// TeamScope against a real database: what ForUser loads (the user's teams
// and teammates, as pulsesync.my_teammate_ids() has them) and how
// team_member events passing in the feed move the teammate set, including
// a teammate shared through two teams, replays and leaving a team.
#include "server/core/team_scope.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/json.h"
#include "common/uuid.h"
#include "gtest/gtest.h"
#include "server/storage/pg_session.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::TestDatabase;

FeedEvent Event(const std::string& type, v1::EventType kind, const std::string& id,
                const std::string& team, const std::string& record) {
  FeedEvent e;
  e.change.set_object_type(type);
  e.change.set_event(kind);
  e.change.set_object_id(id);
  e.change.set_team_id(team);
  absl::StatusOr<JsonValue> parsed = ParseJson(record);
  if (parsed.ok()) e.set_filter_record(*std::move(parsed));
  return e;
}

FeedEvent Membership(v1::EventType kind, const std::string& id, const std::string& team,
                     const std::string& user, bool deleted = false) {
  return Event("team_member", kind, id, team,
               absl::StrCat(R"({"id":")", id, R"(","team_id":")", team, R"(","user_id":")", user,
                            R"(","deleted":)", deleted ? "true" : "false", "}"));
}

FeedEvent UserRow(const std::string& user) {
  return Event("user", v1::EVENT_TYPE_UPDATE, user, "",
               absl::StrCat(R"({"id":")", user, R"(","deleted":false})"));
}

class TeamScopePgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    PgSessionOptions options;
    options.database_url = db_->url();
    session_ = std::make_unique<PgSession>(options);
    for (std::string* id : {&me_, &carol_, &dave_, &stranger_, &t1_, &t2_, &t3_, &m_me1_, &m_me2_,
                            &m_carol1_, &m_carol2_, &m_dave1_, &m_stranger3_}) {
      *id = NewUuid();
    }
    ASSERT_OK(db_->Execute(absl::StrCat(
        "INSERT INTO users (id, email) VALUES ('", me_, "','me@x'),('", carol_, "','c@x'),('",
        dave_, "','d@x'),('", stranger_, "','s@x');",
        "INSERT INTO teams (id, name) VALUES ('", t1_, "','1'),('", t2_, "','2'),('", t3_,
        "','3');",
        "INSERT INTO team_members (id, team_id, user_id) VALUES ",
        "('", m_me1_, "','", t1_, "','", me_, "'),('", m_me2_, "','", t2_, "','", me_, "'),",
        "('", m_carol1_, "','", t1_, "','", carol_, "'),('", m_carol2_, "','", t2_, "','", carol_,
        "'),", "('", m_dave1_, "','", t1_, "','", dave_, "'),('", m_stranger3_, "','", t3_, "','",
        stranger_, "');")));
  }

  // What the policy says, for comparison.
  std::string SqlTeammates() {
    return *db_->QueryValue(absl::StrCat(
        "SELECT set_config('role','authenticated',true), "
        "set_config('request.jwt.claims','{\"sub\":\"", me_, "\",\"role\":\"authenticated\"}',true);"
        "SELECT count(*) FROM pulsesync.my_teammate_ids() x(id) WHERE id <> '", me_, "'"));
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<PgSession> session_;
  std::string me_, carol_, dave_, stranger_, t1_, t2_, t3_, m_me1_, m_me2_, m_carol1_, m_carol2_,
      m_dave1_, m_stranger3_;
};

TEST_F(TeamScopePgTest, LoadsTeammatesAndFollowsMembershipEvents) {
  ASSERT_OK_AND_ASSIGN(TeamScope scope, TeamScope::ForUser(*session_, me_));
  EXPECT_EQ(scope.teams(), (absl::flat_hash_set<std::string>{t1_, t2_}));
  EXPECT_EQ(scope.teammates(), (absl::flat_hash_set<std::string>{me_, carol_, dave_}));
  EXPECT_TRUE(scope.Admit(UserRow(me_)));
  EXPECT_TRUE(scope.Admit(UserRow(carol_)));
  EXPECT_TRUE(scope.Admit(UserRow(dave_)));
  EXPECT_FALSE(scope.Admit(UserRow(stranger_)));
  EXPECT_FALSE(scope.Admit(UserRow(NewUuid())));

  // Carol leaves team 1: still a teammate through team 2. The event is
  // visible (a membership of my team).
  EXPECT_TRUE(scope.Admit(Membership(v1::EVENT_TYPE_DELETE, m_carol1_, t1_, carol_)));
  EXPECT_TRUE(scope.Admit(UserRow(carol_)));
  // A replayed removal changes nothing more.
  EXPECT_TRUE(scope.Admit(Membership(v1::EVENT_TYPE_DELETE, m_carol1_, t1_, carol_)));
  EXPECT_TRUE(scope.Admit(UserRow(carol_)));
  // ...and a tombstone of her team 2 membership ends it.
  EXPECT_TRUE(scope.Admit(Membership(v1::EVENT_TYPE_UPDATE, m_carol2_, t2_, carol_, true)));
  EXPECT_FALSE(scope.Admit(UserRow(carol_)));
  // Re-added, twice over (a replay): one removal suffices.
  EXPECT_TRUE(scope.Admit(Membership(v1::EVENT_TYPE_INSERT, m_carol2_, t2_, carol_)));
  EXPECT_TRUE(scope.Admit(Membership(v1::EVENT_TYPE_UPDATE, m_carol2_, t2_, carol_)));
  EXPECT_TRUE(scope.Admit(UserRow(carol_)));
  EXPECT_TRUE(scope.Admit(Membership(v1::EVENT_TYPE_DELETE, m_carol2_, t2_, carol_)));
  EXPECT_FALSE(scope.Admit(UserRow(carol_)));

  // The stranger joins a team of mine: a teammate from then on. Joining a
  // team that is not mine is invisible and changes nothing.
  const std::string m_s1 = NewUuid(), m_s9 = NewUuid(), other = NewUuid();
  EXPECT_FALSE(scope.Admit(Membership(v1::EVENT_TYPE_INSERT, m_s9, other, stranger_)));
  EXPECT_FALSE(scope.Admit(UserRow(stranger_)));
  EXPECT_TRUE(scope.Admit(Membership(v1::EVENT_TYPE_INSERT, m_s1, t1_, stranger_)));
  EXPECT_TRUE(scope.Admit(UserRow(stranger_)));
  // A membership moved (UPDATE) out of my team into another: no longer.
  EXPECT_FALSE(scope.Admit(Membership(v1::EVENT_TYPE_UPDATE, m_s1, other, stranger_)));
  EXPECT_FALSE(scope.Admit(UserRow(stranger_)));

  // I leave team 1: Dave (only there) stops being a teammate; my own row
  // and my removal stay visible.
  EXPECT_TRUE(scope.Admit(Membership(v1::EVENT_TYPE_DELETE, m_me1_, t1_, me_)));
  EXPECT_EQ(scope.teams(), (absl::flat_hash_set<std::string>{t2_}));
  EXPECT_FALSE(scope.Admit(UserRow(dave_)));
  EXPECT_TRUE(scope.Admit(UserRow(me_)));
  // Rejoining: Dave's membership from before the join is not in the feed,
  // so he comes back only with the next load (narrower, never wider).
  EXPECT_TRUE(scope.Admit(Membership(v1::EVENT_TYPE_INSERT, m_me1_, t1_, me_)));
  EXPECT_FALSE(scope.Admit(UserRow(dave_)));
  ASSERT_OK_AND_ASSIGN(TeamScope reloaded, TeamScope::ForUser(*session_, me_));
  EXPECT_TRUE(reloaded.Admit(UserRow(dave_)));
}

TEST_F(TeamScopePgTest, AgreesWithMyTeammateIds) {
  ASSERT_OK(db_->Execute(absl::StrCat("DELETE FROM team_members WHERE id = '", m_carol1_, "';",
                                      "UPDATE team_members SET deleted = true WHERE id = '",
                                      m_dave1_, "'")));
  ASSERT_OK_AND_ASSIGN(TeamScope scope, TeamScope::ForUser(*session_, me_));
  // Carol through team 2 only; Dave's tombstoned membership does not count.
  EXPECT_EQ(scope.teammates(), (absl::flat_hash_set<std::string>{me_, carol_}));
  EXPECT_EQ(SqlTeammates(), "1");
}

TEST_F(TeamScopePgTest, AUserOfNoTeamSeesOnlyThemselvesAndAnonNoOne) {
  const std::string loner_id = NewUuid();
  ASSERT_OK_AND_ASSIGN(TeamScope loner, TeamScope::ForUser(*session_, loner_id));
  EXPECT_TRUE(loner.teams().empty());
  EXPECT_TRUE(loner.Admit(UserRow(loner_id)));
  EXPECT_FALSE(loner.Admit(UserRow(me_)));
  Principal anon;
  anon.role = "anon";
  ASSERT_OK_AND_ASSIGN(TeamScope a, TeamScope::For(*session_, anon));
  EXPECT_TRUE(a.restricted());
  EXPECT_FALSE(a.Admit(UserRow(me_)));
  ASSERT_OK_AND_ASSIGN(TeamScope all, TeamScope::For(*session_, Principal::Trusted()));
  EXPECT_TRUE(all.Admit(UserRow(stranger_)));
}

}  // namespace
}  // namespace pulsesync
