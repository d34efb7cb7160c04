// UUIDs as the protocol spells them: 36-character lowercase text.
#ifndef PULSESYNC_COMMON_UUID_H_
#define PULSESYNC_COMMON_UUID_H_

#include <string>

#include "absl/strings/string_view.h"

namespace pulsesync {

// A random (version 4) UUID from OpenSSL's CSPRNG.
std::string NewUuid();

// A time-ordered (version 7, RFC 9562) UUID: the Unix time in milliseconds,
// then 74 random bits. Ids made one after the other sort together, so a
// B-tree (SQLite's, PostgreSQL's) inserts them near each other instead of
// on a random page: a batch of writes dirties a few pages, not one per
// row. Reveals when the id was made (the rows carry created_at anyway).
std::string NewTimeOrderedUuid();

// True for 8-4-4-4-12 hex digits (either case).
bool IsUuid(absl::string_view s);

}  // namespace pulsesync

#endif  // PULSESYNC_COMMON_UUID_H_
