// Cursor: a position in the change log that any server replica can resume.
//
// What a cursor means: every change-log row whose transaction is visible in
// the `delivered` snapshot has been delivered to the holder; nothing else has,
// except, while a batch is being paged, the rows of the batch (transactions
// visible in `batch_upper` but not in `delivered`) up to and including log
// position `batch_after_position`. See change_feed.h for why snapshots and not
// positions.
//
// Wire form: "c1." + base64url(serialized pulsesync.internal.CursorState).
#ifndef PULSESYNC_SERVER_CORE_CURSOR_H_
#define PULSESYNC_SERVER_CORE_CURSOR_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pulsesync {

struct Cursor {
  uint64_t system_id = 0;
  std::string delivered;    // pg_snapshot text; empty = nothing delivered
  std::string batch_upper;  // pg_snapshot text; empty = not paging a batch
  int64_t batch_after_position = 0;
  // pulsesync.db_started_at() of the server that issued it, in µs since the
  // Unix epoch; 0 = not known (a cursor from before incarnations were kept).
  int64_t incarnation = 0;

  bool at_start() const { return delivered.empty() && batch_upper.empty(); }
};

std::string EncodeCursor(const Cursor& cursor);

// Longer cursor texts are refused before decoding. A real one holds two
// snapshots whose in-progress lists are bounded by PostgreSQL's connection
// limit: a few KiB, some hundreds at most.
inline constexpr size_t kMaxCursorBytes = 1 << 20;

// An empty string decodes to the start-of-log cursor (system_id 0).
// kInvalidArgument when `text` is not a cursor this server issued (or is
// longer than kMaxCursorBytes).
absl::StatusOr<Cursor> DecodeCursor(absl::string_view text);

// True if `s` has the shape of a pg_snapshot text: "xmin:xmax:xip,xip,...".
bool IsSnapshotText(absl::string_view s);

// True if every transaction visible in snapshot `inner` is visible in
// snapshot `outer` (both pg_snapshot texts), as holds when `outer` was taken
// after `inner`. False for malformed input.
bool SnapshotIncludes(absl::string_view outer, absl::string_view inner);

// `snapshot` (pg_snapshot text) as if every transaction id from `first_xid`
// on had not started yet: xmax and xmin at most `first_xid`, the ids at or
// past it dropped from xip. What was visible below `first_xid` stays
// visible. kInvalidArgument for a malformed snapshot.
absl::StatusOr<std::string> RewindSnapshot(absl::string_view snapshot, uint64_t first_xid);

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_CORE_CURSOR_H_
