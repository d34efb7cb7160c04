// Initial sync: the current rows a subscriber may see, consistent with a
// cursor.
//
// One REPEATABLE READ transaction whose first statement takes the snapshot
// that becomes the cursor; the rows are read in that same snapshot, table by
// table, keyset-paged by id. Every transaction visible in the snapshot is
// in the rows, and none that is not, so following the feed from the cursor
// neither misses nor repeats a change (a repeat would be harmless anyway:
// clients skip versions they hold).
#ifndef PULSESYNC_SERVER_CORE_SNAPSHOT_H_
#define PULSESYNC_SERVER_CORE_SNAPSHOT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pulsesync {

class PgSession;

struct SnapshotOptions {
  std::vector<std::string> tables;  // table names or object types; empty = all
  uint32_t rows_per_chunk = 500;
  bool include_deleted = false;
  // Limit rows of team-scoped tables to these teams (rows of tables with no
  // team column are all included). `restricted` false = no limit.
  bool restricted = false;
  absl::flat_hash_set<std::string> teams;
  // When restricted: the users rows the caller may see (themselves and
  // their teammates), as the users policy of migration 0005 has it.
  absl::flat_hash_set<std::string> visible_users;
};

struct SnapshotChunk {
  std::string table;
  std::string object_type;
  std::vector<std::string> records;  // JSON objects
};

// A member of up to this many teams has each page of a team table merged
// from their teams' rows, each read by the table's (team column, id) index
// (migration 0018); beyond it, the primary key is walked and filtered by
// team, which finds a page quickly when the teams hold much of the table,
// and whose plan does not grow with them.
inline constexpr size_t kMaxMergedTeams = 64;

// Calls `emit` for each chunk, in table then id order (it may block: that
// is the stream's flow control; returning an error aborts the read), and
// returns the cursor the rows are consistent with. kInvalidArgument names
// an unknown table.
absl::StatusOr<std::string> ReadSnapshot(
    PgSession& session, const SnapshotOptions& options,
    const std::function<absl::Status(SnapshotChunk)>& emit);

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_CORE_SNAPSHOT_H_
