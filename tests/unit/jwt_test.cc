// JwtVerifier against tokens minted by an independent implementation: the
// `openssl` command line (plus sh and perl), run at test time in a temporary
// directory, so no key material is ever committed. Keys, signatures and the
// base64url of the header and payload all come from openssl; our own code only
// verifies.
#include "common/jwt.h"

#include <stdlib.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/openssl_jwt.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::StatusIs;
using ::testing::HasSubstr;

constexpr absl::StatusCode kUnauth = absl::StatusCode::kUnauthenticated;
// 2026-01-01T00:00:00Z.
constexpr int64_t kNow = 1767225600;
constexpr char kSecret[] = "super-secret-jwt-token-with-at-least-32-characters-long";
constexpr char kRef[] = "abcdefghijklmnopqrst";

class FakeClock final : public WallClock {
 public:
  int64_t NowMs() const override { return now_ms.load(); }
  std::atomic<int64_t> now_ms{kNow * 1000};
};

std::string B64(absl::string_view s) { return absl::WebSafeBase64Escape(s); }

class JwtVerifierTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<testing::OpensslJwtKeys> keys = testing::OpensslJwtKeys::Generate();
    if (!keys.ok()) {
      *setup_error_ = keys.status().ToString();
      return;
    }
    *dir_ = keys->dir;
    *rsa_n_ = keys->rsa_n;
    *rsa_e_ = keys->rsa_e;
    *ec_x_ = keys->ec_x;
    *ec_y_ = keys->ec_y;
    keys_ = new testing::OpensslJwtKeys(*std::move(keys));
  }
  static void TearDownTestSuite() {
    if (!dir_->empty()) (void)testing::RunCommand({"rm", "-rf", *dir_});
    delete keys_;
    keys_ = nullptr;
  }

  void SetUp() override {
    ASSERT_EQ(*setup_error_, "");
    options_.hs256_secrets = {kSecret};
    options_.jwks_json = Jwks();
    options_.clock = &clock_;
  }

  static std::string RsaJwk(absl::string_view kid) { return keys_->RsaJwk(kid); }
  static std::string EcJwk(absl::string_view kid) { return keys_->EcJwk(kid); }
  static std::string Jwks() {
    return absl::StrCat(R"({"keys":[)", RsaJwk("rsa-1"), ",", EcJwk("ec-1"), "]}");
  }

  std::unique_ptr<JwtVerifier> MakeVerifier() {
    auto verifier = JwtVerifier::Create(options_);
    EXPECT_OK(verifier);
    return verifier.ok() ? *std::move(verifier) : nullptr;
  }

  // A token minted by openssl. `header_json` "" means {"alg":alg,"typ":"JWT"}
  // plus "kid" when given.
  static std::string Mint(absl::string_view alg, absl::string_view claims_json,
                          absl::string_view kid = "", absl::string_view secret = kSecret,
                          std::string header_json = "") {
    absl::StatusOr<std::string> token =
        keys_->Mint(alg, claims_json, kid, secret, std::move(header_json));
    EXPECT_OK(token);
    return token.ok() ? *token : "";
  }

  static std::string Claims(absl::string_view extra = "") {
    return absl::StrCat(R"({"sub":"u1","role":"authenticated","aud":"authenticated","exp":)",
                        kNow + 3600, ",\"iat\":", kNow - 10, extra, "}");
  }

  static std::string RsaPublicPem() {
    auto result = testing::RunCommand({"cat", *dir_ + "/rsa.pub.pem"});
    return result.ok() ? result->output : "";
  }

  static testing::OpensslJwtKeys* keys_;
  static std::string* const dir_;
  static std::string* const setup_error_;
  static std::string* const rsa_n_;
  static std::string* const rsa_e_;
  static std::string* const ec_x_;
  static std::string* const ec_y_;

  FakeClock clock_;
  JwtVerifierOptions options_;
};

testing::OpensslJwtKeys* JwtVerifierTest::keys_ = nullptr;
std::string* const JwtVerifierTest::dir_ = new std::string;
std::string* const JwtVerifierTest::setup_error_ = new std::string;
std::string* const JwtVerifierTest::rsa_n_ = new std::string;
std::string* const JwtVerifierTest::rsa_e_ = new std::string;
std::string* const JwtVerifierTest::ec_x_ = new std::string;
std::string* const JwtVerifierTest::ec_y_ = new std::string;

// Replaces the part `index` (0 header, 1 payload, 2 signature) of a token.
std::string WithPart(absl::string_view token, int index, absl::string_view part) {
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  parts[index] = std::string(part);
  return absl::StrJoin(parts, ".");
}

// ---- tokens that verify -------------------------------------------------------

TEST_F(JwtVerifierTest, AcceptsHs256MintedByOpenssl) {
  auto verifier = MakeVerifier();
  ASSERT_OK_AND_ASSIGN(VerifiedToken t, verifier->Verify(Mint("HS256", Claims())));
  EXPECT_EQ(t.alg, "HS256");
  EXPECT_EQ(t.kid, "");
  EXPECT_EQ(t.sub, "u1");
  EXPECT_EQ(t.role, "authenticated");
  EXPECT_EQ(t.exp, kNow + 3600);
  EXPECT_THAT(t.aud, ::testing::ElementsAre("authenticated"));
  EXPECT_EQ(t.claims_json, Claims());
  ASSERT_TRUE(t.claims.is_object());
  EXPECT_EQ(t.claims.Find("sub")->text(), "u1");
}

TEST_F(JwtVerifierTest, AcceptsHs256WithKidThatIsNotInTheJwks) {
  // Supabase puts a kid on tokens signed with the legacy secret.
  auto verifier = MakeVerifier();
  ASSERT_OK_AND_ASSIGN(VerifiedToken t, verifier->Verify(Mint("HS256", Claims(), "legacy-kid")));
  EXPECT_EQ(t.kid, "legacy-kid");
}

TEST_F(JwtVerifierTest, AcceptsAnyOfSeveralSecretsDuringRotation) {
  options_.hs256_secrets = {"old-secret-old-secret-old-secret!", kSecret};
  auto verifier = MakeVerifier();
  EXPECT_OK(verifier->Verify(Mint("HS256", Claims())));
  EXPECT_OK(verifier->Verify(Mint("HS256", Claims(), "", "old-secret-old-secret-old-secret!")));
  EXPECT_THAT(verifier->Verify(Mint("HS256", Claims(), "", "another-secret-another-secret")),
              StatusIs(kUnauth, "signature does not verify"));
}

TEST_F(JwtVerifierTest, AcceptsRs256MintedByOpenssl) {
  auto verifier = MakeVerifier();
  ASSERT_OK_AND_ASSIGN(VerifiedToken t, verifier->Verify(Mint("RS256", Claims(), "rsa-1")));
  EXPECT_EQ(t.alg, "RS256");
  EXPECT_EQ(t.kid, "rsa-1");
  EXPECT_EQ(t.sub, "u1");
}

TEST_F(JwtVerifierTest, AcceptsEs256MintedByOpenssl) {
  auto verifier = MakeVerifier();
  // ECDSA signatures are randomized, and r or s sometimes has leading zero
  // bytes; a few tokens exercise the padding in both converters.
  for (int i = 0; i < 8; ++i) {
    ASSERT_OK_AND_ASSIGN(VerifiedToken t,
                         verifier->Verify(Mint("ES256", Claims(absl::StrCat(",\"n\":", i)),
                                               "ec-1")));
    EXPECT_EQ(t.alg, "ES256");
    EXPECT_EQ(t.kid, "ec-1");
  }
}

TEST_F(JwtVerifierTest, AcceptsSupabaseShapedTokenAndExposesClaims) {
  const std::string iss = absl::StrCat("https://", kRef, ".supabase.co/auth/v1");
  options_.issuer = iss;
  auto verifier = MakeVerifier();
  const std::string claims = absl::StrCat(
      R"({"iss":")", iss, R"(","sub":"8f0c1d2e-3a4b-4c5d-9e6f-7a8b9c0d1e2f","aud":"authenticated",)",
      R"("exp":)", kNow + 3600, R"(,"iat":)", kNow, R"(,"email":"ada@example.com","phone":"",)",
      R"("app_metadata":{"provider":"email","providers":["email"]},)",
      R"("user_metadata":{"email_verified":true},"role":"authenticated","aal":"aal1",)",
      R"("amr":[{"method":"password","timestamp":)", kNow, R"(}],)",
      R"("session_id":"0f1e2d3c-4b5a-4968-8776-655443322110","is_anonymous":false})");
  for (const auto& [alg, kid] : std::vector<std::pair<std::string, std::string>>{
           {"HS256", "Xy12abcd"}, {"ES256", "ec-1"}, {"RS256", "rsa-1"}}) {
    SCOPED_TRACE(alg);
    ASSERT_OK_AND_ASSIGN(VerifiedToken t, verifier->Verify(Mint(alg, claims, kid)));
    EXPECT_EQ(t.sub, "8f0c1d2e-3a4b-4c5d-9e6f-7a8b9c0d1e2f");
    EXPECT_EQ(t.role, "authenticated");
    EXPECT_EQ(t.iss, iss);
    EXPECT_EQ(t.claims.Find("email")->text(), "ada@example.com");
    EXPECT_EQ(t.claims_json, claims);
  }
}

TEST_F(JwtVerifierTest, AcceptsAudienceArrayAndSkipsAudienceCheckWhenNoneConfigured) {
  auto verifier = MakeVerifier();
  const std::string claims = absl::StrCat(R"({"aud":["other","authenticated"],"exp":)",
                                          kNow + 60, "}");
  ASSERT_OK_AND_ASSIGN(VerifiedToken t, verifier->Verify(Mint("HS256", claims)));
  EXPECT_THAT(t.aud, ::testing::ElementsAre("other", "authenticated"));

  options_.audiences.clear();
  auto lax = MakeVerifier();
  EXPECT_OK(lax->Verify(Mint("HS256", absl::StrCat(R"({"aud":"x","exp":)", kNow + 60, "}"))));
  EXPECT_OK(lax->Verify(Mint("HS256", absl::StrCat(R"({"exp":)", kNow + 60, "}"))));
}

TEST_F(JwtVerifierTest, SignHs256ForTestMakesTokensThatVerify) {
  auto verifier = MakeVerifier();
  ASSERT_OK_AND_ASSIGN(VerifiedToken t, verifier->Verify(SignHs256ForTest(Claims(), kSecret, "k9")));
  EXPECT_EQ(t.kid, "k9");
  EXPECT_EQ(t.sub, "u1");
  // And openssl agrees with it byte for byte: HMAC is deterministic.
  EXPECT_EQ(SignHs256ForTest(Claims(), kSecret),
            Mint("HS256", Claims(), "", kSecret, R"({"alg":"HS256","typ":"JWT"})"));
}

// ---- algorithm and key selection ------------------------------------------------

TEST_F(JwtVerifierTest, RejectsAlgNone) {
  auto verifier = MakeVerifier();
  for (const char* none : {"none", "None", "NONE"}) {
    const std::string token =
        absl::StrCat(B64(absl::StrCat(R"({"alg":")", none, R"(","typ":"JWT"})")), ".",
                     B64(Claims()), ".");
    EXPECT_THAT(verifier->Verify(token), StatusIs(kUnauth, "algorithm none is not accepted"));
    // With a signature part too (some libraries accept either).
    EXPECT_THAT(verifier->Verify(token + "AAAA"),
                StatusIs(kUnauth, "algorithm none is not accepted"));
  }
}

TEST_F(JwtVerifierTest, RejectsOtherAlgorithmsAndCrit) {
  auto verifier = MakeVerifier();
  for (const char* alg : {"HS512", "RS512", "PS256", "ES384", "EdDSA", "hs256"}) {
    const std::string token = absl::StrCat(B64(absl::StrCat(R"({"alg":")", alg, R"("})")), ".",
                                           B64(Claims()), ".AAAA");
    EXPECT_THAT(verifier->Verify(token),
                StatusIs(kUnauth, absl::StrCat("algorithm \"", alg, "\" is not accepted")));
  }
  EXPECT_THAT(verifier->Verify(Mint("HS256", Claims(), "", kSecret,
                                    R"({"alg":"HS256","crit":["exp"],"exp":1})")),
              StatusIs(kUnauth, HasSubstr("crit")));
}

TEST_F(JwtVerifierTest, RejectsHs256SignedWithTheRsaPublicKey) {
  // The classic confusion: the attacker HMACs with the (public) RSA key PEM and
  // names the RSA key, hoping the verifier uses "the key for kid" as a secret.
  const std::string pem = RsaPublicPem();
  ASSERT_THAT(pem, HasSubstr("BEGIN PUBLIC KEY"));
  auto verifier = MakeVerifier();
  EXPECT_THAT(verifier->Verify(Mint("HS256", Claims(), "rsa-1", pem)),
              StatusIs(kUnauth, "key \"rsa-1\" is an RSA public key; algorithm HS256 is not "
                                "accepted with it"));
  // Without a kid, it is checked against the shared secret only.
  EXPECT_THAT(verifier->Verify(Mint("HS256", Claims(), "", pem)),
              StatusIs(kUnauth, "signature does not verify"));
  // With no secret configured, HS256 is not accepted at all.
  options_.hs256_secrets.clear();
  auto no_secret = MakeVerifier();
  EXPECT_THAT(no_secret->Verify(Mint("HS256", Claims(), "", pem)),
              StatusIs(kUnauth, HasSubstr("no shared secret is configured")));
  // And a PEM key cannot be configured as the secret.
  options_.hs256_secrets = {pem};
  EXPECT_THAT(JwtVerifier::Create(options_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("PEM")));
}

TEST_F(JwtVerifierTest, RejectsKeyOfTheWrongKind) {
  auto verifier = MakeVerifier();
  // Signed correctly with the RSA key, but naming the EC key, and vice versa.
  EXPECT_THAT(verifier->Verify(Mint("RS256", Claims(), "ec-1")),
              StatusIs(kUnauth, HasSubstr("key \"ec-1\" is an EC P-256 key; algorithm RS256")));
  EXPECT_THAT(verifier->Verify(Mint("ES256", Claims(), "rsa-1")),
              StatusIs(kUnauth, HasSubstr("key \"rsa-1\" is an RSA key; algorithm ES256")));
}

TEST_F(JwtVerifierTest, RejectsUnknownOrMissingKid) {
  auto verifier = MakeVerifier();
  EXPECT_THAT(verifier->Verify(Mint("RS256", Claims(), "k2")),
              StatusIs(kUnauth, "unknown key id \"k2\""));
  EXPECT_THAT(verifier->Verify(Mint("ES256", Claims(), "k2")),
              StatusIs(kUnauth, "unknown key id \"k2\""));
  EXPECT_THAT(verifier->Verify(Mint("RS256", Claims())),
              StatusIs(kUnauth, HasSubstr("token has no kid")));
}

// A JWKS refresher learns of a key it does not have yet (a rotation) from the
// hook; tokens with known keys, or HS256 ones, do not call it.
TEST_F(JwtVerifierTest, CallsTheUnknownKidHookOnlyForAnUnknownKid) {
  std::vector<std::string> seen;
  options_.on_unknown_kid = [&](absl::string_view kid) { seen.emplace_back(kid); };
  auto verifier = MakeVerifier();
  EXPECT_OK(verifier->Verify(Mint("RS256", Claims(), "rsa-1")));
  EXPECT_OK(verifier->Verify(Mint("HS256", Claims(), "not-in-the-jwks")));
  EXPECT_THAT(verifier->Verify(Mint("ES256", Claims(), "k2")),
              StatusIs(kUnauth, "unknown key id \"k2\""));
  EXPECT_THAT(seen, ::testing::ElementsAre("k2"));
}

// ---- signatures -------------------------------------------------------------------

TEST_F(JwtVerifierTest, RejectsTamperedPayload) {
  auto verifier = MakeVerifier();
  const std::string forged = B64(absl::StrCat(
      R"({"sub":"u1","role":"service_role","aud":"authenticated","exp":)", kNow + 3600, "}"));
  for (const auto& [alg, kid] : std::vector<std::pair<std::string, std::string>>{
           {"HS256", ""}, {"RS256", "rsa-1"}, {"ES256", "ec-1"}}) {
    SCOPED_TRACE(alg);
    const std::string token = Mint(alg, Claims(), kid);
    ASSERT_OK(verifier->Verify(token));
    EXPECT_THAT(verifier->Verify(WithPart(token, 1, forged)),
                StatusIs(kUnauth, "signature does not verify"));
  }
}

TEST_F(JwtVerifierTest, RejectsTamperedSignature) {
  auto verifier = MakeVerifier();
  for (const auto& [alg, kid] : std::vector<std::pair<std::string, std::string>>{
           {"HS256", ""}, {"RS256", "rsa-1"}, {"ES256", "ec-1"}}) {
    SCOPED_TRACE(alg);
    const std::string token = Mint(alg, Claims(), kid);
    std::string sig = std::vector<std::string>(absl::StrSplit(token, '.'))[2];
    sig[0] = sig[0] == 'A' ? 'B' : 'A';
    EXPECT_THAT(verifier->Verify(WithPart(token, 2, sig)),
                StatusIs(kUnauth, "signature does not verify"));
    // Truncated: refused as undecodable or as not verifying, never accepted.
    EXPECT_THAT(verifier->Verify(WithPart(token, 2, sig.substr(0, sig.size() - 4))),
                StatusIs(kUnauth, HasSubstr("signature")));
  }
  // An ES256 signature in DER (what openssl emits) instead of r||s is refused.
  const std::string es = Mint("ES256", Claims(), "ec-1");
  EXPECT_THAT(verifier->Verify(WithPart(es, 2, B64(std::string(71, '\x30')))),
              StatusIs(kUnauth, HasSubstr("64 bytes")));
}

TEST_F(JwtVerifierTest, RejectsNonCanonicalBase64Signature) {
  auto verifier = MakeVerifier();
  const std::string token = Mint("HS256", Claims());
  std::string sig = std::vector<std::string>(absl::StrSplit(token, '.'))[2];
  // 32 bytes = 43 characters, whose last carries 2 unused bits: set one.
  static constexpr absl::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  sig.back() = kAlphabet[kAlphabet.find(sig.back()) | 1];
  EXPECT_THAT(verifier->Verify(WithPart(token, 2, sig)),
              StatusIs(kUnauth, "malformed token: signature is not unpadded base64url"));
  EXPECT_THAT(verifier->Verify(token + "="),
              StatusIs(kUnauth, "malformed token: signature is not unpadded base64url"));
}

// ---- time, audience, issuer ---------------------------------------------------------

TEST_F(JwtVerifierTest, RejectsExpiredTokenBeyondLeeway) {
  auto verifier = MakeVerifier();
  const auto claims = [](int64_t exp) {
    return absl::StrCat(R"({"aud":"authenticated","exp":)", exp, "}");
  };
  EXPECT_THAT(verifier->Verify(Mint("HS256", claims(kNow - 31))),
              StatusIs(kUnauth, "token expired at 2025-12-31T23:59:29Z"));
  EXPECT_OK(verifier->Verify(Mint("HS256", claims(kNow - 29))));  // within the 30 s leeway
  clock_.now_ms = (kNow + 3600 + 30) * 1000;
  EXPECT_THAT(verifier->Verify(Mint("HS256", Claims())),
              StatusIs(kUnauth, "token expired at 2026-01-01T01:00:00Z"));
  EXPECT_THAT(verifier->Verify(Mint("HS256", R"({"aud":"authenticated"})")),
              StatusIs(kUnauth, "token has no exp claim"));
  EXPECT_THAT(verifier->Verify(Mint("HS256", R"({"aud":"authenticated","exp":"soon"})")),
              StatusIs(kUnauth, HasSubstr("exp is not a valid NumericDate")));
}

TEST_F(JwtVerifierTest, RejectsTokenNotYetValid) {
  auto verifier = MakeVerifier();
  EXPECT_THAT(verifier->Verify(Mint("HS256", Claims(absl::StrCat(",\"nbf\":", kNow + 60)))),
              StatusIs(kUnauth, "token not valid before 2026-01-01T00:01:00Z"));
  EXPECT_OK(verifier->Verify(Mint("HS256", Claims(absl::StrCat(",\"nbf\":", kNow + 20)))));
}

TEST_F(JwtVerifierTest, RejectsTokenIssuedInTheFuture) {
  auto verifier = MakeVerifier();
  const std::string claims =
      absl::StrCat(R"({"aud":"authenticated","exp":)", kNow + 3600, ",\"iat\":", kNow + 60, "}");
  EXPECT_THAT(verifier->Verify(Mint("HS256", claims)),
              StatusIs(kUnauth, "token issued in the future, at 2026-01-01T00:01:00Z"));
}

TEST_F(JwtVerifierTest, RejectsWrongAudience) {
  auto verifier = MakeVerifier();
  EXPECT_THAT(
      verifier->Verify(Mint("HS256", absl::StrCat(R"({"aud":"anon-app","exp":)", kNow + 60, "}"))),
      StatusIs(kUnauth, "audience \"anon-app\" not accepted (expected \"authenticated\")"));
  EXPECT_THAT(
      verifier->Verify(Mint("HS256", absl::StrCat(R"({"aud":["a","b"],"exp":)", kNow + 60, "}"))),
      StatusIs(kUnauth, HasSubstr("audience \"a\", \"b\" not accepted")));
  EXPECT_THAT(verifier->Verify(Mint("HS256", absl::StrCat(R"({"exp":)", kNow + 60, "}"))),
              StatusIs(kUnauth, HasSubstr("token has no audience")));
  EXPECT_THAT(verifier->Verify(Mint("HS256", absl::StrCat(R"({"aud":7,"exp":)", kNow + 60, "}"))),
              StatusIs(kUnauth, HasSubstr("malformed token: claim aud")));
}

TEST_F(JwtVerifierTest, RejectsWrongIssuer) {
  options_.issuer = absl::StrCat("https://", kRef, ".supabase.co/auth/v1");
  auto verifier = MakeVerifier();
  EXPECT_THAT(verifier->Verify(Mint("HS256", Claims(R"(,"iss":"https://evil.example/auth/v1")"))),
              StatusIs(kUnauth, HasSubstr("issuer \"https://evil.example/auth/v1\" not accepted")));
  EXPECT_THAT(verifier->Verify(Mint("HS256", Claims())),
              StatusIs(kUnauth, HasSubstr("token has no iss claim")));
}

// ---- malformed input ------------------------------------------------------------------

TEST_F(JwtVerifierTest, RejectsMalformedTokens) {
  auto verifier = MakeVerifier();
  const std::string good = Mint("HS256", Claims());
  const std::vector<std::string> parts = absl::StrSplit(good, '.');
  const auto expect_malformed = [&](const std::string& token, absl::string_view why) {
    EXPECT_THAT(verifier->Verify(token),
                StatusIs(kUnauth, HasSubstr(absl::StrCat("malformed token: ", why))))
        << token;
  };
  expect_malformed("", "empty token");
  expect_malformed(parts[0] + "." + parts[1], "expected 3 dot-separated parts, found 2");
  expect_malformed(good + ".x", "expected 3 dot-separated parts, found 4");
  expect_malformed("not a token", "expected 3");
  expect_malformed(WithPart(good, 0, "e!J0"), "header is not unpadded base64url");
  expect_malformed(WithPart(good, 0, parts[0] + "=="), "header is not unpadded base64url");
  expect_malformed(WithPart(good, 0, ""), "header is not unpadded base64url");
  expect_malformed(WithPart(good, 0, "A"), "header is not unpadded base64url");
  expect_malformed(WithPart(good, 0, B64("{\"alg\":")), "header is not JSON");
  expect_malformed(WithPart(good, 0, B64("[\"HS256\"]")), "header is not a JSON object");
  expect_malformed(WithPart(good, 0, B64("{}")), "header has no alg");
  expect_malformed(WithPart(good, 0, B64(R"({"alg":"HS256","kid":5})")),
                   "header kid is not a string");
  expect_malformed(WithPart(good, 1, parts[1] + "*"), "payload is not unpadded base64url");
  expect_malformed(WithPart(good, 1, B64("{\"exp\":1")), "payload is not JSON");
  expect_malformed(WithPart(good, 1, B64("[1,2]")), "claims are not a JSON object");
  expect_malformed(WithPart(good, 2, ""), "empty signature");
  expect_malformed(WithPart(good, 2, "ab+/"), "signature is not unpadded base64url");
  // A well-signed token whose claims are not an object is refused as well.
  expect_malformed(Mint("HS256", "\"just a string\""), "claims are not a JSON object");
  expect_malformed(Mint("HS256", absl::StrCat(R"({"sub":42,"aud":"authenticated","exp":)",
                                              kNow + 60, "}")),
                   "claim sub is not a string");
}

TEST_F(JwtVerifierTest, RejectsOversizedTokensAndDeepJson) {
  auto verifier = MakeVerifier();
  const std::string big =
      Mint("HS256", Claims(absl::StrCat(",\"pad\":\"", std::string(6500, 'x'), "\"")));
  ASSERT_GT(big.size(), 8192u);
  EXPECT_THAT(verifier->Verify(big), StatusIs(kUnauth, HasSubstr("exceeds the limit of 8192")));
  options_.max_token_bytes = 16 * 1024;
  EXPECT_OK(MakeVerifier()->Verify(big));

  std::string deep = "1";
  for (int i = 0; i < 40; ++i) deep = "[" + deep + "]";
  EXPECT_THAT(verifier->Verify(Mint("HS256", Claims(",\"deep\":" + deep))),
              StatusIs(kUnauth, HasSubstr("malformed token: payload is not JSON")));
}

// ---- the key set ----------------------------------------------------------------------

TEST_F(JwtVerifierTest, ReplacesJwksAtomicallyAndKeepsOldSetOnError) {
  auto verifier = MakeVerifier();
  EXPECT_EQ(verifier->jwks_key_count(), 2u);
  const std::string rs = Mint("RS256", Claims(), "rsa-1");
  const std::string rotated = Mint("RS256", Claims(), "rsa-2");
  ASSERT_OK(verifier->Verify(rs));
  EXPECT_THAT(verifier->Verify(rotated), StatusIs(kUnauth, "unknown key id \"rsa-2\""));

  ASSERT_OK(verifier->SetJwks(absl::StrCat(R"({"keys":[)", RsaJwk("rsa-2"), "]}")));
  EXPECT_EQ(verifier->jwks_key_count(), 1u);
  EXPECT_OK(verifier->Verify(rotated));
  EXPECT_THAT(verifier->Verify(rs), StatusIs(kUnauth, "unknown key id \"rsa-1\""));
  EXPECT_OK(verifier->Verify(Mint("HS256", Claims())));  // secrets kept

  EXPECT_THAT(verifier->SetJwks("{\"keys\":"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_OK(verifier->Verify(rotated));  // the previous set is still in force

  ASSERT_OK(verifier->SetHs256Secrets({"a-new-secret-a-new-secret-a-new!"}));
  EXPECT_THAT(verifier->Verify(Mint("HS256", Claims())),
              StatusIs(kUnauth, "signature does not verify"));
  EXPECT_OK(verifier->Verify(rotated));  // JWKS kept
  EXPECT_THAT(verifier->SetHs256Secrets({""}), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(JwtVerifierTest, LoadsOnlyUsableJwksKeysAndRefusesBadOnes) {
  auto verifier = MakeVerifier();
  // Other kinds, encryption keys, other algorithms and curves are skipped.
  const std::string mixed = absl::StrCat(
      R"({"keys":[{"kty":"oct","kid":"o","k":"c2VjcmV0"},)",
      R"({"kty":"OKP","kid":"ed","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},)",
      R"({"kty":"RSA","kid":"enc","use":"enc","n":")", *rsa_n_, R"(","e":")", *rsa_e_, R"("},)",
      R"({"kty":"RSA","kid":"ps","alg":"PS256","n":")", *rsa_n_, R"(","e":")", *rsa_e_, R"("},)",
      R"({"kty":"EC","kid":"p384","crv":"P-384","x":"AA","y":"AA"},)", EcJwk("ec-1"), "]}");
  ASSERT_OK(verifier->SetJwks(mixed));
  EXPECT_EQ(verifier->jwks_key_count(), 1u);
  EXPECT_THAT(verifier->Verify(Mint("RS256", Claims(), "enc")),
              StatusIs(kUnauth, "unknown key id \"enc\""));

  const auto refused = [&](const std::string& jwks, absl::string_view why) {
    EXPECT_THAT(verifier->SetJwks(jwks),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(why)))
        << jwks;
  };
  refused("[]", "\"keys\" array");
  refused(R"({"keys":[{"kid":"a"}]})", "has no \"kty\"");
  refused(absl::StrCat(R"({"keys":[)", RsaJwk("a"), ",", RsaJwk("a"), "]}"), "duplicate kid");
  refused(absl::StrCat(R"({"keys":[{"kty":"RSA","n":")", *rsa_n_, R"(","e":"AQAB"}]})"),
          "has no \"kid\"");
  refused(R"({"keys":[{"kty":"RSA","kid":"small","n":"AQAB","e":"AQAB"}]})", "below 2048");
  refused(absl::StrCat(R"({"keys":[{"kty":"EC","kid":"off","crv":"P-256","x":")", *ec_x_,
                       R"(","y":")", *ec_x_, R"("}]})"),
          "kid \"off\"");  // (x, x) is not on the curve
  refused(absl::StrCat(R"({"keys":[{"kty":"EC","kid":"priv","crv":"P-256","x":")", *ec_x_,
                       R"(","y":")", *ec_y_, R"(","d":"AAAA"}]})"),
          "private key material");
  EXPECT_EQ(verifier->jwks_key_count(), 1u);  // unchanged by the refusals
}

TEST_F(JwtVerifierTest, VerifiesConcurrentlyWhileTheKeySetIsReplaced) {
  auto verifier = MakeVerifier();
  const std::string rs = Mint("RS256", Claims(), "rsa-1");
  const std::string es = Mint("ES256", Claims(), "ec-1");
  const std::string hs = Mint("HS256", Claims());
  const std::string with_rsa = Jwks();
  const std::string without_rsa = absl::StrCat(R"({"keys":[)", EcJwk("ec-1"), "]}");
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        if (!verifier->Verify(es).ok() || !verifier->Verify(hs).ok()) ++failures;
        auto r = verifier->Verify(rs);
        if (!r.ok() && r.status().message() != "unknown key id \"rsa-1\"") ++failures;
      }
    });
  }
  for (int i = 0; i < 50; ++i) {
    ASSERT_OK(verifier->SetJwks(i % 2 == 0 ? without_rsa : with_rsa));
  }
  stop = true;
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace pulsesync
