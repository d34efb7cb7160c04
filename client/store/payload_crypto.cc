#include "client/store/payload_crypto.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace pulsesync {
namespace {

constexpr size_t kMaxPlaintextBytes = size_t{1} << 30;
constexpr size_t kMaxKeyIdChars = 64;

bool IsKeyIdChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
}

bool IsValidKeyId(absl::string_view id) {
  if (id.empty() || id.size() > kMaxKeyIdChars) return false;
  for (char c : id) {
    if (!IsKeyIdChar(c)) return false;
  }
  return true;
}

// Wipes a std::string's bytes before it is released.
class ScopedWipe {
 public:
  explicit ScopedWipe(std::string* s) : s_(s) {}
  ~ScopedWipe() {
    if (!s_->empty()) OPENSSL_cleanse(&(*s_)[0], s_->size());
  }

 private:
  std::string* s_;
};

// Strict base64: only the canonical (padded, standard alphabet) encoding of
// some bytes is accepted, so each byte string has exactly one text form.
bool DecodeCanonicalBase64(absl::string_view text, std::string* out) {
  if (text.empty() || !absl::Base64Unescape(text, out)) return false;
  return absl::Base64Escape(*out) == text;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool DecodeHex(absl::string_view text, std::string* out) {
  if (text.size() % 2 != 0) return false;
  out->assign(text.size() / 2, '\0');
  for (size_t i = 0; i < out->size(); ++i) {
    const int hi = HexDigit(text[2 * i]);
    const int lo = HexDigit(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    (*out)[i] = static_cast<char>(hi * 16 + lo);
  }
  return true;
}

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

const unsigned char* Bytes(absl::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

absl::Status OpenSslError(absl::string_view what) {
  return absl::InternalError(absl::StrCat("OpenSSL ", what, " failed"));
}

// The parts of a well-formed envelope (views into it).
struct Envelope {
  absl::string_view key_id;
  absl::string_view nonce_b64;
  absl::string_view sealed_b64;
};

bool SplitEnvelope(absl::string_view text, Envelope* env) {
  if (!IsEncryptedPayload(text)) return false;
  std::vector<absl::string_view> parts =
      absl::StrSplit(text.substr(sizeof(kPayloadEnvelopePrefix) - 1), ':');
  if (parts.size() != 3 || !IsValidKeyId(parts[0])) return false;
  env->key_id = parts[0];
  env->nonce_b64 = parts[1];
  env->sealed_b64 = parts[2];
  return true;
}

}  // namespace

bool IsEncryptedPayload(absl::string_view payload) {
  return payload.substr(0, sizeof(kPayloadEnvelopePrefix) - 1) == kPayloadEnvelopePrefix;
}

std::string EnvelopeKeyId(absl::string_view envelope) {
  Envelope env;
  return SplitEnvelope(envelope, &env) ? std::string(env.key_id) : std::string();
}

std::string PayloadAad(absl::string_view revision_id, absl::string_view object_type,
                       absl::string_view object_id) {
  // Length-prefixed, so no two (revision, type, object) triples collide.
  std::string aad = "pulsesync revision payload enc1";
  for (absl::string_view part : {revision_id, object_type, object_id}) {
    absl::StrAppend(&aad, "\n", part.size(), ":", part);
  }
  return aad;
}

// --- SecretKey ---

absl::StatusOr<SecretKey> SecretKey::FromBytes(absl::string_view bytes) {
  if (bytes.size() != kPayloadKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat("a payload key must be ", kPayloadKeyBytes,
                                                   " bytes, got ", bytes.size()));
  }
  SecretKey key;
  std::memcpy(key.bytes_, bytes.data(), kPayloadKeyBytes);
  key.set_ = true;
  return key;
}

absl::StatusOr<SecretKey> SecretKey::Generate() {
  SecretKey key;
  if (RAND_bytes(key.bytes_, static_cast<int>(kPayloadKeyBytes)) != 1) {
    return OpenSslError("RAND_bytes");
  }
  key.set_ = true;
  return key;
}

SecretKey::SecretKey(SecretKey&& other) noexcept { *this = std::move(other); }

SecretKey& SecretKey::operator=(SecretKey&& other) noexcept {
  if (this != &other) {
    std::memcpy(bytes_, other.bytes_, kPayloadKeyBytes);
    set_ = other.set_;
    other.Wipe();
  }
  return *this;
}

SecretKey::~SecretKey() { Wipe(); }

void SecretKey::Wipe() {
  OPENSSL_cleanse(bytes_, kPayloadKeyBytes);
  set_ = false;
}

std::string SecretKey::ToHex() const {
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes_), kPayloadKeyBytes));
}

// --- Key text and files ---

absl::StatusOr<SecretKey> ParseKeyText(absl::string_view text, bool allow_raw) {
  if (allow_raw && text.size() == kPayloadKeyBytes) return SecretKey::FromBytes(text);
  const absl::string_view trimmed = absl::StripAsciiWhitespace(text);
  std::string bytes;
  ScopedWipe wipe(&bytes);
  if (trimmed.size() == 2 * kPayloadKeyBytes && DecodeHex(trimmed, &bytes)) {
    return SecretKey::FromBytes(bytes);
  }
  bytes.clear();
  if (absl::Base64Unescape(trimmed, &bytes) && bytes.size() == kPayloadKeyBytes) {
    return SecretKey::FromBytes(bytes);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("not a payload key: expected 64 hex digits or base64 of ", kPayloadKeyBytes,
                   " bytes", allow_raw ? absl::StrCat(" or ", kPayloadKeyBytes, " raw bytes") : "",
                   " (make one with `pulsesync keygen --out=PATH`)"));
}

std::string DeriveKeyId(const SecretKey& key) {
  static constexpr char kLabel[] = "pulsesync payload key id";
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  bool ok = md != nullptr && EVP_DigestInit_ex(md, EVP_sha256(), nullptr) == 1 &&
            EVP_DigestUpdate(md, kLabel, sizeof(kLabel)) == 1 &&  // with the NUL
            EVP_DigestUpdate(md, key.data(), kPayloadKeyBytes) == 1 &&
            EVP_DigestFinal_ex(md, digest, &digest_len) == 1;
  EVP_MD_CTX_free(md);
  if (!ok || digest_len < 8) return "k-unknown";  // SHA-256 does not fail in practice
  return absl::StrCat(
      "k", absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(digest), 8)));
}

absl::StatusOr<SecretKey> ReadKeyFile(const std::string& path) {
  // Symlinks are followed (mounted secrets are often links); the checks
  // below apply to the file actually opened.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    const std::string msg = absl::StrCat("cannot open key file ", path, ": ", std::strerror(e));
    if (e == ENOENT) return absl::NotFoundError(msg);
    if (e == EACCES) return absl::PermissionDeniedError(msg);
    return absl::UnavailableError(msg);
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  // fstat on the descriptor we read from: no window between check and use.
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot stat key file ", path, ": ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::PermissionDeniedError(absl::StrCat("key file ", path, " is not a regular file"));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "key file %s is accessible by group or others (mode %04o); it must be readable by its "
        "owner only: chmod 600 %s",
        path, st.st_mode & 07777, path));
  }
  if (st.st_size > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("key file ", path, " is too large to be a payload key"));
  }
  std::string text(4097, '\0');
  ScopedWipe wipe(&text);
  size_t used = 0;
  while (used < text.size()) {
    const ssize_t n = ::read(fd, &text[used], text.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot read key file ", path, ": ", std::strerror(errno)));
    }
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  absl::StatusOr<SecretKey> key = ParseKeyText(absl::string_view(text.data(), used),
                                               /*allow_raw=*/true);
  if (!key.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("key file ", path, ": ", key.status().message()));
  }
  return key;
}

absl::Status WriteNewKeyFile(const std::string& path, const SecretKey& key) {
  if (key.empty()) return absl::InvalidArgumentError("no key to write");
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    const int e = errno;
    const std::string msg = absl::StrCat("cannot create key file ", path, ": ", std::strerror(e));
    if (e == EEXIST) {
      return absl::AlreadyExistsError(
          absl::StrCat("key file ", path, " already exists; refusing to overwrite it"));
    }
    if (e == EACCES || e == EPERM) return absl::PermissionDeniedError(msg);
    return absl::UnavailableError(msg);
  }
  // The umask may only have removed bits; make the mode exactly 0600.
  std::string text = key.ToHex() + "\n";
  ScopedWipe wipe(&text);
  bool ok = ::fchmod(fd, 0600) == 0;
  size_t done = 0;
  while (ok && done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = false;
      break;
    }
    done += static_cast<size_t>(n);
  }
  const int saved = errno;
  ok = ok && ::fsync(fd) == 0;
  if (::close(fd) != 0) ok = false;
  if (!ok) {
    ::unlink(path.c_str());
    return absl::UnavailableError(
        absl::StrCat("cannot write key file ", path, ": ", std::strerror(saved)));
  }
  return absl::OkStatus();
}

// --- Keyring ---

absl::Status Keyring::AddKey(absl::string_view key_id, SecretKey key) {
  if (key.empty()) return absl::InvalidArgumentError("empty payload key");
  if (!IsValidKeyId(key_id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad key id \"", key_id,
                     "\": 1 to 64 characters of letters, digits, '-', '_' or '.'"));
  }
  auto it = keys_.find(key_id);
  if (it != keys_.end()) {
    if (CRYPTO_memcmp(it->second->data(), key.data(), kPayloadKeyBytes) == 0) {
      return absl::OkStatus();
    }
    return absl::AlreadyExistsError(
        absl::StrCat("key id \"", key_id, "\" is already used by a different key"));
  }
  keys_.emplace(std::string(key_id), std::make_unique<SecretKey>(std::move(key)));
  if (current_.empty()) current_ = std::string(key_id);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Keyring::AddKey(SecretKey key) {
  std::string id = DeriveKeyId(key);
  PS_RETURN_IF_ERROR(AddKey(id, std::move(key)));
  return id;
}

absl::Status Keyring::SetCurrent(absl::string_view key_id) {
  if (!HasKey(key_id)) {
    return absl::NotFoundError(absl::StrCat("no key with id \"", key_id, "\" in the keyring"));
  }
  current_ = std::string(key_id);
  return absl::OkStatus();
}

bool Keyring::HasKey(absl::string_view key_id) const { return keys_.find(key_id) != keys_.end(); }

std::vector<std::string> Keyring::key_ids() const {
  std::vector<std::string> ids;
  for (const auto& [id, key] : keys_) ids.push_back(id);
  return ids;
}

absl::StatusOr<std::string> Keyring::Encrypt(absl::string_view plaintext,
                                             absl::string_view aad) const {
  if (keys_.empty()) return absl::FailedPreconditionError("no payload key configured");
  if (plaintext.size() > kMaxPlaintextBytes || aad.size() > kMaxPlaintextBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("payload of ", plaintext.size(), " bytes is too large to encrypt"));
  }
  const SecretKey& key = *keys_.find(current_)->second;
  unsigned char nonce[kPayloadNonceBytes];
  if (RAND_bytes(nonce, sizeof(nonce)) != 1) return OpenSslError("RAND_bytes");
  const std::string full_aad = absl::StrCat(aad, "\n", current_);

  CipherCtx ctx(EVP_CIPHER_CTX_new());
  std::string sealed(plaintext.size() + kPayloadTagBytes, '\0');
  unsigned char* out = reinterpret_cast<unsigned char*>(&sealed[0]);
  int len = 0;
  int total = 0;
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kPayloadNonceBytes, nullptr) != 1 ||
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), nonce) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, Bytes(full_aad),
                        static_cast<int>(full_aad.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), out, &len, Bytes(plaintext),
                        static_cast<int>(plaintext.size())) != 1) {
    return OpenSslError("AES-256-GCM encryption");
  }
  total = len;
  if (EVP_EncryptFinal_ex(ctx.get(), out + total, &len) != 1) {
    return OpenSslError("AES-256-GCM encryption");
  }
  total += len;
  if (static_cast<size_t>(total) != plaintext.size() ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kPayloadTagBytes, out + total) != 1) {
    return OpenSslError("AES-256-GCM tag");
  }
  return absl::StrCat(
      kPayloadEnvelopePrefix, current_, ":",
      absl::Base64Escape(absl::string_view(reinterpret_cast<char*>(nonce), sizeof(nonce))), ":",
      absl::Base64Escape(sealed));
}

absl::StatusOr<std::string> Keyring::Decrypt(absl::string_view envelope,
                                             absl::string_view aad) const {
  Envelope env;
  if (!SplitEnvelope(envelope, &env)) {
    return absl::DataLossError(
        "malformed encrypted payload (expected enc1:<key id>:<nonce>:<ciphertext>)");
  }
  auto it = keys_.find(env.key_id);
  if (it == keys_.end()) {
    return absl::DataLossError(absl::StrCat(
        "payload is encrypted with unknown key id \"", env.key_id, "\" (this keyring holds: ",
        keys_.empty() ? "no keys" : absl::StrJoin(key_ids(), ", "),
        "); supply that key, e.g. as an additional --key-file"));
  }
  std::string nonce, sealed;
  if (!DecodeCanonicalBase64(env.nonce_b64, &nonce) || nonce.size() != kPayloadNonceBytes ||
      !DecodeCanonicalBase64(env.sealed_b64, &sealed) || sealed.size() < kPayloadTagBytes ||
      sealed.size() - kPayloadTagBytes > kMaxPlaintextBytes) {
    return absl::DataLossError("malformed encrypted payload (bad nonce or ciphertext encoding)");
  }
  const size_t text_len = sealed.size() - kPayloadTagBytes;
  const std::string full_aad = absl::StrCat(aad, "\n", env.key_id);
  std::string plain(text_len, '\0');
  std::string tag = sealed.substr(text_len);
  unsigned char scratch[1];  // EVP wants a valid output pointer even for ""

  unsigned char* out = text_len > 0 ? reinterpret_cast<unsigned char*>(&plain[0]) : scratch;
  int len = 0;
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kPayloadNonceBytes, nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, it->second->data(), Bytes(nonce)) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, Bytes(full_aad),
                        static_cast<int>(full_aad.size())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), out, &len, Bytes(sealed), static_cast<int>(text_len)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kPayloadTagBytes, &tag[0]) != 1) {
    ScopedWipe wipe(&plain);
    return OpenSslError("AES-256-GCM decryption");
  }
  const int total = len;
  if (EVP_DecryptFinal_ex(ctx.get(), out + total, &len) != 1) {
    ScopedWipe wipe(&plain);  // unauthenticated bytes never leave
    return absl::DataLossError(
        "encrypted payload failed authentication: it was altered, or moved from another "
        "revision row");
  }
  return plain;
}

// --- Loading ---

absl::StatusOr<Keyring> LoadKeyring(const std::vector<std::string>& key_files,
                                    absl::string_view env_value) {
  Keyring ring;
  if (!key_files.empty()) {
    for (const std::string& path : key_files) {
      PS_ASSIGN_OR_RETURN(SecretKey key, ReadKeyFile(path));
      PS_ASSIGN_OR_RETURN(std::string id, ring.AddKey(std::move(key)));
      (void)id;
    }
    return ring;
  }
  if (absl::StripAsciiWhitespace(env_value).empty()) return ring;
  int n = 0;
  for (absl::string_view part : absl::StrSplit(env_value, ',')) {
    ++n;
    absl::StatusOr<SecretKey> key = ParseKeyText(part, /*allow_raw=*/false);
    if (!key.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(kDbKeyEnvVar, " (key ", n, "): ", key.status().message()));
    }
    PS_ASSIGN_OR_RETURN(std::string id, ring.AddKey(*std::move(key)));
    (void)id;
  }
  return ring;
}

}  // namespace pulsesync
