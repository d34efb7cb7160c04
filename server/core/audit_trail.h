// Reading the audit trail (pulsesync.audit_trail, migrations/0009) and the
// per-origin counts, limited to what a caller may see.
//
// Order and cursors. Entries of both kinds share one sequence of positions,
// so the trail is ordered by position (the order in which entries were
// written; the chain's order, by transaction, may differ slightly). A page
// is keyset-paged by position, in its own short transaction: a long read
// holds no transaction and no worker between pages. A cursor names a
// position and the order it is for.
//
// Scope. A restricted caller (TeamScope::restricted) sees the entries whose
// team (the object's team when the entry was written) is one of theirs now,
// and the entries of users rows of themselves and their teammates; nothing
// else, whatever the filters say.
#ifndef PULSESYNC_SERVER_CORE_AUDIT_TRAIL_H_
#define PULSESYNC_SERVER_CORE_AUDIT_TRAIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pulsesync/v1/audit.pb.h"

namespace pulsesync {

class PgSession;
class TeamScope;

// What a restricted caller may see (built from a TeamScope).
struct AuditScope {
  bool restricted = false;
  absl::flat_hash_set<std::string> teams;
  absl::flat_hash_set<std::string> users;  // self and teammates
  static AuditScope From(const TeamScope& scope, const std::string& user_id);
};

// A GetAuditTrailRequest, validated.
struct AuditQuery {
  std::string object_type, object_id, table, actor, origin_id;
  std::vector<std::string> outcomes;  // as the SQL view names them
  int64_t from_ms = 0, to_ms = 0;     // 0: unbounded
  bool oldest_first = false;
  int64_t after_position = -1;        // -1: from the start (of the chosen order)
};

// kInvalidArgument naming the bad field (id not a UUID, unknown outcome,
// from >= to, a malformed cursor or one for the other order).
absl::StatusOr<AuditQuery> AuditQueryFrom(const v1::GetAuditTrailRequest& request);

std::string EncodeAuditCursor(bool oldest_first, int64_t position);

// Up to `limit` entries after query.after_position, each with its cursor.
absl::StatusOr<std::vector<v1::AuditEntry>> ReadAuditPage(PgSession& session,
                                                          const AuditQuery& query,
                                                          const AuditScope& scope,
                                                          uint32_t limit);

// ListOrigins: `user_id` and/or `team_id` ("" = not given). For a restricted
// caller the user must be themselves or a teammate and the team one of
// theirs (kPermissionDenied otherwise); with neither, their own origins.
// kInvalidArgument for an id that is not a UUID.
absl::StatusOr<std::vector<v1::OriginInfo>> ListOrigins(PgSession& session,
                                                        const std::string& user_id,
                                                        const std::string& team_id,
                                                        const AuditScope& scope,
                                                        const std::string& caller_id);

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_CORE_AUDIT_TRAIL_H_
