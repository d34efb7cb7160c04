// The change feed reader: pages of committed changes after a cursor.
//
// Design note. A log position (an identity column) is assigned when a row is
// inserted, not when its transaction commits: a reader that asks for
// `position > last seen` loses the rows of a transaction that took its
// positions early and committed late. So progress is measured in snapshots,
// as PgQ does:
//
// 1. Each log row stores its writer's txid (pg_current_xact_id()).
// 2. A read runs in one REPEATABLE READ transaction whose first statement
//    takes `cur = pg_current_snapshot()`, which is the transaction's own
//    snapshot.
// 3. The rows of a batch are those whose txid is visible in `cur` and not in
//    the cursor's `delivered` snapshot: txid = ANY(xip(delivered)) OR
//    txid >= xmax(delivered). (`position > bound OR txid = ANY(xip)` would
//    lose a transaction that had its xid at or past xmax.)
// 4. They are returned in position order; two transactions that wrote the
//    same row committed one after the other, so they arrive in that order.
// 5. A batch larger than a page is paged by position under the same pair of
//    snapshots; the cursor then carries `cur` as batch_upper. When the last
//    page is read, `cur` becomes the new `delivered`.
// 6. An open transaction delays only its own rows: it is in xip of the next
//    cursor and is picked up when it commits.
// 7. A cursor names the cluster (system identifier). One from another
//    cluster, or from the future of this one (a restore), is refused with
//    kFailedPrecondition: the client must re-snapshot.
// 8. A cursor also names the incarnation of the PostgreSQL server that
//    issued it (pulsesync.db_started_at(): the postmaster's start, or the
//    in-place reinitialization after a backend crashed). Crash recovery hands out again
//    the transaction ids that were never written to the WAL; a snapshot from
//    before the crash may count such an id as finished, and the new
//    transaction that reuses it would never be delivered. A cursor of an
//    earlier incarnation is therefore rewound first (RewindSnapshot) to the
//    first id of the incarnations since (migrations/0011): its holder may
//    get again what it had, never miss anything. If that id is not known
//    (the first checkpoint of an incarnation was gone before any pulsesyncd
//    noted it), the cursor is refused with "re-snapshot". Cursors without an
//    incarnation (issued before it was recorded) are taken as current.
#ifndef PULSESYNC_SERVER_CORE_CHANGE_FEED_H_
#define PULSESYNC_SERVER_CORE_CHANGE_FEED_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "pulsesync/v1/sync.pb.h"
#include "server/core/cursor.h"

namespace pqxx {
class transaction_base;
}  // namespace pqxx

namespace pulsesync {

class PgSession;
struct PreparedStatement;

struct PullPage {
  std::vector<v1::Change> changes;
  std::string next_cursor;
  Cursor next;  // next_cursor, decoded
  bool has_more = false;
};

struct ReadOptions {
  uint32_t limit = 500;  // changes per page, >= 1
  // Set Change.cursor on every change: the cursor right after it.
  bool event_cursors = false;
  // pg_snapshot text. When the cursor is not inside a batch, read the batch
  // up to this snapshot instead of the current one: how a stream catches up
  // to exactly the point where a FeedHub batch begins. It must not be older
  // than the cursor's snapshot (then the page is empty and the cursor moves
  // to it, which can only cause redelivery, never loss).
  std::string upper_bound;
};

// Reads up to `options.limit` changes after `cursor` (empty: from the start).
// kInvalidArgument for a malformed cursor; kFailedPrecondition
// ("re-snapshot: ...") for a cursor of another database or from its future;
// kUnavailable when PostgreSQL is down.
absl::StatusOr<PullPage> ReadChanges(PgSession& session, absl::string_view cursor,
                                     const ReadOptions& options);
absl::StatusOr<PullPage> ReadChanges(PgSession& session, absl::string_view cursor,
                                     uint32_t limit);

// Deletes up to `max_rows` change-log rows older than `max_age` (see
// migrations/0004_feed_retention.sql); returns how many it deleted. Cursors
// from before the compacted rows are then refused with "re-snapshot".
absl::StatusOr<int64_t> CompactChangeLog(PgSession& session, absl::Duration max_age,
                                         int64_t max_rows = 10000);

// The cursor of "now": every change committed so far counts as delivered.
absl::StatusOr<Cursor> CurrentCursor(PgSession& session);

// The cursor of `tx`'s snapshot. Must be the first statement of a REPEATABLE
// READ transaction (then it is the transaction's own snapshot).
Cursor CursorOfTransaction(pqxx::transaction_base& tx);

// Statements this module prepares on every connection.
std::vector<PreparedStatement> ChangeFeedStatements();

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_CORE_CHANGE_FEED_H_
