#include "server/core/change_feed.h"

#include <atomic>
#include <optional>

#include <pqxx/pqxx>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "server/core/cursor.h"
#include "server/storage/pg_session.h"

namespace pulsesync {
namespace {

constexpr char kSnapshotStatement[] = "pulsesync_feed_snapshot";
constexpr char kCompareStatement[] = "pulsesync_feed_compare";

// One page of the log: $1 delivered (NULL = nothing yet), $2 upper bound,
// $3 after position, $4 limit. Not a prepared statement: it is planned with
// its values on every read. Prepared, PostgreSQL would switch it to a
// generic plan once a session's custom plans had been costly (a catch-up
// through a backlog), and the generic plan cannot bound the scan by the
// cursor's snapshot: it walks the log from its first row on every read
// after (change_feed_pg_test `ReadsStayBoundedByTheCursorAfterACatchUp`).
// The page's positions are chosen first, from the narrow columns, and only
// its rows are then read and converted: when the txid index bounds the scan
// (a live follower), the rows of a big transaction come in txid order and
// are sorted by position for each page, and with the conversions
// (new_row::text, ...) under the sort every page converted all the rows
// still ahead, a 10,000-row transaction's 10 pages 55,000 rows
// (docs/PERFORMANCE.md, "A big transaction at a follower").
constexpr char kReadSql[] =
    "SELECT position, schema_name, table_name, object_type, op, object_id::text, version, "
    "new_row::text, old_row::text, origin_id, revision_id::text, "
    "(extract(epoch FROM changed_at) * 1000)::bigint, team_id::text "
    "FROM pulsesync.change_log "
    "WHERE position = ANY(ARRAY("
    "  SELECT position FROM pulsesync.change_log "
    "  WHERE ($1::pg_snapshot IS NULL "
    "         OR txid = ANY(ARRAY(SELECT pg_snapshot_xip($1::pg_snapshot))) "
    "         OR txid >= pg_snapshot_xmax($1::pg_snapshot)) "
    // Implied by the line above; lets the txid index bound the scan.
    "    AND ($1::pg_snapshot IS NULL OR txid >= pg_snapshot_xmin($1::pg_snapshot)) "
    "    AND pg_visible_in_snapshot(txid, $2::pg_snapshot) "
    "    AND position > $3 "
    "  ORDER BY position LIMIT $4)) "
    "ORDER BY position";

// The snapshot, the cluster and the incarnation (point 8), in µs since the
// epoch; columns 0, 1, 2 of every statement that makes a cursor.
constexpr char kCursorColumns[] =
    "pg_current_snapshot()::text, "
    "(SELECT system_identifier FROM pg_control_system())::text, "
    "(extract(epoch FROM pulsesync.db_started_at()) * 1000000)::bigint";

Cursor CursorFromRow(const pqxx::row& row) {
  Cursor c;
  c.delivered = row[0].as<std::string>();
  c.system_id = row[1].as<uint64_t>();
  c.incarnation = row[2].as<int64_t>();
  return c;
}

// Records the running incarnation (migrations/0011) once per process and
// incarnation, while its first checkpoint is still the latest: the rewind
// point of cursors from before it. Best effort: a failure only means that
// such cursors may later be refused with "re-snapshot".
void NoteIncarnation(PgSession& session, int64_t incarnation) {
  static std::atomic<int64_t> noted{0};
  if (noted.load(std::memory_order_relaxed) == incarnation) return;
  const absl::Status s =
      session.RunTransaction(TxMode::kReadWrite, [](pqxx::transaction_base& tx) {
        tx.exec("SELECT pulsesync.note_incarnation()");
        return absl::OkStatus();
      });
  if (!s.ok()) {
    LogWarning("cannot record the database's incarnation", {{"status", s}});
    return;
  }
  noted.store(incarnation, std::memory_order_relaxed);
}

// One page after `cursor`; sets `incarnation` to the database's, and
// `earlier_incarnation` (reading nothing) if the cursor is of an older one.
absl::StatusOr<PullPage> ReadPage(PgSession& session, const Cursor& cursor,
                                  const ReadOptions& options, int64_t* incarnation,
                                  bool* earlier_incarnation);

// Point 8: `cursor`, of an earlier incarnation, rewound to the first
// transaction id of the incarnations since.
absl::Status RewindToIncarnation(PgSession& session, Cursor* cursor) {
  std::optional<uint64_t> first;
  int64_t now = 0;
  PS_RETURN_IF_ERROR(session.RunTransaction(
      TxMode::kReadWrite, [&](pqxx::transaction_base& tx) -> absl::Status {
        const pqxx::row r = tx.exec_params1(
            "SELECT pulsesync.incarnation_floor(to_timestamp(0) + $1 * interval '1 microsecond')"
            "::text, (extract(epoch FROM pulsesync.db_started_at()) * 1000000)::bigint",
            cursor->incarnation);
        first.reset();
        if (!r[0].is_null()) first = r[0].as<uint64_t>();
        now = r[1].as<int64_t>();
        return absl::OkStatus();
      }));
  if (!first.has_value()) {
    return absl::FailedPreconditionError(
        "re-snapshot: PostgreSQL restarted since this cursor was issued, and where the "
        "transactions of its time end is not known; call Snapshot and follow from its cursor");
  }
  // A batch paged under the old incarnation starts over from `delivered`.
  Cursor rewound;
  rewound.system_id = cursor->system_id;
  rewound.incarnation = now;
  if (!cursor->delivered.empty()) {
    PS_ASSIGN_OR_RETURN(rewound.delivered, RewindSnapshot(cursor->delivered, *first));
  }
  LogInfo("cursor from an earlier incarnation of the database rewound",
          {{"from", cursor->delivered}, {"to", rewound.delivered}, {"first_xid", *first}});
  *cursor = std::move(rewound);
  return absl::OkStatus();
}

v1::EventType EventFromOp(absl::string_view op) {
  if (op == "INSERT") return v1::EVENT_TYPE_INSERT;
  if (op == "UPDATE") return v1::EVENT_TYPE_UPDATE;
  if (op == "DELETE") return v1::EVENT_TYPE_DELETE;
  return v1::EVENT_TYPE_UNSPECIFIED;
}

std::string TextOrEmpty(const pqxx::field& f) {
  return f.is_null() ? std::string() : f.as<std::string>();
}

}  // namespace

std::vector<PreparedStatement> ChangeFeedStatements() {
  return {
      // Must be the first statement of the transaction: in REPEATABLE READ
      // it returns the transaction's own snapshot.
      {kSnapshotStatement,
       absl::StrCat("SELECT ", kCursorColumns,
                    ", (SELECT horizon::text FROM pulsesync.feed_horizon)")},
      // Is the cursor's snapshot from this database's past?
      {kCompareStatement,
       "SELECT pg_snapshot_xmax($1::pg_snapshot) <= pg_snapshot_xmax($2::pg_snapshot)"},
  };
}

absl::StatusOr<int64_t> CompactChangeLog(PgSession& session, absl::Duration max_age,
                                         int64_t max_rows) {
  int64_t deleted = 0;
  PS_RETURN_IF_ERROR(session.RunTransaction(
      TxMode::kReadWrite, [&](pqxx::transaction_base& tx) {
        deleted = tx.exec_params1("SELECT pulsesync.compact_change_log($1::interval, $2)",
                                  absl::StrCat(absl::ToInt64Seconds(max_age), " seconds"),
                                  max_rows)[0]
                      .as<int64_t>();
        return absl::OkStatus();
      }));
  return deleted;
}

Cursor CursorOfTransaction(pqxx::transaction_base& tx) {
  return CursorFromRow(tx.exec1(absl::StrCat("SELECT ", kCursorColumns)));
}

absl::StatusOr<Cursor> CurrentCursor(PgSession& session) {
  Cursor c;
  PS_RETURN_IF_ERROR(session.RunTransaction(
      TxMode::kRepeatableReadOnly, [&](pqxx::transaction_base& tx) -> absl::Status {
        c = CursorFromRow(tx.exec_prepared1(kSnapshotStatement));
        return absl::OkStatus();
      }));
  NoteIncarnation(session, c.incarnation);
  return c;
}

absl::StatusOr<PullPage> ReadChanges(PgSession& session, absl::string_view cursor_text,
                                     uint32_t limit) {
  ReadOptions options;
  options.limit = limit;
  return ReadChanges(session, cursor_text, options);
}

absl::StatusOr<PullPage> ReadChanges(PgSession& session, absl::string_view cursor_text,
                                     const ReadOptions& options) {
  PS_ASSIGN_OR_RETURN(Cursor cursor, DecodeCursor(cursor_text));
  // Point 8. Twice at most: once more if PostgreSQL restarted again while
  // the cursor was being rewound.
  for (int attempt = 0;; ++attempt) {
    bool earlier_incarnation = false;
    int64_t incarnation = 0;
    PS_ASSIGN_OR_RETURN(PullPage page, ReadPage(session, cursor, options, &incarnation,
                                                &earlier_incarnation));
    NoteIncarnation(session, incarnation);
    if (!earlier_incarnation) return page;
    if (attempt == 2) {
      return absl::UnavailableError("the database keeps restarting: try again later");
    }
    PS_RETURN_IF_ERROR(RewindToIncarnation(session, &cursor));
  }
}

namespace {

absl::StatusOr<PullPage> ReadPage(PgSession& session, const Cursor& cursor,
                                  const ReadOptions& options, int64_t* incarnation,
                                  bool* earlier_incarnation) {
  const uint32_t limit = options.limit == 0 ? 1 : options.limit;
  PullPage page;
  PS_RETURN_IF_ERROR(session.RunTransaction(
      TxMode::kRepeatableReadOnly, [&](pqxx::transaction_base& tx) -> absl::Status {
        page = PullPage();
        const pqxx::row snap = tx.exec_prepared1(kSnapshotStatement);
        const std::string current = snap[0].as<std::string>();
        const uint64_t system_id = snap[1].as<uint64_t>();
        *incarnation = snap[2].as<int64_t>();
        if (!cursor.at_start() && cursor.system_id != system_id) {
          return absl::FailedPreconditionError(absl::StrCat(
              "re-snapshot: the cursor belongs to another database (system identifier ", cursor.system_id,
              ", this database is ", system_id, ")"));
        }
        *earlier_incarnation =
            !cursor.at_start() && cursor.incarnation != 0 && cursor.incarnation != *incarnation;
        if (*earlier_incarnation) return absl::OkStatus();
        // Compacted log: a cursor from before the horizon may miss deleted
        // rows, and "from the start" is no longer the whole history.
        uint64_t horizon = 0;
        if (!snap[3].is_null()) horizon = snap[3].as<uint64_t>();
        if (horizon > 0) {
          const std::string& from = cursor.delivered;
          uint64_t xmin = 0;
          if (!from.empty() && !absl::SimpleAtoi(from.substr(0, from.find(':')), &xmin)) {
            return absl::InvalidArgumentError("malformed cursor: bad snapshot");
          }
          if (from.empty() || xmin <= horizon) {
            return absl::FailedPreconditionError(absl::StrCat(
                "re-snapshot: the change log was compacted past this cursor (",
                from.empty() ? "it starts at the beginning of the log" : "too old",
                "); call Snapshot and follow from its cursor"));
          }
        }
        const std::string& upper = !cursor.batch_upper.empty() ? cursor.batch_upper
                                   : !options.upper_bound.empty() ? options.upper_bound
                                                                  : current;
        if (!cursor.at_start()) {
          const std::string& newest = cursor.batch_upper.empty() ? cursor.delivered : upper;
          if (!tx.exec_prepared1(kCompareStatement, newest, current)[0].as<bool>()) {
            return absl::FailedPreconditionError(
                "re-snapshot: the cursor is ahead of this database (was it restored from a backup?)");
          }
        }
        const pqxx::result rows = tx.exec_params(
            kReadSql,
            cursor.delivered.empty() ? nullptr : cursor.delivered.c_str(), upper,
            cursor.batch_after_position, static_cast<int64_t>(limit) + 1);
        const size_t n = std::min<size_t>(rows.size(), limit);
        page.changes.reserve(n);
        for (size_t i = 0; i < n; ++i) {
          const pqxx::row& row = rows[i];
          v1::Change c;
          c.set_position(row[0].as<int64_t>());
          c.set_schema(row[1].as<std::string>());
          c.set_table(row[2].as<std::string>());
          c.set_object_type(row[3].as<std::string>());
          c.set_event(EventFromOp(row[4].as<std::string>()));
          c.set_object_id(row[5].as<std::string>());
          c.set_version(row[6].as<int64_t>());
          c.set_new_record(TextOrEmpty(row[7]));
          c.set_old_record(TextOrEmpty(row[8]));
          c.set_origin_id(TextOrEmpty(row[9]));
          c.set_revision_id(TextOrEmpty(row[10]));
          c.set_commit_timestamp_ms(row[11].as<int64_t>());
          c.set_team_id(TextOrEmpty(row[12]));
          page.changes.push_back(std::move(c));
        }
        Cursor next;
        next.system_id = system_id;
        next.incarnation = *incarnation;
        if (rows.size() > limit) {
          next.delivered = cursor.delivered;
          next.batch_upper = upper;
          next.batch_after_position = page.changes.back().position();
          page.has_more = true;
        } else {
          next.delivered = upper;
          // The last page of a batch paged under an older snapshot (the
          // cursor's batch_upper): transactions that committed since then
          // are in the next batch, so there may be more right now
          // (sync.proto's has_more). Without this, a client that resumed
          // a paged batch (after a crash or a cut) stopped short of them.
          page.has_more = !cursor.batch_upper.empty() && upper != current;
        }
        page.next_cursor = EncodeCursor(next);
        if (options.event_cursors) {
          Cursor at = next;
          at.delivered = cursor.delivered;
          at.batch_upper = upper;
          for (size_t i = 0; i + 1 < page.changes.size(); ++i) {
            at.batch_after_position = page.changes[i].position();
            page.changes[i].set_cursor(EncodeCursor(at));
          }
          if (!page.changes.empty()) page.changes.back().set_cursor(page.next_cursor);
        }
        page.next = std::move(next);
        return absl::OkStatus();
      }));
  return page;
}

}  // namespace

}  // namespace pulsesync
