// TeamScope: which changes a subscriber may see. A user sees the rows of the
// teams they belong to (team_members), rows that belong to no team, and
// their own memberships. Membership changes in the feed update the scope as
// they stream past, so a user removed from a team stops receiving its changes
// from that point of the feed on.
//
// (Until JWT auth lands, the user comes from request metadata; a caller with
// no user is trusted and unrestricted.)
//
// Thread safety: none; one per stream, used under the stream's lock.
#ifndef PULSESYNC_SERVER_CORE_TEAM_SCOPE_H_
#define PULSESYNC_SERVER_CORE_TEAM_SCOPE_H_

#include <optional>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "server/core/feed_hub.h"
#include "server/core/principal.h"

namespace pulsesync {

class PgSession;

class TeamScope {
 public:
  static TeamScope Unrestricted() { return TeamScope(); }
  // Reads the user's current memberships. kInvalidArgument if `user_id` is
  // not a UUID; kUnavailable if the database is down.
  static absl::StatusOr<TeamScope> ForUser(PgSession& session, const std::string& user_id);
  // Unrestricted for a trusted principal or service_role, else ForUser.
  static absl::StatusOr<TeamScope> For(PgSession& session, const Principal& principal);
  // For tests.
  static TeamScope ForUserWithTeams(std::string user_id, absl::flat_hash_set<std::string> teams);

  // True if the subscriber may see `event`. A membership change of this
  // user updates the scope first (and is itself visible to them).
  bool Admit(const FeedEvent& event);

  bool restricted() const { return user_id_.has_value(); }
  const absl::flat_hash_set<std::string>& teams() const { return teams_; }

 private:
  TeamScope() = default;
  std::optional<std::string> user_id_;
  absl::flat_hash_set<std::string> teams_;
};

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_CORE_TEAM_SCOPE_H_
