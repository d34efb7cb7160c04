// Supabase-compatible authentication end to end: pulsesyncd with a JWT
// secret accepts only calls with a valid "authorization: Bearer <JWT>", runs
// them as the token's role and user, and ends a stream when its token
// expires. (Tokens from an independent signer are covered in jwt_test.)
#include <atomic>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/core/subscriber.h"
#include "client/core/sync_engine.h"
#include "client/store/local_store.h"
#include "client/transport/grpc_transport.h"
#include "common/jwt.h"
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

constexpr char kSecret[] = "super-secret-jwt-token-with-at-least-32-characters-long";

class JwtE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    team_a_ = NewUuid();
    team_b_ = NewUuid();
    user_b_ = NewUuid();
    ASSERT_OK(db_->Execute(absl::StrCat(
        "INSERT INTO teams (id, name) VALUES ('", team_a_, "','A'), ('", team_b_, "','B');",
        "INSERT INTO users (id, email) VALUES ('", user_b_, "','b@x');",
        "INSERT INTO team_members (id, team_id, user_id) VALUES (gen_random_uuid(),'", team_b_,
        "','", user_b_, "');",
        "INSERT INTO tasks (id, team_id, title) VALUES (gen_random_uuid(),'", team_a_,
        "','secret of A');")));
    server_ = std::make_unique<ServerProcess>(
        db_->url(), testing::MakeTempDir("jwt") + "/pulsesyncd.log",
        std::vector<std::string>{absl::StrCat("--jwt_secret=", kSecret), "--feed_poll_ms=100"});
    ASSERT_OK(server_->Start());
    stub_ = v1::SyncService::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }

  // A token shaped like Supabase Auth's.
  static std::string Token(const std::string& sub, const std::string& role, absl::Duration ttl,
                           const std::string& secret = kSecret) {
    const int64_t now = absl::ToUnixSeconds(absl::Now());
    std::string claims = absl::StrCat(R"({"aud":"authenticated","role":")", role, R"(","iat":)",
                                      now, R"(,"exp":)", now + absl::ToInt64Seconds(ttl));
    if (!sub.empty()) absl::StrAppend(&claims, R"(,"sub":")", sub, "\"");
    claims += "}";
    return SignHs256ForTest(claims, secret);
  }

  grpc::Status Apply(const std::string& token, const std::string& team,
                     v1::ApplyRevisionsResponse* resp) {
    grpc::ClientContext ctx;
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    v1::ApplyRevisionsRequest req;
    v1::Revision* r = req.add_revisions();
    r->set_id(NewUuid());
    r->set_object_type("task");
    r->set_object_id(NewUuid());
    r->set_origin_id(absl::StrCat("jwt-test-", NewUuid()));  // a new device each call
    r->set_seq(1);
    r->set_op(v1::OPERATION_UPSERT);
    r->set_payload(absl::StrCat(R"({"team_id":")", team, R"(","title":"t"})"));
    r->set_created_at(1700000000000);
    return stub_->ApplyRevisions(&ctx, req, resp);
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::SyncService::Stub> stub_;
  std::string team_a_, team_b_, user_b_;
};

TEST_F(JwtE2eTest, CallsWithoutAValidTokenAreUnauthenticatedAndDoNothing) {
  v1::ApplyRevisionsResponse resp;
  grpc::Status s = Apply("", team_b_, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("authorization"));
  s = Apply(Token(user_b_, "authenticated", absl::Hours(1), "another-secret-of-32-characters-or-more"),
            team_b_, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("signature"));
  s = Apply(Token(user_b_, "authenticated", -absl::Hours(1)), team_b_, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("expired"));
  s = Apply(Token(user_b_, "postgres", absl::Hours(1)), team_b_, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM tasks"), "1");
}

TEST_F(JwtE2eTest, TheTokensUserAndRoleDecideWhatIsAllowed) {
  v1::ApplyRevisionsResponse resp;
  ASSERT_TRUE(Apply(Token(user_b_, "authenticated", absl::Hours(1)), team_b_, &resp).ok());
  EXPECT_EQ(resp.results(0).outcome(), v1::RevisionResult::OUTCOME_APPLIED);
  ASSERT_TRUE(Apply(Token(user_b_, "authenticated", absl::Hours(1)), team_a_, &resp).ok());
  EXPECT_EQ(resp.results(0).outcome(), v1::RevisionResult::OUTCOME_REJECTED);
  // service_role bypasses RLS, as in Supabase.
  ASSERT_TRUE(Apply(Token("", "service_role", absl::Hours(1)), team_a_, &resp).ok());
  EXPECT_EQ(resp.results(0).outcome(), v1::RevisionResult::OUTCOME_APPLIED);
  EXPECT_EQ(*db_->QueryValue(absl::StrCat("SELECT count(*) FROM tasks WHERE team_id = '", team_a_,
                                          "'")),
            "2");
}

TEST_F(JwtE2eTest, AStreamEndsWhenItsTokenExpires) {
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer " + Token(user_b_, "authenticated", absl::Seconds(2)));
  v1::StreamChangesRequest req;
  req.set_from_now(true);
  auto reader = stub_->StreamChanges(&ctx, req);
  v1::StreamChangesResponse msg;
  ASSERT_TRUE(reader->Read(&msg));  // the live checkpoint
  EXPECT_FALSE(msg.checkpoint().empty());
  // Nothing more arrives; the stream ends on its own once the token expires.
  while (reader->Read(&msg)) {
  }
  grpc::Status s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("expired"));
}


TEST_F(JwtE2eTest, ASubscriberRenewsItsTokenAndMissesNothing) {
  // user_b_ (a member of team B) follows the feed with tokens that live 2 s
  // at most: every stream ends with UNAUTHENTICATED within seconds.
  std::atomic<int> provider_calls{0};
  GrpcTransportOptions transport_options;
  transport_options.token_provider = [&]() -> absl::StatusOr<std::string> {
    ++provider_calls;
    return Token(user_b_, "authenticated", absl::Seconds(2));
  };
  const std::string dir = testing::MakeTempDir("jwt_subscriber");
  std::unique_ptr<LocalStore> store = std::move(LocalStore::Open(dir + "/b.db")).value();
  std::unique_ptr<GrpcTransport> transport =
      GrpcTransport::Create(server_->address(), transport_options);
  SyncEngine engine(store.get(), transport.get());

  absl::Mutex mu;
  std::map<std::string, int> applied;  // task id -> on_change calls
  int renewals = 0;                    // disconnects for an expired token
  int other_disconnects = 0;
  SubscriberOptions options;
  options.initial_backoff = absl::Milliseconds(50);
  options.max_backoff = absl::Milliseconds(500);
  options.on_change = [&](const ChangeNotification& n) {
    absl::MutexLock lock(&mu);
    if (n.table == "tasks") ++applied[n.object_id];
  };
  options.on_connection = [&](const ConnectionEvent& e) {
    if (e.state != ConnectionEvent::State::kDisconnected) return;
    absl::MutexLock lock(&mu);
    if (e.status.code() == absl::StatusCode::kUnauthenticated) {
      ++renewals;
    } else if (e.status.code() != absl::StatusCode::kCancelled) {
      ++other_disconnects;
    }
  };
  // Writes start once the initial snapshot is in: a task written while it
  // is being read would arrive in it (reported by on_snapshot, not
  // on_change). connected() turns true before the snapshot.
  std::atomic<bool> snapshot_applied{false};
  options.on_snapshot = [&](const SnapshotNotification&) { snapshot_applied = true; };
  Subscriber subscriber(store.get(), transport.get(), &engine, options);
  subscriber.Start();
  ASSERT_TRUE(WaitFor([&] { return subscriber.connected() && snapshot_applied.load(); },
                      absl::Seconds(30)));

  // ~6 s of writes to team B through a service_role token.
  const std::string service = Token("", "service_role", absl::Hours(1));
  const absl::Time until = absl::Now() + absl::Seconds(6);
  int written = 0;
  while (absl::Now() < until) {
    v1::ApplyRevisionsResponse resp;
    ASSERT_TRUE(Apply(service, team_b_, &resp).ok());
    ASSERT_EQ(resp.results(0).outcome(), v1::RevisionResult::OUTCOME_APPLIED);
    ++written;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_OK_AND_ASSIGN(std::string want,
                       db_->QueryValue(absl::StrCat("SELECT count(*) FROM tasks WHERE team_id = '",
                                                    team_b_, "'")));
  ASSERT_EQ(want, std::to_string(written));
  EXPECT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<std::vector<JsonValue>> rows = store->List("task");
        return rows.ok() && static_cast<int>(rows->size()) == written;
      },
      absl::Seconds(30)));
  subscriber.Stop();

  // Every task arrived exactly once (and nothing of team A).
  absl::StatusOr<std::vector<JsonValue>> rows = store->List("task");
  ASSERT_OK(rows.status());
  EXPECT_EQ(static_cast<int>(rows->size()), written);
  for (const JsonValue& r : *rows) {
    EXPECT_EQ(r.Find("team_id")->text(), team_b_);
  }
  absl::MutexLock lock(&mu);
  EXPECT_EQ(static_cast<int>(applied.size()), written);
  for (const auto& [id, calls] : applied) EXPECT_EQ(calls, 1) << id;
  // The stream was renewed (a new token from the provider) at least twice,
  // and no other kind of error showed.
  EXPECT_GE(renewals, 2);
  EXPECT_EQ(other_disconnects, 0);
  EXPECT_GE(provider_calls.load(), 2 * (renewals + 1));
}

// The CLI asks a command for its tokens (--token-command): each call gets
// what the command prints, so an expired token is replaced without the user.
TEST_F(JwtE2eTest, TheCliGetsItsTokensFromACommand) {
  const std::string dir = testing::MakeTempDir("jwt_cli");
  {
    std::ofstream out(dir + "/token");
    out << Token(user_b_, "authenticated", absl::Hours(1)) << "\n";
  }
  auto cli = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {testing::PulsesyncCliPath(), "--db=" + dir + "/cli.db",
                                     "--server=" + server_->address()};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<testing::CommandResult> r = testing::RunCommand(argv);
    EXPECT_OK(r);
    return r.ok() ? *r : testing::CommandResult();
  };
  ASSERT_EQ(cli({"init"}).exit_code, 0);
  ASSERT_EQ(cli({"create", "task", "team_id=" + team_b_, "title=from the cli"}).exit_code, 0);

  testing::CommandResult failed = cli({"--token-command=exit 7", "sync"});
  EXPECT_EQ(failed.exit_code, 1);
  EXPECT_THAT(failed.errors, HasSubstr("token command"));
  testing::CommandResult synced = cli({"--token-command=cat '" + dir + "/token'", "sync"});
  EXPECT_EQ(synced.exit_code, 0) << synced.errors;
  EXPECT_THAT(synced.output, HasSubstr("applied 1"));
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM tasks WHERE title = 'from the cli'"), "1");
}

}  // namespace
}  // namespace pulsesync
