// AuditService end to end, over real gRPC against pulsesyncd: a user of one
// team gets nothing of another team's trail whatever the filters; paging with
// cursors; the server's sealer; ListOrigins; `pulsesync audit`.
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/uuid.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "pulsesync/v1/audit.grpc.pb.h"
#include "pulsesync/v1/sync.grpc.pb.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::ServerProcess;
using ::pulsesync::testing::TestDatabase;
using ::testing::HasSubstr;

class AuditE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    team_a_ = NewUuid();
    team_b_ = NewUuid();
    user_a_ = NewUuid();
    user_b_ = NewUuid();
    task_a_ = NewUuid();
    task_b_ = NewUuid();
    ASSERT_OK(db_->Execute(absl::StrCat(
        "INSERT INTO teams (id, name) VALUES ('", team_a_, "','A'), ('", team_b_, "','B');",
        "INSERT INTO users (id, email) VALUES ('", user_a_, "','a@x'), ('", user_b_, "','b@x');",
        "INSERT INTO team_members (id, team_id, user_id, role) VALUES (gen_random_uuid(),'",
        team_a_, "','", user_a_, "','owner'), (gen_random_uuid(),'", team_b_, "','", user_b_,
        "','owner');")));
    server_ = std::make_unique<ServerProcess>(
        db_->url(), testing::MakeTempDir("audit") + "/pulsesyncd.log",
        std::vector<std::string>{"--audit_seal_interval=100ms"});
    ASSERT_OK(server_->Start());
    auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    sync_ = v1::SyncService::NewStub(channel);
    audit_ = v1::AuditService::NewStub(channel);

    // Each user writes in their own team: a create, an edit, a duplicate, a
    // rejection.
    for (const auto& [user, task, team] :
         {std::tuple{user_a_, task_a_, team_a_}, std::tuple{user_b_, task_b_, team_b_}}) {
      const v1::Revision create = Revision(
          user, task, absl::StrCat(R"({"team_id":")", team, R"(","title":"Task of )", user, "\"}"));
      ASSERT_EQ(ApplyAs(user, {create}).results(0).outcome(), v1::RevisionResult::OUTCOME_APPLIED);
      ASSERT_EQ(ApplyAs(user, {Revision(user, task, R"({"priority":3})")}).results(0).outcome(),
                v1::RevisionResult::OUTCOME_APPLIED);
      ASSERT_EQ(ApplyAs(user, {create}).results(0).outcome(),
                v1::RevisionResult::OUTCOME_DUPLICATE);
      ASSERT_EQ(ApplyAs(user, {Revision(user, task, R"({"colour":1})")}).results(0).outcome(),
                v1::RevisionResult::OUTCOME_REJECTED);
    }
  }

  static std::string Origin(const std::string& user) { return "device-of-" + user; }

  v1::Revision Revision(const std::string& user, const std::string& task,
                        const std::string& payload) {
    v1::Revision r;
    r.set_id(NewUuid());
    r.set_object_type("task");
    r.set_object_id(task);
    r.set_origin_id(Origin(user));
    r.set_seq(++seqs_[user]);
    r.set_op(v1::OPERATION_UPSERT);
    r.set_payload(payload);
    r.set_created_at(4000000000000 + r.seq());
    r.mutable_clock()->set_physical_ms(4000000000000 + r.seq());
    return r;
  }

  v1::ApplyRevisionsResponse ApplyAs(const std::string& user, std::vector<v1::Revision> revs) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-pulsesync-user-id", user);
    v1::ApplyRevisionsRequest req;
    for (auto& r : revs) *req.add_revisions() = std::move(r);
    v1::ApplyRevisionsResponse resp;
    const grpc::Status s = sync_->ApplyRevisions(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }

  struct TrailAnswer {
    std::vector<v1::AuditEntry> entries;
    std::vector<v1::GetAuditTrailResponse> messages;
    grpc::Status status;
  };
  TrailAnswer TrailAs(const std::string& user, const v1::GetAuditTrailRequest& req) {
    grpc::ClientContext ctx;
    if (!user.empty()) ctx.AddMetadata("x-pulsesync-user-id", user);
    auto reader = audit_->GetAuditTrail(&ctx, req);
    TrailAnswer answer;
    v1::GetAuditTrailResponse msg;
    while (reader->Read(&msg)) {
      answer.entries.insert(answer.entries.end(), msg.entries().begin(), msg.entries().end());
      answer.messages.push_back(msg);
    }
    answer.status = reader->Finish();
    return answer;
  }

  grpc::Status OriginsAs(const std::string& user, const v1::ListOriginsRequest& req,
                         v1::ListOriginsResponse* resp) {
    grpc::ClientContext ctx;
    if (!user.empty()) ctx.AddMetadata("x-pulsesync-user-id", user);
    return audit_->ListOrigins(&ctx, req, resp);
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::SyncService::Stub> sync_;
  std::unique_ptr<v1::AuditService::Stub> audit_;
  std::map<std::string, int64_t> seqs_;
  std::string team_a_, team_b_, user_a_, user_b_, task_a_, task_b_;
};

TEST_F(AuditE2eTest, AUserGetsNothingOfAnotherTeamWhateverTheFilters) {
  std::vector<v1::GetAuditTrailRequest> probes(8);
  probes[1].set_object_id(task_b_);
  probes[2].set_object_type("task");
  probes[2].set_object_id(task_b_);
  probes[3].set_table("tasks");
  probes[4].set_actor(user_b_);
  probes[5].set_origin_id(Origin(user_b_));
  for (int o = v1::AUDIT_OUTCOME_APPLIED; o <= v1::AUDIT_OUTCOME_OUT_OF_ORDER; ++o) {
    probes[6].add_outcomes(static_cast<v1::AuditOutcome>(o));
  }
  probes[7].set_oldest_first(true);
  probes[7].set_page_size(1);
  int seen_own = 0;
  for (const v1::GetAuditTrailRequest& probe : probes) {
    const TrailAnswer a = TrailAs(user_a_, probe);
    ASSERT_TRUE(a.status.ok()) << a.status.error_message();
    for (const v1::AuditEntry& e : a.entries) {
      EXPECT_NE(e.team_id(), team_b_) << probe.DebugString() << e.DebugString();
      EXPECT_NE(e.object_id(), task_b_) << e.DebugString();
      EXPECT_NE(e.object_id(), team_b_) << e.DebugString();
      EXPECT_NE(e.actor(), user_b_) << e.DebugString();
      if (e.object_id() == task_a_) ++seen_own;
    }
  }
  EXPECT_GT(seen_own, 0);
  // The same probes as a trusted caller do find team B's entries.
  const TrailAnswer all = TrailAs("", probes[1]);
  ASSERT_TRUE(all.status.ok());
  EXPECT_EQ(all.entries.size(), 4u);  // create, edit, duplicate, rejection
  // And user A's own: its four entries.
  v1::GetAuditTrailRequest own;
  own.set_object_id(task_a_);
  EXPECT_EQ(TrailAs(user_a_, own).entries.size(), 4u);
}

TEST_F(AuditE2eTest, PagesFollowCursorsWithoutGapsOrRepeats) {
  v1::GetAuditTrailRequest req;
  const TrailAnswer whole = TrailAs("", req);
  ASSERT_TRUE(whole.status.ok());
  ASSERT_GE(whole.entries.size(), 10u);
  for (size_t i = 1; i < whole.entries.size(); ++i) {
    EXPECT_GT(whole.entries[i - 1].position(), whole.entries[i].position());  // newest first
  }
  req.set_page_size(2);
  req.set_limit(3);
  std::vector<int64_t> paged;
  for (int call = 0; call < 100; ++call) {
    const TrailAnswer part = TrailAs("", req);
    ASSERT_TRUE(part.status.ok()) << part.status.error_message();
    ASSERT_FALSE(part.messages.empty());
    for (const auto& m : part.messages) EXPECT_LE(m.entries_size(), 2);
    for (const auto& e : part.entries) paged.push_back(e.position());
    if (!part.messages.back().has_more()) break;
    EXPECT_EQ(part.entries.size(), 3u);
    req.set_cursor(part.messages.back().next_cursor());
  }
  std::vector<int64_t> expected;
  for (const auto& e : whole.entries) expected.push_back(e.position());
  EXPECT_EQ(paged, expected);

  // A cursor of the other order, or a bad one, is refused.
  req.set_oldest_first(true);
  EXPECT_EQ(TrailAs("", req).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  req.set_cursor("not a cursor");
  EXPECT_EQ(TrailAs("", req).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GetAuditTrailRequest bad_id;
  bad_id.set_object_id("nope");
  EXPECT_EQ(TrailAs("", bad_id).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(AuditE2eTest, TheServerSealsEntriesAndTheChainVerifies) {
  testing::WaitFor(
      [&] {
        const TrailAnswer a = TrailAs("", v1::GetAuditTrailRequest());
        for (const auto& e : a.entries) {
          if (e.chain_seq() == 0) return false;
        }
        return a.status.ok() && !a.entries.empty();
      },
      absl::Seconds(30));
  for (const auto& e : TrailAs("", v1::GetAuditTrailRequest()).entries) {
    EXPECT_GT(e.chain_seq(), 0) << e.DebugString();
  }
  ASSERT_OK_AND_ASSIGN(testing::CommandResult verify,
                       testing::RunCommand({testing::PulsesyncdPath(), "audit", "verify",
                                            "--database_url=" + db_->url()}));
  EXPECT_EQ(verify.exit_code, 0) << verify.output << verify.errors;
  EXPECT_THAT(verify.output, HasSubstr("chain intact"));
}

TEST_F(AuditE2eTest, ListOriginsShowsOwnAndTeamDevicesOnly) {
  v1::ListOriginsResponse resp;
  ASSERT_TRUE(OriginsAs(user_a_, {}, &resp).ok());
  ASSERT_EQ(resp.origins_size(), 1);
  EXPECT_EQ(resp.origins(0).origin_id(), Origin(user_a_));
  EXPECT_EQ(resp.origins(0).user_id(), user_a_);
  EXPECT_EQ(resp.origins(0).applied(), 2);
  EXPECT_EQ(resp.origins(0).refused(), 1);
  EXPECT_EQ(resp.origins(0).last_seq(), 3);
  EXPECT_GT(resp.origins(0).last_seen_ms(), 0);

  v1::ListOriginsRequest other_user;
  other_user.set_user_id(user_b_);
  EXPECT_EQ(OriginsAs(user_a_, other_user, &resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  v1::ListOriginsRequest other_team;
  other_team.set_team_id(team_b_);
  EXPECT_EQ(OriginsAs(user_a_, other_team, &resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  resp.Clear();
  ASSERT_TRUE(OriginsAs("", other_team, &resp).ok());  // trusted
  ASSERT_EQ(resp.origins_size(), 1);
  EXPECT_EQ(resp.origins(0).origin_id(), Origin(user_b_));
}

TEST_F(AuditE2eTest, CliPrintsAnObjectsTimeline) {
  if (testing::PulsesyncCliPath() == "pulsesync-not-built") GTEST_SKIP() << "no CLI in this build";
  ASSERT_OK_AND_ASSIGN(
      testing::CommandResult mine,
      testing::RunCommand({testing::PulsesyncCliPath(), "--server=" + server_->address(),
                           "--user=" + user_a_, "audit", "task", task_a_}));
  EXPECT_EQ(mine.exit_code, 0) << mine.errors;
  EXPECT_THAT(mine.output, HasSubstr("INSERT v"));
  EXPECT_THAT(mine.output, HasSubstr("priority: 0 -> 3"));
  EXPECT_THAT(mine.output, HasSubstr("duplicate"));
  EXPECT_THAT(mine.output, HasSubstr("rejected"));
  EXPECT_THAT(mine.output, HasSubstr(Origin(user_a_)));
  ASSERT_OK_AND_ASSIGN(
      testing::CommandResult theirs,
      testing::RunCommand({testing::PulsesyncCliPath(), "--server=" + server_->address(),
                           "--user=" + user_a_, "audit", "task", task_b_}));
  EXPECT_EQ(theirs.exit_code, 0) << theirs.errors;
  EXPECT_THAT(theirs.output, HasSubstr("no audit entries"));
}

}  // namespace
}  // namespace pulsesync
