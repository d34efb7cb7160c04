// What the server reports about the database it serves (GetServerInfo).
#ifndef PULSESYNC_SERVER_CORE_DATABASE_INFO_H_
#define PULSESYNC_SERVER_CORE_DATABASE_INFO_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace pulsesync {

class PgSession;

struct DatabaseInfo {
  uint64_t system_id = 0;         // PostgreSQL cluster system identifier
  std::string latest_migration;   // newest applied migration name
  int schema_version = 1;         // newest client schema (pulsesync.schema_version())
  std::vector<std::string> object_types;  // registered synced object types
  // Table names a subscription may use, and object types, mapped to the
  // table name ("tasks" -> "tasks", "task" -> "tasks").
  std::map<std::string, std::string> table_names;
};

absl::StatusOr<DatabaseInfo> DescribeDatabase(PgSession& session);

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_CORE_DATABASE_INFO_H_
