#include "common/uuid.h"

#include <openssl/rand.h>

#include <cstdint>
#include <random>

#include "absl/strings/str_format.h"

namespace pulsesync {

std::string NewUuid() {
  uint8_t b[16];
  if (RAND_bytes(b, sizeof(b)) != 1) {
    // The CSPRNG failing is not expected; fall back rather than abort.
    std::random_device rd;
    for (uint8_t& x : b) x = static_cast<uint8_t>(rd());
  }
  b[6] = (b[6] & 0x0F) | 0x40;
  b[8] = (b[8] & 0x3F) | 0x80;
  return absl::StrFormat(
      "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
      b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

bool IsUuid(absl::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
      return false;
    }
  }
  return true;
}

}  // namespace pulsesync
