// Verification of Supabase Auth access tokens (JWS compact serialization, RFC
// 7515/7519), with OpenSSL behind the implementation.
//
// Accepted algorithms, and nothing else:
//   HS256  HMAC-SHA256 with a shared secret (Supabase's legacy "JWT secret").
//   RS256  RSASSA-PKCS1-v1_5 SHA-256 with an RSA public key from a JWKS.
//   ES256  ECDSA P-256 SHA-256 with an EC public key from a JWKS; the signature
//          is the raw 64-byte r||s of RFC 7518 section 3.4.
//
// Invariants (each has a test in tests/unit/jwt_test.cc):
//  1. The algorithm in the header chooses the kind of key, never the other way
//     round: HS256 is checked only against the configured secrets, never against
//     the bytes of a public key (the classic RS256 -> HS256 confusion); RS256 only
//     with a JWKS key of kty RSA, ES256 only with a kty EC, crv P-256 key.
//  2. `alg: none`, any other algorithm, and any `crit` header are refused.
//  3. RS256 and ES256 tokens must name their key with `kid`; an unknown kid is an
//     error, never a fallback to another key. HS256 tokens may carry no kid, or a
//     kid that is not in the JWKS (Supabase puts one on tokens signed with the
//     legacy secret); a kid that names a JWKS public key is refused (invariant 1).
//  4. Every failure of Verify is kUnauthenticated with a human-readable reason;
//     nothing about the token is trusted before its signature has verified, and
//     the time and audience checks run only after it has.
//  5. Base64url is strict: no padding, no characters outside the url-safe
//     alphabet, no non-zero trailing bits (so one token has exactly one spelling).
#ifndef PULSESYNC_COMMON_JWT_H_
#define PULSESYNC_COMMON_JWT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/json.h"

namespace pulsesync {

// What Verify returns for a token whose signature and claims check out.
struct VerifiedToken {
  std::string alg;          // "HS256", "RS256" or "ES256"
  std::string kid;          // from the header; empty when absent
  std::string claims_json;  // the decoded payload, byte for byte as signed
  JsonValue claims;         // the same, parsed; always an object
  // Convenience copies of registered / Supabase claims ("" or empty when absent).
  std::string sub;                 // Supabase: the user's uuid
  std::string role;                // Supabase: anon, authenticated, service_role
  std::string iss;
  std::vector<std::string> aud;    // `aud` as a list, whether string or array
  int64_t exp = 0;                 // seconds since the Unix epoch (required)
};

struct JwtVerifierOptions {
  // HS256 secrets, raw bytes as Supabase shows them (not base64-decoded). More
  // than one during a rotation; a token verifies if any of them verifies it.
  std::vector<std::string> hs256_secrets;
  // A JWKS document (RFC 7517) with the RS256/ES256 public keys; "" for none.
  std::string jwks_json;
  // A token must carry at least one of these in `aud`. Empty: `aud` unchecked.
  std::vector<std::string> audiences = {"authenticated"};
  // When non-empty, `iss` must equal it, e.g. "https://<ref>.supabase.co/auth/v1".
  std::string issuer;
  // Tolerance for clock skew in the exp, nbf and iat checks.
  absl::Duration leeway = absl::Seconds(30);
  // Not owned; must outlive the verifier.
  const WallClock* clock = &WallClock::Real();
  // Longer tokens are refused before any decoding.
  size_t max_token_bytes = 8 * 1024;
  // Nesting limit for the header and claims JSON.
  int max_json_depth = 16;
  // When set, called on the verifying thread when an RS256/ES256 token
  // names a key id that is not in the current set, just before Verify fails
  // with "unknown key id": a JWKS refresher uses it to fetch the set early
  // after a key rotation. The kid is unauthenticated input (an attacker's
  // choice); the hook must not block, and should rate-limit what it does.
  std::function<void(absl::string_view kid)> on_unknown_kid;
};

// Verifies JWTs against a key set that can be replaced while in use (JWKS
// refresh, secret rotation).
//
// Thread safety: all methods may be called concurrently. Verify never blocks on
// a replacement for longer than a shared_ptr copy: it works on a snapshot of the
// key set, so a token is checked against either the old or the new set, never a
// mix of both.
class JwtVerifier {
 public:
  // Loads the secrets and the JWKS. kInvalidArgument if a secret is unusable or the
  // JWKS is not a valid document (see SetJwks); the audiences, issuer, leeway
  // and limits are fixed for the verifier's lifetime.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<JwtVerifier>> Create(
      JwtVerifierOptions options);
  ~JwtVerifier();
  JwtVerifier(const JwtVerifier&) = delete;
  JwtVerifier& operator=(const JwtVerifier&) = delete;

  // Checks `token` (the compact form, without "Bearer "). Success returns its
  // claims; every failure is kUnauthenticated with the reason in the message,
  // e.g. "token expired at 2026-01-02T03:04:05Z", "unknown key id \"k2\"",
  // "algorithm none is not accepted", "signature does not verify",
  // "audience \"x\" not accepted", "malformed token: ...".
  [[nodiscard]] absl::StatusOr<VerifiedToken> Verify(absl::string_view token) const;

  // Replaces the JWKS keys atomically, keeping the HS256 secrets. The document
  // must be an object with a "keys" array. Keys with kty RSA (n, e; at least
  // 2048 bits) and EC (crv P-256, x, y) need a unique kid; a key whose `use` is
  // not "sig" or whose `alg` is not RS256/ES256 respectively is skipped, as are
  // keys of other kinds (RFC 7517 section 5). On error (kInvalidArgument, naming
  // the key) the previous key set stays in force.
  [[nodiscard]] absl::Status SetJwks(absl::string_view jwks_json);
  // Replaces the HS256 secrets atomically, keeping the JWKS keys.
  // kInvalidArgument (and no change) if one of them is empty or is a PEM key.
  [[nodiscard]] absl::Status SetHs256Secrets(std::vector<std::string> secrets);

  // The number of usable JWKS public keys in the current set.
  size_t jwks_key_count() const;

 private:
  struct KeySet;
  explicit JwtVerifier(JwtVerifierOptions options);
  std::shared_ptr<const KeySet> Snapshot() const;

  const JwtVerifierOptions options_;  // jwks_json and hs256_secrets unused after Create
  mutable std::mutex mu_;
  std::shared_ptr<const KeySet> keys_;  // GUARDED_BY(mu_); never null after Create
  std::mutex update_mu_;                // serializes SetJwks / SetHs256Secrets
};

// TEST ONLY: signs `claims_json` (used as the payload verbatim) with HS256 and
// returns the compact token, header {"alg":"HS256","typ":"JWT"} plus "kid" when
// given. For tests of modules that need a valid token; production never mints
// tokens (Supabase Auth does).
std::string SignHs256ForTest(absl::string_view claims_json, absl::string_view secret,
                             absl::string_view kid = "");

}  // namespace pulsesync

#endif  // PULSESYNC_COMMON_JWT_H_
