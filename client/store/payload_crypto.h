// Encryption at rest of revision payloads: AES-256-GCM (OpenSSL EVP) under
// keys held in a Keyring.
//
// Envelope format (version 1), a single line of ASCII that fits the TEXT
// `revisions.payload` column and can never be mistaken for a JSON payload
// (those start with '{'):
//
//   enc1:<key_id>:<nonce>:<ciphertext_and_tag>
//
//   enc1                the format version; a later format gets a new prefix
//   key_id              the id of the key that encrypted it (kKeyIdChars,
//                       1..64 characters, no ':'); DeriveKeyId() for keys
//                       loaded from files and the environment
//   nonce               standard base64 (RFC 4648, padded) of the 96-bit
//                       GCM nonce, fresh from RAND_bytes for every payload
//   ciphertext_and_tag  standard base64 of the ciphertext followed by the
//                       128-bit GCM tag
//
// Associated data (authenticated, not stored): the caller's, i.e.
// PayloadAad(revision id, object type, object id), which names the format
// version, followed by '\n' and the key id. A ciphertext copied into
// another revision row, or relabelled with another key id, fails to
// authenticate. Base64 must be canonical, so no two envelope
// texts decode to the same bytes: changing any character of an envelope
// makes Decrypt fail.
//
// Every failure to decrypt (malformed envelope, unknown key id, failed
// authentication) is kDataLoss with a message saying which; Decrypt never
// returns unauthenticated bytes.
//
// Key text (key files and PULSESYNC_DB_KEY): 32 raw bytes (files only), or
// 64 hex digits, or base64 of 32 bytes; surrounding whitespace is ignored.
// PULSESYNC_DB_KEY may list several keys separated by ',' (the first is
// current; the others only decrypt), for rotation.
#ifndef PULSESYNC_CLIENT_STORE_PAYLOAD_CRYPTO_H_
#define PULSESYNC_CLIENT_STORE_PAYLOAD_CRYPTO_H_

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pulsesync {

inline constexpr size_t kPayloadKeyBytes = 32;    // AES-256
inline constexpr size_t kPayloadNonceBytes = 12;  // 96-bit GCM nonce
inline constexpr size_t kPayloadTagBytes = 16;    // 128-bit GCM tag
inline constexpr char kPayloadEnvelopePrefix[] = "enc1:";
inline constexpr char kDbKeyEnvVar[] = "PULSESYNC_DB_KEY";

// True if `payload` is an envelope (of any key), i.e. not plaintext.
bool IsEncryptedPayload(absl::string_view payload);

// The key id stored in `envelope`, or "" if it is not a well-formed one.
std::string EnvelopeKeyId(absl::string_view envelope);

// The associated data binding a payload to its revisions row.
std::string PayloadAad(absl::string_view revision_id, absl::string_view object_type,
                       absl::string_view object_id);

// 32 bytes of key that zero themselves (OPENSSL_cleanse) when destroyed.
// Move-only; a moved-from key is empty.
class SecretKey {
 public:
  SecretKey() = default;
  // kInvalidArgument unless `bytes` is exactly kPayloadKeyBytes long.
  [[nodiscard]] static absl::StatusOr<SecretKey> FromBytes(absl::string_view bytes);
  // A new random key (RAND_bytes); kInternal if the CSPRNG fails.
  [[nodiscard]] static absl::StatusOr<SecretKey> Generate();

  SecretKey(SecretKey&& other) noexcept;
  SecretKey& operator=(SecretKey&& other) noexcept;
  SecretKey(const SecretKey&) = delete;
  SecretKey& operator=(const SecretKey&) = delete;
  ~SecretKey();

  bool empty() const { return !set_; }
  const unsigned char* data() const { return bytes_; }
  // Lowercase hex, for writing a key file. Handle the result with care.
  std::string ToHex() const;

 private:
  void Wipe();
  unsigned char bytes_[kPayloadKeyBytes] = {};
  bool set_ = false;
};

// Parses key text: 64 hex digits or base64 of 32 bytes (whitespace around
// it ignored), or, if `allow_raw`, exactly 32 bytes of anything.
// kInvalidArgument (never echoing the text) if it is none of these.
[[nodiscard]] absl::StatusOr<SecretKey> ParseKeyText(absl::string_view text, bool allow_raw);

// The id under which a key loaded from a file or the environment is stored:
// "k" + 16 hex digits of SHA-256("pulsesync payload key id\0" + key). Stable,
// so the same key always gets the same id, and reveals nothing usable about
// the key.
std::string DeriveKeyId(const SecretKey& key);

// Reads a key file (symlinks followed; the target is checked). Refuses
// (kPermissionDenied, naming the mode and the fix) a file that group or
// others may access in any way, and anything but a regular file; kNotFound if missing; kInvalidArgument if the content is not
// a key (see ParseKeyText; raw bytes allowed).
[[nodiscard]] absl::StatusOr<SecretKey> ReadKeyFile(const std::string& path);

// Writes `key` as hex text plus a newline to a new file `path`, created with
// mode 0600. kAlreadyExists if `path` exists (it is never overwritten);
// other errors as the OS reports them (nothing is left behind on failure).
[[nodiscard]] absl::Status WriteNewKeyFile(const std::string& path, const SecretKey& key);

// Several keys by id: one current (encrypts), all of them decrypt, so that
// rotating to a new key keeps payloads written under the old ones readable.
//
// Thread safety: const methods are thread-safe; adding keys is not, so
// finish building a Keyring before sharing it. Key material is zeroed when
// the Keyring is destroyed.
class Keyring {
 public:
  Keyring() = default;
  Keyring(Keyring&&) = default;
  Keyring& operator=(Keyring&&) = default;
  Keyring(const Keyring&) = delete;
  Keyring& operator=(const Keyring&) = delete;

  // Adds `key` under `key_id`. The first key added becomes current.
  // kInvalidArgument for an empty key, a bad id (see the envelope format);
  // kAlreadyExists if the id is taken by a different key (the same key
  // again is a no-op).
  [[nodiscard]] absl::Status AddKey(absl::string_view key_id, SecretKey key);
  // AddKey(DeriveKeyId(key), key); returns the id.
  [[nodiscard]] absl::StatusOr<std::string> AddKey(SecretKey key);
  // Makes `key_id` the key that encrypts. kNotFound if it is not held.
  [[nodiscard]] absl::Status SetCurrent(absl::string_view key_id);

  bool empty() const { return keys_.empty(); }
  const std::string& current_key_id() const { return current_; }
  bool HasKey(absl::string_view key_id) const;
  std::vector<std::string> key_ids() const;

  // Encrypts under the current key with a fresh nonce; returns the envelope.
  // kFailedPrecondition if the keyring is empty; kInvalidArgument for a
  // plaintext over 1 GiB; kInternal if OpenSSL fails.
  [[nodiscard]] absl::StatusOr<std::string> Encrypt(absl::string_view plaintext,
                                                    absl::string_view aad) const;
  // Decrypts an envelope made with the same `aad`. kDataLoss if it is
  // malformed, names a key this keyring does not hold, or does not
  // authenticate (tampered, or moved to another row).
  [[nodiscard]] absl::StatusOr<std::string> Decrypt(absl::string_view envelope,
                                                    absl::string_view aad) const;

 private:
  // unique_ptr: the key bytes never move once added.
  std::map<std::string, std::unique_ptr<SecretKey>, std::less<>> keys_;
  std::string current_;
};

// Builds the keyring the CLI and apps use: each of `key_files` in order
// (the first is current), or, when there are none, the keys listed in
// `env_value` (PULSESYNC_DB_KEY; ',' separated, the first current). Both
// empty: an empty keyring (payloads stay plaintext). Errors as ReadKeyFile
// and ParseKeyText, prefixed with where the key came from.
[[nodiscard]] absl::StatusOr<Keyring> LoadKeyring(const std::vector<std::string>& key_files,
                                                  absl::string_view env_value);

}  // namespace pulsesync

#endif  // PULSESYNC_CLIENT_STORE_PAYLOAD_CRYPTO_H_
