// The synced object types the client knows, mirroring the server's tables
// (migrations/0003_teampulse.sql plus the system columns that
// pulsesync.register_table adds). This catalog is the only source of table
// and column names in client SQL: names from user input or from the wire are
// looked up here and never spliced into SQL themselves.
#ifndef PULSESYNC_CLIENT_STORE_OBJECT_TYPES_H_
#define PULSESYNC_CLIENT_STORE_OBJECT_TYPES_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace pulsesync {

// The schema version this client is built for (sent as
// Revision.schema_version). Version 2: tasks.is_archived (migrations/0007).
// A LocalStore may act as an older version (LocalStoreOptions), as an app
// built against the older schema would.
inline constexpr int kClientSchemaVersion = 2;

// How a column is stored locally (SQLite affinity in parentheses) and what
// JSON it accepts.
enum class ColumnType {
  kText,       // (TEXT) JSON string
  kUuid,       // (TEXT) JSON string holding a UUID, stored lowercase
  kTimestamp,  // (TEXT) JSON string, ISO 8601 as PostgreSQL prints it
  kInteger,    // (INTEGER) JSON integer
  kBoolean,    // (INTEGER 0/1) JSON true/false
  kJson,       // (TEXT) any JSON value, stored serialized
};

struct ColumnDef {
  std::string name;
  ColumnType type;
  // Set by the server (version, updated_at, deleted, ...); never in payloads.
  bool system = false;
  // NOT NULL without a default on the server: a create must set it.
  bool required = false;
  // SQL literal used as the local DEFAULT, mirroring the server's, or empty.
  std::string default_sql;
  // The schema version that introduced the column.
  int since_version = 1;
};

struct ObjectTypeDef {
  std::string object_type;         // wire name, e.g. "task"
  std::string table;               // table name, e.g. "tasks"
  std::vector<ColumnDef> columns;  // "id" first, system columns last

  // nullptr when the type has no such column.
  const ColumnDef* FindColumn(absl::string_view name) const;
};

// All known object types as of `schema_version` (1..kClientSchemaVersion;
// columns introduced later are left out), in dependency order (teams before
// tasks). Among them "conflict" (pulsesync.conflicts): conflict records the
// server keeps, which clients only resolve (docs/CONFLICTS.md).
const std::vector<ObjectTypeDef>& AllObjectTypes(int schema_version = kClientSchemaVersion);

// Looks a type up by its object type ("task") or table name ("tasks");
// nullptr when unknown.
const ObjectTypeDef* FindObjectType(absl::string_view name,
                                    int schema_version = kClientSchemaVersion);

// "task, project, team, user, team_member", for error messages.
std::string KnownObjectTypeNames();

const char* ColumnTypeName(ColumnType type);

}  // namespace pulsesync

#endif  // PULSESYNC_CLIENT_STORE_OBJECT_TYPES_H_
