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
};

// The array literal of a set of UUIDs, for = ANY($n::uuid[]).
std::string UuidArray(const absl::flat_hash_set<std::string>& ids) {
  return absl::StrCat("{", absl::StrJoin(ids, ","), "}");
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
                 "coalesce(quote_ident(s.team_column), '') "
                 "FROM pulsesync.synced_tables s JOIN pg_class c ON c.oid = s.table_oid "
                 "ORDER BY s.object_type")) {
          all.push_back({row[0].as<std::string>(), row[1].as<std::string>(),
                         row[2].as<std::string>(), row[3].as<std::string>()});
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
          std::string filter;
          if (!options.include_deleted) filter += " AND NOT t.deleted";
          // Team tables by team; the users table by who the caller may see.
          const bool by_team = options.restricted && !t->team_column.empty();
          const bool by_user = options.restricted && t->team_column.empty() &&
                               t->object_type == "user";
          const bool scoped = by_team || by_user;
          // Conflict records of users rows (no team): by who sees the row.
          const bool conflicts = by_team && t->object_type == "conflict";
          if (conflicts) {
            absl::StrAppend(&filter, " AND (t.team_id = ANY($3::uuid[]) OR (t.team_id IS NULL",
                            " AND t.user_id = ANY($4::uuid[])))");
          } else if (by_team) {
            absl::StrAppend(&filter, " AND t.", t->team_column, " = ANY($3::uuid[])");
          }
          if (by_user) absl::StrAppend(&filter, " AND t.id = ANY($3::uuid[])");
          const std::string& ids = by_user ? users : teams;
          // Keyset pages by id; the first page includes the smallest UUID.
          auto sql = [&](const char* op) {
            return absl::StrCat("SELECT t.id::text, (to_jsonb(t) - pulsesync.internal_columns())::text FROM ", t->qualified,
                                " t WHERE t.id ", op, " $1::uuid", filter,
                                " ORDER BY t.id LIMIT $2");
          };
          const std::string first_sql = sql(">="), next_sql = sql(">");
          std::string after = "00000000-0000-0000-0000-000000000000";
          for (bool first = true;; first = false) {
            const std::string& q = first ? first_sql : next_sql;
            const pqxx::result rows =
                conflicts ? tx.exec_params(q, after, limit, teams, users)
                : scoped  ? tx.exec_params(q, after, limit, ids)
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
