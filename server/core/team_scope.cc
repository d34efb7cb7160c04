#include "server/core/team_scope.h"

#include <pqxx/pqxx>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/uuid.h"
#include "server/storage/pg_session.h"

namespace pulsesync {

absl::StatusOr<TeamScope> TeamScope::ForUser(PgSession& session, const std::string& user_id) {
  if (!IsUuid(user_id)) {
    return absl::InvalidArgumentError(absl::StrCat("user id \"", user_id, "\" is not a UUID"));
  }
  TeamScope scope;
  scope.user_id_ = absl::AsciiStrToLower(user_id);
  PS_RETURN_IF_ERROR(session.RunTransaction(
      TxMode::kRepeatableReadOnly, [&](pqxx::transaction_base& tx) {
        scope.teams_.clear();
        for (const auto& row : tx.exec_params(
                 "SELECT team_id::text FROM public.team_members "
                 "WHERE user_id = $1::uuid AND NOT deleted",
                 *scope.user_id_)) {
          scope.teams_.insert(row[0].as<std::string>());
        }
        return absl::OkStatus();
      }));
  return scope;
}

absl::StatusOr<TeamScope> TeamScope::For(PgSession& session, const Principal& principal) {
  if (principal.trusted() || principal.role == "service_role") return Unrestricted();
  if (principal.user_id.empty()) {
    // anon: no team at all.
    TeamScope scope;
    scope.user_id_ = "";
    return scope;
  }
  return ForUser(session, principal.user_id);
}

TeamScope TeamScope::ForUserWithTeams(std::string user_id, absl::flat_hash_set<std::string> teams) {
  TeamScope scope;
  scope.user_id_ = std::move(user_id);
  scope.teams_ = std::move(teams);
  return scope;
}

bool TeamScope::Admit(const FeedEvent& event) {
  if (!user_id_.has_value()) return true;
  const v1::Change& c = event.change;
  if (c.object_type() == "team_member" && event.filter_record.has_value()) {
    const JsonValue* user = event.filter_record->Find("user_id");
    if (user != nullptr && user->is_string() && user->text() == *user_id_) {
      // For DELETE the filter record is the old row; any other event
      // carries the new row, whose tombstone flag decides.
      const JsonValue* deleted = event.filter_record->Find("deleted");
      const bool member = c.event() != v1::EVENT_TYPE_DELETE &&
                          !(deleted != nullptr && deleted->type() == JsonValue::Type::kBool &&
                            deleted->bool_value());
      if (member) {
        teams_.insert(c.team_id());
      } else {
        teams_.erase(c.team_id());
      }
      return true;
    }
  }
  return c.team_id().empty() || teams_.contains(c.team_id());
}

}  // namespace pulsesync
