#include "tests/testing/openssl_jwt.h"

#include <stdlib.h>

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/testing/subprocess.h"

namespace pulsesync::testing {
namespace {

// Generates an RSA-2048 and a P-256 key pair with openssl and prints the JWK
// members (n, e, x, y) as base64url, one "name=value" a line.
constexpr char kKeygenScript[] = R"sh(
set -e
cd "$DIR"
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '=\n'; }
hex2bin() { perl -e 'print pack("H*", $ARGV[0])' "$1"; }
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem 2>/dev/null
openssl pkey -in rsa.pem -pubout -out rsa.pub.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.pem
openssl pkey -in ec.pem -pubout -outform DER -out ec.pub.der
n=$(openssl rsa -in rsa.pem -noout -modulus | cut -d= -f2)
e=$(openssl rsa -in rsa.pem -noout -text | sed -n 's/^publicExponent: [0-9]* (0x\([0-9a-fA-F]*\))$/\1/p')
if [ $(( ${#e} % 2 )) -eq 1 ]; then e="0$e"; fi
echo "n=$(hex2bin "$n" | b64url)"
echo "e=$(hex2bin "$e" | b64url)"
# A P-256 SubjectPublicKeyInfo ends with the point 04 || x || y.
echo "x=$(tail -c 64 ec.pub.der | head -c 32 | b64url)"
echo "y=$(tail -c 32 ec.pub.der | b64url)"
)sh";

// Mints one token: JWT_HEADER and JWT_CLAIMS verbatim, signed per JWT_ALG.
// openssl's DER ECDSA signature becomes JWS's raw r||s (32 bytes each) by way
// of `openssl asn1parse`, which prints each INTEGER in hex.
constexpr char kMintScript[] = R"sh(
set -e
cd "$DIR"
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '=\n'; }
input="$(printf '%s' "$JWT_HEADER" | b64url).$(printf '%s' "$JWT_CLAIMS" | b64url)"
printf '%s' "$input" > input
case "$JWT_ALG" in
  HS256) openssl dgst -sha256 -hmac "$JWT_SECRET" -binary -out sig input ;;
  RS256) openssl dgst -sha256 -sign rsa.pem -out sig input ;;
  ES256)
    openssl dgst -sha256 -sign ec.pem -out sig.der input
    hex=$(openssl asn1parse -inform DER -in sig.der |
          awk -F: '/INTEGER/ { v = $NF; while (length(v) < 64) v = "0" v; printf "%s", v }')
    perl -e 'print pack("H*", $ARGV[0])' "$hex" > sig ;;
  *) exit 2 ;;
esac
printf '%s.%s' "$input" "$(b64url < sig)"
)sh";

}  // namespace

absl::StatusOr<OpensslJwtKeys> OpensslJwtKeys::Generate() {
  OpensslJwtKeys keys;
  keys.dir = MakeTempDir("openssl-jwt");
  absl::StatusOr<CommandResult> result = RunCommand({"sh", "-c", kKeygenScript}, {"DIR=" + keys.dir});
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    return absl::InternalError(absl::StrCat("openssl key generation failed: ", result->errors));
  }
  for (absl::string_view line : absl::StrSplit(result->output, '\n', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    if (kv.first == "n") keys.rsa_n = kv.second;
    if (kv.first == "e") keys.rsa_e = kv.second;
    if (kv.first == "x") keys.ec_x = kv.second;
    if (kv.first == "y") keys.ec_y = kv.second;
  }
  if (keys.rsa_n.empty() || keys.rsa_e.empty() || keys.ec_x.empty() || keys.ec_y.empty()) {
    return absl::InternalError("could not read the JWK members: " + result->output);
  }
  return keys;
}

std::string OpensslJwtKeys::RsaJwk(absl::string_view kid) const {
  return absl::StrCat(R"({"kty":"RSA","kid":")", kid, R"(","use":"sig","alg":"RS256","n":")",
                      rsa_n, R"(","e":")", rsa_e, R"("})");
}

std::string OpensslJwtKeys::EcJwk(absl::string_view kid) const {
  return absl::StrCat(R"({"kty":"EC","kid":")", kid, R"(","crv":"P-256","x":")", ec_x,
                      R"(","y":")", ec_y, R"("})");
}

absl::StatusOr<std::string> OpensslJwtKeys::Mint(absl::string_view alg,
                                                 absl::string_view claims_json,
                                                 absl::string_view kid, absl::string_view secret,
                                                 std::string header_json) const {
  if (header_json.empty()) {
    header_json = absl::StrCat(R"({"alg":")", alg, R"(","typ":"JWT")",
                               kid.empty() ? "" : absl::StrCat(R"(,"kid":")", kid, "\""), "}");
  }
  absl::StatusOr<CommandResult> result = RunCommand(
      {"sh", "-c", kMintScript},
      {"DIR=" + dir, absl::StrCat("JWT_ALG=", alg), "JWT_HEADER=" + header_json,
       absl::StrCat("JWT_CLAIMS=", claims_json), absl::StrCat("JWT_SECRET=", secret)});
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    return absl::InternalError(absl::StrCat("openssl minting failed: ", result->errors));
  }
  return result->output;
}

}  // namespace pulsesync::testing
