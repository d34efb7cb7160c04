#include "common/tls_files.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <iterator>
#include <memory>

#include "absl/strings/str_cat.h"

namespace pulsesync {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

absl::StatusOr<std::string> ReadWholeFile(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (path.empty() || !in) return absl::NotFoundError(absl::StrCat("cannot read ", what, " ", path));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::NotFoundError(absl::StrCat("cannot read ", what, " ", path));
  return text;
}

BioPtr MemBio(const std::string& text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// The first certificate in `pem`, or null; counts all of them in `count`.
// Leaves OpenSSL's error queue empty.
X509Ptr ParseCertificates(const std::string& pem, int* count) {
  BioPtr bio = MemBio(pem);
  X509Ptr first;
  *count = 0;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    if (first == nullptr) {
      first.reset(cert);
    } else {
      X509_free(cert);
    }
    ++*count;
  }
  ERR_clear_error();  // the read that ended the loop reports "no start line"
  return first;
}

}  // namespace

absl::StatusOr<std::string> ReadPemCertificates(const std::string& path, absl::string_view what) {
  absl::StatusOr<std::string> text = ReadWholeFile(path, what);
  if (!text.ok()) return text.status();
  int count = 0;
  if (ParseCertificates(*text, &count) == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, " holds no PEM certificate"));
  }
  return text;
}

absl::StatusOr<PemKeyPair> ReadPemKeyPair(const std::string& cert_path,
                                          const std::string& key_path) {
  PemKeyPair pair;
  absl::StatusOr<std::string> cert = ReadWholeFile(cert_path, "TLS certificate file");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadWholeFile(key_path, "TLS key file");
  if (!key.ok()) return key.status();
  int count = 0;
  X509Ptr leaf = ParseCertificates(*cert, &count);
  if (leaf == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS certificate file ", cert_path, " holds no PEM certificate"));
  }
  PkeyPtr pkey;
  {
    BioPtr bio = MemBio(*key);
    pkey.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    ERR_clear_error();
  }
  if (pkey == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TLS key file ", key_path, " holds no PEM private key (an encrypted key is not supported)"));
  }
  const bool matches = X509_check_private_key(leaf.get(), pkey.get()) == 1;
  ERR_clear_error();
  if (!matches) {
    return absl::InvalidArgumentError(absl::StrCat("TLS key file ", key_path,
                                                   " does not match the certificate in ",
                                                   cert_path));
  }
  pair.cert_chain = std::move(*cert);
  pair.private_key = std::move(*key);
  return pair;
}

}  // namespace pulsesync
