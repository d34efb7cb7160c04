#include "client/store/object_types.h"

#include <algorithm>

#include "absl/strings/str_join.h"

namespace pulsesync {
namespace {

ColumnDef Col(const char* name, ColumnType type, bool required = false,
              const char* default_sql = "", int since_version = 1) {
  return ColumnDef{name, type, /*system=*/false, required, default_sql, since_version};
}

ColumnDef Sys(const char* name, ColumnType type, const char* default_sql = "") {
  return ColumnDef{name, type, /*system=*/true, /*required=*/false, default_sql};
}

ObjectTypeDef Type(const char* object_type, const char* table, std::vector<ColumnDef> cols) {
  ObjectTypeDef def{object_type, table, std::move(cols)};
  def.columns.push_back(Sys("version", ColumnType::kInteger, "0"));
  def.columns.push_back(Sys("updated_at", ColumnType::kTimestamp));
  def.columns.push_back(Sys("deleted", ColumnType::kBoolean, "0"));
  def.columns.push_back(Sys("recovered", ColumnType::kBoolean, "0"));
  def.columns.push_back(Sys("last_origin_id", ColumnType::kText));
  def.columns.push_back(Sys("last_revision_id", ColumnType::kUuid));
  def.columns.push_back(Sys("hlc", ColumnType::kText));
  return def;
}

std::vector<ObjectTypeDef>* BuildCatalog(int schema_version) {
  using T = ColumnType;
  auto* types = new std::vector<ObjectTypeDef>();
  types->push_back(
      Type("team", "teams",
           {Col("id", T::kUuid), Col("name", T::kText, true), Col("created_at", T::kTimestamp)}));
  types->push_back(Type("user", "users",
                        {Col("id", T::kUuid), Col("email", T::kText), Col("display_name", T::kText),
                         Col("created_at", T::kTimestamp)}));
  types->push_back(
      Type("team_member", "team_members",
           {Col("id", T::kUuid), Col("team_id", T::kUuid, true), Col("user_id", T::kUuid, true),
            Col("role", T::kText, false, "'member'"), Col("created_at", T::kTimestamp)}));
  types->push_back(
      Type("project", "projects",
           {Col("id", T::kUuid), Col("team_id", T::kUuid, true), Col("name", T::kText, true),
            Col("description", T::kText), Col("created_at", T::kTimestamp)}));
  types->push_back(Type("task", "tasks",
                        {Col("id", T::kUuid), Col("team_id", T::kUuid, true),
                         Col("project_id", T::kUuid), Col("title", T::kText, true),
                         Col("description", T::kText), Col("status", T::kText, false, "'todo'"),
                         Col("priority", T::kInteger, false, "0"), Col("assignee_id", T::kUuid),
                         Col("due_at", T::kTimestamp), Col("created_at", T::kTimestamp),
                         Col("is_archived", T::kBoolean, false, "0", /*since_version=*/2)}));
  // Written by the server only; a client sets resolved and resolution.
  ObjectTypeDef conflict = Type(
      "conflict", "conflicts",
      {Col("id", T::kUuid), Sys("team_id", T::kUuid), Sys("user_id", T::kUuid),
       Sys("object_type", T::kText), Sys("object_id", T::kUuid), Sys("kind", T::kText),
       Sys("field", T::kText), Sys("local_value", T::kJson), Sys("winning_value", T::kJson),
       Sys("loser_origin_id", T::kText), Sys("loser_revision_id", T::kUuid),
       Sys("loser_hlc", T::kText), Sys("winner_origin_id", T::kText),
       Sys("winner_revision_id", T::kUuid), Sys("winner_hlc", T::kText),
       Sys("created_at", T::kTimestamp), Col("resolved", T::kBoolean, false, "0"),
       Col("resolution", T::kText)});
  types->push_back(std::move(conflict));
  for (ObjectTypeDef& def : *types) {
    def.columns.erase(std::remove_if(def.columns.begin(), def.columns.end(),
                                     [&](const ColumnDef& c) {
                                       return c.since_version > schema_version;
                                     }),
                      def.columns.end());
  }
  return types;
}

}  // namespace

const ColumnDef* ObjectTypeDef::FindColumn(absl::string_view name) const {
  for (const ColumnDef& c : columns) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

const std::vector<ObjectTypeDef>& AllObjectTypes(int schema_version) {
  static const std::vector<std::vector<ObjectTypeDef>*>* const catalogs = [] {
    auto* all = new std::vector<std::vector<ObjectTypeDef>*>();
    for (int v = 1; v <= kClientSchemaVersion; ++v) all->push_back(BuildCatalog(v));
    return all;
  }();
  if (schema_version < 1 || schema_version > kClientSchemaVersion) {
    schema_version = kClientSchemaVersion;
  }
  return *(*catalogs)[schema_version - 1];
}

const ObjectTypeDef* FindObjectType(absl::string_view name, int schema_version) {
  for (const ObjectTypeDef& def : AllObjectTypes(schema_version)) {
    if (def.object_type == name || def.table == name) return &def;
  }
  return nullptr;
}

std::string KnownObjectTypeNames() {
  std::vector<std::string> names;
  for (const ObjectTypeDef& def : AllObjectTypes()) names.push_back(def.object_type);
  return absl::StrJoin(names, ", ");
}

const char* ColumnTypeName(ColumnType type) {
  switch (type) {
    case ColumnType::kText:
      return "text";
    case ColumnType::kUuid:
      return "uuid";
    case ColumnType::kTimestamp:
      return "timestamp";
    case ColumnType::kInteger:
      return "integer";
    case ColumnType::kBoolean:
      return "boolean";
    case ColumnType::kJson:
      return "JSON";
  }
  return "unknown";
}

}  // namespace pulsesync
