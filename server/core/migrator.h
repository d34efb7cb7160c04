// Schema migrations: the SQL files of migrations/ ("0001_name.sql", applied
// in name order), each in its own transaction, recorded with a checksum in
// pulsesync.schema_migrations. An applied migration whose file changed
// afterwards stops everything: the database no longer matches the code.
#ifndef PULSESYNC_SERVER_CORE_MIGRATOR_H_
#define PULSESYNC_SERVER_CORE_MIGRATOR_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pulsesync {

class PgSession;

struct Migration {
  std::string name;      // file name without ".sql", e.g. "0001_supabase_compat"
  std::string sql;
  std::string checksum;  // MigrationChecksum(sql)
};

// SHA-256 of the file's bytes, lowercase hex.
std::string MigrationChecksum(absl::string_view sql);

// Reads every "NNNN_*.sql" file of `dir` (exactly four digits), sorted by name. kNotFound if the
// directory does not exist; kInvalidArgument for a file named otherwise
// ending in .sql, or two files with one number.
absl::StatusOr<std::vector<Migration>> LoadMigrations(const std::string& dir);

struct MigrationPlan {
  std::vector<std::string> applied;  // already in the database, verified
  std::vector<std::string> pending;  // to apply, in order
};

// Compares `migrations` with what the database recorded.
// kFailedPrecondition when an applied migration was edited (checksums
// differ) or the database has a migration this build does not know.
absl::StatusOr<MigrationPlan> PlanMigrations(PgSession& session,
                                             const std::vector<Migration>& migrations);

// Applies the pending migrations in order, each in its own transaction,
// under an advisory lock so that replicas starting together do not race.
// Returns how many were applied (0 when current). On failure, the failing
// migration left nothing behind and those before it stay applied.
absl::StatusOr<int> ApplyMigrations(PgSession& session,
                                    const std::vector<Migration>& migrations);

// OK when every migration is applied and unedited; kFailedPrecondition
// naming what is pending or edited otherwise.
absl::Status CheckSchemaCurrent(PgSession& session, const std::vector<Migration>& migrations);

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_CORE_MIGRATOR_H_
