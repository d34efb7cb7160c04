// JWT key pairs and tokens made by the `openssl` command line (plus sh and
// perl): an implementation independent of common/jwt, run at test time in a
// temporary directory, so no key material is ever committed.
#ifndef PULSESYNC_TESTS_TESTING_OPENSSL_JWT_H_
#define PULSESYNC_TESTS_TESTING_OPENSSL_JWT_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pulsesync::testing {

// An RSA-2048 and a P-256 key pair. Copyable (the files stay in `dir`).
struct OpensslJwtKeys {
  // Generates both pairs in a new temporary directory.
  static absl::StatusOr<OpensslJwtKeys> Generate();

  // The public keys as JWKs under the given key ids ("use":"sig", and "alg"
  // for the RSA key), for a JWKS document.
  std::string RsaJwk(absl::string_view kid) const;
  std::string EcJwk(absl::string_view kid) const;

  // A compact JWS: `header_json` ("" = {"alg":alg,"typ":"JWT"} plus "kid"
  // when given) and `claims_json` verbatim, signed per `alg`: HS256 with
  // `secret`, RS256 or ES256 with the private keys.
  absl::StatusOr<std::string> Mint(absl::string_view alg, absl::string_view claims_json,
                                   absl::string_view kid = "", absl::string_view secret = "",
                                   std::string header_json = "") const;

  std::string dir;                   // rsa.pem, rsa.pub.pem, ec.pem, ...
  std::string rsa_n, rsa_e;          // JWK members, base64url
  std::string ec_x, ec_y;
};

}  // namespace pulsesync::testing

#endif  // PULSESYNC_TESTS_TESTING_OPENSSL_JWT_H_
