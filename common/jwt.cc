#include "common/jwt.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>

#include <cmath>
#include <map>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/status_macros.h"

namespace pulsesync {
namespace {

constexpr size_t kHs256Bytes = 32;
constexpr size_t kP256CoordinateBytes = 32;
constexpr int kMinRsaBits = 2048;
// NumericDate bounds: 0 .. 9999-12-31T23:59:59Z, so that seconds * 1000 never
// overflows and every accepted date can be printed.
constexpr int64_t kMaxNumericDate = 253402300799;
// The header is a handful of strings; JWKS documents are two levels deep.
constexpr int kHeaderDepth = 4;
constexpr int kJwksDepth = 8;

enum class Alg { kHs256, kRs256, kEs256 };
enum class KeyKind { kRsa, kEc };

const char* KeyKindName(KeyKind kind) { return kind == KeyKind::kRsa ? "an RSA" : "an EC P-256"; }

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct BnDeleter {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
struct ParamBldDeleter {
  void operator()(OSSL_PARAM_BLD* p) const { OSSL_PARAM_BLD_free(p); }
};
struct ParamDeleter {
  void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
};
struct PkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
struct EcdsaSigDeleter {
  void operator()(ECDSA_SIG* p) const { ECDSA_SIG_free(p); }
};

struct PublicKey {
  KeyKind kind;
  std::shared_ptr<EVP_PKEY> pkey;  // immutable once built; shared by key-set copies
};

absl::Status Unauthenticated(absl::string_view reason) {
  return absl::UnauthenticatedError(reason);
}
absl::Status Malformed(absl::string_view what) {
  return absl::UnauthenticatedError(absl::StrCat("malformed token: ", what));
}

int Base64UrlValue(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

// Strict RFC 7515 base64url: url-safe alphabet only, no padding, no length of
// 1 mod 4, and zero trailing bits.
bool Base64UrlDecode(absl::string_view in, std::string* out) {
  out->clear();
  if (in.size() % 4 == 1) return false;
  out->reserve(in.size() * 3 / 4);
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : in) {
    const int v = Base64UrlValue(c);
    if (v < 0) return false;
    buffer = (buffer << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<char>((buffer >> bits) & 0xFF));
      buffer &= (1u << bits) - 1;
    }
  }
  return buffer == 0;  // the 2 or 4 leftover bits
}

const unsigned char* Bytes(absl::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

std::string HmacSha256(absl::string_view key, absl::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), Bytes(data), data.size(),
           mac, &mac_len) == nullptr) {
    ERR_clear_error();
    return std::string();
  }
  return std::string(reinterpret_cast<const char*>(mac), mac_len);
}

std::string FormatUnixSeconds(int64_t seconds) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(seconds),
                          absl::UTCTimeZone());
}

// A NumericDate claim (RFC 7519 section 2): an integer or fractional number of
// seconds; fractions are truncated toward the past.
absl::StatusOr<int64_t> NumericDate(const JsonValue& v, absl::string_view name) {
  std::optional<int64_t> seconds;
  if (v.type() == JsonValue::Type::kNumber) {
    seconds = v.AsInt64();
    double d = 0;
    if (!seconds && absl::SimpleAtod(v.text(), &d) && std::isfinite(d) && d >= 0 &&
        d <= static_cast<double>(kMaxNumericDate)) {
      seconds = static_cast<int64_t>(std::floor(d));
    }
  }
  if (!seconds || *seconds < 0 || *seconds > kMaxNumericDate) {
    return Malformed(absl::StrCat("claim ", name, " is not a valid NumericDate"));
  }
  return *seconds;
}

absl::StatusOr<std::string> OptionalStringClaim(const JsonValue& claims, absl::string_view name) {
  const JsonValue* v = claims.Find(name);
  if (v == nullptr) return std::string();
  if (!v->is_string()) return Malformed(absl::StrCat("claim ", name, " is not a string"));
  return v->text();
}

std::string QuotedList(const std::vector<std::string>& items) {
  return absl::StrJoin(items, ", ", [](std::string* out, const std::string& s) {
    absl::StrAppend(out, JsonQuote(s));
  });
}

// ---- JWKS loading ----------------------------------------------------------

absl::StatusOr<std::string> JwkMember(const JsonValue& key, absl::string_view name,
                                      absl::string_view where) {
  const JsonValue* v = key.Find(name);
  if (v == nullptr || !v->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, " has no string \"", name, "\""));
  }
  std::string bytes;
  if (!Base64UrlDecode(v->text(), &bytes) || bytes.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": \"", name, "\" is not unpadded base64url"));
  }
  return bytes;
}

absl::StatusOr<std::shared_ptr<EVP_PKEY>> PkeyFromParams(const char* type, OSSL_PARAM_BLD* bld,
                                                         absl::string_view where) {
  std::unique_ptr<OSSL_PARAM, ParamDeleter> params(OSSL_PARAM_BLD_to_param(bld));
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter> ctx(
      EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* raw = nullptr;
  if (params == nullptr || ctx == nullptr || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(where, " is not a valid public key"));
  }
  std::shared_ptr<EVP_PKEY> pkey(raw, PkeyDeleter());
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter> check(
      EVP_PKEY_CTX_new_from_pkey(nullptr, pkey.get(), nullptr));
  if (check == nullptr || EVP_PKEY_public_check(check.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(where, " fails the public key check"));
  }
  return pkey;
}

absl::StatusOr<std::shared_ptr<EVP_PKEY>> RsaKey(const JsonValue& jwk, absl::string_view where) {
  PS_ASSIGN_OR_RETURN(std::string n, JwkMember(jwk, "n", where));
  PS_ASSIGN_OR_RETURN(std::string e, JwkMember(jwk, "e", where));
  std::unique_ptr<BIGNUM, BnDeleter> bn_n(BN_bin2bn(Bytes(n), static_cast<int>(n.size()), nullptr));
  std::unique_ptr<BIGNUM, BnDeleter> bn_e(BN_bin2bn(Bytes(e), static_cast<int>(e.size()), nullptr));
  if (bn_n == nullptr || bn_e == nullptr) return absl::InternalError("out of memory");
  if (BN_num_bits(bn_n.get()) < kMinRsaBits) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": RSA modulus of ",
                                                   BN_num_bits(bn_n.get()),
                                                   " bits is below ", kMinRsaBits));
  }
  if (!BN_is_odd(bn_e.get()) || BN_num_bits(bn_e.get()) < 2 || BN_num_bits(bn_e.get()) > 64) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": RSA exponent is not acceptable"));
  }
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldDeleter> bld(OSSL_PARAM_BLD_new());
  if (bld == nullptr || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
    return absl::InternalError("OSSL_PARAM_BLD failed");
  }
  return PkeyFromParams("RSA", bld.get(), where);
}

absl::StatusOr<std::shared_ptr<EVP_PKEY>> EcP256Key(const JsonValue& jwk,
                                                    absl::string_view where) {
  PS_ASSIGN_OR_RETURN(std::string x, JwkMember(jwk, "x", where));
  PS_ASSIGN_OR_RETURN(std::string y, JwkMember(jwk, "y", where));
  if (x.size() != kP256CoordinateBytes || y.size() != kP256CoordinateBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": P-256 coordinates must be 32 bytes each"));
  }
  // SEC 1 uncompressed point: 0x04 || x || y.
  std::string point = absl::StrCat("\x04", x, y);
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldDeleter> bld(OSSL_PARAM_BLD_new());
  if (bld == nullptr ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) !=
          1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) != 1) {
    return absl::InternalError("OSSL_PARAM_BLD failed");
  }
  return PkeyFromParams("EC", bld.get(), where);
}

using PublicKeyMap = std::map<std::string, PublicKey, std::less<>>;

absl::StatusOr<PublicKeyMap> ParseJwks(absl::string_view jwks_json) {
  PublicKeyMap keys;
  if (jwks_json.empty()) return keys;
  auto doc = ParseJson(jwks_json, kJwksDepth);
  if (!doc.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("JWKS is not valid JSON: ", doc.status().message()));
  }
  const JsonValue* list = doc->Find("keys");
  if (list == nullptr || list->type() != JsonValue::Type::kArray) {
    return absl::InvalidArgumentError("JWKS is not an object with a \"keys\" array");
  }
  for (size_t i = 0; i < list->items().size(); ++i) {
    const JsonValue& jwk = list->items()[i];
    std::string where = absl::StrCat("JWKS key #", i);
    if (!jwk.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, " is not an object"));
    const JsonValue* kty = jwk.Find("kty");
    if (kty == nullptr || !kty->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(where, " has no \"kty\""));
    }
    KeyKind kind;
    if (kty->text() == "RSA") {
      kind = KeyKind::kRsa;
    } else if (kty->text() == "EC") {
      kind = KeyKind::kEc;
    } else {
      continue;  // oct, OKP, ...: not a kind we verify with (RFC 7517 section 5)
    }
    const JsonValue* use = jwk.Find("use");
    if (use != nullptr && !(use->is_string() && use->text() == "sig")) continue;
    const JsonValue* alg = jwk.Find("alg");
    if (alg != nullptr &&
        !(alg->is_string() && alg->text() == (kind == KeyKind::kRsa ? "RS256" : "ES256"))) {
      continue;  // e.g. an RSA key for PS256 or RSA-OAEP
    }
    if (kind == KeyKind::kEc) {
      const JsonValue* crv = jwk.Find("crv");
      if (crv == nullptr || !crv->is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(where, " has no \"crv\""));
      }
      if (crv->text() != "P-256") continue;  // P-384 and others: not ES256
    }
    const JsonValue* kid = jwk.Find("kid");
    if (kid == nullptr || !kid->is_string() || kid->text().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(where, " has no \"kid\""));
    }
    where = absl::StrCat(where, " (kid ", JsonQuote(kid->text()), ")");
    if (jwk.Find("d") != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " contains private key material; publish only public keys"));
    }
    if (keys.count(kid->text()) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": duplicate kid"));
    }
    absl::StatusOr<std::shared_ptr<EVP_PKEY>> pkey =
        kind == KeyKind::kRsa ? RsaKey(jwk, where) : EcP256Key(jwk, where);
    if (!pkey.ok()) return pkey.status();
    keys.emplace(kid->text(), PublicKey{kind, *std::move(pkey)});
  }
  return keys;
}

absl::Status CheckSecrets(const std::vector<std::string>& secrets) {
  for (const std::string& s : secrets) {
    if (s.empty()) return absl::InvalidArgumentError("an HS256 secret is empty");
    // A public key configured as the shared secret is how the RS256 -> HS256
    // confusion attack usually becomes possible; refuse it outright.
    if (absl::StrContains(s, "-----BEGIN")) {
      return absl::InvalidArgumentError(
          "an HS256 secret is a PEM key; HS256 takes the shared secret, never a key file");
    }
  }
  return absl::OkStatus();
}

// ---- signatures ---------------------------------------------------------------

bool VerifyWithPkey(EVP_PKEY* pkey, absl::string_view signing_input, absl::string_view sig) {
  std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> md(EVP_MD_CTX_new());
  // For RSA keys the default padding is PKCS #1 v1.5, which is RS256.
  const bool ok =
      md != nullptr &&
      EVP_DigestVerifyInit_ex(md.get(), nullptr, "SHA256", nullptr, nullptr, pkey, nullptr) == 1 &&
      EVP_DigestVerify(md.get(), Bytes(sig), sig.size(), Bytes(signing_input),
                       signing_input.size()) == 1;
  ERR_clear_error();
  return ok;
}

// JWS ES256 signatures are r||s, 32 bytes each; OpenSSL wants DER.
std::optional<std::string> RawEcdsaToDer(absl::string_view raw) {
  std::unique_ptr<ECDSA_SIG, EcdsaSigDeleter> sig(ECDSA_SIG_new());
  BIGNUM* r = BN_bin2bn(Bytes(raw), kP256CoordinateBytes, nullptr);
  BIGNUM* s = BN_bin2bn(Bytes(raw) + kP256CoordinateBytes, kP256CoordinateBytes, nullptr);
  if (sig == nullptr || r == nullptr || s == nullptr || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
    BN_free(r);
    BN_free(s);
    return std::nullopt;
  }
  unsigned char* der = nullptr;
  const int len = i2d_ECDSA_SIG(sig.get(), &der);
  if (len <= 0) return std::nullopt;
  std::string out(reinterpret_cast<const char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

}  // namespace

struct JwtVerifier::KeySet {
  std::vector<std::string> secrets;
  PublicKeyMap public_keys;  // by kid
};

JwtVerifier::JwtVerifier(JwtVerifierOptions options) : options_(std::move(options)) {}
JwtVerifier::~JwtVerifier() = default;

absl::StatusOr<std::unique_ptr<JwtVerifier>> JwtVerifier::Create(JwtVerifierOptions options) {
  if (options.clock == nullptr) return absl::InvalidArgumentError("JwtVerifier needs a clock");
  if (options.leeway < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("JwtVerifier leeway must not be negative");
  }
  PS_RETURN_IF_ERROR(CheckSecrets(options.hs256_secrets));
  auto keys = std::make_shared<KeySet>();
  keys->secrets = options.hs256_secrets;
  PS_ASSIGN_OR_RETURN(keys->public_keys, ParseJwks(options.jwks_json));
  std::unique_ptr<JwtVerifier> verifier(new JwtVerifier(std::move(options)));
  verifier->keys_ = std::move(keys);
  return verifier;
}

std::shared_ptr<const JwtVerifier::KeySet> JwtVerifier::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return keys_;
}

absl::Status JwtVerifier::SetJwks(absl::string_view jwks_json) {
  PS_ASSIGN_OR_RETURN(PublicKeyMap public_keys, ParseJwks(jwks_json));
  std::lock_guard<std::mutex> update(update_mu_);
  auto keys = std::make_shared<KeySet>();
  keys->secrets = Snapshot()->secrets;
  keys->public_keys = std::move(public_keys);
  std::lock_guard<std::mutex> lock(mu_);
  keys_ = std::move(keys);
  return absl::OkStatus();
}

absl::Status JwtVerifier::SetHs256Secrets(std::vector<std::string> secrets) {
  PS_RETURN_IF_ERROR(CheckSecrets(secrets));
  std::lock_guard<std::mutex> update(update_mu_);
  auto keys = std::make_shared<KeySet>();
  keys->secrets = std::move(secrets);
  keys->public_keys = Snapshot()->public_keys;
  std::lock_guard<std::mutex> lock(mu_);
  keys_ = std::move(keys);
  return absl::OkStatus();
}

size_t JwtVerifier::jwks_key_count() const { return Snapshot()->public_keys.size(); }

absl::StatusOr<VerifiedToken> JwtVerifier::Verify(absl::string_view token) const {
  if (token.size() > options_.max_token_bytes) {
    return Malformed(absl::StrCat("token of ", token.size(), " bytes exceeds the limit of ",
                                  options_.max_token_bytes));
  }
  if (token.empty()) return Malformed("empty token");
  const std::vector<absl::string_view> parts = absl::StrSplit(token, '.');
  if (parts.size() != 3) {
    return Malformed(absl::StrCat("expected 3 dot-separated parts, found ", parts.size()));
  }
  const absl::string_view signing_input = token.substr(0, parts[0].size() + 1 + parts[1].size());

  // Structure first (cheap, and gives precise reasons); nothing decoded here is
  // trusted until the signature has verified.
  std::string header_text;
  if (parts[0].empty() || !Base64UrlDecode(parts[0], &header_text)) {
    return Malformed("header is not unpadded base64url");
  }
  auto header = ParseJson(header_text, kHeaderDepth);
  if (!header.ok()) return Malformed(absl::StrCat("header is not JSON: ", header.status().message()));
  if (!header->is_object()) return Malformed("header is not a JSON object");
  const JsonValue* alg_value = header->Find("alg");
  if (alg_value == nullptr || !alg_value->is_string()) return Malformed("header has no alg");
  const std::string& alg_name = alg_value->text();
  Alg alg;
  if (alg_name == "HS256") {
    alg = Alg::kHs256;
  } else if (alg_name == "RS256") {
    alg = Alg::kRs256;
  } else if (alg_name == "ES256") {
    alg = Alg::kEs256;
  } else if (absl::EqualsIgnoreCase(alg_name, "none")) {
    return Unauthenticated("algorithm none is not accepted");
  } else {
    return Unauthenticated(absl::StrCat("algorithm ", JsonQuote(alg_name), " is not accepted"));
  }
  if (header->Find("crit") != nullptr) {
    return Unauthenticated("critical header extensions (crit) are not supported");
  }
  std::string kid;
  if (const JsonValue* v = header->Find("kid"); v != nullptr) {
    if (!v->is_string()) return Malformed("header kid is not a string");
    kid = v->text();
  }

  std::string claims_text;
  if (parts[1].empty() || !Base64UrlDecode(parts[1], &claims_text)) {
    return Malformed("payload is not unpadded base64url");
  }
  auto claims = ParseJson(claims_text, options_.max_json_depth);
  if (!claims.ok()) {
    return Malformed(absl::StrCat("payload is not JSON: ", claims.status().message()));
  }
  if (!claims->is_object()) return Malformed("claims are not a JSON object");
  std::string sig;
  if (parts[2].empty()) return Malformed("empty signature");
  if (!Base64UrlDecode(parts[2], &sig)) return Malformed("signature is not unpadded base64url");

  // Key selection by algorithm, then by kid (invariants 1 and 3).
  const std::shared_ptr<const KeySet> keys = Snapshot();
  const auto key_it = kid.empty() ? keys->public_keys.end() : keys->public_keys.find(kid);
  bool verified = false;
  if (alg == Alg::kHs256) {
    if (key_it != keys->public_keys.end()) {
      return Unauthenticated(absl::StrCat("key ", JsonQuote(kid), " is ",
                                          KeyKindName(key_it->second.kind),
                                          " public key; algorithm HS256 is not accepted with it"));
    }
    if (keys->secrets.empty()) {
      return Unauthenticated("algorithm HS256 is not accepted: no shared secret is configured");
    }
    if (sig.size() == kHs256Bytes) {
      for (const std::string& secret : keys->secrets) {
        const std::string mac = HmacSha256(secret, signing_input);
        // No early exit: the time taken does not depend on which secret matched.
        if (mac.size() == kHs256Bytes && CRYPTO_memcmp(mac.data(), sig.data(), kHs256Bytes) == 0) {
          verified = true;
        }
      }
    }
  } else {
    if (kid.empty()) {
      return Unauthenticated(
          absl::StrCat("token has no kid; ", alg_name, " tokens must name their key"));
    }
    if (key_it == keys->public_keys.end()) {
      if (options_.on_unknown_kid) options_.on_unknown_kid(kid);
      return Unauthenticated(absl::StrCat("unknown key id ", JsonQuote(kid)));
    }
    const KeyKind wanted = alg == Alg::kRs256 ? KeyKind::kRsa : KeyKind::kEc;
    if (key_it->second.kind != wanted) {
      return Unauthenticated(absl::StrCat("key ", JsonQuote(kid), " is ",
                                          KeyKindName(key_it->second.kind), " key; algorithm ",
                                          alg_name, " is not accepted with it"));
    }
    if (alg == Alg::kRs256) {
      verified = VerifyWithPkey(key_it->second.pkey.get(), signing_input, sig);
    } else if (sig.size() == 2 * kP256CoordinateBytes) {
      std::optional<std::string> der = RawEcdsaToDer(sig);
      verified = der && VerifyWithPkey(key_it->second.pkey.get(), signing_input, *der);
    } else {
      return Unauthenticated(absl::StrCat("signature does not verify (an ES256 signature is 64 "
                                          "bytes, this one is ",
                                          sig.size(), ")"));
    }
  }
  if (!verified) return Unauthenticated("signature does not verify");

  // Claims, now authentic.
  VerifiedToken out;
  out.alg = alg_name;
  out.kid = kid;
  const JsonValue* exp = claims->Find("exp");
  if (exp == nullptr) return Unauthenticated("token has no exp claim");
  PS_ASSIGN_OR_RETURN(out.exp, NumericDate(*exp, "exp"));
  const int64_t now_ms = options_.clock->NowMs();
  const int64_t leeway_ms = absl::ToInt64Milliseconds(options_.leeway);
  if (now_ms >= out.exp * 1000 + leeway_ms) {
    return Unauthenticated(absl::StrCat("token expired at ", FormatUnixSeconds(out.exp)));
  }
  if (const JsonValue* v = claims->Find("nbf"); v != nullptr) {
    PS_ASSIGN_OR_RETURN(int64_t nbf, NumericDate(*v, "nbf"));
    if (now_ms + leeway_ms < nbf * 1000) {
      return Unauthenticated(absl::StrCat("token not valid before ", FormatUnixSeconds(nbf)));
    }
  }
  if (const JsonValue* v = claims->Find("iat"); v != nullptr) {
    PS_ASSIGN_OR_RETURN(int64_t iat, NumericDate(*v, "iat"));
    if (iat * 1000 > now_ms + leeway_ms) {
      return Unauthenticated(
          absl::StrCat("token issued in the future, at ", FormatUnixSeconds(iat)));
    }
  }

  PS_ASSIGN_OR_RETURN(out.iss, OptionalStringClaim(*claims, "iss"));
  if (!options_.issuer.empty() && out.iss != options_.issuer) {
    if (claims->Find("iss") == nullptr) {
      return Unauthenticated(
          absl::StrCat("token has no iss claim; expected ", JsonQuote(options_.issuer)));
    }
    return Unauthenticated(absl::StrCat("issuer ", JsonQuote(out.iss), " not accepted (expected ",
                                        JsonQuote(options_.issuer), ")"));
  }

  if (const JsonValue* aud = claims->Find("aud"); aud != nullptr) {
    if (aud->is_string()) {
      out.aud.push_back(aud->text());
    } else if (aud->type() == JsonValue::Type::kArray) {
      for (const JsonValue& item : aud->items()) {
        if (!item.is_string()) return Malformed("claim aud has a non-string member");
        out.aud.push_back(item.text());
      }
    } else {
      return Malformed("claim aud is neither a string nor an array");
    }
  }
  if (!options_.audiences.empty()) {
    bool accepted = false;
    for (const std::string& a : out.aud) {
      for (const std::string& want : options_.audiences) accepted = accepted || a == want;
    }
    if (!accepted) {
      if (out.aud.empty()) {
        return Unauthenticated(
            absl::StrCat("token has no audience; expected ", QuotedList(options_.audiences)));
      }
      return Unauthenticated(absl::StrCat("audience ", QuotedList(out.aud),
                                          " not accepted (expected ",
                                          QuotedList(options_.audiences), ")"));
    }
  }

  PS_ASSIGN_OR_RETURN(out.sub, OptionalStringClaim(*claims, "sub"));
  PS_ASSIGN_OR_RETURN(out.role, OptionalStringClaim(*claims, "role"));
  out.claims_json = std::move(claims_text);
  out.claims = *std::move(claims);
  return out;
}

std::string SignHs256ForTest(absl::string_view claims_json, absl::string_view secret,
                             absl::string_view kid) {
  std::string header = R"({"alg":"HS256","typ":"JWT")";
  if (!kid.empty()) absl::StrAppend(&header, ",\"kid\":", JsonQuote(kid));
  header += "}";
  std::string token =
      absl::StrCat(absl::WebSafeBase64Escape(header), ".", absl::WebSafeBase64Escape(claims_json));
  const std::string mac = HmacSha256(secret, token);
  absl::StrAppend(&token, ".", absl::WebSafeBase64Escape(mac));
  return token;
}

}  // namespace pulsesync
