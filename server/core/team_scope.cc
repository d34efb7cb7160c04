#include "server/core/team_scope.h"

#include <pqxx/pqxx>
#include <vector>

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
        TeamScope fresh;
        fresh.user_id_ = scope.user_id_;
        // The user's own live memberships first (they make the teams), then
        // everyone's of those teams: pulsesync.my_teammate_ids(), as the
        // server. One snapshot for both.
        for (const auto& row : tx.exec_params(
                 "SELECT m.id::text, m.team_id::text, m.user_id::text, m.user_id = $1::uuid "
                 "FROM public.team_members m "
                 "WHERE NOT m.deleted AND m.team_id IN ("
                 "  SELECT team_id FROM public.team_members "
                 "  WHERE user_id = $1::uuid AND NOT deleted) "
                 "ORDER BY 4 DESC",
                 *scope.user_id_)) {
          fresh.AddMembership(row[0].as<std::string>(),
                              Membership{row[1].as<std::string>(), row[2].as<std::string>()});
        }
        scope = std::move(fresh);
        return absl::OkStatus();
      }));
  return scope;
}

absl::StatusOr<TeamScope> TeamScope::For(PgSession& session, const Principal& principal) {
  if (principal.trusted() || principal.role == "service_role") return Unrestricted();
  if (principal.user_id.empty()) {
    // anon: no team, no user.
    TeamScope scope;
    scope.user_id_ = "";
    return scope;
  }
  return ForUser(session, principal.user_id);
}

TeamScope TeamScope::ForUserWithTeams(std::string user_id, absl::flat_hash_set<std::string> teams) {
  TeamScope scope;
  scope.user_id_ = std::move(user_id);
  for (const std::string& t : teams) scope.my_rows_per_team_[t] = 0;  // rows unknown
  scope.teams_ = std::move(teams);
  return scope;
}

void TeamScope::AddMembership(const std::string& id, Membership m) {
  if (m.user_id == *user_id_) {
    if (my_rows_per_team_[m.team_id]++ == 0) teams_.insert(m.team_id);
  } else if (!teams_.contains(m.team_id)) {
    return;  // not one of my teams: not held
  }
  ++teammate_rows_[m.user_id];
  memberships_[id] = std::move(m);
}

void TeamScope::DropMembership(const std::string& id) {
  auto it = memberships_.find(id);
  if (it == memberships_.end()) return;
  Membership m = std::move(it->second);
  memberships_.erase(it);
  auto t = teammate_rows_.find(m.user_id);
  if (t != teammate_rows_.end() && --t->second <= 0) teammate_rows_.erase(t);
  if (m.user_id == *user_id_) {
    auto mine = my_rows_per_team_.find(m.team_id);
    if (mine != my_rows_per_team_.end() && --mine->second <= 0) LeaveTeam(m.team_id);
  }
}

void TeamScope::LeaveTeam(const std::string& team_id) {
  my_rows_per_team_.erase(team_id);
  teams_.erase(team_id);
  std::vector<std::string> gone;
  for (const auto& [id, m] : memberships_) {
    if (m.team_id == team_id) gone.push_back(id);
  }
  for (const std::string& id : gone) {
    auto it = memberships_.find(id);
    auto t = teammate_rows_.find(it->second.user_id);
    if (t != teammate_rows_.end() && --t->second <= 0) teammate_rows_.erase(t);
    memberships_.erase(it);
  }
}

bool TeamScope::SeesUser(const std::string& user_id) const {
  if (!user_id_.has_value()) return true;
  if (user_id_->empty()) return false;  // anon
  return user_id == *user_id_ || teammate_rows_.contains(user_id);
}

absl::flat_hash_set<std::string> TeamScope::teammates() const {
  absl::flat_hash_set<std::string> out;
  for (const auto& [user, n] : teammate_rows_) out.insert(user);
  return out;
}

bool TeamScope::Admit(const FeedEvent& event) {
  if (!user_id_.has_value()) return true;
  const v1::Change& c = event.change;
  if (c.object_type() == "team_member") {
    // The row's previous state goes first (an UPDATE may have moved it).
    DropMembership(c.object_id());
    const JsonValue* record = event.filter_record();
    const JsonValue* user = record != nullptr ? record->Find("user_id") : nullptr;
    const bool is_mine = user != nullptr && user->is_string() && user->text() == *user_id_;
    // For DELETE the filter record is the old row; any other event carries
    // the new row, whose tombstone flag decides.
    const JsonValue* deleted = record != nullptr ? record->Find("deleted") : nullptr;
    const bool live = c.event() != v1::EVENT_TYPE_DELETE &&
                      !(deleted != nullptr && deleted->type() == JsonValue::Type::kBool &&
                        deleted->bool_value());
    if (live && user != nullptr && user->is_string() && !c.team_id().empty() &&
        !user_id_->empty()) {
      AddMembership(c.object_id(), Membership{c.team_id(), user->text()});
    } else if (is_mine && !live) {
      // A membership row of mine not held (ForUserWithTeams): still leave.
      auto mine = my_rows_per_team_.find(c.team_id());
      if (mine != my_rows_per_team_.end() && mine->second <= 0) LeaveTeam(c.team_id());
    }
    if (is_mine) return true;
    return teams_.contains(c.team_id());
  }
  if (c.team_id().empty()) {
    // users: users_self_or_teammate.
    if (c.object_type() == "user") return SeesUser(c.object_id());
    // A conflict record of a users row: whoever sees that row
    // (conflicts_of_my_objects).
    if (c.object_type() == "conflict") {
      const JsonValue* record = event.filter_record();
      const JsonValue* user = record != nullptr ? record->Find("user_id") : nullptr;
      return user != nullptr && user->is_string() && SeesUser(user->text());
    }
    return true;
  }
  return teams_.contains(c.team_id());
}

}  // namespace pulsesync
