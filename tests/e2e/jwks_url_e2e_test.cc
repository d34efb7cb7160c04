// The JWKS from a URL end to end: pulsesyncd with --jwks_url follows a key
// set served by a small HTTP server on loopback (tests/testing/http_server)
// as it rotates, keeps the last good set when a fetch fails, fetches early
// (rate-limited) for an unknown kid, and refuses URLs it must not trust.
// Tokens and keys come from the openssl command line.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/uuid.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "pulsesync/v1/sync.grpc.pb.h"
#include "tests/testing/http_server.h"
#include "tests/testing/openssl_jwt.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::CommandResult;
using ::pulsesync::testing::HttpServer;
using ::pulsesync::testing::OpensslJwtKeys;
using ::pulsesync::testing::ServerProcess;
using ::pulsesync::testing::TestDatabase;
using ::pulsesync::testing::WaitFor;
using ::testing::HasSubstr;

class JwksUrlE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<OpensslJwtKeys> keys = OpensslJwtKeys::Generate();
    ASSERT_OK(keys);
    keys_ = new OpensslJwtKeys(*std::move(keys));
  }
  static void TearDownTestSuite() {
    delete keys_;
    keys_ = nullptr;
  }

  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_NE(keys_, nullptr);
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    ASSERT_OK_AND_ASSIGN(http_, HttpServer::Start());
    dir_ = testing::MakeTempDir("jwks-url");
  }

  // A JWKS with the test's EC public key under each of `kids` (one key
  // pair, several names: what a rotation looks like to the verifier).
  static std::string Jwks(const std::vector<std::string>& kids) {
    std::string keys;
    for (const std::string& kid : kids) {
      absl::StrAppend(&keys, keys.empty() ? "" : ",", keys_->EcJwk(kid));
    }
    return absl::StrCat(R"({"keys":[)", keys, "]}");
  }

  void StartServer(std::vector<std::string> flags) {
    flags.push_back("--jwks_url=" + http_->url("/auth/v1/.well-known/jwks.json"));
    server_ = std::make_unique<ServerProcess>(db_->url(), dir_ + "/pulsesyncd.log", flags);
    ASSERT_OK(server_->Start());
    stub_ = v1::SyncService::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }

  // An ES256 service_role token naming `kid`, signed by openssl.
  static std::string Token(const std::string& kid) {
    const int64_t now = absl::ToUnixSeconds(absl::Now());
    absl::StatusOr<std::string> token = keys_->Mint(
        "ES256",
        absl::StrCat(R"({"aud":"authenticated","role":"service_role","iat":)", now,
                     R"(,"exp":)", now + 3600, "}"),
        kid);
    EXPECT_OK(token);
    return token.ok() ? *token : "";
  }

  // A PullChanges call with `token` (GetServerInfo needs none).
  grpc::Status Call(const std::string& token) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    v1::PullChangesRequest req;
    req.set_limit(1);
    v1::PullChangesResponse resp;
    return stub_->PullChanges(&ctx, req, &resp);
  }

  static OpensslJwtKeys* keys_;
  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<HttpServer> http_;
  std::string dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::SyncService::Stub> stub_;
};

OpensslJwtKeys* JwksUrlE2eTest::keys_ = nullptr;

TEST_F(JwksUrlE2eTest, KeysFollowTheUrlAcrossARotationAndSurviveFailedFetches) {
  http_->SetResponse(200, Jwks({"k1"}));
  // Only the periodic re-read: an unknown kid asks for no early fetch here.
  StartServer({"--jwks_refresh=1s", "--jwks_min_refetch_interval=1h"});
  const std::string k1 = Token("k1"), k2 = Token("k2");
  ASSERT_TRUE(Call(k1).ok());
  grpc::Status s = Call(k2);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("unknown key id \"k2\""));

  // The auth server rotates to k2: accepted once re-read, k1 no longer.
  http_->SetResponse(200, Jwks({"k2"}));
  EXPECT_TRUE(WaitFor([&] { return Call(k2).ok(); }, absl::Seconds(15)));
  s = Call(k1);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("unknown key id \"k1\""));

  // The auth server fails, then serves garbage: the last good set stays.
  http_->SetResponse(503, "");
  int before = http_->requests();
  ASSERT_TRUE(WaitFor([&] { return http_->requests() >= before + 2; }, absl::Seconds(15)));
  EXPECT_TRUE(Call(k2).ok());
  http_->SetResponse(200, R"({"keys":"not a list"})");
  before = http_->requests();
  ASSERT_TRUE(WaitFor([&] { return http_->requests() >= before + 2; }, absl::Seconds(15)));
  EXPECT_TRUE(Call(k2).ok());
  EXPECT_FALSE(Call(k1).ok());
  const std::string log = server_->ReadLog();
  EXPECT_THAT(log, HasSubstr("JWKS fetch failed; keeping the last key set"));
  EXPECT_THAT(log, HasSubstr("HTTP 503"));
  EXPECT_THAT(log, HasSubstr("JWKS document refused; keeping the last key set"));
}

TEST_F(JwksUrlE2eTest, AnUnknownKidFetchesEarlyAtMostOncePerInterval) {
  http_->SetResponse(200, Jwks({"k1"}));
  StartServer({"--jwks_refresh=1h", "--jwks_min_refetch_interval=1s"});
  ASSERT_EQ(http_->requests(), 1);  // the fetch at start
  http_->SetResponse(200, Jwks({"k1", "k2"}));
  const std::string k2 = Token("k2");
  // Refused at first; the refusal asks for a fetch, after which k2 works.
  EXPECT_FALSE(Call(k2).ok());
  EXPECT_TRUE(WaitFor([&] { return Call(k2).ok(); }, absl::Seconds(10)));
  EXPECT_EQ(http_->requests(), 2);

  // A flood of tokens naming unknown kids costs one fetch per interval.
  const std::string unknown = Token("no-such-key");
  const absl::Time flood_start = absl::Now();
  for (int i = 0; i < 50; ++i) EXPECT_FALSE(Call(unknown).ok());
  const absl::Duration flood = absl::Now() - flood_start;
  ASSERT_TRUE(WaitFor([&] { return http_->requests() >= 3; }, absl::Seconds(10)));
  const int64_t allowed = 3 + absl::ToInt64Seconds(absl::Now() - flood_start);
  EXPECT_LE(http_->requests(), allowed) << "flood took " << flood;
  EXPECT_THAT(server_->ReadLog(), HasSubstr("fetching the JWKS early"));
}

TEST_F(JwksUrlE2eTest, UrlsThatCannotBeTrustedStopStartUp) {
  auto serve = [&](std::vector<std::string> flags) {
    std::vector<std::string> argv = {testing::PulsesyncdPath(), "serve",
                                     "--database_url=" + db_->url(), "--listen=127.0.0.1:0",
                                     "--plaintext"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    absl::StatusOr<CommandResult> r = testing::RunCommand(argv, {}, absl::Seconds(30));
    EXPECT_OK(r);
    return r.ok() ? *r : CommandResult();
  };
  CommandResult remote_http = serve({"--jwks_url=http://auth.example.com/jwks.json"});
  EXPECT_EQ(remote_http.exit_code, 1);
  EXPECT_THAT(remote_http.errors, HasSubstr("http is accepted only for a loopback host"));
  CommandResult ftp = serve({"--jwks_url=ftp://127.0.0.1/jwks.json"});
  EXPECT_EQ(ftp.exit_code, 1);
  EXPECT_THAT(ftp.errors, HasSubstr("https://"));
  CommandResult both = serve({"--jwks_url=" + http_->url(), "--jwks_file=" + dir_ + "/jwks.json"});
  EXPECT_EQ(both.exit_code, 1);
  EXPECT_THAT(both.errors, HasSubstr("exclude each other"));
  EXPECT_EQ(http_->requests(), 0);
}

// The auth server is down at start: pulsesyncd serves anyway (HS256 and
// nothing else), and takes the keys once they can be fetched.
TEST_F(JwksUrlE2eTest, AFailedFirstFetchIsRetried) {
  http_->SetResponse(500, "");
  StartServer({"--jwks_refresh=1h", "--jwks_min_refetch_interval=1s"});
  const std::string k1 = Token("k1");
  EXPECT_FALSE(Call(k1).ok());
  http_->SetResponse(200, Jwks({"k1"}));
  EXPECT_TRUE(WaitFor([&] { return Call(k1).ok(); }, absl::Seconds(10)));
}

}  // namespace
}  // namespace pulsesync
