#include "client/store/payload_crypto.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace pulsesync {
namespace {

SecretKey KeyOf(char fill) { return *SecretKey::FromBytes(std::string(kPayloadKeyBytes, fill)); }

Keyring RingOf(char fill, const std::string& id) {
  Keyring ring;
  EXPECT_TRUE(ring.AddKey(id, KeyOf(fill)).ok());
  return ring;
}

const std::string kAad = PayloadAad("rev-1", "task", "obj-1");
const std::string kPayload = R"({"title":"Quarterly secrets","priority":3})";

TEST(PayloadCryptoTest, RoundTripsAndUsesTheDocumentedEnvelope) {
  Keyring ring = RingOf('a', "main");
  absl::StatusOr<std::string> sealed = ring.Encrypt(kPayload, kAad);
  ASSERT_TRUE(sealed.ok()) << sealed.status();
  EXPECT_TRUE(IsEncryptedPayload(*sealed));
  EXPECT_TRUE(absl::StartsWith(*sealed, "enc1:main:")) << *sealed;
  EXPECT_EQ(EnvelopeKeyId(*sealed), "main");
  EXPECT_EQ(sealed->find("secrets"), std::string::npos);
  // enc1:<key id>:<16 chars of base64 nonce>:<base64 ciphertext + 16-byte tag>
  std::vector<std::string> parts = absl::StrSplit(*sealed, ':');
  ASSERT_EQ(parts.size(), 4u);
  std::string nonce, body;
  ASSERT_TRUE(absl::Base64Unescape(parts[2], &nonce));
  EXPECT_EQ(nonce.size(), kPayloadNonceBytes);
  ASSERT_TRUE(absl::Base64Unescape(parts[3], &body));
  EXPECT_EQ(body.size(), kPayload.size() + kPayloadTagBytes);

  absl::StatusOr<std::string> plain = ring.Decrypt(*sealed, kAad);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(*plain, kPayload);

  absl::StatusOr<std::string> empty = ring.Encrypt("", kAad);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*ring.Decrypt(*empty, kAad), "");
}

TEST(PayloadCryptoTest, EveryEncryptionUsesAFreshNonce) {
  Keyring ring = RingOf('a', "main");
  std::set<std::string> nonces, envelopes;
  for (int i = 0; i < 200; ++i) {
    std::string sealed = *ring.Encrypt(kPayload, kAad);
    std::vector<std::string> parts = absl::StrSplit(sealed, ':');
    nonces.insert(parts[2]);
    envelopes.insert(sealed);
  }
  EXPECT_EQ(nonces.size(), 200u);
  EXPECT_EQ(envelopes.size(), 200u);
}

TEST(PayloadCryptoTest, AssociatedDataBindsTheCiphertextToItsRow) {
  Keyring ring = RingOf('a', "main");
  const std::string sealed = *ring.Encrypt(kPayload, kAad);
  for (const std::string& other :
       {PayloadAad("rev-2", "task", "obj-1"), PayloadAad("rev-1", "task", "obj-2"),
        PayloadAad("rev-1", "team", "obj-1"), PayloadAad("rev-1task", "", "obj-1"),
        std::string()}) {
    absl::StatusOr<std::string> plain = ring.Decrypt(sealed, other);
    EXPECT_EQ(plain.status().code(), absl::StatusCode::kDataLoss) << other;
    EXPECT_TRUE(absl::StrContains(plain.status().message(), "failed authentication"))
        << plain.status();
  }
}

TEST(PayloadCryptoTest, ChangingAnyCharacterOfTheEnvelopeIsDetected) {
  Keyring ring = RingOf('a', "main");
  // Also accept the key under a one-letter-different id, so a changed key id
  // reaches the authentication check and not only the key lookup.
  ASSERT_TRUE(ring.AddKey("mbin", KeyOf('a')).ok());
  const std::string sealed = *ring.Encrypt(kPayload, kAad);
  const std::string alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=:{}";
  int tried = 0;
  for (size_t i = 0; i < sealed.size(); ++i) {
    for (char c : {alphabet[i % alphabet.size()], alphabet[(i * 7 + 3) % alphabet.size()], 'A'}) {
      if (c == sealed[i]) continue;
      std::string bad = sealed;
      bad[i] = c;
      absl::StatusOr<std::string> plain = ring.Decrypt(bad, kAad);
      ++tried;
      EXPECT_EQ(plain.status().code(), absl::StatusCode::kDataLoss)
          << "position " << i << " changed to '" << c << "': " << bad;
    }
  }
  EXPECT_GT(tried, static_cast<int>(sealed.size()));
  // Flipping bits of the decoded ciphertext and tag, re-encoded canonically.
  std::vector<std::string> parts = absl::StrSplit(sealed, ':');
  std::string body;
  ASSERT_TRUE(absl::Base64Unescape(parts[3], &body));
  for (size_t i = 0; i < body.size(); ++i) {
    std::string flipped = body;
    flipped[i] = static_cast<char>(flipped[i] ^ 0x01);
    const std::string bad = "enc1:main:" + parts[2] + ":" + absl::Base64Escape(flipped);
    EXPECT_EQ(ring.Decrypt(bad, kAad).status().code(), absl::StatusCode::kDataLoss) << i;
  }
  // Truncation and extension.
  EXPECT_EQ(ring.Decrypt(sealed.substr(0, sealed.size() - 4), kAad).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(ring.Decrypt(sealed + "AAAA", kAad).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ring.Decrypt("enc1:main", kAad).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ring.Decrypt(kPayload, kAad).status().code(), absl::StatusCode::kDataLoss);
}

TEST(PayloadCryptoTest, UnknownKeyIdIsDataLossNamingTheKey) {
  Keyring writer = RingOf('a', "old");
  Keyring reader = RingOf('b', "new");
  const std::string sealed = *writer.Encrypt(kPayload, kAad);
  absl::StatusOr<std::string> plain = reader.Decrypt(sealed, kAad);
  EXPECT_EQ(plain.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(plain.status().message(), "unknown key id \"old\""))
      << plain.status();
  // The same id holding a different key: authentication fails.
  Keyring impostor = RingOf('b', "old");
  EXPECT_EQ(impostor.Decrypt(sealed, kAad).status().code(), absl::StatusCode::kDataLoss);
  Keyring empty;
  EXPECT_EQ(empty.Decrypt(sealed, kAad).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(empty.Encrypt(kPayload, kAad).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(PayloadCryptoTest, RotationKeepsOldPayloadsReadableAndWritesWithTheNewKey) {
  Keyring ring;
  ASSERT_TRUE(ring.AddKey("k1", KeyOf('1')).ok());
  EXPECT_EQ(ring.current_key_id(), "k1");
  const std::string old_sealed = *ring.Encrypt(kPayload, kAad);

  ASSERT_TRUE(ring.AddKey("k2", KeyOf('2')).ok());
  EXPECT_EQ(ring.current_key_id(), "k1");  // the first added stays current
  ASSERT_TRUE(ring.SetCurrent("k2").ok());
  EXPECT_EQ(ring.current_key_id(), "k2");
  const std::string new_sealed = *ring.Encrypt(kPayload, kAad);
  EXPECT_EQ(EnvelopeKeyId(new_sealed), "k2");
  EXPECT_EQ(*ring.Decrypt(old_sealed, kAad), kPayload);
  EXPECT_EQ(*ring.Decrypt(new_sealed, kAad), kPayload);

  EXPECT_EQ(ring.SetCurrent("k3").code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(ring.AddKey("k1", KeyOf('1')).ok());  // same key again: no-op
  EXPECT_EQ(ring.AddKey("k1", KeyOf('9')).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ring.AddKey("bad:id", KeyOf('9')).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ring.AddKey("", KeyOf('9')).code(), absl::StatusCode::kInvalidArgument);
}

TEST(PayloadCryptoTest, KeyTextIsHexOrBase64AndNeverEchoed) {
  const std::string raw(kPayloadKeyBytes, '\x5a');
  const std::string hex = absl::BytesToHexString(raw);
  const std::string b64 = absl::Base64Escape(raw);
  for (const std::string& text : {hex, " " + hex + "\n", absl::AsciiStrToUpper(hex), b64,
                                  b64 + "\n"}) {
    absl::StatusOr<SecretKey> key = ParseKeyText(text, /*allow_raw=*/false);
    ASSERT_TRUE(key.ok()) << key.status() << " for " << text;
    EXPECT_EQ(key->ToHex(), hex);
  }
  EXPECT_TRUE(ParseKeyText(raw, /*allow_raw=*/true).ok());
  EXPECT_FALSE(ParseKeyText(raw, /*allow_raw=*/false).ok());
  absl::StatusOr<SecretKey> bad = ParseKeyText(hex.substr(2) + "zz", false);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(absl::StrContains(bad.status().message(), hex.substr(2, 20)));
  EXPECT_FALSE(ParseKeyText(absl::Base64Escape(std::string(16, 'x')), false).ok());
  EXPECT_FALSE(ParseKeyText("", false).ok());
}

TEST(PayloadCryptoTest, DerivedKeyIdsAreStableAndDistinct) {
  const std::string a = DeriveKeyId(KeyOf('a'));
  EXPECT_EQ(a, DeriveKeyId(KeyOf('a')));
  EXPECT_NE(a, DeriveKeyId(KeyOf('b')));
  EXPECT_EQ(a.size(), 17u);
  EXPECT_EQ(a[0], 'k');
}

TEST(PayloadCryptoTest, SecretKeyMovesLeaveNothingBehind) {
  SecretKey a = KeyOf('q');
  SecretKey b = std::move(a);
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): the contract under test
  for (size_t i = 0; i < kPayloadKeyBytes; ++i) EXPECT_EQ(a.data()[i], 0) << i;
  EXPECT_FALSE(b.empty());
  EXPECT_EQ(b.data()[0], 'q');
  EXPECT_FALSE(SecretKey::FromBytes("short").ok());
  absl::StatusOr<SecretKey> g1 = SecretKey::Generate();
  absl::StatusOr<SecretKey> g2 = SecretKey::Generate();
  ASSERT_TRUE(g1.ok() && g2.ok());
  EXPECT_NE(g1->ToHex(), g2->ToHex());
}

class KeyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    path_ = ::testing::TempDir() + "/payload_key_" + std::to_string(getpid()) + "_" +
            std::to_string(counter++);
    std::remove(path_.c_str());
  }
  void TearDown() override { std::remove(path_.c_str()); }
  void Write(const std::string& content, mode_t mode) {
    std::remove(path_.c_str());
    std::ofstream(path_, std::ios::binary) << content;
    ASSERT_EQ(::chmod(path_.c_str(), mode), 0);
  }
  std::string path_;
};

TEST_F(KeyFileTest, ReadsRawHexAndBase64KeysFromAnOwnerOnlyFile) {
  const std::string raw(kPayloadKeyBytes, '\x07');
  const std::string hex = absl::BytesToHexString(raw);
  for (const std::string& content : {raw, hex + "\n", absl::Base64Escape(raw) + "\n"}) {
    Write(content, 0600);
    absl::StatusOr<SecretKey> key = ReadKeyFile(path_);
    ASSERT_TRUE(key.ok()) << key.status();
    EXPECT_EQ(key->ToHex(), hex);
  }
  Write(hex, 0400);
  EXPECT_TRUE(ReadKeyFile(path_).ok());
}

TEST_F(KeyFileTest, FollowsSymlinksAndChecksTheTarget) {
  const std::string hex = absl::BytesToHexString(std::string(kPayloadKeyBytes, '\x07'));
  const std::string link = path_ + ".link";
  std::remove(link.c_str());
  Write(hex, 0600);
  ASSERT_EQ(::symlink(path_.c_str(), link.c_str()), 0);
  EXPECT_TRUE(ReadKeyFile(link).ok());
  ASSERT_EQ(::chmod(path_.c_str(), 0644), 0);
  EXPECT_EQ(ReadKeyFile(link).status().code(), absl::StatusCode::kPermissionDenied);
  std::remove(link.c_str());
}

TEST_F(KeyFileTest, RefusesAFileThatGroupOrOthersMayAccess) {
  const std::string hex = absl::BytesToHexString(std::string(kPayloadKeyBytes, '\x07'));
  for (mode_t mode : {0644, 0640, 0604, 0660, 0602}) {
    Write(hex, mode);
    absl::StatusOr<SecretKey> key = ReadKeyFile(path_);
    EXPECT_EQ(key.status().code(), absl::StatusCode::kPermissionDenied) << std::oct << mode;
    EXPECT_TRUE(absl::StrContains(key.status().message(), "accessible by group or others"))
        << key.status();
    EXPECT_TRUE(absl::StrContains(key.status().message(), "chmod 600 " + path_)) << key.status();
  }
}

TEST_F(KeyFileTest, MissingOrMalformedFilesAreClearErrors) {
  EXPECT_EQ(ReadKeyFile(path_).status().code(), absl::StatusCode::kNotFound);
  Write("not a key\n", 0600);
  absl::StatusOr<SecretKey> key = ReadKeyFile(path_);
  EXPECT_EQ(key.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(key.status().message(), path_)) << key.status();
  EXPECT_EQ(ReadKeyFile(::testing::TempDir()).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(KeyFileTest, WriteNewKeyFileIsOwnerOnlyAndNeverOverwrites) {
  const mode_t old_umask = ::umask(0);  // the file must be 0600 whatever the umask
  SecretKey key = *SecretKey::Generate();
  absl::Status st = WriteNewKeyFile(path_, key);
  ::umask(old_umask);
  ASSERT_TRUE(st.ok()) << st;
  struct stat info;
  ASSERT_EQ(::stat(path_.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 07777, 0600u);
  absl::StatusOr<SecretKey> back = ReadKeyFile(path_);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToHex(), key.ToHex());

  SecretKey other = *SecretKey::Generate();
  EXPECT_EQ(WriteNewKeyFile(path_, other).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ReadKeyFile(path_)->ToHex(), key.ToHex());
}

TEST_F(KeyFileTest, LoadKeyringFromFilesOrTheEnvironment) {
  SecretKey k1 = *SecretKey::Generate();
  SecretKey k2 = *SecretKey::Generate();
  const std::string id1 = DeriveKeyId(k1);
  const std::string id2 = DeriveKeyId(k2);

  // The environment: hex or base64, ',' separated, the first current.
  const std::string k2_raw = absl::HexStringToBytes(k2.ToHex());
  absl::StatusOr<Keyring> env_ring =
      LoadKeyring({}, k1.ToHex() + ", " + absl::Base64Escape(k2_raw));
  ASSERT_TRUE(env_ring.ok()) << env_ring.status();
  EXPECT_EQ(env_ring->current_key_id(), id1);
  EXPECT_TRUE(env_ring->HasKey(id2));

  absl::StatusOr<Keyring> none = LoadKeyring({}, "");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());

  absl::StatusOr<Keyring> bad = LoadKeyring({}, k1.ToHex() + ",oops");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "PULSESYNC_DB_KEY (key 2)"))
      << bad.status();

  // Files win over the environment.
  ASSERT_TRUE(WriteNewKeyFile(path_, k2).ok());
  absl::StatusOr<Keyring> file_ring = LoadKeyring({path_}, k1.ToHex());
  ASSERT_TRUE(file_ring.ok()) << file_ring.status();
  EXPECT_EQ(file_ring->key_ids(), std::vector<std::string>{id2});
  EXPECT_EQ(LoadKeyring({path_ + ".missing"}, "").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace pulsesync
