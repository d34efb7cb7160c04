// UUIDs as the protocol spells them: 36-character lowercase text.
#ifndef PULSESYNC_COMMON_UUID_H_
#define PULSESYNC_COMMON_UUID_H_

#include <string>

#include "absl/strings/string_view.h"

namespace pulsesync {

// A random (version 4) UUID from OpenSSL's CSPRNG.
std::string NewUuid();

// True for 8-4-4-4-12 hex digits (either case).
bool IsUuid(absl::string_view s);

}  // namespace pulsesync

#endif  // PULSESYNC_COMMON_UUID_H_
