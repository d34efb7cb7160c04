// PEM files for TLS (server certificate and key, CA bundles), read and
// checked with OpenSSL before gRPC sees them: a missing file or a key that
// does not belong to its certificate is then a clear start-up error naming
// the file, not a handshake that fails later with a vague UNAVAILABLE.
#ifndef PULSESYNC_COMMON_TLS_FILES_H_
#define PULSESYNC_COMMON_TLS_FILES_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pulsesync {

// A certificate chain (leaf first) and the leaf's private key, both PEM.
struct PemKeyPair {
  std::string cert_chain;
  std::string private_key;
};

// Reads `path`, a PEM file of one or more certificates (a CA bundle or a
// chain). `what` names the file in errors ("TLS CA file").
// kNotFound: the file cannot be read. kInvalidArgument: it holds no
// certificate, or one that does not parse.
[[nodiscard]] absl::StatusOr<std::string> ReadPemCertificates(const std::string& path,
                                                              absl::string_view what);

// Reads a certificate chain and its private key (PEM, unencrypted key).
// kNotFound: a file cannot be read. kInvalidArgument: a file does not parse,
// or the key does not belong to the chain's first certificate.
[[nodiscard]] absl::StatusOr<PemKeyPair> ReadPemKeyPair(const std::string& cert_path,
                                                        const std::string& key_path);

}  // namespace pulsesync

#endif  // PULSESYNC_COMMON_TLS_FILES_H_
