// Authorization end to end: every call runs as the caller (PostgREST style:
// SET LOCAL ROLE, request.jwt.claims), so Row Level Security decides writes,
// and the feed applies the same team rule to what it delivers.
#include <map>
#include <memory>
#include <pqxx/pqxx>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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
using ::testing::AnyOf;
using ::testing::HasSubstr;

class AuthzE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    team_a_ = NewUuid();
    team_b_ = NewUuid();
    user_a_ = NewUuid();
    user_b_ = NewUuid();
    task_a_ = NewUuid();
    ASSERT_OK(db_->Execute(absl::StrCat(
        "INSERT INTO teams (id, name) VALUES ('", team_a_, "','A'), ('", team_b_, "','B');",
        "INSERT INTO users (id, email) VALUES ('", user_a_, "','a@x'), ('", user_b_, "','b@x');",
        "INSERT INTO team_members (id, team_id, user_id) VALUES (gen_random_uuid(),'", team_a_,
        "','", user_a_, "'), (gen_random_uuid(),'", team_b_, "','", user_b_, "');",
        "INSERT INTO tasks (id, team_id, title) VALUES ('", task_a_, "','", team_a_,
        "','secret of A');")));
    server_ = std::make_unique<ServerProcess>(
        db_->url(), testing::MakeTempDir("authz") + "/pulsesyncd.log");
    ASSERT_OK(server_->Start());
    stub_ = v1::SyncService::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }

  v1::Revision Upsert(const std::string& type, const std::string& id, const std::string& payload) {
    v1::Revision r;
    r.set_id(NewUuid());
    r.set_object_type(type);
    r.set_object_id(id);
    r.set_origin_id("device-b");
    r.set_seq(++seq_);
    r.set_op(v1::OPERATION_UPSERT);
    r.set_payload(payload);
    r.set_created_at(4000000000000 + seq_);  // later than anything: wins latest-wins
    r.mutable_clock()->set_physical_ms(4000000000000 + seq_);
    return r;
  }

  v1::ApplyRevisionsResponse ApplyAs(const std::string& user, std::vector<v1::Revision> revs,
                                     grpc::Status* status = nullptr) {
    grpc::ClientContext ctx;
    if (!user.empty()) ctx.AddMetadata("x-pulsesync-user-id", user);
    v1::ApplyRevisionsRequest req;
    for (auto& r : revs) {
      // One device per user: an origin belongs to the user who first used it.
      r.set_origin_id(absl::StrCat("device-of-", user.empty() ? "trusted" : user));
      r.set_seq(++seqs_[r.origin_id()]);
      *req.add_revisions() = std::move(r);
    }
    v1::ApplyRevisionsResponse resp;
    grpc::Status s = stub_->ApplyRevisions(&ctx, req, &resp);
    if (status != nullptr) {
      *status = s;
    } else {
      EXPECT_TRUE(s.ok()) << s.error_message();
    }
    return resp;
  }

  std::vector<v1::Change> PullAllAs(const std::string& user) {
    std::vector<v1::Change> all;
    std::string cursor;
    for (int i = 0; i < 100; ++i) {
      grpc::ClientContext ctx;
      if (!user.empty()) ctx.AddMetadata("x-pulsesync-user-id", user);
      v1::PullChangesRequest req;
      req.set_cursor(cursor);
      v1::PullChangesResponse resp;
      grpc::Status s = stub_->PullChanges(&ctx, req, &resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      all.insert(all.end(), resp.changes().begin(), resp.changes().end());
      cursor = resp.next_cursor();
      if (!resp.has_more()) break;
    }
    return all;
  }

  std::set<std::string> SnapshotTaskTitlesAs(const std::string& user) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-pulsesync-user-id", user);
    v1::SnapshotRequest req;
    req.add_tables("tasks");
    auto reader = stub_->Snapshot(&ctx, req);
    v1::SnapshotResponse msg;
    std::set<std::string> titles;
    while (reader->Read(&msg)) {
      for (const auto& r : msg.rows().records()) titles.insert(ParseJson(r)->Find("title")->text());
    }
    EXPECT_TRUE(reader->Finish().ok());
    return titles;
  }

  // The tasks `user` sees through plain SQL under the policies, as
  // PostgREST would run it.
  std::set<std::string> SqlTaskTitlesAs(const std::string& user) {
    pqxx::connection conn(db_->url());
    pqxx::work tx(conn);
    tx.exec_params("SELECT set_config('role', 'authenticated', true), "
                   "set_config('request.jwt.claims', $1, true)",
                   absl::StrCat(R"({"sub":")", user, R"(","role":"authenticated"})"));
    std::set<std::string> titles;
    for (const auto& row : tx.exec("SELECT title FROM tasks")) {
      titles.insert(row[0].as<std::string>());
    }
    return titles;
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::SyncService::Stub> stub_;
  std::string team_a_, team_b_, user_a_, user_b_, task_a_;
  int64_t seq_ = 0;
  std::map<std::string, int64_t> seqs_;  // per origin
};

TEST_F(AuthzE2eTest, AUserCannotWriteIntoAnotherTeam) {
  const std::string mine = NewUuid();
  v1::ApplyRevisionsResponse resp = ApplyAs(
      user_b_,
      {Upsert("task", task_a_, R"({"title":"hijacked"})"),
       Upsert("task", NewUuid(), absl::StrCat(R"({"team_id":")", team_a_, R"(","title":"planted"})")),
       Upsert("task", mine, absl::StrCat(R"({"team_id":")", team_b_, R"(","title":"mine"})")),
       Upsert("task", mine, absl::StrCat(R"({"team_id":")", team_a_, R"("})"))});
  ASSERT_EQ(resp.results_size(), 4);
  EXPECT_EQ(resp.results(0).outcome(), v1::RevisionResult::OUTCOME_REJECTED);
  EXPECT_EQ(resp.results(1).outcome(), v1::RevisionResult::OUTCOME_REJECTED);
  EXPECT_THAT(resp.results(1).reason(), HasSubstr("row-level security"));
  EXPECT_EQ(resp.results(2).outcome(), v1::RevisionResult::OUTCOME_APPLIED);
  // Moving its own task into team A.
  EXPECT_EQ(resp.results(3).outcome(), v1::RevisionResult::OUTCOME_REJECTED);
  EXPECT_EQ(*db_->QueryValue(absl::StrCat("SELECT title FROM tasks WHERE id = '", task_a_, "'")),
            "secret of A");
  EXPECT_EQ(*db_->QueryValue(absl::StrCat("SELECT team_id::text FROM tasks WHERE id = '", mine, "'")),
            team_b_);
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM tasks WHERE title = 'planted'"), "0");

  // The owner of team A can edit it.
  resp = ApplyAs(user_a_, {Upsert("task", task_a_, R"({"title":"edited by A"})")});
  EXPECT_EQ(resp.results(0).outcome(), v1::RevisionResult::OUTCOME_APPLIED);
}

TEST_F(AuthzE2eTest, PullSnapshotAndSqlAgreeOnWhatAUserSees) {
  ApplyAs(user_b_, {Upsert("task", NewUuid(),
                           absl::StrCat(R"({"team_id":")", team_b_, R"(","title":"b1"})"))});
  for (const v1::Change& c : PullAllAs(user_b_)) {
    EXPECT_NE(c.team_id(), team_a_) << "user B pulled a change of team A: " << c.new_record();
    EXPECT_NE(c.object_id(), task_a_);
  }
  const std::set<std::string> want = {"b1"};
  EXPECT_EQ(SnapshotTaskTitlesAs(user_b_), want);
  EXPECT_EQ(SqlTaskTitlesAs(user_b_), want);
  EXPECT_EQ(SqlTaskTitlesAs(user_a_), std::set<std::string>{"secret of A"});
  EXPECT_EQ(SnapshotTaskTitlesAs(user_a_), std::set<std::string>{"secret of A"});

  // A trusted caller (no principal) sees everything.
  std::set<std::string> teams_seen;
  for (const v1::Change& c : PullAllAs("")) teams_seen.insert(c.team_id());
  EXPECT_TRUE(teams_seen.count(team_a_) && teams_seen.count(team_b_));
}

TEST_F(AuthzE2eTest, OneUserCannotOpenUnboundedStreams) {
  constexpr int kLimit = 32;  // PrincipalLimitOptions::max_streams
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::StreamChangesResponse>>> readers;
  v1::StreamChangesRequest req;
  req.set_from_now(true);
  for (int i = 0; i < kLimit; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->AddMetadata("x-pulsesync-user-id", user_b_);
    readers.push_back(stub_->StreamChanges(contexts.back().get(), req));
    v1::StreamChangesResponse first;
    ASSERT_TRUE(readers.back()->Read(&first)) << "stream " << i;  // live checkpoint
  }
  grpc::ClientContext over;
  over.AddMetadata("x-pulsesync-user-id", user_b_);
  auto refused = stub_->StreamChanges(&over, req);
  v1::StreamChangesResponse msg;
  EXPECT_FALSE(refused->Read(&msg));
  grpc::Status s = refused->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("too many open streams"));

  // Another user is not affected; closing a stream frees a slot.
  grpc::ClientContext other;
  other.AddMetadata("x-pulsesync-user-id", user_a_);
  auto a_stream = stub_->StreamChanges(&other, req);
  ASSERT_TRUE(a_stream->Read(&msg));
  contexts[0]->TryCancel();
  while (readers[0]->Read(&msg)) {
  }
  (void)readers[0]->Finish();
  EXPECT_TRUE(testing::WaitFor(
      [&] {
        grpc::ClientContext again;
        again.AddMetadata("x-pulsesync-user-id", user_b_);
        again.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        auto r = stub_->StreamChanges(&again, req);
        v1::StreamChangesResponse m;
        const bool ok = r->Read(&m);
        again.TryCancel();
        while (r->Read(&m)) {
        }
        (void)r->Finish();
        return ok;
      },
      absl::Seconds(20)));
  other.TryCancel();
  while (a_stream->Read(&msg)) {
  }
  (void)a_stream->Finish();
  for (size_t i = 1; i < contexts.size(); ++i) {
    contexts[i]->TryCancel();
    while (readers[i]->Read(&msg)) {
    }
    (void)readers[i]->Finish();
  }
}

// Guessed ids: user B knows the ids of team A's task and of team A itself
// (say, from a leaked link). Deleting, stealing (moving into team B) or
// renaming them changes nothing, and joining team A is refused.
TEST_F(AuthzE2eTest, GuessedIdsOfAnotherTeamCannotBeDeletedMovedOrJoined) {
  auto remove = [&](const std::string& id) {
    v1::Revision r = Upsert("task", id, "");
    r.set_op(v1::OPERATION_DELETE);
    r.clear_payload();
    return r;
  };
  const std::string my_membership = *db_->QueryValue(absl::StrCat(
      "SELECT id::text FROM team_members WHERE user_id = '", user_b_, "'"));
  v1::ApplyRevisionsResponse resp = ApplyAs(
      user_b_,
      {remove(task_a_),
       Upsert("task", task_a_, absl::StrCat(R"({"team_id":")", team_b_, R"(","title":"stolen"})")),
       Upsert("team", team_a_, R"({"name":"renamed by B"})"),
       Upsert("team_member", NewUuid(),
              absl::StrCat(R"({"team_id":")", team_a_, R"(","user_id":")", user_b_, R"("})")),
       Upsert("team_member", my_membership, absl::StrCat(R"({"team_id":")", team_a_, R"("})"))});
  ASSERT_EQ(resp.results_size(), 5);
  for (int i = 1; i < 5; ++i) {
    EXPECT_EQ(resp.results(i).outcome(), v1::RevisionResult::OUTCOME_REJECTED) << i;
  }
  // Deleting a row B cannot see answers as deleting one that does not
  // exist: no oracle for which ids exist in other teams.
  v1::ApplyRevisionsResponse unknown = ApplyAs(user_b_, {remove(NewUuid())});
  EXPECT_EQ(resp.results(0).outcome(), unknown.results(0).outcome());
  EXPECT_EQ(resp.results(0).reason(), unknown.results(0).reason());
  EXPECT_EQ(*db_->QueryValue(absl::StrCat("SELECT team_id::text || '/' || title || '/' || deleted "
                                          "FROM tasks WHERE id = '", task_a_, "'")),
            absl::StrCat(team_a_, "/secret of A/false"));
  EXPECT_EQ(*db_->QueryValue(absl::StrCat("SELECT name FROM teams WHERE id = '", team_a_, "'")),
            "A");
  EXPECT_EQ(*db_->QueryValue(absl::StrCat("SELECT string_agg(team_id::text, ',') FROM team_members "
                                          "WHERE user_id = '", user_b_, "'")),
            team_b_);
  // Nothing of it reached team A's feed.
  for (const v1::Change& c : PullAllAs(user_a_)) {
    EXPECT_NE(c.origin_id(), "device-b") << c.DebugString();
  }
}

// Filters do not widen the scope: user B streaming from the start with
// filters aimed at team A gets nothing of team A, before or after it writes.
TEST_F(AuthzE2eTest, StreamFiltersAimedAtAnotherTeamSeeNothingOfIt) {
  grpc::ClientContext ctx;
  ctx.AddMetadata("x-pulsesync-user-id", user_b_);
  v1::StreamChangesRequest req;  // from the start of the log
  for (const std::string& filter :
       {absl::StrCat("team_id=eq.", team_a_), absl::StrCat("id=eq.", task_a_),
        std::string("title=eq.secret of A"), std::string("title=eq.marker")}) {
    v1::Subscription* sub = req.add_subscriptions();
    sub->set_table("tasks");
    sub->add_filters(filter);
  }
  auto reader = stub_->StreamChanges(&ctx, req);
  ApplyAs(user_a_, {Upsert("task", NewUuid(),
                           absl::StrCat(R"({"team_id":")", team_a_, R"(","title":"secret of A"})"))});
  ApplyAs(user_b_, {Upsert("task", NewUuid(),
                           absl::StrCat(R"({"team_id":")", team_b_, R"(","title":"marker"})"))});
  v1::StreamChangesResponse msg;
  bool marker = false;
  while (!marker && reader->Read(&msg)) {
    for (const v1::Change& c : msg.changes()) {
      EXPECT_EQ(c.team_id(), team_b_) << c.DebugString();
      EXPECT_EQ(c.new_record().find("secret of A"), std::string::npos) << c.DebugString();
      if (c.new_record().find("marker") != std::string::npos) marker = true;
    }
  }
  EXPECT_TRUE(marker);
  ctx.TryCancel();
  while (reader->Read(&msg)) {
  }
  (void)reader->Finish();
}

// The engine's own tables (change log, applied revisions: the audit trail)
// are not readable by a caller's role, so SQL cannot go around the feed.
TEST_F(AuthzE2eTest, TheEngineTablesAreClosedToCallers) {
  for (const char* table : {"pulsesync.change_log", "pulsesync.applied_revisions"}) {
    pqxx::connection conn(db_->url());
    pqxx::work tx(conn);
    tx.exec_params("SELECT set_config('role', 'authenticated', true), "
                   "set_config('request.jwt.claims', $1, true)",
                   absl::StrCat(R"({"sub":")", user_b_, R"(","role":"authenticated"})"));
    try {
      tx.exec(absl::StrCat("SELECT count(*) FROM ", table));
      ADD_FAILURE() << table << " is readable as authenticated";
    } catch (const pqxx::sql_error& e) {
      EXPECT_THAT(e.what(), HasSubstr("permission denied")) << table;
    }
  }
}

TEST_F(AuthzE2eTest, BadCredentialsAreUnauthenticated) {
  grpc::Status status;
  ApplyAs("not-a-uuid", {Upsert("task", NewUuid(), "{}")}, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(status.error_message(), HasSubstr("not a UUID"));
}

}  // namespace
}  // namespace pulsesync
