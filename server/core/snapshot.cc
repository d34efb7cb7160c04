#include "server/core/snapshot.h"

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/core/change_feed.h"
#include "server/core/cursor.h"
#include "server/storage/pg_session.h"

namespace pulsesync {
namespace {

struct TableInfo {
  std::string object_type;
  std::string name;           // relname, as clients know it
  std::string qualified;      // regclass text: quoted, safe to splice
  std::string team_column;    // quote_ident'ed, or ""
  bool scope_index = false;   // an index on (team column, id) serves it (0018)
};

// The array literal of a set of UUIDs, for = ANY($n::uuid[]).
std::string UuidArray(const absl::flat_hash_set<std::string>& ids) {
  return absl::StrCat("{", absl::StrJoin(ids, ","), "}");
}

// Which rows of a table one snapshot page reads; the page's parameters are
// $1 the last id of the previous page (uuid), $2 the page's size, and, when
// scoped, $3 the teams (kTeams, kConflicts) or users (kUsers) as uuid[],
// each once, and $4 the users (kConflicts).
enum class SnapshotScope {
  kAll,        // every row
  kTeams,      // rows whose team column is one of $3
  kUsers,      // the users table: rows whose id is one of $3
  kConflicts,  // conflict records: of a team in $3, or of no team and a user in $4
};

// The SQL of one page of `qualified_table` (regclass text, spliced as is).
// kTeams and kConflicts: `team_column` already quote_ident'ed (spliced as
// is); `teams` the length of $3; `merged` true to merge the page from one
// branch per team, each read by the table's (team column, id) index, false
// to walk the primary key filtered by scope.
std::string SnapshotPageSql(const std::string& qualified_table, const std::string& team_column,
                            SnapshotScope scope, size_t teams, bool merged, bool include_deleted,
                            bool first_page) {
  // Keyset pages by id; the first page includes the smallest UUID.
  const char* after = first_page ? " >= $1::uuid" : " > $1::uuid";
  const char* live = include_deleted ? "" : " AND NOT t.deleted";
  auto record = [](absl::string_view row) {
    return absl::StrCat("(to_jsonb(", row, ") - pulsesync.internal_columns())::text");
  };
  if (merged && (scope == SnapshotScope::kTeams || scope == SnapshotScope::kConflicts)) {
    // One branch per team, each in id order by the table's (team column,
    // id) index (migration 0018), merged (a Merge Append): the page reads
    // its own rows and at most one more per branch, whatever the table
    // holds. A walk of the primary key filtered by team read every other
    // team's rows too: a member of 2 of 100 teams, 25,000 rows for a page
    // of 500. The branches carry their rows whole; only the page's become
    // JSON.
    std::vector<std::string> conditions;
    for (size_t i = 1; i <= teams; ++i) {
      conditions.push_back(absl::StrCat("t.", team_column, " = ($3::uuid[])[", i, "]"));
    }
    // Conflict records of users rows (no team), by the index of those
    // (0018), for the users the caller sees.
    if (scope == SnapshotScope::kConflicts) {
      conditions.push_back("t.team_id IS NULL AND t.user_id = ANY($4::uuid[])");
    }
    std::vector<std::string> branches;
    for (const std::string& condition : conditions) {
      branches.push_back(absl::StrCat("(SELECT t.id, t AS r FROM ", qualified_table, " t WHERE ",
                                      condition, " AND t.id", after, live,
                                      " ORDER BY t.id LIMIT $2)"));
    }
    return absl::StrCat("SELECT u.id::text, ", record("u.r"),
                        " FROM (", absl::StrJoin(branches, " UNION ALL "),
                        ") u ORDER BY u.id LIMIT $2");
  }
  std::string filter = live;
  if (scope == SnapshotScope::kTeams) {
    absl::StrAppend(&filter, " AND t.", team_column, " = ANY($3::uuid[])");
  } else if (scope == SnapshotScope::kConflicts) {
    filter +=
        " AND (t.team_id = ANY($3::uuid[]) OR (t.team_id IS NULL AND t.user_id = ANY($4::uuid[])))";
  } else if (scope == SnapshotScope::kUsers) {
    filter += " AND t.id = ANY($3::uuid[])";
  }
  return absl::StrCat("SELECT t.id::text, ", record("t"), " FROM ",
                      qualified_table, " t WHERE t.id", after, filter, " ORDER BY t.id LIMIT $2");
}

}  // namespace

absl::StatusOr<std::string> ReadSnapshot(
    PgSession& session, const SnapshotOptions& options,
    const std::function<absl::Status(SnapshotChunk)>& emit) {
  std::string cursor;
  bool emitted = false;
  PS_RETURN_IF_ERROR(session.RunTransaction(
      TxMode::kRepeatableReadOnly, [&](pqxx::transaction_base& tx) -> absl::Status {
        if (emitted) {
          // Rows already went out; a retry would send them twice.
          return absl::AbortedError("snapshot interrupted: start it again");
        }
        const Cursor c = CursorOfTransaction(tx);

        std::vector<TableInfo> all;
        for (const auto& row : tx.exec(
                 "SELECT s.object_type, c.relname::text, s.table_oid::regclass::text, "
                 "coalesce(quote_ident(s.team_column), ''), s.team_column = 'id' "
                 "  OR coalesce(pulsesync.has_scope_index(s.table_oid, s.team_column), false) "
                 "FROM pulsesync.synced_tables s JOIN pg_class c ON c.oid = s.table_oid "
                 "ORDER BY s.object_type")) {
          all.push_back({row[0].as<std::string>(), row[1].as<std::string>(),
                         row[2].as<std::string>(), row[3].as<std::string>(),
                         row[4].as<bool>(false)});
        }
        std::vector<const TableInfo*> chosen;
        if (options.tables.empty()) {
          for (const TableInfo& t : all) chosen.push_back(&t);
        } else {
          for (const std::string& want : options.tables) {
            const TableInfo* found = nullptr;
            for (const TableInfo& t : all) {
              if (t.name == want || t.object_type == want) found = &t;
            }
            if (found == nullptr) {
              return absl::InvalidArgumentError(absl::StrCat("unknown table \"", want, "\""));
            }
            chosen.push_back(found);
          }
        }

        const std::string teams = UuidArray(options.teams);
        const std::string users = UuidArray(options.visible_users);
        const int64_t limit = options.rows_per_chunk == 0 ? 500 : options.rows_per_chunk;
        for (const TableInfo* t : chosen) {
          // Team tables by team; the users table by who the caller may see.
          SnapshotScope scope = SnapshotScope::kAll;
          if (options.restricted && !t->team_column.empty()) {
            // Conflict records of users rows (no team): by who sees the row.
            scope = t->object_type == "conflict" ? SnapshotScope::kConflicts
                                                 : SnapshotScope::kTeams;
          } else if (options.restricted && t->object_type == "user") {
            scope = SnapshotScope::kUsers;
          }
          if (scope == SnapshotScope::kTeams && options.teams.empty()) continue;  // no rows
          // Without its index the merge would sort each team's rows on
          // every page: then the walk (and for a caller of no team's
          // conflict records, only their users rows').
          const bool merged = t->scope_index && !options.teams.empty() &&
                              options.teams.size() <= kMaxMergedTeams;
          const std::string first_sql =
              SnapshotPageSql(t->qualified, t->team_column, scope, options.teams.size(), merged,
                              options.include_deleted, true);
          const std::string next_sql =
              SnapshotPageSql(t->qualified, t->team_column, scope, options.teams.size(), merged,
                              options.include_deleted, false);
          const std::string& ids = scope == SnapshotScope::kUsers ? users : teams;
          std::string after = "00000000-0000-0000-0000-000000000000";
          for (bool first = true;; first = false) {
            const std::string& q = first ? first_sql : next_sql;
            const pqxx::result rows =
                scope == SnapshotScope::kConflicts ? tx.exec_params(q, after, limit, teams, users)
                : scope != SnapshotScope::kAll     ? tx.exec_params(q, after, limit, ids)
                                                   : tx.exec_params(q, after, limit);
            if (rows.empty()) break;
            SnapshotChunk chunk{t->name, t->object_type, {}};
            chunk.records.reserve(rows.size());
            for (const auto& row : rows) chunk.records.push_back(row[1].as<std::string>());
            after = rows[rows.size() - 1][0].as<std::string>();
            emitted = true;
            PS_RETURN_IF_ERROR(emit(std::move(chunk)));
            if (static_cast<int64_t>(rows.size()) < limit) break;
          }
        }
        cursor = EncodeCursor(c);
        return absl::OkStatus();
      }));
  return cursor;
}

}  // namespace pulsesync
