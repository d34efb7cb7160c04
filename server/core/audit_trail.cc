#include "server/core/audit_trail.h"

#include <pqxx/pqxx>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/json.h"
#include "common/status_macros.h"
#include "common/uuid.h"
#include "server/core/team_scope.h"
#include "server/storage/pg_session.h"

namespace pulsesync {
namespace {

constexpr char kCursorPrefix[] = "audit1:";

struct OutcomeName {
  v1::AuditOutcome outcome;
  const char* name;
};
constexpr OutcomeName kOutcomes[] = {
    {v1::AUDIT_OUTCOME_APPLIED, "applied"},       {v1::AUDIT_OUTCOME_MERGED, "merged"},
    {v1::AUDIT_OUTCOME_CONFLICT, "conflict"},     {v1::AUDIT_OUTCOME_RECOVERED, "recovered"},
    {v1::AUDIT_OUTCOME_SUPERSEDED, "superseded"}, {v1::AUDIT_OUTCOME_TOMBSTONED, "tombstoned"},
    {v1::AUDIT_OUTCOME_DIRECT, "direct"},         {v1::AUDIT_OUTCOME_DUPLICATE, "duplicate"},
    {v1::AUDIT_OUTCOME_REJECTED, "rejected"},     {v1::AUDIT_OUTCOME_OUT_OF_ORDER, "out_of_order"},
};

v1::AuditOutcome OutcomeFromName(absl::string_view name) {
  for (const OutcomeName& o : kOutcomes) {
    if (name == o.name) return o.outcome;
  }
  return v1::AUDIT_OUTCOME_UNSPECIFIED;
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

const char* NullIfEmpty(const std::string& s) { return s.empty() ? nullptr : s.c_str(); }

// A PostgreSQL array literal of UUIDs (validated by the caller).
std::string UuidArray(const absl::flat_hash_set<std::string>& ids) {
  return absl::StrCat("{", absl::StrJoin(ids, ","), "}");
}

absl::Status CheckUuid(absl::string_view what, const std::string& value) {
  if (!value.empty() && !IsUuid(value)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " \"", value, "\" is not a UUID"));
  }
  return absl::OkStatus();
}

}  // namespace

AuditScope AuditScope::From(const TeamScope& scope, const std::string& user_id) {
  AuditScope out;
  out.restricted = scope.restricted();
  if (!out.restricted) return out;
  out.teams = scope.teams();
  out.users = scope.teammates();
  if (IsUuid(user_id)) out.users.insert(absl::AsciiStrToLower(user_id));
  return out;
}

std::string EncodeAuditCursor(bool oldest_first, int64_t position) {
  return absl::WebSafeBase64Escape(
      absl::StrCat(kCursorPrefix, oldest_first ? "o:" : "n:", position));
}

absl::StatusOr<AuditQuery> AuditQueryFrom(const v1::GetAuditTrailRequest& request) {
  AuditQuery q;
  q.object_type = request.object_type();
  q.object_id = absl::AsciiStrToLower(request.object_id());
  q.table = request.table();
  q.actor = request.actor();
  q.origin_id = request.origin_id();
  PS_RETURN_IF_ERROR(CheckUuid("object_id", q.object_id));
  for (int o : request.outcomes()) {
    bool known = false;
    for (const OutcomeName& n : kOutcomes) {
      if (n.outcome == o) {
        q.outcomes.push_back(n.name);
        known = true;
      }
    }
    if (!known) return absl::InvalidArgumentError(absl::StrCat("unknown outcome ", o));
  }
  q.from_ms = request.from_ms();
  q.to_ms = request.to_ms();
  if (q.from_ms < 0 || q.to_ms < 0 || (q.to_ms > 0 && q.from_ms >= q.to_ms)) {
    return absl::InvalidArgumentError("time range: need 0 <= from_ms < to_ms (0 = unbounded)");
  }
  q.oldest_first = request.oldest_first();
  if (!request.cursor().empty()) {
    std::string text;
    if (request.cursor().size() > 256 || !absl::WebSafeBase64Unescape(request.cursor(), &text) ||
        !absl::StartsWith(text, kCursorPrefix)) {
      return absl::InvalidArgumentError("malformed audit cursor");
    }
    std::vector<std::string> parts =
        absl::StrSplit(absl::string_view(text).substr(sizeof(kCursorPrefix) - 1), ':');
    int64_t position;
    if (parts.size() != 2 || (parts[0] != "o" && parts[0] != "n") ||
        !absl::SimpleAtoi(parts[1], &position) || position < 0) {
      return absl::InvalidArgumentError("malformed audit cursor");
    }
    if ((parts[0] == "o") != q.oldest_first) {
      return absl::InvalidArgumentError("the audit cursor is for the other order (oldest_first)");
    }
    q.after_position = position;
  }
  return q;
}

absl::StatusOr<std::vector<v1::AuditEntry>> ReadAuditPage(PgSession& session,
                                                          const AuditQuery& query,
                                                          const AuditScope& scope,
                                                          uint32_t limit) {
  std::vector<v1::AuditEntry> entries;
  // Unnamed statements (exec_params) are planned with their values, so the
  // "$n IS NULL OR" filters fold away and the indexes apply.
  const std::string sql = absl::StrCat(
      "SELECT a.position, a.kind, (extract(epoch FROM a.at) * 1000)::bigint, a.schema_name, "
      "a.table_name, a.object_type, a.object_id::text, a.team_id::text, a.op, a.version, "
      "a.origin_id, a.revision_id::text, a.seq, a.outcome, a.reason, a.conflicts, a.actor, "
      "a.actor_role, a.new_row::text, a.old_row::text, a.excluded, s.seq "
      "FROM pulsesync.audit_trail a "
      "LEFT JOIN pulsesync.audit_chain s ON s.entry_position = a.position "
      "WHERE ($1::bigint IS NULL OR a.position ", query.oldest_first ? ">" : "<", " $1) "
      "AND ($2::text IS NULL OR a.object_type = $2) "
      "AND ($3::uuid IS NULL OR a.object_id = $3::uuid) "
      "AND ($4::text IS NULL OR a.table_name = $4 OR a.object_type = $4) "
      "AND ($5::text IS NULL OR a.actor = $5) "
      "AND ($6::text IS NULL OR a.origin_id = $6) "
      "AND ($7::text[] IS NULL OR a.outcome = ANY($7::text[])) "
      "AND ($8::bigint IS NULL OR a.at >= to_timestamp($8::bigint / 1000.0)) "
      "AND ($9::bigint IS NULL OR a.at < to_timestamp($9::bigint / 1000.0)) "
      "AND ($10::uuid[] IS NULL OR a.team_id = ANY($10::uuid[]) "
      "     OR (a.team_id IS NULL AND a.object_type = 'user' AND a.object_id = ANY($11::uuid[]))) "
      "ORDER BY a.position ", query.oldest_first ? "ASC" : "DESC", " LIMIT $12");
  const std::string after =
      query.after_position >= 0 ? absl::StrCat(query.after_position) : std::string();
  const std::string outcomes =
      query.outcomes.empty() ? std::string()
                             : absl::StrCat("{", absl::StrJoin(query.outcomes, ","), "}");
  const std::string from = query.from_ms > 0 ? absl::StrCat(query.from_ms) : std::string();
  const std::string to = query.to_ms > 0 ? absl::StrCat(query.to_ms) : std::string();
  const std::string teams = scope.restricted ? UuidArray(scope.teams) : std::string();
  const std::string users = UuidArray(scope.users);
  PS_RETURN_IF_ERROR(session.RunTransaction(
      TxMode::kRepeatableReadOnly, [&](pqxx::transaction_base& tx) -> absl::Status {
        entries.clear();
        const pqxx::result rows = tx.exec_params(
            sql, NullIfEmpty(after), NullIfEmpty(query.object_type), NullIfEmpty(query.object_id),
            NullIfEmpty(query.table), NullIfEmpty(query.actor), NullIfEmpty(query.origin_id),
            NullIfEmpty(outcomes), NullIfEmpty(from), NullIfEmpty(to), NullIfEmpty(teams), users,
            static_cast<int64_t>(limit));
        entries.reserve(rows.size());
        for (const pqxx::row& row : rows) {
          v1::AuditEntry e;
          e.set_position(row[0].as<int64_t>());
          e.set_kind(row[1].as<std::string>() == "change" ? v1::AuditEntry::KIND_CHANGE
                                                          : v1::AuditEntry::KIND_REVISION);
          e.set_timestamp_ms(row[2].as<int64_t>());
          e.set_schema(TextOrEmpty(row[3]));
          e.set_table(TextOrEmpty(row[4]));
          e.set_object_type(TextOrEmpty(row[5]));
          e.set_object_id(TextOrEmpty(row[6]));
          e.set_team_id(TextOrEmpty(row[7]));
          e.set_event(EventFromOp(TextOrEmpty(row[8])));
          if (!row[9].is_null()) e.set_version(row[9].as<int64_t>());
          e.set_origin_id(TextOrEmpty(row[10]));
          e.set_revision_id(TextOrEmpty(row[11]));
          if (!row[12].is_null()) e.set_seq(row[12].as<int64_t>());
          e.set_outcome(OutcomeFromName(TextOrEmpty(row[13])));
          e.set_reason(TextOrEmpty(row[14]));
          e.set_conflicts(row[15].as<uint32_t>());
          e.set_actor(TextOrEmpty(row[16]));
          e.set_actor_role(TextOrEmpty(row[17]));
          e.set_new_record(TextOrEmpty(row[18]));
          e.set_old_record(TextOrEmpty(row[19]));
          if (!row[20].is_null()) {
            auto fields = row[20].as_array();
            for (auto item = fields.get_next(); item.first != pqxx::array_parser::done;
                 item = fields.get_next()) {
              if (item.first == pqxx::array_parser::string_value) {
                e.add_excluded_fields(item.second);
              }
            }
          }
          if (!row[21].is_null()) e.set_chain_seq(row[21].as<int64_t>());
          e.set_cursor(EncodeAuditCursor(query.oldest_first, e.position()));
          entries.push_back(std::move(e));
        }
        return absl::OkStatus();
      }));
  return entries;
}

absl::StatusOr<std::vector<v1::OriginInfo>> ListOrigins(PgSession& session,
                                                        const std::string& user_id_in,
                                                        const std::string& team_id_in,
                                                        const AuditScope& scope,
                                                        const std::string& caller_id) {
  std::string user_id = absl::AsciiStrToLower(user_id_in);
  const std::string team_id = absl::AsciiStrToLower(team_id_in);
  PS_RETURN_IF_ERROR(CheckUuid("user_id", user_id));
  PS_RETURN_IF_ERROR(CheckUuid("team_id", team_id));
  if (scope.restricted) {
    if (!user_id.empty() && !scope.users.contains(user_id)) {
      return absl::PermissionDeniedError(
          "user_id: only your own origins and your teammates' may be listed");
    }
    if (!team_id.empty() && !scope.teams.contains(team_id)) {
      return absl::PermissionDeniedError("team_id: not one of your teams");
    }
    if (user_id.empty() && team_id.empty()) {
      if (!IsUuid(caller_id)) return std::vector<v1::OriginInfo>();
      user_id = absl::AsciiStrToLower(caller_id);
    }
  }
  const std::string visible = scope.restricted ? UuidArray(scope.users) : std::string();
  std::vector<v1::OriginInfo> out;
  PS_RETURN_IF_ERROR(session.RunTransaction(
      TxMode::kRepeatableReadOnly, [&](pqxx::transaction_base& tx) -> absl::Status {
        out.clear();
        const pqxx::result rows = tx.exec_params(
            "SELECT o.origin_id, o.user_id::text, o.last_seq, o.applied, o.refused, "
            "(extract(epoch FROM o.first_seen) * 1000)::bigint, "
            "(extract(epoch FROM o.last_seen) * 1000)::bigint, "
            "(SELECT count(*) FROM pulsesync.conflicts c WHERE c.loser_origin_id = o.origin_id "
            "   AND NOT c.resolved AND NOT c.deleted) "
            "FROM pulsesync.origins o "
            "WHERE ($1::uuid IS NULL OR o.user_id = $1::uuid) "
            "AND ($2::uuid IS NULL OR o.user_id IN (SELECT m.user_id FROM public.team_members m "
            "     WHERE m.team_id = $2::uuid AND NOT m.deleted)) "
            "AND ($3::uuid[] IS NULL OR o.user_id = ANY($3::uuid[])) "
            "ORDER BY o.last_seen DESC, o.origin_id LIMIT 10000",
            NullIfEmpty(user_id), NullIfEmpty(team_id), NullIfEmpty(visible));
        for (const pqxx::row& row : rows) {
          v1::OriginInfo o;
          o.set_origin_id(row[0].as<std::string>());
          o.set_user_id(TextOrEmpty(row[1]));
          o.set_last_seq(row[2].as<int64_t>());
          o.set_applied(row[3].as<int64_t>());
          o.set_refused(row[4].as<int64_t>());
          o.set_first_seen_ms(row[5].as<int64_t>());
          o.set_last_seen_ms(row[6].as<int64_t>());
          o.set_open_conflicts(row[7].as<int64_t>());
          out.push_back(std::move(o));
        }
        return absl::OkStatus();
      }));
  return out;
}

}  // namespace pulsesync
