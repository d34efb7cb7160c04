// TeamScope: which changes a subscriber may see, the in-memory twin of the
// Row Level Security policies of migrations/0005_row_level_security.sql.
// A user sees the rows of the teams they belong to (team_members), their own
// memberships, their own users row and those of their teammates (members of
// any team they belong to: pulsesync.my_teammate_ids()), and rows of other
// tables that have no team. Membership changes in the feed update the scope
// as they stream past, so a user removed from a team stops receiving its
// changes from that point of the feed on.
//
// Teammates. The scope keeps every live membership row of the user's teams
// (and the user's own), by membership id, and counts per user how many of
// those rows make them a teammate: a user in two of my teams stays a
// teammate when one of those memberships ends. Rules, per team_member event
// (keyed by its row id, so a repeated or replayed event is idempotent):
//   - the row's previous state, if held, is dropped first (an UPDATE may
//     move a membership to another team or user);
//   - a live row (not DELETE, not tombstoned) of mine adds its team to my
//     teams; a live row of someone else in one of my teams adds them;
//   - when my last membership of a team ends, every membership of that team
//     is dropped with it: its members stop being my teammates through it.
// Edge cases (the scope is then narrower than the policy, never wider):
//   - joining a team mid-stream: its members from before the join are not in
//     the feed after it, so they become teammates only when the scope is next
//     loaded (a new stream or call); members added after the join count at
//     once. (The team's older rows do not stream either: the client
//     re-snapshots.)
//   - a stream replaying the log from an old cursor starts from today's
//     memberships and applies the old events over them; by the end of the
//     replay the state is today's again, except that leaving and rejoining
//     a team within the replay forgets that team's other members until the
//     next load.
//
// (A caller with no restriction -- trusted or service_role -- sees all.)
//
// Thread safety: none; one per stream, used under the stream's lock.
#ifndef PULSESYNC_SERVER_CORE_TEAM_SCOPE_H_
#define PULSESYNC_SERVER_CORE_TEAM_SCOPE_H_

#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "server/core/feed_hub.h"
#include "server/core/principal.h"

namespace pulsesync {

class PgSession;

class TeamScope {
 public:
  static TeamScope Unrestricted() { return TeamScope(); }
  // Reads the user's current memberships and those of their teams.
  // kInvalidArgument if `user_id` is not a UUID; kUnavailable if the
  // database is down.
  static absl::StatusOr<TeamScope> ForUser(PgSession& session, const std::string& user_id);
  // Unrestricted for a trusted principal or service_role, else ForUser.
  static absl::StatusOr<TeamScope> For(PgSession& session, const Principal& principal);
  // For tests: `user_id` is a member of `teams` (no other members known).
  static TeamScope ForUserWithTeams(std::string user_id, absl::flat_hash_set<std::string> teams);

  // True if the subscriber may see `event`. A membership change updates the
  // scope first (a change of the user's own membership is itself visible to
  // them, as the team_members_own policy shows it).
  bool Admit(const FeedEvent& event);

  bool restricted() const { return user_id_.has_value(); }
  const absl::flat_hash_set<std::string>& teams() const { return teams_; }
  // Whether `user_id` is the subscriber or one of their teammates (always
  // true when unrestricted).
  bool SeesUser(const std::string& user_id) const;
  // The subscriber's teammates (including themselves if they are in a team).
  absl::flat_hash_set<std::string> teammates() const;

 private:
  struct Membership {
    std::string team_id;
    std::string user_id;
  };

  TeamScope() = default;
  void AddMembership(const std::string& id, Membership m);
  void DropMembership(const std::string& id);
  void LeaveTeam(const std::string& team_id);

  std::optional<std::string> user_id_;
  absl::flat_hash_set<std::string> teams_;
  // Live memberships held: the user's own (any team) and everyone's of the
  // user's teams, by team_members.id.
  absl::flat_hash_map<std::string, Membership> memberships_;
  // Per team of mine: how many live membership rows of mine it has (the
  // schema allows one; counted so that replays and moves stay balanced).
  absl::flat_hash_map<std::string, int> my_rows_per_team_;
  // Per teammate: how many held memberships of my teams are theirs.
  absl::flat_hash_map<std::string, int> teammate_rows_;
};

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_CORE_TEAM_SCOPE_H_
