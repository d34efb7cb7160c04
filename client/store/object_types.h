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

// How a column is stored locally (SQLite affinity in parentheses) and what
// JSON it accepts.
enum class ColumnType {
  kText,       // (TEXT) JSON string
  kUuid,       // (TEXT) JSON string holding a UUID, stored lowercase
  kTimestamp,  // (TEXT) JSON string, ISO 8601 as PostgreSQL prints it
  kInteger,    // (INTEGER) JSON integer
  kBoolean,    // (INTEGER 0/1) JSON true/false
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
};

struct ObjectTypeDef {
  std::string object_type;         // wire name, e.g. "task"
  std::string table;               // table name, e.g. "tasks"
  std::vector<ColumnDef> columns;  // "id" first, system columns last

  // nullptr when the type has no such column.
  const ColumnDef* FindColumn(absl::string_view name) const;
};

// All known object types, in dependency order (teams before tasks).
const std::vector<ObjectTypeDef>& AllObjectTypes();

// Looks a type up by its object type ("task") or table name ("tasks");
// nullptr when unknown.
const ObjectTypeDef* FindObjectType(absl::string_view name);

// "task, project, team, user, team_member", for error messages.
std::string KnownObjectTypeNames();

const char* ColumnTypeName(ColumnType type);

}  // namespace pulsesync

#endif  // PULSESYNC_CLIENT_STORE_OBJECT_TYPES_H_
