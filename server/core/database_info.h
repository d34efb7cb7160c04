// What the server reports about the database it serves (GetServerInfo).
#ifndef PULSESYNC_SERVER_CORE_DATABASE_INFO_H_
#define PULSESYNC_SERVER_CORE_DATABASE_INFO_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace pulsesync {

class PgSession;

struct DatabaseInfo {
  uint64_t system_id = 0;         // PostgreSQL cluster system identifier
  std::string latest_migration;   // newest applied migration name
  std::vector<std::string> object_types;  // registered synced object types
};

absl::StatusOr<DatabaseInfo> DescribeDatabase(PgSession& session);

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_CORE_DATABASE_INFO_H_
