// libFuzzer harness: JWT verification (common/jwt.h), the first thing that
// reads a caller's bytes. The first input byte picks what the rest is:
//   0  a token, verified against an HS256 secret and a JWKS with an RSA and
//      an EC key (the seed corpus has valid tokens of all three kinds);
//   1  a JWKS document: loaded, then used to verify a fixed RS256 token;
//   2  a claims payload, signed with the secret by SignHs256ForTest and
//      verified, so that the claim checks after the signature are reached.
// Checked, beyond "no crash, no leak, no undefined behaviour": a verified
// token's claims are an object with an exp in the future, and in mode 2
// they are the input byte for byte.
//
// The JWKS keys were generated once for this harness (private keys
// discarded after signing the seed tokens); the clock is fixed at
// 2023-11-14T22:13:20Z, when the seed tokens are valid.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "common/clock.h"
#include "common/jwt.h"

namespace {

constexpr int64_t kNowMs = 1700000000000;
constexpr char kSecret[] = "fuzz-hs256-secret-0123456789abcdef";
constexpr char kJwks[] =
    R"({"keys":[{"kty":"RSA","kid":"rsa-1","use":"sig","alg":"RS256","n":"nWE-rkeugTOU2QSq0jiqhIxeOsTb63ZcBMTBnjCfaZxoWYK08RuN9BKkgv81apeTBBF01_2FszAtb6S235CWTCkUz3EZu4TiiciuTXsYNUcTLVCdsQqfmSXi2YLQ1BkdVO1i1MkGYJVx3bxMwb9QPoxz2bxX7-QkhHiuRz3Xo8OeFrJe7vBfL8hA-gQUrzdlVmLY6tTm8iCqc660P6OlAoSd7oFWisNjFSgPbfWpjNsem5sMjBSwetvQHndixCZb0Srwrj3WnvOvd4rL7empMQDq4yzKK8O5UCAizaq7O8ufh2jOEKWSz1JirlyfbDBElzFd26tdi73aYcBFN2-C4w","e":"AQAB"},{"kty":"EC","kid":"ec-1","use":"sig","alg":"ES256","crv":"P-256","x":"9gCjL5AStjJULcHX5ZcQwbTm56EMOKTWstZw9IXMEP4","y":"L9UMIlx0aViS6MekqlGPaOT9QyMx4EZsUj39VUQjQYw"}]})";
// Signed with the private key of "rsa-1" (claims as in corpus/jwt).
constexpr char kRs256Token[] =
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InJzYS0xIn0.eyJzdWIiOiIxMTExMTExMS0xMTExLTQxMTEtODExMS0xMTExMTExMTExMTEiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImF1ZCI6ImF1dGhlbnRpY2F0ZWQiLCJpc3MiOiJodHRwczovL2Z1enouc3VwYWJhc2UuY28vYXV0aC92MSIsImlhdCI6MTY5OTk5OTk0MCwiZXhwIjoxNzAwMDAzNjAwLCJlbWFpbCI6ImFAZXhhbXBsZS5jb20iLCJhcHBfbWV0YWRhdGEiOnsicHJvdmlkZXIiOiJlbWFpbCJ9fQ.i_fic62tM7RLUj-hN0VBm-q122qQSRQBgDthaIptmzFu8feaA8VDu-Z-tOGFmTdGVo2Io7ceJcR0uGpcFu-JYI3jm95bXAPsUBQlKWXTuLKrBH-25AHmnazZ2PrgNmJpQlFFNiYAaeG6zYH_Y7DTW-tStIHuGUEIzSy8rgN4h291J0LIZQP_srLBBPN6Y2c9RJSBd_sHbt7klJ5QGWmEC911qZ99Fd4kh6Bt5-bm9FbiXnS2FFLZfMLPJND0fPBaUAThu41rwRBTtndcH_CRKr6AIaz-oZLtG2orysm4YTMW98uFINQTWz6mOxUPQ_ReVKehRckuvAIrqMlHG3Iidw";

class FixedClock final : public pulsesync::WallClock {
 public:
  int64_t NowMs() const override { return kNowMs; }
};

pulsesync::JwtVerifierOptions Options(std::string jwks) {
  static const FixedClock clock;
  pulsesync::JwtVerifierOptions options;
  options.hs256_secrets = {kSecret};
  options.jwks_json = std::move(jwks);
  options.clock = &clock;
  return options;
}

const pulsesync::JwtVerifier& Verifier() {
  static const pulsesync::JwtVerifier* verifier = [] {
    auto v = pulsesync::JwtVerifier::Create(Options(kJwks));
    if (!v.ok() || (*v)->jwks_key_count() != 2) std::abort();
    return v->release();
  }();
  return *verifier;
}

void CheckVerified(const pulsesync::VerifiedToken& token) {
  if (!token.claims.is_object()) std::abort();
  if (token.exp * 1000 + 30000 <= kNowMs) std::abort();  // expired, beyond the leeway
  if (token.alg != "HS256" && token.alg != "RS256" && token.alg != "ES256") std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const absl::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0: {
      auto verified = Verifier().Verify(rest);
      if (verified.ok()) CheckVerified(*verified);
      break;
    }
    case 1: {
      auto verifier = pulsesync::JwtVerifier::Create(Options(std::string(rest)));
      if (verifier.ok()) {
        auto verified = (*verifier)->Verify(kRs256Token);
        if (verified.ok()) CheckVerified(*verified);
      }
      break;
    }
    case 2: {
      const std::string token = pulsesync::SignHs256ForTest(rest, kSecret);
      auto verified = Verifier().Verify(token);
      if (verified.ok()) {
        CheckVerified(*verified);
        if (verified->claims_json != rest) std::abort();
      }
      break;
    }
  }
  return 0;
}
